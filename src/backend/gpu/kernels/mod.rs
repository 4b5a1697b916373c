//! Each primitive as dispatches of its WGSL kernel: one launcher file per
//! shader file, each owning that shader's parameter struct and variants.

pub(crate) mod attention;
pub(crate) mod copy;
pub(crate) mod elementwise;
pub(crate) mod fill;
pub(crate) mod gemm;
pub(crate) mod index;
pub(crate) mod optim;
pub(crate) mod pool2d;
#[cfg(any(test, feature = "bench"))]
pub(crate) mod probe;
pub(crate) mod reduce;
pub(crate) mod texture;

use super::lock;
use super::recorder::Recorder;
use crate::backend::Value;
use crate::op::Op;
use crate::schedule::fusion::Program;
use crate::shape::Layout;
use crate::{DType, Error, Result};
use gemm::GemmMode;

/// Threads per workgroup of the one-dimensional kernels.
pub(crate) const WORKGROUP: u32 = 256;
/// Most axes a kernel's shape or strides may keep after merging.
pub(crate) const MAX_RANK: usize = 8;

/// What a kernel applies to each output as it stores it (gemm.wgsl's and
/// pool2d.wgsl's EPILOGUE): the channel's bias (one value per channel),
/// then relu when `relu`.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    pub bias: &'a Value,
    pub relu: bool,
}

impl Epilogue<'_> {
    /// The EPILOGUE override's value.
    pub(crate) fn constant(e: Option<Epilogue<'_>>) -> f64 {
        match e {
            None => 0.0,
            Some(Epilogue { relu: false, .. }) => 1.0,
            Some(Epilogue { relu: true, .. }) => 2.0,
        }
    }
}

/// A matmul, forward convolution or max pooling that adds `bias` (one
/// value per channel) to each output, and applies relu after when
/// `relu`, as it stores it (see `Session::epilogue`).
pub(crate) fn epilogue(
    rec: &mut Recorder,
    op: &Op,
    inputs: &[Value],
    bias: &Value,
    relu: bool,
    shape: &[usize],
) -> Result<Vec<Value>> {
    let inputs = inputs
        .iter()
        .map(|v| rec.on_device(v))
        .collect::<Result<Vec<_>>>()?;
    let bias = rec.on_device(bias)?;
    let epilogue = Some(Epilogue { bias: &bias, relu });
    Ok(match (op, inputs.as_slice()) {
        (Op::MatMul, [a, b]) => vec![gemm::matmul(rec, None, a, b, shape, epilogue)?],
        (Op::Conv2d(g), [x, w]) => vec![gemm::conv(
            rec,
            GemmMode::ConvForward,
            (x, w),
            g,
            shape,
            None,
            epilogue,
        )?],
        (Op::MaxPool2d(g), [x]) => pool2d::max_forward(rec, g, x, shape, epilogue)?.into(),
        _ => {
            return Err(Error::param(
                op.name(),
                "internal: only a matmul, a forward convolution or a max pooling has an epilogue",
            ))
        }
    })
}

