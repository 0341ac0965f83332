//! Data-parallel training under `mpirun` (built with `--features mpi`; `.ci/run` installs Open
//! MPI): two ranks, each on half of every global batch, must end with the weights one process
//! trains on the whole batches; a two-rank run stopped and resumed, or with a rank killed and
//! resumed, must end bit for bit where the uninterrupted one does; a rank that stops answering
//! ends the job after `train.collective_timeout`; a checkpoint of two ranks is not resumed on
//! one.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::BIN;
use pretext::core::checkpoint::Checkpoint;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pretext-mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny RoBERTa-style MLM run on `ranks` processes on this machine, line by line and
/// without dropout: each batch is padded to its longest line, so a rank's half may be shorter
/// than one process's whole batch, and dropout's counter (which follows the tensor's layout)
/// would draw other masks. Packed blocks with dropout are checked on their own.
fn mlm(ranks: usize, work: &Path, out: &str, extra: &[&str]) -> Command {
    let np = ranks.to_string();
    let mpirun: &[&str] = if ranks == 1 {
        &[]
    } else {
        &["--oversubscribe", "-np", &np]
    };
    mlm_launched(mpirun, work, out, extra)
}

/// [`mlm`] started by `mpirun` with `mpirun_args` (none: one process without `mpirun`).
fn mlm_launched(mpirun_args: &[&str], work: &Path, out: &str, extra: &[&str]) -> Command {
    let mut c = if mpirun_args.is_empty() {
        Command::new(BIN)
    } else {
        let mut c = Command::new("mpirun");
        c.arg("--allow-run-as-root").args(mpirun_args).arg(BIN);
        c
    };
    let quoted = |key: &str, path: PathBuf| format!("{key}=\"{}\"", path.display());
    c.args(["mlm", "train", "--corpus"])
        .arg(work.join("corpus.txt"))
        .args(["--threads", "1", "--json"]);
    for set in [
        "steps=6",
        "batch_size=8",
        "tokenizer.family=roberta",
        &quoted("tokenizer.path", work.join("tokenizer.json")),
        "model.size=tiny",
        "model.dropout=0.0",
        "data.mode=line_by_line",
        "data.max_len=24",
        "data.holdout_every=10",
        "eval.max_sequences=0",
        "optimizer.warmup_steps=2",
        &quoted("train.out_dir", work.join(out)),
        &quoted("data.cache_dir", work.join("cache")),
    ] {
        c.args(["--set", set]);
    }
    c.args(extra);
    c
}

fn succeeds(mut c: Command) -> String {
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{c:?}\n{stderr}");
    stderr
}

/// A folder with a small corpus and a tokenizer trained on it, which every run is given: a
/// tokenizer trained in each run could number its pieces differently.
fn prepared(name: &str) -> PathBuf {
    let work = dir(name);
    let words = ["fox", "dog", "cat", "yak", "king", "queen"];
    let verbs = ["chases", "greets", "helps", "watches"];
    let lines: Vec<String> = (0..240)
        .map(|i| {
            let (a, b) = (words[i % 6], words[(i / 2) % 6]);
            format!("the {a} {} the {b} today", verbs[(i / 6) % 4])
        })
        .collect();
    std::fs::write(work.join("corpus.txt"), lines.join("\n")).unwrap();
    let mut tokenizer = Command::new(BIN);
    tokenizer
        .args([
            "tokenizer",
            "train",
            "--family",
            "roberta",
            "--vocab-size",
            "300",
        ])
        .arg("--corpus")
        .arg(work.join("corpus.txt"))
        .arg("--out")
        .arg(work.join("tokenizer.json"));
    succeeds(tokenizer);
    work
}

