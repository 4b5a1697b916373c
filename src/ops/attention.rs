//! Scaled dot-product attention: the fused primitive and the unfused
//! composition it must agree with.

use crate::op::{AttentionSpec, Op};
use crate::ops::{ensure_f32, same_device};
use crate::{DType, Error, Result, Tensor};

/// Options of [`Tensor::attention`].
#[derive(Clone, Debug, Default)]
pub struct AttentionOpts {
    /// Multiplies `q k^T`; `1 / sqrt(head_dim)` when `None`.
    pub scale: Option<f32>,
    /// Query `i` sees keys `0..=i` only (top-left aligned, as PyTorch's
    /// `is_causal`).
    pub causal: bool,
    /// `[batch, keys]`: nonzero where a key may be attended to, zero for
    /// padding.
    pub key_mask: Option<Tensor>,
}

impl AttentionOpts {
    /// Padding mask only.
    pub fn key_mask(mask: &Tensor) -> AttentionOpts {
        AttentionOpts {
            key_mask: Some(mask.clone()),
            ..AttentionOpts::default()
        }
    }
}

/// Checked sizes of one attention call.
struct Dims {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    queries: usize,
    keys: usize,
    head_dim: usize,
    value_dim: usize,
}

fn check(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOpts) -> Result<Dims> {
    const OP: &str = "attention";
    for t in [q, k, v] {
        ensure_f32(OP, t)?;
    }
    same_device(OP, &[q, k, v])?;
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    if qs.len() != 4 || ks.len() != 4 || vs.len() != 4 {
        return Err(Error::shape(
            OP,
            &[qs, ks, vs],
            "q, k and v must be [batch, heads, seq, head_dim]; split heads with reshape and permute first",
        ));
    }
    let d = Dims {
        batch: qs[0],
        heads: qs[1],
        kv_heads: ks[1],
        queries: qs[2],
        keys: ks[2],
        head_dim: qs[3],
        value_dim: vs[3],
    };
    if ks[0] != d.batch || vs[0] != d.batch || vs[1] != d.kv_heads || vs[2] != d.keys {
        return Err(Error::shape(
            OP,
            &[qs, ks, vs],
            "k and v must share batch, heads and sequence length, and the batch must match q's",
        ));
    }
    if ks[3] != d.head_dim {
        return Err(Error::shape(
            OP,
            &[qs, ks],
            format!("q and k head dims differ ({} vs {})", d.head_dim, ks[3]),
        ));
    }
    if d.kv_heads == 0 && d.heads > 0 || d.kv_heads > 0 && !d.heads.is_multiple_of(d.kv_heads) {
        return Err(Error::shape(
            OP,
            &[qs, ks],
            format!(
                "{} query heads cannot share {} key/value heads; the key/value head count must divide the query head count",
                d.heads, d.kv_heads
            ),
        ));
    }
    if let Some(m) = &opts.key_mask {
        ensure_f32(OP, m)?;
        same_device(OP, &[q, m])?;
        if m.shape() != [d.batch, d.keys] {
            return Err(Error::shape(
                OP,
                &[m.shape(), ks],
                format!(
                    "the key mask must be [batch, keys] = [{}, {}]",
                    d.batch, d.keys
                ),
            ));
        }
    }
    if let Some(s) = opts.scale {
        if !s.is_finite() {
            return Err(Error::param(OP, format!("scale {s} is not finite")));
        }
    }
    Ok(d)
}

fn spec(d: &Dims, opts: &AttentionOpts) -> AttentionSpec {
    AttentionSpec {
        scale: opts
            .scale
            .unwrap_or_else(|| 1.0 / (d.head_dim.max(1) as f32).sqrt()),
        causal: opts.causal,
        key_mask: opts.key_mask.is_some(),
    }
}

