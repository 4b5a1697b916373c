//! attention.wgsl: fused attention forward and its two backward kernels.

use super::copy::dense;
use super::{bindable, with_shape};
use crate::backend::gpu::pipeline::{kernel_params, Shader};
use crate::backend::gpu::recorder::{grid, Bind, Recorder};
use crate::backend::Value;
use crate::op::AttentionSpec;
use crate::shape::{numel, Layout};
use crate::{DType, Error, Result};

kernel_params!(AttentionParams {
    batch: u32,
    heads: u32,
    group: u32,
    lq: u32,
    lk: u32,
    d: u32,
    dv: u32,
    flags: u32,
    scale: f32,
    tile: u32,
    dv_base: u32,
    groups: u32,
    d4: u32,
    dv4: u32,
    _pad0: u32,
    _pad1: u32,
    q_off: u32,
    q_sb: u32,
    q_sh: u32,
    q_sl: u32,
    k_off: u32,
    k_sb: u32,
    k_sh: u32,
    k_sl: u32,
    v_off: u32,
    v_sb: u32,
    v_sh: u32,
    v_sl: u32,
    g_off: u32,
    g_sb: u32,
    g_sh: u32,
    g_sl: u32,
});

/// Invocations per workgroup and rows per tile (`WG` in the shader).
const WG: usize = 64;
/// Largest head dim the kernels keep in private arrays (`4 * MAX_D4`).
const MAX_D: usize = 128;
/// Workgroup tile capacity in vec4s (`TILE`).
const TILE: usize = 480;

/// vec4s per row of `dim` floats, padded to a multiple of 16 floats.
fn vec4s(dim: usize) -> usize {
    dim.div_ceil(16) * 4
}

const FLAG_CAUSAL: u32 = 1;
const FLAG_MASK: u32 = 2;

/// A [b, h, l, dim] operand the kernels can read in place: unit stride
/// inside a row; anything else is copied dense first.
fn readable(rec: &mut Recorder, v: &Value) -> Result<Value> {
    let l = &v.layout;
    let fits = l.strides.iter().all(|&s| u32::try_from(s).is_ok())
        && u32::try_from(l.offset).is_ok()
        && (l.shape[3] <= 1 || l.strides[3] == 1);
    let v = if fits { v.clone() } else { dense(rec, v)? };
    bindable(rec, &v)
}

fn dense_bindable(rec: &mut Recorder, v: &Value) -> Result<Value> {
    let v = dense(rec, v)?;
    bindable(rec, &v)
}

/// (offset, batch, head, row) strides of a readable operand.
fn strides(v: &Value) -> [u32; 4] {
    let l = &v.layout;
    // Empty operands are bound as one-element stand-ins the kernel never reads.
    if l.numel() == 0 || l.shape.len() != 4 {
        return [0; 4];
    }
    [
        l.offset as u32,
        l.strides[0] as u32,
        l.strides[1] as u32,
        l.strides[2] as u32,
    ]
}

struct Operands {
    q: Value,
    k: Value,
    v: Value,
    mask: Value,
    params: AttentionParams,
}

fn operands(
    rec: &mut Recorder,
    spec: &AttentionSpec,
    q: &Value,
    k: &Value,
    v: &Value,
    mask: Option<&Value>,
) -> Result<Operands> {
    let (qs, ks, vs) = (&q.layout.shape, &k.layout.shape, &v.layout.shape);
    if qs[3] > MAX_D || vs[3] > MAX_D {
        return Err(Error::shape(
            "attention",
            &[qs, vs],
            format!("the gpu kernel takes head dims up to {MAX_D}; split the heads further or run attention_unfused"),
        ));
    }
    let too_big = |n: usize| u32::try_from(n).is_err();
    if [numel(qs), numel(ks), numel(vs)].into_iter().any(too_big) {
        return Err(Error::shape(
            "attention",
            &[qs, ks, vs],
            "the gpu kernel indexes with 32 bits; use a smaller batch",
        ));
    }
    let mask = match mask {
        Some(m) => dense_bindable(rec, m)?,
        None => rec.output("attention mask stand-in", 1, DType::F32)?,
    };
    let (d, dv) = (qs[3], vs[3]);
    let mut flags = 0;
    if spec.causal {
        flags |= FLAG_CAUSAL;
    }
    if spec.key_mask {
        flags |= FLAG_MASK;
    }
    let (q, k, v) = (readable(rec, q)?, readable(rec, k)?, readable(rec, v)?);
    let [q_off, q_sb, q_sh, q_sl] = strides(&q);
    let [k_off, k_sb, k_sh, k_sl] = strides(&k);
    let [v_off, v_sb, v_sh, v_sl] = strides(&v);
    let params = AttentionParams {
        batch: qs[0] as u32,
        heads: qs[1] as u32,
        group: qs[1].checked_div(ks[1]).unwrap_or(1) as u32,
        lq: qs[2] as u32,
        lk: ks[2] as u32,
        d: d as u32,
        dv: dv as u32,
        flags,
        scale: spec.scale,
        tile: (TILE / vec4s(d).max(vec4s(dv)).max(1)).min(WG) as u32,
        d4: vec4s(d) as u32,
        dv4: vec4s(dv) as u32,
        q_off,
        q_sb,
        q_sh,
        q_sl,
        k_off,
        k_sb,
        k_sh,
        k_sl,
        v_off,
        v_sb,
        v_sh,
        v_sl,
        ..Default::default()
    };
    Ok(Operands {
        q,
        k,
        v,
        mask,
        params,
    })
}

