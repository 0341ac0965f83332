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
        .args([
            "--set",
            &format!(
                "data.cache_dir=\"{}\"",
                corpus.with_file_name("token-cache").display()
            ),
        ])
        .args(["--set", &format!("train.out_dir=\"{}\"", out.display())])
        .args(["--json", "--threads", "1"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// A small word2vec corpus in `work`.
fn word2vec_corpus(work: &Path) -> PathBuf {
    std::fs::create_dir_all(work).unwrap();
    let corpus = work.join("corpus.txt");
    let words: Vec<String> = (0..400).map(|i| format!("w{}", (i * 7919) % 97)).collect();
    std::fs::write(&corpus, words.join(" ").repeat(50)).unwrap();
    corpus
}

/// One word2vec epoch on `corpus`, vectors of `dim` written to `out` as text.
fn word2vec(corpus: &Path, out: &Path, dim: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args(["word2vec", "train", "--corpus"])
        .arg(corpus)
        .arg("--out")
        .arg(out)
        .args(["--format", "text", "--dim", dim, "--min-count", "1"])
        .args(["--epochs", "1", "--threads", "1", "--no-progress"])
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
    let corpus = word2vec_corpus(&work);
    let out = work.join("vectors.txt");
    let train = |dim: &str| word2vec(&corpus, &out, dim);
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
fn ctrl_c_saves_the_step_and_says_how_to_resume() {
    let out = dir("sigint");
    // No periodic checkpoints: what resume reads is the interrupt's own save.
    let run = |extra: &[&str]| {
        let mut args = vec!["--set", "train.checkpoint_every=0"];
        args.extend(extra);
        pretrain(&out, 20, &args)
    };
    let child = run(&[]).spawn().unwrap();
    let metrics = out.join("metrics.jsonl");
    let started = Instant::now();
    let steps = || {
        std::fs::read_to_string(&metrics)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    while steps() < 3 {
        assert!(started.elapsed().as_secs() < 300, "the run never got going");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let stopped = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert!(!stopped.status.success(), "{err}");
    assert!(
        err.contains("interrupted at step") && err.contains("--resume continues from here"),
        "{err}"
    );
    let resumed = run(&["--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{err}");
    let _ = std::fs::remove_dir_all(&out);
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

/// A small tmpfs mounted for one test and unmounted when dropped, even after a failed assertion.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mount `size` (e.g. "4m") at a fresh folder, or `None` where mounting is not allowed
    /// (not root, or a container without the capability).
    fn mount(name: &str, size: &str) -> Option<Tmpfs> {
        let at = dir(name);
        std::fs::create_dir_all(&at).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            Some(Tmpfs(at))
        } else {
            let _ = std::fs::remove_dir(&at);
            None
        }
    }

    /// Fill all but `leave` bytes with a file that `free` removes again.
    fn fill(&self, leave: u64) {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut filler = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while filler.write_all(&block).is_ok() {}
        // The last partial page too.
        while filler.write_all(&[0]).is_ok() {}
        let len = filler.metadata().unwrap().len();
        filler.set_len(len.saturating_sub(leave)).unwrap();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }

    fn remount(&self, mode: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {mode} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Every file in `dir` with its bytes, temporaries included (so a leftover one is caught).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.ends_with(".pretext.lock"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// A command that must fail cleanly: non-zero exit, no panic, a message containing `expect`.
fn fails_cleanly(mut command: Command, expect: &str, what: &str) {
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what}: succeeded on a full or read-only disk"
    );
    assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
    assert!(
        stderr.contains(expect),
        "{what}: no '{expect}' in: {stderr}"
    );
    eprintln!("{what}: {}", stderr.lines().last().unwrap_or_default());
}

#[test]
fn a_full_disk_or_a_read_only_folder_fails_cleanly_and_loses_nothing() {
    let Some(disk) = Tmpfs::mount("tmpfs", "4m") else {
        eprintln!(
            "skipped: mounting a tmpfs is not allowed here (needs root); the full-disk and \
             read-only cases did not run"
        );
        return;
    };
    // A run stopped half-way (train.max_steps), its report, and a vectors file, all on the
    // small disk; the reference is the same run uninterrupted, elsewhere.
    let run = disk.0.join("run");
    let reference = dir("disk-reference");
    let half: &[&str] = &["--set", "train.max_steps=8"];
    assert!(pretrain(&reference, 2, &[]).status().unwrap().success());
    assert!(pretrain(&run, 2, half).status().unwrap().success());
    let report = |run: &Path| {
        let mut c = Command::new(BIN);
        c.arg("report")
            .arg(run)
            .args(["--set", "data.test_limit=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    assert!(report(&run).status().unwrap().success());
    let corpus = word2vec_corpus(&dir("disk-corpus"));
    let vectors = disk.0.join("vectors.txt");
    assert!(word2vec(&corpus, &vectors, "8").status().unwrap().success());
    let run_before = snapshot(&run);
    let vectors_before = std::fs::read(&vectors).unwrap();

    // Full disk: each command fails naming the problem, and every earlier output is whole. A
    // resumed run's metrics past its checkpoint are dropped on the next resume; everything
    // else must be byte for byte as before.
    let without_metrics = |s: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        s.into_iter()
            .filter(|(n, _)| n != "metrics.jsonl")
            .collect()
    };
    let full = "No space left on device";
    // Room for a step's metrics but not for a checkpoint: the write of the next one fails.
    disk.fill(40 << 10);
    fails_cleanly(
        pretrain(&run, 2, &["--resume"]),
        "cannot write",
        "pretrain --resume, the disk filling up",
    );
    assert_eq!(
        without_metrics(snapshot(&run)),
        without_metrics(run_before.clone()),
        "the run folder changed when a checkpoint could not be written"
    );
    disk.free();
    disk.fill(0);
    fails_cleanly(pretrain(&run, 2, &["--resume"]), full, "pretrain --resume");
    assert_eq!(
        without_metrics(snapshot(&run)),
        without_metrics(run_before.clone()),
        "the run folder changed on a full disk"
    );
    fails_cleanly(report(&run), full, "report");
    fails_cleanly(word2vec(&corpus, &vectors, "64"), full, "word2vec train");
    assert_eq!(std::fs::read(&vectors).unwrap(), vectors_before);
    assert_eq!(
        without_metrics(snapshot(&run)),
        without_metrics(run_before.clone())
    );

    // Read-only: refused before anything is touched.
    disk.free();
    disk.remount("ro");
    fails_cleanly(
        pretrain(&run, 2, &["--resume"]),
        &run.display().to_string(),
        "pretrain --resume on a read-only folder",
    );
    fails_cleanly(report(&run), "Read-only file system", "report (read-only)");
    fails_cleanly(
        word2vec(&corpus, &vectors, "64"),
        "Read-only file system",
        "word2vec train (read-only)",
    );
    assert_eq!(std::fs::read(&vectors).unwrap(), vectors_before);

    // With space again, the interrupted run resumes to the uninterrupted run's weights.
    disk.remount("rw");
    assert!(pretrain(&run, 2, &["--resume"]).status().unwrap().success());
    let (got, want) = (
        Checkpoint::load(&run).unwrap(),
        Checkpoint::load(&reference).unwrap(),
    );
    assert!(got.model == want.model && got.optimizer == want.optimizer);
    let _ = std::fs::remove_dir_all(&reference);
    let _ = std::fs::remove_dir_all(corpus.parent().unwrap());
}
