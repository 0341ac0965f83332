//! Image commands: `pretrain`, `eval knn|linear|all`, `embed`, `reconstruct`, `quickstart`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use burn::prelude::Device;
use pretext::core::eval::Protocols;
use pretext::core::train::{TrainOptions, TrainSummary};
use pretext::vision::backbones::Backbone;
use pretext::vision::checkpoint::ImageCheckpoint;
use pretext::vision::config::PretrainConfig;
use pretext::vision::data::source::limited;
use pretext::vision::data::{self, ImageSource, SourceSplits};
use pretext::vision::eval::{evaluate, extract};
use pretext::vision::pretrain::pretrain_on as pretrain_method;
use pretext::vision::reconstruct::reconstruction_grid;
use pretext::with_method;
use serde_json::json;

use crate::Global;

const QUICKSTART_CONFIG: &str = include_str!("../../../configs/quickstart.toml");

/// `pretext pretrain`: pretrain an image method, print its summary.
pub fn pretrain(g: &Global, data: Option<&Path>, resume: bool, overwrite: bool) -> Result<()> {
    let config = load_config(g, None)?;
    let device = pretext::core::device::parse(&g.device)?;
    let (train, description) = data::open_train(data, &config.data)?;
    // Under MPI rank 0 speaks for the job.
    let root = pretext::core::distributed::world().is_root();
    if root {
        eprintln!("data: {description}");
    }
    let options = TrainOptions {
        resume,
        overwrite,
        quiet: false,
    };
    let summary = pretrain_any(&config, train, &device, &options)?;
    if !root {
    } else if g.json {
        println!(
            "{}",
            json!({ "command": "pretrain", "data": description, "summary": summary })
        );
    } else {
        print_summary(&summary);
    }
    Ok(())
}

/// `pretext eval knn|linear|all`: score a checkpoint's frozen image features.
pub fn eval(
    g: &Global,
    protocols: Protocols,
    checkpoint: &Path,
    data: Option<&Path>,
    baseline: bool,
) -> Result<()> {
    let (device, splits, loaded, config) = open_for_eval(g, checkpoint, data)?;
    let report = eval_report(&loaded, &config, &splits, protocols, baseline, &device)?;
    if g.json {
        println!(
            "{}",
            json!({ "command": "eval", "checkpoint": checkpoint, "data": splits.description, "results": report })
        );
    } else {
        print_scores(&report);
    }
    Ok(())
}

/// `pretext embed`: write a checkpoint's features of one split to a `.npy` file.
pub fn embed(
    g: &Global,
    checkpoint: &Path,
    data: Option<&Path>,
    out: &Path,
    test_split: bool,
) -> Result<()> {
    // `--config`/`--set` apply as for `eval`: data.image_size, data.train_limit and
    // data.test_limit choose the images; a key the checkpoint's config lacks is refused.
    let (device, splits, loaded, config) = open_for_eval(g, checkpoint, data)?;
    let set = if test_split {
        limited(splits.require_test()?.clone(), config.data.test_limit)
    } else {
        limited(splits.train.clone(), config.data.train_limit)
    };
    loaded.check_compatible(&*set)?;
    let f = extract(&loaded.backbone, &*set, &loaded.mean, &loaded.std, &device)?;
    pretext::core::report::write_npy(out, &f.values, f.len(), f.dim)?;
    if g.json {
        println!(
            "{}",
            json!({ "command": "embed", "out": out, "rows": f.len(), "dim": f.dim })
        );
    } else {
        println!(
            "wrote {} features of dimension {} to {}",
            f.len(),
            f.dim,
            out.display()
        );
    }
    Ok(())
}

