//! Fused attention on the cpu: blocks of `BLOCK` queries at a time, each
//! block's scores `[BLOCK, keys]` made by one GEMM, softmaxed in place and
//! multiplied into the values by another. Memory is linear in the sequence
//! length (one block's scores per worker), like the WGSL kernel's.
//!
//! The backward pass recomputes each block's probabilities from the saved
//! log-sum-exp (FlashAttention-2): with `delta_i = dout_i . out_i`,
//! `ds = p * (dp - delta)`, `dq = ds k`, `dk = ds^T q`, `dv = p^T dout`.

use rayon::prelude::*;

use super::f32_data;
use super::math::exp;
use super::matmul::gemm_strided;
use crate::backend::Value;
use crate::op::AttentionSpec;

/// Queries per block: enough rows to keep the GEMMs efficient, few enough
/// that one block's scores stay in cache at BERT lengths.
const BLOCK: usize = 128;

struct Geometry {
    batch: usize,
    heads: usize,
    group: usize,
    lq: usize,
    lk: usize,
    d: usize,
    dv: usize,
}

impl Geometry {
    fn of(q: &Value, k: &Value, v: &Value) -> Geometry {
        let (qs, ks, vs) = (&q.layout.shape, &k.layout.shape, &v.layout.shape);
        Geometry {
            batch: qs[0],
            heads: qs[1],
            group: qs[1].checked_div(ks[1]).unwrap_or(1),
            lq: qs[2],
            lk: ks[2],
            d: qs[3],
            dv: vs[3],
        }
    }

    fn kv_heads(&self) -> usize {
        self.heads / self.group.max(1)
    }

    /// Keys a block of queries ending (exclusive) at `end` can see: under a
    /// causal mask the later keys are hidden from every row of the block.
    fn keys_for(&self, spec: &AttentionSpec, end: usize) -> usize {
        if spec.causal {
            self.lk.min(end)
        } else {
            self.lk
        }
    }
}

/// `c[m, n] (+)= a[m, k] b[k, n]` on strided operands; empty products write
/// zeros (or leave `c` when accumulating).
#[allow(clippy::too_many_arguments)]
fn mm(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    c: &mut [f32],
    accumulate: bool,
    threads: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    debug_assert!((m - 1) * a_rs + (k - 1) * a_cs < a.len());
    debug_assert!((k - 1) * b_rs + (n - 1) * b_cs < b.len());
    debug_assert!(c.len() >= m * n);
    // SAFETY: the asserted bounds cover every element the strides address.
    unsafe {
        gemm_strided(
            m,
            n,
            k,
            a.as_ptr(),
            a_rs as isize,
            a_cs as isize,
            b.as_ptr(),
            b_rs as isize,
            b_cs as isize,
            c.as_mut_ptr(),
            accumulate,
            threads,
        )
    }
}

thread_local! {
    /// Per-worker scores and probabilities, reused: a fresh block of scores
    /// (512 KiB at 2048 keys) would be mapped and page-faulted every time.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` with a scratch slice of `n` floats (contents unspecified) for this
/// worker. The buffer is taken out while `f` runs: a GEMM's rayon threads
/// may run another block on this thread meanwhile, which then allocates.
fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut s = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if s.len() < n {
        s.resize(n, 0.0);
    }
    let r = f(&mut s[..n]);
    SCRATCH.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.len() < s.len() {
            *slot = s;
        }
    });
    r
}

/// Whether key `j` of batch `b` is visible to query `i`.
fn visible(
    spec: &AttentionSpec,
    mask: Option<&[f32]>,
    lk: usize,
    b: usize,
    i: usize,
    j: usize,
) -> bool {
    (!spec.causal || j <= i) && mask.is_none_or(|m| m[b * lk + j] != 0.0)
}