/// Run one primitive on the recorder's device. `shape`/`dtype` are the node's.
pub(crate) fn exec(
    rec: &mut Recorder,
    op: &Op,
    inputs: &[Value],
    shape: &[usize],
    dtype: DType,
) -> Result<Vec<Value>> {
    let inputs = inputs
        .iter()
        .map(|v| rec.on_device(v))
        .collect::<Result<Vec<_>>>()?;
    let x = |i: usize| &inputs[i];
    let one = match op {
        Op::Buffer | Op::Output(_) | Op::ToDevice => {
            return Err(Error::param(
                op.name(),
                "internal: the scheduler runs this node itself",
            ))
        }
        Op::Full(v) => rec.constant(*v, dtype, shape)?,
        Op::Rand { seed } => fill::fill(rec, fill::Fill::Rand { seed: *seed }, shape)?,
        Op::Arange { start, step } => {
            // Small ranges (an argmax's indices, a one-hot's classes) are
            // the same every step: computed once per device.
            const CACHED: usize = 1 << 16;
            let n = crate::shape::numel(shape);
            let key = (start.to_bits(), step.to_bits(), n, dtype);
            if let Some(v) = lock(&rec.ctx.aranges).get(&key) {
                return Ok(vec![with_shape(v.clone(), shape)]);
            }
            let f = match dtype {
                DType::F32 => fill::Fill::ArangeF32 {
                    start: *start as f32,
                    step: *step as f32,
                },
                DType::I32 => fill::Fill::ArangeI32 {
                    start: *start as i32,
                    step: *step as i32,
                },
            };
            let v = fill::fill(rec, f, shape)?;
            if n <= CACHED {
                let mut table = lock(&rec.ctx.aranges);
                if table.len() >= 256 {
                    table.clear();
                }
                table.insert(key, v.clone());
            }
            v
        }
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast(_) => {
            let program = Program::single(op.clone(), inputs.len());
            elementwise::fused(rec, &program, &inputs, shape)?
        }
        Op::Detach => x(0).clone(),
        Op::Reduce { op, axes } => reduce::reduce(rec, *op, axes, x(0))?,
        Op::Reshape => match x(0).layout.reshape(shape) {
            Some(layout) => view(x(0), layout),
            None => with_shape(copy::dense(rec, x(0))?, shape),
        },
        Op::Permute(p) => view(x(0), x(0).layout.permute(p)),
        Op::Expand => view(x(0), x(0).layout.expand(shape)),
        Op::Shrink(r) => view(x(0), x(0).layout.shrink(r)),
        Op::Pad(p) => copy::pad(rec, x(0), p, shape)?,
        Op::Contiguous => copy::dense(rec, x(0))?,
        Op::MatMul => gemm::matmul(rec, None, x(0), x(1), shape, None)?,
        Op::Conv2d(g) => gemm::conv(
            rec,
            GemmMode::ConvForward,
            (x(0), x(1)),
            g,
            shape,
            None,
            None,
        )?,
        Op::Conv2dBackwardData(g) => gemm::conv(
            rec,
            GemmMode::ConvBackwardData,
            (x(0), x(1)),
            g,
            shape,
            None,
            None,
        )?,
        Op::Conv2dBackwardFilter(g) => gemm::conv(
            rec,
            GemmMode::ConvBackwardFilter,
            (x(0), x(1)),
            g,
            shape,
            None,
            None,
        )?,
        Op::MaxPool2d(g) => return Ok(pool2d::max_forward(rec, g, x(0), shape, None)?.into()),
        Op::Attention(s) => return attention::forward(rec, s, &inputs),
        Op::AttentionBackward(s) => return attention::backward(rec, s, &inputs),
        Op::AdamUpdate(s) => return optim::adam(rec, s, &inputs, shape),
        Op::SgdUpdate(s) => return optim::sgd(rec, s, &inputs, shape),
        Op::MaxPool2dBackward(g) => pool2d::backward(rec, g, Some(x(0)), x(1), shape)?,
        Op::AvgPool2d(g) => pool2d::avg_forward(rec, g, x(0), shape)?,
        Op::AvgPool2dBackward(g) => pool2d::backward(rec, g, None, x(0), shape)?,
        Op::Gather { axis } => index::index(rec, index::Entry::Gather, x(1), x(0), *axis, shape)?,
        Op::ScatterAdd { axis } => {
            index::index(rec, index::Entry::ScatterAdd, x(0), x(1), *axis, shape)?
        }
    };
    Ok(vec![one])
}

pub(crate) fn view(v: &Value, layout: Layout) -> Value {
    Value {
        storage: v.storage.clone(),
        layout,
    }
}

pub(crate) fn with_shape(mut v: Value, shape: &[usize]) -> Value {
    v.layout = Layout::contiguous(shape);
    v
}

pub(crate) fn dtype_of(v: &Value) -> DType {
    v.storage.dtype()
}

/// `v`, or a one-element stand-in when it has no elements: every binding
/// needs a buffer, and the kernel never reads an empty operand.
pub(crate) fn bindable(rec: &mut Recorder, v: &Value) -> Result<Value> {
    if v.layout.numel() == 0 {
        rec.output("stand-in", 1, dtype_of(v))
    } else {
        Ok(v.clone())
    }
}

pub(crate) fn too_many_axes(op: &'static str, shape: &[usize]) -> Error {
    Error::shape(
        op,
        &[shape],
        format!("the gpu kernels take at most {MAX_RANK} axes after merging adjacent ones, each below 2^32; reshape to fewer axes first"),
    )
}