/// `pretext export --format torchvision | timm`: a ResNet backbone as a torchvision state dict,
/// a ViT as a timm one.
pub fn export_for_pytorch(g: &Global, checkpoint: &Path, out: &Path, format: &str) -> Result<()> {
    if g.config.is_some() || !g.overrides().is_empty() {
        anyhow::bail!(
            "export writes the checkpoint as it is; it takes no --config, --set or --seed"
        );
    }
    let device = pretext::core::device::parse(&g.device)?;
    let loaded = ImageCheckpoint::open(checkpoint, &device)?;
    let summary = match format {
        "timm" => pretext::vision::export::export_timm(&loaded, out)?,
        _ => pretext::vision::export::export_torchvision(&loaded, out)?,
    };
    if g.json {
        println!(
            "{}",
            json!({ "command": "export", "out": out, "summary": summary })
        );
    } else {
        println!(
            "wrote {} ({} tensors) to {}; in PyTorch: {}; model.load_state_dict(\
             safetensors.torch.load_file(\"{}\"))",
            summary.arch,
            summary.tensors,
            out.display(),
            summary.model,
            out.display()
        );
    }
    Ok(())
}

/// `pretext reconstruct`: the PNG of originals, inputs and reconstructions.
pub fn reconstruct(
    g: &Global,
    checkpoint: &Path,
    data: Option<&Path>,
    out: &Path,
    images: usize,
) -> Result<()> {
    if g.config.is_some() || !g.set.is_empty() {
        anyhow::bail!(
            "reconstruct reads the checkpoint's own config; it takes no --config or --set"
        );
    }
    if images == 0 || images > 256 {
        anyhow::bail!("-n {images}: show between 1 and 256 images");
    }
    let png = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !png {
        anyhow::bail!(
            "--out {}: reconstruct writes a PNG image; give the file a .png name",
            out.display()
        );
    }
    let device = pretext::core::device::parse(&g.device)?;
    let loaded = ImageCheckpoint::open(checkpoint, &device)?;
    let splits = data::open_splits(data, &loaded.config.data, (loaded.shape.1, loaded.shape.2))?;
    let set = &**splits.test.as_ref().unwrap_or(&splits.train);
    let seed = g.seed.unwrap_or(loaded.config.seed);
    let png = reconstruction_grid(&loaded, set, images, seed, &device)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: method '{}' does not reconstruct images (mae, simmim, autoencoder and \
             denoising_autoencoder do)",
            checkpoint.display(),
            loaded.config.method
        )
    })?;
    pretext::core::checkpoint::write_atomic(out, &png)?;
    if g.json {
        println!(
            "{}",
            json!({ "command": "reconstruct", "checkpoint": checkpoint, "method": loaded.config.method, "images": images.min(set.len()), "out": out })
        );
    } else {
        println!(
            "wrote {} ({} images of {}; rows: originals, inputs the model saw, reconstructions)",
            out.display(),
            images.min(set.len()),
            splits.description
        );
    }
    Ok(())
}

fn load_config(g: &Global, default_text: Option<&str>) -> Result<PretrainConfig> {
    let sets = g.overrides();
    match (&g.config, default_text) {
        (Some(path), _) => PretrainConfig::load(Some(path), &sets),
        (None, Some(text)) => PretrainConfig::from_toml(text, "quickstart config", &sets),
        (None, None) => PretrainConfig::load(None, &sets),
    }
}

/// The device, data and checkpoint an evaluation reads, and the checkpoint's config with
/// `--set eval.*` / `data.*_limit` and `--seed` applied.
pub fn open_for_eval(
    g: &Global,
    checkpoint: &Path,
    data: Option<&Path>,
) -> Result<(Device, SourceSplits, ImageCheckpoint, PretrainConfig)> {
    let device = pretext::core::device::parse(&g.device)?;
    let loaded = ImageCheckpoint::open(checkpoint, &device)?;
    let config = PretrainConfig::from_toml(
        &loaded.config.to_toml(),
        "checkpoint config",
        &g.overrides(),
    )?;
    let splits = data::open_splits(data, &config.data, (loaded.shape.1, loaded.shape.2))?;
    Ok((device, splits, loaded, config))
}

fn pretrain_any(
    config: &PretrainConfig,
    train: Arc<dyn ImageSource>,
    device: &Device,
    options: &TrainOptions,
) -> Result<TrainSummary> {
    with_method!(config.method.as_str(), M => {
        let (_, summary) = pretrain_method::<M>(config, train.clone(), device, options)?;
        Ok(summary)
    })
}

