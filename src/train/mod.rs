//! The training loop behind `shadergrad train`, generic over a model (any
//! [`Module`]), a data source ([`DataSource`]) and an objective
//! ([`Objective`]: the loss and metrics of a batch): epochs of seeded
//! batches, evaluation after each epoch, `metrics.csv`, checkpoints every
//! epoch (and on request mid-epoch) that a later run resumes from bit for
//! bit. Image classification (`classify`) is its first user.

pub mod classify;
pub mod gan;
pub mod metrics;
pub mod quality;
#[cfg(feature = "text")]
pub mod text;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::batches::Augment;
use crate::io::checkpoint;
use crate::nn::{named_tensors, Module};
use crate::optim::{Adam, LrSchedule, Optimizer, Sgd};
use crate::{Error, Result, Tensor};

pub use classify::{evaluate, train, Classification, Evaluation, ImageSource};
pub use metrics::{metrics_csv, parse_metrics_csv, EpochMetrics};

/// How one epoch's batches are drawn.
#[derive(Clone, Copy, Debug)]
pub struct EpochPlan {
    /// The epoch number, from 0.
    pub epoch: u64,
    /// The first batch (to resume mid-epoch).
    pub start: usize,
    /// Examples per batch.
    pub batch_size: usize,
    /// Shuffle by (seed, epoch); evaluation reads in order.
    pub shuffle: bool,
    /// Seed of the shuffle.
    pub seed: u64,
}

/// Where batches come from.
pub trait DataSource: Sync {
    /// What one batch is.
    type Batch;
    /// Examples per epoch.
    fn len(&self) -> usize;
    /// Whether there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// What an example is called in throughput figures ("images").
    fn unit(&self) -> &'static str {
        "examples"
    }
    /// One epoch's batches, in order, from `plan.start`. The same plan
    /// gives the same batches.
    fn batches(&self, plan: EpochPlan) -> Box<dyn Iterator<Item = Result<Self::Batch>> + '_>;
    /// Examples in a batch.
    fn batch_len(&self, batch: &Self::Batch) -> usize;
}

/// A batch's loss and metrics, built lazily: the optimizer step realizes
/// them with the gradients and the update.
pub struct StepOutput {
    /// The mean loss over the batch (what is minimised).
    pub loss: Tensor,
    /// Each metric summed over the batch (e.g. the number of correct
    /// predictions), in [`Objective::metrics`]' order; the loop reports
    /// them per example.
    pub metrics: Vec<Tensor>,
}

/// What training minimises and reports, for a model `M` and batches `B`.
pub trait Objective<M: ?Sized, B> {
    /// Names of the metrics `forward` returns ("accuracy").
    fn metrics(&self) -> Vec<&'static str>;
    /// The batch's loss and summed metrics, lazily.
    fn forward(&self, model: &M, batch: &B) -> Result<StepOutput>;
}

#[derive(Clone, Debug)]
/// Everything a run of [`fit`] is told.
pub struct TrainConfig {
    /// The model's name (checked on resume).
    pub model: String,
    /// Epochs in all (resumed ones included).
    pub epochs: usize,
    /// Examples per batch.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f32,
    /// "adam", "adamw", "sgd" (momentum 0.9, Nesterov) or "gd" (plain).
    pub optimizer: String,
    /// `constant`, `step`, `cosine` or `one-cycle`.
    pub schedule: String,
    /// Weight decay: decoupled for AdamW, L2 for the others.
    pub weight_decay: f32,
    /// For classification (`classify::train`).
    pub label_smoothing: f32,
    /// For image data (`classify::train`).
    pub augment: Augment,
    /// Seed of the data order, augmentation and dropout.
    pub seed: u64,
    /// Folder for checkpoint.safetensors, metrics.csv and metrics.png.
    pub out: PathBuf,
    /// Continue from this checkpoint.
    pub resume: Option<PathBuf>,
    /// Examples per evaluation batch.
    pub eval_batch: usize,
    /// Written into every checkpoint besides the loop's own entries (what
    /// it takes to rebuild the model: a text model's tokenizer, say).
    pub metadata: Vec<(String, String)>,
}

