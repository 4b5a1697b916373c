//! index.wgsl: gather along an axis and its adjoint scatter-add.

use super::copy::dense;
use super::{dtype_of, too_many_axes, with_shape, WORKGROUP};
use crate::backend::gpu::pipeline::{kernel_params, words8, Shader, U8x};
use crate::backend::gpu::recorder::{grid, Bind, Recorder};
use crate::backend::Value;
use crate::op::Op;
use crate::schedule::fusion::Program;
use crate::shape::{contiguous_strides, numel};
use crate::{DType, Result};

kernel_params!(IndexParams {
    n: u32,
    rank: u32,
    axis: u32,
    axis_size: u32,
    index_shape: U8x,
    strides: U8x,
    src_strides: U8x,
    src_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
});

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    Gather,
    ScatterAdd,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::Gather => "gather",
            Entry::ScatterAdd => "scatter_add",
        }
    }
}

/// Gather (`src` gathered along `axis` at `index`) or scatter-add (`src`
/// added into zeros of `shape` at `index`).
pub(crate) fn index(
    rec: &mut Recorder,
    entry: Entry,
    index: &Value,
    src: &Value,
    axis: usize,
    shape: &[usize],
) -> Result<Value> {
    let op = entry.name();
    let out = rec.output(op, numel(shape), DType::F32)?;
    let n = index.layout.numel();
    if entry == Entry::ScatterAdd {
        rec.clear(&out);
    }
    if n == 0 || numel(shape) == 0 {
        return Ok(with_shape(out, shape));
    }
    let idx_shape = index.layout.shape.clone();
    let index = dense(rec, index)?;
    let src = if dtype_of(src) == DType::I32 {
        let cast = Program::single(Op::Cast(DType::F32), 1);
        super::elementwise::fused(
            rec,
            &cast,
            std::slice::from_ref(src),
            &src.layout.shape.clone(),
        )?
    } else {
        // Read in place, whatever its strides (no copy first).
        src.clone()
    };
    // Strides of the tensor the indices point into: the source where it
    // lies (gather) or the dense output (scatter_add).
    let (target_strides, axis_size) = match entry {
        Entry::Gather => (src.layout.strides.clone(), src.layout.shape[axis]),
        Entry::ScatterAdd => (contiguous_strides(shape), shape[axis]),
    };
    let (Some(is), Some(st), Some(ss)) = (
        words8(&idx_shape),
        words8(&target_strides),
        words8(&src.layout.strides),
    ) else {
        return Err(too_many_axes(op, &idx_shape));
    };
    let params = IndexParams {
        n: n as u32,
        rank: idx_shape.len() as u32,
        axis: axis as u32,
        axis_size: axis_size as u32,
        index_shape: is,
        strides: st,
        src_strides: ss,
        src_offset: src.layout.offset as u32,
        ..Default::default()
    };
    let flag = match rec.index_flag.take() {
        Some(f) => f,
        None => {
            let f = rec.output("index flag", 2, DType::I32)?;
            rec.clear(&f);
            f
        }
    };
    let pipeline = rec.ctx.pipeline(Shader::Index, op, &[])?;
    let result = rec.dispatch(
        &pipeline,
        &params,
        &[
            Bind::Read(&index),
            Bind::Read(&src),
            Bind::Write(&flag),
            Bind::Write(&out),
        ],
        grid(n, WORKGROUP),
    );
    rec.index_flag = Some(flag);
    result?;
    Ok(with_shape(out, shape))
}
