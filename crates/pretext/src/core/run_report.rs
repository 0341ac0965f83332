//! The sections every run's report shares, whatever the modality: where the run came from
//! (versions, data, seed), its training curves and time breakdown, its label-efficiency
//! study when `eval labels` has been run, and its config; and, given labelled features, a 2-D
//! map of them and the linear probe's confusion matrix.

use std::path::Path;

use anyhow::{Result, bail};
use burn::prelude::Device;

use crate::core::checkpoint::write_atomic;
use crate::core::config::EvalConfig;
use crate::core::eval::{Features, Labelled, confusion_matrix, linear_probe_predictions};
use crate::core::html::{Page, escape, table};
use crate::core::labels::LabelStudy;
use crate::core::map2d::{map_2d, scatter_svg};
use crate::core::report::{label_curves_svg, line_svg, read_metrics};
use crate::core::train::SUMMARY_FILE;

/// The versions a report names.
pub fn versions() -> String {
    format!(
        "pretext {}, burn {}",
        env!("CARGO_PKG_VERSION"),
        env!("PRETEXT_BURN_VERSION")
    )
}

/// Where `eval labels` keeps its study in a run folder.
pub const LABELS_FILE: &str = "labels.json";

/// Store `study` (with `context`: what was evaluated on what) as the JSON file `json`, and its
/// curves beside it as the same name with `.svg` (a run keeps them as `labels.json` and
/// `labels.svg`); returns both paths.
pub fn save_label_study(
    json: &Path,
    study: &LabelStudy,
    context: serde_json::Value,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let mut record = context;
    record["study"] = serde_json::to_value(study)?;
    let (json, svg) = (json.to_path_buf(), json.with_extension("svg"));
    write_atomic(&json, serde_json::to_string_pretty(&record)?.as_bytes())?;
    write_atomic(&svg, label_curves_svg(study)?.as_bytes())?;
    Ok((json, svg))
}

/// The studies `eval labels` wrote into `run`, each with the data it was on: `labels.json` (an
/// image run's, on its own data) and `labels.<data>.json` (a text run's, one per labelled TSV).
pub fn read_label_studies(run: &Path) -> Result<Vec<(String, LabelStudy)>> {
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(run)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with("labels.")
                            && n.ends_with(".json")
                            && !n.ends_with(".runs.json")
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    let mut studies = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not valid JSON ({e})", path.display()))?;
        let study = serde_json::from_value(value["study"].clone())
            .map_err(|e| anyhow::anyhow!("{}: not a label study ({e})", path.display()))?;
        let data = value["data"].as_str().unwrap_or_default().to_string();
        studies.push((data, study));
    }
    Ok(studies)
}

/// Where a text run keeps its study on the labelled file `data`: `labels.<file stem>.json`, so
/// studies on several data sets all stay.
pub fn text_labels_file(run: &Path, data: &Path) -> std::path::PathBuf {
    let stem = data.file_stem().and_then(|s| s.to_str()).unwrap_or("data");
    run.join(format!("labels.{stem}.json"))
}

/// Overview, curves, time and label sections of the run in `run`.
pub fn run_sections(page: &mut Page, run: &Path, overview: &[(String, String)]) -> Result<()> {
    let metrics = run.join("metrics.jsonl");
    if !metrics.is_file() {
        bail!(
            "{}: no metrics.jsonl, so there is nothing to report (is this a run folder written \
             by `pretext pretrain` or `pretext mlm train`?)",
            run.display()
        );
    }
    let mut rows: Vec<Vec<String>> = overview
        .iter()
        .map(|(k, v)| vec![escape(k), escape(v)])
        .collect();
    rows.push(vec![
        "run folder".into(),
        escape(&run.display().to_string()),
    ]);
    rows.push(vec!["versions".into(), escape(&versions())]);
    page.section("overview", "Run", table(&["".into(), "".into()], &rows));

    let series = read_metrics(&metrics)?;
    let mut curves = String::new();
    for (title, y, points) in [
        ("training loss", "loss", &series.loss),
        ("learning rate", "learning rate", &series.lr),
        ("throughput", "examples per second", &series.rate),
        (
            "embedding spread (collapse monitor: near 1 healthy, near 0 collapsed)",
            "std of unit embeddings x sqrt(dim)",
            &series.embedding_std,
        ),
        (
            "online kNN on held-out images",
            "accuracy",
            &series.online_knn,
        ),
    ] {
        if !points.is_empty() {
            curves += &line_svg(title, "step", y, points)?;
        }
    }
    if series.loss.is_empty() {
        curves += "<p class=\"note\">metrics.jsonl holds no training step yet.</p>";
    }
    if let Some(first) = series.unreadable.first() {
        curves += &format!(
            "<p class=\"note\">{} line(s) of metrics.jsonl could not be read (torn by an \
             interrupted write or edited; the first is line {first}) and are left out of the \
             curves.</p>",
            series.unreadable.len()
        );
    }
    page.section("curves", "Training curves", curves);

    let summary = run.join(SUMMARY_FILE);
    let time = match std::fs::read_to_string(&summary)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    {
        Some(s) => {
            let t = &s["time"];
            let total = t["total"].as_f64().unwrap_or(0.0).max(1e-9);
            let rows: Vec<Vec<String>> = [
                "data_wait",
                "forward",
                "backward",
                "optimizer",
                "checkpoint",
                "total",
            ]
            .iter()
            .map(|k| {
                let v = t[*k].as_f64().unwrap_or(0.0);
                vec![
                    k.replace('_', " "),
                    format!("{v:.1} s"),
                    format!("{:.1}%", 100.0 * v / total),
                ]
            })
            .collect();
            format!(
                "<p>{} steps, {:.0} examples/s, loss {:.4} → {:.4}{}</p>{}",
                s["steps"],
                s["images_per_sec"].as_f64().unwrap_or(0.0),
                s["first_loss"].as_f64().unwrap_or(f64::NAN),
                s["final_loss"].as_f64().unwrap_or(f64::NAN),
                match s["resumed_from_step"].as_u64() {
                    Some(n) if n > 0 => format!(" (this attempt resumed at step {n})"),
                    _ => String::new(),
                },
                table(&["part".into(), "time".into(), "share".into()], &rows)
            )
        }
        None => "<p class=\"note\">Not recorded: the run predates summary.json.</p>".into(),
    };
    page.section("time", "Where the time went", time);

    let studies = read_label_studies(run)?;
    let mut labels = String::new();
    for (data, study) in &studies {
        let saved: String = study
            .labels_saved
            .iter()
            .map(|s| format!("<li>{}</li>", escape(&s.statement)))
            .collect();
        if studies.len() > 1 {
            labels += &format!("<h3>{}</h3>", escape(data));
        }
        labels += &format!(
            "{}<pre>{}</pre><ul>{saved}</ul>",
            label_curves_svg(study)?,
            escape(&study.table())
        );
    }
    if studies.is_empty() {
        labels = format!(
            "<p class=\"note\">Not measured yet: run <code>pretext eval labels --checkpoint {}\
             </code>.</p>",
            escape(&run.display().to_string())
        );
    }
    page.section("labels", "Label efficiency", labels);
    Ok(())
}

