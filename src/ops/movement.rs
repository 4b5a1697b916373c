//! Views and data movement: reshape, permute, expand, slice, pad, cat, stack.

use crate::op::Op;
use crate::shape::{normalize_axis, numel};
use crate::{Error, Result, Tensor};

impl Tensor {
    fn view(&self, op: Op, shape: Vec<usize>) -> Tensor {
        let dtype = self.dtype();
        Tensor::from_op(op, vec![self.clone()], shape, dtype)
    }

    /// Same elements, new shape (sizes must multiply to the same count).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(Error::shape(
                "reshape",
                &[self.shape(), shape],
                format!(
                    "{} elements cannot be viewed as {} elements",
                    self.numel(),
                    numel(shape)
                ),
            ));
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        Ok(self.view(Op::Reshape, shape.to_vec()))
    }

    /// Reorder axes: output axis i is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let mut seen = vec![false; self.rank()];
        let valid = perm.len() == self.rank()
            && perm
                .iter()
                .all(|&p| p < self.rank() && !std::mem::replace(&mut seen[p], true));
        if !valid {
            return Err(Error::shape(
                "permute",
                &[self.shape(), perm],
                format!(
                    "the permutation must list each of the axes 0..{} exactly once",
                    self.rank()
                ),
            ));
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(self.clone());
        }
        let shape = perm.iter().map(|&p| self.shape()[p]).collect();
        Ok(self.view(Op::Permute(perm.to_vec()), shape))
    }

    /// Swap two axes (negative counts from the end).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let a = normalize_axis("transpose", a, self.shape())?;
        let b = normalize_axis("transpose", b, self.shape())?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Swap the last two axes.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::shape(
                "t",
                &[self.shape()],
                "t() needs at least 2 axes",
            ));
        }
        self.transpose(-2, -1)
    }

    /// Broadcast to `shape` (NumPy rules: new leading axes, size-1 axes stretch).
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let bad = || {
            Error::shape(
                "expand",
                &[self.shape(), shape],
                "only size-1 axes can be stretched, and new axes go in front",
            )
        };
        if shape.len() < self.rank() {
            return Err(bad());
        }
        let lead = shape.len() - self.rank();
        let mut padded = vec![1; lead];
        padded.extend_from_slice(self.shape());
        if padded.iter().zip(shape).any(|(&d, &n)| d != n && d != 1) {
            return Err(bad());
        }
        let x = self.reshape(&padded)?;
        if padded == shape {
            return Ok(x);
        }
        Ok(x.view(Op::Expand, shape.to_vec()))
    }

    /// Keep `ranges[i] = (start, end)` of each axis.
    pub fn shrink(&self, ranges: &[(usize, usize)]) -> Result<Tensor> {
        if ranges.len() != self.rank()
            || ranges
                .iter()
                .zip(self.shape())
                .any(|(&(a, b), &d)| a > b || b > d)
        {
            return Err(Error::shape(
                "shrink",
                &[self.shape()],
                format!("ranges {ranges:?} must give one start <= end <= size per axis"),
            ));
        }
        if ranges
            .iter()
            .zip(self.shape())
            .all(|(&(a, b), &d)| a == 0 && b == d)
        {
            return Ok(self.clone());
        }
        Ok(self.view(
            Op::Shrink(ranges.to_vec()),
            ranges.iter().map(|&(a, b)| b - a).collect(),
        ))
    }

    /// Elements `start..end` along `axis`.
    pub fn slice(&self, axis: isize, start: usize, end: usize) -> Result<Tensor> {
        let ax = normalize_axis("slice", axis, self.shape())?;
        if start > end || end > self.shape()[ax] {
            return Err(Error::shape(
                "slice",
                &[self.shape()],
                format!(
                    "range {start}..{end} does not fit axis {ax} of size {}",
                    self.shape()[ax]
                ),
            ));
        }
        let mut ranges: Vec<(usize, usize)> = self.shape().iter().map(|&d| (0, d)).collect();
        ranges[ax] = (start, end);
        self.shrink(&ranges)
    }

    /// Zero padding `(before, after)` for every axis.
    pub fn pad(&self, pads: &[(usize, usize)]) -> Result<Tensor> {
        if pads.len() != self.rank() {
            return Err(Error::shape(
                "pad",
                &[self.shape()],
                format!(
                    "give one (before, after) pair per axis: {} pairs, not {}",
                    self.rank(),
                    pads.len()
                ),
            ));
        }
        if pads.iter().all(|&(a, b)| a == 0 && b == 0) {
            return Ok(self.clone());
        }
        let shape = self
            .shape()
            .iter()
            .zip(pads)
            .map(|(&d, &(a, b))| d.checked_add(a)?.checked_add(b))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                Error::shape(
                    "pad",
                    &[self.shape()],
                    format!("padding {pads:?} makes an axis longer than any memory holds"),
                )
            })?;
        Ok(self.view(Op::Pad(pads.to_vec()), shape))
    }

    /// A dense copy in row-major order.
    pub fn contiguous(&self) -> Tensor {
        self.view(Op::Contiguous, self.shape().to_vec())
    }

    /// Join tensors along an existing axis.
    pub fn cat(tensors: &[Tensor], axis: isize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::param("cat", "needs at least one tensor"))?;
        crate::ops::same_device("cat", &tensors.iter().collect::<Vec<_>>())?;
        let ax = normalize_axis("cat", axis, first.shape())?;
        for t in tensors {
            let fits = t.rank() == first.rank()
                && t.dtype() == first.dtype()
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(i, (a, b))| i == ax || a == b);
            if !fits {
                return Err(Error::shape(
                    "cat",
                    &[first.shape(), t.shape()],
                    format!("all tensors need the same dtype and sizes except along axis {ax}"),
                ));
            }
        }
        let total = tensors
            .iter()
            .try_fold(0usize, |acc, t| acc.checked_add(t.shape()[ax]))
            .ok_or_else(|| {
                Error::param("cat", "the joined axis is longer than any memory holds")
            })?;
        // Each part padded to the full length, then summed: every piece is a primitive.
        let mut start = 0;
        let mut acc: Option<Tensor> = None;
        for t in tensors {
            let mut pads = vec![(0, 0); t.rank()];
            let len = t.shape()[ax];
            pads[ax] = (start, total - start - len);
            start += len;
            let p = t.pad(&pads)?;
            acc = Some(match acc {
                None => p,
                Some(a) => a.add(&p)?,
            });
        }
        Ok(acc.unwrap_or_else(|| first.clone()))
    }

    /// Join tensors of one shape along a new axis.
    pub fn stack(tensors: &[Tensor], axis: isize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::param("stack", "needs at least one tensor"))?;
        let rank = first.rank() as isize + 1;
        let ax = if axis < 0 { axis + rank } else { axis };
        let parts = tensors
            .iter()
            .map(|t| {
                if t.shape() != first.shape() {
                    return Err(Error::shape(
                        "stack",
                        &[first.shape(), t.shape()],
                        "all tensors need the same shape",
                    ));
                }
                t.unsqueeze(ax)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, ax)
    }

    /// Insert a size-1 axis at `axis` (0..=rank; negative counts from the end).
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor> {
        let rank = self.rank() as isize + 1;
        let a = if axis < 0 { axis + rank } else { axis };
        if a < 0 || a >= rank {
            return Err(Error::Axis {
                op: "unsqueeze",
                axis,
                rank: rank as usize,
                shape: self.shape().to_vec(),
            });
        }
        let mut shape = self.shape().to_vec();
        shape.insert(a as usize, 1);
        self.reshape(&shape)
    }

    /// Remove a size-1 axis.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let a = normalize_axis("squeeze", axis, self.shape())?;
        if self.shape()[a] != 1 {
            return Err(Error::shape(
                "squeeze",
                &[self.shape()],
                format!(
                    "axis {a} has size {}, only size-1 axes can be squeezed",
                    self.shape()[a]
                ),
            ));
        }
        let mut shape = self.shape().to_vec();
        shape.remove(a);
        self.reshape(&shape)
    }

    /// Merge axes `start..=end` into one.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape(&[1]);
        }
        let s = normalize_axis("flatten", start, self.shape())?;
        let e = normalize_axis("flatten", end, self.shape())?;
        if s > e {
            return Err(Error::param(
                "flatten",
                format!("start axis {s} comes after end axis {e}"),
            ));
        }
        let mut shape = self.shape()[..s].to_vec();
        shape.push(self.shape()[s..=e].iter().product());
        shape.extend_from_slice(&self.shape()[e + 1..]);
        self.reshape(&shape)
    }
}
