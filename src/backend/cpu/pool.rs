//! Max and average pooling over 2-D windows, and their backward passes.
//! Planes (image, channel) run in parallel.

use rayon::prelude::*;

use super::f32_data;
use crate::backend::Value;
use crate::op::{PoolGeom, PoolKind};

/// Visit the in-bounds taps `(ih, iw)` of output position `(oi, oj)`.
#[inline(always)]
fn taps(g: &PoolGeom, h: usize, w: usize, oi: usize, oj: usize, mut f: impl FnMut(usize, usize)) {
    for ki in 0..g.kernel.0 {
        let ih = (oi * g.stride.0 + ki) as isize - g.padding.0 as isize;
        if ih < 0 || ih >= h as isize {
            continue;
        }
        for kj in 0..g.kernel.1 {
            let iw = (oj * g.stride.1 + kj) as isize - g.padding.1 as isize;
            if iw >= 0 && iw < w as isize {
                f(ih as usize, iw as usize);
            }
        }
    }
}

/// Index in the plane of the first maximum of a window (NaN wins, as in PyTorch).
#[inline(always)]
fn argmax(g: &PoolGeom, plane: &[f32], h: usize, w: usize, oi: usize, oj: usize) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    taps(g, h, w, oi, oj, |ih, iw| {
        let v = plane[ih * w + iw];
        match best {
            Some((_, b)) if !(v > b || (v.is_nan() && !b.is_nan())) => {}
            _ => best = Some((ih * w + iw, v)),
        }
    });
    best.map(|(i, _)| i)
}

pub fn pool2d(kind: PoolKind, g: &PoolGeom, x: &Value, y_shape: &[usize]) -> Value {
    let (h, w) = (x.layout.shape[2], x.layout.shape[3]);
    let (oh, ow) = (y_shape[2], y_shape[3]);
    let xd = f32_data(x);
    let mut y = vec![0.0f32; crate::shape::numel(y_shape)];
    if y.is_empty() {
        return Value::f32(y, y_shape);
    }
    let area = (g.kernel.0 * g.kernel.1) as f32;
    y.par_chunks_mut(oh * ow).enumerate().for_each(|(p, out)| {
        let plane = &xd[p * h * w..(p + 1) * h * w];
        for oi in 0..oh {
            for oj in 0..ow {
                out[oi * ow + oj] = match kind {
                    PoolKind::Max => {
                        argmax(g, plane, h, w, oi, oj).map_or(f32::NEG_INFINITY, |i| plane[i])
                    }
                    PoolKind::Avg => {
                        let mut s = 0.0;
                        taps(g, h, w, oi, oj, |ih, iw| s += plane[ih * w + iw]);
                        s / area
                    }
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
    let mut dx = vec![0.0f32; crate::shape::numel(x_shape)];
    if dx.is_empty() || oh * ow == 0 {
        return Value::f32(dx, x_shape);
    }
    let area = (g.kernel.0 * g.kernel.1) as f32;
    dx.par_chunks_mut(h * w).enumerate().for_each(|(p, grad)| {
        let plane = &xd[p * h * w..(p + 1) * h * w];
        let dplane = &dyd[p * oh * ow..(p + 1) * oh * ow];
        for oi in 0..oh {
            for oj in 0..ow {
                let d = dplane[oi * ow + oj];
                match kind {
                    PoolKind::Max => {
                        if let Some(i) = argmax(g, plane, h, w, oi, oj) {
                            grad[i] += d;
                        }
                    }
                    PoolKind::Avg => taps(g, h, w, oi, oj, |ih, iw| grad[ih * w + iw] += d / area),
                }
            }
        }
    });
    Value::f32(dx, x_shape)
}
