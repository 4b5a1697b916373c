//! The kernel benchmark harness behind `shadergrad bench` and `cargo bench`.
//!
//! A run measures the device's peak first (short probes of FMA throughput
//! and copy bandwidth), then each entry: matmuls, convolutions, elementwise
//! and fused chains, reductions, attention and whole training steps. Each
//! entry is timed after a warm-up, as a median with its spread, and read
//! as GFLOP/s or GB/s and as a fraction of the measured peak. Entries come
//! out one by one (a run cut short keeps what it measured) and together as
//! a [`Report`], whose JSON schema peers write too
//! (`benches/peers/bench_torch.py`), so `--compare` can print ratios.

mod cases;
mod probe;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Device, Error, Result};
pub use cases::{attention, attention_shapes};

/// Version of the JSON schema: bumped when a field changes meaning.
pub const SCHEMA: u32 = 1;

/// One run of the harness: where, how, the peaks, and every entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// [`SCHEMA`] of the writer.
    pub schema: u32,
    /// What measured: `shadergrad 0.1.0`, `pytorch 2.5.1`.
    pub tool: String,
    pub device: DeviceInfo,
    /// How device time was taken: `synced wall clock` (submit, wait for the
    /// device, divide by the calls recorded) or `cuda events`.
    pub timing: String,
    pub peak: Peak,
    pub entries: Vec<Entry>,
}

/// The device a report measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeviceInfo {
    /// `cpu`, `gpu:0`, `cuda:0`.
    pub name: String,
    /// The adapter (`llvmpipe (LLVM 15.0.6, 256 bits)`) or the CPU model.
    pub adapter: String,
    /// Driver and its version, where known.
    pub driver: String,
    /// `cpu`, `Vulkan`, `Metal`, `Dx12`, `Gl`, `cuda`.
    pub backend: String,
    /// `Cpu`, `DiscreteGpu`, `IntegratedGpu`, ...
    pub device_type: String,
    /// Host threads the cpu backend computes with.
    pub threads: usize,
}

/// The device's measured peaks.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Peak {
    /// f32 fused multiply-adds, counted as two FLOPs each.
    pub fma_gflops: f64,
    /// Bytes read plus bytes written per second by a large buffer copy.
    pub copy_gbs: f64,
}

/// One measured case.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// Stable name, the key `--compare` matches on: `matmul 512x512x512`.
    pub name: String,
    /// matmul, conv, elementwise, reduce, attention or step.
    pub group: String,
    /// The case's sizes (for a matmul `[batch, m, k, n]`; for a convolution
    /// x's `[n, c, h, w]` then the weight's `[o, c, kh, kw]`).
    pub shape: Vec<usize>,
    /// Element type of the data.
    pub dtype: String,
    /// Median seconds per call.
    pub median_s: f64,
    /// 10th and 90th percentile of the samples (the spread).
    pub p10_s: f64,
    pub p90_s: f64,
    /// Timed samples behind the figures.
    pub samples: usize,
    /// FLOPs per call / median, for compute-bound entries.
    pub gflops: Option<f64>,
    /// Bytes moved per call / median, for memory-bound entries.
    pub gbs: Option<f64>,
    /// gflops over the FMA peak or gbs over the copy peak.
    pub fraction_of_peak: Option<f64>,
    /// Kernel dispatches per call (GPU).
    pub dispatches: Option<usize>,
    /// Host microseconds to record one dispatch (GPU).
    pub host_us_per_dispatch: Option<f64>,
    /// Submits of recorded work per call (GPU).
    pub submits: Option<usize>,
    /// Blocking waits for the device per call (GPU steps: read-backs).
    pub waits: Option<usize>,
    /// Most bytes of intermediate results alive at once, where measured.
    pub peak_bytes: Option<usize>,
    /// Bytes the GPU's buffer pool holds after a step (in use and free;
    /// PyTorch: its caching allocator's reserved bytes).
    pub pool_bytes: Option<u64>,
}

/// What a run measures and how long it may take.
#[derive(Clone, Debug)]
pub struct Options {
    pub device: Device,
    /// Time to spend per entry after its warm-up.
    pub budget: Duration,
    /// Square matmul sizes; empty: the device's defaults (see [`default_sizes`]).
    pub sizes: Vec<usize>,
    /// Entries whose group equals, or whose name contains, one of these;
    /// empty or `all`: every entry.
    pub filters: Vec<String>,
    /// Scale every case down to tiny shapes (the schema test).
    pub tiny: bool,
}

