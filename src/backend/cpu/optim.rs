//! Optimizer updates: each parameter's new value and state in one pass,
//! in exactly the f32 operations (and order) of their references in
//! `ops/optim.rs`, so fused and unfused steps agree bit for bit.

use rayon::prelude::*;

use super::{f32_data, PAR_MIN};
use crate::backend::Value;
use crate::op::{AdamStep, SgdStep};

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// Run `f(offset, outputs)` over chunks of `K` outputs of `n` elements.
fn outputs<const K: usize>(n: usize, f: impl Fn(usize, [&mut [f32]; K]) + Sync) -> [Vec<f32>; K] {
    let mut outs: [Vec<f32>; K] = std::array::from_fn(|_| vec![0.0; n]);
    let chunk = if n >= PAR_MIN { CHUNK } else { n.max(1) };
    let mut pieces: Vec<[&mut [f32]; K]> = Vec::new();
    {
        let mut iters: Vec<_> = outs.iter_mut().map(|o| o.chunks_mut(chunk)).collect();
        'chunks: loop {
            let mut piece: Vec<&mut [f32]> = Vec::with_capacity(K);
            for it in iters.iter_mut() {
                match it.next() {
                    Some(c) => piece.push(c),
                    None => break 'chunks,
                }
            }
            if let Ok(p) = <[&mut [f32]; K]>::try_from(piece) {
                pieces.push(p);
            }
        }
    }
    pieces
        .into_par_iter()
        .enumerate()
        .for_each(|(i, p)| f(i * chunk, p));
    outs
}

/// Adam: `[param, m, v]` after one step.
pub(crate) fn adam(s: &AdamStep, p: &Value, g: &Value, m: &Value, v: &Value) -> [Value; 3] {
    let shape = p.layout.shape.clone();
    let (p, g, m, v) = (f32_data(p), f32_data(g), f32_data(m), f32_data(v));
    let k = s.constants();
    let decay = s.weight_decay != 0.0;
    let [p2, m2, v2] = outputs(p.len(), |at, [po, mo, vo]| {
        for j in 0..po.len() {
            let i = at + j;
            let gi = g[i];
            let mn = m[i] * s.beta1 + gi * k.one_minus_beta1;
            let vn = v[i] * s.beta2 + (gi * gi) * k.one_minus_beta2;
            let update = (mn * k.inv_c1) * (1.0 / ((vn * k.inv_c2).sqrt() + s.eps));
            let mut pn = p[i] + -(update * s.lr);
            if decay {
                pn += -(p[i] * k.lr_wd);
            }
            po[j] = pn;
            mo[j] = mn;
            vo[j] = vn;
        }
    });
    [
        Value::f32(p2, &shape),
        Value::f32(m2, &shape),
        Value::f32(v2, &shape),
    ]
}

/// SGD: the parameter and, with momentum, the velocity after one step.
pub(crate) fn sgd(s: &SgdStep, p: &Value, g: &Value, velocity: Option<&Value>) -> Vec<Value> {
    let shape = p.layout.shape.clone();
    let (p, g) = (f32_data(p), f32_data(g));
    let decay = s.weight_decay != 0.0;
    let grad = |i: usize| {
        let gi = g[i];
        if decay {
            gi + p[i] * s.weight_decay
        } else {
            gi
        }
    };
    match velocity {
        None => {
            let [p2] = outputs(p.len(), |at, [po]| {
                for (j, o) in po.iter_mut().enumerate() {
                    let i = at + j;
                    *o = p[i] + -(grad(i) * s.lr);
                }
            });
            vec![Value::f32(p2, &shape)]
        }
        Some(v) => {
            let v = f32_data(v);
            let [p2, v2] = outputs(p.len(), |at, [po, vo]| {
                for j in 0..po.len() {
                    let i = at + j;
                    let gi = grad(i);
                    let vn = v[i] * s.momentum + gi;
                    let step = if s.nesterov { gi + vn * s.momentum } else { vn };
                    po[j] = p[i] + -(step * s.lr);
                    vo[j] = vn;
                }
            });
            vec![Value::f32(p2, &shape), Value::f32(v2, &shape)]
        }
    }
}
