//! Training curves as a PNG: the loss (left) and the objective's first
//! metric, e.g. accuracy (right), per epoch, on the training and test sets.

use std::path::Path;

use plotters::prelude::*;

use crate::train::EpochMetrics;
use crate::{Error, Result};

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
        // The loss, and the first other figure (accuracy for classifiers).
        let metric = history
            .first()
            .and_then(|m| m.train.iter().map(|(n, _)| n.clone()).find(|n| n != "loss"));
        let top_of = |name: &str| {
            let max = history
                .iter()
                .flat_map(|m| [m.train_metric(name), m.test_metric(name)])
                .filter(|v| v.is_finite())
                .fold(0.1f32, f32::max);
            // Fractions (accuracy) get the whole [0, 1] range.
            if name != "loss" && max <= 1.0 {
                1.0
            } else {
                max * 1.1
            }
        };
        let mut panels = vec![(&left, "loss".to_string())];
        if let Some(m) = metric {
            panels.push((&right, m));
        }
        for (area, name) in panels {
            let top = top_of(&name);
            let mut chart = ChartBuilder::on(area)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(48)
                .caption(&name, ("sans-serif", 16))
                .build_cartesian_2d(0.5f32..epochs + 0.5, 0f32..top)
                .map_err(|e| draw_err(path, e))?;
            chart
                .configure_mesh()
                // Epochs are whole numbers: label only the ticks that are.
                .x_label_formatter(&|x| {
                    if (x - x.round()).abs() < 1e-3 {
                        format!("{}", x.round() as i64)
                    } else {
                        String::new()
                    }
                })
                .x_desc("epoch")
                .y_desc(&name)
                .draw()
                .map_err(|e| draw_err(path, e))?;
            type Pick = fn(&EpochMetrics, &str) -> f32;
            let sets: [(&str, Pick, RGBColor); 2] = [
                ("train", EpochMetrics::train_metric, BLUE),
                ("test", EpochMetrics::test_metric, RED),
            ];
            for (label, pick, color) in sets {
                let pts: Vec<(f32, f32)> = history
                    .iter()
                    .map(|m| (m.epoch as f32, pick(m, &name)))
                    .filter(|p| p.1.is_finite())
                    .collect();
                if pts.is_empty() {
                    continue;
                }
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

/// One line of a [`plot_panels`] panel: a label and its (x, y) points.
pub type Series = (String, Vec<(f32, f32)>);

/// Side-by-side panels of lines (e.g. a GAN's losses and its D outputs
/// over steps) as one PNG, written to a temporary file and renamed.
pub fn plot_panels(
    title: &str,
    x_label: &str,
    panels: &[(&str, Vec<Series>)],
    path: &Path,
) -> Result<()> {
    register_font();
    const COLORS: [RGBColor; 4] = [BLUE, RED, RGBColor(0, 150, 0), RGBColor(200, 120, 0)];
    let tmp = path.with_extension("tmp.png");
    {
        let width = 500 * panels.len().max(1) as u32;
        let root = BitMapBackend::new(&tmp, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let root = root
            .titled(title, ("sans-serif", 20))
            .map_err(|e| draw_err(path, e))?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (area, (name, series)) in areas.iter().zip(panels) {
            let points = || {
                series
                    .iter()
                    .flat_map(|(_, p)| p.iter())
                    .filter(|p| p.1.is_finite())
            };
            let x_max = points().map(|p| p.0).fold(1.0f32, f32::max);
            let y_max = points().map(|p| p.1).fold(0.1f32, f32::max) * 1.1;
            let y_min = points().map(|p| p.1).fold(0.0f32, f32::min);
            let mut chart = ChartBuilder::on(area)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(48)
                .caption(*name, ("sans-serif", 16))
                .build_cartesian_2d(0f32..x_max, y_min..y_max)
                .map_err(|e| draw_err(path, e))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .x_label_formatter(&|x| format!("{}", x.round() as i64))
                .draw()
                .map_err(|e| draw_err(path, e))?;
            for (k, (label, pts)) in series.iter().enumerate() {
                let color = COLORS[k % COLORS.len()];
                let pts: Vec<(f32, f32)> =
                    pts.iter().copied().filter(|p| p.1.is_finite()).collect();
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(|e| draw_err(path, e))?
                    .label(label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| draw_err(path, e))?;
        }
        root.present().map_err(|e| draw_err(path, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| draw_err(path, e))
}

fn save_rgb(buf: &[u8], size: (u32, u32), path: &Path) -> Result<()> {
    let tmp = path.with_extension("tmp.png");
    image::save_buffer_with_format(
        &tmp,
        buf,
        size.0,
        size.1,
        image::ColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| draw_err(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| draw_err(path, e))
}

/// A confusion matrix (`confusion[true][predicted]`) as a PNG: cells shaded
/// by the fraction of their row, counts written in, class names on both
/// axes.
pub fn confusion_matrix(
    confusion: &[Vec<usize>],
    classes: &[String],
    title: &str,
    path: &Path,
) -> Result<()> {
    register_font();
    let k = confusion.len().max(1);
    let cell = (720 / k).clamp(8, 48) as i32;
    let label_w = 130i32;
    let (width, height) = (
        (label_w + cell * k as i32 + 20) as u32,
        (label_w + 30 + cell * k as i32 + 10) as u32,
    );
    let mut buf = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        let text = |size: i32| ("sans-serif", size).into_font().color(&BLACK);
        root.draw(&Text::new(title, (10, 8), text(16)))
            .map_err(|e| draw_err(path, e))?;
        let (x0, y0) = (label_w, label_w + 30);
        let name = |i: usize| {
            let n = classes.get(i).map_or("?", String::as_str);
            n.chars().take(16).collect::<String>()
        };
        for (i, row) in confusion.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            let y = y0 + i as i32 * cell;
            root.draw(&Text::new(
                name(i),
                (6, y + cell / 2 - 6),
                text(12.min(cell)),
            ))
            .map_err(|e| draw_err(path, e))?;
            for (j, &count) in row.iter().enumerate() {
                let x = x0 + j as i32 * cell;
                let f = count as f64 / total;
                let shade = (255.0 * (1.0 - 0.85 * f)) as u8;
                let color = if i == j {
                    RGBColor(shade, 255 - (255 - shade) / 3, shade)
                } else {
                    RGBColor(255, shade, shade)
                };
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell - 1, y + cell - 1)],
                    color.filled(),
                ))
                .map_err(|e| draw_err(path, e))?;
                if cell >= 24 && count > 0 {
                    root.draw(&Text::new(
                        count.to_string(),
                        (x + 3, y + cell / 2 - 6),
                        text(11),
                    ))
                    .map_err(|e| draw_err(path, e))?;
                }
            }
        }
        for j in 0..k {
            let x = x0 + j as i32 * cell + cell / 2 - 6;
            let style = ("sans-serif", 12.min(cell))
                .into_font()
                .transform(FontTransform::Rotate270)
                .color(&BLACK);
            root.draw(&Text::new(name(j), (x, y0 - 6), style))
                .map_err(|e| draw_err(path, e))?;
        }
        root.draw(&Text::new(
            "rows: true class, columns: predicted",
            (10, 30),
            text(12),
        ))
        .map_err(|e| draw_err(path, e))?;
        root.present().map_err(|e| draw_err(path, e))?;
    }
    save_rgb(&buf, (width, height), path)
}

/// Images (`[3, h, w]` u8 channel-major, all one size) in a grid of
/// `columns`, each enlarged to at least 64 pixels and captioned with its
/// two lines of text (e.g. the predicted and the true class).
pub fn captioned_grid(
    images: &[(Vec<u8>, String, String)],
    size: (usize, usize),
    columns: usize,
    path: &Path,
) -> Result<()> {
    register_font();
    let (h, w) = size;
    let zoom = (64usize).div_ceil(h.min(w).max(1)).max(1);
    let (tw, th) = ((w * zoom).max(96), h * zoom);
    let columns = columns.clamp(1, images.len().max(1));
    let rows = images.len().div_ceil(columns).max(1);
    let (cell_w, cell_h) = (tw + 8, th + 36);
    let (width, height) = ((cell_w * columns) as u32, (cell_h * rows) as u32);
    let mut buf = vec![255u8; (width * height * 3) as usize];
    let left = (tw - w * zoom) / 2;
    for (n, (chw, _, _)) in images.iter().enumerate() {
        let (ox, oy) = (
            (n % columns) * cell_w + 4 + left,
            (n / columns) * cell_h + 4,
        );
        for y in 0..th {
            for x in 0..w * zoom {
                let at = ((oy + y) * width as usize + ox + x) * 3;
                for c in 0..3 {
                    buf[at + c] = chw
                        .get(c * h * w + (y / zoom) * w + x / zoom)
                        .copied()
                        .unwrap_or(0);
                }
            }
        }
    }
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        for (n, (_, first, second)) in images.iter().enumerate() {
            let (x, y) = (
                ((n % columns) * cell_w + 4) as i32,
                ((n / columns) * cell_h + 4 + th) as i32,
            );
            let short = |s: &str| s.chars().take(16).collect::<String>();
            root.draw(&Text::new(
                short(first),
                (x, y + 2),
                ("sans-serif", 12).into_font().color(&RED),
            ))
            .map_err(|e| draw_err(path, e))?;
            root.draw(&Text::new(
                short(second),
                (x, y + 17),
                ("sans-serif", 12).into_font().color(&RGBColor(0, 120, 0)),
            ))
            .map_err(|e| draw_err(path, e))?;
        }
        root.present().map_err(|e| draw_err(path, e))?;
    }
    save_rgb(&buf, (width, height), path)
}
