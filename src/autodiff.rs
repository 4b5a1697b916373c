//! Reverse-mode autodiff as a graph transform: gradients are new lazy nodes
//! built from the same primitives, so they run on every backend and can be
//! realized together with the optimizer update.

use std::collections::HashMap;

use crate::op::{BinaryOp, Op, ReduceOp, UnaryOp};
use crate::{DType, Error, Result, Tensor};

/// Gradients by node, as returned by [`Tensor::backward`].
#[derive(Default, Debug)]
pub struct Gradients(HashMap<u64, Tensor>);

impl Gradients {
    /// The gradient of `t`, if the loss depends on it.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.id())
    }

    /// The gradient of `t`, zeros when the loss does not depend on it.
    pub fn get_or_zeros(&self, t: &Tensor) -> Tensor {
        self.get(t).cloned().unwrap_or_else(|| t.zeros_like())
    }
}

impl Tensor {
    /// Gradients of this scalar with respect to every tensor it depends on
    /// that requires grad. Nothing is computed until the gradients are realized.
    pub fn backward(&self) -> Result<Gradients> {
        if self.numel() != 1 {
            return Err(Error::Grad(format!(
                "the loss must have one element, but has shape {:?}; reduce it (sum/mean) or use backward_with",
                self.shape()
            )));
        }
        self.backward_with(&self.ones_like())
    }

    /// Gradients given the gradient of this tensor (vector-Jacobian product).
    pub fn backward_with(&self, grad_output: &Tensor) -> Result<Gradients> {
        if grad_output.shape() != self.shape() {
            return Err(Error::Grad(format!(
                "grad_output has shape {:?} but the tensor has shape {:?}",
                grad_output.shape(),
                self.shape()
            )));
        }
        if !self.requires_grad() {
            return Err(Error::Grad(
                "this tensor does not depend on any tensor that requires grad; mark parameters with .with_grad()".into(),
            ));
        }
        crate::ops::same_device("backward_with", &[self, grad_output])?;
        backward_from(&[(self.clone(), grad_output.clone())])
    }
}

/// Reverse pass from several roots, each with its upstream gradient.
fn backward_from(roots: &[(Tensor, Tensor)]) -> Result<Gradients> {
    crate::tensor::building_backward(|| backward_nodes(roots))
}

fn backward_nodes(roots: &[(Tensor, Tensor)]) -> Result<Gradients> {
    let order = crate::schedule::postorder(
        &roots.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(),
        |t| match t.op() {
            Op::Detach => vec![],
            _ => t
                .inputs()
                .iter()
                .filter(|i| i.requires_grad())
                .cloned()
                .collect(),
        },
    );
    let mut grads: HashMap<u64, Tensor> = HashMap::new();
    // Gradients of the outputs of multi-output nodes, gathered from
    // their `Output(i)` nodes (which come later in `order`).
    let mut output_grads: HashMap<u64, Vec<Option<Tensor>>> = HashMap::new();
    for (t, g) in roots {
        accumulate(&mut grads, t, g.clone())?;
    }
    for node in order.iter().rev() {
        let input_grads = match node.op() {
            Op::Output(i) => {
                let Some(g) = grads.remove(&node.id()) else {
                    continue;
                };
                let multi = &node.inputs()[0];
                let slots = output_grads
                    .entry(multi.id())
                    .or_insert_with(|| vec![None; multi.op().outputs()]);
                slots[*i] = Some(match slots[*i].take() {
                    Some(prev) => prev.add(&g)?,
                    None => g,
                });
                continue;
            }
            op if op.outputs() > 1 => {
                let Some(gs) = output_grads.remove(&node.id()) else {
                    continue;
                };
                vjp_multi(node, &gs)?
            }
            _ => {
                let Some(g) = grads.get(&node.id()).cloned() else {
                    continue;
                };
                vjp(node, &g)?
            }
        };
        for (input, ig) in node.inputs().iter().zip(input_grads) {
            let Some(ig) = ig else { continue };
            if !input.requires_grad() {
                continue;
            }
            debug_assert_eq!(
                ig.shape(),
                input.shape(),
                "gradient shape of {:?}",
                node.op()
            );
            accumulate(&mut grads, input, ig)?;
        }
    }
    Ok(Gradients(grads))
}

fn accumulate(grads: &mut HashMap<u64, Tensor>, t: &Tensor, g: Tensor) -> Result<()> {
    let acc = match grads.remove(&t.id()) {
        Some(prev) => prev.add(&g)?,
        None => g,
    };
    grads.insert(t.id(), acc);
    Ok(())
}

