//! Fault injection on the real binary: `kill -9` at moments spread over a tiny pretraining run
//! (checkpoints every step, so many kills land during checkpoint writes), then `--resume` until
//! it finishes; every trial must end with the weights and optimizer state of the uninterrupted
//! run, bit for bit. And two runs started on one folder: the second is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pretext::core::checkpoint::Checkpoint;

const BIN: &str = env!("CARGO_BIN_EXE_pretext");

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pretext-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A tiny SimCLR run into `out`, checkpointing every step.
fn pretrain(out: &Path, epochs: usize, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["pretrain", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.toml"))
        .args(["--set", &format!("epochs={epochs}")])
        .args(["--set", "data.train_limit=256", "--set", "batch_size=32"])
        .args(["--set", "backbone.width=8", "--set", "projection.hidden=32"])
        .args([
            "--set",
            "projection.output=16",
            "--set",
            "train.checkpoint_every=1",
        ])
        .args(["--set", &format!("train.out_dir=\"{}\"", out.display())])
        .args(["--json", "--threads", "1"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn run_to_end(out: &Path) {
    // Resume while a checkpoint exists; start afresh when the kill came before the first one.
    let has_ckpt = out.join("checkpoint.safetensors").is_file();
    let flag: &[&str] = if has_ckpt { &["--resume"] } else { &[] };
    let result = pretrain(out, 2, flag).output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success() || stderr.contains("is finished"),
        "resume failed: {stderr}"
    );
}

#[test]
fn kill_9_at_any_moment_then_resume_gives_the_uninterrupted_weights() {
    let reference = dir("reference");
    let started = Instant::now();
    let done = pretrain(&reference, 2, &[]).output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let wall = started.elapsed();
    let want = Checkpoint::load(&reference).unwrap();

    let trials = 6;
    let mut identical = 0;
    for t in 0..trials {
        let out = dir(&format!("trial{t}"));
        let mut child = pretrain(&out, 2, &[]).spawn().unwrap();
        // Kills spread over the run, from start-up to the last checkpoint.
        std::thread::sleep(wall.mul_f64((t as f64 + 0.5) / trials as f64));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        run_to_end(&out);
        let got = Checkpoint::load(&out).unwrap();
        assert_eq!(got.meta["step"], want.meta["step"], "trial {t}");
        assert!(
            got.model == want.model,
            "trial {t}: weights differ from the uninterrupted run"
        );
        assert!(
            got.optimizer == want.optimizer,
            "trial {t}: optimizer state differs"
        );
        identical += 1;
        let _ = std::fs::remove_dir_all(&out);
    }
    eprintln!("{identical} of {trials} kill -9 trials resumed bit-identical (run of {wall:?})");
    let _ = std::fs::remove_dir_all(&reference);
}

#[test]
fn a_second_run_on_a_folder_in_use_is_refused() {
    let out = dir("concurrent");
    let mut first = pretrain(&out, 6, &[]).spawn().unwrap();
    let lock = out.join(".pretext.lock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.contains("pid")) {
        assert!(
            Instant::now() < deadline,
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = pretrain(&out, 6, &["--overwrite"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        stderr.contains("in use by another pretext process") && stderr.contains("pid"),
        "{stderr}"
    );
    let status = first.wait().unwrap();
    assert!(status.success(), "the first run was disturbed");
    let _ = std::fs::remove_dir_all(&out);
}
