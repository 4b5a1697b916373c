//! Differential testing of the backends: random op graphs evaluated on the
//! cpu backend (the specification) and on a GPU, forward values and
//! gradients compared with tolerances derived from the ops involved. A
//! failing graph shrinks to a small reproducer that is saved as JSON and
//! replayed as a regression test (`tests/regressions/differential/`).
//!
//! Shared by `tests/differential.rs` (a fixed budget in CI) and
//! `examples/fuzz_backends.rs` (long runs), which include this file by path.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use shadergrad::{AttentionOpts, Conv2dOpts, DType, Device, Result, Tensor};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Per-element unary functions, each made total where it needs to be (log,
/// sqrt, recip and pow see `|x| + c`), so any input is in its domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unary {
    Neg,
    Exp,
    Log,
    Sqrt,
    Recip,
    Sin,
    Cos,
    Tanh,
    Erf,
    Relu,
    LeakyRelu,
    Gelu,
    GeluTanh,
    Sigmoid,
    Silu,
    Softplus,
    Square,
    Abs,
    Sign,
    PowScalar,
    AffineScalar,
    Clamp,
    MaxScalar,
    GtScalar,
    /// `(7x)` to i32 (toward zero) and back: no gradient.
    CastRoundTrip,
}

const UNARIES: &[Unary] = &[
    Unary::Neg,
    Unary::Exp,
    Unary::Log,
    Unary::Sqrt,
    Unary::Recip,
    Unary::Sin,
    Unary::Cos,
    Unary::Tanh,
    Unary::Erf,
    Unary::Relu,
    Unary::LeakyRelu,
    Unary::Gelu,
    Unary::GeluTanh,
    Unary::Sigmoid,
    Unary::Silu,
    Unary::Softplus,
    Unary::Square,
    Unary::Abs,
    Unary::Sign,
    Unary::PowScalar,
    Unary::AffineScalar,
    Unary::Clamp,
    Unary::MaxScalar,
    Unary::GtScalar,
    Unary::CastRoundTrip,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
    Pow,
    Lt,
    Eq,
}

const BINARIES: &[Binary] = &[
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Div,
    Binary::Maximum,
    Binary::Minimum,
    Binary::Pow,
    Binary::Lt,
    Binary::Eq,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reduce {
    Sum,
    Mean,
    Max,
    Min,
    Var,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Loss {
    Mse,
    CrossEntropy,
    CrossEntropySmoothed,
    Bce,
}

/// One operation of a graph; `args` of its node index earlier nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FuzzOp {
    Unary(Unary),
    /// Broadcasting.
    Binary(Binary),
    /// `where(c > 0, a, b)`, broadcasting.
    Where,
    Reduce {
        op: Reduce,
        axes: Vec<isize>,
        keepdim: bool,
    },
    Softmax {
        axis: isize,
        log: bool,
    },
    /// Argmax along an axis, as f32 (no gradient).
    Argmax {
        axis: isize,
    },
    Reshape(Vec<usize>),
    Permute(Vec<usize>),
    Expand(Vec<usize>),
    Shrink(Vec<(usize, usize)>),
    Pad(Vec<(usize, usize)>),
    Contiguous,
    Cat {
        axis: isize,
    },
    Stack {
        axis: isize,
    },
    MatMul,
    /// args: x, weight [, bias].
    Conv2d {
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    },
    /// args: x, weight [, bias].
    ConvTranspose2d {
        stride: usize,
        padding: usize,
        output_padding: usize,
        groups: usize,
    },
    MaxPool2d {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    AvgPool2d {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// args: src, index.
    Gather {
        axis: isize,
    },
    /// args: self, index, src.
    ScatterAdd {
        axis: isize,
    },
    /// args: weight [vocab, dim], ids.
    Embedding,
    /// args: q, k, v [, key mask (index leaf, bound 2)].
    Attention {
        causal: bool,
    },
    /// args: prediction, target (labels for cross-entropy).
    Loss(Loss),
}

impl FuzzOp {
    /// A short name for coverage counts.
    pub fn kind(&self) -> String {
        match self {
            FuzzOp::Unary(u) => format!("{u:?}"),
            FuzzOp::Binary(b) => format!("{b:?}"),
            FuzzOp::Reduce { op, .. } => format!("Reduce{op:?}"),
            FuzzOp::Softmax { log: true, .. } => "LogSoftmax".into(),
            FuzzOp::Loss(l) => format!("{l:?}"),
            other => format!("{other:?}")
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("?")
                .to_string(),
        }
    }

    /// How much rounding error the op may add, relative to its output's
    /// size, on top of its inputs': a few ulps for plain arithmetic, more
    /// for transcendental functions (the GPU's may differ by several ulps),
    /// and a sum's length for reductions and products.
    fn error_weight(&self, arg_shapes: &[&[usize]]) -> f64 {
        let numel = |s: &[usize]| s.iter().product::<usize>().max(1) as f64;
        match self {
            FuzzOp::Unary(
                Unary::Exp
                | Unary::Log
                | Unary::Sin
                | Unary::Cos
                | Unary::Tanh
                | Unary::Erf
                | Unary::Gelu
                | Unary::GeluTanh
                | Unary::Sigmoid
                | Unary::Silu
                | Unary::Softplus
                | Unary::PowScalar
                | Unary::Sqrt
                | Unary::Recip,
            ) => 8.0,
            FuzzOp::Binary(Binary::Pow | Binary::Div) => 8.0,
            FuzzOp::Unary(_) | FuzzOp::Binary(_) | FuzzOp::Where => 2.0,
            FuzzOp::Reduce { .. } | FuzzOp::Softmax { .. } | FuzzOp::Loss(_) => {
                4.0 + numel(arg_shapes[0]).sqrt()
            }
            FuzzOp::MatMul => 4.0 + (*arg_shapes[0].last().unwrap_or(&1) as f64).sqrt() * 2.0,
            FuzzOp::Conv2d { .. } | FuzzOp::ConvTranspose2d { .. } => {
                4.0 + numel(&arg_shapes[1][1..]).sqrt() * 2.0
            }
            FuzzOp::Attention { .. } => 16.0 + (arg_shapes[1][2] * arg_shapes[0][3]) as f64,
            FuzzOp::AvgPool2d { .. } | FuzzOp::ScatterAdd { .. } => 4.0,
            _ => 0.0,
        }
    }
}

/// A node: a leaf of seeded data or an op on earlier nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Node {
    /// f32 in [-1, 1), from `seed`; with `specials`, some elements are
    /// 0, -0, +-inf, NaN or +-1e15 instead. (Not 1e30: a product that
    /// overflows makes a sum's infinity depend on the order of addition;
    /// not subnormals: WGSL lets a GPU flush them to zero.)
    Leaf {
        shape: Vec<usize>,
        seed: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        specials: bool,
    },
    /// i32 in `0..bound`, from `seed`.
    Index {
        shape: Vec<usize>,
        bound: usize,
        seed: u64,
    },
    Op {
        op: FuzzOp,
        args: Vec<usize>,
    },
}

/// A random op graph; its output is the last node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub seed: u64,
    pub nodes: Vec<Node>,
}

/// Small, fast, reproducible (SplitMix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.range(0, items.len() - 1)]
    }
}

