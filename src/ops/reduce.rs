//! Reductions: sum, mean, max, min, argmax, argmin, variance.

use crate::op::{Op, ReduceOp};
use crate::shape::normalize_axis;
use crate::{DType, Error, Result, Tensor};

impl Tensor {
    fn reduce_axes(op: &'static str, t: &Tensor, axes: &[isize]) -> Result<Vec<usize>> {
        let mut out = axes
            .iter()
            .map(|&a| normalize_axis(op, a, t.shape()))
            .collect::<Result<Vec<_>>>()?;
        out.sort_unstable();
        if out.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::param(op, format!("axis listed twice in {axes:?}")));
        }
        Ok(out)
    }

    pub(crate) fn reduce(&self, op: ReduceOp, axes: &[usize], keepdim: bool) -> Tensor {
        if let (ReduceOp::Sum, Op::Unary(crate::op::UnaryOp::Neg)) = (op, self.op()) {
            if !self.is_realized() && !axes.is_empty() {
                // sum(-x) = -sum(x), exactly: the negation then runs on the
                // smaller result, fused into its users, instead of needing
                // a pass of its own before the reduction (a gradient
                // flowing back through a subtraction's broadcast does this).
                return self.inputs()[0].reduce(op, axes, keepdim).neg();
            }
        }
        let kept: Vec<usize> = self
            .shape()
            .iter()
            .enumerate()
            .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
            .collect();
        let r = if axes.is_empty() {
            self.clone()
        } else {
            Tensor::from_op(
                Op::Reduce {
                    op,
                    axes: axes.to_vec(),
                },
                vec![self.clone()],
                kept,
                self.dtype(),
            )
        };
        if keepdim {
            return r;
        }
        let squeezed: Vec<usize> = self
            .shape()
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect();
        r.reshape(&squeezed).unwrap_or(r)
    }

    /// Sum over `axes` (negative counts from the end).
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = Tensor::reduce_axes("sum", self, axes)?;
        Ok(self.reduce(ReduceOp::Sum, &axes, keepdim))
    }

    /// Sum of every element, as a scalar (shape `[]`).
    pub fn sum_all(&self) -> Tensor {
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.reduce(ReduceOp::Sum, &axes, false)
    }

    /// Mean over `axes` (negative counts from the end), keeping them as size 1 if `keepdim`.
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let ax = Tensor::reduce_axes("mean", self, axes)?;
        let count: usize = ax.iter().map(|&a| self.shape()[a]).product();
        Ok(self
            .to_f32()
            .reduce(ReduceOp::Sum, &ax, keepdim)
            .div_scalar(count as f32))
    }

    /// Mean of all elements, as a scalar tensor.
    pub fn mean_all(&self) -> Tensor {
        self.to_f32().sum_all().div_scalar(self.numel() as f32)
    }

    /// Maximum over `axes`; the gradient is shared evenly among tied maxima.
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = Tensor::reduce_axes("max", self, axes)?;
        Ok(self.reduce(ReduceOp::Max, &axes, keepdim))
    }

    /// Minimum over `axes`, keeping them as size 1 if `keepdim`.
    pub fn min(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        Ok(self.to_f32().neg().max(axes, keepdim)?.neg())
    }

    /// Maximum of all elements, as a scalar tensor.
    pub fn max_all(&self) -> Tensor {
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.reduce(ReduceOp::Max, &axes, false)
    }

    /// Index (i32) of the first maximum along `axis`.
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let ax = normalize_axis("argmax", axis, self.shape())?;
        let n = self.shape()[ax];
        if n == 0 {
            return Err(Error::shape(
                "argmax",
                &[self.shape()],
                format!("axis {ax} is empty: no maximum exists"),
            ));
        }
        let x = self.to_f32().detach();
        let is_max = x.eq(&x.reduce(ReduceOp::Max, &[ax], true))?;
        // Score n - i at maxima, 0 elsewhere: the largest score is the first maximum.
        let mut idx_shape = vec![1; self.rank()];
        idx_shape[ax] = n;
        let rev = crate::with_device(*self.device(), || Tensor::arange(n as f32, 0.0, -1.0))?
            .reshape(&idx_shape)?;
        let best = is_max.mul(&rev)?.reduce(ReduceOp::Max, &[ax], keepdim);
        Ok(best.rsub_scalar(n as f32).cast(DType::I32))
    }

    /// Index of the minimum along `axis` (i32).
    pub fn argmin(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.to_f32().neg().argmax(axis, keepdim)
    }

    /// Biased variance (divides by the count), as batch norm uses it.
    pub fn var(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let mu = self.mean(axes, true)?;
        self.sub(&mu)?.square().mean(axes, keepdim)
    }
}
