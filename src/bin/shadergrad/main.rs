//! The `shadergrad` command line: train, eval, sample, bench, devices.

mod gan;
mod images;
mod progress;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shadergrad::data::{cifar10, Augment};
use shadergrad::train::{self, TrainConfig};
use shadergrad::{with_device, Device, Result};

#[derive(Parser)]
#[command(
    name = "shadergrad",
    version,
    about = "Train neural networks on any GPU through WGSL, or on the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model: `train cifar10` or `train images` (image
    /// classifiers), `train gan` or `train sst2` (a sentence classifier).
    Train {
        #[command(subcommand)]
        what: TrainWhat,
    },
    /// Evaluate a checkpoint: `eval cifar10` or `eval images` (accuracy
    /// and confusion matrix) or `eval gan` (sample quality).
    Eval {
        #[command(subcommand)]
        what: EvalWhat,
    },
    /// Draw samples from a trained generator: `sample gan`.
    Sample {
        #[command(subcommand)]
        what: SampleWhat,
    },
    /// The benchmark harness: the device's peak, then each kernel's time,
    /// GFLOP/s or GB/s, fraction of peak and host cost per dispatch, and
    /// whole training steps; a table as results arrive.
    Bench(BenchArgs),
    /// Classify image files with an image classifier's checkpoint: the top classes.
    Predict(images::PredictArgs),
    /// Sentence embeddings of a pretrained BERT (MiniLM): one JSON array per sentence.
    Embed(text::EmbedArgs),
    /// Classify sentences with a checkpoint of `train sst2`: label and probability.
    Classify(text::ClassifyArgs),
    /// List the devices shadergrad can run on.
    Devices,
}

#[derive(Subcommand)]
enum TrainWhat {
    /// The image classifier on CIFAR-10 (the seed CNN by default).
    Cifar10(TrainArgs),
    /// An image classifier on your own folder of class folders (JPEG/PNG, any size).
    Images(images::TrainArgs),
    /// A GAN: DCGAN on CIFAR-10 images, or the 2-D ring (--model gan-ring).
    Gan(gan::TrainArgs),
    /// A sentiment classifier on SST-2: a Transformer from scratch or MiniLM fine-tuned.
    Sst2(text::TrainArgs),
}

#[derive(Subcommand)]
enum EvalWhat {
    /// Accuracy and confusion matrix of a classifier on the CIFAR-10 test set.
    Cifar10(EvalArgs),
    /// Accuracy, confusion matrix and misclassified images on an image folder.
    Images(images::EvalArgs),
    /// FCD, KCD and CS of a generator's samples (or of any image set).
    Gan(gan::EvalArgs),
}

#[derive(Subcommand)]
enum SampleWhat {
    /// Images from a DCGAN checkpoint: a grid PNG, one PNG each, or .npy.
    Gan(gan::SampleArgs),
}

#[derive(Args)]
struct DataArgs {
    /// CIFAR-10 location (archive or folder); else $SHADERGRAD_DATA, ./data, ../shared/data.
    #[arg(long)]
    data: Option<PathBuf>,
    /// auto, cpu, gpu or gpu:N (also $SHADERGRAD_DEVICE).
    #[arg(long, env = "SHADERGRAD_DEVICE", default_value = "auto")]
    device: String,
    /// Use a fixed random subset of N test images.
    #[arg(long)]
    limit_test: Option<usize>,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    fit: FitArgs,
    /// Folder for checkpoint.safetensors, metrics.csv and metrics.png.
    #[arg(long, default_value = "runs/cifar10")]
    out: PathBuf,
}

/// The model and its training: shared by `train cifar10` and `train images`.
#[derive(Args)]
pub(crate) struct FitArgs {
    /// seed-cnn, resnet8 or resnet18.
    #[arg(long, default_value = "seed-cnn")]
    model: String,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// adam, adamw, sgd (momentum 0.9, Nesterov) or gd.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// constant, step, cosine or one-cycle.
    #[arg(long, default_value = "constant")]
    schedule: String,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Random crop (padding 4 pixels, or 1/8 of the side for `train images`) and horizontal flip.
    #[arg(long)]
    augment: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop at the first op (forward or backward) that makes a NaN or an
    /// infinity, naming it, its shape and its inputs. Slow: every op runs
    /// on its own and is read back.
    #[arg(long)]
    detect_anomaly: bool,
    /// Continue from a checkpoint written by an earlier run.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Use a random subset (by --seed) of N training images.
    #[arg(long)]
    limit_train: Option<usize>,
    /// End with one JSON line of results.
    #[arg(long)]
    json: bool,
}

