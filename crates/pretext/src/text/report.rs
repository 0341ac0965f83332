//! The report of a masked-language-model run (`pretext report RUN [--data FILE.tsv]`): the
//! shared run sections and the config; with labelled texts also a map of their embeddings,
//! test texts beside their nearest training texts, and the linear probe's confusion matrix.

use std::path::Path;

use anyhow::Result;
use burn::prelude::*;

use super::checkpoint::MlmCheckpoint;
use super::probe::{Pooling, ProbeSettings, encoder_features};
use super::tsv::LabelledTexts;
use crate::core::eval::{first_of_each_class, nearest_rows};
use crate::core::html::{Page, escape, table};
use crate::core::run_report::{
    LabelledFeatures, config_section, confusion_section, map_section, run_sections,
};
use crate::core::split::stratified_split;

/// Nearest training texts shown per test text, and characters shown of each text.
const NEIGHBOURS: usize = 3;
const SHOWN_CHARS: usize = 140;

pub fn mlm_report(run: &Path, data: Option<&LabelledTexts>, device: &Device) -> Result<String> {
    let ckpt = MlmCheckpoint::load(run, device)?;
    let mut page = Page::new(&format!("pretext report: {}", run.display()));
    let overview = [
        (
            "method".to_string(),
            "masked language modelling".to_string(),
        ),
        (
            "encoder".into(),
            format!(
                "{} layers x {} hidden, vocabulary {}",
                ckpt.encoder.layers, ckpt.encoder.hidden, ckpt.encoder.vocab_size
            ),
        ),
        ("seed".into(), ckpt.config.seed.to_string()),
        ("steps".into(), ckpt.step.to_string()),
    ];
    run_sections(&mut page, &ckpt.dir, &overview)?;
    if let Some(data) = data {
        text_sections(&mut page, &ckpt, data, device)?;
    }
    config_section(&mut page, &ckpt.config.to_toml());
    Ok(page.render())
}

/// Map, nearest texts and confusion matrix of the encoder's mean-pooled features on `data`,
/// split per class as `eval text-probe` splits it.
fn text_sections(
    page: &mut Page,
    ckpt: &MlmCheckpoint,
    data: &LabelledTexts,
    device: &Device,
) -> Result<()> {
    let settings = ProbeSettings::default();
    let seed = ckpt.config.seed;
    let split = stratified_split(&data.labels, settings.test_fraction, seed)?;
    let side = |rows: &[usize]| -> (Vec<&str>, Vec<u32>) {
        rows.iter()
            .map(|&i| (data.texts[i].as_str(), data.labels[i]))
            .unzip()
    };
    let ((train_texts, train_labels), (test_texts, test_labels)) =
        (side(&split.train), side(&split.test));
    let features = |texts: &[&str]| {
        encoder_features(
            &ckpt.model,
            &ckpt.tokenizer,
            texts,
            settings.max_len,
            settings.max_windows,
            Pooling::Mean,
            settings.batch_size,
            device,
        )
    };
    let (ftrain, ftest) = (features(&train_texts)?, features(&test_texts)?);
    let train = LabelledFeatures {
        features: &ftrain,
        labels: &train_labels,
    };
    let test = LabelledFeatures {
        features: &ftest,
        labels: &test_labels,
    };
    let names = &data.classes;
    map_section(page, test, names, "texts")?;

    let shorten = |t: &str| {
        let cut: String = t.chars().take(SHOWN_CHARS).collect();
        if cut.len() < t.len() {
            format!("{cut}…")
        } else {
            cut
        }
    };
    let name = |l: u32| {
        names
            .get(l as usize)
            .cloned()
            .unwrap_or_else(|| l.to_string())
    };
    let mut rows = Vec::new();
    for q in first_of_each_class(&test_labels, 10) {
        rows.push(vec![
            format!("<b>{}</b>", escape(&name(test_labels[q]))),
            format!("<b>{}</b>", escape(&shorten(test_texts[q]))),
        ]);
        for j in nearest_rows(&ftrain, ftest.row(q), NEIGHBOURS) {
            let same = if train_labels[j] == test_labels[q] {
                "✓"
            } else {
                "✗"
            };
            rows.push(vec![
                format!("{same} {}", escape(&name(train_labels[j]))),
                escape(&shorten(train_texts[j])),
            ]);
        }
    }
    page.section(
        "neighbours",
        "Nearest training texts",
        format!(
            "<div class=\"texts\">{}</div><p class=\"note\">Each test text (bold), then its {NEIGHBOURS} nearest training \
             texts by cosine similarity of the mean-pooled encoder features; ✓ marks the test \
             text's class.</p>",
            table(&["class".into(), "text".into()], &rows)
        ),
    );
    confusion_section(page, train, test, names, &settings.eval, seed, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::test_support::{TempDir, tiny_mlm_run, two_topic_texts};

    #[test]
    fn text_report_shows_texts_only_when_given_them() {
        let dir = TempDir::new("text-report");
        let device = Device::flex();
        let run_dir = tiny_mlm_run(&dir, 5);
        let plain = mlm_report(&run_dir, None, &device).unwrap();
        for id in ["overview", "curves", "time", "labels", "config"] {
            assert!(plain.contains(&format!("<section id=\"{id}\">")), "no {id}");
        }
        assert!(!plain.contains("id=\"map\""));
        let data = two_topic_texts();
        let full = mlm_report(&run_dir, Some(&data), &device).unwrap();
        for id in ["map", "neighbours", "confusion"] {
            assert!(full.contains(&format!("<section id=\"{id}\">")), "no {id}");
        }
        assert!(full.contains("Nearest training texts") && full.contains("animals"));
        // 24 test texts are too few for t-SNE's perplexity: the map says it is PCA.
        assert!(full.contains("Test embeddings (PCA)"));
    }

    #[test]
    fn a_text_run_keeps_one_label_study_per_data_set_and_reports_each() {
        use crate::core::labels::{ArmSummary, LabelStudy};
        use crate::core::run_report::{save_label_study, text_labels_file};
        let dir = TempDir::new("text-studies");
        let device = Device::flex();
        let run_dir = tiny_mlm_run(&dir, 5);
        let study = |accuracy: f64| LabelStudy {
            arms: vec!["finetune".into()],
            fractions: vec![1.0],
            seeds: vec![0],
            comparison: None,
            runs: Vec::new(),
            summary: vec![ArmSummary {
                arm: "finetune".into(),
                fraction: 1.0,
                labelled: 10,
                mean: accuracy,
                std: 0.0,
                seeds: 1,
            }],
            labels_saved: Vec::new(),
            seconds: 0.0,
            reused: 0,
        };
        for (data, accuracy) in [("dir/sentiment.tsv", 0.61), ("dir/genres.tsv", 0.37)] {
            let path = text_labels_file(&run_dir, Path::new(data));
            save_label_study(&path, &study(accuracy), serde_json::json!({ "data": data })).unwrap();
        }
        assert!(run_dir.join("labels.sentiment.json").is_file());
        assert!(run_dir.join("labels.genres.svg").is_file());
        let html = mlm_report(&run_dir, None, &device).unwrap();
        for shown in ["dir/sentiment.tsv", "dir/genres.tsv", "61.00", "37.00"] {
            assert!(html.contains(shown), "the report lacks {shown}");
        }
    }
}
