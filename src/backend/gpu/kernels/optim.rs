//! optim.wgsl: one optimizer update per parameter, new value and state in
//! one dispatch; Adam over up to four parameters in one dispatch where the
//! device binds enough storage buffers (`adam_group`).

use super::copy::dense;
use super::{too_many_axes, with_shape, WORKGROUP};
use crate::backend::gpu::pipeline::{kernel_params, words8, KernelParams, Shader, U8x};
use crate::backend::gpu::recorder::{grid, Bind, Recorder};
use crate::backend::Value;
use crate::op::{AdamStep, SgdStep};
use crate::{DType, Error, Result};
use std::sync::Arc;

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

kernel_params!(AdamSlot {
    n: u32,
    start: u32,
    g_rank: u32,
    g_offset: u32,
    g_shape: U8x,
    g_strides: U8x,
});

kernel_params!(AdamGroupParams {
    adam: AdamParams,
    slot: [AdamSlot; GROUP_SLOTS],
    slots: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
});

/// Parameters one `adam_group` dispatch updates (GROUP_SLOTS in optim.wgsl).
pub(crate) const GROUP_SLOTS: usize = 4;
/// Storage buffers a slot binds: p, g, m, v and the three new tensors.
pub(crate) const SLOT_BINDINGS: usize = 7;

/// Where a gradient's elements are, for the kernels' `strided()`.
#[derive(Clone, Copy, Default)]
struct GradLayout {
    rank: u32,
    offset: u32,
    shape: U8x,
    strides: U8x,
}

/// An update's inputs ready to bind: the element count, the inputs (p, g,
/// states) with all but the gradient dense, and the gradient's layout
/// (read in place, whatever its strides).
fn prepare(
    rec: &mut Recorder,
    entry: &'static str,
    inputs: &[Value],
    n: usize,
) -> Result<(u32, Vec<Value>, GradLayout)> {
    let count = u32::try_from(n).map_err(|_| {
        Error::OutOfMemory(format!(
            "{entry}: a parameter of {n} elements exceeds the gpu kernels' 32-bit indexing"
        ))
    })?;
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
    Ok((count, ins, grad))
}

/// One update dispatch of `entry` over `inputs` (p, g, states...),
/// writing `outputs` new tensors of `shape`; `params` from the element
/// count and the gradient's layout.
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
        let (count, ins, grad) = prepare(rec, entry, inputs, n)?;
        let pipeline = rec.ctx.pipeline(Shader::Optim, entry, &[])?;
        // p, g, the two states (unused ones skipped), then the outputs.
        let mut binds: Vec<Bind> = ins.iter().map(Bind::Read).collect();
        binds.resize_with(4, || Bind::Skip);
        binds.extend(outs.iter().map(Bind::Write));
        rec.dispatch(&pipeline, &params(count, grad), &binds, grid(n, WORKGROUP))?;
    }
    Ok(outs.into_iter().map(|v| with_shape(v, shape)).collect())
}

/// Adam's constants for a step, with one parameter's count and gradient.
fn adam_params(s: &AdamStep, n: u32, g: GradLayout) -> AdamParams {
    let k = s.constants();
    AdamParams {
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
    }
}

/// Adam updates recorded but not yet dispatched: they wait to share one
/// `adam_group` dispatch with the step's next parameters. Each holds its
/// inputs (so no later dispatch of the recording reuses their buffers)
/// and its outputs (a dispatch that reads one dispatches the group
/// first, as does the submit; see `Recorder::dispatch`).
pub(crate) struct PendingAdam {
    step: AdamStep,
    /// Per parameter: inputs (p, g, m, v), outputs (p, m, v), the count
    /// and the gradient's layout.
    slots: Vec<(Vec<Value>, Vec<Value>, u32, GradLayout)>,
}

impl PendingAdam {
    /// Is `v` one of the updates' results?
    pub(crate) fn produces(&self, v: &Value) -> bool {
        self.slots
            .iter()
            .any(|(_, outs, _, _)| outs.iter().any(|o| Arc::ptr_eq(&o.storage, &v.storage)))
    }
}

/// Can this device bind `adam_group`'s storage buffers?
fn groups_updates(rec: &Recorder) -> bool {
    let l = &rec.ctx.limits;
    let storage = GROUP_SLOTS * SLOT_BINDINGS;
    l.max_storage_buffers_per_shader_stage as usize >= storage
        && l.max_bindings_per_bind_group as usize > storage
}

/// Record one Adam update into the pending group, dispatching the group
/// when it is full or the step's constants change.
fn defer_adam(
    rec: &mut Recorder,
    s: &AdamStep,
    inputs: &[Value],
    shape: &[usize],
) -> Result<Vec<Value>> {
    let n = crate::shape::numel(shape);
    let (count, ins, grad) = prepare(rec, "adam", inputs, n)?;
    let outs = (0..3)
        .map(|_| rec.output("adam", n, DType::F32))
        .collect::<Result<Vec<_>>>()?;
    if rec.pending_adam.as_ref().is_some_and(|p| p.step != *s) {
        flush_adam(rec)?;
    }
    let pending = rec.pending_adam.get_or_insert_with(|| PendingAdam {
        step: *s,
        slots: Vec::with_capacity(GROUP_SLOTS),
    });
    pending.slots.push((ins, outs.clone(), count, grad));
    if pending.slots.len() == GROUP_SLOTS {
        flush_adam(rec)?;
    }
    Ok(outs.into_iter().map(|v| with_shape(v, shape)).collect())
}

/// Dispatch the pending Adam updates, if any, as one `adam_group`.
pub(crate) fn flush_adam(rec: &mut Recorder) -> Result<()> {
    let Some(pending) = rec.pending_adam.take() else {
        return Ok(());
    };
    let mut params = AdamGroupParams {
        adam: adam_params(&pending.step, 0, GradLayout::default()),
        slots: pending.slots.len() as u32,
        ..Default::default()
    };
    let mut start = 0u32;
    for ((_, _, n, g), slot) in pending.slots.iter().zip(&mut params.slot) {
        *slot = AdamSlot {
            n: *n,
            start,
            g_rank: g.rank,
            g_offset: g.offset,
            g_shape: g.shape,
            g_strides: g.strides,
        };
        start += n.div_ceil(WORKGROUP);
    }
    // Slots left empty bind the first slot's buffers again (the same
    // access each time); no workgroup reaches them.
    let Some(first) = pending.slots.first() else {
        return Ok(());
    };
    let mut binds = Vec::with_capacity(GROUP_SLOTS * SLOT_BINDINGS);
    for k in 0..GROUP_SLOTS {
        let (ins, outs, _, _) = pending.slots.get(k).unwrap_or(first);
        binds.extend(ins.iter().map(Bind::Read));
        binds.extend(outs.iter().map(Bind::Write));
    }
    let pipeline = rec.ctx.pipeline(Shader::Optim, "adam_group", &[])?;
    let workgroups = start as usize * WORKGROUP as usize;
    rec.dispatch(&pipeline, &params, &binds, grid(workgroups, WORKGROUP))
}

/// New `[param, m, v]` after one Adam step.
pub(crate) fn adam(
    rec: &mut Recorder,
    s: &AdamStep,
    inputs: &[Value],
    shape: &[usize],
) -> Result<Vec<Value>> {
    if groups_updates(rec) && crate::shape::numel(shape) > 0 {
        return defer_adam(rec, s, inputs, shape);
    }
    update(rec, "adam", inputs, 3, shape, |n, g| adam_params(s, n, g))
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