#[test]
fn two_ranks_train_what_one_process_trains_on_the_same_global_batches() {
    let work = prepared("mlm");

    succeeds(mlm(1, &work, "one", &[]));
    succeeds(mlm(2, &work, "two", &[]));
    let one = Checkpoint::load(&work.join("one")).unwrap();
    let two = Checkpoint::load(&work.join("two")).unwrap();
    assert_eq!(two.meta["ranks"], 2);
    assert_eq!(one.model.len(), two.model.len());
    let mut worst = 0f32;
    for (a, b) in one.model.iter().zip(&two.model) {
        assert_eq!((&a.name, &a.shape), (&b.name, &b.shape));
        for (x, y) in a.values.iter().zip(&b.values) {
            worst = worst.max((x - y).abs());
        }
    }
    eprintln!("2 ranks against 1 process: weights differ by at most {worst:e}");
    assert!(
        worst < 1e-5,
        "2 ranks and 1 process differ by up to {worst}"
    );
    assert_eq!(
        (&one.meta["step"], &two.meta["step"]),
        (&6.into(), &6.into())
    );

    // Packed blocks all have the same length, so each rank's tensors are its rows of one
    // process's: with dropout on, every rank drops what one process drops in those rows.
    let packed = [
        "--set",
        "data.mode=\"packed\"",
        "--set",
        "model.dropout=0.1",
    ];
    two_ranks_match_one(&work, "packed", |ranks, out| {
        let name = out.file_name().and_then(|n| n.to_str()).unwrap();
        mlm(ranks, &work, name, &packed)
    });

    // Over TCP, as ranks on two machines talk (here on the loopback interface, which Open MPI
    // leaves out unless told), from a hostfile: the shared-memory run's weights, bit for bit.
    std::fs::write(work.join("hosts"), "localhost slots=2\n").unwrap();
    let hosts = work.join("hosts").display().to_string();
    let tcp = [
        "--hostfile",
        &hosts,
        "--mca",
        "btl",
        "tcp,self",
        "--mca",
        "btl_tcp_if_include",
        "lo",
        "-np",
        "2",
    ];
    succeeds(mlm_launched(&tcp, &work, "tcp", &[]));
    let over_tcp = Checkpoint::load(&work.join("tcp")).unwrap();
    assert!(over_tcp.model == two.model, "over TCP the weights differ");

    // Gradients all-reduced in buckets of 250 values instead of a million: the same sums.
    let small = ["--set", "train.allreduce_bucket_mb=0.001"];
    succeeds(mlm(2, &work, "buckets", &small));
    let buckets = Checkpoint::load(&work.join("buckets")).unwrap();
    assert!(
        buckets.model == two.model,
        "small buckets change the weights"
    );

    // Stopped at step 3 and resumed on 2 ranks: the uninterrupted 2-rank run, bit for bit.
    succeeds(mlm(2, &work, "resumed", &["--set", "train.max_steps=3"]));
    succeeds(mlm(2, &work, "resumed", &["--resume"]));
    let resumed = Checkpoint::load(&work.join("resumed")).unwrap();
    assert!(resumed.model == two.model, "the resumed 2-rank run differs");
    assert!(resumed.optimizer == two.optimizer);

    // A 2-rank checkpoint is not resumed by one process.
    let mut partial = mlm(2, &work, "partial", &["--set", "train.max_steps=3"]);
    assert!(partial.output().unwrap().status.success());
    let refused = mlm(1, &work, "partial", &["--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("trained on 2 rank(s)"),
        "{err}"
    );

    // An uneven split of the global batch is refused by name.
    let uneven = mlm(2, &work, "uneven", &["--set", "batch_size=7"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&uneven.stderr);
    assert!(
        !uneven.status.success() && err.contains("batch_size = 7"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// A 5-step image pretraining run of `method` on `ranks` processes: the embedded Fashion-MNIST
/// subset, the small CNN and heads with batch norm, synchronised. SGD: under Adam a parameter
/// whose true gradient is zero (a bias that a batch norm downstream cancels) steps by the sign
/// of its rounding noise, ±lr, which differs between one process and two.
fn pretrain(ranks: usize, method: &str, out: &Path, extra: &[&str]) -> Command {
    let mut c = launched(ranks);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.toml");
    c.args(["pretrain", "--config"])
        .arg(config)
        .args(["--threads", "1", "--json"]);
    for set in [
        &format!("method=\"{method}\""),
        "epochs=1",
        "data.train_limit=160",
        "batch_size=32",
        "train.max_steps=5",
        "train.online_knn=0",
        "train.sync_batchnorm=true",
        "backbone.width=8",
        "projection.hidden=32",
        "projection.output=16",
        "prediction.hidden=32",
        "prediction.output=16",
        "optimizer.kind=\"sgd\"",
        "optimizer.lr=0.03",
        &format!("train.out_dir=\"{}\"", out.display()),
    ] {
        c.args(["--set", set]);
    }
    c.args(extra);
    c
}

/// The binary on `ranks` processes of this machine (1: alone, without `mpirun`).
fn launched(ranks: usize) -> Command {
    if ranks == 1 {
        return Command::new(BIN);
    }
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(ranks.to_string())
        .arg(BIN);
    c
}

/// `command(ranks, out)` run on one process into `WORK/NAME-1` and on two ranks into
/// `WORK/NAME-2`: the two checkpoints must hold the same weights within 1e-5.
fn two_ranks_match_one(work: &Path, name: &str, command: impl Fn(usize, &Path) -> Command) {
    let (one, two) = (
        work.join(format!("{name}-1")),
        work.join(format!("{name}-2")),
    );
    succeeds(command(1, &one));
    succeeds(command(2, &two));
    let (one, two) = (
        Checkpoint::load(&one).unwrap(),
        Checkpoint::load(&two).unwrap(),
    );
    assert_eq!(two.meta["ranks"], 2, "{name}");
    let (worst, param) = largest_difference(&one, &two);
    eprintln!("{name}: 2 ranks against 1 process differ by at most {worst:e} ({param})");
    assert!(
        worst < 1e-5,
        "{name}: 2 ranks and 1 process differ by {worst} in {param}"
    );
}

fn largest_difference(a: &Checkpoint, b: &Checkpoint) -> (f32, String) {
    assert_eq!(a.model.len(), b.model.len());
    let mut worst = (0f32, String::new());
    for (x, y) in a.model.iter().zip(&b.model) {
        assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
        for (p, q) in x.values.iter().zip(&y.values) {
            if (p - q).abs() > worst.0 {
                worst = ((p - q).abs(), x.name.clone());
            }
        }
    }
    worst
}

/// Every method whose loss couples the batch (gathered negatives and codes, global batch
/// statistics, queues of every rank's keys, DINO's centre) and BYOL (per-sample loss,
/// synchronised batch norm only): two ranks on halves of each global batch end where one
/// process on the whole batches does, within 1e-5.
#[test]
fn two_ranks_pretrain_what_one_process_pretrains_for_every_joint_embedding_method() {
    let work = dir("pretrain");
    let methods = [
        "simclr",
        "byol",
        "vicreg",
        "barlowtwins",
        "mocov2",
        "mocov3",
        "nnclr",
        "swav",
        "dino",
    ];
    for method in methods {
        two_ranks_match_one(&work, method, |ranks, out| {
            // Each rank names its device by its place on the machine (`cpu:0`, `cpu:1`).
            let device: &[&str] = if ranks == 1 {
                &[]
            } else {
                &["--device", "cpu:{local_rank}"]
            };
            pretrain(ranks, method, out, device)
        });
    }

    // Stopped at step 3 and resumed on 2 ranks: the uninterrupted 2-rank run, bit for bit.
    let resumed = work.join("resumed");
    succeeds(pretrain(
        2,
        "simclr",
        &resumed,
        &["--set", "train.max_steps=3"],
    ));
    succeeds(pretrain(2, "simclr", &resumed, &["--resume"]));
    let (resumed, two) = (
        Checkpoint::load(&resumed).unwrap(),
        Checkpoint::load(&work.join("simclr-2")).unwrap(),
    );
    assert_eq!(resumed.meta["step"], 5);
    assert!(
        resumed.model == two.model,
        "the resumed 2-rank pretraining differs"
    );
    assert!(resumed.optimizer == two.optimizer);

    // Without synchronised batch norm each rank normalises its own half: the replicas still
    // agree (the job's replica check passes), but they train something else than one process.
    let local = work.join("local");
    succeeds(pretrain(
        2,
        "simclr",
        &local,
        &["--set", "train.sync_batchnorm=false"],
    ));
    let one = Checkpoint::load(&work.join("simclr-1")).unwrap();
    let (worst, _) = largest_difference(&one, &Checkpoint::load(&local).unwrap());
    assert!(
        worst > 1e-4,
        "batch norm without synchronisation matched to {worst}"
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// The methods that draw random numbers on the device for each example (MAE's and SimMIM's
/// masks, jigsaw's permutations, the denoising autoencoder's erasures): every rank draws them
/// for the whole global batch and keeps its own rows, so two ranks train what one process
/// trains.
#[test]
fn two_ranks_draw_for_each_example_what_one_process_draws() {
    let work = dir("draws");
    let vit = [
        "backbone.arch=\"vit_tiny\"",
        "backbone.patch_size=7",
        "backbone.dim=16",
        "backbone.depth=1",
        "backbone.heads=2",
        "mae.decoder_dim=16",
        "mae.decoder_depth=1",
        "mae.decoder_heads=2",
    ];
    let methods: [(&str, &[&str]); 4] = [
        ("mae", &vit),
        ("simmim", &vit),
        ("jigsaw", &[]),
        (
            "denoising_autoencoder",
            &["autoencoder.corruption=\"erase\""],
        ),
    ];
    for (method, sets) in methods {
        two_ranks_match_one(&work, method, |ranks, out| {
            let extra: Vec<&str> = sets.iter().flat_map(|s| ["--set", s]).collect();
            pretrain(ranks, method, out, &extra)
        });
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// A tiny audio or video pretraining run (`kind` "audio" or "video") of `method` on `data`,
/// with SGD and synchronised batch norm as in [`pretrain`].
fn modality_pretrain(
    ranks: usize,
    kind: &str,
    method: &str,
    data: &Path,
    out: &Path,
    extra: &[&str],
) -> Command {
    let mut c = launched(ranks);
    let config =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../configs/{kind}_{method}.toml"));
    c.args([kind, "pretrain", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(["--threads", "1", "--json"]);
    // No dropout in the audio CNN: BYOL-A and COLA run their two views through it as one
    // tensor, view after view, so a rank's rows are not a contiguous block of one process's
    // tensor and dropout's counter draws other (still distinct) masks.
    let shared = [
        "epochs=2",
        "batch_size=16",
        "train.sync_batchnorm=true",
        "optimizer.kind=\"sgd\"",
        "optimizer.lr=0.03",
    ];
    let (tiny, own): (&[&str], &[&str]) = if kind == "audio" {
        (common::TINY_AUDIO, &["backbone.dropout=0.0"])
    } else {
        (common::TINY_VIDEO, &[])
    };
    let out_dir = format!("train.out_dir=\"{}\"", out.display());
    for set in shared
        .iter()
        .chain(tiny)
        .chain(own)
        .chain([&out_dir.as_str()])
    {
        c.args(["--set", set]);
    }
    c.args(extra);
    c
}

/// Audio and video pretraining, every method (COLA's and temporal contrast's negatives
/// gathered from every rank, BYOL-A's and the next-frame model's batch norm synchronised,
/// VideoMAE's and the spectrogram MAE's masks drawn for the global batch), and audio streamed
/// from disk, each rank reading its own clips: two ranks end where one process does.
#[test]
fn two_ranks_pretrain_audio_and_video_as_one_process_does() {
    let work = dir("modalities");
    let clips = work.join("clips");
    common::tones(&clips, 8);
    for method in ["byol_a", "cola", "mae"] {
        two_ranks_match_one(&work, &format!("audio-{method}"), |ranks, out| {
            modality_pretrain(ranks, "audio", method, &clips, out, &[])
        });
    }
    two_ranks_match_one(&work, "audio-streamed", |ranks, out| {
        let stream = ["--set", "data.stream=true"];
        modality_pretrain(ranks, "audio", "byol_a", &clips, out, &stream)
    });
    let videos = common::moving(&work.join("video"), 32, 8);
    for method in ["videomae", "contrastive", "frame_order", "next_frame"] {
        two_ranks_match_one(&work, &format!("video-{method}"), |ranks, out| {
            modality_pretrain(ranks, "video", method, &videos, out, &[])
        });
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// The processes whose parent is `parent`, from `/proc`.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `pid (name) state ppid ...`; the name may hold spaces, so read after its ')'.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after.split_whitespace().nth(1) == Some(parent.to_string().as_str())
        })
        .collect()
}

/// The process among `parent`'s descendants that MPI started as `rank`.
fn rank_process(parent: u32, rank: usize) -> Option<u32> {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    for pid in children(parent) {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes()) {
            return Some(pid);
        }
        if let Some(found) = rank_process(pid, rank) {
            return Some(found);
        }
    }
    None
}

#[test]
fn a_rank_killed_mid_run_ends_the_job_by_name_and_resume_reaches_the_uninterrupted_weights() {
    let work = prepared("kill");
    let extra = ["--set", "steps=40", "--set", "train.checkpoint_every=4"];
    let started = Instant::now();
    succeeds(mlm(2, &work, "reference", &extra));
    let wall = started.elapsed();

    let mut job = mlm(2, &work, "killed", &extra);
    let spawned = Instant::now();
    let job = job
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once the first checkpoint (step 4 of 40) is down: mid-run whatever the machine's
    // speed (half the reference's wall time was too late once the data cache it built made
    // the second run faster).
    let first_checkpoint = work.join("killed").join("checkpoint.safetensors");
    while !first_checkpoint.exists() {
        assert!(
            spawned.elapsed() < Duration::from_secs(120),
            "no checkpoint after two minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let rank1 = rank_process(job.id(), 1).expect("rank 1 of the running job");
    let killed = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-9", &rank1.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = job.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the job went on without rank 1");
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "the job took {:?} to end",
        killed.elapsed()
    );
    assert!(
        err.contains("rank 1"),
        "the message does not name rank 1: {err}"
    );
    let named = err
        .lines()
        .find(|l| l.contains("rank 1"))
        .unwrap_or_default();
    eprintln!(
        "rank 1 killed {:?} into a run the reference did in {wall:?}; the job ended {:?} \
         later: {named}",
        killed - spawned,
        killed.elapsed()
    );

    // Resumed from the last checkpoint, the run ends where the uninterrupted one does, bit for
    // bit.
    let last = Checkpoint::load(&work.join("killed")).unwrap();
    let left_at = last.meta["step"].as_u64().unwrap_or(0);
    eprintln!("checkpoint left at step {left_at}");
    assert!(left_at < 40, "the run had finished before the kill");
    succeeds(mlm(
        2,
        &work,
        "killed",
        &[&extra[..], &["--resume"]].concat(),
    ));
    let want = Checkpoint::load(&work.join("reference")).unwrap();
    let got = Checkpoint::load(&work.join("killed")).unwrap();
    assert_eq!(got.meta["step"], 40);
    assert!(got.model == want.model, "the resumed run's weights differ");
    assert!(
        got.optimizer == want.optimizer,
        "its optimizer state differs"
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_rank_that_stops_answering_ends_the_job_after_the_collective_timeout() {
    let work = prepared("stuck");
    let extra = [
        "--set",
        "steps=400",
        "--set",
        "train.checkpoint_every=4",
        "--set",
        "train.collective_timeout=3",
    ];
    let mut job = mlm(2, &work, "stuck", &extra);
    let job = job
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stopped, not killed: mpirun sees a live process, and only the watchdog on rank 0 can
    // tell that it no longer answers.
    let rank1 = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            rank_process(job.id(), 1)
                .filter(|_| work.join("stuck/checkpoint.safetensors").is_file())
        })
        .expect("rank 1 of the running job, after its first checkpoint");
    let stopped = Instant::now();
    let signal = |name: &str| {
        let _ = Command::new("kill")
            .args([name, &rank1.to_string()])
            .status();
    };
    signal("-STOP");
    // Should mpirun wait on the stopped process, do not hang the test suite over it.
    let rank1_pid = rank1.to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(45));
        let _ = Command::new("kill").args(["-KILL", &rank1_pid]).status();
    });
    let out = job.wait_with_output().unwrap();
    let ended = stopped.elapsed();
    signal("-KILL");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        ended < Duration::from_secs(60),
        "the job took {ended:?} to end"
    );
    assert!(
        err.contains("error on rank 0 of 2") && err.contains("train.collective_timeout = 3 s"),
        "{err}"
    );
    eprintln!("rank 1 stopped; the job ended {ended:?} later");
    let kept = Checkpoint::load(&work.join("stuck")).unwrap();
    assert!(
        kept.meta["step"].as_u64().unwrap() >= 4,
        "the last checkpoint is kept"
    );
    let _ = std::fs::remove_dir_all(&work);
}
