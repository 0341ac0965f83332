//! Fault injection on the real binary: `kill -9` at moments spread over a tiny image pretraining
//! and a tiny masked-language-model run (checkpoints every step, so many kills land during
//! checkpoint writes), then `--resume` until it finishes; every trial must end with the weights
//! and optimizer state of the uninterrupted run, bit for bit. A word2vec run killed while
//! replacing its vectors leaves the previous file whole. Two runs started on one folder: the
//! second is refused.

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

/// A tiny RoBERTa-style MLM run on `corpus` into `out`, checkpointing every step.
fn mlm(corpus: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["mlm", "train", "--corpus"])
        .arg(corpus)
        .args(["--set", "steps=12", "--set", "batch_size=8"])
        .args([
            "--set",
            "tokenizer.family=roberta",
            "--set",
            "tokenizer.vocab_size=300",
        ])
        .args([
            "--set",
            "model.size=tiny",
            "--set",
            "data.mode=line_by_line",
        ])
        .args(["--set", "data.max_len=24", "--set", "data.holdout_every=10"])
        .args([
            "--set",
            "optimizer.warmup_steps=2",
            "--set",
            "eval.max_sequences=0",
        ])
        .args(["--set", "train.checkpoint_every=1"])
        .args(["--set", &format!("train.out_dir=\"{}\"", out.display())])
        .args(["--json", "--threads", "1"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Run `make` (with `--resume` while a checkpoint exists; afresh when the kill came before the
/// first one) until the run is finished.
fn run_to_end(out: &Path, make: &dyn Fn(&[&str]) -> Command) {
    let has_ckpt = out.join("checkpoint.safetensors").is_file();
    let flag: &[&str] = if has_ckpt { &["--resume"] } else { &[] };
    let result = make(flag).output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success() || stderr.contains("is finished"),
        "resume failed: {stderr}"
    );
}

/// Kill `trials` runs made by `make(out, flags)` at moments spread over the reference run, resume
/// each to the end and compare with the reference, bit for bit. Returns the identical count.
fn kill_trials(name: &str, trials: usize, make: &dyn Fn(&Path, &[&str]) -> Command) -> usize {
    let reference = dir(&format!("{name}-reference"));
    let started = Instant::now();
    let done = make(&reference, &[]).output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let wall = started.elapsed();
    let want = Checkpoint::load(&reference).unwrap();
    let mut identical = 0;
    for t in 0..trials {
        let out = dir(&format!("{name}-trial{t}"));
        let mut child = make(&out, &[]).spawn().unwrap();
        // Kills spread over the run, from start-up to the last checkpoint.
        std::thread::sleep(wall.mul_f64((t as f64 + 0.5) / trials as f64));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        run_to_end(&out, &|flags| make(&out, flags));
        let got = Checkpoint::load(&out).unwrap();
        assert_eq!(got.meta["step"], want.meta["step"], "{name} trial {t}");
        assert!(
            got.model == want.model,
            "{name} trial {t}: weights differ from the uninterrupted run"
        );
        assert!(
            got.optimizer == want.optimizer,
            "{name} trial {t}: optimizer state differs"
        );
        identical += 1;
        let _ = std::fs::remove_dir_all(&out);
    }
    eprintln!(
        "{name}: {identical} of {trials} kill -9 trials resumed bit-identical (run of {wall:?})"
    );
    let _ = std::fs::remove_dir_all(&reference);
    identical
}

#[test]
fn kill_9_at_any_moment_then_resume_gives_the_uninterrupted_weights() {
    assert_eq!(
        kill_trials("pretrain", 6, &|out, flags| pretrain(out, 2, flags)),
        6
    );
}

#[test]
fn kill_9_during_mlm_training_then_resume_gives_the_uninterrupted_weights() {
    let corpus_dir = dir("mlm-corpus");
    std::fs::create_dir_all(&corpus_dir).unwrap();
    let corpus = corpus_dir.join("corpus.txt");
    let words = ["fox", "dog", "cat", "yak", "king", "queen"];
    let verbs = ["chases", "greets", "helps", "watches"];
    let lines: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "the {} {} the {} today",
                words[i % 6],
                verbs[(i / 6) % 4],
                words[(i / 2) % 6]
            )
        })
        .collect();
    std::fs::write(&corpus, lines.join("\n")).unwrap();
    assert_eq!(
        kill_trials("mlm", 4, &|out, flags| mlm(&corpus, out, flags)),
        4
    );
    let _ = std::fs::remove_dir_all(&corpus_dir);
}

#[test]
fn a_word2vec_run_killed_while_writing_leaves_the_previous_vectors_whole() {
    let work = dir("w2v");
    std::fs::create_dir_all(&work).unwrap();
    let corpus = work.join("corpus.txt");
    let words: Vec<String> = (0..400).map(|i| format!("w{}", (i * 7919) % 97)).collect();
    std::fs::write(&corpus, words.join(" ").repeat(50)).unwrap();
    let out = work.join("vectors.txt");
    let train = |dim: &str| {
        let mut c = Command::new(BIN);
        c.args(["word2vec", "train", "--corpus"])
            .arg(&corpus)
            .arg("--out")
            .arg(&out)
            .args([
                "--format",
                "text",
                "--dim",
                dim,
                "--min-count",
                "1",
                "--epochs",
                "1",
            ])
            .args(["--threads", "1", "--no-progress"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let first = train("8").output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let before = std::fs::read(&out).unwrap();
    let started = Instant::now();
    assert!(train("64").output().unwrap().status.success());
    let wall = started.elapsed();
    let after = std::fs::read(&out).unwrap();
    std::fs::write(&out, &before).unwrap();
    for t in 0..6 {
        let mut child = train("64").spawn().unwrap();
        std::thread::sleep(wall.mul_f64((t as f64 + 0.5) / 6.0));
        let _ = child.kill();
        let _ = child.wait();
        let now = std::fs::read(&out).unwrap();
        assert!(
            now == before || now == after,
            "trial {t}: the vectors file is neither the old nor the new one"
        );
        std::fs::write(&out, &before).unwrap();
    }
    let _ = std::fs::remove_dir_all(&work);
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
