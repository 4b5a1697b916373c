//! `train gan`, `sample gan`, `eval gan`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clap::Args;
use indicatif::ProgressBar;
use shadergrad::data::image_set;
use shadergrad::data::ring::Ring;
use shadergrad::data::{cifar10, ImageDataset};
use shadergrad::models::gan::Gan;
use shadergrad::train::gan::{
    self as gan_train, GanConfig, GanLogRow, GanObserver, GanStep, RealData,
};
use shadergrad::train::quality::{self, FeatureNet, Scores};
use shadergrad::{with_device, Error, Result, Tensor};

use crate::choose_device;
use crate::progress::{bar, interrupts};

#[derive(Args)]
pub struct TrainArgs {
    /// dcgan (32x32 RGB from CIFAR-10 images) or gan-ring (2-D points).
    #[arg(long, default_value = "dcgan")]
    model: String,
    /// CIFAR-10 location (archive or folder); else $SHADERGRAD_DATA, ./data, ../shared/data.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    batch: Option<usize>,
    /// DCGAN's width (the paper's is 64; 16-32 make a cpu run practical),
    /// or the ring MLPs' hidden units.
    #[arg(long)]
    width: Option<usize>,
    /// Adam's learning rate (DCGAN: 2e-4).
    #[arg(long)]
    lr: Option<f32>,
    /// Adam's beta1 (DCGAN: 0.5).
    #[arg(long)]
    beta1: Option<f32>,
    /// Steps between sample grids (samples/step-NNNNNN.png).
    #[arg(long)]
    sample_every: Option<usize>,
    /// Steps between checkpoints.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Use a random subset (by --seed) of N training images.
    #[arg(long)]
    limit_train: Option<usize>,
    /// auto, cpu, gpu or gpu:N (also $SHADERGRAD_DEVICE).
    #[arg(long, env = "SHADERGRAD_DEVICE", default_value = "auto")]
    device: String,
    /// Folder for checkpoint.safetensors, metrics.csv, metrics.png and samples/.
    #[arg(long, default_value = "runs/gan")]
    out: PathBuf,
    /// Stop at the first op (forward or backward) that makes a NaN or an
    /// infinity, naming it, its shape and its inputs. Slow: every op runs
    /// on its own and is read back.
    #[arg(long)]
    detect_anomaly: bool,
    /// Continue from a checkpoint written by an earlier run.
    #[arg(long)]
    resume: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// End with one JSON line of results.
    #[arg(long)]
    json: bool,
}

/// Progress bar, the loss plot after each metrics row, Ctrl-C.
struct GanProgress {
    bar: ProgressBar,
    visible: bool,
    interrupts: Arc<AtomicUsize>,
    plot: PathBuf,
    title: String,
}

impl GanObserver for GanProgress {
    fn start(&mut self, steps: usize, done: usize) {
        self.bar = bar(
            self.visible,
            steps as u64,
            "step [{bar:30}] {pos}/{len} {msg} eta {eta}",
        );
        self.bar.set_position(done as u64);
    }

    fn step(&mut self, s: &GanStep, rate: f32) {
        self.bar.set_position(s.step as u64);
        if s.step.is_multiple_of(10) {
            self.bar.set_message(format!(
                "D {:.3} G {:.3} D(x) {:.2} D(G(z)) {:.2} {rate:.1}/s",
                s.d_loss, s.g_loss, s.d_real, s.d_fake
            ));
        }
    }

    fn logged(&mut self, rows: &[GanLogRow]) -> Result<()> {
        let line = |f: fn(&GanLogRow) -> f32| -> Vec<(f32, f32)> {
            rows.iter().map(|r| (r.mean.step as f32, f(r))).collect()
        };
        shadergrad::plot::plot_panels(
            &self.title,
            "step",
            &[
                (
                    "loss",
                    vec![
                        ("discriminator".into(), line(|r| r.mean.d_loss)),
                        ("generator".into(), line(|r| r.mean.g_loss)),
                    ],
                ),
                (
                    "discriminator output",
                    vec![
                        ("D(x)".into(), line(|r| r.mean.d_real)),
                        ("D(G(z))".into(), line(|r| r.mean.d_fake)),
                    ],
                ),
            ],
            &self.plot,
        )
    }

