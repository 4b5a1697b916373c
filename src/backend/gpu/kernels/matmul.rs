//! matmul.wgsl: the simpler matmul versions, kept selectable so the
//! benchmark compares them with gemm.wgsl's register-blocked kernel.

use super::gemm::{dispatch_tiles, matmul_operands};
use super::with_shape;
use crate::backend::gpu::pipeline::Shader;
use crate::backend::gpu::recorder::{Bind, Recorder};
use crate::backend::Value;
use crate::shape::numel;
use crate::{DType, Result};

/// A matmul kernel version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MatmulKernel {
    /// gemm.wgsl: 64x64 tiles, 4x4 per invocation (what the engine runs).
    Blocked,
    /// One invocation per output, straight from memory.
    Naive,
    /// 16x16 tiles staged in workgroup memory.
    Tiled,
}

impl MatmulKernel {
    pub(crate) const ALL: [MatmulKernel; 3] = [
        MatmulKernel::Naive,
        MatmulKernel::Tiled,
        MatmulKernel::Blocked,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            MatmulKernel::Blocked => "blocked",
            MatmulKernel::Naive => "naive",
            MatmulKernel::Tiled => "tiled",
        }
    }
}

/// `[..., m, k] @ [..., k, n]` with the given kernel version.
pub(crate) fn matmul_with(
    rec: &mut Recorder,
    kernel: MatmulKernel,
    a: &Value,
    b: &Value,
    shape: &[usize],
) -> Result<Value> {
    let entry = match kernel {
        MatmulKernel::Blocked => return super::gemm::matmul(rec, a, b, shape),
        MatmulKernel::Naive => "naive",
        MatmulKernel::Tiled => "tiled",
    };
    let out = rec.output("matmul", numel(shape), DType::F32)?;
    if numel(shape) == 0 {
        return Ok(with_shape(out, shape));
    }
    let (a, b, mut params, batch) = matmul_operands(rec, a, b, shape)?;
    if params.k == 0 {
        rec.clear(&out);
        return Ok(with_shape(out, shape));
    }
    let pipeline = rec.ctx.pipeline(Shader::Matmul, entry, &[])?;
    let (m, n) = (params.m as usize, params.n as usize);
    dispatch_tiles(
        rec,
        &pipeline,
        &mut params,
        &[
            Bind::Read(&a),
            Bind::Read(&b),
            Bind::Write(&out),
            Bind::Skip,
        ],
        (n.div_ceil(16), m.div_ceil(16), batch),
        "matmul",
    )?;
    Ok(with_shape(out, shape))
}
