//! Arithmetic, comparisons, selection and pointwise math with NumPy broadcasting.

use crate::op::{BinaryOp, Op, UnaryOp};
use crate::shape::broadcast_shapes;
use crate::{DType, Error, Result, Tensor};

impl Tensor {
    pub(crate) fn unary(&self, op: UnaryOp) -> Tensor {
        let x = self.to_f32();
        Tensor::from_op(Op::Unary(op), vec![x], self.shape().to_vec(), DType::F32)
    }

    /// This tensor as f32 (a no-op for f32 tensors).
    pub(crate) fn to_f32(&self) -> Tensor {
        match self.dtype() {
            DType::F32 => self.clone(),
            DType::I32 => self.cast(DType::F32),
        }
    }

    /// Both operands expanded to their common broadcast shape.
    pub(crate) fn broadcast_pair(
        &self,
        other: &Tensor,
        op: &'static str,
    ) -> Result<(Tensor, Tensor)> {
        let shape = broadcast_shapes(op, self.shape(), other.shape())?;
        Ok((self.expand(&shape)?, other.expand(&shape)?))
    }

    pub(crate) fn binary(
        &self,
        op: BinaryOp,
        other: &Tensor,
        name: &'static str,
    ) -> Result<Tensor> {
        crate::ops::same_device(name, &[self, other])?;
        if self.dtype() != other.dtype() {
            return Err(Error::DType {
                op: name,
                expected: format!("both operands {}", self.dtype()),
                got: format!("{} and {}", self.dtype(), other.dtype()),
                hint: "convert one operand with .cast(...)".into(),
            });
        }
        let (a, b) = self.broadcast_pair(other, name)?;
        let dtype = match op {
            BinaryOp::CmpLt | BinaryOp::CmpEq => DType::F32,
            _ => self.dtype(),
        };
        let shape = a.shape().to_vec();
        Ok(Tensor::from_op(Op::Binary(op), vec![a, b], shape, dtype))
    }

    /// A same-shaped binary op on operands known to match (internal use: no
    /// validation needed, so no `Result`).
    pub(crate) fn binary_same(&self, op: BinaryOp, other: &Tensor) -> Tensor {
        debug_assert_eq!(self.shape(), other.shape());
        Tensor::from_op(
            Op::Binary(op),
            vec![self.clone(), other.clone()],
            self.shape().to_vec(),
            self.dtype(),
        )
    }

    fn scalar_like(&self, v: f32) -> Tensor {
        Tensor::full_on(self.shape(), v, *self.device())
    }

