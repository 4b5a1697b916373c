//! Elementwise kernels: unary, binary, where, cast, pad, random.

use rayon::prelude::*;

use super::{f32_data, i32_data, PAR_MIN};
use crate::backend::{Storage, Value};
use crate::op::{BinaryOp, UnaryOp};
use crate::schedule::fusion::Program;
use crate::shape::{collapse, Layout};
use crate::{DType, Result};

/// A dense output of `n` elements written by `f(offset, chunk)` over
/// disjoint chunks, in parallel when large. No zero-fill first: every
/// element is written exactly once.
pub(crate) fn build<T: Send + Copy>(
    n: usize,
    f: impl Fn(usize, &mut [std::mem::MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    if n >= PAR_MIN {
        spare
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| f(c * CHUNK, chunk));
    } else {
        f(0, spare);
    }
    // SAFETY: `f` initialised all `n` elements (each kernel below writes every slot).
    unsafe { out.set_len(n) };
    out
}

const CHUNK: usize = 16384;

/// Map `f` over `n` outputs by index, in parallel when large.
fn fill<T: Send + Copy>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    build(n, |start, chunk| {
        for (j, o) in chunk.iter_mut().enumerate() {
            o.write(f(start + j));
        }
    })
}

/// Fill `buf[..len]` with an operand's values at output elements `at..at +
/// len` (row-major over `l.shape`): one fill or strided copy per row of the
/// (collapsed) shape, so a per-channel bias over short feature maps costs a
/// few fills per block instead of a block of its own per row.
fn gather<T: Copy>(l: &Layout, data: &[T], at: usize, len: usize, buf: &mut [T]) {
    let rank = l.shape.len();
    if rank == 0 {
        buf[..len].fill(data[l.offset]);
        return;
    }
    let mut idx = [0usize; MAX_GATHER_RANK];
    let (mut rem, mut off) = (at, l.offset);
    for d in (0..rank).rev() {
        idx[d] = rem % l.shape[d];
        rem /= l.shape[d];
        off += idx[d] * l.strides[d];
    }
    let (inner, step) = (l.shape[rank - 1], l.strides[rank - 1]);
    let mut filled = 0;
    loop {
        let run = (inner - idx[rank - 1]).min(len - filled);
        load(data, off, step, run, &mut buf[filled..]);
        filled += run;
        if filled == len {
            return;
        }
        // The row is done: step the outer axes like an odometer.
        off -= idx[rank - 1] * step;
        idx[rank - 1] = 0;
        for d in (0..rank - 1).rev() {
            idx[d] += 1;
            off += l.strides[d];
            if idx[d] < l.shape[d] {
                break;
            }
            off -= l.shape[d] * l.strides[d];
            idx[d] = 0;
        }
    }
}

/// Highest rank `gather` handles after `collapse` (which never raises it).
const MAX_GATHER_RANK: usize = 16;

/// Read `len` elements of an operand from `(base, stride)` into a small slice.
#[inline(always)]
fn load<T: Copy>(data: &[T], base: usize, stride: usize, len: usize, buf: &mut [T]) {
    match stride {
        1 => buf[..len].copy_from_slice(&data[base..base + len]),
        0 => buf[..len].fill(data[base]),
        s => {
            for (j, b) in buf[..len].iter_mut().enumerate() {
                *b = data[base + j * s];
            }
        }
    }
}

/// A value's elements as 32-bit words (an i32 as its bits).
fn as_words(v: &Value) -> std::borrow::Cow<'_, [f32]> {
    match v.storage.as_ref() {
        Storage::F32(d) => std::borrow::Cow::Borrowed(d.as_slice()),
        Storage::I32(d) => std::borrow::Cow::Owned(d.iter().map(|&x| int_bits(x)).collect()),
        Storage::Gpu(_) => unreachable!("cpu kernels see host values: exec downloads first"),
    }
}

