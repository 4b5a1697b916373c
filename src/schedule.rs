//! Realize: order the unrealized part of the graph, run each node once, and
//! free intermediate values as soon as their last consumer has run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::backend::{cpu, Value};
use crate::{Result, Tensor};

/// Nodes reachable from `outputs` that have no value yet, inputs before users.
pub(crate) fn toposort(outputs: &[Tensor], stop_at_realized: bool) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order: deep graphs (long RNN unrolls) must not overflow the stack.
    let mut stack: Vec<(Tensor, bool)> = outputs.iter().rev().map(|t| (t.clone(), false)).collect();
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if (stop_at_realized && t.is_realized()) || !seen.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        for i in t.inputs().iter().rev() {
            if !seen.contains(&i.id()) {
                stack.push((i.clone(), false));
            }
        }
    }
    order
}

pub(crate) fn realize(outputs: &[Tensor]) -> Result<()> {
    let order = toposort(outputs, true);
    if order.is_empty() {
        return Ok(());
    }
    let scheduled: HashSet<u64> = order.iter().map(|t| t.id()).collect();
    let wanted: HashSet<u64> = outputs.iter().map(|t| t.id()).collect();
    // Uses of each scheduled node by scheduled consumers.
    let mut uses: HashMap<u64, usize> = HashMap::new();
    for t in &order {
        for i in t.inputs() {
            if scheduled.contains(&i.id()) {
                *uses.entry(i.id()).or_default() += 1;
            }
        }
    }
    let edges = uses.clone();
    let mut values: HashMap<u64, Value> = HashMap::new();
    for t in &order {
        let inputs = t
            .inputs()
            .iter()
            .map(|i| match i.0.value.get() {
                Some(v) => v.clone(),
                None => values[&i.id()].clone(),
            })
            .collect::<Vec<_>>();
        let started = profile::enabled().then(std::time::Instant::now);
        let v = cpu::exec(t.op(), &inputs, t.shape(), t.dtype())?;
        if let Some(s) = started {
            profile::record(t.op(), s.elapsed());
        }
        drop(inputs);
        for i in t.inputs() {
            if let Some(n) = uses.get_mut(&i.id()) {
                *n -= 1;
                if *n == 0 {
                    values.remove(&i.id());
                }
            }
        }
        // Keep the value on the node when it was asked for, or when something
        // outside this schedule (a user's handle, another graph) still holds it:
        // the references are `order` itself plus one per scheduled use.
        let scheduled_uses = edges.get(&t.id()).copied().unwrap_or(0);
        let held_elsewhere = Arc::strong_count(&t.0) > 1 + scheduled_uses;
        if wanted.contains(&t.id()) || held_elsewhere {
            let _ = t.0.value.set(v.clone());
        }
        if uses.get(&t.id()).copied().unwrap_or(0) > 0 {
            values.insert(t.id(), v);
        }
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
        let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        let e = t
            .get_or_insert_with(HashMap::new)
            .entry(key(op))
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
