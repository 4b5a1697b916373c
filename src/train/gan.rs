//! Adversarial training: a generator and a discriminator, two optimizers,
//! one step counter. Each step updates the discriminator on a real and a
//! generated batch, then the generator through the updated discriminator
//! (the non-saturating loss: BCE with logits against "real"); each update
//! is one scheduled realize. Every `sample_every` steps the generator (in
//! evaluation mode) draws a grid from a fixed latent batch; checkpoints
//! hold both nets and both optimizers and resume bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::data::batches::{Augment, BatchOptions, Batcher};
use crate::data::image_set;
use crate::data::ring::Ring;
use crate::data::ImageDataset;
use crate::io::checkpoint;
use crate::models::gan::Gan;
use crate::nn::{named_tensors, Module};
use crate::optim::{Adam, Optimizer};
use crate::{Error, Result, Tensor};

/// What a GAN run does.
#[derive(Clone, Debug)]
pub struct GanConfig {
    /// "dcgan" or "gan-ring".
    pub kind: String,
    /// DCGAN's width (64 in the paper), or the ring MLPs' hidden units.
    pub width: usize,
    /// Length of the generator's latent vector.
    pub latent: usize,
    /// Training steps (one D update and one G update each).
    pub steps: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Adam's learning rate, for both networks.
    pub lr: f32,
    /// Adam's beta1 (0.5 for DCGAN).
    pub beta1: f32,
    /// Adam's beta2.
    pub beta2: f32,
    /// Seed of the latent vectors, data order and weights.
    pub seed: u64,
    /// Folder for the checkpoint, metrics and sample grids.
    pub out: PathBuf,
    /// Continue from this checkpoint.
    pub resume: Option<PathBuf>,
    /// Steps between sample grids (0: none).
    pub sample_every: usize,
    /// Steps between checkpoints (besides the last step and a stop).
    pub checkpoint_every: usize,
    /// Steps averaged into one row of metrics.csv.
    pub log_every: usize,
    /// Decay both learning rates linearly to zero over the run (the
    /// samples settle instead of orbiting the modes).
    pub linear_decay: bool,
}

impl GanConfig {
    /// DCGAN on 32x32 images with the paper's optimizer: Adam 2e-4, beta1 0.5.
    pub fn dcgan(out: PathBuf) -> GanConfig {
        GanConfig {
            kind: "dcgan".into(),
            width: 64,
            latent: crate::models::gan::LATENT,
            steps: 5000,
            batch_size: 64,
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            seed: 0,
            out,
            resume: None,
            sample_every: 500,
            checkpoint_every: 500,
            log_every: 50,
            linear_decay: false,
        }
    }

    /// The 2-D ring: small MLPs from a 2-d latent, a fast learning rate
    /// decayed to zero (over seeds 0-3 on the cpu backend, 3000 steps cover
    /// all 8 modes with 75-87% of samples within 3 standard deviations of
    /// one; 2000 steps leave some seeds short).
    pub fn ring(out: PathBuf) -> GanConfig {
        GanConfig {
            kind: "gan-ring".into(),
            width: 64,
            latent: 2,
            steps: 3000,
            batch_size: 128,
            lr: 2e-3,
            beta1: 0.5,
            beta2: 0.999,
            sample_every: 0,
            checkpoint_every: 1000,
            log_every: 100,
            linear_decay: true,
            ..GanConfig::dcgan(out)
        }
    }
}

/// Where real examples come from.
pub enum RealData {
    /// Images as u8, served in [-1, 1] (the generator's tanh range).
    Images(Arc<ImageDataset>),
    /// Points drawn afresh every step.
    Ring(Ring),
}