/// Values in [-1, 1) from a seed, the same on every machine.
pub fn leaf_data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        .collect()
}

fn index_data(n: usize, bound: usize, seed: u64) -> Vec<i32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (rng.next_u64() % bound.max(1) as u64) as i32)
        .collect()
}

/// Sizes the generator draws from: odd, prime, size 1 and powers of two.
const DIMS: &[usize] = &[1, 1, 2, 3, 4, 5, 7, 8, 16, 17, 33];
/// Matrix sizes around the GEMM's 64-wide tiles.
const BIG_DIMS: &[usize] = &[1, 7, 33, 63, 64, 65, 129, 257];
/// Elements per tensor at most: the software GPU stays fast.
const MAX_NUMEL: usize = 20_000;

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

fn random_shape(rng: &mut Rng, rank: usize, budget: usize) -> Vec<usize> {
    let mut s: Vec<usize> = (0..rank).map(|_| rng.pick(DIMS)).collect();
    while numel(&s) > budget {
        let i = rng.range(0, rank - 1);
        s[i] = s[i].div_ceil(2);
    }
    s
}

/// A shape that broadcasts to `s`: some axes set to 1, maybe fewer leading axes.
fn broadcastable(rng: &mut Rng, s: &[usize]) -> Vec<usize> {
    let drop = if s.is_empty() {
        0
    } else {
        rng.range(0, s.len().min(2)) * usize::from(rng.chance(0.3))
    };
    s[drop..]
        .iter()
        .map(|&d| if rng.chance(0.35) { 1 } else { d })
        .collect()
}

/// The generator's state: the graph so far and each node's shape.
struct Builder {
    rng: Rng,
    graph: Graph,
    shapes: Vec<Vec<usize>>,
    /// Whether each node is f32 data (an op output or a leaf), as opposed to indices.
    float: Vec<bool>,
    /// Whether leaves may hold non-finite and extreme values.
    specials: bool,
}

impl Builder {
    fn push(&mut self, node: Node) -> std::result::Result<usize, String> {
        self.graph.nodes.push(node);
        match shapes_of(&self.graph) {
            Ok(shapes) => {
                let shape = shapes.last().cloned().unwrap_or_default();
                if numel(&shape) > MAX_NUMEL {
                    self.graph.nodes.pop();
                    return Err("too large".into());
                }
                self.float
                    .push(!matches!(self.graph.nodes.last(), Some(Node::Index { .. })));
                self.shapes.push(shape);
                Ok(self.shapes.len() - 1)
            }
            Err(e) => {
                self.graph.nodes.pop();
                Err(e)
            }
        }
    }

    fn leaf(&mut self, shape: Vec<usize>) -> std::result::Result<usize, String> {
        let seed = self.rng.next_u64();
        let specials = self.specials && self.rng.chance(0.3);
        self.push(Node::Leaf {
            shape,
            seed,
            specials,
        })
    }

    fn index(&mut self, shape: Vec<usize>, bound: usize) -> std::result::Result<usize, String> {
        let seed = self.rng.next_u64();
        self.push(Node::Index { shape, bound, seed })
    }

    /// A float node, most often the newest, so graphs are deep as well as wide.
    fn operand(&mut self) -> usize {
        let floats: Vec<usize> = (0..self.shapes.len()).filter(|&i| self.float[i]).collect();
        if self.rng.chance(0.6) {
            *floats.last().expect("the graph starts with a float leaf")
        } else {
            self.rng.pick(&floats)
        }
    }

