//! Sentence classification on the generic loop: encoded sentences as a
//! data source (length-bucketed batches with padding masks) and
//! cross-entropy with accuracy as the objective.

use super::{
    fit, DataSource, EpochPlan, Objective, Observer, StepOutput, TrainConfig, TrainSummary,
};
use crate::data::text::{bucketed_batches, pad_batch, TextBatch};
use crate::models::text::TextModel;
use crate::Result;

/// Token ids of labelled sentences.
pub struct TextSource {
    /// Each sentence's token ids.
    pub encoded: Vec<Vec<i32>>,
    /// One class label per sentence.
    pub labels: Vec<i32>,
    /// Batches sorted by length within windows of this many batches.
    pub bucket_window: usize,
}

impl TextSource {
    /// A source over encoded sentences and their labels.
    pub fn new(encoded: Vec<Vec<i32>>, labels: Vec<i32>) -> TextSource {
        TextSource {
            encoded,
            labels,
            bucket_window: 50,
        }
    }

    fn batch_of(&self, indices: &[usize]) -> Result<TextBatch> {
        let refs: Vec<&[i32]> = indices
            .iter()
            .map(|&i| self.encoded[i].as_slice())
            .collect();
        let labels: Vec<i32> = indices.iter().map(|&i| self.labels[i]).collect();
        pad_batch(&refs, &labels)
    }
}

impl DataSource for TextSource {
    type Batch = TextBatch;

    fn len(&self) -> usize {
        self.labels.len()
    }

    fn unit(&self) -> &'static str {
        "sentences"
    }

    fn batches(&self, plan: EpochPlan) -> Box<dyn Iterator<Item = Result<TextBatch>> + '_> {
        let lengths: Vec<usize> = self.encoded.iter().map(Vec::len).collect();
        let order: Vec<Vec<usize>> = if plan.shuffle {
            let seed = plan.seed ^ plan.epoch.wrapping_mul(0x2545_f491_4f6c_dd1d);
            bucketed_batches(&lengths, plan.batch_size, self.bucket_window, seed)
        } else {
            // Evaluation: sorted by length, the least padding; the sums
            // do not depend on the order.
            let mut idx: Vec<usize> = (0..lengths.len()).collect();
            idx.sort_by_key(|&i| lengths[i]);
            idx.chunks(plan.batch_size.max(1))
                .map(<[usize]>::to_vec)
                .collect()
        };
        Box::new(
            order
                .into_iter()
                .skip(plan.start)
                .map(move |indices| self.batch_of(&indices)),
        )
    }

    fn batch_len(&self, batch: &TextBatch) -> usize {
        batch.labels.shape()[0]
    }
}

/// Cross-entropy over a text model's logits, and the number of correct
/// predictions as "accuracy".
pub struct TextClassification {
    /// Weight of the uniform distribution mixed into the targets (0: none).
    pub label_smoothing: f32,
}

impl<M: TextModel + ?Sized> Objective<M, TextBatch> for TextClassification {
    fn metrics(&self) -> Vec<&'static str> {
        vec!["accuracy"]
    }

    fn forward(&self, model: &M, batch: &TextBatch) -> Result<StepOutput> {
        let logits = model.logits(&batch.ids, &batch.mask)?;
        let loss = logits.cross_entropy(&batch.labels, self.label_smoothing)?;
        let correct = logits
            .detach()
            .argmax(1, false)?
            .eq(&batch.labels)?
            .sum_all();
        Ok(StepOutput {
            loss,
            metrics: vec![correct],
        })
    }
}

/// Train a sentence classifier on `train`, evaluating on `dev` after each epoch.
pub fn train(
    cfg: &TrainConfig,
    model: &mut dyn TextModel,
    train: &TextSource,
    dev: &TextSource,
    observer: &mut dyn Observer,
) -> Result<TrainSummary> {
    let objective = TextClassification {
        label_smoothing: cfg.label_smoothing,
    };
    fit(cfg, model, train, Some(dev), &objective, observer)
}
