//! `Tensor`: a cheap handle to a node of a lazy graph. Building expressions
//! computes nothing; `realize`, `to_vec` and `item` run the graph.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::backend::{Storage, Value};
use crate::op::Op;
use crate::shape::{numel, Layout};
use crate::{Device, Error, Result};

/// Element types. Comparisons yield f32 masks (0.0 / 1.0); i32 carries labels
/// and indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 32-bit signed integer (labels, indices, masks).
    I32,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
        })
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static NO_GRAD_DEPTH: Cell<usize> = const { Cell::new(0) };
    static RNG_STATE: Cell<u64> = const { Cell::new(0x5eed_5eed_5eed_5eed) };
    static DEFAULT_DEVICE: std::cell::RefCell<Device> = const { std::cell::RefCell::new(Device::Cpu) };
    /// Set while autodiff builds gradient nodes, so anomaly reports can say
    /// "backward".
    static BUILDING_BACKWARD: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with new nodes marked as part of a backward pass.
pub(crate) fn building_backward<R>(f: impl FnOnce() -> R) -> R {
    let before = BUILDING_BACKWARD.with(|b| b.replace(true));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUILDING_BACKWARD.with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

/// The device new leaf tensors (data, constants, random) are placed on, for this thread.
pub fn default_device() -> Device {
    DEFAULT_DEVICE.with(|d| *d.borrow())
}

/// Run `f` with `device` as this thread's default device, restoring the old one after.
pub fn with_device<R>(device: Device, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Device>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(d) = self.0.take() {
                DEFAULT_DEVICE.with(|cell| *cell.borrow_mut() = d);
            }
        }
    }
    let old = DEFAULT_DEVICE.with(|cell| std::mem::replace(&mut *cell.borrow_mut(), device));
    let _restore = Restore(Some(old));
    f()
}

/// Seed this thread's generator; every later `rand`/`randn`/`dropout` on this
/// thread draws from it, so a run is reproducible.
pub fn manual_seed(seed: u64) {
    RNG_STATE.with(|s| s.set(splitmix64(seed ^ 0x9e37_79b9_7f4a_7c15)));
}

pub(crate) fn next_seed() -> u64 {
    RNG_STATE.with(|s| {
        let v = splitmix64(s.get());
        s.set(v);
        v
    })
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Run `f` without recording gradients: tensors built inside do not require grad.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            NO_GRAD_DEPTH.with(|d| d.set(d.get() - 1));
        }
    }
    NO_GRAD_DEPTH.with(|d| d.set(d.get() + 1));
    let _guard = Guard;
    f()
}

pub(crate) fn grad_enabled() -> bool {
    NO_GRAD_DEPTH.with(|d| d.get() == 0)
}

pub(crate) struct Node {
    pub id: u64,
    pub op: Op,
    pub inputs: Vec<Tensor>,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub device: Device,
    pub requires_grad: bool,
    /// Set once the node has been computed (or at creation for `Op::Buffer`).
    pub value: OnceLock<Value>,
    /// Built by autodiff (a gradient), not by the forward computation.
    pub backward: bool,
}

impl Drop for Node {
    // Dropping a long chain recursively could overflow the stack; unlink it
    // iteratively instead.
    fn drop(&mut self) {
        let mut stack = std::mem::take(&mut self.inputs);
        while let Some(t) = stack.pop() {
            if let Ok(mut node) = Arc::try_unwrap(t.0) {
                stack.append(&mut node.inputs);
            }
        }
    }
}

/// A handle to a lazily computed n-dimensional array. Cloning is cheap.
///
/// Ops build graph nodes; values are computed when asked for (`to_vec`,
/// `item`, `realize`), on the device the tensor lives on (the thread's
/// default device for new data, see [`crate::with_device`]).
///
/// ```
/// use shadergrad::Tensor;
///
/// # fn main() -> shadergrad::Result<()> {
/// let a = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
/// let b = Tensor::ones(&[3, 2]);
/// let c = a.matmul(&b)?.relu();                 // [2, 2], nothing computed yet
/// assert_eq!(c.shape(), &[2, 2]);
/// assert_eq!(c.to_vec()?, vec![6.0, 6.0, 15.0, 15.0]);
///
/// // Gradients are new lazy tensors.
/// let w = Tensor::from_slice(&[3.0], &[1])?.with_grad();
/// let grads = w.mul(&w)?.sum_all().backward()?;
/// assert_eq!(grads.get(&w).expect("w's gradient").to_vec()?, vec![6.0]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Node>);

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor(#{} {} {:?} {}{})",
            self.0.id,
            self.0.op.name(),
            self.0.shape,
            self.0.dtype,
            if self.0.requires_grad { " grad" } else { "" }
        )
    }
}