impl TrainConfig {
    /// The seed CNN as the founding document trains it: Adam 1e-3, batch 32,
    /// 10 epochs, no augmentation.
    pub fn seed_cnn(out: PathBuf) -> TrainConfig {
        TrainConfig {
            model: "seed-cnn".into(),
            epochs: 10,
            batch_size: 32,
            lr: 1e-3,
            optimizer: "adam".into(),
            schedule: "constant".into(),
            weight_decay: 0.0,
            label_smoothing: 0.0,
            augment: Augment::default(),
            seed: 0,
            out,
            resume: None,
            eval_batch: 500,
            metadata: vec![],
        }
    }
}

/// Progress of one step, for progress bars.
pub struct StepInfo {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Batches done this epoch.
    pub batch: usize,
    /// Batches in the epoch.
    pub batches: usize,
    /// Mean loss of the epoch so far.
    pub loss: f32,
    /// Each metric per example over the epoch so far.
    pub metrics: Vec<(&'static str, f32)>,
    /// Training examples per second this epoch.
    pub examples_per_sec: f32,
}

impl StepInfo {
    /// A metric by name (NaN when absent).
    pub fn metric(&self, name: &str) -> f32 {
        self.metrics
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(f32::NAN, |(_, v)| *v)
    }
}

/// Hooks the caller provides (progress display, plots, interruption).
pub trait Observer {
    /// Before each epoch: its number, the epoch count, its batches and how many are done (on resume).
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _batches: usize, _done: usize) {}
    /// After every step.
    fn step(&mut self, _info: &StepInfo) {}
    /// After each epoch, once its checkpoint and metrics.csv are written.
    fn epoch_end(&mut self, _history: &[EpochMetrics]) -> Result<()> {
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
pub struct Quiet;
impl Observer for Quiet {}

#[derive(Clone, Debug)]
/// What a run did.
pub struct TrainSummary {
    /// Each epoch's figures (resumed ones included).
    pub history: Vec<EpochMetrics>,
    /// Whether it stopped before the last epoch (interrupted or diverged).
    pub stopped_early: bool,
    /// The latest checkpoint.
    pub checkpoint: PathBuf,
    /// Training seconds of this run.
    pub seconds: f32,
    /// Training examples per second over the run's epochs.
    pub examples_per_sec: f32,
}

/// The optimizer `cfg` names, over `model`'s parameters.
pub fn make_optimizer<M: Module + ?Sized>(
    cfg: &TrainConfig,
    model: &M,
) -> Result<Box<dyn Optimizer>> {
    let params = model.parameters().into_iter().map(|(_, p)| p).collect();
    Ok(match cfg.optimizer.as_str() {
        "adam" => Box::new(Adam::new(params, cfg.lr)),
        "adamw" => Box::new(Adam::new(params, cfg.lr).weight_decay(cfg.weight_decay)),
        "sgd" => Box::new(
            Sgd::new(params, cfg.lr)
                .momentum(0.9, true)
                .weight_decay(cfg.weight_decay),
        ),
        "gd" => Box::new(Sgd::new(params, cfg.lr).weight_decay(cfg.weight_decay)),
        other => {
            return Err(Error::param(
                "train",
                format!("unknown optimizer {other:?}; use adam, adamw, sgd or gd"),
            ))
        }
    })
}

/// The objective's mean loss and metrics (per example) over `data`,
/// without gradients, in evaluation mode: `[("loss", ..), (metric, ..)..]`.
pub fn evaluate_objective<M, D, O>(
    model: &mut M,
    data: &D,
    objective: &O,
    batch_size: usize,
) -> Result<Vec<(String, f32)>>
where
    M: Module + ?Sized,
    D: DataSource,
    O: Objective<M, D::Batch>,
{
    let names = objective.metrics();
    let mut sums = vec![0.0f64; 1 + names.len()];
    let mut seen = 0usize;
    model.set_training(false);
    let plan = EpochPlan {
        epoch: 0,
        start: 0,
        batch_size: batch_size.max(1),
        shuffle: false,
        seed: 0,
    };
    let result = crate::no_grad(|| -> Result<()> {
        for batch in data.batches(plan) {
            let batch = batch?;
            let n = data.batch_len(&batch);
            let out = objective.forward(model, &batch)?;
            let mut all = vec![out.loss.clone()];
            all.extend(out.metrics.iter().cloned());
            // One read-back for the loss and every metric.
            let values = Tensor::items(&all)?;
            sums[0] += values[0] as f64 * n as f64;
            for (s, m) in sums[1..].iter_mut().zip(&values[1..]) {
                *s += *m as f64;
            }
            seen += n;
        }
        Ok(())
    });
    model.set_training(true);
    result?;
    let n = seen.max(1) as f64;
    Ok(std::iter::once("loss")
        .chain(names)
        .zip(sums)
        .map(|(name, s)| (name.to_string(), (s / n) as f32))
        .collect())
}

/// Where training resumes: epoch in progress, next batch, and the partial
/// epoch's running sums.
#[derive(Default)]
struct Position {
    epoch: usize,
    batch: usize,
    loss_sum: f64,
    metric_sums: Vec<f64>,
    seen: usize,
    seconds: f64,
}

fn meta_get<T: std::str::FromStr>(
    meta: &HashMap<String, String>,
    key: &str,
    path: &Path,
) -> Result<T> {
    meta.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| Error::Io {
        path: path.display().to_string(),
        msg: format!("checkpoint metadata lacks a valid {key:?}; it was not written by `shadergrad train`"),
    })
}

/// Where [`fit`] keeps its checkpoint in `out`.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.join("checkpoint.safetensors")
}

