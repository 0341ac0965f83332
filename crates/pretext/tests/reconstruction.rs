//! Masked image modelling, autoencoders and the classic pretext tasks on the shared trainer:
//! short runs on a slice of the embedded data lower their loss, checkpoints evaluate like any
//! other, and the reconstructing methods draw their picture.

use std::path::PathBuf;

use burn::prelude::*;
use pretext::core::train::TrainOptions;
use pretext::vision::checkpoint::ImageCheckpoint;
use pretext::vision::config::PretrainConfig;
use pretext::vision::data::embedded_fashion_mnist;
use pretext::vision::methods::{Autoencoder, Jigsaw, Mae, Method, Rotation, SimMim};
use pretext::vision::pretrain::pretrain;
use pretext::vision::reconstruct::reconstruction_grid;

fn out_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pretext-rec-{name}-{}", std::process::id()))
}

/// A tiny ViT or CNN config for `method`, on 256 images for 3 epochs.
fn config(method: &str, extra: &[&str]) -> PretrainConfig {
    let vit = matches!(method, "mae" | "simmim");
    let mut sets: Vec<String> = [
        format!("method={method}"),
        format!(
            "backbone.arch={}",
            if vit { "vit_tiny" } else { "small_cnn" }
        ),
        "backbone.dim=32".into(),
        "backbone.depth=1".into(),
        "backbone.heads=2".into(),
        "backbone.width=8".into(),
        "mae.decoder_dim=16".into(),
        "mae.decoder_depth=1".into(),
        "mae.decoder_heads=2".into(),
        "autoencoder.decoder_width=8".into(),
        "jigsaw.permutations=10".into(),
        "jigsaw.hidden=32".into(),
        "batch_size=32".into(),
        "epochs=3".into(),
        "data.train_limit=256".into(),
        "optimizer.lr=0.003".into(),
        "optimizer.warmup_epochs=0.5".into(),
        format!("train.out_dir=\"{}\"", out_dir(method).display()),
    ]
    .into_iter()
    .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    PretrainConfig::from_toml("", method, &sets).unwrap()
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..Default::default()
    }
}

/// Train `M`, check the loss fell below `ceiling` (when given) and below its start, and return
/// the opened checkpoint.
fn train<M: Method>(config: &PretrainConfig, ceiling: Option<f64>) -> ImageCheckpoint {
    let device = Device::flex();
    let splits = embedded_fashion_mnist().unwrap();
    let (_, summary) = pretrain::<M>(config, &splits.train, &device, &quiet()).unwrap();
    let (first, last) = (summary.first_loss, summary.last_epoch_loss);
    eprintln!("{}: loss {first:.4} -> last epoch {last:.4}", config.method);
    assert!(
        last < first,
        "{}: loss {first} -> {last} did not fall",
        config.method
    );
    if let Some(ceiling) = ceiling {
        assert!(
            last < ceiling,
            "{}: loss {last} not below {ceiling}",
            config.method
        );
    }
    ImageCheckpoint::open(&summary.checkpoint, &device).unwrap()
}

/// The reconstruction PNG: three rows of `n` cells of 56x56 (28x28 scaled by 2) plus gaps.
fn check_grid(ckpt: &ImageCheckpoint, n: usize) {
    let splits = embedded_fashion_mnist().unwrap();
    let test = splits.test.unwrap();
    let png = reconstruction_grid(ckpt, &test, n, 1, &Device::flex())
        .unwrap()
        .unwrap();
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!(img.width(), n as u32 * 58 + 2);
    assert_eq!(img.height(), 3 * 58 + 10);
    // The reconstruction row is not blank.
    let rgb = img.to_rgb8();
    let row = |r: u32| -> Vec<u8> {
        (0..56)
            .flat_map(|y| (0..56).map(move |x| (x + 2, r * 58 + y)))
            .map(|(x, y)| rgb.get_pixel(x, y)[0])
            .collect()
    };
    let out = row(2);
    assert!(out.iter().max() > out.iter().min(), "blank reconstruction");
    assert_ne!(row(0), row(1), "the input shown differs from the original");
}

#[test]
fn mae_learns_and_draws_its_reconstructions() {
    let ckpt = train::<Mae>(&config("mae", &[]), None);
    assert_eq!(ckpt.backbone.out_dim(), 32);
    check_grid(&ckpt, 4);
}

#[test]
fn simmim_learns_and_draws_its_reconstructions() {
    let ckpt = train::<SimMim>(&config("simmim", &[]), None);
    check_grid(&ckpt, 3);
}

#[test]
fn denoising_autoencoder_learns_against_the_clean_image() {
    // Normalised pixels have variance 1: predicting the mean image scores about 1.
    let c = config(
        "denoising_autoencoder",
        &["autoencoder.corruption=\"erase\""],
    );
    let ckpt = train::<Autoencoder>(&c, Some(0.9));
    check_grid(&ckpt, 2);
}

#[test]
fn rotation_and_jigsaw_beat_chance_and_do_not_reconstruct() {
    // Chance is ln 4 = 1.386 for rotations.
    let ckpt = train::<Rotation>(&config("rotation", &[]), Some(1.3));
    let test = embedded_fashion_mnist().unwrap().test.unwrap();
    assert!(
        reconstruction_grid(&ckpt, &test, 2, 0, &Device::flex())
            .unwrap()
            .is_none()
    );
    // Chance is ln 10 = 2.303 for ten permutations.
    train::<Jigsaw>(&config("jigsaw", &[]), Some(2.2));
}

#[test]
fn masked_methods_refuse_a_cnn_by_name() {
    let err = PretrainConfig::from_toml("", "x", &["method=mae".into()]).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("vit_tiny") && text.contains("small_cnn"),
        "{text}"
    );
}
