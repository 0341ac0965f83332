//! Outputs for people and other tools: plots (SVG: the training loss, label-efficiency
//! curves) and `.npy` feature files, all written atomically.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::core::checkpoint::write_atomic;
use crate::core::labels::LabelStudy;

/// The per-step series of a run's `metrics.jsonl`: (step, value) for loss, learning rate
/// and examples per second.
#[derive(Debug, Clone, Default)]
pub struct MetricSeries {
    pub loss: Vec<(f64, f64)>,
    pub lr: Vec<(f64, f64)>,
    pub rate: Vec<(f64, f64)>,
    /// The collapse monitor, where the method has embeddings.
    pub embedding_std: Vec<(f64, f64)>,
    /// `train.online_knn`'s score at each epoch end.
    pub online_knn: Vec<(f64, f64)>,
    /// Non-blank lines that are not a JSON record with a step (torn by a crash, edited by
    /// hand), by line number; JSON has no NaN, so a line holding one is among them.
    pub unreadable: Vec<usize>,
}

pub fn read_metrics(metrics: &Path) -> Result<MetricSeries> {
    let text = std::fs::read_to_string(metrics)
        .with_context(|| format!("cannot read {}", metrics.display()))?;
    let mut series = MetricSeries::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<serde_json::Value>(line).ok();
        let Some((v, step)) = parsed.and_then(|v| v["step"].as_f64().map(|s| (v, s))) else {
            series.unreadable.push(i + 1);
            continue;
        };
        for (key, out) in [
            ("loss", &mut series.loss),
            ("lr", &mut series.lr),
            ("images_per_sec", &mut series.rate),
            ("embedding_std", &mut series.embedding_std),
            ("online_knn", &mut series.online_knn),
        ] {
            if let Some(x) = v[key].as_f64().filter(|x| x.is_finite()) {
                out.push((step, x));
            }
        }
    }
    Ok(series)
}

/// Plot `loss` against `step` from a metrics JSON-lines file, as an SVG file (written
/// atomically; nothing is written when the file has no finite loss).
pub fn plot_loss(metrics: &Path, out: &Path) -> Result<()> {
    let series = read_metrics(metrics)?;
    if series.loss.is_empty() {
        return Ok(());
    }
    let svg = line_svg("training loss", "step", "loss", &series.loss)?;
    write_atomic(out, svg.as_bytes())
}

/// One line of (x, y) points as an SVG chart.
pub fn line_svg(title: &str, x_desc: &str, y_desc: &str, points: &[(f64, f64)]) -> Result<String> {
    draw_line(title, x_desc, y_desc, points)
        .map_err(|e| anyhow::anyhow!("cannot draw the {title} plot: {e}"))
}

fn draw_line(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    points: &[(f64, f64)],
) -> Result<String, Box<dyn std::error::Error>> {
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let y_min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let y_max = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let (y_min, y_max) = if y_min.is_finite() {
        (y_min, y_max)
    } else {
        (0.0, 1.0)
    };
    let pad = ((y_max - y_min) * 0.05).max(1e-3 * y_max.abs().max(1e-6));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()?;
        chart.draw_series(LineSeries::new(points.iter().copied(), &ARM_COLORS[0]))?;
        root.present()?;
    }
    Ok(svg)
}

