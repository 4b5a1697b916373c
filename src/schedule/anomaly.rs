//! Anomaly detection: with it on, every realize runs op by op (no fusion),
//! reads each result back and stops at the first op whose output holds a
//! NaN or an infinity, naming the op, whether autodiff made it (backward)
//! or the model did (forward), its shape, and each input with its range.
//! Slow (a read-back per op), as PyTorch's `detect_anomaly` is: for
//! finding a bug, not for training.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::{Storage, Value};
use crate::{Error, Result, Tensor};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turn anomaly detection on or off for the whole process (the `shadergrad`
/// command's `--detect-anomaly`). While on, a realize that produces a NaN
/// or infinity fails with [`Error::NonFinite`] naming the first op that
/// made one, forward or backward, its shape and the inputs that fed it.
///
/// ```
/// # fn main() -> shadergrad::Result<()> {
/// use shadergrad::Tensor;
/// shadergrad::set_detect_anomaly(true);
/// let x = Tensor::from_slice(&[1.0, 0.0, 2.0], &[3])?.with_grad();
/// let err = x.sqrt().sum_all().backward()?.get(&x).unwrap().to_vec().unwrap_err();
/// assert!(err.to_string().contains("backward"), "{err}");
/// shadergrad::set_detect_anomaly(false);
/// # Ok(())
/// # }
/// ```
pub fn set_detect_anomaly(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether [`set_detect_anomaly`] is on.
pub fn detect_anomaly() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The elements of a host value in logical order, if it is f32.
fn floats(v: &Value) -> Option<Vec<f32>> {
    match v.storage.as_ref() {
        Storage::F32(d) => Some(v.layout_gather(d)),
        _ => None,
    }
}

/// `log`, `add`, `sum`, `matmul`: the primitive by its own name.
fn op_name(op: &crate::op::Op) -> String {
    use crate::op::Op;
    match op {
        Op::Unary(u) => format!("{u:?}").to_lowercase(),
        Op::Binary(b) => format!("{b:?}").to_lowercase(),
        Op::Reduce { op, .. } => format!("{op:?}").to_lowercase(),
        o => o.name().to_string(),
    }
}

fn num(v: f32) -> String {
    if v == 0.0 || (1e-3..1e4).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

fn summary(values: &[f32]) -> String {
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    let range = if lo <= hi {
        format!("values {}..{}", num(lo), num(hi))
    } else {
        "no finite values".into()
    };
    if bad > 0 {
        format!("{range}, {bad} non-finite")
    } else {
        range
    }
}

/// Whether `op` computes new values (views and plumbing cannot make a NaN,
/// so they are neither checked nor waited for).
pub(crate) fn computes(op: &crate::op::Op) -> bool {
    use crate::op::Op;
    !matches!(
        op,
        Op::Reshape
            | Op::Permute(_)
            | Op::Expand
            | Op::Shrink(_)
            | Op::Detach
            | Op::Output(_)
            | Op::Buffer
    )
}

/// Check one executed node that [`computes`]: `outs` are its results,
/// `inputs` the values it read.
pub(crate) fn check(t: &Tensor, ins: &[Tensor], inputs: &[Value], outs: &[Value]) -> Result<()> {
    for out in outs {
        let Some(values) = floats(&out.to_host()?) else {
            continue;
        };
        let Some(first) = values.iter().position(|v| !v.is_finite()) else {
            continue;
        };
        let pass = if t.0.backward { "backward" } else { "forward" };
        let mut described = Vec::new();
        let mut fed_bad = None;
        for (k, (i, v)) in ins.iter().zip(inputs).enumerate() {
            let host = v.to_host()?;
            let text = match floats(&host) {
                Some(vals) => {
                    if fed_bad.is_none() && vals.iter().any(|x| !x.is_finite()) {
                        fed_bad = Some(k);
                    }
                    summary(&vals)
                }
                None => format!("{}", i.dtype()),
            };
            let origin = if i.0.backward { "backward" } else { "forward" };
            described.push(format!(
                "#{k} {} {:?} ({origin}; {text})",
                op_name(i.op()),
                i.shape()
            ));
        }
        let verdict = match fed_bad {
            // Every op of this realize is checked in order, so a non-finite
            // input came from outside it: data, a parameter, or a tensor
            // computed before detection was turned on.
            Some(k) => format!(
                "input #{k} already held non-finite values when it reached this op: it is data, a \
                 parameter, or a tensor realized before anomaly detection was on"
            ),
            None => "all its inputs were finite, so this op made them (an overflow past f32's \
                     3.4e38, log or sqrt of a negative or zero, division by zero, ...)"
                .to_string(),
        };
        return Err(Error::NonFinite(format!(
            "anomaly: {} in the {pass} pass produced {} at element {first} of its output {:?} ({}); \
             its inputs: {}; {verdict}",
            op_name(t.op()),
            values[first],
            t.shape(),
            summary(&values),
            described.join(", ")
        )));
    }
    Ok(())
}
