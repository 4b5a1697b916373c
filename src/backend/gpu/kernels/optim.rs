//! optim.wgsl: one optimizer update per parameter, new value and state in
//! one dispatch.

use super::copy::dense;
use super::{too_many_axes, with_shape, WORKGROUP};
use crate::backend::gpu::pipeline::{kernel_params, words8, KernelParams, Shader, U8x};
use crate::backend::gpu::recorder::{grid, Bind, Recorder};
use crate::backend::Value;
use crate::op::{AdamStep, SgdStep};
use crate::{DType, Error, Result};

kernel_params!(AdamParams {
    n: u32,
    decay: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    inv_c1: f32,
    inv_c2: f32,
    lr_wd: f32,
    g_rank: u32,
    g_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    g_shape: U8x,
    g_strides: U8x,
});

kernel_params!(SgdParams {
    n: u32,
    decay: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    g_rank: u32,
    g_offset: u32,
    g_shape: U8x,
    g_strides: U8x,
});

/// Where a gradient's elements are, for the kernels' `strided()`.
#[derive(Clone, Copy, Default)]
struct GradLayout {
    rank: u32,
    offset: u32,
    shape: U8x,
    strides: U8x,
}

/// One update dispatch of `entry` over `inputs` (p, g, states...),
/// writing `outputs` new tensors of `shape`; `params` from the element
/// count and the gradient's layout (read in place, whatever its strides).
fn update<P: KernelParams>(
    rec: &mut Recorder,
    entry: &'static str,
    inputs: &[Value],
    outputs: usize,
    shape: &[usize],
    params: impl FnOnce(u32, GradLayout) -> P,
) -> Result<Vec<Value>> {
    let n = crate::shape::numel(shape);
    let outs = (0..outputs)
        .map(|_| rec.output(entry, n, DType::F32))
        .collect::<Result<Vec<_>>>()?;
    if n > 0 {
        let count = u32::try_from(n).map_err(|_| {
            Error::OutOfMemory(format!(
                "{entry}: a parameter of {n} elements exceeds the gpu kernels' 32-bit indexing"
            ))
        })?;
        // Every input but the gradient dense (parameters and states are).
        let ins = inputs
            .iter()
            .enumerate()
            .map(|(k, v)| if k == 1 { Ok(v.clone()) } else { dense(rec, v) })
            .collect::<Result<Vec<_>>>()?;
        let g = &ins[1].layout;
        let (gshape, gl) = crate::shape::collapse(&g.shape, &[g]);
        let (Some(g_shape), Some(g_strides)) = (words8(&gshape), words8(&gl[0].strides)) else {
            return Err(too_many_axes(entry, &g.shape));
        };
        let grad = GradLayout {
            rank: gshape.len() as u32,
            offset: gl[0].offset as u32,
            shape: g_shape,
            strides: g_strides,
        };
        let pipeline = rec.ctx.pipeline(Shader::Optim, entry, &[])?;
        // p, g, the two states (unused ones skipped), then the outputs.
        let mut binds: Vec<Bind> = ins.iter().map(Bind::Read).collect();
        binds.resize_with(4, || Bind::Skip);
        binds.extend(outs.iter().map(Bind::Write));
        rec.dispatch(&pipeline, &params(count, grad), &binds, grid(n, WORKGROUP))?;
    }
    Ok(outs.into_iter().map(|v| with_shape(v, shape)).collect())
}

/// New `[param, m, v]` after one Adam step.
pub(crate) fn adam(
    rec: &mut Recorder,
    s: &AdamStep,
    inputs: &[Value],
    shape: &[usize],
) -> Result<Vec<Value>> {
    let k = s.constants();
    update(rec, "adam", inputs, 3, shape, |n, g| AdamParams {
        n,
        decay: (s.weight_decay != 0.0) as u32,
        lr: s.lr,
        beta1: s.beta1,
        beta2: s.beta2,
        eps: s.eps,
        one_minus_beta1: k.one_minus_beta1,
        one_minus_beta2: k.one_minus_beta2,
        inv_c1: k.inv_c1,
        inv_c2: k.inv_c2,
        lr_wd: k.lr_wd,
        g_rank: g.rank,
        g_offset: g.offset,
        g_shape: g.shape,
        g_strides: g.strides,
        ..Default::default()
    })
}

/// The new parameter and, with momentum, the new velocity after one SGD step.
pub(crate) fn sgd(
    rec: &mut Recorder,
    s: &SgdStep,
    inputs: &[Value],
    shape: &[usize],
) -> Result<Vec<Value>> {
    let momentum = inputs.len() == 3;
    let entry = if momentum { "sgd_momentum" } else { "sgd" };
    update(rec, entry, inputs, 1 + momentum as usize, shape, |n, g| {
        SgdParams {
            n,
            decay: (s.weight_decay != 0.0) as u32,
            nesterov: s.nesterov as u32,
            lr: s.lr,
            momentum: s.momentum,
            weight_decay: s.weight_decay,
            g_rank: g.rank,
            g_offset: g.offset,
            g_shape: g.shape,
            g_strides: g.strides,
        }
    })
}
