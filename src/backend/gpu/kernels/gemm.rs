//! gemm.wgsl: the register-blocked GEMM behind batched matmul and the
//! three convolutions (implicit GEMMs, no im2col buffer), and the simpler
//! matmul versions the benchmark compares it with.

use super::copy::dense;
use super::reduce::reduce;
use super::with_shape;
use crate::backend::gpu::lock;
use crate::backend::gpu::pipeline::{kernel_params, Pipeline, Shader};
use crate::backend::gpu::recorder::{Bind, Recorder, MAX_GROUPS};
use crate::backend::Value;
use crate::op::{ConvGeom, ReduceOp};
use crate::shape::{collapse, numel, Layout};
use crate::{DType, Error, Result};

kernel_params!(GemmParams {
    m: u32,
    n: u32,
    k: u32,
    n_base: u32,
    z_base: u32,
    splits: u32,
    split_k: u32,
    _pad: u32,
    a_off: u32,
    a_batch: u32,
    a_row: u32,
    a_col: u32,
    b_off: u32,
    b_batch: u32,
    b_row: u32,
    b_col: u32,
    batch: u32,
    c: u32,
    h: u32,
    w: u32,
    o: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    dh: u32,
    dw: u32,
    groups: u32,
});

/// Output tile of gemm.wgsl (both sides).
const TILE: usize = 64;

/// The operand readers gemm.wgsl compiles (its `MODE` override).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GemmMode {
    /// Batched strided matmul.
    MatMul,
    /// Convolution forward: (x, weight).
    ConvForward,
    /// Gradient with respect to the input: (dy, weight).
    ConvBackwardData,
    /// Gradient with respect to the weight: (x, dy).
    ConvBackwardFilter,
}

impl GemmMode {
    fn constant(self) -> [(&'static str, f64); 1] {
        let mode = match self {
            GemmMode::MatMul => 0.0,
            GemmMode::ConvForward => 1.0,
            GemmMode::ConvBackwardData => 2.0,
            GemmMode::ConvBackwardFilter => 3.0,
        };
        [("MODE", mode)]
    }
}

/// Dispatch a GEMM-shaped kernel over an (n tiles, m tiles, z) grid,
/// splitting x and z beyond the per-dimension workgroup limit.
fn dispatch_tiles(
    rec: &mut Recorder,
    pipeline: &Pipeline,
    params: &mut GemmParams,
    binds: &[Bind<'_>],
    tiles: (usize, usize, usize),
    op: &'static str,
) -> Result<()> {
    let (tiles_n, tiles_m, z) = tiles;
    if tiles_m > MAX_GROUPS as usize {
        return Err(Error::param(
            op,
            format!("{tiles_m} row tiles exceed the device's {MAX_GROUPS} workgroups per dimension; split the operation"),
        ));
    }
    let max = MAX_GROUPS as usize;
    let mut z0 = 0;
    while z0 < z {
        let zc = (z - z0).min(max);
        let mut n0 = 0;
        while n0 < tiles_n {
            let nc = (tiles_n - n0).min(max);
            params.n_base = n0 as u32;
            params.z_base = z0 as u32;
            rec.dispatch(
                pipeline,
                params,
                binds,
                (nc as u32, tiles_m as u32, zc as u32),
            )?;
            n0 += nc;
        }
        z0 += zc;
    }
    Ok(())
}

/// The matmul operands (made batch-strided) and their parameters, or None
/// when the output is empty or K is 0 (then the output is all it takes).
fn matmul_operands(
    rec: &mut Recorder,
    a: &Value,
    b: &Value,
    shape: &[usize],
) -> Result<(Value, Value, GemmParams, usize)> {
    let r = shape.len();
    let (m, n) = (shape[r - 2], shape[r - 1]);
    let k = a.layout.shape[r - 1];
    let batch_shape = &shape[..r - 2];
    let batch = numel(batch_shape);
    // The batch axes of both operands as one stride each, or dense copies.
    let batch_stride = |v: &Value| -> Option<(usize, usize)> {
        let l = Layout {
            shape: batch_shape.to_vec(),
            strides: v.layout.strides[..r - 2].to_vec(),
            offset: 0,
        };
        let (s, c) = collapse(batch_shape, &[&l]);
        match s.len() {
            0 => Some((0, 0)),
            1 => Some((s[0], c[0].strides[0])),
            _ => None,
        }
    };
    let (a, b) = match (batch_stride(a), batch_stride(b)) {
        (Some(_), Some(_)) => (a.clone(), b.clone()),
        _ => (dense(rec, a)?, dense(rec, b)?),
    };
    let sa = batch_stride(&a).map_or(0, |s| s.1);
    let sb = batch_stride(&b).map_or(0, |s| s.1);
    let (la, lb) = (&a.layout, &b.layout);
    let params = GemmParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        splits: 1,
        split_k: k as u32,
        a_off: la.offset as u32,
        a_batch: sa as u32,
        a_row: la.strides[r - 2] as u32,
        a_col: la.strides[r - 1] as u32,
        b_off: lb.offset as u32,
        b_batch: sb as u32,
        b_row: lb.strides[r - 2] as u32,
        b_col: lb.strides[r - 1] as u32,
        ..Default::default()
    };
    Ok((a, b, params, batch))
}

/// A matmul kernel version, kept selectable so the benchmark compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MatmulKernel {
    /// 64x64 tiles, 4x4 per invocation (what the engine runs).
    Blocked,
    /// One invocation per output, straight from memory.
    #[cfg_attr(not(any(feature = "bench", test)), allow(dead_code))]
    Naive,
    /// 16x16 tiles staged in workgroup memory.
    #[cfg_attr(not(any(feature = "bench", test)), allow(dead_code))]
    Tiled,
}

