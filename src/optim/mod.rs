//! Optimizers. A step differentiates the loss, builds the update as lazy
//! nodes, and realizes loss, new parameters and new optimizer state in one
//! schedule, so forward, backward and update run together.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard};

pub mod schedule;

pub use crate::op::{AdamStep, SgdStep};
pub use schedule::{l1_penalty, l2_penalty, LrSchedule};

/// One Adam/AdamW step of one parameter as a single kernel: `[param, m,
/// v]` after it (what [`Adam`] runs per parameter). Differentiable in
/// every input through its reference composition.
pub fn adam_update(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &AdamStep,
) -> Result<[Tensor; 3]> {
    optim_ops::adam_update(param, grad, m, v, *step)
}

/// The same step as separate elementwise ops: the definition
/// [`adam_update`] reproduces bit for bit on the cpu backend.
pub fn adam_update_unfused(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &AdamStep,
) -> Result<[Tensor; 3]> {
    optim_ops::adam_reference(param, grad, m, v, *step)
}

/// One SGD step of one parameter as a single kernel: the new parameter
/// and, when `step.momentum` is nonzero, the new velocity (`velocity` is
/// required then, and must be None otherwise).
pub fn sgd_update(
    param: &Tensor,
    grad: &Tensor,
    velocity: Option<&Tensor>,
    step: &SgdStep,
) -> Result<(Tensor, Option<Tensor>)> {
    check_velocity(velocity, step)?;
    optim_ops::sgd_update(param, grad, velocity, *step)
}

/// [`sgd_update`] as separate elementwise ops.
pub fn sgd_update_unfused(
    param: &Tensor,
    grad: &Tensor,
    velocity: Option<&Tensor>,
    step: &SgdStep,
) -> Result<(Tensor, Option<Tensor>)> {
    check_velocity(velocity, step)?;
    optim_ops::sgd_reference(param, grad, velocity, *step)
}

fn check_velocity(velocity: Option<&Tensor>, step: &SgdStep) -> Result<()> {
    if velocity.is_some() != (step.momentum != 0.0) {
        return Err(Error::param(
            "sgd_update",
            format!(
                "momentum {} needs {} velocity",
                step.momentum,
                if step.momentum != 0.0 { "a" } else { "no" }
            ),
        ));
    }
    Ok(())
}

use crate::ops::optim as optim_ops;
use crate::{no_grad, Error, Result, Tensor};

/// A tensor shared between a model and its optimizer: the model reads the
/// current value, the optimizer replaces it after each step. Trainable
/// parameters are gradient leaves; state (batch-norm running statistics) is not.
#[derive(Clone, Debug)]
pub struct Parameter(Arc<Mutex<Tensor>>);

thread_local! {
    /// State updates built during a forward pass, realized with the next step.
    static PENDING: RefCell<Vec<(Parameter, Tensor)>> = const { RefCell::new(Vec::new()) };
}

impl Parameter {
    /// A trainable parameter: realizes `init` and marks it as a gradient leaf.
    pub fn new(init: Tensor) -> Result<Parameter> {
        init.realize()?;
        Ok(Parameter(Arc::new(Mutex::new(init.detach().with_grad()))))
    }

    /// Non-trainable state (no gradient).
    pub fn state(init: Tensor) -> Result<Parameter> {
        init.realize()?;
        Ok(Parameter(Arc::new(Mutex::new(init.detach()))))
    }

    /// Replace the value with a lazy tensor now, and realize it with the next
    /// optimizer step (or [`realize_pending`]) instead of on its own.
    pub fn set_lazy(&self, value: Tensor) -> Result<()> {
        let mut cur = self.lock();
        if value.shape() != cur.shape() {
            return Err(Error::shape(
                "Parameter::set_lazy",
                &[cur.shape(), value.shape()],
                "a parameter keeps its shape",
            ));
        }
        *cur = value.to(*cur.device()).detach();
        PENDING.with(|p| p.borrow_mut().push((self.clone(), cur.clone())));
        Ok(())
    }

    /// Whether the optimizer updates it (false for running statistics).
    pub fn requires_grad(&self) -> bool {
        self.lock().requires_grad()
    }

    fn lock(&self) -> MutexGuard<'_, Tensor> {
        // A poisoned lock only means another thread panicked mid-assignment of
        // a whole handle, which cannot leave it half-written.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current value (a gradient leaf).
    pub fn get(&self) -> Tensor {
        self.lock().clone()
    }

    /// Replace the value; it must keep the shape.
    pub fn set(&self, value: Tensor) -> Result<()> {
        let mut cur = self.lock();
        if value.shape() != cur.shape() {
            return Err(Error::shape(
                "Parameter::set",
                &[cur.shape(), value.shape()],
                "a parameter keeps its shape",
            ));
        }
        let value = value.to(*cur.device());
        value.realize()?;
        let trainable = cur.requires_grad();
        *cur = if trainable {
            value.detach().with_grad()
        } else {
            value.detach()
        };
        Ok(())
    }