impl Tensor {
    /// `softmax(q k^T * scale + mask) v` as one fused kernel that never
    /// stores the `[queries, keys]` score matrix, so memory grows
    /// linearly with the sequence length.
    ///
    /// `q` is `[batch, heads, queries, head_dim]`, `k` `[batch, kv_heads,
    /// keys, head_dim]`, `v` `[batch, kv_heads, keys, value_dim]`;
    /// `kv_heads` divides `heads` (grouped-query attention, multi-query
    /// when it is 1). A query that sees no key (every key masked) gets a
    /// zero row. The result is `[batch, heads, queries, value_dim]`.
    ///
    /// ```
    /// use shadergrad::{AttentionOpts, Tensor};
    /// let q = Tensor::randn(&[2, 4, 7, 16]);
    /// let k = Tensor::randn(&[2, 4, 9, 16]);
    /// let v = Tensor::randn(&[2, 4, 9, 16]);
    /// let out = Tensor::attention(&q, &k, &v, &AttentionOpts::default()).unwrap();
    /// assert_eq!(out.shape(), &[2, 4, 7, 16]);
    /// ```
    pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOpts) -> Result<Tensor> {
        let d = check(q, k, v, opts)?;
        let spec = spec(&d, opts);
        let mut inputs = vec![q.clone(), k.clone(), v.clone()];
        inputs.extend(opts.key_mask.iter().map(Tensor::detach));
        let outs = Tensor::multi(
            Op::Attention(spec),
            inputs,
            &[
                (vec![d.batch, d.heads, d.queries, d.value_dim], DType::F32),
                (vec![d.batch, d.heads, d.queries], DType::F32),
            ],
        );
        Ok(outs[0].clone())
    }

    /// The same function as [`Tensor::attention`] composed of matmul,
    /// softmax and matmul: it stores the `[queries, keys]` scores. The
    /// reference the fused kernel is tested against, and the baseline of
    /// `shadergrad bench attention`.
    pub fn attention_unfused(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOpts,
    ) -> Result<Tensor> {
        let d = check(q, k, v, opts)?;
        let spec = spec(&d, opts);
        let group = d.heads.checked_div(d.kv_heads).unwrap_or(1);
        // Each key/value head serves `group` query heads.
        let widen = |t: &Tensor| -> Result<Tensor> {
            if group == 1 {
                return Ok(t.clone());
            }
            let s = t.shape().to_vec();
            t.unsqueeze(2)?
                .expand(&[s[0], s[1], group, s[2], s[3]])?
                .reshape(&[s[0], s[1] * group, s[2], s[3]])
        };
        let (k, v) = (widen(k)?, widen(v)?);
        let scores = q.matmul(&k.transpose(-1, -2)?)?.mul_scalar(spec.scale);
        // visible: [batch or 1, 1, queries or 1, keys]
        let mut visible: Option<Tensor> = None;
        if spec.causal {
            let qi = Tensor::arange(0.0, d.queries as f32, 1.0)?.reshape(&[d.queries, 1])?;
            let kj = Tensor::arange(0.0, d.keys as f32, 1.0)?.reshape(&[1, d.keys])?;
            let c = kj.le(&qi)?.reshape(&[1, 1, d.queries, d.keys])?;
            visible = Some(c.to(*q.device()));
        }
        if let Some(m) = &opts.key_mask {
            let keep = m.ne(&m.zeros_like())?.reshape(&[d.batch, 1, 1, d.keys])?;
            visible = Some(match visible {
                Some(c) => c.mul(&keep)?,
                None => keep,
            });
        }
        let Some(visible) = visible else {
            return scores.softmax(-1)?.matmul(&v);
        };
        let scores = Tensor::where_(&visible, &scores, &Tensor::full(&[], -1e30).to(*q.device()))?;
        // A query that sees no key gets zeros, as the fused kernel defines.
        let any = visible.max(&[-1], true)?;
        scores.softmax(-1)?.matmul(&v)?.mul(&any)
    }

    /// Gradients of the fused attention node `node` from its output's
    /// gradient `dout`: (dq, dk, dv).
    pub(crate) fn attention_backward(
        node: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let Op::Attention(spec) = node.op() else {
            return Err(Error::Grad(
                "internal: attention_backward of another op".into(),
            ));
        };
        let x = node.inputs();
        // delta_i = sum_j p_ij dp_ij = dout_i . out_i (FlashAttention-2).
        let delta = dout.mul(out)?.sum(&[-1], false)?;
        let mut inputs: Vec<Tensor> = x.to_vec();
        inputs.extend([lse.clone(), delta, dout.clone()]);
        Ok(Tensor::multi(
            Op::AttentionBackward(*spec),
            inputs,
            &[
                (x[0].shape().to_vec(), DType::F32),
                (x[1].shape().to_vec(), DType::F32),
                (x[2].shape().to_vec(), DType::F32),
            ],
        ))
    }
}