/// The config as the run stored it.
pub fn config_section(page: &mut Page, config_toml: &str) {
    page.section(
        "config",
        "Config",
        format!("<pre>{}</pre>", escape(config_toml)),
    );
}

/// The confusion matrix with per-class accuracy (recall) in the last column.
fn confusion_table(predicted: &[u32], labels: &[u32], names: &[String]) -> String {
    let m = confusion_matrix(predicted, labels, names.len());
    let mut header = vec!["true \\ predicted".to_string()];
    header.extend(names.iter().map(|n| escape(n)));
    header.push("accuracy".into());
    let rows: Vec<Vec<String>> = m
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let total: usize = row.iter().sum();
            let mut cells = vec![escape(&names[c])];
            cells.extend(row.iter().enumerate().map(|(p, n)| {
                if p == c {
                    format!("<b>{n}</b>")
                } else {
                    n.to_string()
                }
            }));
            cells.push(format!(
                "{:.1}%",
                100.0 * row[c] as f64 / total.max(1) as f64
            ));
            cells
        })
        .collect();
    let correct: usize = (0..m.len()).map(|c| m[c][c]).sum();
    format!(
        "{}<p>overall: {:.2}% of {} test examples</p>",
        table(&header, &rows),
        100.0 * correct as f64 / labels.len().max(1) as f64,
        labels.len()
    )
}

/// Test points in the map at most (t-SNE grows with the square of the count).
const MAP_POINTS: usize = 2000;

/// Features with one label per row, for the sections that show what features hold.
#[derive(Clone, Copy)]
pub struct LabelledFeatures<'a> {
    pub features: &'a Features,
    pub labels: &'a [u32],
}

/// A 2-D map of (the first [`MAP_POINTS`] of) the test features, coloured by class; `what`
/// names the rows ("images", "texts").
pub fn map_section(
    page: &mut Page,
    test: LabelledFeatures,
    names: &[String],
    what: &str,
) -> Result<()> {
    let shown: Vec<usize> = (0..test.features.len().min(MAP_POINTS)).collect();
    let map = map_2d(&test.features.rows(&shown));
    let labels: Vec<u32> = shown.iter().map(|&i| test.labels[i]).collect();
    page.section(
        "map",
        &format!("Test embeddings ({})", map.method),
        format!(
            "{}<p class=\"note\">{} of the {} test {what}, pretrained features, L2-normalised; \
             {} keeps neighbours together, distances between far clusters mean little.</p>",
            scatter_svg(&map, &labels, names)?,
            shown.len(),
            test.features.len(),
            map.method
        ),
    );
    Ok(())
}

/// The linear probe (trained on `train`) on `test`: confusion matrix and per-class accuracy.
pub fn confusion_section(
    page: &mut Page,
    train: LabelledFeatures,
    test: LabelledFeatures,
    names: &[String],
    eval: &EvalConfig,
    seed: u64,
    device: &Device,
) -> Result<()> {
    let predicted = linear_probe_predictions(
        Labelled::new(train.features, train.labels),
        Labelled::new(test.features, test.labels),
        names.len(),
        eval,
        seed,
        device,
    )?;
    page.section(
        "confusion",
        "Linear probe: confusion matrix",
        confusion_table(&predicted, test.labels, names),
    );
    Ok(())
}
