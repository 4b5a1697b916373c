//! The CPU backend: plain Rust kernels for every primitive, multi-threaded
//! with rayon, matmul and convolution on the `gemm` crate.

pub(crate) mod alloc;
mod attention;
mod conv;
pub(crate) mod denormal;
pub(crate) mod elementwise;
mod index;
pub(crate) mod math;
mod matmul;
mod optim;
mod pool;
mod reduce;

use std::borrow::Cow;

use rayon::prelude::*;

use crate::backend::{Limits, Session, Storage, Value};
use crate::op::Op;
use crate::schedule::fusion::Program;
use crate::shape::Layout;
use crate::{DType, Error, Result};

/// The interpreter reads any number of leaves; more than this many rarely
/// pays, since each one is gathered block by block.
pub(crate) const LIMITS: Limits = Limits {
    max_fused_inputs: 16,
};

/// The cpu backend runs each node as it comes: a session has no state.
pub(crate) struct CpuSession;

/// Bytes of memory this machine has (Linux: MemTotal), if known.
fn host_memory() -> Option<u64> {
    static BYTES: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    })
}

/// An output that could never fit in this machine's memory is an error
/// naming the op and shape, not an aborted process. Views and constants
/// allocate nothing.
fn check_host_memory(op: &Op, shape: &[usize]) -> Result<()> {
    if matches!(
        op,
        Op::Full(_) | Op::Expand | Op::Permute(_) | Op::Shrink(_) | Op::Detach
    ) {
        return Ok(());
    }
    check_host_bytes(op.name(), shape, op.outputs())
}

fn check_host_bytes(op: &str, shape: &[usize], outputs: usize) -> Result<()> {
    let bytes = (crate::shape::numel(shape) as u64)
        .saturating_mul(4)
        .saturating_mul(outputs as u64);
    match host_memory() {
        Some(total) if bytes > total => Err(Error::OutOfMemory(format!(
            "{op}: an output of shape {shape:?} needs {:.1} GiB but this machine has {:.1} GiB; use a smaller batch or shape",
            bytes as f64 / (1u64 << 30) as f64,
            total as f64 / (1u64 << 30) as f64
        ))),
        _ => Ok(()),
    }
}

impl Session for CpuSession {
    fn exec(
        &mut self,
        op: &Op,
        inputs: &[Value],
        shape: &[usize],
        dtype: DType,
    ) -> Result<Vec<Value>> {
        check_host_memory(op, shape)?;
        let _flush = denormal::FlushDenormals::new();
        let x = host_inputs(inputs)?;
        match (op, x.as_slice()) {
            (Op::MaxPool2d(g), [x]) => Ok(pool::max_pool2d(g, x, shape).into()),
            (Op::Attention(s), [q, k, v, mask @ ..]) => {
                Ok(attention::attention(s, q, k, v, mask.first()))
            }
            (Op::AttentionBackward(s), [q, k, v, rest @ ..]) => {
                let (mask, rest) = if s.key_mask {
                    (rest.first(), &rest[1..])
                } else {
                    (None, rest)
                };
                let [lse, delta, dout] = rest else {
                    return Err(Error::param(op.name(), "internal: wrong input count"));
                };
                Ok(attention::attention_backward(
                    s, q, k, v, mask, lse, delta, dout,
                ))
            }
            (Op::AdamUpdate(s), [p, g, m, v]) => Ok(optim::adam(s, p, g, m, v).into()),
            (Op::SgdUpdate(s), [p, g, rest @ ..]) => Ok(optim::sgd(s, p, g, rest.first())),
            _ => Ok(vec![exec(op, &x, shape, dtype)?]),
        }
    }

    fn fused(&mut self, program: &Program, leaves: &[Value], shape: &[usize]) -> Result<Value> {
        check_host_bytes("elementwise", shape, 1)?;
        let _flush = denormal::FlushDenormals::new();
        let host = leaves
            .iter()
            .map(Value::to_host)
            .collect::<Result<Vec<_>>>()?;
        Ok(elementwise::fused(program, &host, shape))
    }

    fn fused_reduce(
        &mut self,
        program: &Program,
        leaves: &[Value],
        shape: &[usize],
        op: crate::op::ReduceOp,
        axes: &[usize],
    ) -> Result<Value> {
        // The program's values, then the reduction: the same arithmetic as
        // the two unfused steps (the cpu gains nothing from one pass).
        let values = self.fused(program, leaves, shape)?;
        Ok(reduce::reduce(op, axes, &values))
    }