impl RealData {
    fn check(&self, cfg: &GanConfig) -> Result<()> {
        match self {
            RealData::Images(d) if d.len() < cfg.batch_size => Err(Error::param(
                "train gan",
                format!(
                    "{} images are fewer than one batch of {}",
                    d.len(),
                    cfg.batch_size
                ),
            )),
            RealData::Images(d) if (d.channels, d.height, d.width) != (3, 32, 32) => {
                Err(Error::param(
                    "train gan",
                    format!(
                        "DCGAN makes 3x32x32 images; the data is {}x{}x{}",
                        d.channels, d.height, d.width
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Real batches from `step` on, one per step.
    fn batches(&self, cfg: &GanConfig, step: usize) -> Box<dyn Iterator<Item = Result<Tensor>>> {
        let bs = cfg.batch_size;
        match self {
            RealData::Ring(ring) => {
                let (ring, seed) = (*ring, cfg.seed);
                Box::new((step..).map(move |s| {
                    let pts = ring.sample(bs, seed ^ (s as u64).wrapping_mul(0x9e37_79b9));
                    Tensor::from_vec(pts, &[bs, 2])
                }))
            }
            RealData::Images(data) => {
                // Full batches only (the last partial one of an epoch is
                // dropped), so real and generated batches match.
                let per_epoch = data.len() / bs;
                let data = data.clone();
                let seed = cfg.seed;
                let epochs = (step / per_epoch..).flat_map(move |epoch| {
                    let opts = BatchOptions {
                        batch_size: bs,
                        shuffle: true,
                        seed,
                        augment: Augment::default(),
                        normalize: Some((vec![0.5; 3], vec![0.5; 3])),
                    };
                    let start = if epoch == step / per_epoch {
                        step % per_epoch
                    } else {
                        0
                    };
                    Batcher::new(data.clone(), opts, epoch as u64, start)
                        .take(per_epoch - start)
                        .map(|b| b.tensors().map(|(x, _)| x))
                });
                Box::new(epochs)
            }
        }
    }
}

/// One step's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GanStep {
    /// The step number, from 1.
    pub step: usize,
    /// The discriminator's loss.
    pub d_loss: f32,
    /// The generator's loss.
    pub g_loss: f32,
    /// Mean D(x) on the real batch (probability "real").
    pub d_real: f32,
    /// Mean D(G(z)) on the generated batch, before the discriminator's update.
    pub d_fake: f32,
}

/// A row of metrics.csv: `GanStep` figures averaged over `log_every` steps.
#[derive(Clone, Debug, PartialEq)]
pub struct GanLogRow {
    /// The figures, averaged.
    pub mean: GanStep,
    /// Steps per second over the interval.
    pub steps_per_sec: f32,
    /// Seconds since the run started.
    pub seconds: f32,
}

const CSV_HEADER: &str = "step,d_loss,g_loss,d_real,d_fake,steps_per_sec,seconds";

/// The log as CSV (header first).
pub fn log_csv(rows: &[GanLogRow]) -> String {
    let mut s = format!("{CSV_HEADER}\n");
    for r in rows {
        let m = &r.mean;
        s += &format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.3},{:.2}\n",
            m.step, m.d_loss, m.g_loss, m.d_real, m.d_fake, r.steps_per_sec, r.seconds
        );
    }
    s
}

/// Rows of a log written by [`log_csv`].
pub fn parse_log_csv(text: &str) -> Vec<GanLogRow> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<f32> = line
                .split(',')
                .map(|v| v.trim().parse().ok())
                .collect::<Option<_>>()?;
            let [step, d_loss, g_loss, d_real, d_fake, rate, seconds] = f[..] else {
                return None;
            };
            Some(GanLogRow {
                mean: GanStep {
                    step: step as usize,
                    d_loss,
                    g_loss,
                    d_real,
                    d_fake,
                },
                steps_per_sec: rate,
                seconds,
            })
        })
        .collect()
}

/// Hooks the caller provides (progress display, plots, interruption).
pub trait GanObserver {
    /// Before the first step: the steps in all, and how many are done (on resume).
    fn start(&mut self, _steps: usize, _done: usize) {}
    /// After every step.
    fn step(&mut self, _s: &GanStep, _steps_per_sec: f32) {}
    /// After each metrics row is written.
    fn logged(&mut self, _rows: &[GanLogRow]) -> Result<()> {
        Ok(())
    }
    /// A line to show the user.
    fn message(&mut self, _msg: &str) {}
    /// Checked after every step: true saves a checkpoint and stops.
    fn should_stop(&self) -> bool {
        false
    }
}

/// A silent observer.
pub struct QuietGan;
impl GanObserver for QuietGan {}

