//! pool2d.wgsl: max and average pooling and their backward passes.

use super::copy::dense;
use super::{with_shape, WORKGROUP};
use crate::backend::gpu::pipeline::{kernel_params, Shader};
use crate::backend::gpu::recorder::{grid, Bind, Recorder};
use crate::backend::Value;
use crate::op::{PoolGeom, PoolKind};
use crate::shape::numel;
use crate::{DType, Result};

kernel_params!(PoolParams {
    n: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    _pad: u32,
});

fn params(n: usize, hw: (usize, usize), ohw: (usize, usize), g: &PoolGeom) -> PoolParams {
    PoolParams {
        n: n as u32,
        h: hw.0 as u32,
        w: hw.1 as u32,
        oh: ohw.0 as u32,
        ow: ohw.1 as u32,
        kh: g.kernel.0 as u32,
        kw: g.kernel.1 as u32,
        sh: g.stride.0 as u32,
        sw: g.stride.1 as u32,
        ph: g.padding.0 as u32,
        pw: g.padding.1 as u32,
        _pad: 0,
    }
}

fn kind_constant(kind: PoolKind) -> [(&'static str, f64); 1] {
    [("KIND", if kind == PoolKind::Max { 0.0 } else { 1.0 })]
}

/// Pool `x` `[n, c, h, w]` into `shape` `[n, c, oh, ow]`.
pub(crate) fn forward(
    rec: &mut Recorder,
    kind: PoolKind,
    g: &PoolGeom,
    x: &Value,
    shape: &[usize],
) -> Result<Value> {
    let n = numel(shape);
    let out = rec.output("pool2d", n, DType::F32)?;
    if n == 0 {
        return Ok(with_shape(out, shape));
    }
    let x = dense(rec, x)?;
    let s = &x.layout.shape;
    let p = params(n, (s[2], s[3]), (shape[2], shape[3]), g);
    let pipeline = rec
        .ctx
        .pipeline(Shader::Pool2d, "forward", &kind_constant(kind))?;
    rec.dispatch(
        &pipeline,
        &p,
        &[Bind::Read(&x), Bind::Skip, Bind::Write(&out)],
        grid(n, WORKGROUP),
    )?;
    Ok(with_shape(out, shape))
}

/// The gradient with respect to `x` of pooling, given `dy`.
pub(crate) fn backward(
    rec: &mut Recorder,
    kind: PoolKind,
    g: &PoolGeom,
    x: &Value,
    dy: &Value,
) -> Result<Value> {
    let shape = x.layout.shape.clone();
    let n = numel(&shape);
    let out = rec.output("pool2d_backward", n, DType::F32)?;
    if n == 0 {
        return Ok(with_shape(out, &shape));
    }
    if dy.layout.numel() == 0 {
        rec.clear(&out);
        return Ok(with_shape(out, &shape));
    }
    let (x, dy) = (dense(rec, x)?, dense(rec, dy)?);
    let d = &dy.layout.shape;
    let p = params(n, (shape[2], shape[3]), (d[2], d[3]), g);
    let pipeline = rec
        .ctx
        .pipeline(Shader::Pool2d, "backward", &kind_constant(kind))?;
    rec.dispatch(
        &pipeline,
        &p,
        &[Bind::Read(&x), Bind::Read(&dy), Bind::Write(&out)],
        grid(n, WORKGROUP),
    )?;
    Ok(with_shape(out, &shape))
}
