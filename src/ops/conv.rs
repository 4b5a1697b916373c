//! Convolution and pooling (NCHW).

use crate::op::{ConvGeom, Op, PoolGeom};
use crate::ops::{ensure_f32, ensure_rank};
use crate::{DType, Error, Result, Tensor};

/// Options of a 2-D convolution; `Conv2dOpts::default()` is stride 1, no
/// padding, no dilation, one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOpts {
    /// Step between windows (rows, columns).
    pub stride: (usize, usize),
    /// Zero padding on each side (rows, columns).
    pub padding: (usize, usize),
    /// Spacing of the kernel's taps (rows, columns).
    pub dilation: (usize, usize),
    /// Channel groups (1: a full convolution).
    pub groups: usize,
}

impl Default for Conv2dOpts {
    fn default() -> Self {
        Conv2dOpts {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl Conv2dOpts {
    /// The same stride on both axes.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }
    /// The same padding on both axes.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }
    /// The same dilation on both axes.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
    /// `g` channel groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    fn geom(&self) -> ConvGeom {
        ConvGeom {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
        }
    }
}

/// Output length of a sliding window, or None when the window does not fit.
fn out_len(input: usize, kernel: usize, stride: usize, pad: usize, dil: usize) -> Option<usize> {
    let span = dil.checked_mul(kernel.checked_sub(1)?)?.checked_add(1)?;
    let padded = input.checked_add(pad.checked_mul(2)?)?;
    if padded < span {
        return None;
    }
    Some((padded - span) / stride + 1)
}

fn check_geom(op: &'static str, g: &ConvGeom) -> Result<()> {
    if g.stride.0 == 0 || g.stride.1 == 0 || g.dilation.0 == 0 || g.dilation.1 == 0 || g.groups == 0
    {
        return Err(Error::param(
            op,
            format!(
                "stride {:?}, dilation {:?} and groups {} must all be at least 1",
                g.stride, g.dilation, g.groups
            ),
        ));
    }
    Ok(())
}

/// Output `[n, o, oh, ow]` of conv2d for x and w, validating every parameter.
fn conv_out_shape(op: &'static str, x: &[usize], w: &[usize], g: &ConvGeom) -> Result<Vec<usize>> {
    check_geom(op, g)?;
    let (c, o, cg) = (x[1], w[0], w[1]);
    if c % g.groups != 0 || o % g.groups != 0 {
        return Err(Error::shape(
            op,
            &[x, w],
            format!(
                "{c} input and {o} output channels must both divide by groups = {}",
                g.groups
            ),
        ));
    }
    if cg * g.groups != c {
        return Err(Error::shape(
            op,
            &[x, w],
            format!("weight expects {} input channels per group ({} in all) but the input has {c}; weight must be [out, in/groups, kh, kw]", cg, cg * g.groups),
        ));
    }
    let oh = out_len(x[2], w[2], g.stride.0, g.padding.0, g.dilation.0);
    let ow = out_len(x[3], w[3], g.stride.1, g.padding.1, g.dilation.1);
    match (oh, ow) {
        (Some(oh), Some(ow)) => Ok(vec![x[0], o, oh, ow]),
        _ => Err(Error::shape(
            op,
            &[x, w],
            format!(
                "the {}x{} kernel (dilation {:?}) does not fit the {}x{} input with padding {:?}; use a smaller kernel or more padding",
                w[2], w[3], g.dilation, x[2], x[3], g.padding
            ),
        )),
    }
}

impl Tensor {
    /// 2-D convolution: x `[n, c, h, w]`, weight `[o, c/groups, kh, kw]`, bias `[o]`.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        opts: Conv2dOpts,
    ) -> Result<Tensor> {
        ensure_f32("conv2d", self)?;
        ensure_f32("conv2d", weight)?;
        crate::ops::same_device("conv2d", &[self, weight])?;
        ensure_rank("conv2d", self, 4, "input [n, c, h, w]")?;
        ensure_rank("conv2d", weight, 4, "weight [o, c/groups, kh, kw]")?;
        let g = opts.geom();
        let shape = conv_out_shape("conv2d", self.shape(), weight.shape(), &g)?;
        let y = Tensor::from_op(
            Op::Conv2d(g),
            vec![self.clone(), weight.clone()],
            shape,
            DType::F32,
        );
        add_channel_bias("conv2d", y, bias)
    }

    /// Transposed convolution (the gradient of conv2d with respect to its
    /// input): x `[n, c_in, h, w]`, weight `[c_in, c_out/groups, kh, kw]`.
    pub fn conv_transpose2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        opts: Conv2dOpts,
        output_padding: (usize, usize),
    ) -> Result<Tensor> {
        ensure_f32("conv_transpose2d", self)?;
        ensure_f32("conv_transpose2d", weight)?;
        crate::ops::same_device("conv_transpose2d", &[self, weight])?;
        ensure_rank("conv_transpose2d", self, 4, "input [n, c_in, h, w]")?;
        ensure_rank(
            "conv_transpose2d",
            weight,
            4,
            "weight [c_in, c_out/groups, kh, kw]",
        )?;
        let g = opts.geom();
        check_geom("conv_transpose2d", &g)?;
        if output_padding.0 >= g.stride.0.max(g.dilation.0)
            || output_padding.1 >= g.stride.1.max(g.dilation.1)
        {
            return Err(Error::param(
                "conv_transpose2d",
                format!(
                    "output_padding {output_padding:?} must be smaller than stride or dilation"
                ),
            ));
        }
        let (n, cin, h, w) = (
            self.shape()[0],
            self.shape()[1],
            self.shape()[2],
            self.shape()[3],
        );
        let (kh, kw) = (weight.shape()[2], weight.shape()[3]);
        let size = |i: usize, s: usize, p: usize, d: usize, k: usize, op: usize| -> Option<usize> {
            let full = i
                .checked_sub(1)?
                .checked_mul(s)?
                .checked_add(d.checked_mul(k.checked_sub(1)?)?)?
                .checked_add(op + 1)?;
            full.checked_sub(p.checked_mul(2)?)
        };
        let (Some(oh), Some(ow)) = (
            size(
                h,
                g.stride.0,
                g.padding.0,
                g.dilation.0,
                kh,
                output_padding.0,
            ),
            size(
                w,
                g.stride.1,
                g.padding.1,
                g.dilation.1,
                kw,
                output_padding.1,
            ),
        ) else {
            return Err(Error::shape(
                "conv_transpose2d",
                &[self.shape(), weight.shape()],
                "padding is larger than the output; reduce padding",
            ));
        };
        let x_shape = vec![n, weight.shape()[1] * g.groups, oh, ow];
        // Check the forward conv of the result gives back our input shape.
        let fwd = conv_out_shape("conv_transpose2d", &x_shape, weight.shape(), &g)?;
        if fwd[1] != cin || fwd[2] != h || fwd[3] != w {
            return Err(Error::shape(
                "conv_transpose2d",
                &[self.shape(), weight.shape()],
                format!("weight's first axis must equal the {cin} input channels"),
            ));
        }
        let y = Tensor::from_op(
            Op::Conv2dBackwardData(g),
            vec![self.clone(), weight.clone()],
            x_shape,
            DType::F32,
        );
        add_channel_bias("conv_transpose2d", y, bias)
    }

