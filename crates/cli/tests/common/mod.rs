//! What the command-line tests share: running the binary, a tiny pretraining run, and the
//! small data the audio, video and data-parallel tests make (tones, moving objects).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use pretext::audio::data::decode::write_wav;
use pretext::core::checkpoint::Checkpoint;
use pretext::vision::data::idx::{IdxArray, encode_idx};

pub const BIN: &str = env!("CARGO_BIN_EXE_pretext");

pub fn run(args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

pub fn pretrain(out: &Path, method: &str) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.toml");
    let dir = format!("train.out_dir=\"{}\"", out.display());
    let method = format!("method=\"{method}\"");
    let mut args = vec!["pretrain", "--config", config.to_str().unwrap(), "--json"];
    for set in [
        method.as_str(),
        "epochs=1",
        "data.train_limit=256",
        "batch_size=32",
        "backbone.width=8",
        "projection.hidden=32",
        "projection.output=16",
        "prediction.hidden=32",
        "prediction.output=16",
        dir.as_str(),
    ] {
        args.extend(["--set", set]);
    }
    let (ok, _, err) = run(&args);
    assert!(ok, "pretrain {method}: {err}");
}

/// A tone with three harmonics at `f` Hz, a random-ish onset and noise, 0.6 s at 16 kHz.
pub fn tone(f: f64, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 2001) as f64 / 1000.0 - 1.0
    };
    let onset = (seed % 7) as usize * 400;
    let detune = 1.0 + 0.02 * noise();
    (0..9600)
        .map(|i| {
            let t = i as f64 / 16000.0;
            let on = if i >= onset { (-(t * 3.0)).exp() } else { 0.0 };
            let s: f64 = (1..=3)
                .map(|h| (2.0 * std::f64::consts::PI * f * detune * h as f64 * t).sin() / h as f64)
                .sum();
            (0.3 * on * s + 0.01 * noise()) as f32
        })
        .collect()
}

/// train/ and test/ of four classes of tones, `per_class` and 8 clips each.
pub fn tones(root: &Path, per_class: usize) {
    for (c, f) in [150.0, 400.0, 1100.0, 3000.0].iter().enumerate() {
        for (split, n) in [("train", per_class), ("test", 8)] {
            let d = root.join(split).join(format!("tone{c}"));
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..n {
                let seed = (c * 1000 + i + if split == "test" { 500 } else { 0 }) as u64;
                write_wav(&d.join(format!("{i}.wav")), &tone(*f, seed), 16000).unwrap();
            }
        }
    }
}

/// MNIST-layout IDX files of 8x8 objects of two classes: filled squares and rings.
pub fn objects(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    for (prefix, n) in [("train", 30), ("t10k", 10)] {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let class = i % 2;
            let level = 150 + (i * 7 % 100) as u8;
            for r in 0..8 {
                for c in 0..8 {
                    let edge = r == 0 || c == 0 || r == 7 || c == 7;
                    pixels.push(if class == 0 || edge { level } else { 0 });
                }
            }
            labels.push(class as u8);
        }
        let write = |kind: &str, rank: usize, dims: Vec<usize>, data: Vec<u8>| {
            let bytes = encode_idx(&IdxArray { dims, data });
            std::fs::write(root.join(format!("{prefix}-{kind}-idx{rank}-ubyte")), bytes).unwrap();
        };
        write("images", 3, vec![n, 8, 8], pixels);
        write("labels", 1, vec![n], labels);
    }
    std::fs::write(root.join("classes.txt"), "square\nring\n").unwrap();
}

/// One moving object per video on a 24x24 canvas, 8 frames.
pub fn moving(root: &Path, train: usize, test: usize) -> PathBuf {
    objects(&root.join("objects"));
    let out = root.join("moving");
    let (ok, json, err) = run(&[
        "data",
        "moving-mnist",
        "--digits",
        root.join("objects").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--train",
        &train.to_string(),
        "--test",
        &test.to_string(),
        "--frames",
        "8",
        "--canvas",
        "24",
        "--objects",
        "1",
        "--step",
        "0.2",
        "--json",
    ]);
    assert!(ok, "{err}");
    assert_eq!(json["train"], train);
    out
}

/// `--set`s that make every audio method tiny (epochs and batch size left to the test).
pub const TINY_AUDIO: &[&str] = &[
    "data.clip_seconds=0.5",
    "data.crop_frames=32",
    "backbone.width=8",
    "backbone.hidden=32",
    "backbone.dim=32",
    "backbone.depth=1",
    "backbone.heads=2",
    "projection.hidden=32",
    "projection.output=16",
    "prediction.hidden=32",
    "prediction.output=16",
    "cola.dim=32",
    "mae.decoder_dim=16",
    "mae.decoder_heads=2",
    "mae.decoder_depth=1",
];

/// `--set`s that make every video method tiny (epochs and batch size left to the test).
pub const TINY_VIDEO: &[&str] = &[
    "data.clip_frames=4",
    "data.train_limit=0",
    "backbone.patch_size=4",
    "backbone.width=8",
    "backbone.dim=16",
    "backbone.depth=1",
    "backbone.heads=2",
    "projection.hidden=32",
    "mae.decoder_dim=16",
    "mae.decoder_heads=2",
    "mae.decoder_depth=1",
    "next_frame.input=4",
    "next_frame.output=4",
    "next_frame.hidden=4",
    "next_frame.translator=16",
];

/// The model tensors of two runs are equal bit for bit.
pub fn same_weights(a: &Path, b: &Path, what: &str) {
    let a = Checkpoint::load(&a.join("checkpoint.safetensors")).unwrap();
    let b = Checkpoint::load(&b.join("checkpoint.safetensors")).unwrap();
    assert_eq!(a.model.len(), b.model.len());
    for (x, y) in a.model.iter().zip(&b.model) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.values, y.values, "{} differs: {what}", x.name);
    }
}
