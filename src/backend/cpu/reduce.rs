//! Sum and max over a set of axes (reduced axes stay as size 1).

use rayon::prelude::*;

use super::{f32_data, PAR_MIN};
use crate::backend::{Storage, Value};
use crate::op::ReduceOp;

/// Elements per parallel chunk of one long reduced run.
const RUN_CHUNK: usize = 1 << 16;

/// The f64 sum of `run` in 8 independent lanes, combined in a fixed order:
/// a serial chain of f64 adds waits on each add's latency, lanes vectorise.
fn sum_lanes(run: &[f32]) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let chunks = run.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += v as f64;
        }
    }
    let pairs = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (pairs[0] + pairs[2]) + (pairs[1] + pairs[3]) + tail
}

/// The maximum of `run` (NaN if any is NaN; -inf if empty) in 8 f32
/// lanes: exact, as max is, and vectorised, where a serial f64 fold with a
/// NaN test per element is not.
fn max_lanes(run: &[f32]) -> f64 {
    const LANES: usize = 8;
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut nan = false;
    let chunks = run.chunks_exact(LANES);
    for &v in chunks.remainder() {
        nan |= v.is_nan();
        acc[0] = if v > acc[0] { v } else { acc[0] };
    }
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            nan |= v.is_nan();
            *a = if v > *a { v } else { *a };
        }
    }
    if nan {
        return f64::NAN;
    }
    acc.iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m }) as f64
}

/// Dense input, walked in memory order: axes are collapsed into alternating
/// kept / reduced groups and every contiguous run is folded straight into
/// the (small) output. No transposed copy of the input.
fn reduce_dense(op: ReduceOp, axes: &[usize], data: &[f32], shape: &[usize]) -> Vec<f32> {
    // (size, reduced) groups, size-1 axes dropped.
    let mut groups: Vec<(usize, bool)> = Vec::new();
    for (d, &size) in shape.iter().enumerate() {
        let red = axes.contains(&d);
        match groups.last_mut() {
            _ if size == 1 => {}
            Some((s, r)) if *r == red => *s *= size,
            _ => groups.push((size, red)),
        }
    }
    let n_out: usize = groups.iter().filter(|g| !g.1).map(|g| g.0).product();
    let init = match op {
        ReduceOp::Sum => 0.0f64,
        ReduceOp::Max => f64::NEG_INFINITY,
    };
    if groups.is_empty() {
        return data.to_vec();
    }
    let (inner, inner_reduced) = *groups.last().expect("non-empty");
    let outer = &groups[..groups.len() - 1];
    // Output stride of each outer group (0 for reduced groups).
    let mut out_strides = vec![0usize; outer.len()];
    let mut acc = if inner_reduced { 1 } else { inner };
    for (i, &(size, red)) in outer.iter().enumerate().rev() {
        if !red {
            out_strides[i] = acc;
            acc *= size;
        }
    }
    let fold = |a: f64, v: f32| -> f64 {
        match op {
            ReduceOp::Sum => a + v as f64,
            ReduceOp::Max => {
                if a.is_nan() || v.is_nan() {
                    f64::NAN
                } else {
                    a.max(v as f64)
                }
            }
        }
    };
    let combine = |a: f64, b: f64| -> f64 {
        match op {
            ReduceOp::Sum => a + b,
            ReduceOp::Max => {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.max(b)
                }
            }
        }
    };
    let runs = data.len() / inner.max(1);
    // Fixed partitions of the runs (independent of the thread count), each
    // folded into its own partial output, combined in order: deterministic.
    let parts = if data.len() >= super::PAR_MIN {
        runs.clamp(1, 16)
    } else {
        1
    };
    let per = runs.div_ceil(parts);
    let partial = |p: usize| -> Vec<f64> {
        let mut out = vec![init; n_out];
        let (r0, r1) = (p * per, ((p + 1) * per).min(runs));
        for r in r0..r1 {
            // Output offset of run r from its outer-group indices.
            let mut rem = r;
            let mut base = 0;
            for i in (0..outer.len()).rev() {
                base += (rem % outer[i].0) * out_strides[i];
                rem /= outer[i].0;
            }
            let run = &data[r * inner..(r + 1) * inner];
            let fold_run = |run: &[f32]| match op {
                ReduceOp::Sum => sum_lanes(run),
                ReduceOp::Max => max_lanes(run),
            };
            if inner_reduced && run.len() >= 2 * RUN_CHUNK {
                // A long run (a full reduction) is folded in fixed chunks
                // on every thread, then combined in order: deterministic.
                let chunks: Vec<f64> = run.par_chunks(RUN_CHUNK).map(fold_run).collect();
                out[base] = chunks.into_iter().fold(out[base], combine);
            } else if inner_reduced {
                out[base] = combine(out[base], fold_run(run));
            } else {
                for (o, &v) in out[base..base + inner].iter_mut().zip(run) {
                    *o = fold(*o, v);
                }
            }
        }
        out
    };
    let partials: Vec<Vec<f64>> = if parts > 1 {
        (0..parts).into_par_iter().map(partial).collect()
    } else {
        vec![partial(0)]
    };
    let mut total = vec![init; n_out];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t = combine(*t, v);
        }
    }
    total.into_iter().map(|v| v as f32).collect()
}

