//! What the command-line tests share: running the binary, and a tiny pretraining run.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

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