    pub(crate) fn conv2d_backward_data(
        dy: &Tensor,
        w: &Tensor,
        g: ConvGeom,
        x_shape: &[usize],
    ) -> Tensor {
        Tensor::from_op(
            Op::Conv2dBackwardData(g),
            vec![dy.clone(), w.clone()],
            x_shape.to_vec(),
            DType::F32,
        )
    }

    pub(crate) fn conv2d_backward_filter(
        x: &Tensor,
        dy: &Tensor,
        g: ConvGeom,
        w_shape: &[usize],
    ) -> Tensor {
        Tensor::from_op(
            Op::Conv2dBackwardFilter(g),
            vec![x.clone(), dy.clone()],
            w_shape.to_vec(),
            DType::F32,
        )
    }

    pub(crate) fn conv2d_raw(x: &Tensor, w: &Tensor, g: ConvGeom, y_shape: &[usize]) -> Tensor {
        Tensor::from_op(
            Op::Conv2d(g),
            vec![x.clone(), w.clone()],
            y_shape.to_vec(),
            DType::F32,
        )
    }

    fn pool2d(
        &self,
        op: &'static str,
        kind: PoolKind,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Tensor> {
        ensure_f32(op, self)?;
        ensure_rank(op, self, 4, "input [n, c, h, w]")?;
        if kernel == 0 || stride == 0 {
            return Err(Error::param(
                op,
                format!("kernel {kernel} and stride {stride} must be at least 1"),
            ));
        }
        if 2 * padding > kernel {
            return Err(Error::param(
                op,
                format!("padding {padding} must be at most half the kernel {kernel}"),
            ));
        }
        let s = self.shape();
        let (Some(oh), Some(ow)) = (
            out_len(s[2], kernel, stride, padding, 1),
            out_len(s[3], kernel, stride, padding, 1),
        ) else {
            return Err(Error::shape(
                op,
                &[s],
                format!(
                    "a {kernel}x{kernel} window does not fit the {}x{} input",
                    s[2], s[3]
                ),
            ));
        };
        let geom = PoolGeom {
            kernel: (kernel, kernel),
            stride: (stride, stride),
            padding: (padding, padding),
        };
        let shape = vec![s[0], s[1], oh, ow];
        Ok(match kind {
            PoolKind::Max => {
                if let Some(pooled) = self.max_pool_first(|x| x.max_pool2d(kernel, stride, padding))
                {
                    return pooled;
                }
                // The argmax output is made again by the gradient rule.
                Tensor::multi(
                    Op::MaxPool2d(geom),
                    vec![self.clone()],
                    &[(shape.clone(), DType::F32), (shape, DType::I32)],
                )
                .swap_remove(0)
            }
            PoolKind::Avg => {
                Tensor::from_op(Op::AvgPool2d(geom), vec![self.clone()], shape, DType::F32)
            }
        })
    }

    /// Max pooling commutes with ReLU and with adding a per-channel constant,
    /// exactly, rounding included (both are monotone per element). So when
    /// this tensor is `relu(v)` and/or `v + bias[c]` (a layer's bias and
    /// activation), pool `v` and apply the rest to the pooled tensor: the
    /// usual conv -> bias -> relu -> pool block then runs its elementwise
    /// work, and their gradients, on a tensor the pool made several times
    /// smaller. Returns None when nothing matches. (NaN is the exception:
    /// a window holding a NaN gives 0 this way, not its largest other value;
    /// either way training has already diverged.)
    fn max_pool_first(&self, pool: impl Fn(&Tensor) -> Result<Tensor>) -> Option<Result<Tensor>> {
        if self.is_realized() {
            return None;
        }
        if let Some(v) = self.relu_input() {
            return Some(pool(v).map(|p| p.relu()));
        }
        let [x, e] = self.inputs() else { return None };
        if *self.op() != Op::Binary(crate::op::BinaryOp::Add) {
            return None;
        }
        let channel_constant = |t: &Tensor| {
            *t.op() == Op::Expand
                && !t.is_realized()
                && t.inputs()[0].shape() == [1, self.shape()[1], 1, 1]
        };
        let (x, e) = if channel_constant(e) {
            (x, e)
        } else if channel_constant(x) {
            (e, x)
        } else {
            return None;
        };
        Some(pool(x).and_then(|p| p.add(&e.inputs()[0])))
    }

    /// `v` when this tensor is `relu(v)`.
    fn relu_input(&self) -> Option<&Tensor> {
        match (self.op(), self.inputs()) {
            (Op::Unary(crate::op::UnaryOp::Relu), [v]) => Some(v),
            _ => None,
        }
    }

    /// Max over `kernel`x`kernel` windows (padding counts as -inf).
    pub fn max_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
        self.pool2d("max_pool2d", PoolKind::Max, kernel, stride, padding)
    }