fn eval_report(
    loaded: &ImageCheckpoint,
    config: &PretrainConfig,
    splits: &SourceSplits,
    protocols: Protocols,
    baseline: bool,
    device: &Device,
) -> Result<serde_json::Value> {
    let test = limited(splits.require_test()?.clone(), config.data.test_limit);
    let train = limited(splits.train.clone(), config.data.train_limit);
    loaded.check_compatible(&*train)?;
    let t = Instant::now();
    let score = |b: &Backbone| {
        evaluate(
            b,
            &*train,
            &*test,
            &loaded.mean,
            &loaded.std,
            &config.eval,
            protocols,
            config.seed,
            device,
        )
    };
    let pretrained = score(&loaded.backbone)?;
    let random = if baseline {
        Some(score(&loaded.random_backbone(config.seed, device))?)
    } else {
        None
    };
    Ok(json!({
        "method": loaded.config.method,
        "train_images": train.len(),
        "test_images": test.len(),
        "knn_k": config.eval.knn_k,
        "pretrained": pretrained,
        "random_init": random,
        "seconds": t.elapsed().as_secs_f64(),
    }))
}

fn pct(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or("-".into(), |x| format!("{:.2}%", 100.0 * x))
}

/// The table of an [`eval_report`], every figure read from the report itself (the k it used,
/// the method it scored), so the text can never disagree with the JSON.
fn print_scores(report: &serde_json::Value) {
    println!(
        "evaluated on {} train / {} test images",
        report["train_images"], report["test_images"]
    );
    println!(
        "{:<22} {:>12} {:>14}",
        "backbone",
        format!("kNN (k={})", report["knn_k"]),
        "linear probe"
    );
    let row = |name: &str, s: &serde_json::Value| {
        println!(
            "{:<22} {:>12} {:>14}",
            name,
            pct(&s["knn"]),
            pct(&s["linear"])
        );
    };
    row(
        &format!("pretrained ({})", report["method"].as_str().unwrap_or("?")),
        &report["pretrained"],
    );
    if !report["random_init"].is_null() {
        row("random init", &report["random_init"]);
    }
}

fn print_summary(s: &TrainSummary) {
    println!(
        "{}: {} steps ({:.2} epochs), loss {:.4} -> {:.4} (last epoch mean {:.4}), {:.0} images/s",
        s.method,
        s.steps,
        s.epochs_done,
        s.first_loss,
        s.final_loss,
        s.last_epoch_loss,
        s.images_per_sec
    );
    crate::summary::print_time(&s.time);
    println!("checkpoint: {}", s.checkpoint.display());
}

pub fn quickstart(g: &Global, data: Option<&Path>) -> Result<()> {
    let started = Instant::now();
    let config = load_config(g, Some(QUICKSTART_CONFIG))?;
    let device = pretext::core::device::parse(&g.device)?;
    let splits = data::load(data, config.data.resize_to()?)?;
    eprintln!("data: {}", splits.description);
    eprintln!(
        "pretraining {} for {} epochs (batch {}) ...",
        config.method, config.epochs, config.batch_size
    );
    // The quick start is a demonstration: it replaces its previous run, and says so.
    let previous = pretext::vision::pretrain::checkpoint_path(&config);
    if previous.is_file() {
        eprintln!(
            "replacing the previous quick-start run in {}",
            config.train.out_dir
        );
    }
    let options = TrainOptions {
        overwrite: true,
        quiet: false,
        ..TrainOptions::default()
    };
    let splits = SourceSplits::from(splits);
    let summary = pretrain_any(&config, splits.train.clone(), &device, &options)?;
    if !g.json {
        print_summary(&summary);
        eprintln!(
            "evaluating frozen features (kNN and linear probe) against a random-init backbone ..."
        );
    }
    let loaded = ImageCheckpoint::open(&summary.checkpoint, &device)?;
    let protocols = Protocols {
        knn: true,
        linear: true,
    };
    let report = eval_report(&loaded, &config, &splits, protocols, true, &device)?;
    let wall = started.elapsed().as_secs_f64();
    if g.json {
        println!(
            "{}",
            json!({ "command": "quickstart", "data": splits.description, "pretrain": summary, "results": report, "wall_seconds": wall })
        );
    } else {
        print_scores(&report);
        println!("wall time: {wall:.0}s");
    }
    Ok(())
}