    /// The current value's shape.
    pub fn shape(&self) -> Vec<usize> {
        self.lock().shape().to_vec()
    }
}

/// One optimization step for the loss; returns the loss value.
pub trait Optimizer {
    /// One step: gradients of `loss`, the update, realized together; returns the loss value.
    fn step(&mut self, loss: &Tensor) -> Result<f32> {
        self.step_with(loss, &[])
    }
    /// A step that also realizes `extra` (metrics such as accuracy) in the
    /// same schedule.
    fn step_with(&mut self, loss: &Tensor, extra: &[Tensor]) -> Result<f32> {
        Ok(self.step_values(loss, extra)?[0])
    }
    /// [`Optimizer::step_with`], returning the loss and then each extra's
    /// value, all read back in one copy (one wait for a GPU instead of one
    /// per `item()`); an extra of more than one element is realized but
    /// not read (NaN).
    fn step_values(&mut self, loss: &Tensor, extra: &[Tensor]) -> Result<Vec<f32>>;
    /// The current learning rate.
    fn learning_rate(&self) -> f32;
    /// Set the learning rate (schedules call this between steps).
    fn set_learning_rate(&mut self, lr: f32);
    /// Internal state by name (`optim.*`), for checkpoints.
    fn state_tensors(&self) -> Vec<(String, Tensor)>;
    /// Restore what `state_tensors` produced; `get` looks a name up.
    fn load_state_tensors(&mut self, get: &dyn Fn(&str) -> Option<Tensor>) -> Result<()>;
}

fn named_state(prefix: &str, ts: &[Tensor]) -> Vec<(String, Tensor)> {
    ts.iter()
        .enumerate()
        .map(|(i, t)| (format!("{prefix}.{i}"), t.clone()))
        .collect()
}

fn load_named(
    get: &dyn Fn(&str) -> Option<Tensor>,
    prefix: &str,
    into: &mut [Tensor],
) -> Result<()> {
    for (i, slot) in into.iter_mut().enumerate() {
        let name = format!("{prefix}.{i}");
        let t = get(&name).ok_or_else(|| Error::Io {
            path: name.clone(),
            msg:
                "optimizer state missing from the checkpoint (was it saved with another optimizer?)"
                    .into(),
        })?;
        if t.shape() != slot.shape() {
            return Err(Error::shape(
                "load optimizer state",
                &[slot.shape(), t.shape()],
                format!("{name} has the wrong shape"),
            ));
        }
        *slot = t;
    }
    Ok(())
}

fn check_loss(loss: &Tensor) -> Result<()> {
    if loss.numel() != 1 {
        return Err(Error::Grad(format!(
            "the loss must be a scalar, got shape {:?}",
            loss.shape()
        )));
    }
    Ok(())
}

/// Realize the loss with the new values, then commit them; a non-finite loss
/// stops before anything is overwritten.
fn commit(
    loss: &Tensor,
    extra: &[Tensor],
    params: &[Parameter],
    new_params: Vec<Tensor>,
    state: &mut [&mut Vec<Tensor>],
    new_state: Vec<Vec<Tensor>>,
) -> Result<Vec<f32>> {
    let mut all = vec![loss.clone()];
    all.extend(extra.iter().cloned());
    all.extend(new_params.iter().cloned());
    new_state.iter().for_each(|s| all.extend(s.iter().cloned()));
    // An out-of-range index (a bad label) is reported by the read-back
    // below rather than by a wait of its own: nothing is committed before it.
    let (realized, index_flags) =
        crate::backend::gpu::recorder::deferring_index_checks(|| realize_with_pending(&all));
    let pending = realized?;
    // The loss and the one-element extras in one read-back.
    let mut read = vec![loss.clone()];
    read.extend(extra.iter().filter(|t| t.numel() == 1).cloned());
    let mut read_values = Tensor::read_items(&read, &index_flags)?.into_iter();
    let value = read_values.next().unwrap_or(f32::NAN);
    let mut values = vec![value];
    values.extend(extra.iter().map(|t| {
        if t.numel() == 1 {
            read_values.next().unwrap_or(f32::NAN)
        } else {
            f32::NAN
        }
    }));
    if !value.is_finite() {
        return Err(Error::NonFinite(format!(
            "the loss is {value}; parameters were left unchanged (lower the learning rate, check \
             the inputs, or name the op that made it with set_detect_anomaly / --detect-anomaly)"
        )));
    }
    store_pending(pending);
    for (p, v) in params.iter().zip(new_params) {
        p.set(v)?;
    }
    for (slot, fresh) in state.iter_mut().zip(new_state) {
        **slot = fresh.into_iter().map(|t| t.detach()).collect();
    }
    Ok(values)
}

