//! optim.wgsl: one optimizer update per parameter, new value and state in
//! one dispatch.

use super::copy::dense;
use super::{with_shape, WORKGROUP};
use crate::backend::gpu::pipeline::{kernel_params, KernelParams, Shader};
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
    _pad: u32,
});

kernel_params!(SgdParams {
    n: u32,
    decay: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    _pad0: u32,
    _pad1: u32,
});

/// One update dispatch of `entry` over `inputs` (p, g, states...),
/// writing `outputs` new tensors of `shape`; `params` from the element count.
fn update<P: KernelParams>(
    rec: &mut Recorder,
    entry: &'static str,
    inputs: &[Value],
    outputs: usize,
    shape: &[usize],
    params: impl FnOnce(u32) -> P,
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
        let ins = inputs
            .iter()
            .map(|v| dense(rec, v))
            .collect::<Result<Vec<_>>>()?;
        let pipeline = rec.ctx.pipeline(Shader::Optim, entry, &[])?;
        // p, g, the two states (unused ones skipped), then the outputs.
        let mut binds: Vec<Bind> = ins.iter().map(Bind::Read).collect();
        binds.resize_with(4, || Bind::Skip);
        binds.extend(outs.iter().map(Bind::Write));
        rec.dispatch(&pipeline, &params(count), &binds, grid(n, WORKGROUP))?;
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
    update(rec, "adam", inputs, 3, shape, |n| AdamParams {
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
        _pad: 0,
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
    update(rec, entry, inputs, 1 + momentum as usize, shape, |n| {
        SgdParams {
            n,
            decay: (s.weight_decay != 0.0) as u32,
            nesterov: s.nesterov as u32,
            lr: s.lr,
            momentum: s.momentum,
            weight_decay: s.weight_decay,
            ..Default::default()
        }
    })
}
