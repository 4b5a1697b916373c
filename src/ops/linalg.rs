//! Matrix products.

use crate::op::Op;
use crate::shape::broadcast_shapes;
use crate::{DType, Error, Result, Tensor};

impl Tensor {
    /// Batched matrix product with NumPy semantics: `[..., m, k] @ [..., k, n]`,
    /// batch axes broadcast; a 1-D operand is treated as a row (left) or column
    /// (right) vector and that axis is dropped from the result.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        crate::ops::ensure_f32("matmul", self)?;
        crate::ops::ensure_f32("matmul", other)?;
        crate::ops::same_device("matmul", &[self, other])?;
        if self.rank() == 0 || other.rank() == 0 {
            return Err(Error::shape(
                "matmul",
                &[self.shape(), other.shape()],
                "operands need at least 1 axis; use mul for scalars",
            ));
        }
        let a = if self.rank() == 1 {
            self.unsqueeze(0)?
        } else {
            self.clone()
        };
        let b = if other.rank() == 1 {
            other.unsqueeze(1)?
        } else {
            other.clone()
        };
        let (ra, rb) = (a.rank(), b.rank());
        let (m, k) = (a.shape()[ra - 2], a.shape()[ra - 1]);
        let (k2, n) = (b.shape()[rb - 2], b.shape()[rb - 1]);
        if k != k2 {
            return Err(Error::shape(
                "matmul",
                &[self.shape(), other.shape()],
                format!("inner sizes differ ({k} vs {k2}); the left operand's last axis must equal the right operand's second-to-last"),
            ));
        }
        let batch = broadcast_shapes("matmul", &a.shape()[..ra - 2], &b.shape()[..rb - 2])?;
        let mut sa = batch.clone();
        sa.extend([m, k]);
        let mut sb = batch.clone();
        sb.extend([k, n]);
        let mut out = batch;
        out.extend([m, n]);
        let r = Tensor::from_op(
            Op::MatMul,
            vec![a.expand(&sa)?, b.expand(&sb)?],
            out.clone(),
            DType::F32,
        );
        let r = if self.rank() == 1 { r.squeeze(-2)? } else { r };
        if other.rank() == 1 {
            r.squeeze(-1)
        } else {
            Ok(r)
        }
    }

    /// `x @ w^T + b` with `w` stored `[out, in]` (PyTorch's layout).
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let y = if self.rank() > 2 && weight.rank() == 2 {
            // `[..., in]` as one `[rows, in]` GEMM: a batched matmul against
            // a broadcast weight would run many small GEMMs and, in
            // backward, make one weight gradient per batch entry to sum.
            let shape = self.shape().to_vec();
            let inputs = shape[shape.len() - 1];
            let rows = shape[..shape.len() - 1].iter().product::<usize>();
            let flat = self.reshape(&[rows, inputs])?.matmul(&weight.t()?)?;
            let mut out_shape = shape[..shape.len() - 1].to_vec();
            out_shape.push(weight.shape()[0]);
            flat.reshape(&out_shape)?
        } else {
            self.matmul(&weight.t()?)?
        };
        match bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }
}
