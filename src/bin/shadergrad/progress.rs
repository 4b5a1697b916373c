//! Progress bars for training, and Ctrl-C handling: the first Ctrl-C asks
//! the loop to save a checkpoint and stop; a second one exits at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shadergrad::plot::EpochMetrics;
use shadergrad::train::{Observer, StepInfo};
use shadergrad::{Error, Result};

pub struct Progress {
    bar: ProgressBar,
    interrupts: Arc<AtomicUsize>,
    visible: bool,
}

impl Progress {
    pub fn new(visible: bool) -> Result<Progress> {
        let interrupts = Arc::new(AtomicUsize::new(0));
        let flag = interrupts.clone();
        ctrlc::set_handler(move || {
            if flag.fetch_add(1, Ordering::SeqCst) >= 1 {
                eprintln!("\ninterrupted again: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupt: saving a checkpoint after this step (Ctrl-C again to exit now)"
            );
        })
        .map_err(|e| Error::param("train", format!("cannot install the Ctrl-C handler: {e}")))?;
        let bar = ProgressBar::hidden();
        Ok(Progress {
            bar,
            interrupts,
            visible,
        })
    }
}

impl Observer for Progress {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize, done: usize) {
        self.bar = if self.visible {
            ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let style =
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        self.bar.set_style(style);
        self.bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        self.bar.set_position(done as u64);
    }

    fn step(&mut self, s: &StepInfo) {
        self.bar.set_position(s.batch as u64);
        if s.batch.is_multiple_of(10) || s.batch == s.batches {
            self.bar.set_message(format!(
                "loss {:.4} acc {:.2}% {:.0} img/s",
                s.loss,
                s.accuracy * 100.0,
                s.images_per_sec
            ));
        }
    }

    fn epoch_end(&mut self, m: &EpochMetrics) {
        self.bar.finish_and_clear();
        eprintln!(
            "epoch {:>2}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | {:.0} img/s, {:.1}s",
            m.epoch,
            m.train_loss,
            m.train_accuracy * 100.0,
            m.test_loss,
            m.test_accuracy * 100.0,
            m.images_per_sec,
            m.seconds
        );
    }

    fn message(&mut self, msg: &str) {
        self.bar.suspend(|| eprintln!("{msg}"));
    }

    fn should_stop(&self) -> bool {
        self.interrupts.load(Ordering::SeqCst) > 0
    }
}
