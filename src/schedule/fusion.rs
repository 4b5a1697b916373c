//! Elementwise fusion: the IR every backend compiles (the cpu interpreter,
//! the WGSL emitter) and the plan that decides which nodes are computed
//! inside their users' passes instead of on their own.

use std::collections::{HashMap, HashSet};

use crate::backend::Limits;
use crate::op::{BinaryOp, Op};
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

/// `leaves[0] + leaves[1]`, then relu when `relu`: a layer's bias and
/// activation, which a kernel can apply as it stores (`Session::epilogue`).
pub(crate) fn bias_program(relu: bool) -> Program {
    let mut program = Program::single(Op::Binary(BinaryOp::Add), 2);
    if relu {
        program.instrs.push(Instr {
            op: Op::Unary(crate::op::UnaryOp::Relu),
            args: vec![2],
        });
    }
    program
}

/// Whether `program` is a GEMM epilogue's: the sum of its two leaves,
/// then maybe relu (Some(relu)); None for anything else.
pub(crate) fn bias_epilogue(program: &Program) -> Option<bool> {
    let add =
        |i: &Instr| i.op == Op::Binary(BinaryOp::Add) && (i.args == [0, 1] || i.args == [1, 0]);
    match program.instrs.as_slice() {
        [a] if program.leaves == 2 && add(a) => Some(false),
        [a, r] if program.leaves == 2 && add(a) => {
            (r.op == Op::Unary(crate::op::UnaryOp::Relu) && r.args == [2]).then_some(true)
        }
        _ => None,
    }
}

/// The type an elementwise op gives over arguments of `args` types: the
/// comparisons give f32 masks, integer arithmetic stays integer, the rest
/// computes in f32.
pub(crate) fn result_type(op: &Op, args: &[DType]) -> DType {
    let int = |k: usize| args.get(k) == Some(&DType::I32);
    match op {
        Op::Cast(to) => *to,
        Op::Binary(BinaryOp::CmpLt | BinaryOp::CmpEq) => DType::F32,
        Op::Binary(_) if int(0) && int(1) => DType::I32,
        Op::Where if int(1) && int(2) => DType::I32,
        _ => DType::F32,
    }
}

impl Program {
    /// The type of every slot, from the leaves' types.
    pub(crate) fn slot_types(&self, leaves: &[DType]) -> Vec<DType> {
        let mut types = leaves.to_vec();
        for ins in &self.instrs {
            let args: Vec<DType> = ins.args.iter().map(|&a| types[a]).collect();
            types.push(result_type(&ins.op, &args));
        }
        types
    }
}

/// An elementwise node (casts and integer comparisons included: argmax
/// against labels is one pass): can be computed inside a fused pass. An
/// integer power is not: it rounds through f64 on the cpu.
pub(crate) fn fusable(t: &Tensor) -> bool {
    let int_pow = matches!(t.op(), Op::Binary(BinaryOp::Pow)) && t.dtype() == DType::I32;
    matches!(
        t.op(),
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast(_)
    ) && !int_pow
}

/// A reduction of f32 values: its input's elementwise program can run
/// inside it, so the input is never stored.
pub(crate) fn reduces_fused_input(t: &Tensor) -> bool {
    matches!(t.op(), Op::Reduce { .. })
        && t.dtype() == DType::F32
        && t.inputs()[0].dtype() == DType::F32
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
/// elementwise node whose users are all elementwise (or reductions, which
/// take their input's program) and whose value nobody else needs (`keep`);
/// one shared by several users only while it is small. `users[id]` says,
/// per direct use, whether the user can take the node's program.
/// A program never reads more leaves than its device's backend allows.
pub(crate) fn plan(
    order: &[Tensor],
    users: &HashMap<u64, Vec<bool>>,
    keep: &HashSet<u64>,
    through: &HashSet<u64>,
) -> Result<HashSet<u64>> {
    let mut inlined: HashSet<u64> = HashSet::new();
    if !enabled() {
        return Ok(inlined);
    }
    let mut limits: HashMap<Device, Limits> = HashMap::new();
    let mut size: HashMap<u64, usize> = HashMap::new();
    let mut leaves_of: HashMap<u64, HashSet<u64>> = HashMap::new();
    for t in order {
        // A view read through by fused users (a broadcast, a detach): no
        // instruction of its own, always inlined (its input decides for itself).
        let read_through = through.contains(&t.id());
        if !fusable(t) && !read_through {
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
                    // A stored view is a view of a stored value.
                    let mut view = v;
                    while through.contains(&view.id()) {
                        view = &view.inputs()[0];
                        inlined.remove(&view.id());
                    }
                }
                None => break,
            }
            set = leaf_set(&inlined);
        }
        leaves_of.insert(t.id(), set);
        let s = usize::from(!read_through)
            + t.inputs()
                .iter()
                .filter(|i| inlined.contains(&i.id()))
                .map(|i| size[&i.id()])
                .sum::<usize>();
        size.insert(t.id(), s);
        if read_through {
            inlined.insert(t.id());
            continue;
        }
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
    for t in &ops {
        if matches!(t.op(), Op::Expand | Op::Detach) {
            // Read through: the value below, evaluated at the user's
            // shape (the scheduler broadcasts the leaves beneath).
            slot_of.insert(t.id(), slot_of[&t.inputs()[0].id()]);
            continue;
        }
        let args = t.inputs().iter().map(|i| slot_of[&i.id()]).collect();
        instrs.push(Instr {
            op: t.op().clone(),
            args,
        });
        slot_of.insert(t.id(), n_leaves + instrs.len() - 1);
    }
    (
        Program {
            leaves: n_leaves,
            instrs,
        },
        leaves,
    )
}
