//! Video on the real binary: a tiny Moving MNIST built by `pretext data moving-mnist` from
//! objects the test draws, every method pretrained for a few steps, `video eval` probing the
//! direction of motion above chance and scoring the next-frame forecaster beside copying the
//! last frame, a resumed run equal to an uninterrupted one bit for bit, and bad input refused
//! with the file named. Reading video files needs Debian's ffmpeg: that test is ignored unless
//! run with `--ignored`, as CI does after installing it.

mod common;

use std::path::{Path, PathBuf};

use common::{BIN, TINY_VIDEO, moving, run, same_weights};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pretext-video-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(method: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../configs/video_{method}.toml"))
        .display()
        .to_string()
}

/// A tiny run of `method` on `data` into `out`.
fn pretrain(
    method: &str,
    data: &Path,
    out: &Path,
    extra: &[&str],
) -> (bool, serde_json::Value, String) {
    let out_dir = format!("train.out_dir=\"{}\"", out.display());
    let cfg = config(method);
    let data = data.display().to_string();
    let mut args = vec![
        "video",
        "pretrain",
        "--config",
        &cfg,
        "--json",
        "--threads",
        "1",
        "--data",
        &data,
    ];
    let run_sets = ["epochs=3", "batch_size=16", out_dir.as_str()];
    for set in TINY_VIDEO.iter().chain(&run_sets) {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    run(&args)
}

/// The linear accuracy with all labels of `features` on `task` in a `video eval` record.
fn full_linear(json: &serde_json::Value, task: &str, features: usize) -> f64 {
    let tasks = json["result"]["tasks"].as_array().unwrap();
    let entry = tasks.iter().find(|t| t[0] == task).unwrap();
    let rows = entry[1 + features]["by_fraction"].as_array().unwrap();
    rows.last().unwrap()[2].as_f64().unwrap()
}

#[test]
fn every_method_trains_and_probes_see_the_direction_of_motion() {
    let root = dir("methods");
    let data = moving(&root, 160, 80);
    // Frame order starts at chance (ln 2) and needs a few more steps to leave it.
    for (method, epochs) in [
        ("videomae", 3),
        ("contrastive", 3),
        ("frame_order", 12),
        ("next_frame", 3),
    ] {
        let out = root.join(method);
        let epochs_flag = format!("epochs={epochs}");
        let (ok, json, err) = pretrain(method, &data, &out, &["--set", &epochs_flag]);
        assert!(ok, "{method}: {err}");
        let result = &json["result"];
        assert_eq!(
            result["steps"],
            10 * epochs,
            "{method}: 160 videos / 16 x {epochs} epochs"
        );
        let (first, last) = (
            result["first_loss"].as_f64().unwrap(),
            result["last_epoch_loss"].as_f64().unwrap(),
        );
        assert!(
            last.is_finite() && last < first,
            "{method}: loss {first} -> {last}"
        );
    }
    // The frame-order encoder's clip features tell the 8 directions apart far above chance
    // (12.5%) and the two object classes too.
    let (ok, json, err) = run(&[
        "video",
        "eval",
        "--checkpoint",
        root.join("frame_order").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--fractions",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let direction = full_linear(&json, "direction", 0);
    assert!(direction > 0.3, "direction: linear {direction}");
    let class = full_linear(&json, "classes", 0);
    assert!(class > 0.7, "classes: linear {class}");
    assert!(root.join("frame_order/video_eval.json").is_file());

    // The label study on the direction: every arm, one seed, a short budget.
    let run_dir = root.join("frame_order");
    let (ok, json, err) = run(&[
        "eval",
        "labels",
        "--checkpoint",
        run_dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--fractions",
        "0.5,1",
        "--seeds",
        "1",
        "--set",
        "eval.finetune.epochs=2",
        "--set",
        "eval.finetune.min_steps=60",
        "--json",
    ]);
    assert!(ok, "{err}");
    // The study trains with the settings it was given, not the checkpoint's (300 steps).
    for run in json["study"]["runs"].as_array().unwrap() {
        if ["finetune", "scratch"].contains(&run["arm"].as_str().unwrap()) {
            assert_eq!(run["detail"]["steps"], 60, "{run}");
        }
    }
    let summary = json["study"]["summary"].as_array().unwrap();
    let arms: std::collections::BTreeSet<&str> =
        summary.iter().map(|s| s["arm"].as_str().unwrap()).collect();
    let expected = ["finetune", "knn", "linear", "random_linear", "scratch"];
    assert_eq!(arms.into_iter().collect::<Vec<_>>(), expected);
    for s in summary {
        let accuracy = s["mean"].as_f64().unwrap();
        assert!(accuracy > 0.2, "{}: {accuracy} (chance 0.125)", s["arm"]);
    }
    assert!(run_dir.join("labels.direction.json").is_file());

    // The next-frame model forecasts 4 frames after 4, scored beside copying the last frame.
    let (ok, json, err) = run(&[
        "video",
        "eval",
        "--checkpoint",
        root.join("next_frame").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--task",
        "direction",
        "--fractions",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let forecast = json["result"]["forecast"].as_array().unwrap();
    assert_eq!(forecast[0]["forecast"], "model");
    assert_eq!(forecast[1]["forecast"], "copy last frame");
    for f in forecast {
        let (mse, ssim) = (f["mse"].as_f64().unwrap(), f["ssim"].as_f64().unwrap());
        assert!(mse > 0.0 && mse.is_finite() && ssim <= 1.0, "{f}");
        assert_eq!(f["mse_by_frame"].as_array().unwrap().len(), 4);
    }

    // Reports: the shared sections, the map and confusion matrix on the direction, and the
    // next-frame model's forecasts drawn.
    for (method, sections) in [
        (
            "frame_order",
            &["overview", "curves", "labels", "map", "confusion", "config"][..],
        ),
        ("next_frame", &["overview", "map", "forecasts"][..]),
    ] {
        let run_dir = root.join(method);
        let (ok, _, err) = run(&[
            "report",
            run_dir.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ]);
        assert!(ok, "{method}: {err}");
        let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
        for id in sections {
            assert!(
                html.contains(&format!("<section id=\"{id}\">")),
                "the {method} report has no {id}"
            );
        }
    }
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let root = dir("resume");
    let data = moving(&root, 48, 16);
    let full = root.join("full");
    let (ok, _, err) = pretrain("videomae", &data, &full, &[]);
    assert!(ok, "{err}");
    let cut = root.join("cut");
    let stop = [
        "--set",
        "train.max_steps=4",
        "--set",
        "train.checkpoint_every=1",
    ];
    let (ok, _, err) = pretrain("videomae", &data, &cut, &stop);
    assert!(ok, "{err}");
    let (ok, json, err) = pretrain("videomae", &data, &cut, &["--resume"]);
    assert!(ok, "{err}");
    assert_eq!(json["result"]["resumed_from_step"], 4);
    same_weights(&full, &cut, "after resuming");
    std::fs::remove_dir_all(&root).ok();
}

/// The losses a run logged, step by step.
fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// `train.replicas = 2`: two copies of VideoMAE on the halves of every batch, in two threads,
/// train what one process trains (the same tube masks, the same first initialisation; only
/// the order in which floats are summed differs), resume bit for bit, and are refused by name
/// by a method whose loss couples the clips of a batch.
#[test]
fn replicas_train_what_one_process_trains() {
    let root = dir("replicas");
    let data = moving(&root, 48, 16);
    let one = root.join("one");
    let (ok, _, err) = pretrain("videomae", &data, &one, &[]);
    assert!(ok, "{err}");
    let two = root.join("two");
    let replicas = ["--set", "train.replicas=2"];
    let (ok, _, err) = pretrain("videomae", &data, &two, &replicas);
    assert!(ok, "{err}");
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 9);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4 * x.abs(), "{a:?} {b:?}");
    }
    // Training moved the loss: the runs are not equal for having done nothing.
    assert!((a[0] - a[8]).abs() > 1e-3, "{a:?}");
    let cut = root.join("cut");
    let stop = [
        "--set",
        "train.replicas=2",
        "--set",
        "train.max_steps=4",
        "--set",
        "train.checkpoint_every=1",
    ];
    let (ok, _, err) = pretrain("videomae", &data, &cut, &stop);
    assert!(ok, "{err}");
    let resume = ["--set", "train.replicas=2", "--resume"];
    let (ok, _, err) = pretrain("videomae", &data, &cut, &resume);
    assert!(ok, "{err}");
    same_weights(&two, &cut, "replicas after resuming");
    let (ok, _, err) = pretrain("contrastive", &data, &root.join("c"), &replicas);
    assert!(!ok);
    assert!(
        err.contains("train.replicas = 2") && err.contains("video_contrastive"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn bad_video_data_is_refused_with_the_file_named() {
    let root = dir("bad");
    let data = moving(&root, 32, 16);
    // Clips longer than the videos; streaming, which reads folders of video files, asked of
    // IDX videos.
    let refusals: [(&str, &[&str]); 2] = [
        (
            "data.clip_frames=12",
            &["data.clip_frames = 12", "train-videos"],
        ),
        ("data.stream=true", &["data.stream", "IDX"]),
    ];
    for (k, (set, needles)) in refusals.iter().enumerate() {
        let out = root.join(format!("refused{k}"));
        let (ok, _, err) = pretrain("videomae", &data, &out, &["--set", set]);
        assert!(!ok && needles.iter().all(|n| err.contains(n)), "{err}");
    }
    // A label file whose rows do not follow the videos.
    let labels = data.join("train-labels.tsv");
    let text = std::fs::read_to_string(&labels).unwrap();
    std::fs::write(&labels, text.replacen("\n3\t", "\n4\t", 1)).unwrap();
    let (ok, _, err) = pretrain("videomae", &data, &root.join("r2"), &[]);
    assert!(!ok && err.contains("train-labels.tsv:5"), "{err}");
    std::fs::write(&labels, text).unwrap();
    // A truncated video file.
    let videos = data.join("train-videos-idx4-ubyte.gz");
    let bytes = std::fs::read(&videos).unwrap();
    std::fs::write(&videos, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, err) = pretrain("videomae", &data, &root.join("r3"), &[]);
    assert!(
        !ok && err.contains("train-videos-idx4-ubyte.gz") && err.contains("truncated"),
        "{err}"
    );
    // A folder of video files without ffmpeg on the PATH.
    let clips = root.join("clips/a");
    std::fs::create_dir_all(&clips).unwrap();
    std::fs::write(clips.join("x.mp4"), b"not really").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["video", "pretrain", "--data"])
        .arg(root.join("clips"))
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("apt-get install ffmpeg"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).ok();
}

/// A clip drawn by ffmpeg's test sources.
fn synthesize(out: &Path, source: &str, seconds: f64) {
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("{source}=size=96x72:rate=10"))
        .args(["-t", &seconds.to_string(), "-pix_fmt", "yuv420p"])
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Four clips of each of two classes (ffmpeg's `testsrc` and `mandelbrot`, 1 to 1.6 s) in
/// `root/SPLIT/CLASS` for each of `splits`.
fn clip_folders(root: &Path, splits: &[&str]) {
    for (class, source) in [("bars", "testsrc"), ("fractal", "mandelbrot")] {
        for split in splits {
            let d = root.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..4 {
                synthesize(&d.join(format!("{i}.mp4")), source, 1.0 + 0.2 * i as f64);
            }
        }
    }
}

/// How the tests read video files: 32x32 RGB, every second frame.
const FROM_FILES: &[&str] = &[
    "--set",
    "data.size=32",
    "--set",
    "data.channels=3",
    "--set",
    "data.frame_stride=2",
];

#[test]
#[ignore = "needs Debian's ffmpeg (CI installs it)"]
fn video_files_are_decoded_by_ffmpeg_and_bad_ones_counted() {
    let root = dir("files");
    clip_folders(&root, &["train", "test"]);
    let bad = root.join("train/bars");
    std::fs::write(
        bad.join("corrupt.mp4"),
        b"\x00\x00\x00\x18ftypmp42 and then nothing",
    )
    .unwrap();
    synthesize(&bad.join("short.webm"), "testsrc", 0.2);
    let out = root.join("run");
    let (ok, json, err) = pretrain(
        "frame_order",
        &root,
        &out,
        &[FROM_FILES, &["--set", "batch_size=4", "--set", "epochs=1"]].concat(),
    );
    assert!(ok, "{err}");
    let read = &json["read"];
    assert_eq!(read["videos"], 8, "{read}");
    assert_eq!(read["unreadable"], 1, "{read}");
    assert_eq!(read["too_short"], 1, "{read}");
    assert!(err.contains("corrupt.mp4"), "{err}");
    let (ok, json, err) = run(&[
        "video",
        "eval",
        "--checkpoint",
        out.to_str().unwrap(),
        "--data",
        root.to_str().unwrap(),
        "--fractions",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let class = full_linear(&json, "class", 0);
    assert!(class > 0.5, "class: linear {class}");
    std::fs::remove_dir_all(&root).ok();
}

/// A folder of video files streamed from disk (`data.stream = true`) trains the weights the
/// decoded folder trains, bit for bit, and resumes exactly; a file that cannot be decoded is
/// met by the loader, skipped and named under "skip", and ends the run naming it under
/// "stop".
#[test]
#[ignore = "needs Debian's ffmpeg (CI installs it)"]
fn a_streamed_folder_of_videos_trains_as_the_decoded_one_and_skips_a_bad_file() {
    let root = dir("streamed");
    clip_folders(&root, &["train"]);
    let sets = |extra: &[&'static str]| -> Vec<&'static str> {
        let run = ["--set", "batch_size=4", "--set", "epochs=2"];
        [FROM_FILES, &run, extra].concat()
    };
    let stream: &[&str] = &["--set", "data.stream=true"];
    let memory = root.join("memory");
    let (ok, _, err) = pretrain("frame_order", &root, &memory, &sets(&[]));
    assert!(ok, "{err}");
    let streamed = root.join("streamed");
    let (ok, json, err) = pretrain("frame_order", &root, &streamed, &sets(stream));
    assert!(ok, "{err}");
    assert_eq!(json["read"]["streamed"], true, "{json}");
    same_weights(&memory, &streamed, "streamed against decoded");
    // Cut after 2 of the 4 steps and resumed: the uninterrupted streamed run.
    let cut = root.join("cut");
    let (ok, _, err) = pretrain(
        "frame_order",
        &root,
        &cut,
        &sets(&["--set", "data.stream=true", "--set", "train.max_steps=2"]),
    );
    assert!(ok, "{err}");
    let (ok, json, err) = pretrain(
        "frame_order",
        &root,
        &cut,
        &sets(&["--set", "data.stream=true", "--resume"]),
    );
    assert!(ok, "{err}");
    assert_eq!(json["result"]["resumed_from_step"], 2);
    same_weights(&streamed, &cut, "streamed and resumed");

    // A file that is not a video, found by the loader: every epoch visits all nine files.
    std::fs::write(root.join("train/bars/corrupt.mp4"), b"not a video").unwrap();
    let whole = ["--set", "data.stream=true", "--set", "batch_size=9"];
    let (ok, _, err) = pretrain("frame_order", &root, &root.join("skip"), &sets(&whole));
    assert!(ok, "{err}");
    assert!(
        err.contains("skipped") && err.contains("corrupt.mp4"),
        "{err}"
    );
    let stop = [&whole[..], &["--set", "data.on_error=\"stop\""]].concat();
    let (ok, _, err) = pretrain("frame_order", &root, &root.join("stop"), &sets(&stop));
    assert!(
        !ok && err.contains("corrupt.mp4") && err.contains("data.on_error"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).ok();
}

/// A checkpoint pretrained on a streamed folder is evaluated streamed: `video eval`, `eval
/// labels` and `report` decode each video when its batch is read and score what the decoded
/// folder scores; a test file that cannot be decoded stops the evaluation, named.
#[test]
#[ignore = "needs Debian's ffmpeg (CI installs it)"]
fn a_streamed_checkpoint_is_evaluated_from_disk_as_the_decoded_one() {
    let root = dir("streamed_eval");
    clip_folders(&root, &["train", "test"]);
    let sets = |extra: &[&'static str]| -> Vec<&'static str> {
        [
            FROM_FILES,
            &["--set", "batch_size=4", "--set", "epochs=1"],
            extra,
        ]
        .concat()
    };
    let (memory, streamed) = (root.join("memory"), root.join("streamed"));
    let (ok, _, err) = pretrain("frame_order", &root, &memory, &sets(&[]));
    assert!(ok, "{err}");
    let stream = ["--set", "data.stream=true"];
    let (ok, _, err) = pretrain("frame_order", &root, &streamed, &sets(&stream));
    assert!(ok, "{err}");
    let data = root.to_str().unwrap();
    let eval = |run_dir: &Path| {
        let checkpoint = run_dir.to_str().unwrap();
        let (ok, json, err) = run(&[
            "video",
            "eval",
            "--checkpoint",
            checkpoint,
            "--data",
            data,
            "--fractions",
            "1",
            "--json",
        ]);
        (ok, json["result"].clone(), err)
    };
    let (ok, decoded, err) = eval(&memory);
    assert!(ok, "{err}");
    let (ok, from_disk, err) = eval(&streamed);
    assert!(ok, "{err}");
    assert!(err.contains("streamed from disk"), "{err}");
    assert_eq!(decoded, from_disk, "video eval, streamed against decoded");
    let study = |run_dir: &Path| {
        let (ok, json, err) = run(&[
            "eval",
            "labels",
            "--checkpoint",
            run_dir.to_str().unwrap(),
            "--data",
            data,
            "--task",
            "class",
            "--fractions",
            "1",
            "--seeds",
            "1",
            "--set",
            "eval.finetune.epochs=1",
            "--set",
            "eval.finetune.min_steps=3",
            "--json",
        ]);
        assert!(ok, "{err}");
        json["study"]["summary"].clone()
    };
    assert_eq!(study(&memory), study(&streamed), "eval labels");
    let (ok, _, err) = run(&["report", streamed.to_str().unwrap(), "--data", data]);
    assert!(ok, "{err}");
    let html = std::fs::read_to_string(streamed.join("report.html")).unwrap();
    assert!(
        html.contains("<section id=\"confusion\">"),
        "no confusion matrix"
    );

    std::fs::write(root.join("test/bars/corrupt.mp4"), b"not a video").unwrap();
    let (ok, _, err) = eval(&streamed);
    assert!(!ok && err.contains("corrupt.mp4"), "{err}");
    std::fs::remove_dir_all(&root).ok();
}