/// Forward: (out `[b, h, lq, dv]`, lse `[b, h, lq]`).
pub(crate) fn attention(
    spec: &AttentionSpec,
    q: &Value,
    k: &Value,
    v: &Value,
    mask: Option<&Value>,
) -> Vec<Value> {
    let g = Geometry::of(q, k, v);
    let (qd, kd, vd) = (f32_data(q), f32_data(k), f32_data(v));
    let mask = mask.map(f32_data);
    let mask = mask.as_deref();
    let rows = g.batch * g.heads * g.lq;
    let mut out = vec![0.0f32; rows * g.dv];
    let mut lse = vec![f32::NEG_INFINITY; rows];
    if rows > 0 {
        let head_out = (g.lq * g.dv).max(1);
        out.par_chunks_mut(head_out)
            .zip(lse.par_chunks_mut(g.lq.max(1)))
            .enumerate()
            .for_each(|(bh, (out, lse))| {
                let (b, h) = (bh / g.heads, bh % g.heads);
                let kv = b * g.kv_heads() + h / g.group;
                let q = &qd[bh * g.lq * g.d..][..g.lq * g.d];
                let k = &kd[kv * g.lk * g.d..][..g.lk * g.d];
                let v = &vd[kv * g.lk * g.dv..][..g.lk * g.dv];
                out.par_chunks_mut((BLOCK * g.dv).max(1))
                    .zip(lse.par_chunks_mut(BLOCK))
                    .enumerate()
                    .for_each(|(blk, (out, lse))| {
                        let q0 = blk * BLOCK;
                        let bq = lse.len();
                        let nk = g.keys_for(spec, q0 + bq);
                        with_scratch(bq * nk, |p| {
                            // scores = q k^T
                            mm(
                                (bq, nk, g.d),
                                &q[q0 * g.d..],
                                (g.d, 1),
                                k,
                                (1, g.d),
                                p,
                                false,
                                false,
                            );
                            for (r, row) in p.chunks_mut(nk.max(1)).take(bq).enumerate() {
                                lse[r] = softmax_row(spec, mask, &g, b, q0 + r, row);
                            }
                            mm((bq, g.dv, nk), p, (nk, 1), v, (g.dv, 1), out, false, false);
                        });
                    });
            });
    }
    vec![
        Value::f32(out, &[g.batch, g.heads, g.lq, g.dv]),
        Value::f32(lse, &[g.batch, g.heads, g.lq]),
    ]
}

/// Sum in 8 lanes (vectorizes; a single f32 accumulator does not).
fn lane_sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Turn one row of raw scores into probabilities in place (zeros where
/// hidden, all zeros when nothing is visible); returns the log-sum-exp.
fn softmax_row(
    spec: &AttentionSpec,
    mask: Option<&[f32]>,
    g: &Geometry,
    b: usize,
    i: usize,
    row: &mut [f32],
) -> f32 {
    let mut max = f32::NEG_INFINITY;
    if !spec.causal && mask.is_none() {
        for s in row.iter_mut() {
            *s *= spec.scale;
            max = max.max(*s);
        }
    } else {
        for (j, s) in row.iter_mut().enumerate() {
            if visible(spec, mask, g.lk, b, i, j) {
                *s *= spec.scale;
                max = max.max(*s);
            } else {
                *s = f32::NEG_INFINITY;
            }
        }
    }
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return f32::NEG_INFINITY;
    }
    for s in row.iter_mut() {
        *s = exp(*s - max);
    }
    let sum = lane_sum(row);
    let inv = 1.0 / sum;
    for s in row.iter_mut() {
        *s *= inv;
    }
    max + sum.ln()
}