impl FitArgs {
    pub(crate) fn config(&self, out: PathBuf, metadata: Vec<(String, String)>) -> TrainConfig {
        // Process-wide, like the device: set where the run's settings are read.
        shadergrad::set_detect_anomaly(self.detect_anomaly);
        TrainConfig {
            model: self.model.clone(),
            epochs: self.epochs,
            batch_size: self.batch,
            lr: self.lr,
            optimizer: self.optimizer.clone(),
            schedule: self.schedule.clone(),
            weight_decay: self.weight_decay,
            label_smoothing: self.label_smoothing,
            augment: if self.augment {
                Augment {
                    crop_padding: 4,
                    horizontal_flip: true,
                }
            } else {
                Augment::default()
            },
            seed: self.seed,
            out,
            resume: self.resume.clone(),
            eval_batch: 500,
            metadata,
        }
    }
}

/// The closing JSON line of an image-classifier run (`--json`); figures a
/// run does not have (no evaluation set) are null.
pub(crate) fn print_summary_json(
    cfg: &TrainConfig,
    device: &Device,
    summary: &train::TrainSummary,
) {
    let last = summary.history.last();
    println!(
        "{}",
        serde_json::json!({
            "model": cfg.model,
            "device": device.describe(),
            "epochs": summary.history.len(),
            "train_loss": last.map(|m| m.train_loss()),
            "test_accuracy": last.map(|m| m.test_accuracy()),
            "images_per_sec": (summary.examples_per_sec as f64 * 10.0).round() / 10.0,
            "seconds": (summary.seconds as f64 * 10.0).round() / 10.0,
            "stopped_early": summary.stopped_early,
            "checkpoint": summary.checkpoint.display().to_string(),
        })
    );
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    #[arg(long)]
    checkpoint: PathBuf,
}

