//! Realize: order the unrealized part of the graph, plan elementwise
//! fusion, run each node once through its device's backend session, free
//! intermediate values after their last use, and cache what is still
//! wanted once every session has finished without error.

pub(crate) mod anomaly;
pub(crate) mod fusion;
pub mod profile;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::backend::{self, Session, Storage, Value};
use crate::op::Op;
use crate::shape::checked_numel;
use crate::{DType, Device, Error, Result, Tensor};
use fusion::Program;

/// Nodes reachable from `roots` by following `children`, each once, inputs
/// before users. Iterative: deep graphs (long RNN unrolls) must not overflow
/// the stack.
pub(crate) fn postorder(
    roots: &[Tensor],
    children: impl Fn(&Tensor) -> Vec<Tensor>,
) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<(Tensor, bool)> = roots.iter().rev().map(|t| (t.clone(), false)).collect();
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        for i in children(&t).into_iter().rev() {
            if !seen.contains(&i.id()) {
                stack.push((i, false));
            }
        }
    }
    order
}

/// Nodes reachable from `outputs` that have no value yet, inputs before users.
fn toposort(outputs: &[Tensor]) -> Vec<Tensor> {
    let pending: Vec<Tensor> = outputs
        .iter()
        .filter(|t| !t.is_realized())
        .cloned()
        .collect();
    postorder(&pending, |t| {
        t.inputs()
            .iter()
            .filter(|i| !i.is_realized())
            .cloned()
            .collect()
    })
}

/// Nodes of `order` that compute what an earlier node already does (the
/// same op on the same inputs, seen through `detach`), each mapped to that
/// earlier node, whose value they take instead: `log_softmax` and `argmax`
/// of the same logits both take each row's maximum, say. Only ops that
/// cost a kernel: elementwise nodes are left to fusion, views are free,
/// leaves and multi-output nodes keep their own kernels.
fn common_subexpressions(order: &[Tensor]) -> HashMap<u64, Tensor> {
    /// What a value is: a realized buffer seen through a layout (`detach`
    /// of a realized tensor is a new node sharing its value), or what the
    /// first node computing it computes.
    #[derive(Clone, PartialEq, Eq, Hash)]
    enum Computes {
        Node(u64),
        Value(usize, crate::shape::Layout),
    }
    type Key = (
        std::mem::Discriminant<Op>,
        Vec<Computes>,
        Vec<usize>,
        DType,
        Device,
    );
    let mut canonical: HashMap<u64, Computes> = HashMap::new();
    // Nodes by everything but the op's data, which is compared on a match.
    let mut first: HashMap<Key, Vec<Tensor>> = HashMap::new();
    let mut same = HashMap::new();
    for t in order {
        let canon = |i: &Tensor| match (canonical.get(&i.id()), i.0.value.get()) {
            (Some(k), _) => k.clone(),
            (None, Some(v)) => Computes::Value(Arc::as_ptr(&v.storage) as usize, v.layout.clone()),
            (None, None) => Computes::Node(i.id()),
        };
        // Ops that cost a kernel (views cost nothing to repeat).
        let pure = matches!(
            t.op(),
            Op::Reduce { .. }
                | Op::Pad(_)
                | Op::Contiguous
                | Op::Cast(_)
                | Op::MatMul
                | Op::Conv2d(_)
                | Op::Conv2dBackwardData(_)
                | Op::Conv2dBackwardFilter(_)
                | Op::Gather { .. }
        );
        if matches!(t.op(), Op::Detach) {
            canonical.insert(t.id(), canon(&t.inputs()[0]));
            continue;
        }
        if !pure {
            continue;
        }
        let key: Key = (
            std::mem::discriminant(t.op()),
            t.inputs().iter().map(canon).collect(),
            t.shape().to_vec(),
            t.dtype(),
            *t.device(),
        );
        let bucket = first.entry(key).or_default();
        match bucket.iter().find(|f| f.op() == t.op()) {
            Some(f) => {
                canonical.insert(t.id(), Computes::Node(f.id()));
                same.insert(t.id(), f.clone());
            }
            None => bucket.push(t.clone()),
        }
    }
    same
}

