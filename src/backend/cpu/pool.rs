//! Max and average pooling over 2-D windows, and their backward passes.
//! Planes (image, channel) run in parallel; each output's clipped window is
//! computed once per call, not per plane.

use rayon::prelude::*;

use super::f32_data;
use crate::backend::Value;
use crate::op::PoolGeom;

/// Clipped input range `[lo, hi)` of each output position along one axis.
fn ranges(
    out: usize,
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> Vec<(usize, usize)> {
    (0..out)
        .map(|o| {
            let start = (o * stride) as isize - pad as isize;
            let lo = start.max(0) as usize;
            let hi = ((start + kernel as isize).max(0) as usize).min(input);
            (lo, hi.max(lo))
        })
        .collect()
}

struct Windows {
    rows: Vec<(usize, usize)>,
    cols: Vec<(usize, usize)>,
}

impl Windows {
    fn new(g: &PoolGeom, h: usize, w: usize, oh: usize, ow: usize) -> Windows {
        Windows {
            rows: ranges(oh, h, g.kernel.0, g.stride.0, g.padding.0),
            cols: ranges(ow, w, g.kernel.1, g.stride.1, g.padding.1),
        }
    }

    /// Index in the plane of the first maximum of window (oi, oj), or None
    /// for a window entirely in the padding. Written as selects, not
    /// branches: on real activations the comparison is unpredictable.
    #[inline(always)]
    fn argmax(&self, plane: &[f32], w: usize, oi: usize, oj: usize) -> Option<usize> {
        let (r0, r1) = self.rows[oi];
        let (c0, c1) = self.cols[oj];
        if r0 == r1 || c0 == c1 {
            return None;
        }
        let mut best = r0 * w + c0;
        let mut bv = plane[best];
        for ih in r0..r1 {
            let base = ih * w + c0;
            for (k, &v) in plane[base..ih * w + c1].iter().enumerate() {
                let take = v > bv;
                bv = if take { v } else { bv };
                best = if take { base + k } else { best };
            }
        }
        Some(best)
    }

    /// Maximum of window (oi, oj); NaN if any element is NaN (as PyTorch).
    #[inline(always)]
    fn max(&self, plane: &[f32], w: usize, oi: usize, oj: usize) -> f32 {
        let (r0, r1) = self.rows[oi];
        let (c0, c1) = self.cols[oj];
        let mut m = f32::NEG_INFINITY;
        let mut nan = false;
        for ih in r0..r1 {
            for &v in &plane[ih * w + c0..ih * w + c1] {
                m = if v > m { v } else { m };
                nan |= v.is_nan();
            }
        }
        if nan {
            f32::NAN
        } else {
            m
        }
    }

    #[inline(always)]
    fn sum(&self, plane: &[f32], w: usize, oi: usize, oj: usize) -> f32 {
        let (r0, r1) = self.rows[oi];
        let (c0, c1) = self.cols[oj];
        (r0..r1)
            .map(|ih| plane[ih * w + c0..ih * w + c1].iter().sum::<f32>())
            .sum()
    }
}

/// The common 2x2 window, stride 2, no padding: fast paths below.
fn is_2x2(g: &PoolGeom) -> bool {
    g.kernel == (2, 2) && g.stride == (2, 2) && g.padding == (0, 0)
}

/// Max pooling: each window's maximum (NaN when it holds one) and the
/// plane index of its first maximum (-1 for a window wholly in padding).
pub(crate) fn max_pool2d(g: &PoolGeom, x: &Value, y_shape: &[usize]) -> [Value; 2] {
    let (h, w) = (x.layout.shape[2], x.layout.shape[3]);
    let (oh, ow) = (y_shape[2], y_shape[3]);
    let xd = f32_data(x);
    let n = crate::shape::numel(y_shape);
    let mut y = vec![0.0f32; n];
    let mut idx = vec![0i32; n];
    if n > 0 && is_2x2(g) {
        let outs = y.par_chunks_mut(oh * ow).zip(idx.par_chunks_mut(oh * ow));
        outs.enumerate().for_each(|(p, (out, arg))| {
            let plane = &xd[p * h * w..(p + 1) * h * w];
            let rows = out.chunks_mut(ow).zip(arg.chunks_mut(ow));
            for (oi, (orow, arow)) in rows.enumerate() {
                let (t, u) = (2 * oi * w, (2 * oi + 1) * w);
                let (r0, r1) = (&plane[t..t + 2 * ow], &plane[u..u + 2 * ow]);
                for (oj, (o, a)) in orow.iter_mut().zip(arow.iter_mut()).enumerate() {
                    let (p0, p1, p2, p3) = (r0[2 * oj], r0[2 * oj + 1], r1[2 * oj], r1[2 * oj + 1]);
                    // The first maximum in row-major window order, replaced
                    // only by a strictly larger value (as the general path).
                    let (mut best, mut at) = (p0, t + 2 * oj);
                    for (v, i) in [(p1, t + 2 * oj + 1), (p2, u + 2 * oj), (p3, u + 2 * oj + 1)] {
                        let take = v > best;
                        best = if take { v } else { best };
                        at = if take { i } else { at };
                    }
                    let nan = p0.is_nan() || p1.is_nan() || p2.is_nan() || p3.is_nan();
                    *o = if nan { f32::NAN } else { best };
                    *a = at as i32;
                }
            }
        });
    } else if n > 0 {
        let win = Windows::new(g, h, w, oh, ow);
        let outs = y.par_chunks_mut(oh * ow).zip(idx.par_chunks_mut(oh * ow));
        outs.enumerate().for_each(|(p, (out, arg))| {
            let plane = &xd[p * h * w..(p + 1) * h * w];
            for oi in 0..oh {
                for oj in 0..ow {
                    out[oi * ow + oj] = win.max(plane, w, oi, oj);
                    arg[oi * ow + oj] = win.argmax(plane, w, oi, oj).map_or(-1, |i| i as i32);
                }
            }
        });
    }
    [Value::f32(y, y_shape), Value::i32(idx, y_shape)]
}

/// Max pooling's gradient: each window's dy goes to its argmax.
pub(crate) fn max_pool2d_backward(
    g: &PoolGeom,
    argmax: &Value,
    dy: &Value,
    x_shape: &[usize],
) -> Value {
    let (h, w) = (x_shape[2], x_shape[3]);
    let (oh, ow) = (dy.layout.shape[2], dy.layout.shape[3]);
    let (arg, dyd) = (super::i32_data(argmax), f32_data(dy));
    let n = crate::shape::numel(x_shape);
    if n == 0 || oh * ow == 0 {
        return Value::f32(vec![0.0; n], x_shape);
    }
    if is_2x2(g) {
        let dx = super::zeroed_chunks(n, h * w, |p, grad| {
            let aplane = &arg[p * oh * ow..(p + 1) * oh * ow];
            let dplane = &dyd[p * oh * ow..(p + 1) * oh * ow];
            let rows = aplane.chunks(ow).zip(dplane.chunks(ow));
            for (oi, (arow, drow)) in rows.enumerate() {
                let (t, u) = (2 * oi * w, (2 * oi + 1) * w);
                let (g0, rest) = grad[t..].split_at_mut(w);
                let g1 = &mut rest[..2 * ow];
                let g0 = &mut g0[..2 * ow];
                let grads = g0.chunks_exact_mut(2).zip(g1.chunks_exact_mut(2));
                // All four cells written by bit masks: this form vectorises,
                // and a branch on the winner is mispredicted half the time.
                for (oj, ((&a, &d), (out0, out1))) in arow.iter().zip(drow).zip(grads).enumerate() {
                    let at = a as isize;
                    let pick = |cell: usize| {
                        let won = at == cell as isize;
                        f32::from_bits(d.to_bits() & (won as u32).wrapping_neg())
                    };
                    out0[0] = pick(t + 2 * oj);
                    out0[1] = pick(t + 2 * oj + 1);
                    out1[0] = pick(u + 2 * oj);
                    out1[1] = pick(u + 2 * oj + 1);
                }
            }
        });
        return Value::f32(dx, x_shape);
    }
    let dx = super::zeroed_chunks(n, h * w, |p, grad| {
        let aplane = &arg[p * oh * ow..(p + 1) * oh * ow];
        let dplane = &dyd[p * oh * ow..(p + 1) * oh * ow];
        for (&a, &d) in aplane.iter().zip(dplane) {
            if a >= 0 {
                grad[a as usize] += d;
            }
        }
    });
    Value::f32(dx, x_shape)
}

/// Average pooling; padded positions count as zeros.
pub(crate) fn avg_pool2d(g: &PoolGeom, x: &Value, y_shape: &[usize]) -> Value {
    let (h, w) = (x.layout.shape[2], x.layout.shape[3]);
    let (oh, ow) = (y_shape[2], y_shape[3]);
    let xd = f32_data(x);
    let mut y = vec![0.0f32; crate::shape::numel(y_shape)];
    if y.is_empty() {
        return Value::f32(y, y_shape);
    }
    let win = Windows::new(g, h, w, oh, ow);
    let area = (g.kernel.0 * g.kernel.1) as f32;
    y.par_chunks_mut(oh * ow).enumerate().for_each(|(p, out)| {
        let plane = &xd[p * h * w..(p + 1) * h * w];
        for oi in 0..oh {
            for oj in 0..ow {
                out[oi * ow + oj] = win.sum(plane, w, oi, oj) / area;
            }
        }
    });
    Value::f32(y, y_shape)
}

/// Average pooling's gradient: each window's dy spread over its cells.
pub(crate) fn avg_pool2d_backward(g: &PoolGeom, dy: &Value, x_shape: &[usize]) -> Value {
    let (h, w) = (x_shape[2], x_shape[3]);
    let (oh, ow) = (dy.layout.shape[2], dy.layout.shape[3]);
    let dyd = f32_data(dy);
    let n = crate::shape::numel(x_shape);
    if n == 0 || oh * ow == 0 {
        return Value::f32(vec![0.0; n], x_shape);
    }
    let win = Windows::new(g, h, w, oh, ow);
    let area = (g.kernel.0 * g.kernel.1) as f32;
    let dx = super::zeroed_chunks(n, h * w, |p, grad| {
        let dplane = &dyd[p * oh * ow..(p + 1) * oh * ow];
        for oi in 0..oh {
            for oj in 0..ow {
                let d = dplane[oi * ow + oj];
                let ((r0, r1), (c0, c1)) = (win.rows[oi], win.cols[oj]);
                for ih in r0..r1 {
                    grad[ih * w + c0..ih * w + c1]
                        .iter_mut()
                        .for_each(|v| *v += d / area);
                }
            }
        }
    });
    Value::f32(dx, x_shape)
}
