//! The harness's entries and how each is measured.
//!
//! Kernel entries (matmul, conv, elementwise add, reductions) call one
//! primitive the way the scheduler does (`cpu::exec`, or dispatches on a
//! recorder), so they time the kernel and its launch, not the graph. The
//! fused chain, attention and the training steps go through the engine
//! (lazy graph, fusion, realize), which is what they are about.

use std::sync::Arc;
use std::time::Instant;

use super::{sample, Entry, Options, Timing};
use crate::backend::gpu::kernels::gemm::{matmul, GemmPlan, MatmulKernel};
use crate::backend::{cpu, Value};
use crate::op::{BinaryOp, ConvGeom, Op, ReduceOp};
use crate::{DType, Device, Result, Tensor};

/// A convolution pass.
#[derive(Clone, Copy, Debug)]
pub(super) enum Pass {
    Forward,
    BackwardData,
    BackwardFilter,
}

impl Pass {
    const ALL: [Pass; 3] = [Pass::Forward, Pass::BackwardData, Pass::BackwardFilter];

    fn name(self) -> &'static str {
        match self {
            Pass::Forward => "forward",
            Pass::BackwardData => "backward-data",
            Pass::BackwardFilter => "backward-filter",
        }
    }
}

/// One entry of the harness.
#[derive(Clone, Debug)]
pub(super) enum Case {
    /// `[batch, m, k] @ [batch, k, n]`; `kind` names the family
    /// (square, tall-skinny, small-m, batched) or a GPU kernel variant.
    MatMul {
        kind: &'static str,
        variant: Option<MatmulKernel>,
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
    },
    Conv {
        model: &'static str,
        layer: &'static str,
        x: [usize; 4],
        w: [usize; 4],
        stride: usize,
        padding: usize,
        pass: Pass,
    },
    /// `a + b` over `n` elements.
    Add { n: usize },
    /// `relu(a * b + c)` through the engine: one fused kernel.
    FusedChain { n: usize },
    /// Sum of each row of `[rows, cols]`.
    SumRows { rows: usize, cols: usize },
    /// Sum of all `n` elements.
    SumAll { n: usize },
    Attention {
        shape: [usize; 4],
        fused: bool,
        backward: bool,
    },
    /// The seed CNN's training step (Adam, loss and accuracy read back).
    SeedCnnStep { batch: usize },
    /// One DCGAN step (discriminator then generator, as `train gan`).
    DcganStep { batch: usize, width: usize },
}

/// The seed CNN's convolutions (valid padding, stride 1).
const SEED_CNN: [(&str, [usize; 3], [usize; 2]); 3] = [
    ("conv1", [3, 32, 32], [32, 3]),
    ("conv2", [32, 15, 15], [64, 3]),
    ("conv3", [64, 6, 6], [64, 3]),
];

/// ResNet-18's 3x3 convolutions on 32x32 inputs (the CIFAR variant: a
/// 3x3 stem, no max pool): (layer, [c, h, w], out channels, stride).
const RESNET18: [(&str, [usize; 3], usize, usize); 8] = [
    ("stem", [3, 32, 32], 64, 1),
    ("layer1", [64, 32, 32], 64, 1),
    ("layer2.down", [64, 32, 32], 128, 2),
    ("layer2", [128, 16, 16], 128, 1),
    ("layer3.down", [128, 16, 16], 256, 2),
    ("layer3", [256, 8, 8], 256, 1),
    ("layer4.down", [256, 8, 8], 512, 2),
    ("layer4", [512, 4, 4], 512, 1),
];

/// The DCGAN's 4x4, stride-2, padding-1 convolutions at width 64 (the
/// discriminator's; each one's backward-data is a generator layer's
/// transposed convolution): (layer, [c, h, w], out channels).
const DCGAN: [(&str, [usize; 3], usize); 3] = [
    ("d1", [3, 32, 32], 64),
    ("d2", [64, 16, 16], 128),
    ("d3", [128, 8, 8], 256),
];