/// Backward: (dq, dk, dv) from the forward's `lse`, `delta = rowsum(dout *
/// out)` and `dout`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    spec: &AttentionSpec,
    q: &Value,
    k: &Value,
    v: &Value,
    mask: Option<&Value>,
    lse: &Value,
    delta: &Value,
    dout: &Value,
) -> Vec<Value> {
    let g = Geometry::of(q, k, v);
    let (qd, kd, vd) = (f32_data(q), f32_data(k), f32_data(v));
    let (lsed, deltad, dod) = (f32_data(lse), f32_data(delta), f32_data(dout));
    let mask = mask.map(f32_data);
    let mask = mask.as_deref();
    let kv_heads = g.kv_heads();
    let mut dq = vec![0.0f32; g.batch * g.heads * g.lq * g.d];
    let mut dk = vec![0.0f32; g.batch * kv_heads * g.lk * g.d];
    let mut dvv = vec![0.0f32; g.batch * kv_heads * g.lk * g.dv];
    let tasks = g.batch * kv_heads;
    // Few heads: let each GEMM use the threads instead.
    let threads = tasks < rayon::current_num_threads();
    if tasks > 0 && g.lq > 0 && g.lk > 0 {
        dq.par_chunks_mut((g.group * g.lq * g.d).max(1))
            .zip(dk.par_chunks_mut((g.lk * g.d).max(1)))
            .zip(dvv.par_chunks_mut((g.lk * g.dv).max(1)))
            .enumerate()
            .for_each(|(kv, ((dq, dk), dv))| {
                let b = kv / kv_heads;
                let k = &kd[kv * g.lk * g.d..][..g.lk * g.d];
                let v = &vd[kv * g.lk * g.dv..][..g.lk * g.dv];
                for gi in 0..g.group {
                    let bh = kv * g.group + gi;
                    let row0 = bh * g.lq;
                    let q = &qd[row0 * g.d..][..g.lq * g.d];
                    let dout = &dod[row0 * g.dv..][..g.lq * g.dv];
                    let dq = &mut dq[gi * g.lq * g.d..][..g.lq * g.d];
                    for q0 in (0..g.lq).step_by(BLOCK) {
                        let bq = BLOCK.min(g.lq - q0);
                        let nk = g.keys_for(spec, q0 + bq);
                        if nk == 0 {
                            continue;
                        }
                        with_scratch(2 * bq * nk, |scratch| {
                            let (p, ds) = scratch.split_at_mut(bq * nk);
                            let qb = &q[q0 * g.d..];
                            let dob = &dout[q0 * g.dv..];
                            mm((bq, nk, g.d), qb, (g.d, 1), k, (1, g.d), p, false, threads);
                            // dp = dout v^T
                            mm(
                                (bq, nk, g.dv),
                                dob,
                                (g.dv, 1),
                                v,
                                (1, g.dv),
                                ds,
                                false,
                                threads,
                            );
                            for r in 0..bq {
                                let i = q0 + r;
                                let l = lsed[row0 + i];
                                let dl = deltad[row0 + i];
                                let (pr, dsr) = (&mut p[r * nk..][..nk], &mut ds[r * nk..][..nk]);
                                if l == f32::NEG_INFINITY {
                                    pr.fill(0.0);
                                    dsr.fill(0.0);
                                    continue;
                                }
                                for (p, ds) in pr.iter_mut().zip(dsr.iter_mut()) {
                                    *p = exp(*p * spec.scale - l);
                                    *ds = *p * (*ds - dl) * spec.scale;
                                }
                                if spec.causal || mask.is_some() {
                                    for j in 0..nk {
                                        if !visible(spec, mask, g.lk, b, i, j) {
                                            pr[j] = 0.0;
                                            dsr[j] = 0.0;
                                        }
                                    }
                                }
                            }
                            // dq = ds k; dk += ds^T q; dv += p^T dout
                            mm(
                                (bq, g.d, nk),
                                ds,
                                (nk, 1),
                                k,
                                (g.d, 1),
                                &mut dq[q0 * g.d..],
                                false,
                                threads,
                            );
                            mm((nk, g.d, bq), ds, (1, nk), qb, (g.d, 1), dk, true, threads);
                            mm(
                                (nk, g.dv, bq),
                                p,
                                (1, nk),
                                dob,
                                (g.dv, 1),
                                dv,
                                true,
                                threads,
                            );
                        });
                    }
                }
            });
    }
    vec![
        Value::f32(dq, &q.layout.shape),
        Value::f32(dk, &k.layout.shape),
        Value::f32(dvv, &v.layout.shape),
    ]
}