    /// A float node of rank 4 (reshaping or making one when needed).
    fn rank4(&mut self, a: usize) -> std::result::Result<usize, String> {
        if self.shapes[a].len() == 4 {
            return Ok(a);
        }
        let n = numel(&self.shapes[a]);
        if n > 1 && self.rng.chance(0.5) {
            // Split the elements over [1, c, h, w] by factors.
            let mut dims = factor(n);
            while dims.len() < 3 {
                dims.push(1);
            }
            while dims.len() > 3 {
                let x = dims.remove(self.rng.range(0, dims.len() - 1));
                let j = self.rng.range(0, dims.len() - 1);
                dims[j] *= x;
            }
            let shape = vec![1, dims[0], dims[1], dims[2]];
            if let Ok(i) = self.push(Node::Op {
                op: FuzzOp::Reshape(shape),
                args: vec![a],
            }) {
                return Ok(i);
            }
        }
        let shape = if self.rng.chance(0.2) {
            vec![
                self.rng.range(1, 2),
                self.rng.pick(&[8, 16, 17]),
                self.rng.range(12, 33),
                self.rng.range(12, 33),
            ]
        } else {
            vec![
                self.rng.range(1, 3),
                self.rng.range(1, 4),
                self.rng.range(3, 12),
                self.rng.range(3, 12),
            ]
        };
        self.leaf(shape)
    }

    fn op(&mut self, op: FuzzOp, args: Vec<usize>) -> std::result::Result<usize, String> {
        self.push(Node::Op { op, args })
    }