/// Every entry for `opts`' device, in the order they run.
pub(super) fn cases(opts: &Options) -> Vec<Case> {
    let software = super::is_software(&opts.device);
    let gpu = opts.device.is_gpu();
    let tiny = opts.tiny;
    let sizes = if tiny {
        vec![8, 33]
    } else if opts.sizes.is_empty() {
        super::default_sizes(&opts.device)
    } else {
        opts.sizes.clone()
    };
    let s = sizes.iter().copied().max().unwrap_or(256);
    let mut out = Vec::new();
    let mm = |kind, variant, batch, m, k, n| Case::MatMul {
        kind,
        variant,
        batch,
        m,
        k,
        n,
    };
    // Every matmul version this device runs, to compare with the engine's choice.
    let variants: Vec<MatmulKernel> = match opts.device {
        Device::Gpu(id) => match crate::backend::gpu::device::context(id) {
            Ok(ctx) => [
                MatmulKernel::Naive,
                MatmulKernel::Tiled,
                MatmulKernel::Blocked,
                MatmulKernel::Large,
                MatmulKernel::Small,
                MatmulKernel::Subgroup,
            ]
            .into_iter()
            .filter(|v| v.runs_on(&ctx))
            .collect(),
            Err(_) => Vec::new(),
        },
        Device::Cpu => Vec::new(),
    };
    for &n in &sizes {
        out.push(mm("square", None, 1, n, n, n));
        for &v in &variants {
            out.push(mm("square", Some(v), 1, n, n, n));
        }
    }
    // Tall-skinny (an im2col-shaped GEMM), a batch-32 layer, and a batch of
    // attention-sized products, all scaled from the largest square size.
    let skinny = if tiny { 4 } else { 64 };
    out.push(mm("tall-skinny", None, 1, 16 * s, skinny, skinny));
    out.push(mm("small-m", None, 1, if tiny { 2 } else { 32 }, s, s));
    out.push(mm(
        "batched",
        None,
        if tiny { 2 } else { 16 },
        s / 4,
        s / 4,
        s / 4,
    ));

    let seed_batch = if tiny { 1 } else { 32 };
    for (layer, [c, h, w], [o, k]) in SEED_CNN {
        for pass in Pass::ALL {
            out.push(Case::Conv {
                model: "seed-cnn",
                layer,
                x: [seed_batch, c, h, w],
                w: [o, c, k, k],
                stride: 1,
                padding: 0,
                pass,
            });
        }
    }
    // The software GPU does about 1 GFLOP/s: one image instead of 32 or 64.
    let batch = |full: usize| if tiny || software { 1 } else { full };
    // (model, layer, [c, h, w], out channels, kernel, stride, batch)
    let padded = RESNET18
        .into_iter()
        .map(|(layer, x, o, stride)| ("resnet18", layer, x, o, 3, stride, batch(32)))
        .chain(
            DCGAN
                .into_iter()
                .map(|(layer, x, o)| ("dcgan", layer, x, o, 4, 2, batch(64))),
        );
    for (model, layer, [c, h, w], o, k, stride, n) in padded {
        if tiny && c > 64 {
            continue;
        }
        for pass in Pass::ALL {
            out.push(Case::Conv {
                model,
                layer,
                x: [n, c, h, w],
                w: [o, c, k, k],
                stride,
                padding: 1,
                pass,
            });
        }
    }

    let n = if tiny {
        1000
    } else if software {
        1 << 20
    } else {
        1 << 24
    };
    out.push(Case::Add { n });
    out.push(Case::FusedChain { n });
    let cols = if tiny { 33 } else { 1024 };
    out.push(Case::SumRows {
        rows: n / cols,
        cols,
    });
    out.push(Case::SumAll { n });

    let shapes = if tiny {
        vec![[1, 2, 16, 8]]
    } else {
        attention_shapes(software || !gpu)
    };
    for shape in shapes {
        for fused in [true, false] {
            for backward in [false, true] {
                out.push(Case::Attention {
                    shape,
                    fused,
                    backward,
                });
            }
        }
    }

    out.push(Case::SeedCnnStep {
        batch: if tiny { 2 } else { 32 },
    });
    // A DCGAN step at batch 64 takes about 15 s on the software GPU.
    let (batch, width) = if tiny {
        (2, 4)
    } else if software {
        (8, 64)
    } else {
        (64, 64)
    };
    out.push(Case::DcganStep { batch, width });
    out
}

