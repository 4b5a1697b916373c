//! Sum and max over a set of axes (reduced axes stay as size 1).

use rayon::prelude::*;

use super::{f32_data, PAR_MIN};
use crate::backend::{Storage, Value};
use crate::op::ReduceOp;

pub fn reduce(op: ReduceOp, axes: &[usize], x: &Value) -> Value {
    let shape = &x.layout.shape;
    let rank = shape.len();
    // Kept axes first, reduced axes last: each output is one dense row.
    let mut perm: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
    perm.extend(axes.iter().copied());
    let permuted = Value {
        storage: x.storage.clone(),
        layout: x.layout.permute(&perm),
    };
    let data = f32_data(&permuted);
    let row: usize = axes.iter().map(|&a| shape[a]).product();
    let out_shape: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let n_out = crate::shape::numel(&out_shape);
    let reduce_row = |r: &[f32]| -> f32 {
        match op {
            ReduceOp::Sum => r.iter().map(|&v| v as f64).sum::<f64>() as f32,
            ReduceOp::Max => r.iter().fold(f32::NEG_INFINITY, |m, &v| {
                if m.is_nan() || v.is_nan() {
                    f32::NAN
                } else {
                    m.max(v)
                }
            }),
        }
    };
    let mut out = vec![0.0f32; n_out];
    if row == 0 {
        out.iter_mut().for_each(|o| *o = reduce_row(&[]));
    } else if n_out * row >= PAR_MIN && n_out > 1 {
        out.par_iter_mut()
            .zip(data.par_chunks(row))
            .for_each(|(o, r)| *o = reduce_row(r));
    } else if n_out == 1 && row >= PAR_MIN {
        // One long row: partial sums per chunk, then combine.
        let parts: Vec<f32> = data.par_chunks(8192).map(reduce_row).collect();
        out[0] = reduce_row(&parts);
    } else {
        for (o, r) in out.iter_mut().zip(data.chunks(row)) {
            *o = reduce_row(r);
        }
    }
    match x.storage.as_ref() {
        Storage::F32(_) => Value::f32(out, &out_shape),
        Storage::I32(_) => Value::i32(out.into_iter().map(|v| v as i32).collect(), &out_shape),
    }
}