/// Realize `extra` together with every pending [`Parameter::set_lazy`] update,
/// then store those updates as plain buffers (cutting their graphs).
pub fn realize_pending(extra: &[Tensor]) -> Result<()> {
    store_pending(realize_with_pending(extra)?);
    Ok(())
}

/// Realize `extra` with the pending updates, which it takes (and returns).
fn realize_with_pending(extra: &[Tensor]) -> Result<Vec<(Parameter, Tensor)>> {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let mut all = extra.to_vec();
    all.extend(pending.iter().map(|(_, t)| t.clone()));
    Tensor::realize_all(&all)?;
    Ok(pending)
}

fn store_pending(pending: Vec<(Parameter, Tensor)>) {
    for (param, value) in pending {
        let mut cur = param.lock();
        // Only replace it if nothing newer was set meanwhile.
        if cur.id() == value.id() {
            *cur = value.detach();
        }
    }
}

/// Gradient descent with optional momentum, Nesterov momentum and L2 weight
/// decay (added to the gradient). `momentum = 0` is plain gradient descent.
pub struct Sgd {
    params: Vec<Parameter>,
    /// Learning rate.
    pub lr: f32,
    /// Momentum (0: none).
    pub momentum: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
    /// One kernel per parameter for the update (default), or the same
    /// arithmetic as separate elementwise ops.
    pub fused: bool,
    velocity: Vec<Tensor>,
}

impl Sgd {
    /// Plain gradient descent on `params` at learning rate `lr`.
    pub fn new(params: Vec<Parameter>, lr: f32) -> Sgd {
        let velocity = params.iter().map(|p| p.get().zeros_like()).collect();
        Sgd {
            params,
            lr,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            fused: true,
            velocity,
        }
    }

    /// Update each parameter in one kernel (`true`, the default) or as
    /// elementwise ops (the reference the kernel reproduces bit for bit).
    pub fn fused(mut self, fused: bool) -> Sgd {
        self.fused = fused;
        self
    }

    /// With momentum (0.9 is usual), Nesterov's if `nesterov`.
    pub fn momentum(mut self, momentum: f32, nesterov: bool) -> Sgd {
        self.momentum = momentum;
        self.nesterov = nesterov;
        self
    }

    /// With an L2 penalty of `wd` added to the gradient.
    pub fn weight_decay(mut self, wd: f32) -> Sgd {
        self.weight_decay = wd;
        self
    }
}

impl Optimizer for Sgd {
    fn step_values(&mut self, loss: &Tensor, extra: &[Tensor]) -> Result<Vec<f32>> {
        check_loss(loss)?;
        let grads = loss.backward()?;
        let step = SgdStep {
            lr: self.lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
        };
        let (new_p, new_v) = no_grad(|| -> Result<(Vec<Tensor>, Vec<Tensor>)> {
            let mut new_p = Vec::new();
            let mut new_v = Vec::new();
            for (param, v) in self.params.iter().zip(&self.velocity) {
                let p = param.get();
                let g = grads.get_or_zeros(&p);
                let velocity = (self.momentum != 0.0).then_some(v);
                let (p2, v2) = if self.fused {
                    optim_ops::sgd_update(&p, &g, velocity, step)?
                } else {
                    optim_ops::sgd_reference(&p, &g, velocity, step)?
                };
                new_p.push(p2);
                new_v.push(v2.unwrap_or_else(|| v.clone()));
            }
            Ok((new_p, new_v))
        })?;
        // Intermediate gradients held here would be kept (materialised)
        // by the realize, and so could not fuse into their users.
        drop(grads);
        commit(
            loss,
            extra,
            &self.params,
            new_p,
            &mut [&mut self.velocity],
            vec![new_v],
        )
    }

    fn learning_rate(&self) -> f32 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f32) {
        self.lr = lr;
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        named_state("optim.sgd.velocity", &self.velocity)
    }

    fn load_state_tensors(&mut self, get: &dyn Fn(&str) -> Option<Tensor>) -> Result<()> {
        load_named(get, "optim.sgd.velocity", &mut self.velocity)
    }
}

