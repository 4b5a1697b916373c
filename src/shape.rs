//! Shapes, strided layouts and NumPy broadcasting.

use crate::{Error, Result};

/// Number of elements of a shape (saturating: a shape too large for any
/// memory is caught by [`checked_numel`] before anything is allocated).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
}

/// Most elements of one tensor: its bytes (4 per element) and every offset
/// into it then fit in a signed 64-bit integer with room to spare.
pub const MAX_ELEMENTS: usize = 1 << 56;

/// The number of elements of `shape`, or an error naming the op and the
/// shape when it overflows or exceeds [`MAX_ELEMENTS`].
pub fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS);
    n.ok_or_else(|| {
        Error::shape(
            op,
            &[shape],
            "the tensor has more elements than any memory holds; use smaller sizes",
        )
    })
}

/// Row-major strides of a contiguous tensor.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc *= d;
    }
    strides
}

/// Resolve a possibly negative axis against a rank.
pub fn normalize_axis(op: &'static str, axis: isize, shape: &[usize]) -> Result<usize> {
    let rank = shape.len() as isize;
    let a = if axis < 0 { axis + rank } else { axis };
    if a < 0 || a >= rank {
        return Err(Error::Axis {
            op,
            axis,
            rank: shape.len(),
            shape: shape.to_vec(),
        });
    }
    Ok(a as usize)
}

/// The NumPy broadcast of two shapes: align on the right, 1 stretches.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::shape(
                    op,
                    &[a, b],
                    format!(
                        "dimension {i} is {da} vs {db}; broadcasting needs equal sizes or 1 (reshape or expand one operand)"
                    ),
                ))
            }
        };
    }
    Ok(out)
}

/// Where a tensor's elements live in its buffer: element `idx` is at
/// `offset + sum(idx[i] * strides[i])`. Views (permute, expand, slice) only
/// change the layout, never the data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub offset: usize,
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// True when the elements are the dense row-major range `offset..offset+numel`.
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != acc {
                return false;
            }
            acc *= d;
        }
        true
    }

    pub fn permute(&self, perm: &[usize]) -> Layout {
        Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        }
    }

    /// Stretch size-1 dimensions to `shape` (same rank) with stride 0.
    pub fn expand(&self, shape: &[usize]) -> Layout {
        Layout {
            shape: shape.to_vec(),
            strides: self
                .shape
                .iter()
                .zip(&self.strides)
                .zip(shape)
                .map(|((&d, &s), &n)| if d == n { s } else { 0 })
                .collect(),
            offset: self.offset,
        }
    }

    pub fn shrink(&self, ranges: &[(usize, usize)]) -> Layout {
        Layout {
            shape: ranges.iter().map(|&(a, b)| b - a).collect(),
            strides: self.strides.clone(),
            offset: self.offset
                + ranges
                    .iter()
                    .zip(&self.strides)
                    .map(|(&(a, _), &s)| a * s)
                    .sum::<usize>(),
        }
    }

    /// A reshape that keeps the data in place, when the strides allow it
    /// (contiguous layouts always do).
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        if self.is_contiguous() {
            return Some(Layout {
                shape: shape.to_vec(),
                strides: contiguous_strides(shape),
                offset: self.offset,
            });
        }
        None
    }

    /// Buffer offset of every element in row-major order, visited with `f(i, off)`.
    pub fn for_each_offset(&self, mut f: impl FnMut(usize, usize)) {
        let n = self.numel();
        if n == 0 {
            return;
        }
        let rank = self.shape.len();
        if rank == 0 {
            f(0, self.offset);
            return;
        }
        let inner = self.shape[rank - 1];
        let inner_stride = self.strides[rank - 1];
        let mut idx = vec![0usize; rank];
        let mut base = self.offset;
        let mut i = 0;
        loop {
            for j in 0..inner {
                f(i + j, base + j * inner_stride);
            }
            i += inner;
            // Advance the outer index like an odometer.
            let mut d = rank - 1;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                idx[d] += 1;
                base += self.strides[d];
                if idx[d] < self.shape[d] {
                    break;
                }
                base -= self.strides[d] * self.shape[d];
                idx[d] = 0;
            }
        }
    }
}

/// Merge adjacent axes wherever every operand's layout allows it (axis d
/// folds into d+1 when `stride[d] == stride[d+1] * shape[d+1]`, broadcast
/// zeros included), so rows get as long as possible: a per-channel bias
/// over `[n, c, h, w]` becomes runs of `h * w` instead of `w`.
pub(crate) fn collapse(shape: &[usize], layouts: &[&Layout]) -> (Vec<usize>, Vec<Layout>) {
    let mut out_shape: Vec<usize> = Vec::new();
    let mut strides: Vec<Vec<usize>> = vec![Vec::new(); layouts.len()];
    for (d, &size) in shape.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let mergeable = !out_shape.is_empty()
            && layouts
                .iter()
                .enumerate()
                .all(|(k, l)| strides[k].last() == Some(&(l.strides[d] * size)));
        if mergeable {
            *out_shape.last_mut().expect("non-empty") *= size;
            for (k, l) in layouts.iter().enumerate() {
                *strides[k].last_mut().expect("non-empty") = l.strides[d];
            }
        } else {
            out_shape.push(size);
            for (k, l) in layouts.iter().enumerate() {
                strides[k].push(l.strides[d]);
            }
        }
    }
    let collapsed = layouts
        .iter()
        .zip(strides)
        .map(|(l, st)| Layout {
            shape: out_shape.clone(),
            strides: st,
            offset: l.offset,
        })
        .collect();
    (out_shape, collapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shapes("t", &[3, 1], &[4]).unwrap(), vec![3, 4]);
        assert_eq!(broadcast_shapes("t", &[], &[2, 2]).unwrap(), vec![2, 2]);
        assert_eq!(broadcast_shapes("t", &[0, 1], &[1, 5]).unwrap(), vec![0, 5]);
        assert!(broadcast_shapes("t", &[3], &[4]).is_err());
    }

    #[test]
    fn strided_offsets() {
        let l = Layout::contiguous(&[2, 3]).permute(&[1, 0]);
        let mut offs = vec![];
        l.for_each_offset(|_, o| offs.push(o));
        assert_eq!(offs, vec![0, 3, 1, 4, 2, 5]);
        assert!(!l.is_contiguous());
        let s = Layout::contiguous(&[4, 4]).shrink(&[(1, 3), (2, 4)]);
        let mut offs = vec![];
        s.for_each_offset(|_, o| offs.push(o));
        assert_eq!(offs, vec![6, 7, 10, 11]);
    }
}