/// What the last `realize` on this thread ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealizeStats {
    /// Kernels executed (a fused pass counts once).
    pub kernels: usize,
    /// Of those, fused passes (elementwise chains, and reductions of one).
    pub fused: usize,
    /// Elementwise nodes computed inside fused passes instead of on their own.
    pub inlined: usize,
    /// Elements written by the fused passes, summed.
    pub fused_elements: usize,
    /// GPU kernel dispatches recorded (views and constants cost none).
    pub dispatches: usize,
    /// Device sessions finished (one per device, more when a transfer
    /// between devices has to wait for results).
    pub sessions: usize,
    /// The most bytes of results computed by this realize that were alive
    /// at once (a value counts from the step that makes it to its last
    /// use; inputs realized earlier are not counted). What a buffer pool
    /// needs for the schedule, on any backend.
    pub peak_bytes: usize,
    /// Host nanoseconds inside the backends' kernel calls: on a GPU, recording
    /// the dispatches (they run after the submit), on the cpu the
    /// computing itself. Divided by `dispatches`: the host cost of a launch.
    pub record_ns: u64,
    /// Times this thread blocked until a device finished its work (a
    /// read-back, an error flag). Counted where they happen, so only the
    /// totals ([`total_realize_stats`]) see waits outside a realize, such
    /// as `item()`.
    pub waits: usize,
}

const NO_STATS: RealizeStats = RealizeStats {
    kernels: 0,
    fused: 0,
    inlined: 0,
    fused_elements: 0,
    dispatches: 0,
    sessions: 0,
    peak_bytes: 0,
    record_ns: 0,
    waits: 0,
};

thread_local! {
    static LAST_STATS: std::cell::Cell<RealizeStats> = const { std::cell::Cell::new(NO_STATS) };
    static TOTAL_STATS: std::cell::Cell<RealizeStats> = const { std::cell::Cell::new(NO_STATS) };
}

impl RealizeStats {
    /// What happened between `earlier` (a [`total_realize_stats`]) and
    /// this total; `peak_bytes` stays the total's (the largest so far).
    pub fn since(&self, earlier: &RealizeStats) -> RealizeStats {
        RealizeStats {
            kernels: self.kernels - earlier.kernels,
            fused: self.fused - earlier.fused,
            inlined: self.inlined - earlier.inlined,
            fused_elements: self.fused_elements - earlier.fused_elements,
            dispatches: self.dispatches - earlier.dispatches,
            sessions: self.sessions - earlier.sessions,
            peak_bytes: self.peak_bytes,
            record_ns: self.record_ns - earlier.record_ns,
            waits: self.waits - earlier.waits,
        }
    }

    fn add(&mut self, other: &RealizeStats) {
        self.kernels += other.kernels;
        self.fused += other.fused;
        self.inlined += other.inlined;
        self.fused_elements += other.fused_elements;
        self.dispatches += other.dispatches;
        self.sessions += other.sessions;
        self.peak_bytes = self.peak_bytes.max(other.peak_bytes);
        self.record_ns += other.record_ns;
        self.waits += other.waits;
    }
}

/// Every realize on this thread so far, summed (the peak is the largest):
/// a step of several realizes is `total_realize_stats().since(&before)`.
pub fn total_realize_stats() -> RealizeStats {
    TOTAL_STATS.with(|s| s.get())
}

/// A blocking wait for a device on this thread (see `RealizeStats::waits`).
pub(crate) fn count_wait() {
    TOTAL_STATS.with(|s| {
        let mut t = s.get();
        t.waits += 1;
        s.set(t);
    });
}

/// Statistics of the last `realize` on this thread that had anything to
/// compute (tests use it to show fusion and count dispatches).
pub fn last_realize_stats() -> RealizeStats {
    LAST_STATS.with(|s| s.get())
}

/// How a scheduled node runs.
enum Step {
    /// Computed inside its consumers' fused passes; never materialised.
    Inlined,
    /// Its own kernel on its direct inputs.
    Kernel,
    /// One fused pass: `program` over `leaves`.
    Fused {
        program: Program,
        leaves: Vec<Tensor>,
    },
    /// A reduction of its input's fused `program` over `leaves`, in one pass.
    FusedReduce {
        program: Program,
        leaves: Vec<Tensor>,
    },
    /// Output `i` of its multi-output input.
    Project(usize),
    /// The value of another node: an earlier one that computes the same
    /// thing, or the output whose epilogue this fused pass became.
    Same(Tensor),
    /// Its own kernel, which adds `bias` (one value per channel) to its
    /// first output and applies relu when `relu` as it stores it
    /// (`Session::epilogue`): the fused pass that did so takes that output.
    Epilogue { bias: Tensor, relu: bool },
    /// Its input, moved to this node's device.
    Transfer,
}