    /// Add one random op; Err when the drawn op does not fit (try another).
    fn step(&mut self, chain: bool) -> std::result::Result<usize, String> {
        let a = self.operand();
        let s = self.shapes[a].clone();
        let rank = s.len();
        // A chain is mostly binary ops on fresh broadcast leaves, so one
        // fused kernel would need more inputs than a device binds (7 on GL,
        // 16 at most): the planner must split it.
        let mut category = if chain {
            [1, 2, 2, 3][self.rng.range(0, 3)]
        } else {
            self.rng.range(0, 17)
        };
        // Non-finite data stays out of matmul, convolution and attention:
        // an implicit-GEMM kernel multiplies padding and skipped taps by the
        // weights (0 * inf = NaN where the cpu backend skips them), and the
        // two backends treat a row of infinite scores differently.
        if self.specials && matches!(category, 13 | 14 | 17) {
            category = 7;
        }
        match category {
            0 | 1 => {
                let mut u = self.rng.pick(UNARIES);
                // WGSL leaves the i32 of a NaN or an infinity to the device.
                if self.specials && u == Unary::CastRoundTrip {
                    u = Unary::Neg;
                }
                self.op(FuzzOp::Unary(u), vec![a])
            }
            2 | 3 => {
                let b = if self.rng.chance(if chain { 0.1 } else { 0.3 }) {
                    self.operand()
                } else {
                    let shape = broadcastable(&mut self.rng, &s);
                    self.leaf(shape)?
                };
                let (x, y) = if self.rng.chance(0.5) { (a, b) } else { (b, a) };
                let op = self.rng.pick(BINARIES);
                self.op(FuzzOp::Binary(op), vec![x, y])
            }
            4 => {
                let (cs, bs) = (
                    broadcastable(&mut self.rng, &s),
                    broadcastable(&mut self.rng, &s),
                );
                let c = self.leaf(cs)?;
                let b = self.leaf(bs)?;
                self.op(FuzzOp::Where, vec![c, a, b])
            }
            5 => {
                if rank == 0 {
                    return Err("scalar".into());
                }
                let op = self.rng.pick(&[
                    Reduce::Sum,
                    Reduce::Mean,
                    Reduce::Max,
                    Reduce::Min,
                    Reduce::Var,
                ]);
                let mut axes: Vec<isize> = (0..rank as isize)
                    .filter(|_| self.rng.chance(0.5))
                    .collect();
                if axes.is_empty() {
                    axes.push(self.rng.range(0, rank - 1) as isize - rank as isize);
                }
                let keepdim = self.rng.chance(0.5);
                self.op(FuzzOp::Reduce { op, axes, keepdim }, vec![a])
            }
            6 => {
                if rank == 0 {
                    return Err("scalar".into());
                }
                let axis = self.rng.range(0, rank - 1) as isize;
                if self.rng.chance(0.2) {
                    return self.op(FuzzOp::Argmax { axis }, vec![a]);
                }
                let log = self.rng.chance(0.5);
                self.op(FuzzOp::Softmax { axis, log }, vec![a])
            }
            7 => {
                let n = numel(&s);
                let shape = match self.rng.range(0, 2) {
                    0 => vec![n],
                    1 => {
                        let mut f = factor(n);
                        // Shuffle the prime factors into a random rank.
                        for i in (1..f.len()).rev() {
                            let j = self.rng.range(0, i);
                            f.swap(i, j);
                        }
                        let r = self.rng.range(1, 4).min(f.len().max(1));
                        let mut dims = vec![1usize; r];
                        for (i, p) in f.into_iter().enumerate() {
                            dims[i % r] *= p;
                        }
                        dims
                    }
                    _ => {
                        let mut d = s.clone();
                        d.insert(self.rng.range(0, rank), 1);
                        d
                    }
                };
                self.op(FuzzOp::Reshape(shape), vec![a])
            }
            8 => {
                if rank < 2 {
                    return Err("rank".into());
                }
                let mut perm: Vec<usize> = (0..rank).collect();
                for i in (1..rank).rev() {
                    let j = self.rng.range(0, i);
                    perm.swap(i, j);
                }
                let p = self.op(FuzzOp::Permute(perm), vec![a])?;
                if self.rng.chance(0.3) {
                    self.op(FuzzOp::Contiguous, vec![p])
                } else {
                    Ok(p)
                }
            }
            9 => {
                let mut target = s.clone();
                if !s.contains(&1) || self.rng.chance(0.3) {
                    target.insert(0, self.rng.pick(&[2, 3, 5]));
                    let u = self.op(FuzzOp::Reshape([&[1][..], &s[..]].concat()), vec![a])?;
                    return self.op(FuzzOp::Expand(target), vec![u]);
                }
                for d in target.iter_mut() {
                    if *d == 1 {
                        *d = self.rng.pick(&[1, 2, 3, 7]);
                    }
                }
                self.op(FuzzOp::Expand(target), vec![a])
            }
            10 => {
                if rank == 0 {
                    return Err("scalar".into());
                }
                let ranges: Vec<(usize, usize)> = s
                    .iter()
                    .map(|&d| {
                        if d == 0 || self.rng.chance(0.5) {
                            (0, d)
                        } else if self.rng.chance(0.03) {
                            (d / 2, d / 2) // empty
                        } else {
                            let lo = self.rng.range(0, d - 1);
                            (lo, self.rng.range(lo + 1, d))
                        }
                    })
                    .collect();
                self.op(FuzzOp::Shrink(ranges), vec![a])
            }
            11 => {
                let pads = s
                    .iter()
                    .map(|_| {
                        if self.rng.chance(0.5) {
                            (0, 0)
                        } else {
                            (self.rng.range(0, 2), self.rng.range(0, 3))
                        }
                    })
                    .collect();
                self.op(FuzzOp::Pad(pads), vec![a])
            }
            12 => {
                if rank == 0 {
                    return Err("scalar".into());
                }
                let ax = self.rng.range(0, rank - 1);
                if self.rng.chance(0.5) {
                    let mut other = s.clone();
                    other[ax] = self.rng.range(1, 5);
                    let b = self.leaf(other)?;
                    self.op(FuzzOp::Cat { axis: ax as isize }, vec![a, b])
                } else {
                    let b = self.leaf(s.clone())?;
                    let axis = self.rng.range(0, rank) as isize;
                    self.op(FuzzOp::Stack { axis }, vec![b, a])
                }
            }
            13 => {
                // [..., m, k] @ [..., k, n]; sometimes at sizes that cross
                // the GEMM's 64-wide tiles.
                let a = if self.rng.chance(0.3) {
                    let mut shape = vec![self.rng.pick(BIG_DIMS), self.rng.pick(BIG_DIMS)];
                    if self.rng.chance(0.3) {
                        shape.insert(0, self.rng.range(2, 3));
                    }
                    self.leaf(shape)?
                } else if rank >= 2 {
                    a
                } else {
                    self.op(FuzzOp::Reshape(vec![1, numel(&s)]), vec![a])?
                };
                let s = self.shapes[a].clone();
                let k = s[s.len() - 1];
                if k > 257 {
                    return Err("k".into());
                }
                let mut bs = s.clone();
                let last = bs.len() - 1;
                bs[last - 1] = k;
                bs[last] = if self.rng.chance(0.3) {
                    self.rng.pick(BIG_DIMS)
                } else {
                    self.rng.pick(DIMS)
                };
                let b = if self.rng.chance(0.2) && s[last - 1] == k {
                    // A product with a permuted view of itself (shared operand).
                    let mut perm: Vec<usize> = (0..s.len()).collect();
                    perm.swap(last - 1, last);
                    self.op(FuzzOp::Permute(perm), vec![a])?
                } else {
                    self.leaf(bs)?
                };
                if self.rng.chance(0.5) {
                    self.op(FuzzOp::MatMul, vec![a, b])
                } else {
                    // The transposed operand as a strided view.
                    let mut bt = self.shapes[b].clone();
                    let l = bt.len();
                    bt.swap(l - 2, l - 1);
                    let leaf = self.leaf(bt)?;
                    let mut perm: Vec<usize> = (0..l).collect();
                    perm.swap(l - 2, l - 1);
                    let view = self.op(FuzzOp::Permute(perm), vec![leaf])?;
                    self.op(FuzzOp::MatMul, vec![a, view])
                }
            }
            14 => {
                let x = self.rank4(a)?;
                let xs = self.shapes[x].clone();
                let groups = if xs[1].is_multiple_of(2) && self.rng.chance(0.3) {
                    2
                } else {
                    1
                };
                let k = self.rng.range(1, 3);
                let o = groups * self.rng.range(1, 4);
                let stride = self.rng.range(1, 2);
                let padding = self.rng.range(0, k / 2 + 1);
                let dilation = if self.rng.chance(0.2) { 2 } else { 1 };
                let kw = self.rng.range(1, 3);
                let w = self.leaf(vec![o, xs[1] / groups, k, kw])?;
                let mut args = vec![x, w];
                if self.rng.chance(0.5) {
                    args.push(self.leaf(vec![o])?);
                }
                if self.rng.chance(0.7) {
                    self.op(
                        FuzzOp::Conv2d {
                            stride,
                            padding,
                            dilation,
                            groups,
                        },
                        args,
                    )
                } else {
                    let wt = self.leaf(vec![xs[1], o / groups, k, k])?;
                    args[1] = wt;
                    let output_padding = self.rng.range(0, stride - 1);
                    self.op(
                        FuzzOp::ConvTranspose2d {
                            stride,
                            padding: padding.min(k - 1),
                            output_padding,
                            groups,
                        },
                        args,
                    )
                }
            }
            15 => {
                let x = self.rank4(a)?;
                let kernel = self.rng.range(1, 3);
                let stride = self.rng.range(1, kernel);
                let padding = self.rng.range(0, kernel / 2);
                if self.rng.chance(0.5) {
                    self.op(
                        FuzzOp::MaxPool2d {
                            kernel,
                            stride,
                            padding,
                        },
                        vec![x],
                    )
                } else {
                    self.op(
                        FuzzOp::AvgPool2d {
                            kernel,
                            stride,
                            padding,
                        },
                        vec![x],
                    )
                }
            }
            16 => {
                if rank == 0 || numel(&s) == 0 {
                    return Err("scalar".into());
                }
                let ax = self.rng.range(0, rank - 1);
                match self.rng.range(0, 2) {
                    0 => {
                        let mut is = s.clone();
                        is[ax] = self.rng.range(1, 6);
                        let idx = self.index(is, s[ax])?;
                        self.op(FuzzOp::Gather { axis: ax as isize }, vec![a, idx])
                    }
                    1 => {
                        let mut is = s.clone();
                        is[ax] = self.rng.range(1, 6);
                        let idx = self.index(is.clone(), s[ax])?;
                        let src = self.leaf(is)?;
                        self.op(FuzzOp::ScatterAdd { axis: ax as isize }, vec![a, idx, src])
                    }
                    _ => {
                        let vocab = vec![self.rng.range(1, 9), self.rng.pick(DIMS)];
                        let w = if rank == 2 { a } else { self.leaf(vocab)? };
                        let ids_rank = self.rng.range(1, 3);
                        let ids = random_shape(&mut self.rng, ids_rank, 64);
                        let bound = self.shapes[w][0];
                        let idx = self.index(ids, bound)?;
                        self.op(FuzzOp::Embedding, vec![w, idx])
                    }
                }
            }
            17 => {
                if self.rng.chance(0.4) {
                    let b = self.rng.range(1, 2);
                    let hk = self.rng.range(1, 2);
                    let h = hk * self.rng.range(1, 2);
                    let lq = self.rng.pick(&[1, 3, 7, 17]);
                    let lk = if self.rng.chance(0.5) {
                        lq
                    } else {
                        self.rng.pick(&[1, 5, 9, 33])
                    };
                    let d = self.rng.pick(&[1, 4, 8, 16]);
                    let dv = if self.rng.chance(0.7) {
                        d
                    } else {
                        self.rng.pick(&[2, 8])
                    };
                    let q = self.leaf(vec![b, h, lq, d])?;
                    let k = self.leaf(vec![b, hk, lk, d])?;
                    let v = self.leaf(vec![b, hk, lk, dv])?;
                    let mut args = vec![q, k, v];
                    if self.rng.chance(0.3) {
                        args.push(self.index(vec![b, lk], 2)?);
                    }
                    let causal = self.rng.chance(0.4);
                    self.op(FuzzOp::Attention { causal }, args)
                } else {
                    let loss = self.rng.pick(&[
                        Loss::Mse,
                        Loss::CrossEntropy,
                        Loss::CrossEntropySmoothed,
                        Loss::Bce,
                    ]);
                    match loss {
                        Loss::Mse | Loss::Bce => {
                            let t = self.leaf(s.clone())?;
                            self.op(FuzzOp::Loss(loss), vec![a, t])
                        }
                        _ => {
                            let logits = vec![self.rng.pick(DIMS), self.rng.range(2, 10)];
                            let x = if rank == 2 && s[1] > 0 {
                                a
                            } else {
                                self.leaf(logits)?
                            };
                            let (n, c) = (self.shapes[x][0], self.shapes[x][1]);
                            let labels = self.index(vec![n], c)?;
                            self.op(FuzzOp::Loss(loss), vec![x, labels])
                        }
                    }
                }
            }
            _ => unreachable!(),
        }
    }
}

