//! `eval labels` on the real binary. `--baseline-from`: a study of a BYOL checkpoint takes the
//! supervised-from-scratch runs of a SimCLR study of the same architecture, data and settings
//! instead of training them again, and refuses, naming the setting, when one differs.

use std::path::{Path, PathBuf};

mod common;
use common::{pretrain, run};

/// `eval labels` on `run` at half of 300 labelled images, one seed, tiny budgets.
fn study(run_dir: &Path, extra: &[&str]) -> (bool, serde_json::Value, String) {
    let mut args = vec!["eval", "labels", "--checkpoint", run_dir.to_str().unwrap()];
    args.extend(["--fractions", "0.5", "--seeds", "1", "--json"]);
    for set in [
        "data.train_limit=300",
        "data.test_limit=100",
        "eval.finetune.epochs=1",
        "eval.finetune.min_steps=10",
        "eval.linear_epochs=2",
    ] {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    run(&args)
}

fn scratch(study: &serde_json::Value) -> serde_json::Value {
    study["study"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["arm"] == "scratch")
        .cloned()
        .unwrap()
}

#[test]
fn a_study_takes_another_studys_supervised_runs_and_refuses_when_a_setting_differs() {
    let root: PathBuf =
        std::env::temp_dir().join(format!("pretext-labels-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (simclr, byol) = (root.join("simclr"), root.join("byol"));
    pretrain(&simclr, "simclr");
    pretrain(&byol, "byol");

    let (ok, lender, err) = study(&simclr, &[]);
    assert!(ok, "{err}");
    let lent = scratch(&lender);

    let from = simclr.to_str().unwrap();
    let (ok, borrower, err) = study(&byol, &["--baseline-from", from]);
    assert!(ok, "{err}");
    assert!(err.contains("took 2 from-scratch run(s)"), "{err}");
    let taken = scratch(&borrower);
    assert_eq!(taken["accuracy"], lent["accuracy"]);
    let runs = |s: &serde_json::Value| s["study"]["runs"].as_array().unwrap().clone();
    let arms: Vec<String> = runs(&borrower)
        .iter()
        .map(|r| r["arm"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        arms,
        [
            "knn",
            "linear",
            "finetune",
            "scratch",
            "distill",
            "fixmatch",
            "fixmatch_scratch"
        ],
        "every arm, in order"
    );
    assert!(taken["detail"]["from"].as_str().unwrap().contains("simclr"));
    // The arms that read the checkpoint ran on BYOL's weights.
    let finetune = |s: &serde_json::Value| {
        s["study"]["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["arm"] == "finetune")
            .map(|r| r["accuracy"].clone())
    };
    assert!(finetune(&borrower).is_some());

    // Another fine-tuning setting would train another baseline: refused, naming it.
    let (ok, _, err) = study(
        &byol,
        &["--baseline-from", from, "--set", "eval.finetune.lr=0.01"],
    );
    assert!(!ok);
    assert!(
        err.contains("--baseline-from") && err.contains("eval: here") && err.contains("there"),
        "{err}"
    );
    // A run with no study to lend.
    let (ok, _, err) = study(
        &simclr,
        &["--baseline-from", byol.join("none").to_str().unwrap()],
    );
    assert!(!ok && err.contains("--baseline-from"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

/// A grey 28x28 set in the MNIST layout: 300 training and 100 test images of ten classes,
/// pixels from a fixed pseudo-random stream.
fn write_idx_set(dir: &Path, train_labels: Vec<u8>) {
    let mut state = 0x9E37_79B9u32;
    let mut pixels = |n: usize| -> Vec<u8> {
        (0..n * 28 * 28)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            })
            .collect()
    };
    let train = (pixels(train_labels.len()), train_labels);
    let test = (pixels(100), (0..100).map(|i| (i % 10) as u8).collect());
    let classes: Vec<String> = (0..10).map(|c| c.to_string()).collect();
    pretext::vision::data::idx::write_mnist_layout(dir, (28, 28), &train, &test, &classes).unwrap();
}

#[test]
fn a_study_on_data_whose_contents_changed_reuses_none_of_its_runs() {
    let root: PathBuf =
        std::env::temp_dir().join(format!("pretext-labels-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (run_dir, data) = (root.join("run"), root.join("data"));
    pretrain(&run_dir, "simclr");
    let mut labels: Vec<u8> = (0..300).map(|i| (i % 10) as u8).collect();
    write_idx_set(&data, labels.clone());
    let args = ["--data", data.to_str().unwrap(), "--arms", "knn,linear"];
    let (ok, _, err) = study(&run_dir, &args);
    assert!(ok, "{err}");
    let (ok, _, err) = study(&run_dir, &args);
    assert!(
        ok && err.contains("2 finished run(s) of this study are reused"),
        "{err}"
    );
    // One label byte changed: same folder, same sizes, same description; another study.
    labels[7] = (labels[7] + 1) % 10;
    write_idx_set(&data, labels);
    let (ok, _, err) = study(&run_dir, &args);
    assert!(ok, "{err}");
    assert!(
        err.contains("belong to another study") && !err.contains("are reused"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_text_study_with_other_columns_reuses_none_of_its_runs() {
    let root: PathBuf =
        std::env::temp_dir().join(format!("pretext-labels-columns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    // Column 1 says animal or person, column 0 says odd or even row: two labellings of the
    // same texts.
    let words = [
        ("fox", "animal"),
        ("yak", "animal"),
        ("king", "person"),
        ("queen", "person"),
    ];
    let mut tsv = String::new();
    for i in 0..80 {
        let (word, topic) = words[i % 4];
        let parity = if i % 2 == 0 { "even" } else { "odd" };
        tsv.push_str(&format!("{parity}\t{topic}\tthe {word} walks\n"));
    }
    let data = root.join("texts.tsv");
    std::fs::write(&data, tsv).unwrap();
    let vectors = root.join("vectors.txt");
    std::fs::write(&vectors, "4 2\nfox 1 0\nyak 1 0\nking 0 1\nqueen 0 1\n").unwrap();
    let study = |extra: &[&str]| {
        let mut args = vec!["eval", "labels", "--vectors", vectors.to_str().unwrap()];
        args.extend([
            "--data",
            data.to_str().unwrap(),
            "--fractions",
            "1",
            "--seeds",
            "1",
        ]);
        args.extend(["--json"]);
        args.extend(extra);
        run(&args)
    };
    let (ok, _, err) = study(&[]);
    assert!(ok, "{err}");
    let (ok, _, err) = study(&[]);
    assert!(ok && err.contains("are reused"), "{err}");
    let (ok, _, err) = study(&["--label-column", "0", "--text-column", "2"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("belong to another study") && !err.contains("are reused"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