/// erf to f32 precision: Taylor series below 0.5, where the fit's absolute
/// error would be a large relative one (and erf(0) would not be 0); above,
/// Numerical Recipes' erfc Chebyshev fit (|error| < 1.2e-7).
pub(crate) fn erf(x: f32) -> f32 {
    let x = x as f64;
    let z = x.abs();
    if z < 0.5 {
        // 2/sqrt(pi) * (x - x^3/3 + x^5/10 - x^7/42 + x^9/216 - x^11/1320);
        // the first omitted term is below 1.5e-8 at 0.5.
        let x2 = x * x;
        return (x
            * (std::f64::consts::FRAC_2_SQRT_PI
                + x2 * (-0.376_126_389_031_837_5
                    + x2 * (0.112_837_916_709_551_26
                        + x2 * (-0.026_866_170_645_131_25
                            + x2 * (0.005_223_977_625_442_187
                                + x2 * -0.000_854_832_702_345_085_2)))))) as f32;
    }
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    (if x >= 0.0 { 1.0 - r } else { r - 1.0 }) as f32
}

/// One op as a one-instruction fused program: every f32 elementwise op runs
/// through the same blocked interpreter as fused chains.
fn single(op: crate::op::Op, inputs: &[Value]) -> Value {
    let program = Program::single(op, inputs.len());
    fused(&program, inputs, &inputs[0].layout.shape)
}

pub(crate) fn unary(op: UnaryOp, x: &Value) -> Value {
    single(crate::op::Op::Unary(op), std::slice::from_ref(x))
}

/// Integer operands included: the interpreter types its slots as the
/// emitter does, so there is one implementation of each op's semantics.
pub(crate) fn binary(op: BinaryOp, a: &Value, b: &Value, out_dtype: DType) -> Result<Value> {
    let out = single(crate::op::Op::Binary(op), &[a.clone(), b.clone()]);
    debug_assert_eq!(out.storage.dtype(), out_dtype);
    Ok(out)
}

pub(crate) fn where_(c: &Value, a: &Value, b: &Value) -> Value {
    single(crate::op::Op::Where, &[c.clone(), a.clone(), b.clone()])
}

pub(crate) fn cast(x: &Value, to: DType) -> Value {
    match to {
        DType::F32 => Value::f32(f32_data(x).into_owned(), &x.layout.shape),
        DType::I32 => Value::i32(i32_data(x).into_owned(), &x.layout.shape),
    }
}

pub(crate) fn pad(x: &Value, pads: &[(usize, usize)], out_shape: &[usize]) -> Value {
    // The input lands in the interior of the output: a shrunk view of it.
    let interior: Vec<(usize, usize)> = pads
        .iter()
        .zip(&x.layout.shape)
        .map(|(&(before, _), &d)| (before, before + d))
        .collect();
    let dest = Layout::contiguous(out_shape).shrink(&interior);
    let n = crate::shape::numel(out_shape);
    match x.storage.as_ref() {
        Storage::F32(_) => {
            let src = f32_data(x);
            let mut out = vec![0.0f32; n];
            dest.for_each_offset(|i, o| out[o] = src[i]);
            Value::f32(out, out_shape)
        }
        Storage::Gpu(_) => unreachable!("cpu kernels see host values: exec downloads first"),
        Storage::I32(_) => {
            let src = i32_data(x);
            let mut out = vec![0i32; n];
            dest.for_each_offset(|i, o| out[o] = src[i]);
            Value::i32(out, out_shape)
        }
    }
}
/// Uniform [0, 1) with 24 random bits: element i = hash(hash(i + k1) ^ k2).
pub(crate) fn rand(seed: u64, n: usize) -> Vec<f32> {
    let (k1, k2) = crate::backend::rand_keys(seed);
    fill(n, |i| {
        let h = crate::backend::hash32(crate::backend::hash32((i as u32).wrapping_add(k1)) ^ k2);
        (h >> 8) as f32 * (1.0 / 16_777_216.0)
    })
}

/// An i32 element carried in an f32 slot (its bits).
fn int_bits(x: i32) -> f32 {
    f32::from_bits(x as u32)
}

fn int_of(slot: f32) -> i32 {
    slot.to_bits() as i32
}

