//! Optimizer updates as primitives: each parameter's step (new value and
//! new optimizer state) in one kernel. Each is defined by its reference, a
//! composition of elementwise primitives in the same f32 operations and
//! order, which also gives its gradient.

use crate::op::{AdamStep, Op, SgdStep};
use crate::ops::{ensure_f32, same_device};
use crate::{DType, Error, Result, Tensor};

fn check(op: &'static str, ts: &[&Tensor]) -> Result<()> {
    same_device(op, ts)?;
    for t in ts {
        ensure_f32(op, t)?;
        if t.shape() != ts[0].shape() {
            return Err(Error::shape(
                op,
                &[ts[0].shape(), t.shape()],
                "parameter, gradient and optimizer state need one shape",
            ));
        }
    }
    Ok(())
}

/// Adam's step for one parameter: `[param, m, v]` after it.
pub(crate) fn adam_update(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: AdamStep,
) -> Result<[Tensor; 3]> {
    check("adam_update", &[p, g, m, v])?;
    let spec = (p.shape().to_vec(), DType::F32);
    let outs = Tensor::multi(
        Op::AdamUpdate(step),
        vec![p.clone(), g.clone(), m.clone(), v.clone()],
        &[spec.clone(), spec.clone(), spec],
    );
    let [p2, m2, v2] = <[Tensor; 3]>::try_from(outs).map_err(|_| internal("adam_update"))?;
    Ok([p2, m2, v2])
}

/// Adam's step as elementwise primitives (the definition the kernels follow).
pub(crate) fn adam_reference(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: AdamStep,
) -> Result<[Tensor; 3]> {
    check("adam_update", &[p, g, m, v])?;
    let k = step.constants();
    let m2 = m
        .mul_scalar(step.beta1)
        .add(&g.mul_scalar(k.one_minus_beta1))?;
    let v2 = v
        .mul_scalar(step.beta2)
        .add(&g.square().mul_scalar(k.one_minus_beta2))?;
    let update = m2
        .mul_scalar(k.inv_c1)
        .div(&v2.mul_scalar(k.inv_c2).sqrt().add_scalar(step.eps))?;
    let mut p2 = p.sub(&update.mul_scalar(step.lr))?;
    if step.weight_decay != 0.0 {
        p2 = p2.sub(&p.mul_scalar(k.lr_wd))?;
    }
    Ok([p2, m2, v2])
}

/// SGD's step for one parameter: the new parameter and, with momentum, the
/// new velocity (`velocity` must be given exactly when momentum is nonzero).
pub(crate) fn sgd_update(
    p: &Tensor,
    g: &Tensor,
    velocity: Option<&Tensor>,
    step: SgdStep,
) -> Result<(Tensor, Option<Tensor>)> {
    let mut inputs = vec![p.clone(), g.clone()];
    inputs.extend(velocity.cloned());
    check("sgd_update", &inputs.iter().collect::<Vec<_>>())?;
    if velocity.is_some() != (step.momentum != 0.0) {
        return Err(internal("sgd_update"));
    }
    let spec = (p.shape().to_vec(), DType::F32);
    if velocity.is_none() {
        return Ok((
            Tensor::from_op(Op::SgdUpdate(step), inputs, spec.0, DType::F32),
            None,
        ));
    }
    let mut outs = Tensor::multi(Op::SgdUpdate(step), inputs, &[spec.clone(), spec]);
    let v2 = outs.pop();
    let p2 = outs.pop().ok_or_else(|| internal("sgd_update"))?;
    Ok((p2, v2))
}

/// SGD's step as elementwise primitives.
pub(crate) fn sgd_reference(
    p: &Tensor,
    g: &Tensor,
    velocity: Option<&Tensor>,
    step: SgdStep,
) -> Result<(Tensor, Option<Tensor>)> {
    let mut g = g.clone();
    if step.weight_decay != 0.0 {
        g = g.add(&p.mul_scalar(step.weight_decay))?;
    }
    let mut v2 = None;
    if let Some(v) = velocity {
        let v_next = v.mul_scalar(step.momentum).add(&g)?;
        g = if step.nesterov {
            g.add(&v_next.mul_scalar(step.momentum))?
        } else {
            v_next.clone()
        };
        v2 = Some(v_next);
    }
    Ok((p.sub(&g.mul_scalar(step.lr))?, v2))
}

/// The outputs of an update node computed by its reference, from `inputs`.
pub(crate) fn reference_outputs(op: &Op, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    match (op, inputs) {
        (Op::AdamUpdate(s), [p, g, m, v]) => Ok(adam_reference(p, g, m, v, *s)?.to_vec()),
        (Op::SgdUpdate(s), [p, g, rest @ ..]) => {
            let (p2, v2) = sgd_reference(p, g, rest.first(), *s)?;
            Ok(std::iter::once(p2).chain(v2).collect())
        }
        _ => Err(internal(op.name())),
    }
}

fn internal(op: &'static str) -> Error {
    Error::param(op, "internal: inputs do not match the update's kind")
}