/// Mesa's Vulkan device-select layer connects to Wayland to find the
/// desktop's GPU, and without a usable XDG_RUNTIME_DIR the Wayland client
/// prints "error: XDG_RUNTIME_DIR is invalid..." on every probe. We rank
/// adapters ourselves, so then the layer is skipped (its documented
/// switch), before any thread exists.
fn quiet_adapter_probe() {
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    if !runtime_dir.is_some_and(|d| d.is_dir()) && std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

fn main() -> ExitCode {
    quiet_adapter_probe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train {
            what: TrainWhat::Cifar10(a),
        } => run_train(a),
        Command::Train {
            what: TrainWhat::Images(a),
        } => images::train(a),
        Command::Train {
            what: TrainWhat::Gan(a),
        } => gan::train(a),
        Command::Train {
            what: TrainWhat::Sst2(a),
        } => text::train(a),
        Command::Embed(a) => text::embed(a),
        Command::Classify(a) => text::classify(a),
        Command::Eval {
            what: EvalWhat::Cifar10(a),
        } => run_eval(a),
        Command::Eval {
            what: EvalWhat::Images(a),
        } => images::eval(a),
        Command::Predict(a) => images::predict(a),
        Command::Eval {
            what: EvalWhat::Gan(a),
        } => gan::eval(a),
        Command::Sample {
            what: SampleWhat::Gan(a),
        } => gan::sample(a),
        Command::Bench(a) => bench(a),
        Command::Devices => {
            print!("{}", shadergrad::devices_report());
            Ok(())
        }
    };
    let profile = shadergrad::profile::report();
    if !profile.is_empty() {
        eprint!("{profile}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The device a run uses, said out loud.
pub(crate) fn choose_device(spec: &str) -> Result<Device> {
    let device = Device::parse(spec)?;
    eprintln!("device: {} ({})", device, device.describe());
    Ok(device)
}

fn load_cifar(args: &DataArgs) -> Result<cifar10::Cifar10> {
    let path = cifar10::find(args.data.as_deref())?;
    eprintln!("data: {}", path.display());
    let mut data = cifar10::load(&path)?;
    if let Some(n) = args.limit_test {
        data.test = data.test.sample(n, 1);
    }
    Ok(data)
}

fn run_train(a: TrainArgs) -> Result<()> {
    let device = choose_device(&a.data.device)?;
    // Parameters, batches and every graph built from them live on `device`.
    with_device(device, || train_on(a, &device))
}

fn train_on(a: TrainArgs, device: &Device) -> Result<()> {
    let mut data = load_cifar(&a.data)?;
    if let Some(n) = a.fit.limit_train {
        data.train = data.train.sample(n, a.fit.seed);
    }
    let cfg = a.fit.config(a.out.clone(), vec![]);
    shadergrad::manual_seed(cfg.seed);
    let mut model = shadergrad::models::build(&cfg.model)?;
    eprintln!(
        "model: {} ({} parameters), {} train / {} test images, batch {}, {} epochs",
        cfg.model,
        shadergrad::nn::parameter_count(&model),
        data.train.len(),
        data.test.len(),
        cfg.batch_size,
        cfg.epochs
    );
    let plot = (
        cfg.out.join("metrics.png"),
        format!("{} on CIFAR-10", cfg.model),
    );
    let mut observer = progress::Progress::new(!a.fit.json, plot)?;
    let summary = train::train(
        &cfg,
        &mut model,
        &Arc::new(data.train),
        &Arc::new(data.test),
        &mut observer,
    )?;
    if a.fit.json {
        print_summary_json(&cfg, device, &summary);
    }
    Ok(())
}

fn run_eval(a: EvalArgs) -> Result<()> {
    let device = choose_device(&a.data.device)?;
    with_device(device, || eval_on(a, &device))
}

fn eval_on(a: EvalArgs, device: &Device) -> Result<()> {
    let ck = shadergrad::io::checkpoint::load(&a.checkpoint)?;
    let name = ck
        .metadata
        .get("model")
        .cloned()
        .unwrap_or_else(|| "seed-cnn".into());
    let mut model = shadergrad::models::build(&name)?;
    ck.restore(&model, &a.checkpoint)?;
    let data = load_cifar(&a.data)?;
    let eval = train::evaluate(&mut model, &Arc::new(data.test), 500)?;
    println!(
        "model {name} on {}: test accuracy {:.2}%  loss {:.4}",
        device.describe(),
        eval.accuracy * 100.0,
        eval.loss
    );
    println!("confusion matrix (rows: true class, columns: predicted)");
    print!("{:>11}", "");
    for c in cifar10::CLASSES {
        print!("{:>6}", &c[..5.min(c.len())]);
    }
    println!();
    for (i, row) in eval.confusion.iter().enumerate() {
        print!("{:>11}", cifar10::CLASSES.get(i).copied().unwrap_or("?"));
        for v in row {
            print!("{v:>6}");
        }
        println!();
    }
    Ok(())
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Entries: all (default), a group (matmul, conv, elementwise,
    /// reduce, attention, step) or part of entries' names (resnet18,
    /// seed-cnn, conv1, 512x512x512, ...).
    kernels: Vec<String>,
    /// Milliseconds to sample each entry for, after its warm-up.
    #[arg(long, default_value_t = 1000)]
    ms: u64,
    /// Also write the report as JSON (stable schema) to FILE, after every entry.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Print each entry's ratio against an earlier report (ours or a
    /// peer's from benches/peers/bench_torch.py), matched by name.
    #[arg(long, value_name = "FILE")]
    compare: Option<PathBuf>,
    /// auto, cpu, gpu or gpu:N (also $SHADERGRAD_DEVICE).
    #[arg(long, env = "SHADERGRAD_DEVICE", default_value = "auto")]
    device: String,
    /// Square matmul sizes, from which the other matmul shapes scale
    /// (default: 256,...,4096; on a software GPU 128,256,512).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Every entry at a tiny shape: checks the harness in seconds.
    #[arg(long)]
    tiny: bool,
}

fn bench(a: BenchArgs) -> Result<()> {
    use shadergrad::bench;
    let against = a.compare.as_deref().map(bench::load).transpose()?;
    let device = choose_device(&a.device)?;
    let opts = bench::Options {
        device,
        budget: Duration::from_millis(a.ms),
        sizes: a.sizes,
        filters: a.kernels,
        tiny: a.tiny,
    };
    let (mut header, mut shown) = (false, 0);
    let report = bench::run(&opts, |report| {
        if !header {
            print!("{}", bench::table_header(report, against.as_ref()));
            header = true;
        }
        for e in &report.entries[shown..] {
            print!("{}", bench::table_row(e, against.as_ref()));
        }
        shown = report.entries.len();
        // Saved after every entry: a run cut short keeps what it measured.
        if let Some(path) = &a.json {
            bench::save(report, path)?;
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        Ok(())
    })?;
    if let Some(path) = &a.json {
        eprintln!(
            "report: {} ({} entries)",
            path.display(),
            report.entries.len()
        );
    }
    Ok(())
}