/// Prime factors of n (n itself when n < 2).
fn factor(mut n: usize) -> Vec<usize> {
    if n < 2 {
        return vec![n];
    }
    let mut f = Vec::new();
    let mut p = 2;
    while p * p <= n {
        while n.is_multiple_of(p) {
            f.push(p);
            n /= p;
        }
        p += 1;
    }
    if n > 1 {
        f.push(n);
    }
    f
}

/// A random graph: mostly mixed ops, sometimes a long elementwise chain
/// over many broadcast leaves (the fusion planner's limits), sometimes
/// heavy kernels first.
pub fn generate(seed: u64) -> Graph {
    let mut b = Builder {
        rng: Rng::new(seed),
        graph: Graph {
            seed,
            nodes: Vec::new(),
        },
        shapes: Vec::new(),
        float: Vec::new(),
        specials: false,
    };
    // One graph in eight sees non-finite and extreme inputs.
    b.specials = b.rng.chance(0.125);
    let style = b.rng.range(0, 5);
    let chain = style == 0;
    let rank = b.rng.range(0, 4);
    let shape = if style == 1 {
        vec![
            b.rng.range(1, 3),
            b.rng.range(1, 5),
            b.rng.range(3, 14),
            b.rng.range(3, 14),
        ]
    } else {
        random_shape(&mut b.rng, rank, 1024)
    };
    b.leaf(shape).expect("the first leaf is small");
    let ops = if chain {
        b.rng.range(12, 40)
    } else {
        b.rng.range(2, 10)
    };
    let mut made = 0;
    let mut tries = 0;
    while made < ops && tries < ops * 20 {
        tries += 1;
        if b.step(chain).is_ok() {
            made += 1;
        }
    }
    // The output is the last op; leaves drawn for a step that failed are unused.
    prune(b.graph)
}