    fn adopt(&mut self, host: Value) -> Result<Value> {
        host.to_host()
    }

    fn finish(self: Box<Self>) -> Result<usize> {
        Ok(0)
    }
}

/// Below this many elements a kernel stays on one thread.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// `inputs` in host memory (a defensive copy; the scheduler gives a cpu
/// node host values).
fn host_inputs(inputs: &[Value]) -> Result<Vec<Value>> {
    inputs.iter().map(Value::to_host).collect()
}

/// Run one primitive. `shape`/`dtype` are the node's (already validated).
pub(crate) fn exec(op: &Op, inputs: &[Value], shape: &[usize], dtype: DType) -> Result<Value> {
    let host: Vec<Value>;
    let inputs = if inputs.iter().any(Value::is_on_gpu) {
        host = inputs.iter().map(Value::to_host).collect::<Result<_>>()?;
        &host[..]
    } else {
        inputs
    };
    Ok(match op {
        Op::Buffer | Op::Output(_) | Op::ToDevice => {
            return Err(Error::param(
                op.name(),
                "internal: the scheduler runs this node itself",
            ))
        }
        Op::Full(v) => Value::constant(*v, dtype, shape),
        Op::Rand { seed } => {
            Value::f32(elementwise::rand(*seed, crate::shape::numel(shape)), shape)
        }
        Op::Arange { start, step } => {
            let n = crate::shape::numel(shape);
            match dtype {
                DType::F32 => Value::f32(
                    (0..n).map(|i| (*start + i as f64 * *step) as f32).collect(),
                    shape,
                ),
                DType::I32 => Value::i32(
                    (0..n).map(|i| (*start + i as f64 * *step) as i32).collect(),
                    shape,
                ),
            }
        }
        Op::Unary(u) => elementwise::unary(*u, &inputs[0]),
        Op::Binary(b) => elementwise::binary(*b, &inputs[0], &inputs[1], dtype)?,
        Op::Where => elementwise::where_(&inputs[0], &inputs[1], &inputs[2]),
        Op::Cast(to) => elementwise::cast(&inputs[0], *to),
        Op::Detach => inputs[0].clone(),
        Op::Reduce { op, axes } => reduce::reduce(*op, axes, &inputs[0]),
        Op::Reshape => {
            let v = &inputs[0];
            match v.layout.reshape(shape) {
                Some(layout) => Value {
                    storage: v.storage.clone(),
                    layout,
                },
                None => {
                    let mut c = contiguous(v);
                    c.layout = Layout::contiguous(shape);
                    c
                }
            }
        }
        Op::Permute(p) => view(&inputs[0], inputs[0].layout.permute(p)),
        Op::Expand => view(&inputs[0], inputs[0].layout.expand(shape)),
        Op::Shrink(r) => view(&inputs[0], inputs[0].layout.shrink(r)),
        Op::Pad(p) => elementwise::pad(&inputs[0], p, shape),
        Op::Contiguous => contiguous(&inputs[0]),
        Op::MatMul => matmul::matmul(&inputs[0], &inputs[1], shape),
        Op::Conv2d(g) => conv::conv2d(&inputs[0], &inputs[1], g, shape),
        Op::Conv2dBackwardData(g) => conv::conv2d_backward_data(&inputs[0], &inputs[1], g, shape),
        Op::Conv2dBackwardFilter(g) => {
            conv::conv2d_backward_filter(&inputs[0], &inputs[1], g, shape)
        }
        Op::MaxPool2d(_)
        | Op::AdamUpdate(_)
        | Op::SgdUpdate(_)
        | Op::Attention(_)
        | Op::AttentionBackward(_) => {
            return Err(Error::param(
                op.name(),
                "internal: a multi-output op reached the single-output kernels",
            ))
        }
        Op::MaxPool2dBackward(g) => pool::max_pool2d_backward(g, &inputs[0], &inputs[1], shape),
        Op::AvgPool2d(g) => pool::avg_pool2d(g, &inputs[0], shape),
        Op::AvgPool2dBackward(g) => pool::avg_pool2d_backward(g, &inputs[0], shape),
        Op::Gather { axis } => index::gather(&inputs[0], &inputs[1], *axis)?,
        Op::ScatterAdd { axis } => index::scatter_add(&inputs[0], &inputs[1], *axis, shape)?,
    })
}

