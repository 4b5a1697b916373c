//! Training curves as a PNG: loss (left) and accuracy (right) per epoch.

use std::path::Path;

use plotters::prelude::*;

use crate::{Error, Result};

/// One epoch's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub test_loss: f32,
    pub test_accuracy: f32,
    pub images_per_sec: f32,
    pub seconds: f32,
    pub lr: f32,
}

pub const CSV_HEADER: &str =
    "epoch,train_loss,train_accuracy,test_loss,test_accuracy,images_per_sec,seconds,lr";

impl EpochMetrics {
    pub fn csv_row(&self) -> String {
        format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.1},{:.2},{:.6e}",
            self.epoch,
            self.train_loss,
            self.train_accuracy,
            self.test_loss,
            self.test_accuracy,
            self.images_per_sec,
            self.seconds,
            self.lr
        )
    }

    pub fn parse_csv_row(row: &str) -> Option<EpochMetrics> {
        let f: Vec<&str> = row.split(',').collect();
        if f.len() != 8 {
            return None;
        }
        let n = |i: usize| f[i].trim().parse::<f32>().ok();
        Some(EpochMetrics {
            epoch: f[0].trim().parse().ok()?,
            train_loss: n(1)?,
            train_accuracy: n(2)?,
            test_loss: n(3)?,
            test_accuracy: n(4)?,
            images_per_sec: n(5)?,
            seconds: n(6)?,
            lr: n(7)?,
        })
    }
}

/// The whole metrics table as CSV text (header line first).
pub fn metrics_csv(history: &[EpochMetrics]) -> String {
    std::iter::once(CSV_HEADER.to_string())
        .chain(history.iter().map(|m| m.csv_row()))
        .map(|l| l + "\n")
        .collect()
}

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Registration only fails for a malformed font, and this one is compiled in.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        msg: format!("could not draw the plot: {e}"),
    }
}

/// Write `history` as a two-panel PNG to `path` (temporary file, then rename).
pub fn plot_metrics(history: &[EpochMetrics], title: &str, path: &Path) -> Result<()> {
    register_font();
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1000, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let root = root
            .titled(title, ("sans-serif", 20))
            .map_err(|e| draw_err(path, e))?;
        let (left, right) = root.split_horizontally(500);
        let epochs = history.len().max(1) as f32;
        let max_loss = history
            .iter()
            .flat_map(|m| [m.train_loss, m.test_loss])
            .filter(|v| v.is_finite())
            .fold(0.1f32, f32::max);
        type Pick = fn(&EpochMetrics) -> f32;
        let panels: [(&DrawingArea<_, _>, &str, f32, Pick, Pick); 2] = [
            (
                &left,
                "loss",
                max_loss * 1.1,
                |m| m.train_loss,
                |m| m.test_loss,
            ),
            (
                &right,
                "accuracy",
                1.0,
                |m| m.train_accuracy,
                |m| m.test_accuracy,
            ),
        ];
        for (area, name, top, train, test) in panels {
            let mut chart = ChartBuilder::on(area)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(48)
                .caption(name, ("sans-serif", 16))
                .build_cartesian_2d(0.5f32..epochs + 0.5, 0f32..top)
                .map_err(|e| draw_err(path, e))?;
            chart
                .configure_mesh()
                .x_label_formatter(&|x| format!("{}", x.round() as i64))
                .x_desc("epoch")
                .y_desc(name)
                .draw()
                .map_err(|e| draw_err(path, e))?;
            for (label, pick, color) in [("train", train, BLUE), ("test", test, RED)] {
                let pts: Vec<(f32, f32)> =
                    history.iter().map(|m| (m.epoch as f32, pick(m))).collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(|e| draw_err(path, e))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| draw_err(path, e))?;
            }
            // Loss falls and accuracy rises: those corners stay free.
            let corner = if name == "loss" {
                SeriesLabelPosition::UpperRight
            } else {
                SeriesLabelPosition::LowerRight
            };
            chart
                .configure_series_labels()
                .position(corner)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| draw_err(path, e))?;
        }
        root.present().map_err(|e| draw_err(path, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| draw_err(path, e))
}