/// Drop nodes the output does not reach, renumbering arguments.
pub fn prune(mut g: Graph) -> Graph {
    let n = g.nodes.len();
    let mut live = vec![false; n];
    if n > 0 {
        live[n - 1] = true;
    }
    for i in (0..n).rev() {
        if live[i] {
            if let Node::Op { args, .. } = &g.nodes[i] {
                for &a in args {
                    live[a] = true;
                }
            }
        }
    }
    let mut map = vec![usize::MAX; n];
    let mut kept = Vec::new();
    for (i, node) in g.nodes.drain(..).enumerate() {
        if live[i] {
            map[i] = kept.len();
            kept.push(match node {
                Node::Op { op, args } => Node::Op {
                    op,
                    args: args.iter().map(|&a| map[a]).collect(),
                },
                other => other,
            });
        }
    }
    g.nodes = kept;
    g
}

fn shapes_of(g: &Graph) -> std::result::Result<Vec<Vec<usize>>, String> {
    // Building is lazy: nothing runs, so this only checks shapes.
    shadergrad::with_device(Device::Cpu, || {
        shadergrad::no_grad(|| {
            build(g, false).map(|(vals, _)| vals.iter().map(|t| t.shape().to_vec()).collect())
        })
    })
    .map_err(|e| e.to_string())
}

fn leaf_tensor(node: &Node) -> Result<Tensor> {
    match node {
        Node::Leaf {
            shape,
            seed,
            specials,
        } => {
            let mut data = leaf_data(numel(shape), *seed);
            if *specials {
                const SPECIAL: [f32; 7] = [
                    0.0,
                    -0.0,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    f32::NAN,
                    1e15,
                    -1e15,
                ];
                let mut rng = Rng::new(!seed);
                for v in data.iter_mut() {
                    if rng.chance(0.15) {
                        *v = SPECIAL[rng.range(0, SPECIAL.len() - 1)];
                    }
                }
            }
            Tensor::from_vec(data, shape)
        }
        Node::Index { shape, bound, seed } => {
            Tensor::from_slice_i32(&index_data(numel(shape), *bound, *seed), shape)
        }
        Node::Op { .. } => unreachable!("not a leaf"),
    }
}

fn positive(x: &Tensor, c: f32) -> Tensor {
    x.abs().add_scalar(c)
}

fn apply(op: &FuzzOp, a: &[&Tensor]) -> Result<Tensor> {
    let x = a[0];
    Ok(match op {
        FuzzOp::Unary(u) => match u {
            Unary::Neg => x.neg(),
            Unary::Exp => x.clamp(-4.0, 4.0)?.exp(),
            Unary::Log => positive(x, 0.5).log(),
            Unary::Sqrt => positive(x, 0.1).sqrt(),
            Unary::Recip => positive(x, 0.5).recip(),
            // WGSL promises sin/cos accuracy on [-pi, pi] only; a GPU may
            // reduce large arguments coarsely.
            Unary::Sin => x.clamp(-10.0, 10.0)?.sin(),
            Unary::Cos => x.clamp(-10.0, 10.0)?.cos(),
            Unary::Tanh => x.tanh(),
            Unary::Erf => x.erf(),
            Unary::Relu => x.relu(),
            Unary::LeakyRelu => x.leaky_relu(0.1),
            Unary::Gelu => x.gelu(),
            Unary::GeluTanh => x.gelu_tanh(),
            Unary::Sigmoid => x.sigmoid(),
            Unary::Silu => x.silu(),
            Unary::Softplus => x.softplus(),
            Unary::Square => x.square(),
            Unary::Abs => x.abs(),
            Unary::Sign => x.sign(),
            Unary::PowScalar => positive(x, 0.5).pow_scalar(1.5),
            Unary::AffineScalar => x
                .mul_scalar(1.7)
                .sub_scalar(0.3)
                .rsub_scalar(1.0)
                .div_scalar(3.0),
            Unary::Clamp => x.clamp(-0.5, 0.5)?,
            Unary::MaxScalar => x.maximum_scalar(0.2).minimum_scalar(0.9),
            Unary::GtScalar => x.gt_scalar(0.1),
            Unary::CastRoundTrip => x.mul_scalar(7.0).cast(DType::I32).cast(DType::F32),
        },
        FuzzOp::Binary(b) => {
            let y = a[1];
            match b {
                Binary::Add => x.add(y)?,
                Binary::Sub => x.sub(y)?,
                Binary::Mul => x.mul(y)?,
                Binary::Div => x.div(&positive(y, 0.5))?,
                Binary::Maximum => x.maximum(y)?,
                Binary::Minimum => x.minimum(y)?,
                Binary::Pow => positive(x, 0.5).pow(&y.clamp(-2.0, 2.0)?)?,
                Binary::Lt => x.lt(y)?,
                Binary::Eq => x.eq(y)?,
            }
        }
        FuzzOp::Where => Tensor::where_(&x.gt_scalar(0.0), a[1], a[2])?,
        FuzzOp::Reduce { op, axes, keepdim } => match op {
            Reduce::Sum => x.sum(axes, *keepdim)?,
            Reduce::Mean => x.mean(axes, *keepdim)?,
            Reduce::Max => x.max(axes, *keepdim)?,
            Reduce::Min => x.min(axes, *keepdim)?,
            Reduce::Var => x.var(axes, *keepdim)?,
        },
        FuzzOp::Softmax { axis, log } => {
            if *log {
                x.log_softmax(*axis)?
            } else {
                x.softmax(*axis)?
            }
        }
        FuzzOp::Argmax { axis } => x.argmax(*axis, false)?.cast(DType::F32),
        FuzzOp::Reshape(s) => x.reshape(s)?,
        FuzzOp::Permute(p) => x.permute(p)?,
        FuzzOp::Expand(s) => x.expand(s)?,
        FuzzOp::Shrink(r) => x.shrink(r)?,
        FuzzOp::Pad(p) => x.pad(p)?,
        FuzzOp::Contiguous => x.contiguous(),
        FuzzOp::Cat { axis } => Tensor::cat(&[x.clone(), a[1].clone()], *axis)?,
        FuzzOp::Stack { axis } => Tensor::stack(&[x.clone(), a[1].clone()], *axis)?,
        FuzzOp::MatMul => x.matmul(a[1])?,
        FuzzOp::Conv2d {
            stride,
            padding,
            dilation,
            groups,
        } => {
            let opts = Conv2dOpts::default()
                .stride(*stride)
                .padding(*padding)
                .dilation(*dilation)
                .groups(*groups);
            x.conv2d(a[1], a.get(2).copied(), opts)?
        }
        FuzzOp::ConvTranspose2d {
            stride,
            padding,
            output_padding,
            groups,
        } => {
            let opts = Conv2dOpts::default()
                .stride(*stride)
                .padding(*padding)
                .groups(*groups);
            x.conv_transpose2d(
                a[1],
                a.get(2).copied(),
                opts,
                (*output_padding, *output_padding),
            )?
        }
        FuzzOp::MaxPool2d {
            kernel,
            stride,
            padding,
        } => x.max_pool2d(*kernel, *stride, *padding)?,
        FuzzOp::AvgPool2d {
            kernel,
            stride,
            padding,
        } => x.avg_pool2d(*kernel, *stride, *padding)?,
        FuzzOp::Gather { axis } => x.gather(*axis, a[1])?,
        FuzzOp::ScatterAdd { axis } => x.scatter_add(*axis, a[1], a[2])?,
        FuzzOp::Embedding => Tensor::embedding(x, a[1])?,
        FuzzOp::Attention { causal } => {
            let mut opts = match a.get(3) {
                Some(mask) => AttentionOpts::key_mask(mask),
                None => AttentionOpts::default(),
            };
            opts.causal = *causal;
            Tensor::attention(x, a[1], a[2], &opts)?
        }
        FuzzOp::Loss(l) => match l {
            Loss::Mse => x.mse_loss(a[1])?,
            // Targets in [0, 1].
            Loss::Bce => x.bce_with_logits(&a[1].add_scalar(1.0).mul_scalar(0.5))?,
            Loss::CrossEntropy => x.cross_entropy(a[1], 0.0)?,
            Loss::CrossEntropySmoothed => x.cross_entropy(a[1], 0.1)?,
        },
    })
}