/// Attention shapes (batch, heads, sequence, head dim): BERT-base-like
/// heads at growing lengths; small ones on a software GPU or the cpu.
pub fn attention_shapes(small: bool) -> Vec<[usize; 4]> {
    if small {
        vec![[1, 4, 128, 64], [1, 4, 256, 64]]
    } else {
        vec![
            [4, 12, 128, 64],
            [4, 12, 512, 64],
            [2, 12, 1024, 64],
            [1, 8, 2048, 64],
        ]
    }
}

impl Case {
    pub(super) fn group(&self) -> &'static str {
        match self {
            Case::MatMul { .. } => "matmul",
            Case::Conv { .. } => "conv",
            Case::Add { .. } | Case::FusedChain { .. } => "elementwise",
            Case::SumRows { .. } | Case::SumAll { .. } => "reduce",
            Case::Attention { .. } => "attention",
            Case::SeedCnnStep { .. } | Case::DcganStep { .. } => "step",
        }
    }

    pub(super) fn name(&self) -> String {
        match self {
            Case::MatMul {
                kind,
                variant,
                batch,
                m,
                k,
                n,
            } => {
                let family = match (*kind, variant) {
                    (_, Some(v)) => format!("{} ", v.name()),
                    ("square", None) => String::new(),
                    (kind, None) => format!("{kind} "),
                };
                let b = if *batch > 1 {
                    format!("{batch}x")
                } else {
                    String::new()
                };
                format!("matmul {family}{b}{m}x{k}x{n}")
            }
            Case::Conv {
                model,
                layer,
                x,
                w,
                stride,
                pass,
                ..
            } => format!(
                "conv {model} {layer} {}->{} {}x{}{} b{} {}",
                x[1],
                w[0],
                x[2],
                x[3],
                if *stride > 1 {
                    format!(" s{stride}")
                } else {
                    String::new()
                },
                x[0],
                pass.name()
            ),
            Case::Add { n } => format!("elementwise add {n}"),
            Case::FusedChain { n } => format!("elementwise fused relu(a*b+c) {n}"),
            Case::SumRows { rows, cols } => format!("reduce sum rows {rows}x{cols}"),
            Case::SumAll { n } => format!("reduce sum all {n}"),
            Case::Attention {
                shape: [b, h, l, d],
                fused,
                backward,
            } => format!(
                "attention {} b{b} h{h} l{l} d{d} {}",
                if *fused { "fused" } else { "unfused" },
                if *backward {
                    "forward+backward"
                } else {
                    "forward"
                }
            ),
            Case::SeedCnnStep { batch } => format!("step seed-cnn b{batch}"),
            Case::DcganStep { batch, width } => format!("step dcgan w{width} b{batch}"),
        }
    }

    /// Time this entry on `opts.device`.
    pub(super) fn measure(&self, opts: &Options) -> Result<Entry> {
        let mut entry = Entry {
            name: self.name(),
            group: self.group().into(),
            dtype: "f32".into(),
            ..Entry::default()
        };
        match *self {
            Case::MatMul {
                variant,
                batch,
                m,
                k,
                n,
                ..
            } => {
                entry.shape = vec![batch, m, k, n];
                let (a, b) = (filled(&[batch, m, k], 1), filled(&[batch, k, n], 2));
                let out = [batch, m, n];
                let kernel = Kernel {
                    op: Op::MatMul,
                    inputs: vec![a, b],
                    shape: out.to_vec(),
                    variant,
                };
                kernel.time(opts, &mut entry)?;
                entry.gflops = Some(2.0 * (batch * m * k * n) as f64 / entry.median_s / 1e9);
            }
            Case::Conv {
                x,
                w,
                stride,
                padding,
                pass,
                ..
            } => {
                let geom = ConvGeom {
                    stride: (stride, stride),
                    padding: (padding, padding),
                    dilation: (1, 1),
                    groups: 1,
                };
                let out = |size: usize| (size + 2 * padding - w[2]) / stride + 1;
                let y = [x[0], w[0], out(x[2]), out(x[3])];
                entry.shape = x.iter().chain(&w).copied().collect();
                let (xv, wv, dy) = (filled(&x, 3), filled(&w, 4), filled(&y, 5));
                let (op, inputs, shape) = match pass {
                    Pass::Forward => (Op::Conv2d(geom), vec![xv, wv], y),
                    Pass::BackwardData => (Op::Conv2dBackwardData(geom), vec![dy, wv], x),
                    Pass::BackwardFilter => (Op::Conv2dBackwardFilter(geom), vec![xv, dy], w),
                };
                let kernel = Kernel {
                    op,
                    inputs,
                    shape: shape.to_vec(),
                    variant: None,
                };
                kernel.time(opts, &mut entry)?;
                let flops = 2.0 * (y.iter().product::<usize>() * x[1] * w[2] * w[3]) as f64;
                entry.gflops = Some(flops / entry.median_s / 1e9);
            }
            Case::Add { n } => {
                entry.shape = vec![n];
                let kernel = Kernel {
                    op: Op::Binary(BinaryOp::Add),
                    inputs: vec![filled(&[n], 1), filled(&[n], 2)],
                    shape: vec![n],
                    variant: None,
                };
                kernel.time(opts, &mut entry)?;
                entry.gbs = Some(12.0 * n as f64 / entry.median_s / 1e9);
            }
            Case::SumRows { rows, cols } => {
                entry.shape = vec![rows, cols];
                let kernel = Kernel {
                    op: Op::Reduce {
                        op: ReduceOp::Sum,
                        axes: vec![1],
                    },
                    inputs: vec![filled(&[rows, cols], 1)],
                    shape: vec![rows, 1],
                    variant: None,
                };
                kernel.time(opts, &mut entry)?;
                entry.gbs = Some(4.0 * (rows * cols + rows) as f64 / entry.median_s / 1e9);
            }
            Case::SumAll { n } => {
                entry.shape = vec![n];
                let kernel = Kernel {
                    op: Op::Reduce {
                        op: ReduceOp::Sum,
                        axes: vec![0],
                    },
                    inputs: vec![filled(&[n], 1)],
                    shape: vec![1],
                    variant: None,
                };
                kernel.time(opts, &mut entry)?;
                entry.gbs = Some(4.0 * n as f64 / entry.median_s / 1e9);
            }
            Case::FusedChain { n } => {
                entry.shape = vec![n];
                fused_chain(opts, n, &mut entry)?;
                entry.gbs = Some(16.0 * n as f64 / entry.median_s / 1e9);
            }
            Case::Attention {
                shape,
                fused,
                backward,
            } => {
                entry.shape = shape.to_vec();
                attention_entry(opts, shape, fused, backward, &mut entry)?;
            }
            Case::SeedCnnStep { batch } => {
                entry.shape = vec![batch, 3, 32, 32];
                seed_cnn_step(opts, batch, &mut entry)?;
            }
            Case::DcganStep { batch, width } => {
                entry.shape = vec![batch, 3, 32, 32];
                dcgan_step(opts, batch, width, &mut entry)?;
            }
        }
        Ok(entry)
    }
}