/// Gradients of a multi-output node's inputs from its outputs' gradients
/// (`None` for outputs the loss does not depend on).
fn vjp_multi(node: &Tensor, gs: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let x = node.inputs();
    match node.op() {
        // Only the maxima carry a gradient (the argmax is an integer).
        Op::MaxPool2d(geom) => {
            let Some(g) = &gs[0] else {
                return Ok(vec![None]);
            };
            let argmax = node.project(1, g.shape(), DType::I32);
            Ok(vec![Some(Tensor::from_op(
                Op::MaxPool2dBackward(*geom),
                vec![argmax, g.clone()],
                x[0].shape().to_vec(),
                DType::F32,
            ))])
        }
        // Only the output carries a gradient: the log-sum-exp is internal
        // (backward reads it, nothing differentiates it).
        Op::Attention(_) => {
            let Some(g) = &gs[0] else {
                return Ok(vec![None; x.len()]);
            };
            let q = x[0].shape();
            let v = x[2].shape();
            let out = node.project(0, &[q[0], q[1], q[2], v[3]], DType::F32);
            let lse = node.project(1, &q[..3], DType::F32);
            let mut grads: Vec<Option<Tensor>> = Tensor::attention_backward(node, &out, &lse, g)?
                .into_iter()
                .map(Some)
                .collect();
            grads.resize(x.len(), None);
            Ok(grads)
        }
        Op::AttentionBackward(_) => Err(Error::Grad(
            "second derivatives through fused attention are not supported; use Tensor::attention_unfused where a gradient of a gradient is needed".into(),
        )),
        Op::AdamUpdate(_) | Op::SgdUpdate(_) => vjp_by_reference(node, gs),
        other => Err(Error::Grad(format!(
            "internal: no gradient rule for the outputs of {}",
            other.name()
        ))),
    }
}

/// The gradient of an optimizer update through its reference composition
/// (`ops/optim.rs`): fresh leaves stand for the inputs, so the gradients
/// come out as expressions in the inputs.
fn vjp_by_reference(node: &Tensor, gs: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let leaves: Vec<Tensor> = node
        .inputs()
        .iter()
        .map(|x| x.detach().with_grad())
        .collect();
    let outs = crate::ops::optim::reference_outputs(node.op(), &leaves)?;
    let roots: Vec<(Tensor, Tensor)> = outs
        .into_iter()
        .zip(gs)
        .filter_map(|(o, g)| g.clone().map(|g| (o, g)))
        .collect();
    if roots.is_empty() {
        return Ok(vec![None; leaves.len()]);
    }
    let grads = backward_from(&roots)?;
    Ok(leaves.iter().map(|l| grads.get(l).cloned()).collect())
}

/// Gradients of `loss` with respect to `params` (zeros where it does not depend on one).
pub fn grad(loss: &Tensor, params: &[Tensor]) -> Result<Vec<Tensor>> {
    let g = loss.backward()?;
    Ok(params.iter().map(|p| g.get_or_zeros(p)).collect())
}