impl MatmulKernel {
    #[cfg(test)]
    pub(crate) const ALL: [MatmulKernel; 3] = [
        MatmulKernel::Naive,
        MatmulKernel::Tiled,
        MatmulKernel::Blocked,
    ];

    #[cfg(feature = "bench")]
    pub(crate) fn name(self) -> &'static str {
        match self {
            MatmulKernel::Blocked => "blocked",
            MatmulKernel::Naive => "naive",
            MatmulKernel::Tiled => "tiled",
        }
    }
}

/// `[..., m, k] @ [..., k, n]` with the given kernel version.
pub(crate) fn matmul(
    rec: &mut Recorder,
    kernel: MatmulKernel,
    a: &Value,
    b: &Value,
    shape: &[usize],
) -> Result<Value> {
    let out = rec.output("matmul", numel(shape), DType::F32)?;
    if numel(shape) == 0 {
        return Ok(with_shape(out, shape));
    }
    let (a, b, mut params, batch) = matmul_operands(rec, a, b, shape)?;
    if params.k == 0 {
        rec.clear(&out);
        return Ok(with_shape(out, shape));
    }
    let (entry, tile) = match kernel {
        MatmulKernel::Blocked => ("main", TILE),
        MatmulKernel::Naive => ("naive", 16),
        MatmulKernel::Tiled => ("tiled", 16),
    };
    let pipeline = rec
        .ctx
        .pipeline(Shader::Gemm, entry, &GemmMode::MatMul.constant())?;
    // The blocked kernel declares the convolution table; matmul never reads it.
    let unused_taps = match kernel {
        MatmulKernel::Blocked => Some(rec.output("matmul", 4, DType::I32)?),
        _ => None,
    };
    let taps = unused_taps.as_ref().map_or(Bind::Skip, Bind::Read);
    let (m, n) = (params.m as usize, params.n as usize);
    dispatch_tiles(
        rec,
        &pipeline,
        &mut params,
        &[Bind::Read(&a), Bind::Read(&b), Bind::Write(&out), taps],
        (n.div_ceil(tile), m.div_ceil(tile), batch),
        "matmul",
    )?;
    Ok(with_shape(out, shape))
}

