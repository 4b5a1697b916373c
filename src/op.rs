//! The primitive operations. Everything else in the library is composed of
//! these, so each one has a CPU kernel, a gradient rule and tests.

use crate::DType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Recip,
    Sin,
    Tanh,
    /// The Gauss error function: exact GELU needs it and it does not compose well.
    Erf,
    /// `x` where positive, else 0 (NaN included). A primitive so that its
    /// gradient masks by the output, which the forward pass keeps anyway:
    /// the pre-activation need not be, and a GEMM can write the output
    /// with its bias in the epilogue.
    Relu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Mul,
    Max,
    /// `a^b`; a primitive so that negative bases with integral exponents work.
    Pow,
    /// 1.0 where `a < b`, else 0.0.
    CmpLt,
    /// 1.0 where `a == b`, else 0.0.
    CmpEq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
}

/// Geometry shared by the convolution primitives (2-D, NCHW, OIHW weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeom {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

/// Geometry of a pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolGeom {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

/// One Adam/AdamW update (Kingma & Ba; AdamW's decoupled weight decay when
/// `weight_decay` is nonzero) at step `t` (from 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first-moment average.
    pub beta1: f32,
    /// Decay of the second-moment average.
    pub beta2: f32,
    /// Added to the root of the second moment.
    pub eps: f32,
    /// Decoupled weight decay (AdamW); 0 for Adam.
    pub weight_decay: f32,
    /// The step number, from 1 (bias correction).
    pub t: i32,
}

/// The f32 constants of an Adam update, computed one way for every backend
/// and for the unfused reference, so all of them round alike.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdamConstants {
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    /// 1 / (1 - beta1^t), 1 / (1 - beta2^t): the bias corrections.
    pub inv_c1: f32,
    pub inv_c2: f32,
    /// lr * weight_decay.
    pub lr_wd: f32,
}

impl AdamStep {
    pub(crate) fn constants(&self) -> AdamConstants {
        let c1 = 1.0 - self.beta1.powi(self.t);
        let c2 = 1.0 - self.beta2.powi(self.t);
        AdamConstants {
            one_minus_beta1: 1.0 - self.beta1,
            one_minus_beta2: 1.0 - self.beta2,
            inv_c1: 1.0 / c1,
            inv_c2: 1.0 / c2,
            lr_wd: self.lr * self.weight_decay,
        }
    }
}

/// One SGD update: momentum 0 is plain gradient descent; weight decay is
/// added to the gradient (L2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    /// Learning rate.
    pub lr: f32,
    /// Momentum (0: none).
    pub momentum: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
}

/// Scaled dot-product attention: `softmax(q k^T * scale + mask) v` per
/// (batch, head), with q `[b, h, lq, d]`, k `[b, hk, lk, d]`, v `[b, hk,
/// lk, dv]`; `hk` divides `h` and query head `i` reads key/value head
/// `i / (h / hk)` (grouped or multi-query heads).
///
/// A key is visible to a query when it passes both masks: `causal` hides
/// key `j` from query `i` when `j > i` (top-left aligned, as PyTorch's
/// `is_causal`), and `key_mask` (an extra input `[b, lk]`, nonzero = keep)
/// hides padding. A query that sees no key gets a zero output row, a zero
/// gradient and a log-sum-exp of -inf.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionSpec {
    pub scale: f32,
    pub causal: bool,
    pub key_mask: bool,
}

