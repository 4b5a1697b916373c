//! optim.wgsl: one optimizer update per parameter, new value and state in
//! one dispatch.

use super::copy::dense;
use super::{with_shape, WORKGROUP};
use crate::backend::gpu::pipeline::{kernel_params, Shader};
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

fn count(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        Error::OutOfMemory(format!(
            "optimizer update: a parameter of {n} elements exceeds the gpu kernels' 32-bit indexing"
        ))
    })
}

/// New `[param, m, v]` after one Adam step.
pub(crate) fn adam(
    rec: &mut Recorder,
    s: &AdamStep,
    inputs: &[Value],
    shape: &[usize],
) -> Result<Vec<Value>> {
    let n = crate::shape::numel(shape);
    let outs = (0..3)
        .map(|_| rec.output("adam_update", n, DType::F32))
        .collect::<Result<Vec<_>>>()?;
    if n > 0 {
        let ins = inputs
            .iter()
            .map(|v| dense(rec, v))
            .collect::<Result<Vec<_>>>()?;
        let k = s.constants();
        let params = AdamParams {
            n: count(n)?,
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
        };
        let pipeline = rec.ctx.pipeline(Shader::Optim, "adam", &[])?;
        let mut binds: Vec<Bind> = ins.iter().map(Bind::Read).collect();
        binds.extend(outs.iter().map(Bind::Write));
        rec.dispatch(&pipeline, &params, &binds, grid(n, WORKGROUP))?;
    }
    Ok(outs.into_iter().map(|v| with_shape(v, shape)).collect())
}

/// The new parameter and, with momentum, the new velocity after one SGD step.
pub(crate) fn sgd(
    rec: &mut Recorder,
    s: &SgdStep,
    inputs: &[Value],
    shape: &[usize],
) -> Result<Vec<Value>> {
    let n = crate::shape::numel(shape);
    let momentum = inputs.len() == 3;
    let outs = (0..1 + momentum as usize)
        .map(|_| rec.output("sgd_update", n, DType::F32))
        .collect::<Result<Vec<_>>>()?;
    if n > 0 {
        let ins = inputs
            .iter()
            .map(|v| dense(rec, v))
            .collect::<Result<Vec<_>>>()?;
        let params = SgdParams {
            n: count(n)?,
            decay: (s.weight_decay != 0.0) as u32,
            nesterov: s.nesterov as u32,
            lr: s.lr,
            momentum: s.momentum,
            weight_decay: s.weight_decay,
            ..Default::default()
        };
        let entry = if momentum { "sgd_momentum" } else { "sgd" };
        let pipeline = rec.ctx.pipeline(Shader::Optim, entry, &[])?;
        // p, g, velocity, (unused second state), p', velocity'.
        let mut binds: Vec<Bind> = ins.iter().map(Bind::Read).collect();
        binds.resize_with(4, || Bind::Skip);
        binds.extend(outs.iter().map(Bind::Write));
        rec.dispatch(&pipeline, &params, &binds, grid(n, WORKGROUP))?;
    }
    Ok(outs.into_iter().map(|v| with_shape(v, shape)).collect())
}
