//! gemm.wgsl: the register-blocked GEMM behind batched matmul and the
//! three convolutions (implicit GEMMs, no im2col buffer), and the simpler
//! matmul versions the benchmark compares it with.

use super::copy::dense;
use super::reduce::reduce;
use super::{with_shape, Epilogue};
use crate::backend::gpu::device::Context;
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
    slice_len: u32,
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

/// A GEMM kernel version: the engine runs `Blocked`, `Large`, `Small` or
/// `Subgroup` (see [`GemmPlan::choose`]); the other two stay for the
/// benchmark to compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MatmulKernel {
    /// 64x64 tiles, 4x4 per invocation: the portable version.
    Blocked,
    /// 128x128 tiles, 8x8 per invocation, two-stage workgroup memory.
    Large,
    /// 32x128 tiles, 4x4 per invocation: `Large` for few rows.
    Small,
    /// 16x256 tiles, 16x4 per invocation, A shared by subgroup broadcasts
    /// (gemm_subgroup.wgsl; devices with subgroups, see
    /// [`Context::subgroup_gemm`](crate::backend::gpu::device::Context::subgroup_gemm)).
    Subgroup,
    /// One invocation per output, straight from memory (matmul only).
    #[cfg_attr(not(any(feature = "bench", test)), allow(dead_code))]
    Naive,
    /// 16x16 tiles staged in workgroup memory (matmul only).
    #[cfg_attr(not(any(feature = "bench", test)), allow(dead_code))]
    Tiled,
}

impl MatmulKernel {
    #[cfg(test)]
    pub(crate) const ALL: [MatmulKernel; 6] = [
        MatmulKernel::Naive,
        MatmulKernel::Tiled,
        MatmulKernel::Blocked,
        MatmulKernel::Large,
        MatmulKernel::Small,
        MatmulKernel::Subgroup,
    ];

    /// The kernels with every reader, split-K and the epilogue.
    #[cfg(test)]
    pub(crate) const FULL: [MatmulKernel; 4] = [
        MatmulKernel::Blocked,
        MatmulKernel::Large,
        MatmulKernel::Small,
        MatmulKernel::Subgroup,
    ];

    #[cfg(feature = "bench")]
    pub(crate) fn name(self) -> &'static str {
        match self {
            MatmulKernel::Blocked => "blocked",
            MatmulKernel::Large => "large",
            MatmulKernel::Small => "small",
            MatmulKernel::Subgroup => "subgroup",
            MatmulKernel::Naive => "naive",
            MatmulKernel::Tiled => "tiled",
        }
    }

    fn entry(self) -> &'static str {
        match self {
            MatmulKernel::Blocked => "main",
            MatmulKernel::Large => "large",
            MatmulKernel::Small => "small",
            MatmulKernel::Subgroup => "subgroup",
            MatmulKernel::Naive => "naive",
            MatmulKernel::Tiled => "tiled",
        }
    }

    fn shader(self) -> Shader {
        match self {
            MatmulKernel::Subgroup => Shader::GemmSubgroup,
            _ => Shader::Gemm,
        }
    }

    /// Whether `ctx`'s device can run it.
    pub(crate) fn runs_on(self, ctx: &Context) -> bool {
        self != MatmulKernel::Subgroup || ctx.subgroup_gemm()
    }

    /// Output tile: (rows, columns).
    fn tile(self) -> (usize, usize) {
        match self {
            MatmulKernel::Blocked => (64, 64),
            MatmulKernel::Large => (128, 128),
            MatmulKernel::Small => (32, 128),
            MatmulKernel::Subgroup => (16, 256),
            MatmulKernel::Naive | MatmulKernel::Tiled => (16, 16),
        }
    }

    /// Whether it reads the split-K fields and the convolution table.
    fn full(self) -> bool {
        !matches!(self, MatmulKernel::Naive | MatmulKernel::Tiled)
    }
}

/// Workgroups that keep a discrete GPU busy (a few per compute unit on
/// the devices we target); fewer output tiles than this are split along K.
const BUSY_WORKGROUPS: usize = 256;
/// Fewest reduction steps a split-K slice gets: shorter slices spend more
/// on writing and summing partial outputs than they save.
const MIN_SPLIT_K: usize = 256;

/// How one GEMM runs: which kernel, and into how many split-K slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GemmPlan {
    pub kernel: MatmulKernel,
    pub splits: usize,
}

impl GemmPlan {
    /// One kernel, no split.
    #[cfg_attr(not(any(feature = "bench", test)), allow(dead_code))]
    pub(crate) fn single(kernel: MatmulKernel) -> GemmPlan {
        GemmPlan { kernel, splits: 1 }
    }

