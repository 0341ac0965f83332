//! Settings on the real binary: what `--set` changes is applied (or refused) by every command
//! that reads a checkpoint, and what is printed is what was used; configs that cannot work
//! are refused before any work, naming the key.

use std::path::PathBuf;

mod common;
use common::{pretrain, run};

fn root(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pretext-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn eval_prints_the_k_it_used_embed_applies_set_and_other_sizes_are_noted() {
    let root = root("settings");
    let run_dir = root.join("run");
    pretrain(&run_dir, "simclr");
    let ckpt = run_dir.to_str().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["eval", "knn", "--checkpoint", ckpt, "--no-baseline"])
        .args(["--set", "eval.knn_k=5", "--set", "data.train_limit=200"])
        .args(["--set", "data.test_limit=50"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("kNN (k=5)"), "{stdout}");

    let npy = root.join("features.npy");
    let embed = |set: &str| {
        run(&[
            "embed",
            "--checkpoint",
            ckpt,
            "--out",
            npy.to_str().unwrap(),
            "--set",
            set,
            "--json",
        ])
    };
    let (ok, json, err) = embed("data.train_limit=30");
    assert!(ok, "{err}");
    assert_eq!(json["rows"], 30, "{json}");
    let (ok, _, err) = embed("data.no_such_key=1");
    assert!(!ok && err.contains("no_such_key"), "{err}");

    // Images of another size than pretraining's: evaluated as they are, and said so, with the
    // setting that resizes them as in training (which silences the note).
    let small = root.join("16x16");
    std::fs::create_dir_all(&small).unwrap();
    for (split, n) in [("train", 40u32), ("t10k", 20)] {
        let mut images = [0u8, 0, 8, 3].to_vec();
        for v in [n, 16, 16] {
            images.extend(v.to_be_bytes());
        }
        images.extend((0..n * 256).map(|i| (i * 7 % 251) as u8));
        let mut labels = [0u8, 0, 8, 1].to_vec();
        labels.extend(n.to_be_bytes());
        labels.extend((0..n).map(|i| (i % 2) as u8));
        std::fs::write(small.join(format!("{split}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(small.join(format!("{split}-labels-idx1-ubyte")), labels).unwrap();
    }
    let knn = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "knn",
            "--checkpoint",
            ckpt,
            "--no-baseline",
            "--data",
        ];
        args.push(small.to_str().unwrap());
        args.extend(extra);
        run(&args)
    };
    let (ok, _, err) = knn(&[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("was pretrained on 28x28 images; these are 16x16")
            && err.contains("data.image_size=[28,28]"),
        "{err}"
    );
    let (ok, _, err) = knn(&["--set", "data.image_size=[28,28]"]);
    assert!(ok && !err.contains("was pretrained on"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn masked_models_refuse_a_patch_grid_with_nothing_to_hide() {
    let root = root("masking");
    for (method, config) in [("mae", "mae_fmnist.toml"), ("simmim", "simmim_fmnist.toml")] {
        let config = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs")
            .join(config);
        let out = format!("train.out_dir=\"{}\"", root.join(method).display());
        let (ok, _, err) = run(&[
            "pretrain",
            "--config",
            config.to_str().unwrap(),
            "--set",
            "backbone.patch_size=28",
            "--set",
            "data.train_limit=64",
            "--set",
            "batch_size=32",
            "--set",
            &out,
        ]);
        assert!(!ok, "{method}");
        assert!(
            err.contains("backbone.patch_size = 28") && err.contains(method),
            "{err}"
        );
        assert!(!root.join(method).join("checkpoint.safetensors").exists());
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn flags_that_cannot_work_are_refused_before_any_work() {
    let root = root("before-work");
    // The corpus does not exist: the flag is checked first.
    let missing = root.join("no-corpus.txt");
    let out = root.join("v.txt");
    let (ok, _, err) = run(&[
        "word2vec",
        "train",
        "--corpus",
        missing.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dim",
        "0",
    ]);
    assert!(!ok && err.contains("dim must be at least 1"), "{err}");
    // fastText: n-gram lengths that make no n-gram, an output over the corpus, --set.
    let (ok, _, err) = run(&[
        "fasttext",
        "train",
        "--corpus",
        missing.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--minn",
        "4",
        "--maxn",
        "3",
    ]);
    assert!(!ok && err.contains("minn <= maxn"), "{err}");
    let corpus = root.join("corpus.txt");
    std::fs::write(&corpus, "a b c\n").unwrap();
    let (ok, _, err) = run(&[
        "fasttext",
        "train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--vec",
        corpus.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("--vec"), "{err}");
    assert_eq!(std::fs::read_to_string(&corpus).unwrap(), "a b c\n");
    let (ok, _, err) = run(&["--set", "a=1", "fasttext", "similar", "--model", "m", "w"]);
    assert!(
        !ok && err.contains("fasttext takes its settings as flags"),
        "{err}"
    );
    // A page written into a folder, a PNG under a JPEG name: refused before any run is read.
    let none = root.join("no-run");
    let (ok, _, err) = run(&[
        "report",
        none.to_str().unwrap(),
        "--out",
        root.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("a folder; give the page's file name"),
        "{err}"
    );
    let jpg = root.join("grid.jpg");
    let (ok, _, err) = run(&[
        "reconstruct",
        "--checkpoint",
        none.to_str().unwrap(),
        "--out",
        jpg.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("writes a PNG"), "{err}");
    // A warm-up longer than the run never reaches the learning rate: said, not silent.
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.toml");
    let out = format!("train.out_dir=\"{}\"", root.join("warm").display());
    let (ok, _, err) = run(&[
        "pretrain",
        "--config",
        config.to_str().unwrap(),
        "--set",
        "epochs=1",
        "--set",
        "optimizer.warmup_epochs=2.0",
        "--set",
        "batch_size=32",
        "--set",
        "data.train_limit=256",
        "--set",
        &out,
    ]);
    assert!(
        ok && err.contains("warning: the learning-rate warm-up (16 steps")
            && err.contains("longer than the run (8 steps)"),
        "{err}"
    );
    // In-process replicas: image pretraining does not cut its batches into shares yet.
    let (ok, _, err) = run(&[
        "pretrain",
        "--config",
        config.to_str().unwrap(),
        "--set",
        "train.replicas=2",
        "--set",
        "data.train_limit=256",
        "--set",
        &out,
    ]);
    assert!(
        !ok && err.contains("train.replicas = 2") && err.contains("trains one replica"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// `bench peak` reports the measured rate and the way it was measured, and refuses settings it
/// has no use for (it runs no model).
#[test]
fn bench_peak_reports_a_measured_rate_and_refuses_model_settings() {
    let (ok, json, err) = run(&["bench", "peak", "--threads", "1", "--json"]);
    assert!(ok, "{err}");
    let peak = &json["peak"];
    assert!(peak["gflops"].as_f64().is_some_and(|g| g > 0.0), "{json}");
    assert!(
        peak["how"]
            .as_str()
            .is_some_and(|h| h.contains("1 thread of")),
        "{json}"
    );
    let (ok, _, err) = run(&["bench", "peak", "--set", "epochs=1"]);
    assert!(
        !ok && err.contains("bench peak takes no --config, --set or --seed"),
        "{err}"
    );
}
