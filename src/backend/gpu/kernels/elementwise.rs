//! The one source of generated WGSL: an elementwise `Program` (a single op
//! or a fused chain) becomes one kernel. The text depends only on the
//! program, the operand types and how each operand is read (dense, a
//! broadcast scalar, or strided); shapes and strides travel in the uniform
//! block, so one pipeline serves every shape.

use std::fmt::Write;

use super::{dtype_of, with_shape, MAX_RANK, WORKGROUP};
use crate::backend::gpu::pipeline::{kernel_params, words8, U8x};
use crate::backend::gpu::recorder::{grid, Bind, Recorder};
use crate::backend::Value;
use crate::op::{BinaryOp, Op, ReduceOp, UnaryOp};
use crate::schedule::fusion::Program;
use crate::shape::{collapse, Layout};
use crate::{DType, Error, Result};

/// Most inputs of one kernel: with the output, WebGPU's default of 8
/// storage buffers per stage (a device's own limit can lower it).
pub(crate) const MAX_LEAVES: usize = 7;

kernel_params!(
    /// Where one operand's elements are: offset and strides (in elements)
    /// over the collapsed output shape.
    Operand {
        offset: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
        strides: U8x,
    }
);

kernel_params!(ElementwiseParams {
    /// Elements written: one per output (a fused reduction's outputs).
    n: u32,
    rank: u32,
    /// A fused reduction's elements per output (0 otherwise).
    row: u32,
    _pad1: u32,
    shape: U8x,
    operands: [Operand; MAX_LEAVES],
});

/// The WGSL side of `Operand` and `ElementwiseParams`, in every kernel.
pub(crate) const PARAMS_WGSL: &str = r#"struct Operand {
    offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    strides: array<vec4<u32>, 2>,
}

struct ElementwiseParams {
    n: u32,
    rank: u32,
    row: u32,
    _pad1: u32,
    shape: array<vec4<u32>, 2>,
    operands: array<Operand, 7>,
}
"#;

/// A generated kernel and the parameters of one launch.
#[derive(Debug)]
pub(crate) struct Kernel {
    pub signature: Signature,
    pub params: ElementwiseParams,
    pub out_dtype: DType,
    pub n: usize,
}

/// Everything a generated kernel's text depends on, and so the key of its
/// pipeline: a dispatch whose pipeline is cached emits no text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Signature {
    /// Each leaf's type and how it is read.
    leaves: Vec<(DType, Access)>,
    /// Each instruction and the slots it reads.
    instrs: Vec<(ElemOp, Vec<usize>)>,
    /// A reduction of the program's values, when it feeds one.
    pub reduce: Option<Reduction>,
}

/// How a fused reduction combines the program's values: `op` over
/// `params.row` consecutive elements (in the row-major order of an input
/// whose reduced axes the host moved last) per output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Reduction {
    pub op: ReduceOp,
    /// One workgroup per output, combined in a tree (long rows); else one
    /// invocation per output.
    pub tree: bool,
}

/// The elementwise ops a program may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ElemOp {
    Unary(UnaryOp),
    Binary(BinaryOp),
    Where,
    Cast(DType),
}

/// Helpers every generated kernel may call. Guards make the edge cases
/// (NaN, log of zero or a negative, powers of negative bases) match the
/// cpu backend instead of leaving them to the driver.
const PRELUDE: &str = r#"
var<private> NAN_BITS: u32 = 0x7fc00000u;
var<private> INF_BITS: u32 = 0x7f800000u;

fn shape(d: u32) -> u32 { return params.shape[d >> 2u][d & 3u]; }
fn is_nan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn nan_f() -> f32 { return bitcast<f32>(NAN_BITS); }
fn inf_f() -> f32 { return bitcast<f32>(INF_BITS); }
fn log_f(x: f32) -> f32 {
    if (x < 0.0 || is_nan(x)) { return nan_f(); }
    if (x == 0.0) { return -inf_f(); }
    return log(x);
}
fn sqrt_f(x: f32) -> f32 { return select(sqrt(x), nan_f(), x < 0.0 || is_nan(x)); }
fn tanh_f(x: f32) -> f32 {
    // exp of -2|x| never overflows, unlike a textbook (e^x - e^-x) / (e^x + e^-x).
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(t, -t, x < 0.0);
}
fn erf_f(x: f32) -> f32 {
    // The cpu backend's: a Taylor series below 0.5 (relative accuracy near
    // 0, erf(0) = 0), the Chebyshev fit (|error| < 1.2e-7) above.
    let z = abs(x);
    if (z < 0.5) {
        let x2 = x * x;
        return x * (1.1283791671 + x2 * (-0.37612638903 + x2 * (0.11283791671 + x2 * (-0.026866170645
            + x2 * (0.0052239776254 + x2 * -0.00085483270235)))));
    }
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}
fn max_f(a: f32, b: f32) -> f32 { return select(max(a, b), nan_f(), is_nan(a) || is_nan(b)); }
fn pow_f(a: f32, b: f32) -> f32 {
    if (b == 0.0 || a == 1.0) { return 1.0; }
    if (is_nan(a) || is_nan(b)) { return nan_f(); }
    let r = exp2(b * log2(abs(a)));
    if (a < 0.0) {
        if (fract(b) != 0.0) { return nan_f(); }
        return select(r, -r, fract(b * 0.5) != 0.0);
    }
    return r;
}
fn flat_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WORKGROUP;
}
"#;