    /// The engine's choice for an M x N x K product, `z` times (batch or
    /// groups). Large tiles where M and N fill them and, on a GPU, where
    /// they still give every compute unit work; 32-row tiles for M <= 32
    /// (a batch-32 layer); split-K where the output has too few tiles for
    /// the device and K is long. A software adapter (a CPU: a few threads,
    /// not hundreds of compute units) takes large tiles wherever they fill
    /// and 32x128 tiles wherever N fills them (llvmpipe: matmul 512^3 2.5x
    /// faster on large tiles than on 64-tiles; 32x128 tiles 0.98-2.6x the
    /// speed of 64-tiles on the nine seed-cnn convolutions, M = 3..64, and
    /// 1.6x slower on a 8192x64x64 product), and splits only the
    /// backward-filter reductions (K = batch * pixels), and only until
    /// every thread has two workgroups: more slices add partial sums to
    /// write and add up, and no parallelism. `software` is the adapter's
    /// thread count, None for a GPU.
    ///
    /// With `subgroups` (the device runs gemm_subgroup.wgsl), a software
    /// adapter's matmuls take the subgroup kernel: on llvmpipe 1.7-3.8x the
    /// speed of the best other kernel on square, tall-skinny and
    /// batch-32 products, but 1.1-2x slower on the seed CNN's convolutions
    /// (their readers run once per 16 rows instead of 32 or 128). A GPU
    /// keeps `Large`/`Small`/`Blocked` until the subgroup kernel is measured
    /// on one (`SHADERGRAD_GEMM=subgroup` compares).
    pub(crate) fn choose(
        software: Option<usize>,
        subgroups: bool,
        mode: GemmMode,
        m: usize,
        n: usize,
        k: usize,
        z: usize,
    ) -> GemmPlan {
        let tiles = |kernel: MatmulKernel| {
            let (rows, cols) = kernel.tile();
            n.div_ceil(cols) * m.div_ceil(rows) * z
        };
        let fills = m >= 128 && n >= 128;
        let kernel = if subgroups && software.is_some() && mode == GemmMode::MatMul {
            MatmulKernel::Subgroup
        } else if fills && (software.is_some() || tiles(MatmulKernel::Large) >= BUSY_WORKGROUPS) {
            MatmulKernel::Large
        } else if m <= 32 || (software.is_some() && n >= 128) {
            MatmulKernel::Small
        } else {
            MatmulKernel::Blocked
        };
        let busy = match software {
            Some(_) if mode != GemmMode::ConvBackwardFilter => 1,
            Some(threads) => 2 * threads.max(1),
            None => BUSY_WORKGROUPS,
        };
        let splits = k
            .div_ceil(MIN_SPLIT_K)
            .min(busy.div_ceil(tiles(kernel)))
            .max(1);
        GemmPlan { kernel, splits }
    }
}

/// `SHADERGRAD_GEMM=blocked`, `=large` or `=small` runs every GEMM on that kernel
/// (to compare; the engine chooses per shape otherwise).
fn forced_kernel() -> Option<MatmulKernel> {
    static FORCED: std::sync::OnceLock<Option<MatmulKernel>> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| match std::env::var("SHADERGRAD_GEMM").as_deref() {
        Ok("blocked") => Some(MatmulKernel::Blocked),
        Ok("large") => Some(MatmulKernel::Large),
        Ok("small") => Some(MatmulKernel::Small),
        Ok("subgroup") => Some(MatmulKernel::Subgroup),
        _ => None,
    })
}

