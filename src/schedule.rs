//! Realize: order the unrealized part of the graph, run each node once, and
//! free intermediate values as soon as their last consumer has run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::backend::cpu::elementwise::{Instr, Program};
use crate::backend::{cpu, gpu, Value};
use crate::op::Op;
use crate::{DType, Device, Result, Tensor};

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

/// An f32 elementwise node over f32 inputs: can be computed inside a fused pass.
fn fusable(t: &Tensor) -> bool {
    matches!(t.op(), Op::Unary(_) | Op::Binary(_) | Op::Where)
        && t.dtype() == DType::F32
        && t.inputs().iter().all(|i| i.dtype() == DType::F32)
}

/// Largest expression (in ops) that is recomputed in more than one consumer;
/// larger shared subexpressions are materialised once instead.
const MAX_SHARED_INLINE: usize = 4;
/// Largest expression inlined into a single consumer.
const MAX_INLINE: usize = 24;
/// Most distinct inputs of one fused kernel (a GPU kernel binds each one).
const MAX_FUSED_LEAVES: usize = gpu::emit::MAX_LEAVES;

/// `SHADERGRAD_FUSION=0` turns elementwise fusion off (for comparisons and debugging).
fn fusion_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SHADERGRAD_FUSION").map_or(true, |v| v != "0"))
}

/// What the last `realize` on this thread ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealizeStats {
    /// Kernels executed (a fused pass counts once).
    pub kernels: usize,
    /// Of those, fused elementwise passes.
    pub fused: usize,
    /// Elementwise nodes computed inside fused passes instead of on their own.
    pub inlined: usize,
    /// Elements written by the fused passes, summed.
    pub fused_elements: usize,
}

thread_local! {
    static LAST_STATS: std::cell::Cell<RealizeStats> = const { std::cell::Cell::new(RealizeStats { kernels: 0, fused: 0, inlined: 0, fused_elements: 0 }) };
}

/// Statistics of the last `realize` on this thread (tests use it to show fusion).
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
}