impl Options {
    /// Every entry on `device` at its default sizes.
    pub fn new(device: Device, budget: Duration) -> Options {
        Options {
            device,
            budget,
            sizes: Vec::new(),
            filters: Vec::new(),
            tiny: false,
        }
    }

    fn wants(&self, group: &str, name: &str) -> bool {
        self.filters.is_empty()
            || self
                .filters
                .iter()
                .any(|f| f == "all" || f == group || name.contains(f.as_str()))
    }
}

/// The groups a filter may name.
pub const GROUPS: [&str; 6] = [
    "matmul",
    "conv",
    "elementwise",
    "reduce",
    "attention",
    "step",
];

/// Square matmul sizes by device: 256 to 4096, fewer on a software GPU
/// (about 1 GFLOP/s).
pub fn default_sizes(device: &Device) -> Vec<usize> {
    if is_software(device) {
        vec![128, 256, 512]
    } else {
        vec![256, 512, 1024, 2048, 4096]
    }
}

/// A GPU that runs on the CPU (llvmpipe, WARP, SwiftShader).
pub fn is_software(device: &Device) -> bool {
    match device {
        Device::Cpu => false,
        Device::Gpu(id) => crate::backend::gpu::device::context(*id)
            .is_ok_and(|c| c.info.device_type == wgpu::DeviceType::Cpu),
    }
}

/// Run every wanted entry: `on_entry` sees the report so far after each
/// one (to print and save it), and the full report comes back.
pub fn run(opts: &Options, mut on_entry: impl FnMut(&Report) -> Result<()>) -> Result<Report> {
    let cases = cases::cases(opts);
    for f in &opts.filters {
        let matched = f == "all"
            || cases
                .iter()
                .any(|c| c.group() == f || (!f.is_empty() && c.name().contains(f.as_str())));
        if !matched {
            return Err(Error::param(
                "bench",
                format!(
                    "{f:?} names no entry on {}; use all, a group ({}) or part of an entry's name",
                    opts.device,
                    GROUPS.join(", ")
                ),
            ));
        }
    }
    let mut report = Report {
        schema: SCHEMA,
        tool: format!("shadergrad {}", env!("CARGO_PKG_VERSION")),
        device: device_info(&opts.device)?,
        timing: timing_method(&opts.device)?.into(),
        peak: probe::peak(&opts.device, opts.tiny)?,
        entries: Vec::new(),
    };
    on_entry(&report)?;
    for case in cases {
        if !opts.wants(case.group(), &case.name()) {
            continue;
        }
        let mut entry = case.measure(opts)?;
        if let Some(g) = entry.gflops {
            entry.fraction_of_peak = Some(g / report.peak.fma_gflops);
        } else if let Some(b) = entry.gbs {
            entry.fraction_of_peak = Some(b / report.peak.copy_gbs);
        }
        report.entries.push(entry);
        on_entry(&report)?;
    }
    Ok(report)
}

fn device_info(device: &Device) -> Result<DeviceInfo> {
    let threads = rayon::current_num_threads();
    Ok(match device {
        Device::Cpu => DeviceInfo {
            name: "cpu".into(),
            adapter: cpu_model(),
            driver: String::new(),
            backend: "cpu".into(),
            device_type: "Cpu".into(),
            threads,
        },
        Device::Gpu(id) => {
            let ctx = crate::backend::gpu::device::context(*id)?;
            let info = &ctx.info;
            DeviceInfo {
                name: device.to_string(),
                adapter: info.name.clone(),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                threads,
            }
        }
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Timed samples of one entry, in seconds per call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub samples: usize,
}

impl Timing {
    fn of(mut times: Vec<f64>) -> Timing {
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        Timing {
            median: at(0.5),
            p10: at(0.1),
            p90: at(0.9),
            samples: times.len(),
        }
    }
}

/// Samples of `f` (which returns the seconds of one call) filling `budget`
/// after one warm-up call: at least 3, at most 1000.
pub(crate) fn sample(budget: Duration, mut f: impl FnMut() -> Result<f64>) -> Result<Timing> {
    f()?;
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed() < budget && times.len() < 1000) {
        times.push(f()?);
    }
    Ok(Timing::of(times))
}

/// Median wall time of `f` over calls filling `budget` (after one warm-up).
pub fn time_median(budget: Duration, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    Ok(sample(budget, || {
        let t = Instant::now();
        f()?;
        Ok(t.elapsed().as_secs_f64())
    })?
    .median)
}

/// The report as pretty JSON, written to a temp file and renamed, so a
/// reader never sees half a file.
pub fn save(report: &Report, path: &std::path::Path) -> Result<()> {
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| Error::param("bench", format!("serialising the report: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n")
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| io_error(path, e))
}

fn io_error(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

/// How this device's entries are timed (the report says so).
fn timing_method(device: &Device) -> Result<&'static str> {
    let timestamps = match device {
        Device::Gpu(id) => crate::backend::gpu::device::context(*id)?
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY),
        Device::Cpu => false,
    };
    Ok(if timestamps {
        "timestamp queries around the compute passes for kernel entries (matmul, conv, add, \
         reduce), synced wall clock for engine-level ones (fused chain, attention, steps)"
    } else {
        "synced wall clock"
    })
}

