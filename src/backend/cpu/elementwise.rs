//! Elementwise kernels: unary, binary, where, cast, pad, random.

use std::borrow::Cow;

use rayon::prelude::*;

use super::{f32_data, i32_data, PAR_MIN};
use crate::backend::{Storage, Value};
use crate::op::{BinaryOp, UnaryOp};
use crate::shape::Layout;
use crate::{DType, Result};

/// Map `f` over `n` outputs, in parallel when large.
fn fill<T: Send + Copy + Default>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::default(); n];
    if n >= PAR_MIN {
        out.par_chunks_mut(8192).enumerate().for_each(|(c, chunk)| {
            for (j, o) in chunk.iter_mut().enumerate() {
                *o = f(c * 8192 + j);
            }
        });
    } else {
        for (i, o) in out.iter_mut().enumerate() {
            *o = f(i);
        }
    }
    out
}

/// An operand read either as one broadcast scalar or as dense data.
enum Operand<'a, T: Clone> {
    Scalar(T),
    Dense(Cow<'a, [T]>),
}

impl<T: Copy> Operand<'_, T> {
    #[inline(always)]
    fn at(&self, i: usize) -> T {
        match self {
            Operand::Scalar(v) => *v,
            Operand::Dense(d) => d[i],
        }
    }
}

fn is_broadcast_scalar(l: &Layout) -> bool {
    l.strides.iter().all(|&s| s == 0)
}

fn operand_f32(v: &Value) -> Operand<'_, f32> {
    if is_broadcast_scalar(&v.layout) && v.layout.numel() > 0 {
        match v.storage.as_ref() {
            Storage::F32(d) => Operand::Scalar(d[v.layout.offset]),
            Storage::I32(d) => Operand::Scalar(d[v.layout.offset] as f32),
        }
    } else {
        Operand::Dense(f32_data(v))
    }
}

fn operand_i32(v: &Value) -> Operand<'_, i32> {
    if is_broadcast_scalar(&v.layout) && v.layout.numel() > 0 {
        match v.storage.as_ref() {
            Storage::I32(d) => Operand::Scalar(d[v.layout.offset]),
            Storage::F32(d) => Operand::Scalar(d[v.layout.offset] as i32),
        }
    } else {
        Operand::Dense(i32_data(v))
    }
}

/// erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), ample for f32.
pub(crate) fn erf(x: f32) -> f32 {
    let x = x as f64;
    let z = x.abs();
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

pub fn unary(op: UnaryOp, x: &Value) -> Value {
    let a = operand_f32(x);
    let n = x.layout.numel();
    let f: fn(f32) -> f32 = match op {
        UnaryOp::Neg => |v| -v,
        UnaryOp::Exp => f32::exp,
        UnaryOp::Log => f32::ln,
        UnaryOp::Sqrt => f32::sqrt,
        UnaryOp::Recip => f32::recip,
        UnaryOp::Sin => f32::sin,
        UnaryOp::Tanh => f32::tanh,
        UnaryOp::Erf => erf,
    };
    Value::f32(fill(n, |i| f(a.at(i))), &x.layout.shape)
}

pub fn binary(op: BinaryOp, a: &Value, b: &Value, out_dtype: DType) -> Result<Value> {
    let shape = &a.layout.shape;
    let n = a.layout.numel();
    let ints = a.storage.dtype() == DType::I32 && b.storage.dtype() == DType::I32;
    if ints {
        let (x, y) = (operand_i32(a), operand_i32(b));
        let cmp = |c: bool| if c { 1.0f32 } else { 0.0 };
        return Ok(match op {
            BinaryOp::CmpLt => Value::f32(fill(n, |i| cmp(x.at(i) < y.at(i))), shape),
            BinaryOp::CmpEq => Value::f32(fill(n, |i| cmp(x.at(i) == y.at(i))), shape),
            BinaryOp::Add => Value::i32(fill(n, |i| x.at(i).wrapping_add(y.at(i))), shape),
            BinaryOp::Mul => Value::i32(fill(n, |i| x.at(i).wrapping_mul(y.at(i))), shape),
            BinaryOp::Max => Value::i32(fill(n, |i| x.at(i).max(y.at(i))), shape),
            BinaryOp::Pow => Value::i32(
                fill(n, |i| (x.at(i) as f64).powf(y.at(i) as f64) as i32),
                shape,
            ),
        });
    }
    debug_assert_eq!(out_dtype, DType::F32);
    let (x, y) = (operand_f32(a), operand_f32(b));
    let f: fn(f32, f32) -> f32 = match op {
        BinaryOp::Add => |p, q| p + q,
        BinaryOp::Mul => |p, q| p * q,
        // NaN-propagating, like PyTorch's maximum.
        BinaryOp::Max => |p, q| {
            if p.is_nan() || q.is_nan() {
                f32::NAN
            } else {
                p.max(q)
            }
        },
        BinaryOp::Pow => f32::powf,
        BinaryOp::CmpLt => |p, q| (p < q) as u8 as f32,
        BinaryOp::CmpEq => |p, q| (p == q) as u8 as f32,
    };
    // The hot case (dense + dense, dense + scalar) gets a loop the compiler vectorises.
    let data = match (&x, &y) {
        (Operand::Dense(p), Operand::Dense(q)) => fill(n, |i| f(p[i], q[i])),
        (Operand::Dense(p), Operand::Scalar(s)) => fill(n, |i| f(p[i], *s)),
        _ => fill(n, |i| f(x.at(i), y.at(i))),
    };
    Ok(Value::f32(data, shape))
}

pub fn where_(c: &Value, a: &Value, b: &Value) -> Value {
    let cond = operand_f32(c);
    let n = c.layout.numel();
    let shape = &c.layout.shape;
    if a.storage.dtype() == DType::I32 {
        let (x, y) = (operand_i32(a), operand_i32(b));
        return Value::i32(
            fill(n, |i| if cond.at(i) != 0.0 { x.at(i) } else { y.at(i) }),
            shape,
        );
    }
    let (x, y) = (operand_f32(a), operand_f32(b));
    Value::f32(
        fill(n, |i| if cond.at(i) != 0.0 { x.at(i) } else { y.at(i) }),
        shape,
    )
}

pub fn cast(x: &Value, to: DType) -> Value {
    match to {
        DType::F32 => Value::f32(f32_data(x).into_owned(), &x.layout.shape),
        DType::I32 => Value::i32(i32_data(x).into_owned(), &x.layout.shape),
    }
}

pub fn pad(x: &Value, pads: &[(usize, usize)], out_shape: &[usize]) -> Value {
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
        Storage::I32(_) => {
            let src = i32_data(x);
            let mut out = vec![0i32; n];
            dest.for_each_offset(|i, o| out[o] = src[i]);
            Value::i32(out, out_shape)
        }
    }
}

/// A 32-bit integer hash with good avalanche (Wellons' lowbias32); chosen
/// because WGSL has only 32-bit integers, so both backends agree bit for bit.
#[inline(always)]
pub(crate) fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Uniform [0, 1) with 24 random bits: element i = hash(hash(i + k1) ^ k2).
pub fn rand(seed: u64, n: usize) -> Vec<f32> {
    let k1 = hash32(seed as u32);
    let k2 = hash32((seed >> 32) as u32 ^ 0x9e37_79b9);
    fill(n, |i| {
        let h = hash32(hash32((i as u32).wrapping_add(k1)) ^ k2);
        (h >> 8) as f32 * (1.0 / 16_777_216.0)
    })
}