/// A fraction as a short percentage: 0.3 → "30%", 0.015 → "1.5%".
fn percent_label(fraction: f64) -> String {
    let text = format!("{:.2}", 100.0 * fraction);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// Distinct, readable line colours (matplotlib's tab10).
pub const ARM_COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// Accuracy against the labelled fraction (log x), one line per arm, error bars of one
/// standard deviation over seeds.
pub fn label_curves_svg(study: &LabelStudy) -> Result<String> {
    draw_label_curves(study).map_err(|e| anyhow::anyhow!("cannot draw the label curves: {e}"))
}

fn draw_label_curves(study: &LabelStudy) -> Result<String, Box<dyn std::error::Error>> {
    let (f_min, f_max) = (
        study.fractions.first().copied().unwrap_or(0.01),
        study.fractions.last().copied().unwrap_or(1.0),
    );
    let low = study
        .summary
        .iter()
        .map(|s| s.mean - s.std)
        .fold(1.0, f64::min);
    let high = study
        .summary
        .iter()
        .map(|s| s.mean + s.std)
        .fold(0.0, f64::max);
    let (y0, y1) = (
        (100.0 * low - 5.0).max(0.0).floor(),
        (100.0 * high + 5.0).min(100.0).ceil(),
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "test accuracy against labelled fraction",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d((f_min * 0.8..f_max * 1.2).log_scale(), y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("fraction of training labels (log scale)")
            .y_desc("test accuracy (%)")
            .x_label_formatter(&|f| percent_label(*f))
            .draw()?;
        for (i, arm) in study.arms.iter().enumerate() {
            let color = ARM_COLORS[i % ARM_COLORS.len()].to_rgba();
            let points: Vec<_> = study.summary.iter().filter(|s| &s.arm == arm).collect();
            let line = points.iter().map(|s| (s.fraction, 100.0 * s.mean));
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))?
                .label(arm.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(
                points
                    .iter()
                    .map(|s| Circle::new((s.fraction, 100.0 * s.mean), 4, color.filled())),
            )?;
            chart.draw_series(points.iter().map(|s| {
                let (lo, hi) = (100.0 * (s.mean - s.std), 100.0 * (s.mean + s.std));
                PathElement::new(vec![(s.fraction, lo), (s.fraction, hi)], color)
            }))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Write a float32 matrix `[rows, cols]` in NumPy's `.npy` format (version 1.0), atomically.
pub fn write_npy(path: &Path, values: &[f32], rows: usize, cols: usize) -> Result<()> {
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    let padding = (64 - unpadded % 64) % 64;
    let mut bytes = Vec::with_capacity(unpadded + padding + values.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&((header.len() + padding + 1) as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(b' ', padding));
    bytes.push(b'\n');
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_series_keep_the_monitor_and_online_knn_and_skip_torn_lines() {
        let dir = crate::vision::data::tests::tempdir("metrics");
        let p = dir.join("metrics.jsonl");
        std::fs::write(
            &p,
            "{\"step\":1,\"loss\":2.0,\"lr\":0.1,\"images_per_sec\":5,\"embedding_std\":0.8}\n\
             {\"step\":2,\"loss\":1.5,\"lr\":0.2,\"embedding_std\":0.7,\"online_knn\":0.6}\n\
             \n\
             {\"step\":3,\"loss\":NaN}\n\
             {\"step\":4,\"loss\":1.",
        )
        .unwrap();
        let s = read_metrics(&p).unwrap();
        assert_eq!(s.loss, vec![(1.0, 2.0), (2.0, 1.5)]);
        assert_eq!(
            s.unreadable,
            vec![4, 5],
            "the NaN line and the torn one; not the blank"
        );
        assert_eq!(s.embedding_std, vec![(1.0, 0.8), (2.0, 0.7)]);
        assert_eq!(s.online_knn, vec![(2.0, 0.6)]);
        assert_eq!(s.rate.len(), 1);
    }

    #[test]
    fn npy_header_is_aligned_and_data_follows() {
        let dir = crate::vision::data::tests::tempdir("npy");
        let p = dir.join("f.npy");
        write_npy(&p, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3).unwrap();
        let b = std::fs::read(&p).unwrap();
        let header_len = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + header_len]).unwrap();
        assert!(header.contains("'shape': (2, 3)"));
        assert_eq!(b.len(), 10 + header_len + 24);
        assert_eq!(
            &b[10 + header_len..10 + header_len + 4],
            &1f32.to_le_bytes()
        );
    }
}