/// The vector-Jacobian product of one node: for each input, its gradient
/// (None where the input gets none).
fn vjp(node: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let x = node.inputs();
    let out = node;
    let some = |t: Tensor| Ok(vec![Some(t)]);
    match node.op() {
        // Leaves and non-differentiable ops.
        Op::Buffer
        | Op::Full(_)
        | Op::Rand { .. }
        | Op::Arange { .. }
        | Op::Detach
        | Op::Cast(_) => Ok(vec![None; x.len()]),
        Op::Unary(u) => some(match u {
            UnaryOp::Neg => g.neg(),
            // d e^x = e^x
            UnaryOp::Exp => g.mul(out)?,
            // d ln x = 1/x
            UnaryOp::Log => g.div(&x[0])?,
            // d sqrt x = 1 / (2 sqrt x)
            UnaryOp::Sqrt => g.div(out)?.mul_scalar(0.5),
            // d (1/x) = -1/x^2
            UnaryOp::Recip => g.mul(&out.square())?.neg(),
            UnaryOp::Sin => g.mul(&x[0].cos())?,
            // d tanh = 1 - tanh^2
            UnaryOp::Tanh => g.mul(&out.square().rsub_scalar(1.0))?,
            // d erf x = 2/sqrt(pi) e^{-x^2}
            UnaryOp::Erf => g.mul(
                &x[0]
                    .square()
                    .neg()
                    .exp()
                    .mul_scalar(std::f32::consts::FRAC_2_SQRT_PI),
            )?,
            // Masked where the output is positive (as the input is).
            UnaryOp::Relu => Tensor::where_(&out.gt_scalar(0.0), g, &g.zeros_like())?,
        }),
        Op::Binary(b) => {
            let (a, c) = (&x[0], &x[1]);
            Ok(match b {
                BinaryOp::Add => vec![Some(g.clone()), Some(g.clone())],
                BinaryOp::Mul => vec![Some(g.mul(c)?), Some(g.mul(a)?)],
                // The larger operand takes the gradient; ties share it evenly.
                BinaryOp::Max => {
                    let wa = a.gt(c)?.add(&a.eq(c)?.mul_scalar(0.5))?;
                    vec![Some(g.mul(&wa)?), Some(g.mul(&wa.rsub_scalar(1.0))?)]
                }
                // d a^c = c a^(c-1) da + a^c ln(a) dc
                BinaryOp::Pow => {
                    let da = g.mul(&c.mul(&a.pow(&c.sub_scalar(1.0))?)?)?;
                    let dc = if c.requires_grad() {
                        Some(g.mul(&out.mul(&a.log())?)?)
                    } else {
                        None
                    };
                    vec![Some(da), dc]
                }
                BinaryOp::CmpLt | BinaryOp::CmpEq => vec![None, None],
            })
        }
        Op::Where => {
            let zero = g.zeros_like();
            Ok(vec![
                None,
                Some(Tensor::where_(&x[0], g, &zero)?),
                Some(Tensor::where_(&x[0], &zero, g)?),
            ])
        }
        Op::Reduce { op, axes } => {
            let shape = x[0].shape();
            let ge = g.expand(shape)?;
            some(match op {
                ReduceOp::Sum => ge,
                // Split among the tied maxima, like tinygrad.
                ReduceOp::Max => {
                    let is_max = x[0].eq(&out.expand(shape)?)?;
                    let count = is_max.reduce(ReduceOp::Sum, axes, true).expand(shape)?;
                    ge.mul(&is_max)?.div(&count)?
                }
            })
        }
        Op::Reshape => some(g.reshape(x[0].shape())?),
        Op::Permute(p) => {
            let mut inv = vec![0; p.len()];
            for (i, &pi) in p.iter().enumerate() {
                inv[pi] = i;
            }
            some(g.permute(&inv)?)
        }
        Op::Expand => {
            let axes: Vec<usize> = x[0]
                .shape()
                .iter()
                .zip(out.shape())
                .enumerate()
                .filter(|(_, (&d, &n))| d != n)
                .map(|(i, _)| i)
                .collect();
            some(g.reduce(ReduceOp::Sum, &axes, true))
        }
        Op::Shrink(r) => {
            let pads: Vec<(usize, usize)> = r
                .iter()
                .zip(x[0].shape())
                .map(|(&(a, b), &d)| (a, d - b))
                .collect();
            some(g.pad(&pads)?)
        }
        Op::Pad(p) => {
            let ranges: Vec<(usize, usize)> = p
                .iter()
                .zip(x[0].shape())
                .map(|(&(a, _), &d)| (a, a + d))
                .collect();
            some(g.shrink(&ranges)?)
        }
        Op::Contiguous => some(g.clone()),
        // C = A B:  dA = dC B^T,  dB = A^T dC
        Op::MatMul => Ok(vec![
            Some(g.matmul(&x[1].t()?)?),
            Some(x[0].t()?.matmul(g)?),
        ]),
        Op::Conv2d(geom) => Ok(vec![
            Some(Tensor::conv2d_backward_data(g, &x[1], *geom, x[0].shape())),
            Some(Tensor::conv2d_backward_filter(
                &x[0],
                g,
                *geom,
                x[1].shape(),
            )),
        ]),
        // The three convolutions are bilinear and each other's adjoints:
        // <conv(x, w), dy> = <x, bwd_data(dy, w)> = <w, bwd_filter(x, dy)>.
        Op::Conv2dBackwardData(geom) => Ok(vec![
            Some(Tensor::conv2d_raw(g, &x[1], *geom, x[0].shape())),
            Some(Tensor::conv2d_backward_filter(
                g,
                &x[0],
                *geom,
                x[1].shape(),
            )),
        ]),
        Op::Conv2dBackwardFilter(geom) => Ok(vec![
            Some(Tensor::conv2d_backward_data(&x[1], g, *geom, x[0].shape())),
            Some(Tensor::conv2d_raw(&x[0], g, *geom, x[1].shape())),
        ]),
        Op::SgdUpdate(_) => vjp_by_reference(node, &[Some(g.clone())]),
        Op::MaxPool2d(_)
        | Op::AdamUpdate(_)
        | Op::Attention(_)
        | Op::AttentionBackward(_)
        | Op::Output(_) => Err(Error::Grad(format!(
            "internal: {} reached the single-output rules",
            node.op().name()
        ))),
        // dx = scatter of dy to each window's argmax, linear in dy: its
        // adjoint gathers the upstream gradient at the argmax.
        Op::MaxPool2dBackward(_) => {
            let (n, c) = (x[1].shape()[0], x[1].shape()[1]);
            let plane = |t: &Tensor| t.shape()[2] * t.shape()[3];
            let flat = g.reshape(&[n, c, plane(g)])?;
            let at = x[0].reshape(&[n, c, plane(&x[1])])?;
            Ok(vec![
                None,
                Some(flat.gather(2, &at)?.reshape(x[1].shape())?),
            ])
        }
        // Average pooling and its backward are linear and each other's adjoints.
        Op::AvgPool2d(geom) => some(Tensor::from_op(
            Op::AvgPool2dBackward(*geom),
            vec![g.clone()],
            x[0].shape().to_vec(),
            DType::F32,
        )),
        Op::AvgPool2dBackward(geom) => some(Tensor::from_op(
            Op::AvgPool2d(*geom),
            vec![g.clone()],
            x[0].shape().to_vec(),
            DType::F32,
        )),
        Op::Gather { axis } => Ok(vec![
            Some(Tensor::scatter_add_raw(&x[1], g, *axis, x[0].shape())),
            None,
        ]),
        Op::ScatterAdd { axis } => Ok(vec![None, Some(g.gather(*axis as isize, &x[0])?)]),
        Op::ToDevice => some(g.to(*x[0].device())),
    }
}