/// Workgroups of 64 rows over `rows` rows in each of `planes` heads.
fn workgroups(planes: usize, rows: usize) -> usize {
    planes * rows.div_ceil(WG)
}

/// Forward: [out, lse].
pub(crate) fn forward(
    rec: &mut Recorder,
    spec: &AttentionSpec,
    inputs: &[Value],
) -> Result<Vec<Value>> {
    let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
    let (qs, vs) = (q.layout.shape.clone(), v.layout.shape.clone());
    let out_shape = [qs[0], qs[1], qs[2], vs[3]];
    let lse_shape = [qs[0], qs[1], qs[2]];
    let out = rec.output("attention", numel(&out_shape), DType::F32)?;
    let lse = rec.output("attention lse", numel(&lse_shape), DType::F32)?;
    let groups = workgroups(qs[0] * qs[1], qs[2]);
    if groups > 0 {
        let mut o = operands(rec, spec, q, k, v, inputs.get(3))?;
        o.params.groups = groups as u32;
        let out_b = bindable(rec, &out)?;
        let pipeline = rec.ctx.pipeline(Shader::Attention, "forward", &[])?;
        rec.dispatch(
            &pipeline,
            &o.params,
            &[
                Bind::Read(&o.q),
                Bind::Read(&o.k),
                Bind::Read(&o.v),
                Bind::Read(&o.mask),
                Bind::Write(&lse),
                Bind::Skip,
                Bind::Skip,
                Bind::Write(&out_b),
            ],
            grid(groups * WG, WG as u32),
        )?;
    }
    Ok(vec![
        with_shape(out, &out_shape),
        with_shape(lse, &lse_shape),
    ])
}

/// Backward: [dq, dk, dv] from inputs (q, k, v [, mask], lse, delta, dout).
pub(crate) fn backward(
    rec: &mut Recorder,
    spec: &AttentionSpec,
    inputs: &[Value],
) -> Result<Vec<Value>> {
    let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
    let mask = spec.key_mask.then(|| &inputs[3]);
    let rest = &inputs[if spec.key_mask { 4 } else { 3 }..];
    let [lse, delta, dout] = rest else {
        return Err(Error::param(
            "attention_backward",
            "internal: wrong input count",
        ));
    };
    let (qs, ks, vs) = (
        q.layout.shape.clone(),
        k.layout.shape.clone(),
        v.layout.shape.clone(),
    );
    let dq = rec.output("attention dq", numel(&qs), DType::F32)?;
    let (dk_len, dv_len) = (numel(&ks), numel(&vs));
    // dk and dv share one buffer: the kernel's ninth storage binding
    // would pass WebGPU's default limit of eight.
    let dkv = rec.output("attention dk, dv", dk_len + dv_len, DType::F32)?;
    let q_groups = workgroups(qs[0] * qs[1], qs[2]);
    let k_groups = workgroups(ks[0] * ks[1], ks[2]);
    if q_groups + k_groups > 0 {
        let mut o = operands(rec, spec, q, k, v, mask)?;
        let dout = readable(rec, dout)?;
        [o.params.g_off, o.params.g_sb, o.params.g_sh, o.params.g_sl] = strides(&dout);
        let lse = dense_bindable(rec, lse)?;
        let delta = dense_bindable(rec, delta)?;
        let binds = |out: &Value| -> [Value; 8] {
            [
                o.q.clone(),
                o.k.clone(),
                o.v.clone(),
                o.mask.clone(),
                lse.clone(),
                delta.clone(),
                dout.clone(),
                out.clone(),
            ]
        };
        for (entry, groups, out) in [
            ("backward_dq", q_groups, &dq),
            ("backward_dkv", k_groups, &dkv),
        ] {
            if groups == 0 {
                continue;
            }
            let mut p = o.params;
            p.groups = groups as u32;
            p.dv_base = dk_len as u32;
            let out = bindable(rec, out)?;
            let b = binds(&out);
            let pipeline = rec.ctx.pipeline(Shader::Attention, entry, &[])?;
            rec.dispatch(
                &pipeline,
                &p,
                &[
                    Bind::Read(&b[0]),
                    Bind::Read(&b[1]),
                    Bind::Read(&b[2]),
                    Bind::Read(&b[3]),
                    Bind::Read(&b[4]),
                    Bind::Read(&b[5]),
                    Bind::Read(&b[6]),
                    Bind::Write(&b[7]),
                ],
                grid(groups * WG, WG as u32),
            )?;
        }
    }
    let dv = Value {
        storage: dkv.storage.clone(),
        layout: Layout {
            offset: dk_len,
            ..Layout::contiguous(&vs)
        },
    };
    Ok(vec![with_shape(dq, &qs), with_shape(dkv, &ks), dv])
}