fn set_timing(entry: &mut Entry, t: Timing) {
    entry.median_s = t.median;
    entry.p10_s = t.p10;
    entry.p90_s = t.p90;
    entry.samples = t.samples;
}

/// Deterministic values in [-0.5, 0.5).
fn filled(shape: &[usize], seed: u32) -> Value {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0
                - 0.5
        })
        .collect();
    Value::f32(data, shape)
}

/// One primitive with its inputs.
struct Kernel {
    op: Op,
    inputs: Vec<Value>,
    shape: Vec<usize>,
    /// A GPU matmul kernel other than the engine's.
    variant: Option<MatmulKernel>,
}

impl Kernel {
    fn time(&self, opts: &Options, entry: &mut Entry) -> Result<()> {
        match opts.device {
            Device::Cpu => {
                let t = sample(opts.budget, || {
                    let t = Instant::now();
                    cpu::exec(&self.op, &self.inputs, &self.shape, DType::F32)?;
                    Ok(t.elapsed().as_secs_f64())
                })?;
                set_timing(entry, t);
            }
            Device::Gpu(id) => {
                self.time_gpu(opts, &crate::backend::gpu::device::context(id)?, entry)?
            }
        }
        Ok(())
    }

    /// Many calls per submit, so launch and submit costs amortise as in a
    /// real step; each sample is one submit's device time over its calls.
    fn time_gpu(
        &self,
        opts: &Options,
        ctx: &Arc<crate::backend::gpu::device::Context>,
        entry: &mut Entry,
    ) -> Result<()> {
        use crate::backend::gpu::{kernels, Recorder};
        let mut rec = Recorder::new(ctx.clone())?;
        let inputs = self
            .inputs
            .iter()
            .map(|v| rec.on_device(v))
            .collect::<Result<Vec<_>>>()?;
        rec.submit()?;
        let record = |rec: &mut Recorder| -> Result<()> {
            match self.variant {
                Some(v) => matmul(
                    rec,
                    Some(GemmPlan::single(v)),
                    &inputs[0],
                    &inputs[1],
                    &self.shape,
                    None,
                )
                .map(drop),
                None => kernels::exec(rec, &self.op, &inputs, &self.shape, DType::F32).map(drop),
            }
        };
        // Warm-up (pipelines compile), then one timed call to size a submit
        // at about 50 ms of work.
        // Device time from timestamps around the compute passes where the
        // device has them, else the wall clock to the end of a wait.
        let submit = |reps: usize, record: &dyn Fn(&mut Recorder) -> Result<()>| {
            let mut rec = Recorder::new(ctx.clone())?;
            rec.time_passes();
            let t = Instant::now();
            for _ in 0..reps {
                record(&mut rec)?;
            }
            let recording = t.elapsed().as_secs_f64();
            let dispatches = rec.dispatches();
            let device = rec.submit_timed()?;
            ctx.wait()?;
            let total = device.unwrap_or_else(|| t.elapsed().as_secs_f64());
            Ok::<_, crate::Error>((total, recording, dispatches))
        };
        submit(1, &record)?;
        let (one, _, per_call) = submit(1, &record)?;
        let reps = ((0.05 / one.max(1e-6)) as usize).clamp(1, 200);
        let mut recordings = Vec::new();
        let t = sample(opts.budget, || {
            let (total, recording, dispatches) = submit(reps, &record)?;
            if dispatches > 0 {
                recordings.push(recording / dispatches as f64);
            }
            Ok(total / reps as f64)
        })?;
        set_timing(entry, t);
        entry.dispatches = Some(per_call);
        if !recordings.is_empty() {
            recordings.sort_by(f64::total_cmp);
            entry.host_us_per_dispatch = Some(recordings[recordings.len() / 2] * 1e6);
        }
        Ok(())
    }
}