/// Adam (Kingma & Ba) with Keras' defaults (beta1 0.9, beta2 0.999, eps 1e-7);
/// `weight_decay` is decoupled (AdamW) when nonzero.
///
/// One step realizes the loss, the gradients and every update together:
///
/// ```
/// use shadergrad::nn::{Init, Linear, Module};
/// use shadergrad::{Adam, Optimizer, Tensor};
///
/// # fn main() -> shadergrad::Result<()> {
/// // Fit y = 2x + 1 with one linear layer.
/// let layer = Linear::new(1, 1, Init::GlorotUniform)?;
/// let params = layer.parameters().into_iter().map(|(_, p)| p).collect();
/// let mut opt = Adam::new(params, 0.1);
/// let x = Tensor::from_slice(&[0.0, 1.0, 2.0, 3.0], &[4, 1])?;
/// let y = Tensor::from_slice(&[1.0, 3.0, 5.0, 7.0], &[4, 1])?;
/// let mut loss = f32::MAX;
/// for _ in 0..300 {
///     let err = layer.forward(&x)?.sub(&y)?;
///     loss = opt.step(&err.square().mean_all())?;
/// }
/// assert!(loss < 1e-2, "loss {loss}");
/// # Ok(())
/// # }
/// ```
pub struct Adam {
    params: Vec<Parameter>,
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first-moment average (0.9).
    pub beta1: f32,
    /// Decay of the second-moment average (0.999).
    pub beta2: f32,
    /// Added to the root of the second moment (1e-7, Keras' default).
    pub eps: f32,
    /// Decoupled weight decay (AdamW); 0 for Adam.
    pub weight_decay: f32,
    /// One kernel per parameter for the update (default), or the same
    /// arithmetic as separate elementwise ops.
    pub fused: bool,
    step: i32,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Adam {
    /// Adam on `params` at learning rate `lr`, betas (0.9, 0.999), eps 1e-7.
    pub fn new(params: Vec<Parameter>, lr: f32) -> Adam {
        let zeros = |p: &Parameter| p.get().zeros_like();
        Adam {
            m: params.iter().map(zeros).collect(),
            v: params.iter().map(zeros).collect(),
            params,
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
            weight_decay: 0.0,
            fused: true,
            step: 0,
        }
    }

    /// Update each parameter in one kernel (`true`, the default) or as
    /// elementwise ops (the reference the kernel reproduces bit for bit).
    pub fn fused(mut self, fused: bool) -> Adam {
        self.fused = fused;
        self
    }

    /// Adam's first and second moment decay rates.
    pub fn betas(mut self, beta1: f32, beta2: f32) -> Adam {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }

    /// AdamW: decay the weights by `lr * wd` each step, apart from the gradient.
    pub fn weight_decay(mut self, wd: f32) -> Adam {
        self.weight_decay = wd;
        self
    }

    /// With `eps` instead of 1e-7.
    pub fn eps(mut self, eps: f32) -> Adam {
        self.eps = eps;
        self
    }
}

impl Optimizer for Adam {
    fn step_values(&mut self, loss: &Tensor, extra: &[Tensor]) -> Result<Vec<f32>> {
        check_loss(loss)?;
        let grads = loss.backward()?;
        let t = self.step + 1;
        let step = AdamStep {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            t,
        };
        let (new_p, new_m, new_v) =
            no_grad(|| -> Result<(Vec<Tensor>, Vec<Tensor>, Vec<Tensor>)> {
                let (mut np, mut nm, mut nv) = (Vec::new(), Vec::new(), Vec::new());
                for ((param, m), v) in self.params.iter().zip(&self.m).zip(&self.v) {
                    let p = param.get();
                    let g = grads.get_or_zeros(&p);
                    let [p2, m2, v2] = if self.fused {
                        optim_ops::adam_update(&p, &g, m, v, step)?
                    } else {
                        optim_ops::adam_reference(&p, &g, m, v, step)?
                    };
                    np.push(p2);
                    nm.push(m2);
                    nv.push(v2);
                }
                Ok((np, nm, nv))
            })?;
        drop(grads); // as in Sgd::step_values
        let values = commit(
            loss,
            extra,
            &self.params,
            new_p,
            &mut [&mut self.m, &mut self.v],
            vec![new_m, new_v],
        )?;
        self.step = t;
        Ok(values)
    }

    fn learning_rate(&self) -> f32 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f32) {
        self.lr = lr;
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut s = named_state("optim.adam.m", &self.m);
        s.extend(named_state("optim.adam.v", &self.v));
        s.push((
            "optim.adam.step".into(),
            Tensor::full(&[1], self.step as f32),
        ));
        s
    }

    fn load_state_tensors(&mut self, get: &dyn Fn(&str) -> Option<Tensor>) -> Result<()> {
        load_named(get, "optim.adam.m", &mut self.m)?;
        load_named(get, "optim.adam.v", &mut self.v)?;
        let step = get("optim.adam.step").ok_or_else(|| Error::Io {
            path: "optim.adam.step".into(),
            msg: "optimizer state missing from the checkpoint".into(),
        })?;
        self.step = step.item()? as i32;
        Ok(())
    }
}
