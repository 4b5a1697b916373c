//! pool2d.wgsl: max and average pooling and their backward passes.

use super::copy::dense;
use super::{with_shape, Epilogue, WORKGROUP};
use crate::backend::gpu::pipeline::{kernel_params, Shader};
use crate::backend::gpu::recorder::{grid, Bind, Recorder};
use crate::backend::Value;
use crate::op::PoolGeom;
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
    channels: u32,
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
        channels: 0,
    }
}

/// Max pooling: [maxima, argmax] of `x` `[n, c, h, w]` over `shape`,
/// the maxima with the epilogue's bias (per channel) and relu.
pub(crate) fn max_forward(
    rec: &mut Recorder,
    g: &PoolGeom,
    x: &Value,
    shape: &[usize],
    epilogue: Option<Epilogue<'_>>,
) -> Result<[Value; 2]> {
    let n = numel(shape);
    let out = rec.output("max_pool2d", n, DType::F32)?;
    let argmax = rec.output("max_pool2d argmax", n, DType::I32)?;
    if n > 0 {
        let x = dense(rec, x)?;
        let s = &x.layout.shape;
        let mut p = params(n, (s[2], s[3]), (shape[2], shape[3]), g);
        p.channels = shape[1] as u32;
        let pipeline = rec.ctx.pipeline(
            Shader::Pool2d,
            "max_forward",
            &[("EPILOGUE", Epilogue::constant(epilogue))],
        )?;
        // Without an epilogue any buffer will do for the bias.
        let bias = match epilogue {
            Some(e) => dense(rec, e.bias)?,
            None => x.clone(),
        };
        rec.dispatch(
            &pipeline,
            &p,
            &[
                Bind::Read(&x),
                Bind::Skip,
                Bind::Write(&out),
                Bind::Write(&argmax),
                Bind::Read(&bias),
            ],
            grid(n, WORKGROUP),
        )?;
    }
    Ok([with_shape(out, shape), with_shape(argmax, shape)])
}

/// Average pooling of `x` over `shape`.
pub(crate) fn avg_forward(
    rec: &mut Recorder,
    g: &PoolGeom,
    x: &Value,
    shape: &[usize],
) -> Result<Value> {
    let n = numel(shape);
    let out = rec.output("avg_pool2d", n, DType::F32)?;
    if n > 0 {
        let x = dense(rec, x)?;
        let s = &x.layout.shape;
        let p = params(n, (s[2], s[3]), (shape[2], shape[3]), g);
        let pipeline = rec.ctx.pipeline(Shader::Pool2d, "avg_forward", &[])?;
        rec.dispatch(
            &pipeline,
            &p,
            &[Bind::Read(&x), Bind::Skip, Bind::Write(&out)],
            grid(n, WORKGROUP),
        )?;
    }
    Ok(with_shape(out, shape))
}

/// Pooling's gradient with respect to x (of `x_shape`) from `dy`; max
/// pooling reads its forward pass's `argmax`.
pub(crate) fn backward(
    rec: &mut Recorder,
    g: &PoolGeom,
    argmax: Option<&Value>,
    dy: &Value,
    x_shape: &[usize],
) -> Result<Value> {
    let n = numel(x_shape);
    let out = rec.output("pool2d_backward", n, DType::F32)?;
    if n == 0 {
        return Ok(with_shape(out, x_shape));
    }
    if dy.layout.numel() == 0 {
        rec.clear(&out);
        return Ok(with_shape(out, x_shape));
    }
    let dy = dense(rec, dy)?;
    let d = &dy.layout.shape;
    let p = params(n, (x_shape[2], x_shape[3]), (d[2], d[3]), g);
    match argmax {
        Some(a) => {
            let a = dense(rec, a)?;
            let pipeline = rec.ctx.pipeline(Shader::Pool2d, "max_backward", &[])?;
            rec.dispatch(
                &pipeline,
                &p,
                &[
                    Bind::Skip,
                    Bind::Read(&dy),
                    Bind::Write(&out),
                    Bind::Read(&a),
                ],
                grid(n, WORKGROUP),
            )?;
        }
        None => {
            let pipeline = rec.ctx.pipeline(Shader::Pool2d, "avg_backward", &[])?;
            rec.dispatch(
                &pipeline,
                &p,
                &[Bind::Skip, Bind::Read(&dy), Bind::Write(&out)],
                grid(n, WORKGROUP),
            )?;
        }
    }
    Ok(with_shape(out, x_shape))
}