fn wgsl_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::I32 => "i32",
    }
}

/// How a leaf is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Access {
    Dense,
    Scalar,
    Strided,
}

/// Compile `program` over leaves of the given types and layouts (all of
/// the output's shape).
pub(crate) fn elementwise(
    program: &Program,
    leaves: &[(DType, &Layout)],
    out_shape: &[usize],
) -> Result<Kernel> {
    if leaves.len() > MAX_LEAVES {
        return Err(Error::param(
            "fused elementwise",
            format!(
                "internal: {} inputs exceed the {MAX_LEAVES} a kernel may bind",
                leaves.len()
            ),
        ));
    }
    let n = crate::shape::numel(out_shape);
    let layouts: Vec<&Layout> = leaves.iter().map(|l| l.1).collect();
    let (shape, collapsed) = collapse(out_shape, &layouts);
    if shape.len() > MAX_RANK {
        return Err(Error::shape(
            "elementwise (gpu)",
            &[out_shape],
            format!("operands keep {} axes after merging; the gpu kernels take at most {MAX_RANK}; make an operand contiguous first", shape.len()),
        ));
    }
    let rank = shape.len();
    let too_big = || {
        Error::shape(
            "elementwise (gpu)",
            &[out_shape],
            "a size, offset or stride reaches 2^32 elements; the gpu kernels index with 32 bits",
        )
    };
    let mut params = ElementwiseParams {
        n: u32::try_from(n).map_err(|_| too_big())?,
        rank: rank as u32,
        shape: words8(&shape).ok_or_else(too_big)?,
        ..Default::default()
    };
    let access: Vec<Access> = collapsed
        .iter()
        .map(|l| {
            if l.strides.iter().all(|&s| s == 0) {
                Access::Scalar
            } else if l.is_contiguous() {
                Access::Dense
            } else {
                Access::Strided
            }
        })
        .collect();
    for (slot, l) in params.operands.iter_mut().zip(&collapsed) {
        slot.offset = u32::try_from(l.offset).map_err(|_| too_big())?;
        slot.strides = words8(&l.strides).ok_or_else(too_big)?;
    }

    let mut instrs = Vec::with_capacity(program.instrs.len());
    for ins in &program.instrs {
        let op = match &ins.op {
            Op::Unary(u) => ElemOp::Unary(*u),
            Op::Binary(b) => ElemOp::Binary(*b),
            Op::Where => ElemOp::Where,
            Op::Cast(to) => ElemOp::Cast(*to),
            other => {
                return Err(Error::param(
                    "fused elementwise",
                    format!("internal: {} is not elementwise", other.name()),
                ))
            }
        };
        instrs.push((op, ins.args.clone()));
    }
    let signature = Signature {
        leaves: leaves.iter().map(|l| l.0).zip(access).collect(),
        instrs,
        reduce: None,
    };
    let out_dtype = signature.out_dtype();
    Ok(Kernel {
        signature,
        params,
        out_dtype,
        n,
    })
}

impl Signature {
    /// The type of every slot: the leaves', then each instruction's.
    fn slot_types(&self) -> Vec<DType> {
        let mut types: Vec<DType> = self.leaves.iter().map(|l| l.0).collect();
        for (op, args) in &self.instrs {
            let op = match *op {
                ElemOp::Unary(u) => Op::Unary(u),
                ElemOp::Binary(b) => Op::Binary(b),
                ElemOp::Where => Op::Where,
                ElemOp::Cast(to) => Op::Cast(to),
            };
            let arg_types: Vec<DType> = args.iter().map(|&a| types[a]).collect();
            types.push(crate::schedule::fusion::result_type(&op, &arg_types));
        }
        types
    }

