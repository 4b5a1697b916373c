//! Indexing: gather, scatter-add, embedding lookup, one-hot.

use crate::op::Op;
use crate::ops::{ensure_f32, ensure_i32};
use crate::shape::normalize_axis;
use crate::{DType, Error, Result, Tensor};

/// Index has the data's rank and no larger size on any axis but `axis`.
fn index_fits(index: &Tensor, data: &Tensor, axis: usize) -> bool {
    index.rank() == data.rank()
        && index
            .shape()
            .iter()
            .zip(data.shape())
            .enumerate()
            .all(|(d, (&i, &s))| d == axis || i <= s)
}

impl Tensor {
    /// `out[i][j] = self[index[i][j]][j]` for axis 0, and so on (PyTorch's
    /// `gather`): index has the same rank, and no larger sizes off the axis.
    pub fn gather(&self, axis: isize, index: &Tensor) -> Result<Tensor> {
        ensure_f32("gather", self)?;
        ensure_i32("gather", index)?;
        crate::ops::same_device("gather", &[self, index])?;
        let ax = normalize_axis("gather", axis, self.shape())?;
        if !index_fits(index, self, ax) {
            return Err(Error::shape(
                "gather",
                &[self.shape(), index.shape()],
                format!("index needs the source's rank and sizes no larger than the source's except along axis {ax}"),
            ));
        }
        Ok(Tensor::from_op(
            Op::Gather { axis: ax },
            vec![self.clone(), index.clone()],
            index.shape().to_vec(),
            DType::F32,
        ))
    }

    pub(crate) fn scatter_add_raw(
        index: &Tensor,
        src: &Tensor,
        axis: usize,
        out_shape: &[usize],
    ) -> Tensor {
        Tensor::from_op(
            Op::ScatterAdd { axis },
            vec![index.clone(), src.clone()],
            out_shape.to_vec(),
            DType::F32,
        )
    }

    /// `self` plus `src` added at `index` along `axis` (the adjoint of gather).
    pub fn scatter_add(&self, axis: isize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        ensure_f32("scatter_add", self)?;
        ensure_f32("scatter_add", src)?;
        ensure_i32("scatter_add", index)?;
        crate::ops::same_device("scatter_add", &[self, index, src])?;
        let ax = normalize_axis("scatter_add", axis, self.shape())?;
        let fits = index.shape() == src.shape() && index_fits(index, self, ax);
        if !fits {
            return Err(Error::shape(
                "scatter_add",
                &[self.shape(), index.shape(), src.shape()],
                format!("index and src need one shape, with self's rank and sizes no larger than self's except along axis {ax}"),
            ));
        }
        self.add(&Tensor::scatter_add_raw(index, src, ax, self.shape()))
    }

    /// Rows of `weight` `[vocab, dim]` picked by integer `ids` of any shape: `[..ids, dim]`.
    pub fn embedding(weight: &Tensor, ids: &Tensor) -> Result<Tensor> {
        ensure_i32("embedding", ids)?;
        if weight.rank() != 2 {
            return Err(Error::shape(
                "embedding",
                &[weight.shape()],
                "weight must be [vocab, dim]",
            ));
        }
        crate::ops::same_device("embedding", &[weight, ids])?;
        let dim = weight.shape()[1];
        let n = ids.numel();
        let idx = ids.reshape(&[n, 1])?.expand(&[n, dim])?;
        let rows = weight.gather(0, &idx)?;
        let mut shape = ids.shape().to_vec();
        shape.push(dim);
        rows.reshape(&shape)
    }

    /// f32 one-hot rows `[..ids, classes]` for integer ids.
    pub fn one_hot(ids: &Tensor, classes: usize) -> Result<Tensor> {
        ensure_i32("one_hot", ids)?;
        let classes_i32 = i32::try_from(classes)
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| {
                Error::param(
                    "one_hot",
                    format!("{classes} classes: the class count must lie in 1..=2^31-1"),
                )
            })?;
        let c = crate::with_device(*ids.device(), || Tensor::arange_i32(0, classes_i32, 1))?;
        ids.unsqueeze(-1)?.eq(&c)
    }
}