/// The sessions open on each device during one realize, in opening order.
#[derive(Default)]
struct Sessions {
    open: Vec<(Device, Box<dyn Session>)>,
    dispatches: usize,
    finished: usize,
}

impl Sessions {
    fn get(&mut self, device: Device) -> Result<&mut Box<dyn Session>> {
        let pos = match self.open.iter().position(|(d, _)| *d == device) {
            Some(p) => p,
            None => {
                self.open.push((device, backend::begin(device)?));
                self.open.len() - 1
            }
        };
        Ok(&mut self.open[pos].1)
    }

    /// Finish `device`'s session, so its results can be read.
    fn finish(&mut self, device: Device) -> Result<()> {
        if let Some(pos) = self.open.iter().position(|(d, _)| *d == device) {
            let (_, s) = self.open.remove(pos);
            self.dispatches += s.finish()?;
            self.finished += 1;
        }
        Ok(())
    }

    fn finish_all(&mut self) -> Result<()> {
        // Every session finishes (buffers go back to their pools) even
        // after one fails; the first error is reported.
        let mut first = Ok(());
        for (_, s) in self.open.drain(..) {
            match s.finish() {
                Ok(d) => self.dispatches += d,
                Err(e) if first.is_ok() => first = Err(e),
                Err(_) => {}
            }
            self.finished += 1;
        }
        first
    }
}