    fn message(&mut self, msg: &str) {
        self.bar.suspend(|| eprintln!("{msg}"));
    }

    fn should_stop(&self) -> bool {
        self.interrupts.load(Ordering::SeqCst) > 0
    }
}

pub fn train(a: TrainArgs) -> Result<()> {
    shadergrad::set_detect_anomaly(a.detect_anomaly);
    let device = choose_device(&a.device)?;
    with_device(device, || {
        let mut cfg = match a.model.as_str() {
            "dcgan" => GanConfig::dcgan(a.out.clone()),
            "gan-ring" => GanConfig::ring(a.out.clone()),
            other => {
                return Err(Error::param(
                    "train gan",
                    format!("unknown model {other:?}; use dcgan or gan-ring"),
                ))
            }
        };
        let set = |slot: &mut usize, v: Option<usize>| *slot = v.unwrap_or(*slot);
        set(&mut cfg.steps, a.steps);
        set(&mut cfg.batch_size, a.batch);
        set(&mut cfg.width, a.width);
        set(&mut cfg.sample_every, a.sample_every);
        set(&mut cfg.checkpoint_every, a.checkpoint_every);
        cfg.lr = a.lr.unwrap_or(cfg.lr);
        cfg.beta1 = a.beta1.unwrap_or(cfg.beta1);
        cfg.seed = a.seed;
        cfg.resume = a.resume.clone();
        let data = if cfg.kind == "dcgan" {
            let path = cifar10::find(a.data.as_deref())?;
            eprintln!("data: {}", path.display());
            let mut train = cifar10::load(&path)?.train;
            if let Some(n) = a.limit_train {
                train = train.sample(n, a.seed);
            }
            RealData::Images(Arc::new(train))
        } else {
            RealData::Ring(Ring::default())
        };
        shadergrad::manual_seed(cfg.seed);
        let mut gan = Gan::build(&cfg.kind, cfg.width, cfg.latent)?;
        eprintln!(
            "model: {} width {} (generator {} parameters, discriminator {}), batch {}, {} steps, Adam {} beta1 {}",
            cfg.kind,
            cfg.width,
            shadergrad::nn::parameter_count(&gan.generator),
            shadergrad::nn::parameter_count(&gan.discriminator),
            cfg.batch_size,
            cfg.steps,
            cfg.lr,
            cfg.beta1
        );
        let mut observer = GanProgress {
            bar: ProgressBar::hidden(),
            visible: !a.json,
            interrupts: interrupts()?,
            plot: cfg.out.join("metrics.png"),
            title: format!(
                "{} on {}",
                cfg.kind,
                if cfg.kind == "dcgan" {
                    "CIFAR-10"
                } else {
                    "a ring of 8 Gaussians"
                }
            ),
        };
        let s = gan_train::train_gan(&cfg, &mut gan, &data, &mut observer)?;
        observer.bar.finish_and_clear();
        let last = s.log.last().map(|r| r.mean).unwrap_or(s.last);
        let window = match s.log.as_slice() {
            [.., a, b] => b.mean.step - a.mean.step,
            [b] => b.mean.step,
            [] => 1,
        };
        eprintln!(
            "step {}: D loss {:.4}, G loss {:.4}, D(x) {:.3}, D(G(z)) {:.3} (means of the last {} steps); {:.2} steps/s",
            s.steps, last.d_loss, last.g_loss, last.d_real, last.d_fake, window, s.steps_per_sec
        );
        if let Some(g) = s.grids.last() {
            eprintln!("samples: {}", g.display());
        }
        if a.json {
            // A diverged run's losses are NaN: null in JSON.
            println!(
                "{}",
                serde_json::json!({
                    "model": cfg.kind,
                    "width": cfg.width,
                    "device": device.describe(),
                    "steps": s.steps,
                    "batch": cfg.batch_size,
                    "d_loss": last.d_loss,
                    "g_loss": last.g_loss,
                    "d_real": last.d_real,
                    "d_fake": last.d_fake,
                    "steps_per_sec": (s.steps_per_sec as f64 * 1e3).round() / 1e3,
                    "stopped_early": s.stopped_early,
                    "checkpoint": s.checkpoint.display().to_string(),
                })
            );
        }
        Ok(())
    })
}