/// Wait until `device` has finished what was submitted.
fn sync(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        Device::Gpu(id) => crate::backend::gpu::device::context(id)?.wait(),
    }
}

/// Fill the launch figures from a realize's statistics.
fn launch_figures(entry: &mut Entry, stats: &crate::RealizeStats) {
    if stats.dispatches > 0 {
        entry.dispatches = Some(stats.dispatches);
        entry.submits = Some(stats.sessions);
        entry.host_us_per_dispatch = Some(stats.record_ns as f64 / 1e3 / stats.dispatches as f64);
    }
}

/// `relu(a * b + c)` through the engine: the scheduler fuses it into one
/// kernel; each call builds the graph, realizes and waits.
fn fused_chain(opts: &Options, n: usize, entry: &mut Entry) -> Result<()> {
    let device = opts.device;
    crate::with_device(device, || {
        let input = |seed| -> Result<Tensor> {
            let t = Tensor::rand_seeded(&[n], seed).to(device);
            t.realize()?;
            Ok(t)
        };
        let (a, b, c) = (input(1)?, input(2)?, input(3)?);
        sync(device)?;
        let mut stats = crate::RealizeStats::default();
        let t = sample(opts.budget, || {
            let t = Instant::now();
            let y = a.mul(&b)?.add(&c)?.relu();
            y.realize()?;
            stats = crate::last_realize_stats();
            sync(device)?;
            Ok(t.elapsed().as_secs_f64())
        })?;
        set_timing(entry, t);
        launch_figures(entry, &stats);
        Ok(())
    })
}

