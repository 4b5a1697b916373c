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
            Op::Output(_) => "output",
            Op::ToDevice => "to_device",
        }
    }

    /// How many tensors one execution produces. A node of several outputs
    /// is seen only through `Output(i)` nodes, each with its own shape and
    /// type; the node's own shape and type are its first output's.
    pub fn outputs(&self) -> usize {
        match self {
            Op::MaxPool2d(_) => 2,
            _ => 1,
        }
    }
}