/// Run `program` over `leaves` (values of the output's shape, any layout).
/// Slots are 32-bit words: an i32 slot holds its integer's bits, and f32
/// ops read integer arguments as their values, as the GPU's emitter does.
pub(crate) fn fused(program: &Program, leaves: &[Value], out_shape: &[usize]) -> Value {
    const BLOCK: usize = 512;
    let leaf_types: Vec<DType> = leaves.iter().map(|v| v.storage.dtype()).collect();
    let types = program.slot_types(&leaf_types);
    let int = |slot: usize| types[slot] == DType::I32;
    let data: Vec<_> = leaves.iter().map(as_words).collect();
    let n = crate::shape::numel(out_shape);
    let (_, layouts) = collapse(
        out_shape,
        &leaves.iter().map(|v| &v.layout).collect::<Vec<_>>(),
    );
    if layouts.iter().any(|l| l.shape.len() > MAX_GATHER_RANK) {
        // Unreachable for real tensors; keep the interpreter's loops simple.
        let dense: Vec<Value> = leaves.iter().map(super::contiguous).collect();
        return fused(program, &dense, out_shape);
    }
    // How each leaf is read: in place (dense), once per chunk (one value
    // everywhere), or gathered block by block into its slot.
    let dense: Vec<bool> = layouts.iter().map(Layout::is_contiguous).collect();
    let constant: Vec<bool> = layouts
        .iter()
        .map(|l| l.strides.iter().all(|&s| s == 0))
        .collect();
    let out = build(n, |start, chunk| {
        let mut leaf_slots = vec![[0.0f32; BLOCK]; program.leaves];
        let mut slots = vec![[0.0f32; BLOCK]; program.instrs.len()];
        // Integer arguments of an f32 op, as f32 values.
        let mut converted = [[0.0f32; BLOCK]; 3];
        for (k, l) in layouts.iter().enumerate() {
            if constant[k] && !dense[k] {
                leaf_slots[k].fill(data[k][l.offset]);
            }
        }
        let mut done = 0;
        while done < chunk.len() {
            let at = start + done;
            let len = (chunk.len() - done).min(BLOCK);
            for (k, l) in layouts.iter().enumerate() {
                if !dense[k] && !constant[k] {
                    gather(l, &data[k], at, len, &mut leaf_slots[k]);
                }
            }
            let leaf = |k: usize| -> &[f32] {
                if dense[k] {
                    let from = layouts[k].offset + at;
                    &data[k][from..from + len]
                } else {
                    &leaf_slots[k][..len]
                }
            };
            for (i, ins) in program.instrs.iter().enumerate() {
                let (earlier, rest) = slots.split_at_mut(i);
                let dst = &mut rest[0][..len];
                let raw = |j: usize| match ins.args[j] {
                    a if a < program.leaves => leaf(a),
                    a => &earlier[a - program.leaves][..len],
                };
                let int_arg = |j: usize| int(ins.args[j]);
                let int_op = match &ins.op {
                    crate::op::Op::Cast(to) => {
                        let a = raw(0);
                        match (int_arg(0), to) {
                            (false, DType::I32) => dst
                                .iter_mut()
                                .zip(a)
                                .for_each(|(d, &v)| *d = int_bits(v as i32)),
                            (true, DType::F32) => dst
                                .iter_mut()
                                .zip(a)
                                .for_each(|(d, &v)| *d = int_of(v) as f32),
                            _ => dst.copy_from_slice(a),
                        }
                        true
                    }
                    crate::op::Op::Binary(b) if int_arg(0) && int_arg(1) => {
                        let it = dst
                            .iter_mut()
                            .zip(raw(0))
                            .zip(raw(1))
                            .map(|((d, &x), &y)| (d, int_of(x), int_of(y)));
                        match b {
                            BinaryOp::Add => {
                                it.for_each(|(d, x, y)| *d = int_bits(x.wrapping_add(y)))
                            }
                            BinaryOp::Mul => {
                                it.for_each(|(d, x, y)| *d = int_bits(x.wrapping_mul(y)))
                            }
                            BinaryOp::Max => it.for_each(|(d, x, y)| *d = int_bits(x.max(y))),
                            BinaryOp::Pow => it.for_each(|(d, x, y)| {
                                *d = int_bits((x as f64).powf(y as f64) as i32)
                            }),
                            // Masks are f32.
                            BinaryOp::CmpLt => it.for_each(|(d, x, y)| *d = (x < y) as u8 as f32),
                            BinaryOp::CmpEq => it.for_each(|(d, x, y)| *d = (x == y) as u8 as f32),
                        }
                        true
                    }
                    _ => false,
                };
                if int_op {
                    continue;
                }
                let int_where = matches!(ins.op, crate::op::Op::Where) && int(program.leaves + i);
                for (j, c) in converted.iter_mut().enumerate().take(ins.args.len()) {
                    // A where of integers selects their bits untouched.
                    let keep_bits = int_where && j > 0;
                    if int_arg(j) && !keep_bits {
                        c[..len]
                            .iter_mut()
                            .zip(raw(j))
                            .for_each(|(d, &v)| *d = int_of(v) as f32);
                    }
                }
                let arg = |j: usize| -> &[f32] {
                    if int_arg(j) && !(int_where && j > 0) {
                        &converted[j][..len]
                    } else {
                        raw(j)
                    }
                };
                match &ins.op {
                    crate::op::Op::Unary(u) => {
                        // One loop per op, so each body inlines (and the
                        // cheap ones vectorise) instead of calling through a
                        // function pointer per element.
                        let a = arg(0);
                        macro_rules! map {
                            ($f:expr) => {
                                dst.iter_mut().zip(a).for_each(|(d, &v)| *d = $f(v))
                            };
                        }
                        match u {
                            UnaryOp::Neg => map!(|v: f32| -v),
                            UnaryOp::Exp => map!(super::math::exp),
                            UnaryOp::Log => map!(f32::ln),
                            UnaryOp::Sqrt => map!(f32::sqrt),
                            UnaryOp::Recip => map!(|v: f32| 1.0 / v),
                            UnaryOp::Sin => map!(f32::sin),
                            UnaryOp::Tanh => map!(f32::tanh),
                            UnaryOp::Erf => map!(erf),
                            UnaryOp::Relu => map!(|v: f32| if v > 0.0 { v } else { 0.0 }),
                        }
                    }
                    crate::op::Op::Binary(b) => {
                        let (p, q) = (arg(0), arg(1));
                        let it = dst.iter_mut().zip(p).zip(q);
                        match b {
                            BinaryOp::Add => it.for_each(|((d, &x), &y)| *d = x + y),
                            BinaryOp::Mul => it.for_each(|((d, &x), &y)| *d = x * y),
                            BinaryOp::Max => it.for_each(|((d, &x), &y)| {
                                *d = if x.is_nan() || y.is_nan() {
                                    f32::NAN
                                } else {
                                    x.max(y)
                                }
                            }),
                            BinaryOp::Pow => it.for_each(|((d, &x), &y)| *d = x.powf(y)),
                            BinaryOp::CmpLt => {
                                it.for_each(|((d, &x), &y)| *d = (x < y) as u8 as f32)
                            }
                            BinaryOp::CmpEq => {
                                it.for_each(|((d, &x), &y)| *d = (x == y) as u8 as f32)
                            }
                        }
                    }
                    crate::op::Op::Where => {
                        let (c, x, y) = (arg(0), arg(1), arg(2));
                        // A bit mask instead of a branch or cmov: this form
                        // vectorises (ReLU and its gradient run through here).
                        for (((d, &c), &x), &y) in dst.iter_mut().zip(c).zip(x).zip(y) {
                            let m = ((c != 0.0) as u32).wrapping_neg();
                            *d = f32::from_bits((x.to_bits() & m) | (y.to_bits() & !m));
                        }
                    }
                    other => unreachable!("not an elementwise op: {other:?}"),
                }
            }
            let result = match slots.last() {
                Some(last) => &last[..len],
                None => leaf(program.leaves - 1),
            };
            for (o, &v) in chunk[done..done + len].iter_mut().zip(result) {
                o.write(v);
            }
            done += len;
        }
    });
    if types.last() == Some(&DType::I32) {
        return Value::i32(out.into_iter().map(int_of).collect(), out_shape);
    }
    Value::f32(out, out_shape)
}
