//! Image classification on the generic loop: in-memory image sets as a
//! data source, cross-entropy with accuracy as the objective, and the
//! confusion matrix of a trained model.

use std::sync::Arc;

use super::{
    fit, DataSource, EpochPlan, Objective, Observer, StepOutput, TrainConfig, TrainSummary,
};
use crate::data::batches::{Augment, Batch, BatchOptions, Batcher};
use crate::data::ImageDataset;
use crate::nn::Module;
use crate::{Result, Tensor};

/// Labelled images in memory, batched on a background thread (scaled to
/// [0, 1], optionally augmented with seeded crops and flips).
pub struct ImageSource {
    /// The images.
    pub data: Arc<ImageDataset>,
    /// Random crops and flips (applied to training batches).
    pub augment: Augment,
}

impl ImageSource {
    /// A source over `data` with `augment`.
    pub fn new(data: Arc<ImageDataset>, augment: Augment) -> ImageSource {
        ImageSource { data, augment }
    }
}

impl DataSource for ImageSource {
    type Batch = Batch;

    fn len(&self) -> usize {
        self.data.len()
    }

    fn unit(&self) -> &'static str {
        "images"
    }

    fn batches(&self, plan: EpochPlan) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        let opts = BatchOptions {
            batch_size: plan.batch_size,
            shuffle: plan.shuffle,
            seed: plan.seed,
            augment: self.augment,
            normalize: None,
        };
        Box::new(Batcher::new(self.data.clone(), opts, plan.epoch, plan.start).map(Ok))
    }

    fn batch_len(&self, batch: &Batch) -> usize {
        batch.labels.len()
    }
}

/// Cross-entropy over logits `[n, classes]` (with label smoothing), and the
/// number of correct predictions as the metric "accuracy".
pub struct Classification {
    /// Weight of the uniform distribution mixed into the targets (0: none).
    pub label_smoothing: f32,
}

impl<M: Module + ?Sized> Objective<M, Batch> for Classification {
    fn metrics(&self) -> Vec<&'static str> {
        vec!["accuracy"]
    }

    fn forward(&self, model: &M, batch: &Batch) -> Result<StepOutput> {
        let (x, y) = batch.tensors()?;
        let logits = model.forward(&x)?;
        let loss = logits.cross_entropy(&y, self.label_smoothing)?;
        let correct = logits.detach().argmax(1, false)?.eq(&y)?.sum_all();
        Ok(StepOutput {
            loss,
            metrics: vec![correct],
        })
    }
}

/// Train an image classifier on `train`, evaluating on `test` after each
/// epoch (`cfg.augment` and `cfg.label_smoothing` apply).
pub fn train(
    cfg: &TrainConfig,
    model: &mut dyn Module,
    train: &Arc<ImageDataset>,
    test: &Arc<ImageDataset>,
    observer: &mut dyn Observer,
) -> Result<TrainSummary> {
    let objective = Classification {
        label_smoothing: cfg.label_smoothing,
    };
    let train = ImageSource::new(train.clone(), cfg.augment);
    let test = ImageSource::new(test.clone(), Augment::default());
    fit(cfg, model, &train, Some(&test), &objective, observer)
}

/// Loss, accuracy and confusion matrix (`[true][predicted]`) over a data set.
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Fraction of examples whose most probable class is the label.
    pub accuracy: f32,
    /// Counts by `[true class][predicted class]`, square, as wide as the
    /// model's outputs (or the data's labels, if more).
    pub confusion: Vec<Vec<usize>>,
    /// The predicted class of each example, in the data's order.
    pub predictions: Vec<usize>,
}

/// Evaluate a classifier in batches without gradients, in evaluation mode.
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
        .map_or(0, |m| m as usize + 1);
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut loss_sum = 0.0f64;
    let mut predictions = Vec::with_capacity(data.len());
    let source = ImageSource::new(data.clone(), Augment::default());
    let plan = EpochPlan {
        epoch: 0,
        start: 0,
        batch_size: batch.max(1),
        shuffle: false,
        seed: 0,
    };
    let result = crate::no_grad(|| -> Result<()> {
        for b in source.batches(plan) {
            let b = b?;
            let (x, y) = b.tensors()?;
            let logits = model.forward(&x)?;
            let loss = logits.cross_entropy(&y, 0.0)?;
            let pred = logits.argmax(1, false)?;
            Tensor::realize_all(&[loss.clone(), pred.clone()])?;
            loss_sum += loss.item()? as f64 * b.labels.len() as f64;
            // A model with more outputs than the data has classes.
            let width = logits.shape()[1].max(classes);
            if confusion.len() < width {
                confusion.iter_mut().for_each(|row| row.resize(width, 0));
                confusion.resize(width, vec![0; width]);
            }
            for (&t, p) in b.labels.iter().zip(pred.to_vec_i32()?) {
                confusion[t as usize][p.max(0) as usize] += 1;
                predictions.push(p.max(0) as usize);
            }
        }
        Ok(())
    });
    model.set_training(true);
    result?;
    let n = data.len().max(1);
    let correct: usize = (0..confusion.len()).map(|i| confusion[i][i]).sum();
    Ok(Evaluation {
        loss: (loss_sum / n as f64) as f32,
        accuracy: correct as f32 / n as f32,
        confusion,
        predictions,
    })
}
