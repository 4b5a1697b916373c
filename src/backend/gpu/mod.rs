//! The wgpu backend: every primitive as a hand-written WGSL kernel (files
//! in `shaders/`, each with one launcher in `kernels/`), elementwise
//! programs compiled by one emitter (`kernels/elementwise.rs`).
//!
//! - `device.rs`: adapters, the registry of opened devices, their limits;
//! - `pool.rs`: size-classed device buffers, uploads and downloads;
//! - `pipeline.rs`: shader files, typed kernel parameters, pipeline cache;
//! - `recorder.rs`: one realize's dispatches in one command encoder (the
//!   backend's [`Session`]), submitted once.

pub(crate) mod device;
pub(crate) mod kernels;
pub(crate) mod pipeline;
pub(crate) mod pool;
pub(crate) mod recorder;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use crate::backend::{Limits, Session, Storage, Value};
use crate::device::GpuId;
use crate::op::Op;
use crate::schedule::fusion::Program;
use crate::{DType, Result};

pub use pool::GpuBuffer;
pub(crate) use recorder::Recorder;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the planner may ask of this device's kernels.
pub(crate) fn limits(id: GpuId) -> Result<Limits> {
    let ctx = device::context(id)?;
    let bindable = ctx.limits.max_storage_buffers_per_shader_stage as usize;
    Ok(Limits {
        // The output takes one storage binding.
        max_fused_inputs: bindable
            .saturating_sub(1)
            .clamp(1, kernels::elementwise::MAX_LEAVES),
    })
}

/// A new recording on device `id`.
pub(crate) fn begin(id: GpuId) -> Result<Box<dyn Session>> {
    Ok(Box::new(Recorder::new(device::context(id)?)?))
}

impl Session for Recorder {
    fn exec(
        &mut self,
        op: &Op,
        inputs: &[Value],
        shape: &[usize],
        dtype: DType,
    ) -> Result<Vec<Value>> {
        kernels::exec(self, op, inputs, shape, dtype)
    }

    fn fused(&mut self, program: &Program, leaves: &[Value], shape: &[usize]) -> Result<Value> {
        kernels::elementwise::fused(self, program, leaves, shape)
    }

    fn fused_reduce(
        &mut self,
        program: &Program,
        leaves: &[Value],
        shape: &[usize],
        op: crate::op::ReduceOp,
        axes: &[usize],
    ) -> Result<Value> {
        kernels::reduce::fused_reduce(self, program, leaves, op, axes, shape)
    }

    fn epilogue(
        &mut self,
        op: &Op,
        inputs: &[Value],
        bias: &Value,
        relu: bool,
        shape: &[usize],
    ) -> Result<Vec<Value>> {
        kernels::epilogue(self, op, inputs, bias, relu, shape)
    }

    fn adopt(&mut self, host: Value) -> Result<Value> {
        self.on_device(&host)
    }

    fn finish(self: Box<Self>) -> Result<usize> {
        let mut rec = *self;
        // Updates still waiting for their group count as dispatched.
        kernels::optim::flush_adam(&mut rec)?;
        let dispatches = rec.dispatches();
        rec.submit()?;
        Ok(dispatches)
    }
}

/// A host copy of a value (identity for host values).
pub(crate) fn to_host(v: &Value) -> Result<Value> {
    match v.storage.as_ref() {
        Storage::Gpu(b) => Ok(Value {
            storage: Arc::new(b.ctx.download(b)?),
            layout: v.layout.clone(),
        }),
        _ => Ok(v.clone()),
    }
}

/// `v` as a dense buffer that can be handed to the application: `v` itself
/// when it is dense and nothing else of ours shares its buffer (a cached
/// constant does), else a private copy. The buffer is marked shared, so
/// the pool never reuses it (see `pool::Owner::Shared`).
pub(crate) fn shareable(ctx: &Arc<device::Context>, v: &Value) -> Result<Value> {
    let v = &on_device(ctx, v)?;
    let Storage::Gpu(b) = v.storage.as_ref() else {
        return Err(crate::Error::param(
            "share_buffer",
            "internal: a host value",
        ));
    };
    let cached = lock(&b.ctx.constants)
        .values()
        .any(|c| Arc::ptr_eq(&c.storage, &v.storage));
    let dense = v.layout.is_contiguous() && !cached;
    let out = if dense {
        v.clone()
    } else {
        // A copy of its own, so sharing it shares nothing else.
        let mut rec = Recorder::new(ctx.clone())?;
        let copy = kernels::copy::dense_always(&mut rec, v)?;
        rec.submit()?;
        copy
    };
    if let Storage::Gpu(b) = out.storage.as_ref() {
        b.share();
    }
    Ok(out)
}

/// `v` in a buffer of `ctx`: uploaded when it is still host data (a leaf
/// made from a slice is uploaded by the first realize that reads it).
pub(crate) fn on_device(ctx: &Arc<device::Context>, v: &Value) -> Result<Value> {
    match v.storage.as_ref() {
        Storage::Gpu(_) => Ok(v.clone()),
        host => Ok(Value {
            storage: Arc::new(Storage::Gpu(ctx.upload(host)?)),
            layout: v.layout.clone(),
        }),
    }
}
