//! Losses (mean over the batch).

use crate::ops::{ensure_f32, ensure_i32};
use crate::{Error, Result, Tensor};

impl Tensor {
    /// Mean squared error.
    pub fn mse_loss(&self, target: &Tensor) -> Result<Tensor> {
        if self.shape() != target.shape() {
            return Err(Error::shape(
                "mse_loss",
                &[self.shape(), target.shape()],
                "prediction and target need the same shape",
            ));
        }
        Ok(self.sub(target)?.square().mean_times(1.0))
    }

    /// `k` times the mean of all elements, as one sum of `x * k / n`: the
    /// scale runs inside the reduction's pass instead of in a pass of its
    /// own after it (exact for a power-of-two count, within rounding
    /// otherwise). No elements: the mean's NaN.
    fn mean_times(&self, k: f32) -> Tensor {
        match self.numel() {
            0 => self.mean_all().mul_scalar(k),
            n => self.mul_scalar(k / n as f32).sum_all(),
        }
    }

    /// Cross-entropy of logits `[n, classes]` against integer labels `[n]`,
    /// with optional label smoothing.
    pub fn cross_entropy(&self, labels: &Tensor, label_smoothing: f32) -> Result<Tensor> {
        ensure_f32("cross_entropy", self)?;
        ensure_i32("cross_entropy", labels)?;
        if self.rank() != 2 || labels.shape() != [self.shape()[0]] {
            return Err(Error::shape(
                "cross_entropy",
                &[self.shape(), labels.shape()],
                "logits must be [batch, classes] and labels [batch]",
            ));
        }
        if !(0.0..1.0).contains(&label_smoothing) {
            return Err(Error::param(
                "cross_entropy",
                format!("label_smoothing {label_smoothing} must lie in [0, 1)"),
            ));
        }
        // -log_softmax(x)[label] as the row's log-sum-exp minus the picked
        // logit: the gather reads the logits themselves, so no [n, classes]
        // log-probabilities are stored, and the gradient is softmax (from
        // the exp-sum the forward pass made) less the one-hot, with no row
        // sum of an upstream gradient to take.
        let max = self.max(&[-1], true)?.detach();
        let lse = self.sub(&max)?.exp().sum(&[-1], true)?.log().add(&max)?;
        let picked = self.gather(1, &labels.unsqueeze(1)?)?;
        let nll = lse.sub(&picked)?.mean_times(1.0);
        if label_smoothing == 0.0 {
            return Ok(nll);
        }
        // The mean over classes of -log_softmax: lse less the mean logit.
        let classes = self.shape()[1] as f32;
        let uniform = lse.mean_times(classes).sub(&self.mean_times(classes))?;
        nll.mul_scalar(1.0 - label_smoothing)
            .add(&uniform.mul_scalar(label_smoothing / classes))
    }

    /// Binary cross-entropy on logits (stable: never forms the sigmoid).
    pub fn bce_with_logits(&self, target: &Tensor) -> Result<Tensor> {
        ensure_f32("bce_with_logits", self)?;
        if self.shape() != target.shape() {
            return Err(Error::shape(
                "bce_with_logits",
                &[self.shape(), target.shape()],
                "logits and targets need the same shape",
            ));
        }
        // softplus(x) - x * t  ==  -[t log s(x) + (1 - t) log(1 - s(x))]
        Ok(self.softplus().sub(&self.mul(target)?)?.mean_times(1.0))
    }
}
