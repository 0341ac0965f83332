//! `pretext report RUN`: one self-contained HTML page about a run.

use std::path::Path;

use anyhow::Result;
use pretext::audio::report::audio_report;
use pretext::core::checkpoint::{Checkpoint, write_atomic};
use pretext::text::report::mlm_report;
use pretext::text::tsv::read_labelled_tsv;
use pretext::video::report::video_report;
use pretext::vision::checkpoint::checkpoint_config;
use pretext::vision::data;
use pretext::vision::report::image_report;
use serde_json::json;

use crate::Global;

pub fn run(g: &Global, run: &Path, data: Option<&Path>, out: Option<&Path>) -> Result<()> {
    let device = pretext::core::device::parse(&g.device)?;
    let ckpt = Checkpoint::load(run)?;
    let dir = if run.is_dir() {
        run.to_path_buf()
    } else {
        run.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let html = if ckpt.meta["kind"].as_str() == Some("audio") {
        if !g.overrides().is_empty() || g.config.is_some() {
            anyhow::bail!("the report of an audio run takes no --config, --set or --seed");
        }
        // A clip folder with train/ and test/ adds the map, neighbours and confusion matrix.
        audio_report(&dir, data, &device)?
    } else if ckpt.meta["kind"].as_str() == Some("video") {
        if !g.overrides().is_empty() || g.config.is_some() {
            anyhow::bail!("the report of a video run takes no --config, --set or --seed");
        }
        // Videos with a test split add the map, confusion matrix and (next-frame) forecasts.
        video_report(&dir, data, &device)?
    } else if pretext::text::checkpoint::is_text_kind(ckpt.meta["kind"].as_str()) {
        if !g.overrides().is_empty() || g.config.is_some() {
            anyhow::bail!("the report of a text run takes no --config, --set or --seed");
        }
        // Labelled texts (a TSV) add the map, nearest texts and confusion matrix.
        let texts = data.map(|d| read_labelled_tsv(d, None, None)).transpose()?;
        mlm_report(&dir, texts.as_ref(), &device)?
    } else {
        let config = checkpoint_config(&ckpt, run)?;
        let shape = &ckpt.meta;
        let stream_size = (
            shape["height"].as_u64().unwrap_or(0) as usize,
            shape["width"].as_u64().unwrap_or(0) as usize,
        );
        let splits = data::open_splits(data, &config.data, stream_size)?;
        eprintln!("data: {}", splits.description);
        if g.config.is_some() {
            anyhow::bail!("report reads the run's own config; change it with --set, not --config");
        }
        image_report(&dir, &splits, &g.overrides(), &device)?
    };
    let out = out.map_or_else(|| dir.join("report.html"), Path::to_path_buf);
    write_atomic(&out, html.as_bytes())?;
    if g.json {
        println!(
            "{}",
            json!({ "command": "report", "run": dir, "out": out, "bytes": html.len() })
        );
    } else {
        println!("wrote {} ({} KiB)", out.display(), html.len() / 1024);
    }
    Ok(())
}