fn write_metrics(out: &Path, history: &[EpochMetrics], unit: &str) -> Result<()> {
    let path = out.join("metrics.csv");
    let tmp = out.join("metrics.csv.tmp");
    std::fs::write(&tmp, metrics_csv(history, unit))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })
}

/// Train `model` on `train` for `cfg.epochs`, minimising `objective`, and
/// evaluate it on `eval` after each epoch.
///
/// After every epoch the checkpoint (`cfg.out/checkpoint.safetensors`,
/// written atomically), `metrics.csv` and the observer's `epoch_end` run;
/// `cfg.resume` continues a run exactly where its checkpoint left it.
///
/// ```
/// use std::sync::Arc;
/// use shadergrad::data::{Augment, ImageDataset};
/// use shadergrad::train::{fit, Classification, ImageSource, Quiet, TrainConfig};
///
/// # fn main() -> shadergrad::Result<()> {
/// // 64 tiny 18x18 images: class 1 is bright, class 0 dark.
/// let side = 18 * 18 * 3;
/// let labels: Vec<u8> = (0..64).map(|i| (i % 2) as u8).collect();
/// let images = labels.iter().flat_map(|&l| vec![if l == 1 { 220 } else { 30 }; side]).collect();
/// let data = Arc::new(ImageDataset { images, labels, channels: 3, height: 18, width: 18 });
///
/// let out = std::env::temp_dir().join(format!("sg-doc-fit-{}", std::process::id()));
/// let mut cfg = TrainConfig::seed_cnn(out.clone());
/// cfg.epochs = 3;
/// cfg.batch_size = 16;
/// cfg.lr = 1e-2;
/// shadergrad::manual_seed(0);
/// let mut model = shadergrad::models::build_for("seed-cnn", (18, 18), 2)?;
/// let source = ImageSource::new(data.clone(), Augment::default());
/// let objective = Classification { label_smoothing: 0.0 };
/// let summary = fit(&cfg, &mut model, &source, Some(&source), &objective, &mut Quiet)?;
/// assert_eq!(summary.history.len(), 3);
/// assert!(summary.history[2].test_accuracy() > 0.9);
/// assert!(out.join("checkpoint.safetensors").exists());
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
pub fn fit<M, D, O>(
    cfg: &TrainConfig,
    model: &mut M,
    train: &D,
    eval: Option<&D>,
    objective: &O,
    observer: &mut dyn Observer,
) -> Result<TrainSummary>
where
    M: Module + ?Sized,
    D: DataSource,
    O: Objective<M, D::Batch>,
{
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(Error::param(
            "train",
            "batch size and epochs must be at least 1",
        ));
    }
    if train.is_empty() {
        return Err(Error::param("train", "the training set is empty"));
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::Io {
        path: cfg.out.display().to_string(),
        msg: e.to_string(),
    })?;
    let names = objective.metrics();
    let mut opt = make_optimizer(cfg, model)?;
    let batches = train.len().div_ceil(cfg.batch_size);
    let total_steps = batches * cfg.epochs;
    let schedule = LrSchedule::parse(&cfg.schedule, batches)?;
    let mut history: Vec<EpochMetrics> = Vec::new();
    let fresh = |epoch: usize| Position {
        epoch,
        metric_sums: vec![0.0; names.len()],
        ..Position::default()
    };
    let mut pos = fresh(0);

    if let Some(path) = &cfg.resume {
        let ck = checkpoint::load(path)?;
        if let Some(m) = ck.metadata.get("model").filter(|m| **m != cfg.model) {
            return Err(Error::Io {
                path: path.display().to_string(),
                msg: format!("is a checkpoint of model {m:?}, not {:?}", cfg.model),
            });
        }
        ck.restore(model, path)?;
        opt.load_state_tensors(&|name| ck.tensor(name).and_then(|t| t.ok()))?;
        // Format v1 (before generic objectives) kept the correct count alone.
        let sums: String = match ck.metadata.get("partial_correct") {
            Some(correct) if !ck.metadata.contains_key("partial_metrics") => correct.clone(),
            _ => meta_get(&ck.metadata, "partial_metrics", path)?,
        };
        let metric_sums: Vec<f64> = sums
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap_or(f64::NAN))
            .collect();
        if metric_sums.len() != names.len() || metric_sums.iter().any(|v| v.is_nan()) {
            return Err(Error::Io {
                path: path.display().to_string(),
                msg: format!("its partial metrics {sums:?} do not fit this objective's {names:?}"),
            });
        }
        pos = Position {
            epoch: meta_get(&ck.metadata, "epoch", path)?,
            batch: meta_get(&ck.metadata, "batch", path)?,
            loss_sum: meta_get(&ck.metadata, "partial_loss_sum", path)?,
            metric_sums,
            seen: meta_get(&ck.metadata, "partial_seen", path)?,
            seconds: meta_get(&ck.metadata, "partial_seconds", path)?,
        };
        let batch_size: usize = meta_get(&ck.metadata, "batch_size", path)?;
        if batch_size != cfg.batch_size {
            return Err(Error::Io {
                path: path.display().to_string(),
                msg: format!(
                    "was trained with batch size {batch_size}; resume with --batch {batch_size}"
                ),
            });
        }
        history = ck
            .metadata
            .get("metrics_csv")
            .map(|csv| parse_metrics_csv(csv))
            .unwrap_or_default();
        observer.message(&format!(
            "resumed from {} at epoch {}, batch {}",
            path.display(),
            pos.epoch + 1,
            pos.batch
        ));
    }

    let unit = train.unit();
    let ck_path = checkpoint_path(&cfg.out);
    let save = |model: &M, opt: &dyn Optimizer, pos: &Position, history: &[EpochMetrics]| {
        let mut tensors: Vec<(String, Tensor)> = named_tensors(model)
            .into_iter()
            .map(|(n, p)| (n, p.get()))
            .collect();
        tensors.extend(opt.state_tensors());
        let sums: Vec<String> = pos.metric_sums.iter().map(|v| v.to_string()).collect();
        let meta: HashMap<String, String> = [
            ("format", "shadergrad-train-v2".to_string()),
            ("model", cfg.model.clone()),
            ("epoch", pos.epoch.to_string()),
            ("batch", pos.batch.to_string()),
            ("batch_size", cfg.batch_size.to_string()),
            ("epochs", cfg.epochs.to_string()),
            ("seed", cfg.seed.to_string()),
            ("optimizer", cfg.optimizer.clone()),
            ("lr", cfg.lr.to_string()),
            ("partial_loss_sum", pos.loss_sum.to_string()),
            ("partial_metrics", sums.join(",")),
            ("partial_seen", pos.seen.to_string()),
            ("partial_seconds", pos.seconds.to_string()),
            ("metrics_csv", metrics_csv(history, unit)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(cfg.metadata.iter().cloned())
        .collect();
        checkpoint::save(&ck_path, &tensors, meta)
    };
    let per_example = |pos: &Position| -> Vec<(&'static str, f32)> {
        let n = pos.seen.max(1) as f64;
        names
            .iter()
            .zip(&pos.metric_sums)
            .map(|(name, s)| (*name, (s / n) as f32))
            .collect()
    };

    let run_start = Instant::now();
    let mut examples_trained = 0usize;
    let mut stopped_early = false;
    model.set_training(true);
    while pos.epoch < cfg.epochs {
        let epoch_start = Instant::now();
        observer.epoch_start(pos.epoch, cfg.epochs, batches, pos.batch);
        let plan = EpochPlan {
            epoch: pos.epoch as u64,
            start: pos.batch,
            batch_size: cfg.batch_size,
            shuffle: true,
            seed: cfg.seed,
        };
        for batch in train.batches(plan) {
            let batch = batch?;
            let step = pos.epoch * batches + pos.batch;
            // Per-step seeding: dropout masks do not depend on where a run resumed.
            crate::manual_seed(cfg.seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            opt.set_learning_rate(schedule.lr_at(cfg.lr, step, total_steps));
            let out = objective.forward(model, &batch)?;
            // The loss and the metrics come back in one read-back.
            let values = opt
                .step_values(&out.loss, &out.metrics)
                .map_err(|e| match e {
                    // Say where, and what is kept: the last checkpoint is the
                    // end of an epoch that trained on finite losses.
                    Error::NonFinite(why) => Error::NonFinite(format!(
                        "step {} (epoch {}, batch {} of {batches}): {why}. Training stopped; {}",
                        step + 1,
                        pos.epoch + 1,
                        pos.batch + 1,
                        if ck_path.is_file() {
                            format!(
                            "the last good checkpoint, {}, is kept (resume from it with --resume \
                             and a lower --lr)",
                            ck_path.display()
                        )
                        } else {
                            "no epoch had finished, so there is no checkpoint".to_string()
                        }
                    )),
                    other => other,
                })?;
            let n = train.batch_len(&batch);
            let loss_value = values[0];
            pos.loss_sum += loss_value as f64 * n as f64;
            for (s, m) in pos.metric_sums.iter_mut().zip(&values[1..]) {
                *s += *m as f64;
            }
            pos.seen += n;
            pos.batch += 1;
            examples_trained += n;
            let elapsed = pos.seconds + epoch_start.elapsed().as_secs_f64();
            observer.step(&StepInfo {
                epoch: pos.epoch,
                batch: pos.batch,
                batches,
                loss: (pos.loss_sum / pos.seen as f64) as f32,
                metrics: per_example(&pos),
                examples_per_sec: (pos.seen as f64 / elapsed.max(1e-9)) as f32,
            });
            if observer.should_stop() && pos.batch < batches {
                pos.seconds += epoch_start.elapsed().as_secs_f64();
                save(model, opt.as_ref(), &pos, &history)?;
                observer.message(&format!(
                    "stopped; checkpoint saved to {} (resume with --resume)",
                    ck_path.display()
                ));
                stopped_early = true;
                break;
            }
        }
        if stopped_early {
            break;
        }
        let train_seconds = pos.seconds + epoch_start.elapsed().as_secs_f64();
        let mut train_figures = vec![(
            "loss".to_string(),
            (pos.loss_sum / pos.seen.max(1) as f64) as f32,
        )];
        train_figures.extend(
            per_example(&pos)
                .into_iter()
                .map(|(n, v)| (n.to_string(), v)),
        );
        let test = match eval {
            Some(data) => evaluate_objective(model, data, objective, cfg.eval_batch)?,
            None => vec![],
        };
        history.push(EpochMetrics {
            epoch: pos.epoch + 1,
            train: train_figures,
            test,
            examples_per_sec: (pos.seen as f64 / train_seconds.max(1e-9)) as f32,
            seconds: train_seconds as f32,
            lr: opt.learning_rate(),
        });
        pos = fresh(pos.epoch + 1);
        save(model, opt.as_ref(), &pos, &history)?;
        write_metrics(&cfg.out, &history, unit)?;
        observer.epoch_end(&history)?;
        if observer.should_stop() && pos.epoch < cfg.epochs {
            observer.message(&format!(
                "stopped; checkpoint saved to {} (resume with --resume)",
                ck_path.display()
            ));
            stopped_early = true;
            break;
        }
    }
    let seconds = run_start.elapsed().as_secs_f32();
    let train_secs: f32 = history.iter().map(|m| m.seconds).sum();
    let trained: f32 = history.iter().map(|m| m.examples_per_sec * m.seconds).sum();
    Ok(TrainSummary {
        examples_per_sec: if train_secs > 0.0 {
            trained / train_secs
        } else {
            examples_trained as f32 / seconds.max(1e-9)
        },
        history,
        stopped_early,
        checkpoint: ck_path,
        seconds,
    })
}