fn view(v: &Value, layout: Layout) -> Value {
    Value {
        storage: v.storage.clone(),
        layout,
    }
}

/// `n` zeros in chunks of `chunk`, each zeroed and then filled by `f(index,
/// chunk)` on a worker thread: the zeroing happens in parallel, in cache,
/// right before the chunk is used, instead of one serial pass up front.
pub(crate) fn zeroed_chunks(
    n: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| {
            c.fill(std::mem::MaybeUninit::new(0.0));
            // SAFETY: every element of `c` was just initialised.
            let c = unsafe { &mut *(c as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
            f(i, c);
        });
    // SAFETY: all `n` elements were initialised chunk by chunk above.
    unsafe { out.set_len(n) };
    out
}

/// A dense row-major copy (or the value itself when it already is one).
pub(crate) fn contiguous(v: &Value) -> Value {
    if v.layout.is_contiguous() && v.layout.offset == 0 && v.storage.len() == v.layout.numel() {
        return v.clone();
    }
    match v.storage.as_ref() {
        Storage::F32(d) => Value::f32(strided_copy(d, &v.layout), &v.layout.shape),
        Storage::I32(d) => Value::i32(strided_copy(d, &v.layout), &v.layout.shape),
        Storage::Gpu(_) => unreachable!("cpu kernels see host values: exec downloads first"),
    }
}

/// The f32 elements of a value in row-major order, borrowed when dense.
pub(crate) fn f32_data(v: &Value) -> Cow<'_, [f32]> {
    match v.storage.as_ref() {
        Storage::F32(d) => {
            let n = v.layout.numel();
            if v.layout.is_contiguous() {
                Cow::Borrowed(&d[v.layout.offset..v.layout.offset + n])
            } else {
                Cow::Owned(strided_copy(d, &v.layout))
            }
        }
        Storage::I32(d) => Cow::Owned(
            strided_copy(d, &v.layout)
                .into_iter()
                .map(|x| x as f32)
                .collect(),
        ),
        Storage::Gpu(_) => unreachable!("cpu kernels see host values: exec downloads first"),
    }
}

/// The i32 elements of a value in row-major order.
pub(crate) fn i32_data(v: &Value) -> Cow<'_, [i32]> {
    match v.storage.as_ref() {
        Storage::I32(d) => {
            let n = v.layout.numel();
            if v.layout.is_contiguous() {
                Cow::Borrowed(&d[v.layout.offset..v.layout.offset + n])
            } else {
                Cow::Owned(strided_copy(d, &v.layout))
            }
        }
        Storage::F32(d) => Cow::Owned(
            strided_copy(d, &v.layout)
                .into_iter()
                .map(|x| x as i32)
                .collect(),
        ),
        Storage::Gpu(_) => unreachable!("cpu kernels see host values: exec downloads first"),
    }
}

/// Gather a strided layout into a dense row-major vector, rows in parallel.
pub(crate) fn strided_copy<T: Copy + Send + Sync>(data: &[T], layout: &Layout) -> Vec<T> {
    let n = layout.numel();
    if n == 0 {
        return vec![];
    }
    if layout.is_contiguous() {
        return data[layout.offset..layout.offset + n].to_vec();
    }
    let rank = layout.shape.len();
    let inner = layout.shape[rank - 1];
    if n < PAR_MIN || inner == 0 {
        let mut out = Vec::with_capacity(n);
        layout.for_each_offset(|_, o| out.push(data[o]));
        return out;
    }
    // Split the outer dimensions into rows, each row copied independently.
    let outer_shape = &layout.shape[..rank - 1];
    let outer_strides = crate::shape::contiguous_strides(outer_shape);
    let mut out = vec![data[layout.offset]; n];
    let s_inner = layout.strides[rank - 1];
    out.par_chunks_mut(inner)
        .enumerate()
        .for_each(|(row, dst)| {
            let mut off = layout.offset;
            let mut r = row;
            for (d, &os) in outer_strides.iter().enumerate() {
                let i = r / os;
                r %= os;
                off += i * layout.strides[d];
            }
            for (j, x) in dst.iter_mut().enumerate() {
                *x = data[off + j * s_inner];
            }
        });
    out
}