    /// Max pooling and, for each window, the index within its plane
    /// (`y * w + x`, i32) of its first maximum in row-major order, from one
    /// kernel (PyTorch's `max_pool2d(..., return_indices=True)`).
    pub fn max_pool2d_with_indices(
        &self,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<(Tensor, Tensor)> {
        // The shape checks, without the relu/bias rewrite (which would
        // change the indices).
        let shape = self.pool2d("max_pool2d", PoolKind::Avg, kernel, stride, padding)?;
        let geom = PoolGeom {
            kernel: (kernel, kernel),
            stride: (stride, stride),
            padding: (padding, padding),
        };
        let out = shape.shape().to_vec();
        let mut outs = Tensor::multi(
            Op::MaxPool2d(geom),
            vec![self.clone()],
            &[(out.clone(), DType::F32), (out, DType::I32)],
        );
        let indices = outs.swap_remove(1);
        Ok((outs.swap_remove(0), indices))
    }

    /// Mean over windows; padded positions count as zeros (PyTorch's default).
    pub fn avg_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
        self.pool2d("avg_pool2d", PoolKind::Avg, kernel, stride, padding)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PoolKind {
    Max,
    Avg,
}

fn add_channel_bias(op: &'static str, y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let Some(b) = bias else { return Ok(y) };
    crate::ops::same_device(op, &[&y, b])?;
    if b.shape() != [y.shape()[1]] {
        return Err(Error::shape(
            op,
            &[b.shape(), y.shape()],
            format!(
                "bias must be [{}], one value per output channel",
                y.shape()[1]
            ),
        ));
    }
    y.add(&b.reshape(&[1, y.shape()[1], 1, 1])?)
}