#[derive(Args)]
pub struct SampleArgs {
    /// A checkpoint written by `train gan`.
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long, default_value_t = 64)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A grid of all samples as one PNG.
    #[arg(long)]
    out: Option<PathBuf>,
    /// One PNG per sample in this folder.
    #[arg(long)]
    each: Option<PathBuf>,
    /// The samples as a .npy uint8 array [n, 32, 32, 3].
    #[arg(long)]
    npy: Option<PathBuf>,
    /// auto, cpu, gpu or gpu:N (also $SHADERGRAD_DEVICE).
    #[arg(long, env = "SHADERGRAD_DEVICE", default_value = "auto")]
    device: String,
}

/// `n` samples of a DCGAN checkpoint from latents seeded by `seed`.
fn samples(gan: &mut Gan, n: usize, seed: u64) -> Result<ImageDataset> {
    let z = Tensor::randn_seeded(&[n, gan.latent], seed);
    gan_train::sample_images(gan, &z, 500)
}

fn load_dcgan(path: &Path) -> Result<Gan> {
    let (gan, _) = gan_train::load_gan(path)?;
    if gan.kind != "dcgan" {
        return Err(Error::Io {
            path: path.display().to_string(),
            msg: format!("is a {} checkpoint; only dcgan draws images", gan.kind),
        });
    }
    Ok(gan)
}

pub fn sample(a: SampleArgs) -> Result<()> {
    if a.out.is_none() && a.each.is_none() && a.npy.is_none() {
        return Err(Error::param(
            "sample gan",
            "say where the samples go: --out grid.png, --each DIR and/or --npy FILE",
        ));
    }
    if a.n == 0 {
        return Err(Error::param("sample gan", "--n must be at least 1"));
    }
    let device = choose_device(&a.device)?;
    with_device(device, || {
        let mut gan = load_dcgan(&a.checkpoint)?;
        let set = samples(&mut gan, a.n, a.seed)?;
        if let Some(path) = &a.out {
            let cols = (a.n as f64).sqrt().ceil() as usize;
            image_set::save_grid(&set, a.n.div_ceil(cols), cols, 2, path)?;
            eprintln!("grid of {} samples: {}", a.n, path.display());
        }
        if let Some(dir) = &a.each {
            image_set::save_each(&set, dir)?;
            eprintln!("{} samples: {}", a.n, dir.display());
        }
        if let Some(path) = &a.npy {
            image_set::save_npy(&set, path)?;
            eprintln!("{} samples: {}", a.n, path.display());
        }
        Ok(())
    })
}

