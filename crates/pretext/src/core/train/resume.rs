//! Resuming a run: where its checkpoint lives, whether a checkpoint belongs to the same run,
//! and dropping the metrics an interrupted attempt wrote past its last checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::core::checkpoint::write_atomic;

pub fn checkpoint_file(out_dir: &str) -> PathBuf {
    Path::new(out_dir).join("checkpoint.safetensors")
}

pub(super) fn check_resumable(stored: &str, identity: &toml::Table) -> Result<()> {
    let stored: toml::Table = stored
        .parse()
        .context("checkpoint holds an unreadable run identity")?;
    let mut keys: Vec<&String> = stored.keys().chain(identity.keys()).collect();
    keys.sort();
    keys.dedup();
    let shown = |v: Option<&toml::Value>| v.map_or("(absent)".to_string(), |v| v.to_string());
    let differing: Vec<String> = keys
        .into_iter()
        .filter(|k| stored.get(*k) != identity.get(*k))
        .map(|k| {
            format!(
                "{k}: checkpoint {}, now {}",
                shown(stored.get(k)),
                shown(identity.get(k))
            )
        })
        .collect();
    if !differing.is_empty() {
        bail!(
            "cannot resume: the config differs from the checkpoint's ({}); start a new out_dir \
             or use the same config",
            differing.join("; ")
        );
    }
    Ok(())
}

pub(super) fn truncate_metrics(path: &Path, keep_steps: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= keep_steps)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes())
}
