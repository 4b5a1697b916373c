//! Kernel benchmarks shared by `cargo bench` and `shadergrad bench`: the
//! matmul sizes and the three convolutions of the reference CIFAR-10 CNN,
//! forward and both backward passes, timed at the kernel level.

use std::time::{Duration, Instant};

use crate::backend::gpu::kernels::gemm::{matmul, MatmulKernel};
use crate::backend::{cpu, Value};
use crate::op::{ConvGeom, Op};
use crate::{DType, Result};

/// One measured kernel.
#[derive(Clone, Debug)]
pub struct BenchResult {
    pub name: String,
    pub flops: f64,
    /// Median seconds per call.
    pub seconds: f64,
    /// Most bytes of intermediate results alive at once, where measured.
    pub peak_bytes: Option<usize>,
}

impl BenchResult {
    pub fn gflops(&self) -> f64 {
        self.flops / self.seconds / 1e9
    }
}

/// Median time of `f` over calls filling at least `budget` (after one warm-up).
pub fn time_median(budget: Duration, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed() < budget && times.len() < 1000) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

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

/// The reference CNN's convolutions at batch 32: (name, x shape, weight shape).
pub const CNN_CONVS: [(&str, [usize; 4], [usize; 4]); 3] = [
    ("conv1 3->32 32x32", [32, 3, 32, 32], [32, 3, 3, 3]),
    ("conv2 32->64 15x15", [32, 32, 15, 15], [64, 32, 3, 3]),
    ("conv3 64->64 6x6", [32, 64, 6, 6], [64, 64, 3, 3]),
];

pub const MATMUL_SIZES: [usize; 3] = [256, 512, 1024];

/// The CNN convolutions' geometry: stride 1, no padding (Keras' `valid`).
const CNN_GEOM: ConvGeom = ConvGeom {
    stride: (1, 1),
    padding: (0, 0),
    dilation: (1, 1),
    groups: 1,
};

/// Output shape and FLOPs (per pass) of a `CNN_CONVS` case.
fn conv_output(xs: [usize; 4], ws: [usize; 4]) -> ([usize; 4], f64) {
    let ys = [xs[0], ws[0], xs[2] - ws[2] + 1, xs[3] - ws[3] + 1];
    let flops = 2.0 * (ys.iter().product::<usize>() * xs[1] * ws[2] * ws[3]) as f64;
    (ys, flops)
}

