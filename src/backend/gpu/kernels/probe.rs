//! probe.wgsl: the FMA-throughput probe of `shadergrad bench`.

use super::WORKGROUP;
use crate::backend::gpu::pipeline::{kernel_params, Shader};
use crate::backend::gpu::recorder::{grid, Bind, Recorder};
use crate::backend::Value;
use crate::{DType, Result};

kernel_params!(ProbeParams {
    iterations: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
});

/// FLOPs of one invocation's round: 8 chains x 4 steps x 4 lanes x 2.
pub(crate) const FLOPS_PER_ROUND: f64 = 256.0;

/// Record one probe over `invocations` (a multiple of the workgroup) for
/// `iterations` rounds; returns the sink (`invocations` vec4s).
pub(crate) fn fma_probe(rec: &mut Recorder, invocations: usize, iterations: u32) -> Result<Value> {
    let sink = rec.output("fma probe", invocations * 4, DType::F32)?;
    let pipeline = rec.ctx.pipeline(Shader::Probe, "fma_throughput", &[])?;
    let params = ProbeParams {
        iterations,
        ..Default::default()
    };
    rec.dispatch(
        &pipeline,
        &params,
        &[Bind::Write(&sink)],
        grid(invocations, WORKGROUP),
    )?;
    Ok(sink)
}
