//! The image-classification training loop behind `shadergrad train`:
//! epochs of seeded batches, evaluation after each epoch, metrics CSV and
//! plot, checkpoints every epoch (and on request mid-epoch) that a later run
//! resumes from bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::data::batches::{Augment, BatchOptions, Batcher};
use crate::data::ImageDataset;
use crate::io::checkpoint;
use crate::nn::{named_tensors, Module};
use crate::optim::{Adam, LrSchedule, Optimizer, Sgd};
use crate::plot::{metrics_csv, plot_metrics, EpochMetrics};
use crate::{Error, Result, Tensor};

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub model: String,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    /// "adam", "adamw", "sgd" (momentum 0.9, Nesterov) or "gd" (plain).
    pub optimizer: String,
    pub schedule: String,
    pub weight_decay: f32,
    pub label_smoothing: f32,
    pub augment: Augment,
    pub seed: u64,
    pub out: PathBuf,
    pub resume: Option<PathBuf>,
    pub eval_batch: usize,
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
        }
    }
}

/// Progress of one step, for progress bars.
pub struct StepInfo {
    pub epoch: usize,
    pub batch: usize,
    pub batches: usize,
    pub loss: f32,
    pub accuracy: f32,
    pub images_per_sec: f32,
}

/// Hooks the caller provides (progress display, interruption).
pub trait Observer {
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _batches: usize, _done: usize) {}
    fn step(&mut self, _info: &StepInfo) {}
    fn epoch_end(&mut self, _metrics: &EpochMetrics) {}
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
pub struct TrainSummary {
    pub history: Vec<EpochMetrics>,
    pub stopped_early: bool,
    pub checkpoint: PathBuf,
    pub seconds: f32,
    pub images_per_sec: f32,
}

/// Loss, accuracy and confusion matrix (`[true][predicted]`) over a data set.
pub struct Evaluation {
    pub loss: f32,
    pub accuracy: f32,
    pub confusion: Vec<Vec<usize>>,
}