/// Fused attention or the unfused composition (matmul, softmax, matmul)
/// through the engine, forward or forward+backward, with peak memory.
/// FLOPs count the matmuls once (forward 4 b h l^2 d, backward twice
/// that), so GFLOP/s ratios between the variants are time ratios.
fn attention_entry(
    opts: &Options,
    [b, h, l, d]: [usize; 4],
    fused: bool,
    backward: bool,
    entry: &mut Entry,
) -> Result<()> {
    use crate::AttentionOpts;
    let device = opts.device;
    let input = |seed: u64| -> Result<Tensor> {
        let t = Tensor::rand_seeded(&[b, h, l, d], seed)
            .sub_scalar(0.5)
            .to(device);
        t.realize()?;
        Ok(t)
    };
    let (q, k, v, w) = (input(1)?, input(2)?, input(3)?, input(4)?);
    let attn_opts = AttentionOpts::default();
    let run = |q: &Tensor, k: &Tensor, v: &Tensor| {
        if fused {
            Tensor::attention(q, k, v, &attn_opts)
        } else {
            Tensor::attention_unfused(q, k, v, &attn_opts)
        }
    };
    let forward_flops = 4.0 * (b * h * l * l * d) as f64;
    let mut peak = 0;
    let mut stats = crate::RealizeStats::default();
    let t = if backward {
        let (qg, kg, vg) = (q.with_grad(), k.with_grad(), v.with_grad());
        sample(opts.budget, || {
            let t = Instant::now();
            let o = run(&qg, &kg, &vg)?;
            let g = o.mul(&w)?.sum_all().backward()?;
            let grads: Vec<Tensor> = [&qg, &kg, &vg].map(|x| g.get_or_zeros(x)).to_vec();
            Tensor::realize_all(&grads)?;
            stats = crate::last_realize_stats();
            peak = stats.peak_bytes;
            sync(device)?;
            Ok(t.elapsed().as_secs_f64())
        })?
    } else {
        sample(opts.budget, || {
            let t = Instant::now();
            let o = run(&q, &k, &v)?;
            o.realize()?;
            stats = crate::last_realize_stats();
            peak = stats.peak_bytes;
            sync(device)?;
            Ok(t.elapsed().as_secs_f64())
        })?
    };
    set_timing(entry, t);
    launch_figures(entry, &stats);
    entry.peak_bytes = Some(peak);
    let flops = if backward { 3.0 } else { 1.0 } * forward_flops;
    entry.gflops = Some(flops / entry.median_s / 1e9);
    Ok(())
}

/// Fused against unfused attention at `shapes`, forward and
/// forward+backward, on `device` (what `shadergrad bench attention` runs).
pub fn attention(
    device: &Device,
    budget: std::time::Duration,
    shapes: &[[usize; 4]],
) -> Result<Vec<Entry>> {
    let opts = Options::new(*device, budget);
    let mut out = Vec::new();
    for &shape in shapes {
        for fused in [true, false] {
            for backward in [false, true] {
                out.push(
                    Case::Attention {
                        shape,
                        fused,
                        backward,
                    }
                    .measure(&opts)?,
                );
            }
        }
    }
    Ok(out)
}