    fn out_dtype(&self) -> DType {
        *self.slot_types().last().unwrap_or(&DType::F32)
    }

    /// The kernel's WGSL text.
    pub(crate) fn source(&self) -> String {
        let types = self.slot_types();
        let last = types.len() - 1;
        let mut src = String::new();
        let out_type = match self.reduce {
            Some(_) => "f32",
            None => wgsl_type(types[last]),
        };
        let _ = writeln!(
            src,
            "// Generated by shadergrad's elementwise emitter.\nconst WORKGROUP: u32 = {WORKGROUP}u;\n{PARAMS_WGSL}\n@group(0) @binding(0) var<uniform> params: ElementwiseParams;"
        );
        let _ = writeln!(
            src,
            "@group(0) @binding(1) var<storage, read_write> out: array<{out_type}>;"
        );
        for (k, (ty, _)) in self.leaves.iter().enumerate() {
            let _ = writeln!(
                src,
                "@group(0) @binding({}) var<storage, read> in{k}: array<{}>;",
                k + 2,
                wgsl_type(*ty)
            );
        }
        src += PRELUDE;
        if self.leaves.iter().any(|l| l.1 == Access::Strided) {
            src += STRIDED_OFFSET;
        }
        let body = self.body(&types);
        match self.reduce {
            None => {
                let _ = write!(
                    src,
                    r#"
@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {{
    let i = flat_index(gid, groups);
    if (i >= params.n) {{ return; }}
{body}    out[i] = v{last};
}}
"#
                );
            }
            Some(r) => {
                let value = match types[last] {
                    DType::F32 => format!("v{last}"),
                    DType::I32 => format!("f32(v{last})"),
                };
                let (identity, combine) = match r.op {
                    ReduceOp::Sum => ("0.0", "a + b"),
                    // Max propagates NaN, as the cpu backend does.
                    ReduceOp::Max => ("-inf_f()", "max_f(a, b)"),
                };
                let _ = write!(
                    src,
                    r#"
// The program's value at element i of the (reduced axes last) input.
fn element(i: u32) -> f32 {{
{body}    return {value};
}}
fn identity() -> f32 {{ return {identity}; }}
fn combine(a: f32, b: f32) -> f32 {{ return {combine}; }}
"#
                );
                src += if r.tree { REDUCE_TREE } else { REDUCE_ROWS };
            }
        }
        src
    }

    /// Loads of the leaves at element `i`, then one `let` per instruction.
    fn body(&self, types: &[DType]) -> String {
        let mut body = String::new();
        for (k, (_, access)) in self.leaves.iter().enumerate() {
            let index = match access {
                Access::Dense => format!("i + params.operands[{k}].offset"),
                Access::Scalar => format!("params.operands[{k}].offset"),
                Access::Strided => format!("offset_of(i, {k}u)"),
            };
            let _ = writeln!(body, "    let v{k} = in{k}[{index}];");
        }
        let f = |s: usize| match types[s] {
            DType::F32 => format!("v{s}"),
            DType::I32 => format!("f32(v{s})"),
        };
        let v = |s: usize| format!("v{s}");
        for (j, (op, args)) in self.instrs.iter().enumerate() {
            let slot = self.leaves.len() + j;
            let a = |k: usize| args[k];
            let expr = match op {
                ElemOp::Unary(u) => {
                    let x = f(a(0));
                    match u {
                        UnaryOp::Neg => format!("-{x}"),
                        UnaryOp::Exp => format!("exp({x})"),
                        UnaryOp::Log => format!("log_f({x})"),
                        UnaryOp::Sqrt => format!("sqrt_f({x})"),
                        UnaryOp::Recip => format!("1.0 / {x}"),
                        UnaryOp::Sin => format!("sin({x})"),
                        UnaryOp::Tanh => format!("tanh_f({x})"),
                        UnaryOp::Erf => format!("erf_f({x})"),
                        UnaryOp::Relu => format!("select(0.0, {x}, {x} > 0.0)"),
                    }
                }
                ElemOp::Binary(b) if types[a(0)] == DType::I32 && types[a(1)] == DType::I32 => {
                    let (x, y) = (v(a(0)), v(a(1)));
                    match b {
                        BinaryOp::Add => format!("{x} + {y}"),
                        BinaryOp::Mul => format!("{x} * {y}"),
                        BinaryOp::Max => format!("max({x}, {y})"),
                        BinaryOp::Pow => format!("i32(pow_f(f32({x}), f32({y})))"),
                        BinaryOp::CmpLt => format!("select(0.0, 1.0, {x} < {y})"),
                        BinaryOp::CmpEq => format!("select(0.0, 1.0, {x} == {y})"),
                    }
                }
                ElemOp::Binary(b) => {
                    let (x, y) = (f(a(0)), f(a(1)));
                    match b {
                        BinaryOp::Add => format!("{x} + {y}"),
                        BinaryOp::Mul => format!("{x} * {y}"),
                        BinaryOp::Max => format!("max_f({x}, {y})"),
                        BinaryOp::Pow => format!("pow_f({x}, {y})"),
                        BinaryOp::CmpLt => format!("select(0.0, 1.0, {x} < {y})"),
                        BinaryOp::CmpEq => format!("select(0.0, 1.0, {x} == {y})"),
                    }
                }
                ElemOp::Where if types[slot] == DType::I32 => {
                    format!("select(v{}, v{}, {} != 0.0)", a(2), a(1), f(a(0)))
                }
                ElemOp::Where => {
                    format!("select({}, {}, {} != 0.0)", f(a(2)), f(a(1)), f(a(0)))
                }
                ElemOp::Cast(to) => match (types[a(0)], to) {
                    (DType::F32, DType::I32) => format!("i32(v{})", a(0)),
                    (DType::I32, DType::F32) => format!("f32(v{})", a(0)),
                    _ => v(a(0)),
                },
            };
            let _ = writeln!(body, "    let v{slot} = {expr};");
        }
        body
    }
}

