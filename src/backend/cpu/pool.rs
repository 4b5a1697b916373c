//! Max and average pooling over 2-D windows, and their backward passes.
//! Planes (image, channel) run in parallel; each output's clipped window is
//! computed once per call, not per plane.

use rayon::prelude::*;

use super::f32_data;
use crate::backend::Value;
use crate::op::{PoolGeom, PoolKind};

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

pub fn pool2d(kind: PoolKind, g: &PoolGeom, x: &Value, y_shape: &[usize]) -> Value {
    let (h, w) = (x.layout.shape[2], x.layout.shape[3]);
    let (oh, ow) = (y_shape[2], y_shape[3]);
    let xd = f32_data(x);
    let mut y = vec![0.0f32; crate::shape::numel(y_shape)];
    if y.is_empty() {
        return Value::f32(y, y_shape);
    }
    if kind == PoolKind::Max && is_2x2(g) {
        y.par_chunks_mut(oh * ow).enumerate().for_each(|(p, out)| {
            let plane = &xd[p * h * w..(p + 1) * h * w];
            for (oi, orow) in out.chunks_mut(ow).enumerate() {
                let (r0, r1) = (
                    &plane[2 * oi * w..2 * oi * w + 2 * ow],
                    &plane[(2 * oi + 1) * w..(2 * oi + 1) * w + 2 * ow],
                );
                for (oj, o) in orow.iter_mut().enumerate() {
                    let (a, b, c, d) = (r0[2 * oj], r0[2 * oj + 1], r1[2 * oj], r1[2 * oj + 1]);
                    *o = if a.is_nan() || b.is_nan() || c.is_nan() || d.is_nan() {
                        f32::NAN
                    } else {
                        a.max(b).max(c.max(d))
                    };
                }
            }
        });
        return Value::f32(y, y_shape);
    }
    let win = Windows::new(g, h, w, oh, ow);
    let area = (g.kernel.0 * g.kernel.1) as f32;
    y.par_chunks_mut(oh * ow).enumerate().for_each(|(p, out)| {
        let plane = &xd[p * h * w..(p + 1) * h * w];
        for oi in 0..oh {
            for oj in 0..ow {
                out[oi * ow + oj] = match kind {
                    PoolKind::Max => win.max(plane, w, oi, oj),
                    PoolKind::Avg => win.sum(plane, w, oi, oj) / area,
                };
            }
        }
    });
    Value::f32(y, y_shape)
}

pub fn pool2d_backward(kind: PoolKind, g: &PoolGeom, x: &Value, dy: &Value) -> Value {
    let x_shape = &x.layout.shape;
    let (h, w) = (x_shape[2], x_shape[3]);
    let (oh, ow) = (dy.layout.shape[2], dy.layout.shape[3]);
    let (xd, dyd) = (f32_data(x), f32_data(dy));
    let n = crate::shape::numel(x_shape);
    if n == 0 || oh * ow == 0 {
        return Value::f32(vec![0.0; n], x_shape);
    }
    if kind == PoolKind::Max && is_2x2(g) {
        let dx = super::zeroed_chunks(n, h * w, |p, grad| {
            let plane = &xd[p * h * w..(p + 1) * h * w];
            let dplane = &dyd[p * oh * ow..(p + 1) * oh * ow];
            for (oi, drow) in dplane.chunks(ow).enumerate() {
                let (t, u) = (2 * oi * w, (2 * oi + 1) * w);
                let (x0, x1) = (&plane[t..t + 2 * ow], &plane[u..u + 2 * ow]);
                let (g0, rest) = grad[t..].split_at_mut(w);
                let g1 = &mut rest[..2 * ow];
                let g0 = &mut g0[..2 * ow];
                // The first maximum in row-major window order (as the general
                // path), chosen by bit masks: this form vectorises, and a
                // branch here is mispredicted about half the time.
                let windows = x0.chunks_exact(2).zip(x1.chunks_exact(2));
                let grads = g0.chunks_exact_mut(2).zip(g1.chunks_exact_mut(2));
                for (((top, bottom), &d), (out0, out1)) in windows.zip(drow).zip(grads) {
                    let (a, b, c, e) = (top[0], top[1], bottom[0], bottom[1]);
                    let b_wins = b > a;
                    let m1 = if b_wins { b } else { a };
                    let c_wins = c > m1;
                    let e_wins = e > if c_wins { c } else { m1 };
                    let pick =
                        |won: bool| f32::from_bits(d.to_bits() & (won as u32).wrapping_neg());
                    out0[0] = pick(!b_wins & !c_wins & !e_wins);
                    out0[1] = pick(b_wins & !c_wins & !e_wins);
                    out1[0] = pick(c_wins & !e_wins);
                    out1[1] = pick(e_wins);
                }
            }
        });
        return Value::f32(dx, x_shape);
    }
    let win = Windows::new(g, h, w, oh, ow);
    let area = (g.kernel.0 * g.kernel.1) as f32;
    let dx = super::zeroed_chunks(n, h * w, |p, grad| {
        let plane = &xd[p * h * w..(p + 1) * h * w];
        let dplane = &dyd[p * oh * ow..(p + 1) * oh * ow];
        for oi in 0..oh {
            for oj in 0..ow {
                let d = dplane[oi * ow + oj];
                match kind {
                    PoolKind::Max => {
                        if let Some(i) = win.argmax(plane, w, oi, oj) {
                            grad[i] += d;
                        }
                    }
                    PoolKind::Avg => {
                        let ((r0, r1), (c0, c1)) = (win.rows[oi], win.cols[oj]);
                        for ih in r0..r1 {
                            grad[ih * w + c0..ih * w + c1]
                                .iter_mut()
                                .for_each(|v| *v += d / area);
                        }
                    }
                }
            }
        }
    });
    Value::f32(dx, x_shape)
}
