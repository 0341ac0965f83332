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
}