/// One of the three convolutions. Operand pairs: forward (x, w),
/// backward-data (dy, w), backward-filter (x, dy).
pub(crate) fn conv(
    rec: &mut Recorder,
    mode: GemmMode,
    p: &Value,
    q: &Value,
    g: &ConvGeom,
    shape: &[usize],
) -> Result<Value> {
    let out = rec.output("conv2d", numel(shape), DType::F32)?;
    if numel(shape) == 0 {
        return Ok(with_shape(out, shape));
    }
    let (p, q) = (dense(rec, p)?, dense(rec, q)?);
    // x [n, c, h, w], weight [o, c/g, kh, kw], dy [n, o, oh, ow]
    let (x_shape, w_shape, y_shape): (&[usize], &[usize], &[usize]) = match mode {
        GemmMode::ConvForward => (&p.layout.shape, &q.layout.shape, shape),
        GemmMode::ConvBackwardData => (shape, &q.layout.shape, &p.layout.shape),
        _ => (&p.layout.shape, shape, &q.layout.shape),
    };
    let (nb, c, h, w) = (x_shape[0], x_shape[1], x_shape[2], x_shape[3]);
    let (o, kh, kw) = (w_shape[0], w_shape[2], w_shape[3]);
    let (oh, ow) = (y_shape[2], y_shape[3]);
    let groups = g.groups;
    let (cg, og) = (c / groups, o / groups);
    let (m, n, k) = match mode {
        GemmMode::ConvForward => (og, nb * oh * ow, cg * kh * kw),
        GemmMode::ConvBackwardData => (cg, nb * h * w, og * kh * kw),
        _ => (og, cg * kh * kw, nb * oh * ow),
    };
    if k == 0 {
        rec.clear(&out);
        return Ok(with_shape(out, shape));
    }
    let mut params = GemmParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        batch: nb as u32,
        c: c as u32,
        h: h as u32,
        w: w as u32,
        o: o as u32,
        oh: oh as u32,
        ow: ow as u32,
        kh: kh as u32,
        kw: kw as u32,
        sh: g.stride.0 as u32,
        sw: g.stride.1 as u32,
        ph: g.padding.0 as u32,
        pw: g.padding.1 as u32,
        dh: g.dilation.0 as u32,
        dw: g.dilation.1 as u32,
        groups: groups as u32,
        ..Default::default()
    };
    // Binding a = weight (fwd, bwd-data) or dy (bwd-filter); b = x or dy.
    let (a, b) = (&q, &p);
    let taps = conv_taps(rec, mode, &params)?;
    let pipeline = rec.ctx.pipeline(Shader::Gemm, "main", &mode.constant())?;
    // Backward-filter reduces over the whole batch into few output tiles:
    // split K so the device has enough workgroups, then sum the slices.
    let tiles = n.div_ceil(TILE) * m.div_ceil(TILE) * groups;
    let splits = if mode == GemmMode::ConvBackwardFilter {
        k.div_ceil(256).min(256usize.div_ceil(tiles)).max(1)
    } else {
        1
    };
    let chunk = k.div_ceil(splits).next_multiple_of(16);
    let splits = k.div_ceil(chunk);
    params.splits = splits as u32;
    params.split_k = chunk as u32;
    let target = if splits > 1 {
        rec.output("conv2d split-k", splits * numel(shape), DType::F32)?
    } else {
        out.clone()
    };
    dispatch_tiles(
        rec,
        &pipeline,
        &mut params,
        &[
            Bind::Read(a),
            Bind::Read(b),
            Bind::Write(&target),
            Bind::Read(&taps),
        ],
        (n.div_ceil(TILE), m.div_ceil(TILE), groups * splits),
        "conv2d",
    )?;
    if splits > 1 {
        drop(out);
        let partial = Value {
            storage: target.storage.clone(),
            layout: Layout::contiguous(&[splits, numel(shape)]),
        };
        drop(target);
        let sum = reduce(rec, ReduceOp::Sum, &[0], &partial)?;
        return Ok(with_shape(sum, shape));
    }
    Ok(with_shape(out, shape))
}

/// The per-k offsets gemm.wgsl reads for a convolution (layout in its
/// header), built on the host once per mode and geometry.
fn conv_taps(rec: &mut Recorder, mode: GemmMode, p: &GemmParams) -> Result<Value> {
    let key = vec![
        mode.constant()[0].1 as u32,
        p.k,
        p.batch,
        p.c,
        p.h,
        p.w,
        p.o,
        p.oh,
        p.ow,
        p.kh,
        p.kw,
        p.sh,
        p.sw,
        p.ph,
        p.pw,
        p.dh,
        p.dw,
        p.groups,
    ];
    if let Some(v) = lock(&rec.ctx.conv_tables).get(&key) {
        return Ok(v.clone());
    }
    let i = |v: u32| v as i32;
    let (k, c, h, w, o) = (i(p.k), i(p.c), i(p.h), i(p.w), i(p.o));
    let (oh, ow, kh, kw) = (i(p.oh), i(p.ow), i(p.kh), i(p.kw));
    let (sh, sw, ph, pw, dh, dw) = (i(p.sh), i(p.sw), i(p.ph), i(p.pw), i(p.dh), i(p.dw));
    let (cg, taps) = (c / i(p.groups), kh * kw);
    let mut table: Vec<i32> = Vec::with_capacity(4 * k as usize);
    for k in 0..k {
        let entry = match mode {
            GemmMode::ConvForward => {
                let (chan, t) = (k / taps, k % taps);
                let (ky, kx) = (t / kw, t % kw);
                [chan * h * w + ky * dh * w + kx * dw, ky * dh, kx * dw, 0]
            }
            GemmMode::ConvBackwardData => {
                let (oo, t) = (k / taps, k % taps);
                let (ky, kx) = (t / kw, t % kw);
                [oo * cg * taps + t, oo * oh * ow, ky * dh, kx * dw]
            }
            _ => {
                let plane = oh * ow;
                let (img, s) = (k / plane, k % plane);
                let (oy, ox) = (s / ow, s % ow);
                [
                    img * o * plane + oy * ow + ox,
                    img * c * h * w,
                    oy * sh - ph,
                    ox * sw - pw,
                ]
            }
        };
        table.extend_from_slice(&entry);
    }
    let host = Value::i32(table, &[4 * k as usize]);
    let v = rec.on_device(&host)?;
    lock(&rec.ctx.conv_tables).insert(key, v.clone());
    Ok(v)
}