/// A fused reduction's entry point with one invocation per output: short
/// rows or many outputs. Reads in the order of `reduce.wgsl`'s `rows`, so
/// fused and unfused sums round alike.
const REDUCE_ROWS: &str = r#"
@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= params.n) { return; }
    let base = i * params.row;
    var acc = identity();
    for (var r = 0u; r < params.row; r++) {
        acc = combine(acc, element(base + r));
    }
    out[i] = acc;
}
"#;

/// One workgroup per output, a strided partial per invocation and a tree
/// in workgroup memory (long rows), as `reduce.wgsl`'s `tree`.
const REDUCE_TREE: &str = r#"
var<workgroup> partial: array<f32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wid.x + wid.y * groups.x;
    // Uniform per workgroup: every invocation reaches the barriers or none does.
    if (i >= params.n) { return; }
    let base = i * params.row;
    var acc = identity();
    for (var r = lid; r < params.row; r += WORKGROUP) {
        acc = combine(acc, element(base + r));
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = WORKGROUP / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] = combine(partial[lid], partial[lid + s]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) { out[i] = partial[0]; }
}
"#;

/// The offset helper of kernels with a strided leaf.
const STRIDED_OFFSET: &str = r#"
// Buffer offset of output element i for operand k.
fn offset_of(i: u32, k: u32) -> u32 {
    var rem = i;
    var off = params.operands[k].offset;
    for (var d = i32(params.rank) - 1; d >= 0; d--) {
        let du = u32(d);
        let size = shape(du);
        off += (rem % size) * params.operands[k].strides[du >> 2u][du & 3u];
        rem /= size;
    }
    return off;
}
"#;

/// One elementwise program (a single op or a fused chain) as one dispatch.
pub(crate) fn fused(
    rec: &mut Recorder,
    program: &Program,
    inputs: &[Value],
    shape: &[usize],
) -> Result<Value> {
    let inputs = inputs
        .iter()
        .map(|v| rec.on_device(v))
        .collect::<Result<Vec<_>>>()?;
    let leaves: Vec<(DType, &Layout)> = inputs.iter().map(|v| (dtype_of(v), &v.layout)).collect();
    // A tensor too large for the device is out of memory, whatever else.
    rec.ctx
        .check_elements("elementwise", crate::shape::numel(shape))?;
    let kernel = elementwise(program, &leaves, shape)?;
    let out = rec.output("elementwise", kernel.n, kernel.out_dtype)?;
    if kernel.n > 0 {
        let pipeline = rec.ctx.fused_pipeline(&kernel.signature)?;
        let mut binds = vec![Bind::Write(&out)];
        binds.extend(inputs.iter().map(Bind::Read));
        rec.dispatch(&pipeline, &kernel.params, &binds, grid(kernel.n, WORKGROUP))?;
    }
    Ok(with_shape(out, shape))
}
