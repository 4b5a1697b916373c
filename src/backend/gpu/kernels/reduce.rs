//! reduce.wgsl: sum or max over axes of a strided view.

use super::elementwise::Reduction;
use super::{bindable, dtype_of, too_many_axes, with_shape, MAX_RANK, WORKGROUP};
use crate::backend::gpu::pipeline::{kernel_params, words8, Shader, U8x};
use crate::backend::gpu::recorder::{grid, Bind, Recorder};
use crate::backend::Value;
use crate::op::ReduceOp;
use crate::schedule::fusion::Program;
use crate::shape::{collapse, numel, Layout};
use crate::{DType, Result};

kernel_params!(ReduceParams {
    n_out: u32,
    row: u32,
    kept_rank: u32,
    red_rank: u32,
    offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    kept_shape: U8x,
    kept_strides: U8x,
    red_shape: U8x,
    red_strides: U8x,
});

/// How outputs map onto invocations.
#[derive(Clone, Copy)]
enum Entry {
    /// One invocation per output: short rows or many outputs.
    Rows,
    /// One workgroup per output, combined in a tree: long rows.
    Tree,
}

/// `op` over `axes` of `program`'s values over `leaves` (all of shape
/// `in_shape`), keeping the axes as size 1: one dispatch, the values never
/// stored. The emitted kernel walks an input whose reduced axes are moved
/// last, in the order `reduce` reads, so both round alike.
pub(crate) fn fused_reduce(
    rec: &mut Recorder,
    program: &Program,
    leaves: &[Value],
    op: ReduceOp,
    axes: &[usize],
    in_shape: &[usize],
) -> Result<Value> {
    let out_shape: Vec<usize> = in_shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let (n_out, row) = (
        numel(&out_shape),
        numel(in_shape) / numel(&out_shape).max(1),
    );
    if n_out == 0 || row == 0 {
        // Nothing to read: the plain kernels handle empty shapes.
        let x = super::elementwise::fused(rec, program, leaves, in_shape)?;
        return reduce(rec, op, axes, &x);
    }
    let leaves = leaves
        .iter()
        .map(|v| rec.on_device(v))
        .collect::<Result<Vec<_>>>()?;
    rec.ctx.check_elements("reduce", numel(in_shape))?;
    let order: Vec<usize> = (0..in_shape.len())
        .filter(|d| !axes.contains(d))
        .chain((0..in_shape.len()).filter(|d| axes.contains(d)))
        .collect();
    let moved = |l: &Layout| Layout {
        shape: order.iter().map(|&d| l.shape[d]).collect(),
        strides: order.iter().map(|&d| l.strides[d]).collect(),
        offset: l.offset,
    };
    let layouts: Vec<Layout> = leaves.iter().map(|v| moved(&v.layout)).collect();
    let typed: Vec<(DType, &Layout)> = leaves.iter().map(dtype_of).zip(&layouts).collect();
    let moved_shape: Vec<usize> = order.iter().map(|&d| in_shape[d]).collect();
    let mut kernel = super::elementwise::elementwise(program, &typed, &moved_shape)?;
    let tree = !(row <= 64 || n_out >= 16_384);
    kernel.signature.reduce = Some(Reduction { op, tree });
    kernel.params.n = n_out as u32;
    kernel.params.row = row as u32;
    let out = rec.output("reduce", n_out, DType::F32)?;
    let pipeline = rec.ctx.fused_pipeline(&kernel.signature)?;
    let mut binds = vec![Bind::Write(&out)];
    binds.extend(leaves.iter().map(Bind::Read));
    let groups = if tree {
        grid(n_out, 1)
    } else {
        grid(n_out, WORKGROUP)
    };
    rec.dispatch(&pipeline, &kernel.params, &binds, groups)?;
    Ok(with_shape(out, &out_shape))
}

/// `op` over `axes` of `x`, keeping them as size 1.
pub(crate) fn reduce(rec: &mut Recorder, op: ReduceOp, axes: &[usize], x: &Value) -> Result<Value> {
    let shape = &x.layout.shape;
    let out_shape: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let n_out = numel(&out_shape);
    let out = rec.output("reduce", n_out, dtype_of(x))?;
    if n_out == 0 {
        return Ok(with_shape(out, &out_shape));
    }
    let split = |keep: bool| {
        let dims: Vec<usize> = (0..shape.len())
            .filter(|d| axes.contains(d) != keep)
            .collect();
        let layout = Layout {
            shape: dims.iter().map(|&d| shape[d]).collect(),
            strides: dims.iter().map(|&d| x.layout.strides[d]).collect(),
            offset: 0,
        };
        let (s, l) = collapse(&layout.shape, &[&layout]);
        (s, l[0].strides.clone())
    };
    let (kept_shape, kept_strides) = split(true);
    let (red_shape, red_strides) = split(false);
    let row = numel(&red_shape);
    let words = (
        words8(&kept_shape),
        words8(&kept_strides),
        words8(&red_shape),
        words8(&red_strides),
    );
    let (Some(ks), Some(kst), Some(rs), Some(rst)) = words else {
        return Err(too_many_axes("reduce", shape));
    };
    debug_assert!(kept_shape.len() <= MAX_RANK);
    let params = ReduceParams {
        n_out: n_out as u32,
        row: row as u32,
        kept_rank: kept_shape.len() as u32,
        red_rank: red_shape.len() as u32,
        offset: x.layout.offset as u32,
        kept_shape: ks,
        kept_strides: kst,
        red_shape: rs,
        red_strides: rst,
        ..Default::default()
    };
    let constants = [
        ("OP", if op == ReduceOp::Sum { 0.0 } else { 1.0 }),
        (
            "INT_INPUT",
            if dtype_of(x) == DType::I32 { 1.0 } else { 0.0 },
        ),
    ];
    let entry = if row <= 64 || n_out >= 16_384 {
        Entry::Rows
    } else {
        Entry::Tree
    };
    let (name, groups) = match entry {
        Entry::Rows => ("rows", grid(n_out, WORKGROUP)),
        Entry::Tree => ("tree", grid(n_out, 1)),
    };
    let pipeline = rec.ctx.pipeline(Shader::Reduce, name, &constants)?;
    let src = bindable(rec, x)?;
    rec.dispatch(
        &pipeline,
        &params,
        &[Bind::Read(&src), Bind::Write(&out)],
        groups,
    )?;
    Ok(with_shape(out, &out_shape))
}