    /// `self + other`, broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Add, other, "add")
    }

    /// `self - other`, broadcasting.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        // Negated after broadcasting, so the negation fuses into the add; a
        // negation of the smaller operand would feed a broadcast view,
        // which fusion does not see through, and cost a pass of its own.
        let (a, b) = self.broadcast_pair(other, "sub")?;
        let neg = match b.dtype() {
            DType::F32 => b.neg(),
            DType::I32 => b.mul(&b.scalar_like(-1.0).cast(DType::I32))?,
        };
        a.binary(BinaryOp::Add, &neg, "sub")
    }

    /// `self * other`, broadcasting.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Mul, other, "mul")
    }

    /// `self / other`, broadcasting.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        crate::ops::ensure_f32("div", self)?;
        crate::ops::ensure_f32("div", other)?;
        self.binary(BinaryOp::Mul, &other.recip(), "div")
    }

    /// Elementwise `self ^ exponent`.
    pub fn pow(&self, exponent: &Tensor) -> Result<Tensor> {
        crate::ops::ensure_f32("pow", self)?;
        self.binary(BinaryOp::Pow, exponent, "pow")
    }

    /// The larger of each pair, broadcasting.
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Max, other, "maximum")
    }

    /// The smaller of each pair, broadcasting.
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        crate::ops::ensure_f32("minimum", self)?;
        Ok(self.neg().maximum(&other.to_f32().neg())?.neg())
    }

    // ---- scalars: cannot fail; i32 tensors are promoted to f32.

    /// `self + v`.
    pub fn add_scalar(&self, v: f32) -> Tensor {
        let x = self.to_f32();
        x.binary_same(BinaryOp::Add, &x.scalar_like(v))
    }

    /// `self - v`.
    pub fn sub_scalar(&self, v: f32) -> Tensor {
        self.add_scalar(-v)
    }

    /// `self * v`.
    pub fn mul_scalar(&self, v: f32) -> Tensor {
        let x = self.to_f32();
        x.binary_same(BinaryOp::Mul, &x.scalar_like(v))
    }

    /// `self / v`.
    pub fn div_scalar(&self, v: f32) -> Tensor {
        self.mul_scalar(1.0 / v)
    }

    /// `self ^ e`.
    pub fn pow_scalar(&self, e: f32) -> Tensor {
        let x = self.to_f32();
        if e == 2.0 {
            return x.binary_same(BinaryOp::Mul, &x);
        }
        x.binary_same(BinaryOp::Pow, &x.scalar_like(e))
    }

    /// `max(self, v)`.
    pub fn maximum_scalar(&self, v: f32) -> Tensor {
        let x = self.to_f32();
        x.binary_same(BinaryOp::Max, &x.scalar_like(v))
    }

    /// `min(self, v)`.
    pub fn minimum_scalar(&self, v: f32) -> Tensor {
        self.neg().maximum_scalar(-v).neg()
    }

    /// `v - self`.
    pub fn rsub_scalar(&self, v: f32) -> Tensor {
        self.neg().add_scalar(v)
    }

    // ---- comparisons: f32 masks of 0.0 / 1.0, no gradient.

    /// 1.0 where `self < other`, else 0.0 (no gradient).
    pub fn lt(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::CmpLt, other, "lt")
    }

    /// 1.0 where `self > other`, else 0.0.
    pub fn gt(&self, other: &Tensor) -> Result<Tensor> {
        other.binary(BinaryOp::CmpLt, self, "gt")
    }

    /// 1.0 where `self <= other`, else 0.0.
    pub fn le(&self, other: &Tensor) -> Result<Tensor> {
        Ok(self.gt(other)?.rsub_scalar(1.0))
    }

    /// 1.0 where `self >= other`, else 0.0.
    pub fn ge(&self, other: &Tensor) -> Result<Tensor> {
        Ok(self.lt(other)?.rsub_scalar(1.0))
    }

    /// 1.0 where `self == other`, else 0.0.
    pub fn eq(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::CmpEq, other, "eq")
    }

    /// 1.0 where `self != other`, else 0.0.
    pub fn ne(&self, other: &Tensor) -> Result<Tensor> {
        Ok(self.eq(other)?.rsub_scalar(1.0))
    }

    /// 1.0 where `self < v`, else 0.0.
    pub fn lt_scalar(&self, v: f32) -> Tensor {
        let x = self.to_f32();
        Tensor::from_op(
            Op::Binary(BinaryOp::CmpLt),
            vec![x.clone(), x.scalar_like(v)],
            x.shape().to_vec(),
            DType::F32,
        )
    }

    /// 1.0 where `self > v`, else 0.0.
    pub fn gt_scalar(&self, v: f32) -> Tensor {
        let x = self.to_f32();
        Tensor::from_op(
            Op::Binary(BinaryOp::CmpLt),
            vec![x.scalar_like(v), x.clone()],
            x.shape().to_vec(),
            DType::F32,
        )
    }

    /// `cond ? a : b` elementwise (cond nonzero means true), all three broadcast.
    pub fn where_(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        crate::ops::same_device("where", &[cond, a, b])?;
        if a.dtype() != b.dtype() {
            return Err(Error::DType {
                op: "where",
                expected: format!("both branches {}", a.dtype()),
                got: format!("{} and {}", a.dtype(), b.dtype()),
                hint: "convert one branch with .cast(...)".into(),
            });
        }
        let shape = broadcast_shapes("where", cond.shape(), a.shape())?;
        let shape = broadcast_shapes("where", &shape, b.shape())?;
        let (c, a, b) = (
            cond.to_f32().expand(&shape)?,
            a.expand(&shape)?,
            b.expand(&shape)?,
        );
        let dtype = a.dtype();
        Ok(Tensor::from_op(Op::Where, vec![c, a, b], shape, dtype))
    }

    /// Convert the element type (f32 -> i32 truncates toward zero).
    pub fn cast(&self, dtype: DType) -> Tensor {
        if self.dtype() == dtype {
            return self.clone();
        }
        Tensor::from_op(
            Op::Cast(dtype),
            vec![self.clone()],
            self.shape().to_vec(),
            dtype,
        )
    }

    // ---- pointwise math (i32 inputs are promoted to f32)

    /// `-self`.
    pub fn neg(&self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
    /// `e^self`.
    pub fn exp(&self) -> Tensor {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Tensor {
        self.unary(UnaryOp::Log)
    }
    /// Square root.
    pub fn sqrt(&self) -> Tensor {
        self.unary(UnaryOp::Sqrt)
    }
    /// `1 / self`.
    pub fn recip(&self) -> Tensor {
        self.unary(UnaryOp::Recip)
    }
    /// Sine.
    pub fn sin(&self) -> Tensor {
        self.unary(UnaryOp::Sin)
    }
    /// Cosine.
    pub fn cos(&self) -> Tensor {
        self.add_scalar(std::f32::consts::FRAC_PI_2).sin()
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        self.unary(UnaryOp::Tanh)
    }
    /// The error function.
    pub fn erf(&self) -> Tensor {
        self.unary(UnaryOp::Erf)
    }
    /// `self * self`.
    pub fn square(&self) -> Tensor {
        self.pow_scalar(2.0)
    }

    /// -1, 0 or 1.
    pub fn sign(&self) -> Tensor {
        let x = self.to_f32();
        x.gt_scalar(0.0)
            .binary_same(BinaryOp::Add, &x.lt_scalar(0.0).neg())
    }

    /// |x|, with gradient sign(x) (0 at 0, as in PyTorch).
    pub fn abs(&self) -> Tensor {
        let x = self.to_f32();
        x.binary_same(BinaryOp::Mul, &x.sign())
    }

    /// Limit to `[min, max]`; the gradient passes where the value is inside.
    pub fn clamp(&self, min: f32, max: f32) -> Result<Tensor> {
        if min > max {
            return Err(Error::param(
                "clamp",
                format!("min {min} is greater than max {max}; swap them"),
            ));
        }
        let x = self.to_f32();
        let lo = x.scalar_like(min);
        let hi = x.scalar_like(max);
        let upper = Tensor::where_(&x.gt_scalar(max), &hi, &x)?;
        Tensor::where_(&x.lt_scalar(min), &lo, &upper)
    }
}

macro_rules! operator {
    ($trait:ident, $method:ident, $call:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Tensor::$call(self, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Tensor::$call(&self, &rhs)
            }
        }
        impl std::ops::$trait<f32> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: f32) -> Tensor {
                // A scalar broadcasts to any shape and both sides are f32: cannot fail.
                Tensor::$call(&self.to_f32(), &Tensor::scalar(rhs))
                    .unwrap_or_else(|_| unreachable!("a scalar broadcasts to any shape"))
            }
        }
    };
}

operator!(Add, add, add);
operator!(Sub, sub, sub);
operator!(Mul, mul, mul);
operator!(Div, div, div);

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}