#[derive(Clone, Debug)]
/// What a GAN run did.
pub struct GanSummary {
    /// Steps done in all (resumed ones included).
    pub steps: usize,
    /// Every metrics row.
    pub log: Vec<GanLogRow>,
    /// The last step's figures.
    pub last: GanStep,
    /// Whether it stopped before the last step (interrupted or diverged).
    pub stopped_early: bool,
    /// The latest checkpoint.
    pub checkpoint: PathBuf,
    /// Training steps per second over this run's steps.
    pub steps_per_sec: f32,
    /// Sample grids written (paths).
    pub grids: Vec<PathBuf>,
}

fn io_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

fn meta_get<T: std::str::FromStr>(
    meta: &HashMap<String, String>,
    key: &str,
    path: &Path,
) -> Result<T> {
    meta.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| {
        io_err(
            path,
            format!("lacks a valid {key:?}; it is not a `shadergrad train gan` checkpoint"),
        )
    })
}

/// The latents every sample grid uses: fixed by the seed, independent of
/// the training draws.
pub fn fixed_latents(gan: &Gan, n: usize, seed: u64) -> Tensor {
    Tensor::randn_seeded(&[n, gan.latent], seed ^ 0x6772_6964)
}

/// `n` generated images as u8, the generator in evaluation mode (batch
/// norm from its running statistics), `batch` at a time.
pub fn sample_images(gan: &mut Gan, z: &Tensor, batch: usize) -> Result<ImageDataset> {
    let n = z.shape()[0];
    gan.generator.set_training(false);
    let result = crate::no_grad(|| -> Result<Vec<f32>> {
        let mut values = Vec::with_capacity(n * 3 * 32 * 32);
        for start in (0..n).step_by(batch.max(1)) {
            let end = (start + batch.max(1)).min(n);
            let images = gan.generate(&z.slice(0, start, end)?)?;
            values.extend(images.to_vec()?);
        }
        Ok(values)
    });
    gan.generator.set_training(true);
    image_set::from_signed_floats(&result?, n, 32)
}

/// Load a GAN checkpoint written by [`train_gan`]: the nets, built as they
/// were trained, with their weights.
pub fn load_gan(path: &Path) -> Result<(Gan, checkpoint::Checkpoint)> {
    let ck = checkpoint::load(path)?;
    if ck.metadata.get("format").map(String::as_str) != Some("shadergrad-gan-v1") {
        return Err(io_err(
            path,
            "is not a GAN checkpoint (written by `shadergrad train gan`); a classifier checkpoint goes to --classifier",
        ));
    }
    let kind: String = meta_get(&ck.metadata, "kind", path)?;
    let width = meta_get(&ck.metadata, "width", path)?;
    let latent = meta_get(&ck.metadata, "latent", path)?;
    let gan = Gan::build(&kind, width, latent)?;
    ck.restore_under(&gan.generator, "generator.", path)?;
    ck.restore_under(&gan.discriminator, "discriminator.", path)?;
    Ok((gan, ck))
}

/// One training step on the real batch `x`: the discriminator (real as
/// real, generated as fake), then the generator through the updated
/// discriminator, each one realize. The figures' `step` is left 0 for the
/// caller to number. What `train_gan` runs per step, for callers that
/// drive training themselves (e.g. one step per frame of an app).
pub fn gan_step(gan: &Gan, opt_d: &mut Adam, opt_g: &mut Adam, x: &Tensor) -> Result<GanStep> {
    let bs = x.shape().first().copied().unwrap_or(0);
    let z = gan.latents(bs);
    // Every generator layer's output stays held until the generator's
    // update, which then reads them instead of recomputing them.
    let activations = gan.generator.forward_all(&z)?;
    let fake = activations
        .last()
        .cloned()
        .ok_or_else(|| Error::param("train gan", "the generator has no layers"))?;
    let (ones, zeros) = (Tensor::ones(&[bs, 1]), Tensor::zeros(&[bs, 1]));
    let d_real = gan.discriminator.forward(x)?;
    let d_fake = gan.discriminator.forward(&fake.detach())?;
    let d_loss = d_real
        .bce_with_logits(&ones)?
        .add(&d_fake.bce_with_logits(&zeros)?)?;
    let p_real = d_real.detach().sigmoid().mean_all();
    let p_fake = d_fake.detach().sigmoid().mean_all();
    let d_values = opt_d.step_values(&d_loss, &[p_real, p_fake])?;
    let g_loss = gan.discriminator.forward(&fake)?.bce_with_logits(&ones)?;
    let g_value = opt_g.step_with(&g_loss, &[])?;
    drop(activations);
    Ok(GanStep {
        step: 0,
        d_loss: d_values[0],
        g_loss: g_value,
        d_real: d_values[1],
        d_fake: d_values[2],
    })
}

