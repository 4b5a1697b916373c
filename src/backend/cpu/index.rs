//! Gather along an axis and its adjoint, scatter-add.

use super::{f32_data, i32_data};
use crate::backend::Value;
use crate::shape::contiguous_strides;
use crate::{Error, Result};

/// The error for an index outside its axis (checked when the graph runs).
fn bad_index(op: &'static str, v: i32, size: usize, axis: usize) -> Error {
    Error::param(
        op,
        format!("index {v} is out of range for axis {axis} of size {size}; indices must lie in 0..{size}"),
    )
}

pub fn gather(src: &Value, index: &Value, axis: usize) -> Result<Value> {
    let idx_shape = &index.layout.shape;
    let src_shape = &src.layout.shape;
    let (sd, id) = (f32_data(src), i32_data(index));
    let src_strides = contiguous_strides(src_shape);
    let idx_strides = contiguous_strides(idx_shape);
    let mut out = Vec::with_capacity(id.len());
    for (i, &ix) in id.iter().enumerate() {
        if ix < 0 || ix as usize >= src_shape[axis] {
            return Err(bad_index("gather", ix, src_shape[axis], axis));
        }
        let mut off = 0;
        let mut r = i;
        for d in 0..idx_shape.len() {
            let c = r / idx_strides[d];
            r %= idx_strides[d];
            off += if d == axis { ix as usize } else { c } * src_strides[d];
        }
        out.push(sd[off]);
    }
    Ok(Value::f32(out, idx_shape))
}

pub fn scatter_add(index: &Value, src: &Value, axis: usize, out_shape: &[usize]) -> Result<Value> {
    let idx_shape = &index.layout.shape;
    let (sd, id) = (f32_data(src), i32_data(index));
    let out_strides = contiguous_strides(out_shape);
    let idx_strides = contiguous_strides(idx_shape);
    let mut out = vec![0.0f32; crate::shape::numel(out_shape)];
    for (i, &ix) in id.iter().enumerate() {
        if ix < 0 || ix as usize >= out_shape[axis] {
            return Err(bad_index("scatter_add", ix, out_shape[axis], axis));
        }
        let mut off = 0;
        let mut r = i;
        for d in 0..idx_shape.len() {
            let c = r / idx_strides[d];
            r %= idx_strides[d];
            off += if d == axis { ix as usize } else { c } * out_strides[d];
        }
        out[off] += sd[i];
    }
    Ok(Value::f32(out, out_shape))
}
