//! Progress bars for training, the metrics plot after each epoch, and
//! Ctrl-C handling: the first Ctrl-C asks the loop to save a checkpoint
//! and stop; a second one exits at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shadergrad::train::{EpochMetrics, Observer, StepInfo};
use shadergrad::{Error, Result};

pub struct Progress {
    bar: ProgressBar,
    interrupts: Arc<AtomicUsize>,
    visible: bool,
    /// metrics.png and its title.
    plot: (PathBuf, String),
}

/// A figure as the bar shows it: fractions (accuracy) as percentages.
fn figure(name: &str, v: f32) -> String {
    if name.contains("accuracy") {
        format!("{:.2}%", v * 100.0)
    } else {
        format!("{v:.4}")
    }
}

fn figures(list: &[(String, f32)]) -> String {
    list.iter()
        .map(|(n, v)| format!("{n} {}", figure(n, *v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Ctrl-C count, from a handler installed once per process: the first
/// asks the run to save a checkpoint and stop; a second exits at once.
pub fn interrupts() -> Result<Arc<AtomicUsize>> {
    static COUNT: std::sync::OnceLock<std::result::Result<Arc<AtomicUsize>, String>> =
        std::sync::OnceLock::new();
    COUNT
        .get_or_init(|| {
            let count = Arc::new(AtomicUsize::new(0));
            let flag = count.clone();
            ctrlc::set_handler(move || {
                if flag.fetch_add(1, Ordering::SeqCst) >= 1 {
                    eprintln!("\ninterrupted again: exiting without a checkpoint");
                    std::process::exit(130);
                }
                eprintln!(
                    "\ninterrupt: saving a checkpoint after this step (Ctrl-C again to exit now)"
                );
            })
            .map(|_| count)
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| Error::param("train", format!("cannot install the Ctrl-C handler: {e}")))
}

/// A progress bar drawn to stderr, or a hidden one.
pub fn bar(visible: bool, len: u64, template: &str) -> ProgressBar {
    let bar = if visible {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

impl Progress {
    pub fn new(visible: bool, plot: (PathBuf, String)) -> Result<Progress> {
        Ok(Progress {
            bar: ProgressBar::hidden(),
            interrupts: interrupts()?,
            visible,
            plot,
        })
    }
}

impl Observer for Progress {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize, done: usize) {
        self.bar = bar(
            self.visible,
            batches as u64,
            "epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}",
        );
        self.bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        self.bar.set_position(done as u64);
    }

    fn step(&mut self, s: &StepInfo) {
        self.bar.set_position(s.batch as u64);
        if s.batch.is_multiple_of(10) || s.batch == s.batches {
            let metrics: Vec<String> = s
                .metrics
                .iter()
                .map(|(n, v)| format!("{} {}", n.replace("accuracy", "acc"), figure(n, *v)))
                .collect();
            self.bar.set_message(format!(
                "loss {:.4} {} {:.0}/s",
                s.loss,
                metrics.join(" "),
                s.examples_per_sec
            ));
        }
    }

    fn epoch_end(&mut self, history: &[EpochMetrics]) -> Result<()> {
        self.bar.finish_and_clear();
        if let Some(m) = history.last() {
            let test = if m.test.is_empty() {
                String::new()
            } else {
                format!(" | test {}", figures(&m.test))
            };
            eprintln!(
                "epoch {:>2}: train {}{test} | {:.0}/s, {:.1}s",
                m.epoch,
                figures(&m.train),
                m.examples_per_sec,
                m.seconds
            );
        }
        shadergrad::plot::plot_metrics(history, &self.plot.1, &self.plot.0)
    }

    fn message(&mut self, msg: &str) {
        self.bar.suspend(|| eprintln!("{msg}"));
    }

    fn should_stop(&self) -> bool {
        self.interrupts.load(Ordering::SeqCst) > 0
    }
}
