//! Learning-rate schedules and regularisation penalties.

use crate::optim::Parameter;
use crate::{Error, Result, Tensor};

/// How the learning rate moves over training. `lr_at` takes the 0-based step
/// and the total number of steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step {
        /// Steps between reductions.
        every: usize,
        /// Factor of each reduction.
        gamma: f32,
    },
    /// Cosine from the base rate down to `min_lr` over all steps.
    Cosine {
        /// The rate at the last step.
        min_lr: f32,
    },
    /// Smith's one-cycle: warm up linearly from base/25 to base over
    /// `warmup` of the steps, then cosine down to base/1e4.
    OneCycle {
        /// Share of the steps spent warming up (0 to 1).
        warmup: f32,
    },
}

impl LrSchedule {
    /// `constant`, `step` (x0.1 every 30% of the run), `cosine` or `one-cycle`.
    pub fn parse(s: &str, steps_per_epoch: usize) -> Result<LrSchedule> {
        Ok(match s {
            "constant" => LrSchedule::Constant,
            "step" => LrSchedule::Step {
                every: steps_per_epoch.max(1) * 3,
                gamma: 0.5,
            },
            "cosine" => LrSchedule::Cosine { min_lr: 0.0 },
            "one-cycle" | "onecycle" => LrSchedule::OneCycle { warmup: 0.3 },
            _ => {
                return Err(Error::param(
                    "schedule",
                    format!("unknown schedule {s:?}; use constant, step, cosine or one-cycle"),
                ))
            }
        })
    }

    /// The rate at 0-based `step` of `total`, from the base rate `base`.
    pub fn lr_at(&self, base: f32, step: usize, total: usize) -> f32 {
        let frac = if total == 0 {
            0.0
        } else {
            (step as f32 / total as f32).min(1.0)
        };
        let cosine = |from: f32, to: f32, t: f32| {
            to + (from - to) * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
        };
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Step { every, gamma } => base * gamma.powi((step / every.max(1)) as i32),
            LrSchedule::Cosine { min_lr } => cosine(base, min_lr, frac),
            LrSchedule::OneCycle { warmup } => {
                let start = base / 25.0;
                if frac < warmup {
                    start + (base - start) * frac / warmup
                } else {
                    cosine(base, base / 1e4, (frac - warmup) / (1.0 - warmup).max(1e-6))
                }
            }
        }
    }
}

/// `lambda * sum(|p|)` over the parameters: add it to the loss for L1.
pub fn l1_penalty(params: &[Parameter], lambda: f32) -> Result<Tensor> {
    let mut total = Tensor::scalar(0.0);
    for p in params {
        total = total.add(&p.get().abs().sum_all())?;
    }
    Ok(total.mul_scalar(lambda))
}

/// `lambda * sum(p^2)` over the parameters: add it to the loss for L2.
pub fn l2_penalty(params: &[Parameter], lambda: f32) -> Result<Tensor> {
    let mut total = Tensor::scalar(0.0);
    for p in params {
        total = total.add(&p.get().square().sum_all())?;
    }
    Ok(total.mul_scalar(lambda))
}