#[derive(Args)]
pub struct EvalArgs {
    /// A checkpoint written by `train gan`, whose samples are scored.
    #[arg(long, conflicts_with = "images")]
    checkpoint: Option<PathBuf>,
    /// Score these images instead: a folder of 32x32 PNG/JPEG files or a
    /// .npy uint8 array ([n, 32, 32, 3] or [n, 3, 32, 32]).
    #[arg(long)]
    images: Option<PathBuf>,
    /// The CIFAR-10 classifier whose features score the images: a
    /// checkpoint of `shadergrad train cifar10`.
    #[arg(long)]
    classifier: PathBuf,
    /// Images to score (at most the 10,000 real test images they are compared with).
    #[arg(long, default_value_t = 10_000)]
    n: usize,
    /// CIFAR-10 location; else $SHADERGRAD_DATA, ./data, ../shared/data.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto, cpu, gpu or gpu:N (also $SHADERGRAD_DEVICE).
    #[arg(long, env = "SHADERGRAD_DEVICE", default_value = "auto")]
    device: String,
    /// End with one JSON line of results.
    #[arg(long)]
    json: bool,
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let device = choose_device(&a.device)?;
    with_device(device, || {
        let mut net = FeatureNet::load(&a.classifier)?;
        // The subject first: a bad checkpoint or image set fails before the
        // data set loads.
        let (label, width, mut subject) = match (&a.checkpoint, &a.images) {
            (Some(path), None) => {
                let gan = load_dcgan(path)?;
                (format!("generator {}", path.display()), gan.width, Some(gan))
            }
            (None, Some(path)) => (format!("images {}", path.display()), 64, None),
            _ => {
                return Err(Error::param(
                    "eval gan",
                    "give the generator to score with --checkpoint FILE, or an image set with --images PATH",
                ))
            }
        };
        let images = match (&subject, &a.images) {
            (None, Some(path)) => Some(image_set::load(path, 32)?),
            _ => None,
        };
        let path = cifar10::find(a.data.as_deref())?;
        let data = cifar10::load(&path)?;
        if a.n < 2 || a.n > data.test.len() {
            return Err(Error::param(
                "eval gan",
                format!(
                    "--n {} must lie in 2..={}, the real test images the samples are compared with",
                    a.n,
                    data.test.len()
                ),
            ));
        }
        let set = match (&mut subject, images) {
            (Some(gan), _) => samples(gan, a.n, a.seed)?,
            (None, Some(set)) => {
                if set.len() < 2 {
                    return Err(Error::param(
                        "eval gan",
                        "the image set holds fewer than two images",
                    ));
                }
                if set.len() < a.n {
                    eprintln!("scoring all {} images (fewer than --n {})", set.len(), a.n);
                }
                set.head(a.n)
            }
            _ => return Err(Error::param("eval gan", "internal: nothing to score")),
        };
        eprintln!(
            "classifier: {} ({}); reference: {} real test images",
            a.classifier.display(),
            net.name,
            data.test.len()
        );
        let (reference, _) = net.features(&data.test)?;
        let generated = quality::score(&mut net, &set, &reference, a.seed)?;
        let real = quality::score(
            &mut net,
            &data.train.sample(set.len(), a.seed),
            &reference,
            a.seed,
        )?;
        shadergrad::manual_seed(a.seed);
        let mut untrained = Gan::dcgan(width)?;
        let ceiling = samples(&mut untrained, set.len(), a.seed)?;
        let untrained = quality::score(&mut net, &ceiling, &reference, a.seed)?;
        println!(
            "{:<34} {:>7} {:>9} {:>19} {:>15}",
            "set", "images", "FCD", "KCD (std)", "CS (std)"
        );
        let row = |name: &str, s: &Scores| {
            println!(
                "{name:<34} {:>7} {:>9.3} {:>10.4} ({:.4}) {:>7.3} ({:.3})",
                s.images, s.fcd, s.kcd, s.kcd_std, s.cs, s.cs_std
            )
        };
        row(&label, &generated);
        row("real training images (floor)", &real);
        row(
            &format!("untrained generator, width {width} (ceiling)"),
            &untrained,
        );
        println!("FCD: Frechet distance, KCD: kernel distance (both in the classifier's penultimate features; lower is better); CS: classifier score (higher is better)");
        if a.json {
            println!(
                "{{\"subject\": \"{}\", \"classifier\": \"{}\", \"generated\": {}, \"real\": {}, \"untrained\": {}}}",
                label.replace('"', "'"),
                a.classifier.display(),
                generated.json(),
                real.json(),
                untrained.json()
            );
        }
        Ok(())
    })
}