/// Shapes too large for any memory, and inputs from two devices, are
/// errors before anything runs.
fn check(order: &[Tensor]) -> Result<()> {
    for t in order {
        checked_numel(t.op().name(), t.shape())?;
        if matches!(t.op(), Op::ToDevice) {
            continue;
        }
        if let Some(other) = t.inputs().iter().find(|i| i.device() != t.device()) {
            return Err(Error::param(
                t.op().name(),
                format!(
                    "an input lives on {} but the op runs on {}; move it with .to(device)",
                    other.device(),
                    t.device()
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn realize(outputs: &[Tensor]) -> Result<()> {
    let order = toposort(outputs);
    if order.is_empty() {
        return Ok(());
    }
    check(&order)?;
    let scheduled: HashSet<u64> = order.iter().map(|t| t.id()).collect();
    let wanted: HashSet<u64> = outputs.iter().map(|t| t.id()).collect();
    // Direct uses of each scheduled node, and whether each user is elementwise.
    let mut users: HashMap<u64, Vec<bool>> = HashMap::new();
    for t in &order {
        for i in t.inputs() {
            if scheduled.contains(&i.id()) {
                users
                    .entry(i.id())
                    .or_default()
                    .push(fusion::fusable(t) || fusion::reduces_fused_input(t));
            }
        }
    }
    // Keep a value on its node when it was asked for, or when something
    // outside this schedule (a user's handle, another graph) still holds it:
    // the references are `order` itself plus one per scheduled use. A
    // multi-output node is never kept: its projections are.
    let keep: HashSet<u64> = order
        .iter()
        .filter(|t| {
            let edges = users.get(&t.id()).map_or(0, |u| u.len());
            t.op().outputs() == 1
                && (wanted.contains(&t.id()) || Arc::strong_count(&t.0) > 1 + edges)
        })
        .map(|t| t.id())
        .collect();
    // Views a fused pass reads through, so that what they show is computed
    // inside the pass: a broadcast with one user that takes a program (at
    // that user's shape), a detach whose users all take one or are read
    // through themselves (an accuracy count of `logits.detach()`).
    let mut user_nodes: HashMap<u64, Vec<&Tensor>> = HashMap::new();
    for t in &order {
        for i in t.inputs() {
            user_nodes.entry(i.id()).or_default().push(t);
        }
    }
    let base = |t: &Tensor| fusion::fusable(t) || fusion::reduces_fused_input(t);
    let mut through: HashSet<u64> = HashSet::new();
    for t in order.iter().rev() {
        let Some(us) = user_nodes.get(&t.id()) else {
            continue;
        };
        let view = match t.op() {
            Op::Expand => us.len() == 1,
            Op::Detach => true,
            _ => false,
        };
        if view
            && !keep.contains(&t.id())
            && us.iter().all(|u| base(u) || through.contains(&u.id()))
        {
            through.insert(t.id());
        }
    }
    if !through.is_empty() {
        // A node read through counts as one use per use of its own, so a
        // large program is not copied into many passes unnoticed.
        fn fanout(t: &Tensor, users: &HashMap<u64, Vec<&Tensor>>, through: &HashSet<u64>) -> usize {
            if !through.contains(&t.id()) {
                return 1;
            }
            users
                .get(&t.id())
                .map_or(1, |us| us.iter().map(|u| fanout(u, users, through)).sum())
        }
        for u in users.values_mut() {
            u.clear();
        }
        for t in &order {
            let absorbs = base(t) || through.contains(&t.id());
            let n = fanout(t, &user_nodes, &through);
            for i in t.inputs() {
                if let Some(u) = users.get_mut(&i.id()) {
                    u.extend(std::iter::repeat_n(absorbs, n));
                }
            }
        }
    }
    // Anomaly detection runs op by op, so that each op's result is seen.
    let inlined = if anomaly::detect_anomaly() {
        HashSet::new()
    } else {
        fusion::plan(&order, &users, &keep, &through)?
    };
    let same = common_subexpressions(&order);
    let steps: Vec<Step> = order
        .iter()
        .map(|t| match t.op() {
            _ if inlined.contains(&t.id()) => Step::Inlined,
            _ if same
                .get(&t.id())
                .is_some_and(|c| !inlined.contains(&c.id())) =>
            {
                Step::Same(same[&t.id()].clone())
            }
            Op::Output(i) => Step::Project(*i),
            Op::ToDevice => Step::Transfer,
            _ if fusion::fusable(t) && t.inputs().iter().any(|i| inlined.contains(&i.id())) => {
                let (program, leaves) = fusion::build_program(t, &inlined);
                Step::Fused { program, leaves }
            }
            Op::Reduce { .. } if inlined.contains(&t.inputs()[0].id()) => {
                let (program, leaves) = fusion::build_program(&t.inputs()[0], &inlined);
                Step::FusedReduce { program, leaves }
            }
            _ => Step::Kernel,
        })
        .collect();
    let (order, steps) = epilogues(order, steps, &users, &keep);
    let step_inputs = |t: &Tensor, step: &Step| -> Vec<Tensor> {
        match step {
            Step::Fused { leaves, .. } | Step::FusedReduce { leaves, .. } => leaves.clone(),
            Step::Epilogue { bias, .. } => {
                let mut ins = t.inputs().to_vec();
                ins.push(bias.clone());
                ins
            }
            Step::Same(of) => vec![of.clone()],
            _ => t.inputs().to_vec(),
        }
    };
    // Remaining uses of each value by the steps that actually run.
    let mut uses: HashMap<u64, usize> = HashMap::new();
    for (t, step) in order.iter().zip(&steps) {
        if matches!(step, Step::Inlined) {
            continue;
        }
        for i in step_inputs(t, step) {
            if scheduled.contains(&i.id()) {
                *uses.entry(i.id()).or_default() += 1;
            }
        }
    }

    let mut stats = RealizeStats {
        kernels: steps
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Step::Kernel
                        | Step::Fused { .. }
                        | Step::FusedReduce { .. }
                        | Step::Epilogue { .. }
                )
            })
            .count(),
        fused: steps
            .iter()
            .filter(|s| matches!(s, Step::Fused { .. } | Step::FusedReduce { .. }))
            .count(),
        inlined: inlined.len(),
        fused_elements: order
            .iter()
            .zip(&steps)
            .filter(|(_, s)| matches!(s, Step::Fused { .. }))
            .map(|(t, _)| t.numel())
            .sum(),
        ..Default::default()
    };
    let mut sessions = Sessions::default();
    let run = run_steps(
        &order,
        &steps,
        &step_inputs,
        &mut uses,
        &keep,
        &mut sessions,
        &mut stats,
    );
    // Finish what is open whatever happened, so buffers go back to their
    // pools; cache values only when every session succeeded, so a failed
    // submit leaves nothing behind that a later read would return.
    let finished = sessions.finish_all();
    stats.dispatches = sessions.dispatches;
    stats.sessions = sessions.finished;
    LAST_STATS.with(|s| s.set(stats));
    TOTAL_STATS.with(|s| {
        let mut total = s.get();
        total.add(&stats);
        s.set(total);
    });
    let to_cache = run?;
    finished?;
    for (t, v) in to_cache {
        let _ = t.0.value.set(v);
    }
    Ok(())
}

/// Bytes of the distinct storages the schedule holds (views share theirs),
/// kept up to date as values come and go, so the hot loop never rescans.
#[derive(Default)]
struct LiveBytes {
    holders: HashMap<*const Storage, usize>,
    total: usize,
}

impl LiveBytes {
    fn hold(&mut self, values: &[Value]) {
        for v in values {
            let n = self.holders.entry(Arc::as_ptr(&v.storage)).or_default();
            if *n == 0 {
                self.total += v.storage.len() * 4;
            }
            *n += 1;
        }
    }

    fn release(&mut self, values: &[Value]) {
        for v in values {
            let key = Arc::as_ptr(&v.storage);
            if let Some(n) = self.holders.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.holders.remove(&key);
                    self.total -= v.storage.len() * 4;
                }
            }
        }
    }

    /// The total if `values` were held too.
    fn with(&self, values: &[Value]) -> usize {
        let mut seen = HashSet::new();
        self.total
            + values
                .iter()
                .filter(|v| {
                    let key = Arc::as_ptr(&v.storage);
                    !self.holders.contains_key(&key) && seen.insert(key)
                })
                .map(|v| v.storage.len() * 4)
                .sum::<usize>()
    }
}

/// A fused pass's leaf seen at the pass's `shape`: leaves below a
/// broadcast the pass reads through have the broadcast's input shape.
fn broadcast(v: Value, shape: &[usize]) -> Result<Value> {
    if v.layout.shape == shape {
        return Ok(v);
    }
    let l = &v.layout;
    if l.shape.len() != shape.len() || l.shape.iter().zip(shape).any(|(&a, &b)| a != b && a != 1) {
        return Err(Error::param(
            "fused elementwise",
            format!(
                "internal: a leaf of shape {:?} does not broadcast to {shape:?}",
                l.shape
            ),
        ));
    }
    let strides = l
        .strides
        .iter()
        .zip(&l.shape)
        .zip(shape)
        .map(|((&st, &a), &b)| if a == b { st } else { 0 })
        .collect();
    Ok(Value {
        storage: v.storage.clone(),
        layout: crate::shape::Layout {
            shape: shape.to_vec(),
            strides,
            offset: l.offset,
        },
    })
}

/// Fused passes that add a bias along the channel axis of a matmul's,
/// forward convolution's or max pooling's output, and maybe apply relu,
/// where nothing else uses that output: the kernel applies them as it
/// stores (`Step::Epilogue`) and the pass takes its output (`Step::Same`),
/// so the bare product is never stored. A layer's `relu(x @ w + b)` is one
/// kernel; training needs nothing of the bare product (relu's gradient
/// masks by the output, a bias's and the product's are the upstream
/// gradient itself). The bias is computed before the kernel: where it
/// comes later in `order` but reads only realized values (a parameter's
/// view), it moves to just before the kernel.
fn epilogues(
    mut order: Vec<Tensor>,
    mut steps: Vec<Step>,
    users: &HashMap<u64, Vec<bool>>,
    keep: &HashSet<u64>,
) -> (Vec<Tensor>, Vec<Step>) {
    let positions = |order: &[Tensor]| -> HashMap<u64, usize> {
        order.iter().enumerate().map(|(k, t)| (t.id(), k)).collect()
    };
    let mut index = positions(&order);
    for e in 0..order.len() {
        let Step::Fused { program, leaves } = &steps[e] else {
            continue;
        };
        let Some(relu) = fusion::bias_epilogue(program) else {
            continue;
        };
        let shape = order[e].shape().to_vec();
        // One value per channel: the last axis of a matmul, axis 1 otherwise.
        let per_channel = |bias: &Tensor, axis: usize| {
            bias.shape().len() == shape.len()
                && bias
                    .shape()
                    .iter()
                    .enumerate()
                    .all(|(d, &n)| n == if d == axis { shape[d] } else { 1 })
        };
        let only_user = |t: &Tensor| {
            users.get(&t.id()).is_some_and(|u| u.len() == 1) && !keep.contains(&t.id())
        };
        // The kernel computing a leaf, when the leaf is an output that can
        // take the epilogue: (kernel, channel axis).
        let producer = |leaf: &Tensor| -> Option<(Tensor, usize)> {
            let &k = index.get(&leaf.id())?;
            if !only_user(leaf) || leaf.shape() != shape || leaf.dtype() != DType::F32 {
                return None;
            }
            let (kernel, axis) = match (&steps[k], leaf.op()) {
                (Step::Kernel, Op::MatMul) if shape.len() >= 2 => (leaf.clone(), shape.len() - 1),
                (Step::Kernel, Op::Conv2d(_)) => (leaf.clone(), 1),
                (Step::Project(0), Op::Output(0))
                    if matches!(leaf.inputs()[0].op(), Op::MaxPool2d(_)) =>
                {
                    (leaf.inputs()[0].clone(), 1)
                }
                _ => return None,
            };
            let &p = index.get(&kernel.id())?;
            // An empty reduction or window leaves the output to the bias
            // alone; a node that takes the kernel's value as its own (the
            // same product elsewhere) must not see the epilogue.
            let fits = matches!(steps[p], Step::Kernel)
                && kernel.inputs().iter().all(|i| i.numel() > 0)
                && !steps
                    .iter()
                    .any(|s| matches!(s, Step::Same(of) if of.id() == kernel.id()));
            fits.then_some((kernel, axis))
        };
        let pick = |a: &Tensor, b: &Tensor| {
            let (kernel, axis) = producer(a)?;
            (per_channel(b, axis) && b.dtype() == DType::F32 && b.device() == a.device())
                .then(|| (a.clone(), kernel, b.clone()))
        };
        let Some((output, kernel, bias)) = (match leaves.as_slice() {
            [a, b] => pick(a, b).or_else(|| pick(b, a)),
            _ => None,
        }) else {
            continue;
        };
        let pass = order[e].id();
        let at = index[&kernel.id()];
        match index.get(&bias.id()) {
            Some(&b) if b > at => {
                // Computed later: movable only if it reads nothing scheduled.
                if bias.inputs().iter().any(|i| index.contains_key(&i.id())) {
                    continue;
                }
                let t = order.remove(b);
                let s = steps.remove(b);
                order.insert(at, t);
                steps.insert(at, s);
                index = positions(&order);
            }
            _ => {}
        }
        let (e, k) = (index[&pass], index[&kernel.id()]);
        steps[k] = Step::Epilogue { bias, relu };
        steps[e] = Step::Same(output);
    }
    (order, steps)
}

/// Run every step; returns the values to cache on their nodes.
fn run_steps(
    order: &[Tensor],
    steps: &[Step],
    step_inputs: &dyn Fn(&Tensor, &Step) -> Vec<Tensor>,
    uses: &mut HashMap<u64, usize>,
    keep: &HashSet<u64>,
    sessions: &mut Sessions,
    stats: &mut RealizeStats,
) -> Result<Vec<(Tensor, Value)>> {
    let mut values: HashMap<u64, Vec<Value>> = HashMap::new();
    let mut live = LiveBytes::default();
    let mut to_cache = Vec::new();
    for (t, step) in order.iter().zip(steps) {
        if matches!(step, Step::Inlined) {
            continue;
        }
        let ins = step_inputs(t, step);
        let input = |i: &Tensor, which: usize| -> Result<Value> {
            match i.0.value.get() {
                Some(v) => Ok(v.clone()),
                None => values
                    .get(&i.id())
                    .and_then(|vs| vs.get(which))
                    .cloned()
                    .ok_or_else(|| {
                        Error::param(
                            "realize",
                            format!("internal: {i:?} has no value when {t:?} needs it"),
                        )
                    }),
            }
        };
        let started = profile::enabled().then(std::time::Instant::now);
        let outs: Vec<Value> = match step {
            Step::Inlined => unreachable!("skipped above"),
            Step::Project(k) => vec![input(&ins[0], *k)?],
            Step::Same(_) => vec![input(&ins[0], 0)?],
            Step::Transfer => {
                let src = input(&ins[0], 0)?;
                // The source's device must have run what produced it.
                sessions.finish(*ins[0].device())?;
                let host = src.to_host()?;
                vec![sessions.get(*t.device())?.adopt(host)?]
            }
            Step::Fused { program, .. } => {
                let leaves = ins
                    .iter()
                    .map(|i| input(i, 0).and_then(|v| broadcast(v, t.shape())))
                    .collect::<Result<Vec<_>>>()?;
                let session = sessions.get(*t.device())?;
                let recording = std::time::Instant::now();
                let out = session.fused(program, &leaves, t.shape())?;
                stats.record_ns += recording.elapsed().as_nanos() as u64;
                vec![out]
            }
            Step::FusedReduce { program, leaves } => {
                let Op::Reduce { op, axes } = t.op() else {
                    unreachable!("planned for reductions only")
                };
                let in_shape = t.inputs()[0].shape();
                let leaves = leaves
                    .iter()
                    .map(|i| input(i, 0).and_then(|v| broadcast(v, in_shape)))
                    .collect::<Result<Vec<_>>>()?;
                let session = sessions.get(*t.device())?;
                let recording = std::time::Instant::now();
                let out = session.fused_reduce(program, &leaves, in_shape, *op, axes)?;
                stats.record_ns += recording.elapsed().as_nanos() as u64;
                vec![out]
            }
            Step::Epilogue { relu, .. } => {
                let inputs = ins
                    .iter()
                    .map(|i| input(i, 0))
                    .collect::<Result<Vec<_>>>()?;
                let (bias, operands) = inputs.split_last().ok_or_else(|| {
                    Error::param("realize", "internal: an epilogue without its bias")
                })?;
                let session = sessions.get(*t.device())?;
                let recording = std::time::Instant::now();
                let outs = session.epilogue(t.op(), operands, bias, *relu, t.shape())?;
                stats.record_ns += recording.elapsed().as_nanos() as u64;
                outs
            }
            Step::Kernel => {
                let inputs = ins
                    .iter()
                    .map(|i| input(i, 0))
                    .collect::<Result<Vec<_>>>()?;
                let session = sessions.get(*t.device())?;
                let recording = std::time::Instant::now();
                let outs = session.exec(t.op(), &inputs, t.shape(), t.dtype())?;
                stats.record_ns += recording.elapsed().as_nanos() as u64;
                if anomaly::detect_anomaly() && anomaly::computes(t.op()) {
                    // Reading a result needs its device's work submitted.
                    sessions.finish(*t.device())?;
                    anomaly::check(t, &ins, &inputs, &outs)?;
                }
                if outs.len() != t.op().outputs() {
                    return Err(Error::param(
                        t.op().name(),
                        format!(
                            "internal: {} outputs where the op has {}",
                            outs.len(),
                            t.op().outputs()
                        ),
                    ));
                }
                outs
            }
        };
        if let Some(s) = started {
            let by_shape = profile::by_shape();
            let kind = match step {
                Step::Fused { program, .. } if by_shape => {
                    format!("fused elementwise ({} ops)", program.instrs.len())
                }
                Step::Fused { .. } => "fused elementwise".to_string(),
                Step::FusedReduce { program, .. } if by_shape => {
                    format!(
                        "fused {} ({} ops)",
                        profile::key(t.op()),
                        program.instrs.len()
                    )
                }
                Step::FusedReduce { .. } => format!("fused {}", profile::key(t.op())),
                Step::Epilogue { relu, .. } => format!(
                    "{} + bias{}",
                    profile::key(t.op()),
                    if *relu { " + relu" } else { "" }
                ),
                _ => profile::key(t.op()),
            };
            let name = if by_shape {
                format!("{kind} {:?}", t.shape())
            } else {
                kind
            };
            profile::record_name(&name, s.elapsed());
        }
        // Inputs are freed after the step, so its outputs and inputs peak together.
        stats.peak_bytes = stats.peak_bytes.max(live.with(&outs));
        for i in &ins {
            if let Some(n) = uses.get_mut(&i.id()) {
                *n -= 1;
                if *n == 0 {
                    if let Some(vs) = values.remove(&i.id()) {
                        live.release(&vs);
                    }
                }
            }
        }
        if keep.contains(&t.id()) {
            live.hold(&outs[..1]);
            to_cache.push((t.clone(), outs[0].clone()));
        }
        if uses.get(&t.id()).copied().unwrap_or(0) > 0 {
            live.hold(&outs);
            values.insert(t.id(), outs);
        }
    }
    Ok(to_cache)
}
