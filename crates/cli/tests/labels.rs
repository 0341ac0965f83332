//! `eval labels --baseline-from` on the real binary: a study of a BYOL checkpoint takes the
//! supervised-from-scratch runs of a SimCLR study of the same architecture, data and settings
//! instead of training them again, and refuses, naming the setting, when one differs.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_pretext");

fn run(args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn pretrain(out: &Path, method: &str) {
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