/// Every node's tensor on the current default device; float leaves are
/// marked for gradients when `grads`. Returns the values and the indices
/// of the float leaves.
fn build(g: &Graph, grads: bool) -> Result<(Vec<Tensor>, Vec<usize>)> {
    let mut vals: Vec<Tensor> = Vec::with_capacity(g.nodes.len());
    let mut leaves = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let t = match node {
            Node::Op { op, args } => {
                let a: Vec<&Tensor> = args.iter().map(|&j| &vals[j]).collect();
                apply(op, &a)?
            }
            Node::Leaf { .. } => {
                leaves.push(i);
                let t = leaf_tensor(node)?;
                if grads {
                    t.with_grad()
                } else {
                    t
                }
            }
            Node::Index { .. } => leaf_tensor(node)?,
        };
        vals.push(t);
    }
    Ok((vals, leaves))
}

/// The output and the gradient of `sum(output * w)` (fixed random `w`) with
/// respect to every float leaf, on `device`.
pub struct Evaluation {
    pub output: Vec<f32>,
    pub shape: Vec<usize>,
    pub grads: Vec<(usize, Vec<f32>)>,
}

pub fn evaluate(g: &Graph, device: Device) -> Result<Evaluation> {
    shadergrad::with_device(device, || {
        let (vals, leaves) = build(g, true)?;
        let out = vals.last().cloned().unwrap_or_else(|| Tensor::scalar(0.0));
        let out = if out.dtype() == DType::F32 {
            out
        } else {
            out.cast(DType::F32)
        };
        let w = Tensor::from_vec(leaf_data(out.numel(), 0x5EED), out.shape())?;
        let loss = out.mul(&w)?.sum_all();
        let wanted: Vec<Tensor> = leaves.iter().map(|&i| vals[i].clone()).collect();
        let grads = if out.requires_grad() {
            shadergrad::grad(&loss, &wanted)?
        } else {
            Vec::new()
        };
        let mut all = vec![out.clone()];
        all.extend(grads.iter().cloned());
        Tensor::realize_all(&all)?;
        Ok(Evaluation {
            output: out.to_vec()?,
            shape: out.shape().to_vec(),
            grads: leaves
                .iter()
                .zip(&grads)
                .map(|(&i, g)| Ok((i, g.to_vec()?)))
                .collect::<Result<_>>()?,
        })
    })
}

/// Relative tolerances of the output and of the gradients: the sum of the
/// error weights of every op on the way (the backward pass goes through
/// each op again, and its reductions add their own).
pub fn tolerance(g: &Graph) -> (f64, f64) {
    let shapes = shapes_of(g).unwrap_or_default();
    let mut weight = 0.0;
    for node in &g.nodes {
        if let Node::Op { op, args } = node {
            let arg_shapes: Vec<&[usize]> = args
                .iter()
                .map(|&a| shapes.get(a).map_or(&[][..], |s| &s[..]))
                .collect();
            weight += op.error_weight(&arg_shapes);
        }
    }
    let forward = 2e-6 * (weight + 2.0);
    (forward, forward * 4.0)
}