/// A node's operation. Graph nodes hold data, never closures; shapes of the
/// output are stored on the node.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    // ---- leaves
    /// A value that already exists (user data, parameters, realized results).
    Buffer,
    /// Every element equal to a constant.
    Full(f32),
    /// Uniform [0, 1) from a counter-based generator: element i = hash(seed, i).
    Rand {
        seed: u64,
    },
    /// `start + i * step`, in the node's dtype.
    Arange {
        start: f64,
        step: f64,
    },

    // ---- elementwise (inputs already have the output's shape)
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `cond != 0 ? a : b`.
    Where,
    Cast(DType),
    /// Identity that stops gradients.
    Detach,

    // ---- reductions (output keeps reduced axes as size 1)
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
    },

    // ---- views
    Reshape,
    Permute(Vec<usize>),
    /// Stretch size-1 axes; same rank.
    Expand,
    /// Keep `start..end` of each axis.
    Shrink(Vec<(usize, usize)>),
    /// Zero padding `(before, after)` per axis.
    Pad(Vec<(usize, usize)>),
    Contiguous,

    // ---- heavy kernels
    /// `[..., m, k] @ [..., k, n]`, equal batch shapes.
    MatMul,
    /// inputs (x `[n, c, h, w]`, weight `[o, c/g, kh, kw]`).
    Conv2d(ConvGeom),
    /// Gradient of conv2d with respect to its input (also transposed
    /// convolution). inputs (dy `[n, o, oh, ow]`, weight).
    Conv2dBackwardData(ConvGeom),
    /// Gradient of conv2d with respect to its weight. inputs (x, dy).
    Conv2dBackwardFilter(ConvGeom),
    /// inputs (x); two outputs: each window's maximum (NaN when it holds
    /// one), and the index within its plane (`y * w + x`, i32) of the
    /// window's first maximum in row-major order.
    MaxPool2d(PoolGeom),
    /// inputs (argmax from `MaxPool2d`, dy); output has x's shape: each
    /// window's gradient goes to its argmax.
    MaxPool2dBackward(PoolGeom),
    /// Average that counts padded positions (PyTorch's default
    /// `count_include_pad`). inputs (x).
    AvgPool2d(PoolGeom),
    /// inputs (dy); output has x's shape.
    AvgPool2dBackward(PoolGeom),
    /// `out[.., i, ..] = src[.., index[.., i, ..], ..]` along `axis`;
    /// inputs (src, index i32); output has index's shape.
    Gather {
        axis: usize,
    },
    /// Adjoint of gather: zeros of the output shape, then
    /// `out[.., index[..], ..] += src[..]`. inputs (index i32, src).
    ScatterAdd {
        axis: usize,
    },
    /// Fused attention (see [`AttentionSpec`]): the scores are computed
    /// block by block with an online softmax and never stored. inputs (q,
    /// k, v [, key_mask]); outputs (out `[b, h, lq, dv]`, the log-sum-exp
    /// of each query's scaled, masked scores `[b, h, lq]`).
    Attention(AttentionSpec),
    /// Attention's gradients from the forward's log-sum-exp. inputs (q, k,
    /// v [, key_mask], lse, delta `[b, h, lq]` = rowsum(dout * out), dout);
    /// outputs (dq, dk, dv).
    AttentionBackward(AttentionSpec),

    // ---- optimizer updates, one kernel per parameter
    /// inputs (param, grad, m, v); outputs (param, m, v) after the step.
    AdamUpdate(AdamStep),
    /// inputs (param, grad) and, with momentum, the velocity; outputs the
    /// param and, with momentum, the velocity after the step.
    SgdUpdate(SgdStep),

    // ---- plumbing
    /// Output `i` of its one input, a node with several outputs.
    Output(usize),
    /// Its input's value on this node's device.
    ToDevice,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Buffer => "buffer",
            Op::Full(_) => "full",
            Op::Rand { .. } => "rand",
            Op::Arange { .. } => "arange",
            Op::Unary(_) => "unary",
            Op::Binary(_) => "binary",
            Op::Where => "where",
            Op::Cast(_) => "cast",
            Op::Detach => "detach",
            Op::Reduce { .. } => "reduce",
            Op::Reshape => "reshape",
            Op::Permute(_) => "permute",
            Op::Expand => "expand",
            Op::Shrink(_) => "shrink",
            Op::Pad(_) => "pad",
            Op::Contiguous => "contiguous",
            Op::MatMul => "matmul",
            Op::Conv2d(_) => "conv2d",
            Op::Conv2dBackwardData(_) => "conv2d_backward_data",
            Op::Conv2dBackwardFilter(_) => "conv2d_backward_filter",
            Op::MaxPool2d(_) => "max_pool2d",
            Op::MaxPool2dBackward(_) => "max_pool2d_backward",
            Op::AvgPool2d(_) => "avg_pool2d",
            Op::AvgPool2dBackward(_) => "avg_pool2d_backward",
            Op::Gather { .. } => "gather",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::Attention(_) => "attention",
            Op::AttentionBackward(_) => "attention_backward",
            Op::AdamUpdate(_) => "adam_update",
            Op::SgdUpdate(_) => "sgd_update",
            Op::Output(_) => "output",
            Op::ToDevice => "to_device",
        }
    }

    /// How many tensors one execution produces. A node of several outputs
    /// is seen only through `Output(i)` nodes, each with its own shape and
    /// type; the node's own shape and type are its first output's.
    pub fn outputs(&self) -> usize {
        match self {
            Op::MaxPool2d(_) | Op::Attention(_) => 2,
            Op::AttentionBackward(_) => 3,
            Op::AdamUpdate(_) => 3,
            Op::SgdUpdate(s) if s.momentum != 0.0 => 2,
            _ => 1,
        }
    }
}
