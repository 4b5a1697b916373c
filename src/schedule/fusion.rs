//! Elementwise fusion: the IR every backend compiles (the cpu interpreter,
//! the WGSL emitter) and the plan that decides which nodes are computed
//! inside their users' passes instead of on their own.

use std::collections::{HashMap, HashSet};

use crate::backend::Limits;
use crate::op::Op;
use crate::{DType, Device, Result, Tensor};

/// One instruction of a fused elementwise program. Slots `0..leaves` hold
/// the inputs; instruction `i` writes slot `leaves + i` from earlier slots.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Instr {
    pub op: Op,
    pub args: Vec<usize>,
}

/// A tree of elementwise ops evaluated in one pass: no intermediate result
/// is ever materialised. The last instruction's slot is the output.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Program {
    pub leaves: usize,
    pub instrs: Vec<Instr>,
}

impl Program {
    /// `op` alone over `n` leaves.
    pub(crate) fn single(op: Op, n: usize) -> Program {
        Program {
            leaves: n,
            instrs: vec![Instr {
                op,
                args: (0..n).collect(),
            }],
        }
    }
}

/// An f32 elementwise node over f32 inputs: can be computed inside a fused pass.
pub(crate) fn fusable(t: &Tensor) -> bool {
    matches!(t.op(), Op::Unary(_) | Op::Binary(_) | Op::Where)
        && t.dtype() == DType::F32
        && t.inputs().iter().all(|i| i.dtype() == DType::F32)
}

/// Largest expression (in ops) that is recomputed in more than one consumer;
/// larger shared subexpressions are materialised once instead.
const MAX_SHARED_INLINE: usize = 4;
/// Largest expression inlined into a single consumer.
const MAX_INLINE: usize = 24;

/// `SHADERGRAD_FUSION=0` turns elementwise fusion off (for comparisons and debugging).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SHADERGRAD_FUSION").map_or(true, |v| v != "0"))
}

/// The nodes of `order` to compute inside their users' passes: an
/// elementwise node whose users are all elementwise and whose value nobody
/// else needs (`keep`); one shared by several users only while it is
/// small. `users[id]` says, per direct use, whether the user is fusable.
/// A program never reads more leaves than its device's backend allows.
pub(crate) fn plan(
    order: &[Tensor],
    users: &HashMap<u64, Vec<bool>>,
    keep: &HashSet<u64>,
) -> Result<HashSet<u64>> {
    let mut inlined: HashSet<u64> = HashSet::new();
    if !enabled() {
        return Ok(inlined);
    }
    let mut limits: HashMap<Device, Limits> = HashMap::new();
    let mut size: HashMap<u64, usize> = HashMap::new();
    let mut leaves_of: HashMap<u64, HashSet<u64>> = HashMap::new();
    for t in order {
        if !fusable(t) {
            continue;
        }
        let max_leaves = match limits.get(t.device()) {
            Some(l) => l.max_fused_inputs,
            None => {
                let l = crate::backend::limits(*t.device())?;
                limits.insert(*t.device(), l);
                l.max_fused_inputs
            }
        };
        // When this node's program would read too many leaves, materialise
        // the inlined input that brings the most.
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
        while set.len() > max_leaves {
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
    Ok(inlined)
}

/// The program computing `root` from its non-inlined leaves.
pub(crate) fn build_program(root: &Tensor, inlined: &HashSet<u64>) -> (Program, Vec<Tensor>) {
    let ops = super::postorder(std::slice::from_ref(root), |t| {
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