/// An earlier report (ours or a peer's), checked for the schema version.
pub fn load(path: &std::path::Path) -> Result<Report> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let report: Report = serde_json::from_str(&text).map_err(|e| {
        Error::param(
            "bench --compare",
            format!(
                "{} is not a benchmark report of schema {SCHEMA}: {e}",
                path.display()
            ),
        )
    })?;
    if report.schema != SCHEMA {
        return Err(Error::param(
            "bench --compare",
            format!(
                "{} has schema {}, this build reads {SCHEMA}; re-run it",
                path.display(),
                report.schema
            ),
        ));
    }
    Ok(report)
}

/// The table's first lines: device, timing, peaks, column heads.
pub fn table_header(report: &Report, against: Option<&Report>) -> String {
    let d = &report.device;
    let mut s = format!(
        "device: {} ({}, {}, {}{}), {} host threads\ntiming: {}, median of samples after a warm-up; \
         spread = 10th..90th percentile\npeak: {:.1} GFLOP/s FMA, {:.1} GB/s copy (probes)\n",
        d.name,
        d.adapter,
        d.backend,
        d.device_type,
        if d.driver.is_empty() {
            String::new()
        } else {
            format!(", {}", d.driver)
        },
        d.threads,
        report.timing,
        report.peak.fma_gflops,
        report.peak.copy_gbs,
    );
    if let Some(other) = against {
        s.push_str(&format!(
            "against: {} on {} ({}); ratio = their time / ours (above 1: we are faster)\n",
            other.tool, other.device.name, other.device.adapter
        ));
    }
    s.push_str(&format!(
        "{:<64} {:>10} {:>13} {:>10} {:>6} {:>9} {:>10}{}\n",
        "entry",
        "ms",
        "spread ms",
        "rate",
        "peak",
        "host us",
        "disp/sub/w",
        if against.is_some() {
            format!(" {:>10} {:>7}", "their ms", "ratio")
        } else {
            String::new()
        }
    ));
    s
}

/// One table row.
pub fn table_row(e: &Entry, against: Option<&Report>) -> String {
    let rate = match (e.gflops, e.gbs) {
        (Some(g), _) => format!("{g:.1} GF/s"),
        (_, Some(b)) => format!("{b:.1} GB/s"),
        _ => String::new(),
    };
    let peak = e
        .fraction_of_peak
        .map_or(String::new(), |f| format!("{:.0}%", f * 100.0));
    let host = e
        .host_us_per_dispatch
        .map_or(String::new(), |h| format!("{h:.1}"));
    let launches = match (e.dispatches, e.submits, e.waits) {
        (Some(d), Some(s), Some(w)) => format!("{d}/{s}/{w}"),
        (Some(d), Some(s), None) => format!("{d}/{s}/-"),
        _ => String::new(),
    };
    let mut s = format!(
        "{:<64} {:>10.3} {:>13} {:>10} {:>6} {:>9} {:>10}",
        e.name,
        e.median_s * 1e3,
        format!("{:.3}..{:.3}", e.p10_s * 1e3, e.p90_s * 1e3),
        rate,
        peak,
        host,
        launches
    );
    if let Some(other) = against {
        match other.entries.iter().find(|o| o.name == e.name) {
            Some(o) => s.push_str(&format!(
                " {:>10.3} {:>6.2}x",
                o.median_s * 1e3,
                o.median_s / e.median_s
            )),
            None => s.push_str(&format!(" {:>10} {:>7}", "-", "-")),
        }
    }
    s.push('\n');
    s
}