/// Build the program computing `root` from non-inlined leaves.
fn build_program(root: &Tensor, inlined: &HashSet<u64>) -> (Program, Vec<Tensor>) {
    let ops = postorder(std::slice::from_ref(root), |t| {
        t.inputs()
            .iter()
            .filter(|i| inlined.contains(&i.id()))
            .cloned()
            .collect()
    });
    let mut leaves: Vec<Tensor> = Vec::new();
    let mut slot_of: HashMap<u64, usize> = HashMap::new();
    for t in &ops {
        for i in t.inputs() {
            if inlined.contains(&i.id()) {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = slot_of.entry(i.id()) {
                e.insert(leaves.len());
                leaves.push(i.clone());
            }
        }
    }
    let n_leaves = leaves.len();
    let mut instrs = Vec::with_capacity(ops.len());
    for (k, t) in ops.iter().enumerate() {
        let args = t.inputs().iter().map(|i| slot_of[&i.id()]).collect();
        instrs.push(Instr {
            op: t.op().clone(),
            args,
        });
        slot_of.insert(t.id(), n_leaves + k);
    }
    (
        Program {
            leaves: n_leaves,
            instrs,
        },
        leaves,
    )
}

pub(crate) fn realize(outputs: &[Tensor]) -> Result<()> {
    let order = toposort(outputs);
    if order.is_empty() {
        LAST_STATS.with(|s| s.set(RealizeStats::default()));
        return Ok(());
    }
    let scheduled: HashSet<u64> = order.iter().map(|t| t.id()).collect();
    let wanted: HashSet<u64> = outputs.iter().map(|t| t.id()).collect();
    // Direct uses of each scheduled node, and whether each user is elementwise.
    let mut users: HashMap<u64, Vec<bool>> = HashMap::new();
    for t in &order {
        for i in t.inputs() {
            if scheduled.contains(&i.id()) {
                users.entry(i.id()).or_default().push(fusable(t));
            }
        }
    }
    // Keep a value on its node when it was asked for, or when something
    // outside this schedule (a user's handle, another graph) still holds it:
    // the references are `order` itself plus one per scheduled use.
    let keep: HashSet<u64> = order
        .iter()
        .filter(|t| {
            let edges = users.get(&t.id()).map_or(0, |u| u.len());
            wanted.contains(&t.id()) || Arc::strong_count(&t.0) > 1 + edges
        })
        .map(|t| t.id())
        .collect();

    // Fusion plan: inline an elementwise node into its users when they are
    // all elementwise and nobody else needs its value; a node shared by
    // several users is recomputed in each only while it is small.
    let mut inlined: HashSet<u64> = HashSet::new();
    let mut size: HashMap<u64, usize> = HashMap::new();
    let mut leaves_of: HashMap<u64, HashSet<u64>> = HashMap::new();
    for t in &order {
        if !fusion_enabled() || !fusable(t) {
            continue;
        }
        // A fused kernel binds each leaf (GPUs allow few bindings): when
        // this node's program would read too many, materialise the inlined
        // input that brings the most.
        let leaf_set = |inlined: &HashSet<u64>| -> HashSet<u64> {
            let mut set = HashSet::new();
            for i in t.inputs() {
                match leaves_of.get(&i.id()) {
                    Some(l) if inlined.contains(&i.id()) => set.extend(l.iter().copied()),
                    _ => {
                        set.insert(i.id());
                    }
                }
            }
            set
        };
        let mut set = leaf_set(&inlined);
        while set.len() > MAX_FUSED_LEAVES {
            let victim = t
                .inputs()
                .iter()
                .filter(|i| inlined.contains(&i.id()))
                .max_by_key(|i| leaves_of.get(&i.id()).map_or(0, |l| l.len()));
            match victim {
                Some(v) => {
                    inlined.remove(&v.id());
                }
                None => break,
            }
            set = leaf_set(&inlined);
        }
        leaves_of.insert(t.id(), set);
        let s = 1 + t
            .inputs()
            .iter()
            .filter(|i| inlined.contains(&i.id()))
            .map(|i| size[&i.id()])
            .sum::<usize>();
        size.insert(t.id(), s);
        let u = users.get(&t.id()).map_or(&[][..], |v| v.as_slice());
        let limit = if u.len() == 1 {
            MAX_INLINE
        } else {
            MAX_SHARED_INLINE
        };
        if !u.is_empty() && u.iter().all(|&f| f) && s <= limit && !keep.contains(&t.id()) {
            inlined.insert(t.id());
        }
    }
    let steps: Vec<Step> = order
        .iter()
        .map(|t| {
            if inlined.contains(&t.id()) {
                Step::Inlined
            } else if fusable(t) && t.inputs().iter().any(|i| inlined.contains(&i.id())) {
                let (program, leaves) = build_program(t, &inlined);
                Step::Fused { program, leaves }
            } else {
                Step::Kernel
            }
        })
        .collect();
    let step_inputs = |t: &Tensor, step: &Step| -> Vec<Tensor> {
        match step {
            Step::Fused { leaves, .. } => leaves.clone(),
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

    let stats = RealizeStats {
        kernels: steps.iter().filter(|s| !matches!(s, Step::Inlined)).count(),
        fused: steps
            .iter()
            .filter(|s| matches!(s, Step::Fused { .. }))
            .count(),
        inlined: inlined.len(),
        fused_elements: order
            .iter()
            .zip(&steps)
            .filter(|(_, s)| matches!(s, Step::Fused { .. }))
            .map(|(t, _)| t.numel())
            .sum(),
    };
    LAST_STATS.with(|s| s.set(stats));
    let mut values: HashMap<u64, Value> = HashMap::new();
    // The open GPU recording (device id, recorder): one submit per device per realize.
    let mut gpu: Option<(usize, gpu::Recorder)> = None;
    for (t, step) in order.iter().zip(&steps) {
        if matches!(step, Step::Inlined) {
            continue;
        }
        let ins = step_inputs(t, step);
        let inputs = ins
            .iter()
            .map(|i| match i.0.value.get() {
                Some(v) => v.clone(),
                None => values[&i.id()].clone(),
            })
            .collect::<Vec<_>>();
        let started = profile::enabled().then(std::time::Instant::now);
        // A cpu step reading a value this realize computed on a GPU needs
        // the recorded work submitted first.
        if *t.device() == Device::Cpu && inputs.iter().any(Value::is_on_gpu) {
            if let Some((_, rec)) = gpu.take() {
                rec.submit()?;
            }
        }
        let v = match t.device() {
            Device::Cpu => match step {
                Step::Fused { program, .. } => {
                    let host = inputs
                        .iter()
                        .map(Value::to_host)
                        .collect::<Result<Vec<_>>>()?;
                    cpu::elementwise::fused(program, &host, t.shape())
                }
                _ => cpu::exec(t.op(), &inputs, t.shape(), t.dtype())?,
            },
            Device::Gpu(id) => {
                if gpu.as_ref().is_some_and(|(open, _)| open != id) {
                    if let Some((_, rec)) = gpu.take() {
                        rec.submit()?;
                    }
                }
                if gpu.is_none() {
                    gpu = Some((*id, gpu::Recorder::new(gpu::context(*id)?)?));
                }
                let (_, rec) = gpu.as_mut().expect("opened above");
                match step {
                    Step::Fused { program, .. } => {
                        gpu::exec::fused(rec, program, &inputs, t.shape())?
                    }
                    _ => gpu::exec(rec, t.op(), &inputs, t.shape(), t.dtype())?,
                }
            }
        };
        if let Some(s) = started {
            match step {
                Step::Fused { .. } => profile::record_name("fused elementwise", s.elapsed()),
                _ => profile::record(t.op(), s.elapsed()),
            }
        }
        drop(inputs);
        for i in &ins {
            if let Some(n) = uses.get_mut(&i.id()) {
                *n -= 1;
                if *n == 0 {
                    values.remove(&i.id());
                }
            }
        }
        if keep.contains(&t.id()) {
            let _ = t.0.value.set(v.clone());
        }
        if uses.get(&t.id()).copied().unwrap_or(0) > 0 {
            values.insert(t.id(), v);
        }
    }
    drop(values);
    if let Some((_, rec)) = gpu {
        rec.submit()?;
    }
    Ok(())
}

/// Time spent per op kind, when `SHADERGRAD_PROFILE` is set.
pub mod profile {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use crate::op::Op;

    static TABLE: Mutex<Option<HashMap<String, (usize, Duration)>>> = Mutex::new(None);

    pub fn enabled() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| std::env::var_os("SHADERGRAD_PROFILE").is_some())
    }

    fn key(op: &Op) -> String {
        match op {
            Op::Unary(u) => format!("unary {u:?}"),
            Op::Binary(b) => format!("binary {b:?}"),
            Op::Reduce { op, .. } => format!("reduce {op:?}"),
            Op::Pool2d { kind, .. } => format!("pool2d {kind:?}"),
            Op::Pool2dBackward { kind, .. } => format!("pool2d_backward {kind:?}"),
            o => o.name().to_string(),
        }
    }

    pub fn record(op: &Op, d: Duration) {
        record_name(&key(op), d);
    }

    pub fn record_name(name: &str, d: Duration) {
        let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        let e = t
            .get_or_insert_with(HashMap::new)
            .entry(name.to_string())
            .or_default();
        e.0 += 1;
        e.1 += d;
    }

    /// A table of calls and time per op kind, largest first (empty when off).
    pub fn report() -> String {
        let t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        let Some(map) = t.as_ref() else {
            return String::new();
        };
        let mut rows: Vec<_> = map.iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
        let total: Duration = rows.iter().map(|r| r.1 .1).sum();
        let mut s = format!("{:<28} {:>9} {:>10} {:>6}\n", "op", "calls", "ms", "%");
        for (k, (n, d)) in rows {
            s += &format!(
                "{k:<28} {n:>9} {:>10.1} {:>6.1}\n",
                d.as_secs_f64() * 1e3,
                100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-12)
            );
        }
        s
    }
}