/// The seed CNN's training step as the training loop runs it: batch of
/// CIFAR-10 shapes, Adam, the loss and the accuracy count read back.
fn seed_cnn_step(opts: &Options, batch: usize, entry: &mut Entry) -> Result<()> {
    use crate::nn::Module;
    use crate::Optimizer;
    crate::with_device(opts.device, || {
        crate::manual_seed(0);
        let model = crate::models::build_for("seed-cnn", (32, 32), 10)?;
        let mut opt = crate::Adam::new(
            model.parameters().into_iter().map(|(_, p)| p).collect(),
            1e-3,
        );
        let x = Tensor::rand(&[batch, 3, 32, 32]);
        let labels: Vec<i32> = (0..batch as i32).map(|i| i % 10).collect();
        let y = Tensor::from_slice_i32(&labels, &[batch])?;
        x.realize()?;
        let mut steps = Vec::new();
        let t = sample(opts.budget, || {
            let t = Instant::now();
            let before = crate::total_realize_stats();
            let logits = model.forward(&x)?;
            let loss = logits.cross_entropy(&y, 0.0)?;
            let correct = logits.detach().argmax(1, false)?.eq(&y)?.sum_all();
            // As the training loop: loss and accuracy count in one read-back.
            opt.step_values(&loss, std::slice::from_ref(&correct))?;
            let peak = crate::last_realize_stats().peak_bytes;
            let mut step = crate::total_realize_stats().since(&before);
            step.peak_bytes = peak;
            steps.push(step);
            Ok(t.elapsed().as_secs_f64())
        })?;
        let step = step_figures(entry, t, &mut steps);
        entry.peak_bytes = Some(step.peak_bytes);
        entry.pool_bytes = pool_bytes(opts.device);
        Ok(())
    })
}

/// A training step entry's figures: its timing, and the launch counts of
/// the step with the median recording time (every step's counts are the
/// same), which it returns.
fn step_figures(
    entry: &mut Entry,
    t: Timing,
    steps: &mut [crate::RealizeStats],
) -> crate::RealizeStats {
    set_timing(entry, t);
    steps.sort_by_key(|s| s.record_ns);
    let step = steps[steps.len() / 2];
    launch_figures(entry, &step);
    entry.waits = Some(step.waits);
    step
}

/// The GPU pool's bytes after a step (None on the cpu).
fn pool_bytes(device: Device) -> Option<u64> {
    device.is_gpu().then(|| device.memory_allocated())
}

/// One DCGAN step (`train::gan::gan_step`: the discriminator's update, then
/// the generator's) on a batch of random images.
fn dcgan_step(opts: &Options, batch: usize, width: usize, entry: &mut Entry) -> Result<()> {
    use crate::nn::Module;
    crate::with_device(opts.device, || {
        crate::manual_seed(0);
        let gan = crate::models::gan::Gan::dcgan(width)?;
        let params = |m: &crate::nn::Sequential| -> Vec<crate::Parameter> {
            m.parameters().into_iter().map(|(_, p)| p).collect()
        };
        let adam = |p| crate::Adam::new(p, 2e-4).betas(0.5, 0.999);
        let mut opt_d = adam(params(&gan.discriminator));
        let mut opt_g = adam(params(&gan.generator));
        let x = Tensor::rand(&[batch, 3, 32, 32])
            .mul_scalar(2.0)
            .sub_scalar(1.0);
        x.realize()?;
        let mut steps = Vec::new();
        let t = sample(opts.budget, || {
            let t = Instant::now();
            let before = crate::total_realize_stats();
            crate::train::gan::gan_step(&gan, &mut opt_d, &mut opt_g, &x)?;
            steps.push(crate::total_realize_stats().since(&before));
            Ok(t.elapsed().as_secs_f64())
        })?;
        step_figures(entry, t, &mut steps);
        entry.pool_bytes = pool_bytes(opts.device);
        Ok(())
    })
}
