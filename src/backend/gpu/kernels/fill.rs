//! fill.wgsl: leaves computed on the device (random numbers, arange).

use super::{with_shape, WORKGROUP};
use crate::backend::gpu::pipeline::{kernel_params, Shader};
use crate::backend::gpu::recorder::{grid, Bind, Recorder};
use crate::backend::{rand_keys, Value};
use crate::shape::numel;
use crate::{DType, Result};

kernel_params!(FillParams {
    n: u32,
    a: u32,
    b: u32,
    _pad: u32,
});

/// What a fill computes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fill {
    /// Uniform [0, 1) from a seed, the same bits as the cpu backend's.
    Rand {
        seed: u64,
    },
    ArangeF32 {
        start: f32,
        step: f32,
    },
    ArangeI32 {
        start: i32,
        step: i32,
    },
}

impl Fill {
    fn entry(self) -> &'static str {
        match self {
            Fill::Rand { .. } => "rand",
            Fill::ArangeF32 { .. } => "arange_f32",
            Fill::ArangeI32 { .. } => "arange_i32",
        }
    }

    fn dtype(self) -> DType {
        match self {
            Fill::ArangeI32 { .. } => DType::I32,
            _ => DType::F32,
        }
    }

    fn words(self) -> (u32, u32) {
        match self {
            Fill::Rand { seed } => rand_keys(seed),
            Fill::ArangeF32 { start, step } => (start.to_bits(), step.to_bits()),
            Fill::ArangeI32 { start, step } => (start as u32, step as u32),
        }
    }
}

/// A new output of `shape` filled on the device.
pub(crate) fn fill(rec: &mut Recorder, fill: Fill, shape: &[usize]) -> Result<Value> {
    let n = numel(shape);
    let out = rec.output(fill.entry(), n, fill.dtype())?;
    if n > 0 {
        let pipeline = rec.ctx.pipeline(Shader::Fill, fill.entry(), &[])?;
        let (a, b) = fill.words();
        let params = FillParams {
            n: n as u32,
            a,
            b,
            _pad: 0,
        };
        rec.dispatch(&pipeline, &params, &[Bind::Write(&out)], grid(n, WORKGROUP))?;
    }
    Ok(with_shape(out, shape))
}