/// Train `gan` on `data` for `cfg.steps` (from a checkpoint's step with
/// `cfg.resume`).
pub fn train_gan(
    cfg: &GanConfig,
    gan: &mut Gan,
    data: &RealData,
    observer: &mut dyn GanObserver,
) -> Result<GanSummary> {
    if cfg.batch_size == 0 || cfg.steps == 0 || cfg.log_every == 0 {
        return Err(Error::param(
            "train gan",
            "steps, batch size and the log interval must be at least 1",
        ));
    }
    data.check(cfg)?;
    let samples_dir = cfg.out.join("samples");
    std::fs::create_dir_all(&samples_dir).map_err(|e| io_err(&samples_dir, e))?;
    let adam = |m: &dyn Module| {
        Adam::new(m.parameters().into_iter().map(|(_, p)| p).collect(), cfg.lr)
            .betas(cfg.beta1, cfg.beta2)
    };
    let mut opt_d = adam(&gan.discriminator);
    let mut opt_g = adam(&gan.generator);
    let mut step = 0usize;
    let mut log: Vec<GanLogRow> = Vec::new();
    if let Some(path) = &cfg.resume {
        let ck = checkpoint::load(path)?;
        if ck.metadata.get("format").map(String::as_str) != Some("shadergrad-gan-v1") {
            return Err(io_err(
                path,
                "is not a GAN checkpoint (written by `shadergrad train gan`)",
            ));
        }
        for (key, want) in [
            ("kind", cfg.kind.clone()),
            ("width", cfg.width.to_string()),
            ("latent", cfg.latent.to_string()),
            ("batch_size", cfg.batch_size.to_string()),
        ] {
            let have: String = meta_get(&ck.metadata, key, path)?;
            if have != want {
                return Err(io_err(
                    path,
                    format!("was trained with {key} {have}; resume with the same (not {want})"),
                ));
            }
        }
        ck.restore_under(&gan.generator, "generator.", path)?;
        ck.restore_under(&gan.discriminator, "discriminator.", path)?;
        opt_g.load_state_tensors(&|n| ck.tensor(&format!("generator.{n}")).and_then(|t| t.ok()))?;
        opt_d.load_state_tensors(&|n| {
            ck.tensor(&format!("discriminator.{n}"))
                .and_then(|t| t.ok())
        })?;
        step = meta_get(&ck.metadata, "step", path)?;
        log = ck
            .metadata
            .get("log_csv")
            .map(|c| parse_log_csv(c))
            .unwrap_or_default();
        observer.message(&format!("resumed from {} at step {step}", path.display()));
    }
    let ck_path = cfg.out.join("checkpoint.safetensors");
    let save = |gan: &Gan, opt_g: &Adam, opt_d: &Adam, step: usize, log: &[GanLogRow]| {
        let mut tensors = Vec::new();
        for (prefix, net, opt) in [
            ("generator", &gan.generator, opt_g),
            ("discriminator", &gan.discriminator, opt_d),
        ] {
            tensors.extend(
                named_tensors(net)
                    .into_iter()
                    .map(|(n, p)| (format!("{prefix}.{n}"), p.get())),
            );
            tensors.extend(
                opt.state_tensors()
                    .into_iter()
                    .map(|(n, t)| (format!("{prefix}.{n}"), t)),
            );
        }
        let meta: HashMap<String, String> = [
            ("format", "shadergrad-gan-v1".to_string()),
            ("model", gan.kind.clone()),
            ("kind", gan.kind.clone()),
            ("width", gan.width.to_string()),
            ("latent", gan.latent.to_string()),
            ("step", step.to_string()),
            ("steps", cfg.steps.to_string()),
            ("batch_size", cfg.batch_size.to_string()),
            ("seed", cfg.seed.to_string()),
            ("lr", cfg.lr.to_string()),
            ("betas", format!("{},{}", cfg.beta1, cfg.beta2)),
            ("linear_decay", cfg.linear_decay.to_string()),
            ("log_csv", log_csv(log)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        checkpoint::save(&ck_path, &tensors, meta)
    };
    let write_log = |log: &[GanLogRow]| -> Result<()> {
        let path = cfg.out.join("metrics.csv");
        let tmp = cfg.out.join("metrics.csv.tmp");
        std::fs::write(&tmp, log_csv(log))
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| io_err(&path, e))
    };
    let images = matches!(data, RealData::Images(_));
    let grid_z = fixed_latents(gan, 64, cfg.seed);
    let mut grids = Vec::new();
    let mut write_grid = |gan: &mut Gan, step: usize| -> Result<()> {
        let set = sample_images(gan, &grid_z, 64)?;
        let path = samples_dir.join(format!("step-{step:06}.png"));
        image_set::save_grid(&set, 8, 8, 2, &path)?;
        grids.push(path);
        Ok(())
    };

    observer.start(cfg.steps, step);
    let started = Instant::now();
    let first = step;
    let mut window: Vec<GanStep> = Vec::new();
    let mut window_start = Instant::now();
    let mut last = GanStep::default();
    let mut stopped_early = false;
    let mut real = data.batches(cfg, step);
    while step < cfg.steps {
        let x = real
            .next()
            .ok_or_else(|| Error::param("train gan", "the data ran out (internal)"))??;
        // Per-step seeding: the latents do not depend on where a run resumed.
        crate::manual_seed(cfg.seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if cfg.linear_decay {
            let lr = cfg.lr * (1.0 - step as f32 / cfg.steps as f32);
            opt_d.set_learning_rate(lr);
            opt_g.set_learning_rate(lr);
        }
        let diverged = |e: Error| {
            Error::Grad(format!(
                "training diverged at step {step}: {e}; the last checkpoint ({}) is intact",
                ck_path.display()
            ))
        };
        let figures = gan_step(gan, &mut opt_d, &mut opt_g, &x).map_err(diverged)?;
        step += 1;
        last = GanStep { step, ..figures };
        window.push(last);
        let rate = (step - first) as f32 / started.elapsed().as_secs_f32().max(1e-9);
        observer.step(&last, rate);
        let stop = observer.should_stop() && step < cfg.steps;
        if window.len() == cfg.log_every || step == cfg.steps || stop {
            let n = window.len() as f32;
            let mean = |f: fn(&GanStep) -> f32| window.iter().map(f).sum::<f32>() / n;
            log.push(GanLogRow {
                mean: GanStep {
                    step,
                    d_loss: mean(|s| s.d_loss),
                    g_loss: mean(|s| s.g_loss),
                    d_real: mean(|s| s.d_real),
                    d_fake: mean(|s| s.d_fake),
                },
                steps_per_sec: n / window_start.elapsed().as_secs_f32().max(1e-9),
                seconds: started.elapsed().as_secs_f32(),
            });
            window.clear();
            window_start = Instant::now();
            write_log(&log)?;
            observer.logged(&log)?;
        }
        if images
            && cfg.sample_every > 0
            && (step.is_multiple_of(cfg.sample_every) || step == cfg.steps)
        {
            write_grid(gan, step)?;
        }
        if stop
            || step == cfg.steps
            || (cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every))
        {
            save(gan, &opt_g, &opt_d, step, &log)?;
        }
        if stop {
            observer.message(&format!(
                "stopped at step {step}; checkpoint saved to {} (resume with --resume)",
                ck_path.display()
            ));
            stopped_early = true;
            break;
        }
    }
    Ok(GanSummary {
        steps: step,
        steps_per_sec: (step - first) as f32 / started.elapsed().as_secs_f32().max(1e-9),
        log,
        last,
        stopped_early,
        checkpoint: ck_path,
        grids,
    })
}