/// The value of an f32 elementwise op whose operands are all constants
/// (`full`, seen through views), computed now on the host: a gradient's
/// seed scaled by a mean's 1/n, say, costs no kernel launch.
fn fold_constants(op: &Op, inputs: &[Tensor], dtype: DType) -> Option<f32> {
    fn constant(t: &Tensor) -> Option<f32> {
        if t.0.requires_grad || t.0.dtype != DType::F32 {
            return None;
        }
        match &t.0.op {
            Op::Full(v) => Some(*v),
            Op::Expand | Op::Reshape | Op::Permute(_) | Op::Detach => constant(&t.0.inputs[0]),
            _ => None,
        }
    }
    if dtype != DType::F32 || !matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Where) {
        return None;
    }
    let values = inputs.iter().map(constant).collect::<Option<Vec<f32>>>()?;
    let leaves: Vec<crate::backend::Value> = values
        .iter()
        .map(|&v| crate::backend::Value::f32(vec![v], &[]))
        .collect();
    let program = crate::schedule::fusion::Program::single(op.clone(), leaves.len());
    let out = crate::backend::cpu::elementwise::fused(&program, &leaves, &[]);
    match out.storage.as_ref() {
        crate::backend::Storage::F32(v) => v.first().copied(),
        _ => None,
    }
}

impl Tensor {
    /// A new node; `shape` and `dtype` must already be validated by the caller.
    pub(crate) fn from_op(op: Op, inputs: Vec<Tensor>, shape: Vec<usize>, dtype: DType) -> Tensor {
        let device = inputs.first().map_or_else(default_device, |t| t.0.device);
        Tensor::from_op_on(op, inputs, shape, dtype, device)
    }

