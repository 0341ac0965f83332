//! The report of a masked-language-model run (`pretext report RUN`): the shared run sections
//! and the config. (Nearest sentences and a map of sentence embeddings are still to come.)

use std::path::Path;

use anyhow::Result;
use burn::prelude::*;

use super::checkpoint::MlmCheckpoint;
use crate::core::html::Page;
use crate::core::run_report::{config_section, run_sections};

pub fn mlm_report(run: &Path, device: &Device) -> Result<String> {
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
    config_section(&mut page, &ckpt.config.to_toml());
    Ok(page.render())
}