pub fn reduce(op: ReduceOp, axes: &[usize], x: &Value) -> Value {
    let shape = &x.layout.shape;
    if let (Storage::F32(d), true) = (x.storage.as_ref(), x.layout.is_contiguous()) {
        let n = x.layout.numel();
        let data = &d[x.layout.offset..x.layout.offset + n];
        let out_shape: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(i, &s)| if axes.contains(&i) { 1 } else { s })
            .collect();
        return Value::f32(reduce_dense(op, axes, data, shape), &out_shape);
    }
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
            ReduceOp::Sum => sum_lanes(r) as f32,
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
        Storage::Gpu(_) => unreachable!("cpu kernels see host values: exec downloads first"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_lanes_matches_a_serial_sum_at_every_tail_length() {
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 33, 257] {
            let run: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let serial: f64 = run.iter().map(|&v| v as f64).sum();
            assert!((sum_lanes(&run) - serial).abs() < 1e-9, "len {len}");
        }
        // A single large value among small ones: f64 lanes keep the small ones.
        let mut run = vec![1e-3f32; 100];
        run[50] = 1e7;
        assert!((sum_lanes(&run) - (1e7 + 99.0 * 1e-3f32 as f64)).abs() < 1e-6);
    }

    /// The lane maximum is the serial one at every tail length, wherever
    /// the largest value sits; a NaN anywhere wins; empty is -inf.
    #[test]
    fn max_lanes_matches_a_serial_max_at_every_tail_length() {
        for len in [1, 7, 8, 9, 15, 16, 17, 33, 257] {
            for top in [0, len / 2, len - 1] {
                let mut run: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() - 5.0).collect();
                run[top] = 2.5;
                assert_eq!(max_lanes(&run), 2.5, "len {len}, maximum at {top}");
                run[top] = f32::NAN;
                assert!(max_lanes(&run).is_nan(), "len {len}, NaN at {top}");
            }
        }
        assert_eq!(max_lanes(&[]), f64::NEG_INFINITY);
        assert_eq!(max_lanes(&[f32::NEG_INFINITY; 9]), f64::NEG_INFINITY);
    }

    /// A full reduction long enough to be folded in parallel chunks, with
    /// a ragged last chunk: the sum is exact, the max finds the one large
    /// value and a NaN anywhere wins.
    #[test]
    fn a_long_full_reduction_folds_in_chunks() {
        let n = 5 * RUN_CHUNK + 13;
        let mut data: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
        let want: f64 = data.iter().map(|&v| v as f64).sum();
        let sum = reduce_dense(ReduceOp::Sum, &[0], &data, &[n]);
        assert_eq!(sum, vec![want as f32]);
        data[3 * RUN_CHUNK + 5] = 100.0;
        assert_eq!(reduce_dense(ReduceOp::Max, &[0], &data, &[n]), vec![100.0]);
        data[n - 1] = f32::NAN;
        assert!(reduce_dense(ReduceOp::Max, &[0], &data, &[n])[0].is_nan());
    }
}