/// Normwise difference: max |got - want| over the largest |want| (at least
/// `floor`), with non-finite values required at the same places.
fn compare(
    what: &str,
    got: &[f32],
    want: &[f32],
    floor: f64,
    tol: f64,
) -> std::result::Result<f64, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values on the GPU, {} on the cpu",
            got.len(),
            want.len()
        ));
    }
    let scale = want
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(v.abs() as f64));
    let mut worst = (0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !w.is_finite() || !g.is_finite() {
            if !(g == w || g.is_nan() && w.is_nan()) {
                return Err(format!("{what}[{i}]: GPU {g}, cpu {w}"));
            }
            continue;
        }
        let d = (g as f64 - w as f64).abs();
        if d > worst.0 {
            worst = (d, i);
        }
    }
    let rel = worst.0 / scale.max(floor).max(1e-6);
    if rel > tol {
        let i = worst.1;
        return Err(format!(
            "{what}[{i}]: GPU {}, cpu {} (difference {:.3e} of the largest |value| {:.3e}; tolerance {tol:.1e})",
            got[i], want[i], rel, scale
        ));
    }
    Ok(rel / tol)
}

/// The outcome of one graph.
#[derive(Debug)]
pub enum Outcome {
    /// Agreed; the worst difference as a fraction of the tolerance.
    Pass(f64),
    /// The graph is not valid on the cpu backend either (a generator gap).
    Rejected(String),
    /// A finding.
    Fail(String),
}

/// Evaluate on both devices and compare, turning panics into findings.
pub fn check(g: &Graph, gpu: Device) -> Outcome {
    let run = |d: Device| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| evaluate(g, d))).map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into())
        })
    };
    let want = match run(Device::Cpu) {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return Outcome::Rejected(e.to_string()),
        Err(p) => return Outcome::Fail(format!("the cpu backend panicked: {p}")),
    };
    let got = match run(gpu) {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return Outcome::Fail(format!("the GPU failed where the cpu did not: {e}")),
        Err(p) => return Outcome::Fail(format!("the GPU path panicked: {p}")),
    };
    if got.shape != want.shape {
        return Outcome::Fail(format!(
            "output shape {:?} on the GPU, {:?} on the cpu",
            got.shape, want.shape
        ));
    }
    let (tf, tb) = tolerance(g);
    // A value that is zero in exact arithmetic (the gradient of a bias under
    // a softmax over its own axis, dq with a single key) comes out as
    // rounding noise of the O(1) terms that cancel; so no tensor is compared
    // on a scale below a tenth of the largest value of the evaluation.
    let largest = |v: &[f32]| {
        v.iter()
            .filter(|x| x.is_finite())
            .fold(0f64, |m, x| m.max(x.abs() as f64))
    };
    let floor = 0.1
        * want
            .grads
            .iter()
            .map(|(_, v)| largest(v))
            .fold(largest(&want.output), f64::max);
    let mut worst = match compare("output", &got.output, &want.output, floor, tf) {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(e),
    };
    for ((i, gg), (_, wg)) in got.grads.iter().zip(&want.grads) {
        match compare(&format!("gradient of node {i}"), gg, wg, floor, tb) {
            Ok(r) => worst = worst.max(r),
            Err(e) => return Outcome::Fail(e),
        }
    }
    Outcome::Pass(worst)
}

/// Make a failing graph smaller while it still fails: end it at an earlier
/// node, replace op nodes by leaves of their shape, drop what is unused.
pub fn shrink(g: &Graph, still_fails: impl Fn(&Graph) -> bool) -> Graph {
    let mut best = g.clone();
    loop {
        let mut improved = false;
        // An earlier output.
        for end in 1..best.nodes.len() {
            if !matches!(best.nodes[end - 1], Node::Op { .. }) {
                continue;
            }
            let cand = prune(Graph {
                seed: best.seed,
                nodes: best.nodes[..end].to_vec(),
            });
            if still_fails(&cand) {
                best = cand;
                improved = true;
                break;
            }
        }
        // Cut an input's history: the op node becomes a leaf of its shape.
        let shapes = shapes_of(&best).unwrap_or_default();
        for i in 0..best.nodes.len().saturating_sub(1) {
            if !matches!(best.nodes[i], Node::Op { .. }) || i >= shapes.len() {
                continue;
            }
            let mut cand = best.clone();
            cand.nodes[i] = Node::Leaf {
                shape: shapes[i].clone(),
                seed: i as u64 + 1,
                specials: false,
            };
            let cand = prune(cand);
            if still_fails(&cand) {
                best = cand;
                improved = true;
                break;
            }
        }
        if !improved {
            return best;
        }
    }
}

/// The graph as readable lines, one per node.
pub fn describe(g: &Graph) -> String {
    let shapes = shapes_of(g).unwrap_or_default();
    let mut s = String::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let shape = shapes.get(i).map(|s| format!("{s:?}")).unwrap_or_default();
        let _ = match node {
            Node::Leaf { .. } => writeln!(s, "  %{i} = leaf {shape}"),
            Node::Index { bound, .. } => writeln!(s, "  %{i} = index {shape} < {bound}"),
            Node::Op { op, args } => {
                let args: Vec<String> = args.iter().map(|a| format!("%{a}")).collect();
                writeln!(s, "  %{i} = {op:?}({}) -> {shape}", args.join(", "))
            }
        };
    }
    s
}

/// Counts per op kind over many graphs.
pub fn coverage(graphs: &[Graph]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for g in graphs {
        for n in &g.nodes {
            if let Node::Op { op, .. } = n {
                *m.entry(op.kind()).or_insert(0) += 1;
            }
        }
    }
    m
}

/// Every op kind the generator can draw (for the coverage report).
pub const OP_KINDS: usize = 25 + 9 + 1 + 5 + 2 + 1 + 9 + 4 + 3 + 1 + 4;