/// A convolution's three passes: (name, op, inputs, output shape).
fn conv_passes(
    x: Value,
    w: Value,
    dy: Value,
    xs: [usize; 4],
    ws: [usize; 4],
    ys: [usize; 4],
) -> [(&'static str, Op, [Value; 2], [usize; 4]); 3] {
    [
        ("forward", Op::Conv2d(CNN_GEOM), [x.clone(), w.clone()], ys),
        (
            "backward-data",
            Op::Conv2dBackwardData(CNN_GEOM),
            [dy.clone(), w],
            xs,
        ),
        (
            "backward-filter",
            Op::Conv2dBackwardFilter(CNN_GEOM),
            [x, dy],
            ws,
        ),
    ]
}

/// Run the CPU kernel cases whose names `keep` accepts, each for about `budget`.
pub fn cpu_kernels(budget: Duration, keep: impl Fn(&str) -> bool) -> Result<Vec<BenchResult>> {
    let mut out = Vec::new();
    for &n in MATMUL_SIZES.iter().filter(|_| keep("matmul")) {
        let (a, b) = (filled(&[n, n], 1), filled(&[n, n], 2));
        let seconds = time_median(budget, || {
            cpu::exec(&Op::MatMul, &[a.clone(), b.clone()], &[n, n], DType::F32).map(drop)
        })?;
        out.push(BenchResult {
            name: format!("matmul {n}x{n}x{n}"),
            flops: 2.0 * (n * n * n) as f64,
            seconds,
            peak_bytes: None,
        });
    }
    for (name, xs, ws) in CNN_CONVS.into_iter().filter(|(name, ..)| keep(name)) {
        let (ys, flops) = conv_output(xs, ws);
        let (x, w, dy) = (filled(&xs, 3), filled(&ws, 4), filled(&ys, 5));
        for (pass, op, inputs, shape) in conv_passes(x, w, dy, xs, ws, ys) {
            let seconds = time_median(budget, || {
                cpu::exec(&op, &inputs, &shape, DType::F32).map(drop)
            })?;
            out.push(BenchResult {
                name: format!("{name} {pass}"),
                flops,
                seconds,
                peak_bytes: None,
            });
        }
    }
    Ok(out)
}

/// GPU time per call of `record` (which records one kernel): many calls
/// per submit, so launch and submit overheads amortise as in a real step.
fn gpu_time(
    ctx: &std::sync::Arc<crate::backend::gpu::device::Context>,
    budget: Duration,
    mut record: impl FnMut(&mut crate::backend::gpu::Recorder) -> Result<()>,
) -> Result<f64> {
    use crate::backend::gpu::Recorder;
    // Calls per submit: about 50 ms of work at a first estimate.
    let mut rec = Recorder::new(ctx.clone())?;
    record(&mut rec)?;
    rec.submit()?;
    ctx.wait()?;
    let t = Instant::now();
    let mut rec = Recorder::new(ctx.clone())?;
    record(&mut rec)?;
    rec.submit()?;
    ctx.wait()?;
    let one = t.elapsed().as_secs_f64().max(1e-6);
    let reps = ((0.05 / one) as usize).clamp(1, 200);
    let per_call = time_median(budget, || {
        let mut rec = Recorder::new(ctx.clone())?;
        for _ in 0..reps {
            record(&mut rec)?;
        }
        rec.submit()?;
        ctx.wait()
    })?;
    Ok(per_call / reps as f64)
}

/// Matmul versions at `sizes` (square) on a GPU device.
pub fn gpu_matmul(
    device: &crate::Device,
    budget: Duration,
    sizes: &[usize],
) -> Result<Vec<BenchResult>> {
    use crate::backend::gpu;
    let crate::Device::Gpu(id) = device else {
        return Err(crate::Error::param(
            "bench",
            "gpu_matmul needs a gpu device",
        ));
    };
    let ctx = gpu::device::context(*id)?;
    let mut out = Vec::new();
    for &n in sizes {
        let mut rec = gpu::Recorder::new(ctx.clone())?;
        let a = rec.on_device(&filled(&[n, n], 1))?;
        let b = rec.on_device(&filled(&[n, n], 2))?;
        rec.submit()?;
        let flops = 2.0 * (n as f64).powi(3);
        for kernel in MatmulKernel::ALL {
            let seconds = gpu_time(&ctx, budget, |rec| {
                matmul(rec, kernel, &a, &b, &[n, n]).map(drop)
            })?;
            out.push(BenchResult {
                name: format!("matmul {} {n}x{n}x{n}", kernel.name()),
                flops,
                seconds,
                peak_bytes: None,
            });
        }
    }
    Ok(out)
}

/// The reference CNN's convolutions (forward and both backward passes) on a GPU device.
pub fn gpu_convs(
    device: &crate::Device,
    budget: Duration,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<BenchResult>> {
    use crate::backend::gpu;
    let crate::Device::Gpu(id) = device else {
        return Err(crate::Error::param("bench", "gpu_convs needs a gpu device"));
    };
    let ctx = gpu::device::context(*id)?;
    let mut out = Vec::new();
    for (name, xs, ws) in CNN_CONVS.into_iter().filter(|(name, ..)| keep(name)) {
        let (ys, flops) = conv_output(xs, ws);
        let mut rec = gpu::Recorder::new(ctx.clone())?;
        let x = rec.on_device(&filled(&xs, 3))?;
        let w = rec.on_device(&filled(&ws, 4))?;
        let dy = rec.on_device(&filled(&ys, 5))?;
        rec.submit()?;
        for (pass, op, inputs, shape) in conv_passes(x, w, dy, xs, ws, ys) {
            let seconds = gpu_time(&ctx, budget, |rec| {
                gpu::kernels::exec(rec, &op, &inputs, &shape, DType::F32).map(drop)
            })?;
            out.push(BenchResult {
                name: format!("{name} {pass}"),
                flops,
                seconds,
                peak_bytes: None,
            });
        }
    }
    Ok(out)
}

/// Attention shapes (batch, heads, sequence, head dim) for a device:
/// BERT-base-like heads at growing lengths; small ones on a software GPU.
pub fn attention_shapes(software: bool) -> Vec<[usize; 4]> {
    if software {
        vec![[1, 4, 64, 32], [1, 4, 128, 64], [1, 4, 256, 64]]
    } else {
        vec![
            [4, 12, 128, 64],
            [4, 12, 512, 64],
            [2, 12, 1024, 64],
            [1, 8, 2048, 64],
            [4, 12, 512, 32],
            [4, 8, 512, 128],
        ]
    }
}

/// Fused attention against the unfused composition (matmul, softmax,
/// matmul) through the engine on `device`, forward and forward+backward,
/// with each one's peak memory. FLOPs count the matmuls once (forward
/// 4 b h l^2 d, backward 8 b h l^2 d), so GFLOP/s ratios are time ratios.
pub fn attention(
    device: &crate::Device,
    budget: Duration,
    shapes: &[[usize; 4]],
) -> Result<Vec<BenchResult>> {
    use crate::{AttentionOpts, Tensor};
    let mut out = Vec::new();
    for &[b, h, l, d] in shapes {
        let input = |seed: u64| -> Result<Tensor> {
            let t = Tensor::rand_seeded(&[b, h, l, d], seed)
                .sub_scalar(0.5)
                .to(*device);
            t.realize()?;
            Ok(t)
        };
        let (q, k, v) = (input(1)?, input(2)?, input(3)?);
        let w = input(4)?;
        let opts = AttentionOpts::default();
        let forward_flops = 4.0 * (b * h * l * l * d) as f64;
        for fused in [true, false] {
            let run = |q: &Tensor, k: &Tensor, v: &Tensor| {
                if fused {
                    Tensor::attention(q, k, v, &opts)
                } else {
                    Tensor::attention_unfused(q, k, v, &opts)
                }
            };
            let kind = if fused { "fused" } else { "unfused" };
            let mut peak = 0;
            let seconds = time_median(budget, || {
                let o = run(&q, &k, &v)?;
                o.realize()?;
                peak = crate::last_realize_stats().peak_bytes;
                // Reading a value waits for the device.
                o.sum_all().item().map(drop)
            })?;
            out.push(BenchResult {
                name: format!("attention {kind} b{b} h{h} l{l} d{d} forward"),
                flops: forward_flops,
                seconds,
                peak_bytes: Some(peak),
            });
            let (qg, kg, vg) = (q.with_grad(), k.with_grad(), v.with_grad());
            let mut peak = 0;
            let seconds = time_median(budget, || {
                let o = run(&qg, &kg, &vg)?;
                let g = o.mul(&w)?.sum_all().backward()?;
                let grads: Vec<Tensor> = [&qg, &kg, &vg].map(|x| g.get_or_zeros(x)).to_vec();
                Tensor::realize_all(&grads)?;
                peak = crate::last_realize_stats().peak_bytes;
                grads[0].sum_all().item().map(drop)
            })?;
            out.push(BenchResult {
                name: format!("attention {kind} b{b} h{h} l{l} d{d} forward+backward"),
                flops: 3.0 * forward_flops,
                seconds,
                peak_bytes: Some(peak),
            });
        }
    }
    Ok(out)
}

/// A plain table, or one JSON object per line with `json`.
pub fn report(results: &[BenchResult], json: bool) -> String {
    report_on(results, json, "cpu backend")
}

/// `report` with the device named in the table header.
pub fn report_on(results: &[BenchResult], json: bool, device: &str) -> String {
    let mut s = String::new();
    let memory = results.iter().any(|r| r.peak_bytes.is_some());
    let width = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max(40);
    if !json {
        s.push_str(&format!(
            "{:<width$} {:>12} {:>10}{}\n",
            format!("kernel ({device})"),
            "ms",
            "GFLOP/s",
            if memory { "  peak MiB" } else { "" }
        ));
    }
    for r in results {
        if json {
            let peak = r
                .peak_bytes
                .map_or(String::new(), |b| format!(", \"peak_bytes\": {b}"));
            s.push_str(&format!(
                "{{\"name\": \"{}\", \"seconds\": {:.6e}, \"gflops\": {:.3}{peak}}}\n",
                r.name,
                r.seconds,
                r.gflops()
            ));
        } else {
            let peak = r.peak_bytes.map_or(String::new(), |b| {
                format!(" {:>9.2}", b as f64 / (1 << 20) as f64)
            });
            s.push_str(&format!(
                "{:<width$} {:>12.3} {:>10.1}{peak}\n",
                r.name,
                r.seconds * 1e3,
                r.gflops()
            ));
        }
    }
    s
}

/// One training step of the reference CNN as the training loop runs it.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// What was stepped.
    pub name: String,
    /// Median wall seconds per step, results read back.
    pub seconds: f64,
    /// Kernel dispatches of the step's realize (0 on the cpu).
    pub dispatches: usize,
    /// Device sessions the realize finished (each one a submit).
    pub sessions: usize,
    /// Median host seconds spent recording the step's kernels (on the cpu:
    /// computing them).
    pub record_seconds: f64,
}

impl StepReport {
    /// One line for the table.
    pub fn line(&self) -> String {
        let per_dispatch = if self.dispatches > 0 {
            format!(
                ", {:.1} us/dispatch",
                self.record_seconds * 1e6 / self.dispatches as f64
            )
        } else {
            String::new()
        };
        format!(
            "{}: {:.2} ms/step, {} dispatches, {} sessions, recording {:.2} ms{per_dispatch}\n",
            self.name,
            self.seconds * 1e3,
            self.dispatches,
            self.sessions,
            self.record_seconds * 1e3,
        )
    }
}

/// The seed CNN's training step (batch 32, CIFAR-10 shapes, Adam, loss and
/// accuracy count read back) on `device`, timed over `budget` after warm-up.
pub fn train_step(device: crate::Device, budget: Duration) -> Result<StepReport> {
    use crate::nn::Module;
    use crate::{Optimizer, Tensor};
    crate::with_device(device, || {
        crate::manual_seed(0);
        let model = crate::models::build_for("seed-cnn", (32, 32), 10)?;
        let mut opt = crate::Adam::new(
            model.parameters().into_iter().map(|(_, p)| p).collect(),
            1e-3,
        );
        let x = Tensor::rand(&[32, 3, 32, 32]);
        let labels: Vec<i32> = (0..32).map(|i| i % 10).collect();
        let y = Tensor::from_slice_i32(&labels, &[32])?;
        x.realize()?;
        let mut records = Vec::new();
        let mut stats = crate::RealizeStats::default();
        let seconds = time_median(budget, || {
            let logits = model.forward(&x)?;
            let loss = logits.cross_entropy(&y, 0.0)?;
            let correct = logits.detach().argmax(1, false)?.eq(&y)?.sum_all();
            opt.step_with(&loss, std::slice::from_ref(&correct))?;
            stats = crate::last_realize_stats();
            correct.item()?;
            records.push(stats.record_ns as f64 * 1e-9);
            Ok(())
        })?;
        records.sort_by(f64::total_cmp);
        Ok(StepReport {
            name: format!("seed-cnn train step, batch 32 ({})", device.describe()),
            seconds,
            dispatches: stats.dispatches,
            sessions: stats.sessions,
            record_seconds: records[records.len() / 2],
        })
    })
}