    /// A new node on `device` (leaves built inside ops go where their
    /// operands live, whatever the thread's default).
    pub(crate) fn from_op_on(
        op: Op,
        inputs: Vec<Tensor>,
        shape: Vec<usize>,
        dtype: DType,
        device: Device,
    ) -> Tensor {
        if let Some(v) = fold_constants(&op, &inputs, dtype) {
            return Tensor::from_op_on(Op::Full(v), vec![], shape, DType::F32, device);
        }
        let differentiable = dtype == DType::F32
            && !matches!(
                op,
                Op::Detach
                    | Op::Cast(_)
                    | Op::Binary(crate::op::BinaryOp::CmpLt)
                    | Op::Binary(crate::op::BinaryOp::CmpEq)
            );
        let requires_grad =
            differentiable && grad_enabled() && inputs.iter().any(|t| t.0.requires_grad);
        Tensor(Arc::new(Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            op,
            inputs,
            shape,
            dtype,
            device,
            requires_grad,
            value: OnceLock::new(),
            backward: BUILDING_BACKWARD.with(|b| b.get()),
        }))
    }

    /// A node with several outputs, seen through one `Op::Output(i)` node
    /// per entry of `outputs` (shape, type); the node itself carries the
    /// first output's.
    pub(crate) fn multi(
        op: Op,
        inputs: Vec<Tensor>,
        outputs: &[(Vec<usize>, DType)],
    ) -> Vec<Tensor> {
        debug_assert_eq!(outputs.len(), op.outputs());
        let node = Tensor::from_op(op, inputs, outputs[0].0.clone(), outputs[0].1);
        (0..outputs.len())
            .map(|i| node.project(i, &outputs[i].0, outputs[i].1))
            .collect()
    }

    /// Output `i` (of `shape` and `dtype`) of this multi-output node.
    pub(crate) fn project(&self, i: usize, shape: &[usize], dtype: DType) -> Tensor {
        Tensor::from_op(Op::Output(i), vec![self.clone()], shape.to_vec(), dtype)
    }

    pub(crate) fn from_value(value: Value, requires_grad: bool, device: Device) -> Tensor {
        let dtype = value.storage.dtype();
        let shape = value.layout.shape.clone();
        let cell = OnceLock::new();
        let _ = cell.set(value);
        Tensor(Arc::new(Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            op: Op::Buffer,
            inputs: vec![],
            shape,
            dtype,
            device,
            requires_grad,
            value: cell,
            backward: false,
        }))
    }

    fn from_storage(op: &'static str, storage: Storage, shape: &[usize]) -> Result<Tensor> {
        if storage.len() != numel(shape) {
            return Err(Error::shape(
                op,
                &[&[storage.len()], shape],
                format!(
                    "{} values cannot fill shape {:?} ({} elements); pass a shape whose sizes multiply to the data length",
                    storage.len(),
                    shape,
                    numel(shape)
                ),
            ));
        }
        Ok(Tensor::from_value(
            Value {
                storage: Arc::new(storage),
                layout: Layout::contiguous(shape),
            },
            false,
            default_device(),
        ))
    }

    // ---------------------------------------------------------------- creation

    /// f32 data in row-major order.
    pub fn from_slice(data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_storage("from_slice", Storage::F32(data.to_vec()), shape)
    }

    /// A tensor owning `data` (row-major) of `shape`; errors if the sizes differ.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_storage("from_vec", Storage::F32(data), shape)
    }

    /// i32 data (labels, indices) in row-major order.
    pub fn from_slice_i32(data: &[i32], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_storage("from_slice_i32", Storage::I32(data.to_vec()), shape)
    }

    /// A rank-0 tensor holding `v`.
    pub fn scalar(v: f32) -> Tensor {
        Tensor::full(&[], v)
    }

    /// A tensor of `shape` filled with `v` (no memory until realized, and then only as one broadcast value).
    pub fn full(shape: &[usize], v: f32) -> Tensor {
        Tensor::full_on(shape, v, default_device())
    }

    /// `full` on a given device.
    pub fn full_on(shape: &[usize], v: f32, device: Device) -> Tensor {
        Tensor::from_op_on(Op::Full(v), vec![], shape.to_vec(), DType::F32, device)
    }

    /// A tensor of `shape` filled with 0.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// A tensor of `shape` filled with 1.
    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// Zeros of this tensor's shape, on its device.
    pub fn zeros_like(&self) -> Tensor {
        Tensor::full_on(self.shape(), 0.0, *self.device())
    }

    /// Ones of this tensor's shape, on its device.
    pub fn ones_like(&self) -> Tensor {
        Tensor::full_on(self.shape(), 1.0, *self.device())
    }

    /// `start, start+step, ...` below `end` (f32).
    pub fn arange(start: f32, end: f32, step: f32) -> Result<Tensor> {
        let n = arange_len("arange", start as f64, end as f64, step as f64)?;
        Ok(Tensor::from_op(
            Op::Arange {
                start: start as f64,
                step: step as f64,
            },
            vec![],
            vec![n],
            DType::F32,
        ))
    }

    /// `start, start+step, ...` below `end` (i32).
    pub fn arange_i32(start: i32, end: i32, step: i32) -> Result<Tensor> {
        let n = arange_len("arange_i32", start as f64, end as f64, step as f64)?;
        Ok(Tensor::from_op(
            Op::Arange {
                start: start as f64,
                step: step as f64,
            },
            vec![],
            vec![n],
            DType::I32,
        ))
    }

    /// Uniform in [0, 1), from the thread's seeded generator (`manual_seed`).
    pub fn rand(shape: &[usize]) -> Tensor {
        Tensor::rand_seeded(shape, next_seed())
    }

    /// Uniform in [0, 1) with an explicit seed: same seed, same values, on every backend.
    pub fn rand_seeded(shape: &[usize], seed: u64) -> Tensor {
        Tensor::from_op(Op::Rand { seed }, vec![], shape.to_vec(), DType::F32)
    }

    /// Standard normal (Box-Muller over two uniform streams).
    pub fn randn(shape: &[usize]) -> Tensor {
        let (s1, s2) = (next_seed(), next_seed());
        Tensor::randn_from(shape, s1, s2)
    }

    /// Standard normal with an explicit seed: same seed, same values, on
    /// every backend, whatever the thread's generator.
    pub fn randn_seeded(shape: &[usize], seed: u64) -> Tensor {
        Tensor::randn_from(shape, seed, splitmix64(seed ^ 0x6e6f_726d))
    }

    fn randn_from(shape: &[usize], s1: u64, s2: u64) -> Tensor {
        let u1 = Tensor::rand_seeded(shape, s1);
        let u2 = Tensor::rand_seeded(shape, s2);
        // 1 - u lies in (0, 1], so the log is finite.
        let r = u1.neg().add_scalar(1.0).log().mul_scalar(-2.0).sqrt();
        let theta = u2.mul_scalar(2.0 * std::f32::consts::PI);
        r.binary_same(crate::op::BinaryOp::Mul, &theta.cos())
    }

    // ---------------------------------------------------------------- facts

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// The device it lives on.
    pub fn device(&self) -> &Device {
        &self.0.device
    }

    /// This tensor on `device` (lazy, like every op; itself when it is
    /// there already). Gradients flow back to the original device.
    pub fn to(&self, device: Device) -> Tensor {
        if *self.device() == device {
            return self.clone();
        }
        Tensor::from_op_on(
            Op::ToDevice,
            vec![self.clone()],
            self.shape().to_vec(),
            self.dtype(),
            device,
        )
    }

    /// A unique id of the node (stable for the handle's lifetime).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Whether gradients flow to it.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// Whether its value has been computed and kept.
    pub fn is_realized(&self) -> bool {
        self.0.value.get().is_some()
    }

    pub(crate) fn op(&self) -> &Op {
        &self.0.op
    }

    pub(crate) fn inputs(&self) -> &[Tensor] {
        &self.0.inputs
    }

    // ---------------------------------------------------------------- gradients

    /// This tensor as a gradient leaf: `backward` computes its gradient and
    /// stops there. A tensor that already requires grad is returned as is.
    pub fn with_grad(&self) -> Tensor {
        if self.requires_grad() {
            return self.clone();
        }
        if let (Op::Buffer, Some(v)) = (&self.0.op, self.0.value.get()) {
            return Tensor::from_value(v.clone(), self.dtype() == DType::F32, *self.device());
        }
        let mut t = Tensor::from_op(
            Op::Detach,
            vec![self.clone()],
            self.shape().to_vec(),
            self.dtype(),
        );
        if let Some(node) = Arc::get_mut(&mut t.0) {
            node.requires_grad = self.dtype() == DType::F32;
        }
        t
    }

    /// The same values, cut off from the graph: no gradient flows through.
    /// A realized tensor becomes a plain buffer, which frees the graph behind it.
    pub fn detach(&self) -> Tensor {
        if let Some(v) = self.0.value.get() {
            return Tensor::from_value(v.clone(), false, *self.device());
        }
        Tensor::from_op(
            Op::Detach,
            vec![self.clone()],
            self.shape().to_vec(),
            self.dtype(),
        )
    }

    // ---------------------------------------------------------------- running

    /// Compute this tensor (and everything it needs) now.
    pub fn realize(&self) -> Result<&Tensor> {
        crate::schedule::realize(std::slice::from_ref(self))?;
        Ok(self)
    }

    /// Compute several tensors in one schedule, so shared work runs once
    /// (e.g. a loss and its gradients).
    pub fn realize_all(tensors: &[Tensor]) -> Result<()> {
        crate::schedule::realize(tensors)
    }

    pub(crate) fn value(&self) -> Result<Value> {
        if let Some(v) = self.0.value.get() {
            return Ok(v.clone());
        }
        self.realize()?;
        self.0.value.get().cloned().ok_or_else(|| {
            Error::param(
                "realize",
                format!("internal: {self:?} has no value after realize"),
            )
        })
    }

    /// The values in row-major order, as f32 (i32 tensors are converted).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let v = self.value()?.to_host()?;
        Ok(match v.storage.as_ref() {
            Storage::F32(d) => v.layout_gather(d),
            Storage::I32(d) => v.layout_gather(d).into_iter().map(|x| x as f32).collect(),
            Storage::Gpu(_) => unreachable!("to_host returns host storage"),
        })
    }

    /// The values of an i32 tensor in row-major order.
    pub fn to_vec_i32(&self) -> Result<Vec<i32>> {
        let v = self.value()?.to_host()?;
        match v.storage.as_ref() {
            Storage::I32(d) => Ok(v.layout_gather(d)),
            Storage::Gpu(_) => unreachable!("to_host returns host storage"),
            Storage::F32(_) => Err(Error::DType {
                op: "to_vec_i32",
                expected: "i32".into(),
                got: "f32".into(),
                hint: "use to_vec() for f32 tensors".into(),
            }),
        }
    }

    /// The values of several one-element tensors (a step's loss and its
    /// metrics), computed in one schedule and read back in one copy per
    /// device: one wait for the device instead of one per `item()`.
    pub fn items(tensors: &[Tensor]) -> Result<Vec<f32>> {
        if let Some(t) = tensors.iter().find(|t| t.numel() != 1) {
            return Err(Error::shape(
                "items",
                &[t.shape()],
                "items() reads one-element tensors; reduce first (sum/mean) or use to_vec()",
            ));
        }
        Tensor::realize_all(tensors)?;
        Tensor::read_items(tensors, &[])
    }

    /// `items` of realized tensors, with index-error flags deferred by
    /// `deferring_index_checks` read in the same copy.
    pub(crate) fn read_items(tensors: &[Tensor], index_flags: &[Value]) -> Result<Vec<f32>> {
        let values = tensors
            .iter()
            .map(Tensor::value)
            .collect::<Result<Vec<_>>>()?;
        crate::backend::first_elements(&values, index_flags)
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "item",
                &[self.shape()],
                "item() needs exactly one element; reduce first (sum/mean) or use to_vec()",
            ));
        }
        Ok(self.to_vec()?[0])
    }
}

fn arange_len(op: &'static str, start: f64, end: f64, step: f64) -> Result<usize> {
    if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
        return Err(Error::param(
            op,
            format!("step must be finite and non-zero, got start {start}, end {end}, step {step}"),
        ));
    }
    let n = ((end - start) / step).ceil().max(0.0);
    if n > crate::shape::MAX_ELEMENTS as f64 {
        return Err(Error::param(
            op,
            format!("{start}..{end} in steps of {step} has {n:e} elements, more than any memory holds; use a larger step or a shorter range"),
        ));
    }
    Ok(n as usize)
}