/// Threads a software adapter runs workgroups on (llvmpipe: one per CPU
/// unless `LP_NUM_THREADS` says otherwise).
fn software_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("LP_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&t: &usize| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// The engine's plan on this recorder's device.
fn engine_plan(rec: &Recorder, mode: GemmMode, m: usize, n: usize, k: usize, z: usize) -> GemmPlan {
    let software = (rec.ctx.info.device_type == wgpu::DeviceType::Cpu).then(software_threads);
    let plan = GemmPlan::choose(software, rec.ctx.subgroup_gemm(), mode, m, n, k, z);
    match forced_kernel() {
        Some(kernel) if kernel.runs_on(&rec.ctx) => GemmPlan { kernel, ..plan },
        _ => plan,
    }
}

/// Run a planned GEMM of M x N outputs `z` times into a new value of
/// `shape`: split-K slices go to a scratch buffer that is summed after.
/// An epilogue needs the whole sum, so it runs the GEMM in one split.
#[allow(clippy::too_many_arguments)]
fn launch(
    rec: &mut Recorder,
    mode: GemmMode,
    plan: GemmPlan,
    params: &mut GemmParams,
    (a, b, taps): (&Value, &Value, Option<&Value>),
    z: usize,
    shape: &[usize],
    op: &'static str,
    epilogue: Option<Epilogue<'_>>,
) -> Result<Value> {
    let (m, n, k) = (params.m as usize, params.n as usize, params.k as usize);
    let len = numel(shape);
    if epilogue.is_some() && !plan.kernel.full() {
        return Err(Error::param(
            op,
            format!("internal: the {:?} kernel has no epilogue", plan.kernel),
        ));
    }
    if !plan.kernel.runs_on(&rec.ctx) {
        return Err(Error::param(
            op,
            format!(
                "the {:?} GEMM kernel needs subgroups of 8 to 64 invocations, which {} lacks",
                plan.kernel, rec.ctx.name
            ),
        ));
    }
    // Slices are whole multiples of both kernels' K step (16 and 8).
    let chunk = k.div_ceil(plan.splits.max(1)).next_multiple_of(16);
    let splits = if plan.kernel.full() && epilogue.is_none() {
        k.div_ceil(chunk)
    } else {
        1
    };
    params.splits = splits as u32;
    params.split_k = if splits > 1 { chunk as u32 } else { k as u32 };
    params.slice_len = len as u32;
    let [mode_constant] = mode.constant();
    let pipeline = rec.ctx.pipeline(
        plan.kernel.shader(),
        plan.kernel.entry(),
        &[mode_constant, ("EPILOGUE", Epilogue::constant(epilogue))],
    )?;
    let target = rec.output(op, splits * len, DType::F32)?;
    // The full kernels declare the convolution table; matmul never reads it.
    let unused_taps = match (plan.kernel.full(), taps) {
        (true, None) => Some(rec.output(op, 4, DType::I32)?),
        _ => None,
    };
    let taps = match taps.or(unused_taps.as_ref()) {
        Some(t) if plan.kernel.full() => Bind::Read(t),
        _ => Bind::Skip,
    };
    // The full kernels declare the bias; without an epilogue any buffer will do.
    let bias = match epilogue {
        Some(e) => Some(dense(rec, e.bias)?),
        None => None,
    };
    let bias = match &bias {
        _ if !plan.kernel.full() => Bind::Skip,
        Some(v) => Bind::Read(v),
        None => Bind::Read(a),
    };
    let (rows, cols) = plan.kernel.tile();
    dispatch_tiles(
        rec,
        &pipeline,
        params,
        &[
            Bind::Read(a),
            Bind::Read(b),
            Bind::Write(&target),
            taps,
            bias,
        ],
        (n.div_ceil(cols), m.div_ceil(rows), z * splits),
        op,
    )?;
    if splits == 1 {
        return Ok(with_shape(target, shape));
    }
    let partial = Value {
        storage: target.storage.clone(),
        layout: Layout::contiguous(&[splits, len]),
    };
    drop(target);
    let sum = reduce(rec, ReduceOp::Sum, &[0], &partial)?;
    Ok(with_shape(sum, shape))
}

/// `[..., m, k] @ [..., k, n]`, planned by the engine or as given.
pub(crate) fn matmul(
    rec: &mut Recorder,
    plan: Option<GemmPlan>,
    a: &Value,
    b: &Value,
    shape: &[usize],
    epilogue: Option<Epilogue<'_>>,
) -> Result<Value> {
    if numel(shape) == 0 {
        let out = rec.output("matmul", 0, DType::F32)?;
        return Ok(with_shape(out, shape));
    }
    let (a, b, mut params, batch) = matmul_operands(rec, a, b, shape)?;
    if params.k == 0 {
        let out = rec.output("matmul", numel(shape), DType::F32)?;
        rec.clear(&out);
        return Ok(with_shape(out, shape));
    }
    let (m, n, k) = (params.m as usize, params.n as usize, params.k as usize);
    let plan = plan.unwrap_or_else(|| engine_plan(rec, GemmMode::MatMul, m, n, k, batch));
    launch(
        rec,
        GemmMode::MatMul,
        plan,
        &mut params,
        (&a, &b, None),
        batch,
        shape,
        "matmul",
        epilogue,
    )
}

/// One of the three convolutions, planned by the engine or as given.
/// Operand pairs: forward (x, w), backward-data (dy, w), backward-filter
/// (x, dy).
pub(crate) fn conv(
    rec: &mut Recorder,
    mode: GemmMode,
    (p, q): (&Value, &Value),
    g: &ConvGeom,
    shape: &[usize],
    plan: Option<GemmPlan>,
    epilogue: Option<Epilogue<'_>>,
) -> Result<Value> {
    if numel(shape) == 0 {
        let out = rec.output("conv2d", 0, DType::F32)?;
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
        let out = rec.output("conv2d", numel(shape), DType::F32)?;
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
    let taps = conv_taps(rec, mode, &params)?;
    let plan = match plan {
        Some(p) if p.kernel.full() => p,
        Some(p) => {
            return Err(Error::param(
                "conv2d",
                format!("the {:?} kernel has no convolution readers", p.kernel),
            ))
        }
        None => engine_plan(rec, mode, m, n, k, groups),
    };
    // Binding a = weight (fwd, bwd-data) or dy (bwd-filter); b = x or dy.
    launch(
        rec,
        mode,
        plan,
        &mut params,
        (&q, &p, Some(&taps)),
        groups,
        shape,
        "conv2d",
        epilogue,
    )
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