pub fn make_optimizer(cfg: &TrainConfig, model: &dyn Module) -> Result<Box<dyn Optimizer>> {
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

/// Evaluate in batches without gradients, in evaluation mode.
pub fn evaluate(
    model: &mut dyn Module,
    data: &Arc<ImageDataset>,
    batch: usize,
) -> Result<Evaluation> {
    model.set_training(false);
    let classes = data
        .labels
        .iter()
        .copied()
        .max()
        .map_or(0, |m| m as usize + 1)
        .max(10);
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut loss_sum = 0.0f64;
    let opts = BatchOptions {
        batch_size: batch.max(1),
        shuffle: false,
        seed: 0,
        augment: Augment::default(),
        normalize: None,
    };
    let result = crate::no_grad(|| -> Result<()> {
        for b in Batcher::new(data.clone(), opts, 0, 0) {
            let (x, y) = b.tensors()?;
            let logits = model.forward(&x)?;
            let loss = logits.cross_entropy(&y, 0.0)?;
            let pred = logits.argmax(1, false)?;
            Tensor::realize_all(&[loss.clone(), pred.clone()])?;
            loss_sum += loss.item()? as f64 * b.labels.len() as f64;
            for (&t, p) in b.labels.iter().zip(pred.to_vec_i32()?) {
                confusion[t as usize][p as usize] += 1;
            }
        }
        Ok(())
    });
    model.set_training(true);
    result?;
    let n = data.len().max(1);
    let correct: usize = (0..classes).map(|i| confusion[i][i]).sum();
    Ok(Evaluation {
        loss: (loss_sum / n as f64) as f32,
        accuracy: correct as f32 / n as f32,
        confusion,
    })
}

/// Where training resumes: epoch in progress, next batch, and the partial
/// epoch's running sums.
#[derive(Default)]
struct Position {
    epoch: usize,
    batch: usize,
    loss_sum: f64,
    correct: usize,
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

pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.join("checkpoint.safetensors")
}

fn write_metrics(out: &Path, history: &[EpochMetrics], model: &str) -> Result<()> {
    let path = out.join("metrics.csv");
    let tmp = out.join("metrics.csv.tmp");
    std::fs::write(&tmp, metrics_csv(history))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
    plot_metrics(
        history,
        &format!("{model} on CIFAR-10"),
        &out.join("metrics.png"),
    )
}

/// Train `model` on `train`, evaluating on `test` after each epoch.
pub fn train(
    cfg: &TrainConfig,
    model: &mut dyn Module,
    train: &Arc<ImageDataset>,
    test: &Arc<ImageDataset>,
    observer: &mut dyn Observer,
) -> Result<TrainSummary> {
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
    let mut opt = make_optimizer(cfg, model)?;
    let batches = train.len().div_ceil(cfg.batch_size);
    let total_steps = batches * cfg.epochs;
    let schedule = LrSchedule::parse(&cfg.schedule, batches)?;
    let mut history: Vec<EpochMetrics> = Vec::new();
    let mut pos = Position::default();

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
        pos = Position {
            epoch: meta_get(&ck.metadata, "epoch", path)?,
            batch: meta_get(&ck.metadata, "batch", path)?,
            loss_sum: meta_get(&ck.metadata, "partial_loss_sum", path)?,
            correct: meta_get(&ck.metadata, "partial_correct", path)?,
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
            .map(|csv| {
                csv.lines()
                    .skip(1)
                    .filter_map(EpochMetrics::parse_csv_row)
                    .collect()
            })
            .unwrap_or_default();
        observer.message(&format!(
            "resumed from {} at epoch {}, batch {}",
            path.display(),
            pos.epoch + 1,
            pos.batch
        ));
    }

    let ck_path = checkpoint_path(&cfg.out);
    let save = |model: &dyn Module,
                opt: &dyn Optimizer,
                pos: &Position,
                history: &[EpochMetrics]|
     -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = named_tensors(model)
            .into_iter()
            .map(|(n, p)| (n, p.get()))
            .collect();
        tensors.extend(opt.state_tensors());
        let meta: HashMap<String, String> = [
            ("format", "shadergrad-train-v1".to_string()),
            ("model", cfg.model.clone()),
            ("epoch", pos.epoch.to_string()),
            ("batch", pos.batch.to_string()),
            ("batch_size", cfg.batch_size.to_string()),
            ("epochs", cfg.epochs.to_string()),
            ("seed", cfg.seed.to_string()),
            ("optimizer", cfg.optimizer.clone()),
            ("lr", cfg.lr.to_string()),
            ("partial_loss_sum", pos.loss_sum.to_string()),
            ("partial_correct", pos.correct.to_string()),
            ("partial_seen", pos.seen.to_string()),
            ("partial_seconds", pos.seconds.to_string()),
            ("metrics_csv", metrics_csv(history)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        checkpoint::save(&ck_path, &tensors, meta)
    };

    let run_start = Instant::now();
    let mut images_trained = 0usize;
    let mut stopped_early = false;
    model.set_training(true);
    while pos.epoch < cfg.epochs {
        let epoch_start = Instant::now();
        observer.epoch_start(pos.epoch, cfg.epochs, batches, pos.batch);
        let opts = BatchOptions {
            batch_size: cfg.batch_size,
            shuffle: true,
            seed: cfg.seed,
            augment: cfg.augment,
            normalize: None,
        };
        for b in Batcher::new(train.clone(), opts, pos.epoch as u64, pos.batch) {
            let step = pos.epoch * batches + pos.batch;
            // Per-step seeding: dropout masks do not depend on where a run resumed.
            crate::manual_seed(cfg.seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            opt.set_learning_rate(schedule.lr_at(cfg.lr, step, total_steps));
            let (x, y) = b.tensors()?;
            let logits = model.forward(&x)?;
            let loss = logits.cross_entropy(&y, cfg.label_smoothing)?;
            let correct = logits.detach().argmax(1, false)?.eq(&y)?.sum_all();
            let loss_value = opt.step_with(&loss, std::slice::from_ref(&correct))?;
            let n = b.labels.len();
            pos.loss_sum += loss_value as f64 * n as f64;
            pos.correct += correct.item()? as usize;
            pos.seen += n;
            pos.batch += 1;
            images_trained += n;
            let elapsed = pos.seconds + epoch_start.elapsed().as_secs_f64();
            observer.step(&StepInfo {
                epoch: pos.epoch,
                batch: pos.batch,
                batches,
                loss: (pos.loss_sum / pos.seen as f64) as f32,
                accuracy: pos.correct as f32 / pos.seen as f32,
                images_per_sec: (pos.seen as f64 / elapsed.max(1e-9)) as f32,
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
        let eval = evaluate(model, test, cfg.eval_batch)?;
        let metrics = EpochMetrics {
            epoch: pos.epoch + 1,
            train_loss: (pos.loss_sum / pos.seen.max(1) as f64) as f32,
            train_accuracy: pos.correct as f32 / pos.seen.max(1) as f32,
            test_loss: eval.loss,
            test_accuracy: eval.accuracy,
            images_per_sec: (pos.seen as f64 / train_seconds.max(1e-9)) as f32,
            seconds: train_seconds as f32,
            lr: opt.learning_rate(),
        };
        history.push(metrics.clone());
        pos = Position {
            epoch: pos.epoch + 1,
            ..Position::default()
        };
        save(model, opt.as_ref(), &pos, &history)?;
        write_metrics(&cfg.out, &history, &cfg.model)?;
        observer.epoch_end(&metrics);
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
    let trained: f32 = history.iter().map(|m| m.images_per_sec * m.seconds).sum();
    Ok(TrainSummary {
        images_per_sec: if train_secs > 0.0 {
            trained / train_secs
        } else {
            images_trained as f32 / seconds.max(1e-9)
        },
        history,
        stopped_early,
        checkpoint: ck_path,
        seconds,
    })
}
