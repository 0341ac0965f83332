//! Audio on the real binary: a folder of synthetic tones read (bad files counted, not fatal),
//! every method pretrained for a few steps, `audio eval` scoring the encoder above chance, a
//! resumed run equal to an uninterrupted one bit for bit, and the data-building commands (those
//! that need Debian's SoundFont and espeak-ng are ignored unless run with `--ignored`, as CI does
//! after installing them).

mod common;

use std::path::{Path, PathBuf};

use common::{BIN, TINY_AUDIO, run, same_weights, tone, tones};
use pretext::audio::data::decode::write_wav;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pretext-audio-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(method: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../configs/audio_{method}.toml"))
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
    let mut args = vec![
        "audio",
        "pretrain",
        "--config",
        &cfg,
        "--json",
        "--threads",
        "1",
    ];
    let data = data.display().to_string();
    args.extend(["--data", &data]);
    let run_sets = ["epochs=3", "batch_size=16", out_dir.as_str()];
    for set in TINY_AUDIO.iter().chain(&run_sets) {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    run(&args)
}

#[test]
fn every_method_trains_and_the_probe_beats_chance() {
    let root = dir("methods");
    tones(&root.join("data"), 24);
    for method in ["byol_a", "cola", "mae"] {
        let out = root.join(method);
        let (ok, json, err) = pretrain(method, &root.join("data"), &out, &[]);
        assert!(ok, "{method}: {err}");
        let result = &json["result"];
        assert_eq!(result["steps"], 18, "{method}: 96 clips / 16 x 3 epochs");
        let (first, last) = (
            result["first_loss"].as_f64().unwrap(),
            result["last_epoch_loss"].as_f64().unwrap(),
        );
        assert!(
            last.is_finite() && last < first,
            "{method}: loss {first} -> {last}"
        );
    }
    // The BYOL-A encoder's features separate the four tones far above chance (25%).
    let (ok, json, err) = run(&[
        "audio",
        "eval",
        "--checkpoint",
        root.join("byol_a").to_str().unwrap(),
        "--data",
        root.join("data").to_str().unwrap(),
        "--fractions",
        "0.5,1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let scores = json["scores"].as_array().unwrap();
    let names: Vec<&str> = scores
        .iter()
        .map(|s| s["features"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pretrained", "random init", "log-mel mean+std"]);
    for s in scores {
        let full = s["by_fraction"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_array()
            .unwrap();
        assert_eq!(full[0], 1.0);
        let linear = full[2].as_f64().unwrap();
        assert!(linear > 0.6, "{}: linear {linear}", s["features"]);
    }
    assert!(root.join("byol_a/audio_eval_class.json").exists());

    // The label study: every arm at 50% and 100% of the labels, one seed, a short budget.
    let run_dir = root.join("byol_a");
    let data = root.join("data");
    let study = |extra: &[&str]| {
        let mut args = vec!["eval", "labels", "--checkpoint", run_dir.to_str().unwrap()];
        args.extend(["--data", data.to_str().unwrap()]);
        args.extend(extra);
        run(&args)
    };
    let (ok, json, err) = study(&["--fractions", "0.5,1", "--seeds", "1", "--json"]);
    assert!(ok, "{err}");
    let summary = json["study"]["summary"].as_array().unwrap();
    let arms: std::collections::BTreeSet<&str> =
        summary.iter().map(|s| s["arm"].as_str().unwrap()).collect();
    let expected = [
        "finetune",
        "knn",
        "linear",
        "logmel",
        "random_linear",
        "scratch",
    ];
    assert_eq!(arms.into_iter().collect::<Vec<_>>(), expected);
    for s in summary {
        let accuracy = s["mean"].as_f64().unwrap();
        assert!(accuracy > 0.4, "{}: {accuracy} (chance 0.25)", s["arm"]);
    }
    assert!(
        run_dir.join("labels.class.json").is_file() && run_dir.join("labels.class.svg").is_file()
    );
    // The study's --set changes evaluation settings only; the rest is the checkpoint's.
    let (ok, _, err) = study(&["--set", "epochs=1"]);
    assert!(
        !ok && err.contains("--set epochs=1: an audio study takes only eval.* settings"),
        "{err}"
    );
    // --task names a label column the folder lacks: the error lists those it has.
    let (ok, _, err) = study(&["--task", "pitch"]);
    assert!(
        !ok && err.contains("no label column 'pitch'") && err.contains("class"),
        "{err}"
    );

    // The report: the shared sections, the study, and with the clips the map, log-mel
    // neighbours and confusion matrix.
    let (ok, _, err) = run(&[
        "report",
        run_dir.to_str().unwrap(),
        "--data",
        root.join("data").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    for id in [
        "overview",
        "curves",
        "labels",
        "map",
        "neighbours",
        "confusion",
        "config",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "the report has no {id}"
        );
    }
    assert!(html.contains("data:image/png;base64,") && html.contains("tone3"));
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let root = dir("resume");
    tones(&root.join("data"), 8);
    let full = root.join("full");
    let (ok, _, err) = pretrain("byol_a", &root.join("data"), &full, &[]);
    assert!(ok, "{err}");
    let cut = root.join("cut");
    let (ok, _, err) = pretrain(
        "byol_a",
        &root.join("data"),
        &cut,
        &[
            "--set",
            "train.max_steps=3",
            "--set",
            "train.checkpoint_every=1",
        ],
    );
    assert!(ok, "{err}");
    let (ok, json, err) = pretrain("byol_a", &root.join("data"), &cut, &["--resume"]);
    assert!(ok, "{err}");
    assert_eq!(json["result"]["resumed_from_step"], 3);
    same_weights(&full, &cut, "after resuming");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_streamed_folder_trains_as_the_decoded_one_resumes_exactly_and_skips_a_bad_clip() {
    let root = dir("stream");
    let data = root.join("data");
    tones(&data, 8);
    // BYOL-A reads a second, random clip per view for its mixup: both reads stream.
    let (ok, _, err) = pretrain("byol_a", &data, &root.join("memory"), &[]);
    assert!(ok, "{err}");
    let streamed = ["--set", "data.stream=true"];
    let (ok, json, err) = pretrain("byol_a", &data, &root.join("streamed"), &streamed);
    assert!(ok, "{err}");
    assert_eq!(json["read"]["streamed"], true, "{json}");
    assert!(err.contains("32 clips listed, streamed"), "{err}");
    same_weights(
        &root.join("memory"),
        &root.join("streamed"),
        "streamed against decoded into memory",
    );
    // `command` on the checkpoint of `run`, with half and all of the labels.
    let evaluate = |command: &[&str], run: &str| {
        let ckpt = root.join(run).display().to_string();
        let data = data.display().to_string();
        let mut args = command.to_vec();
        args.extend([
            "--checkpoint",
            &ckpt,
            "--data",
            &data,
            "--fractions",
            "0.5,1",
        ]);
        if command == ["eval", "labels"] {
            args.extend(["--seeds", "1"]);
        }
        args.push("--json");
        let (ok, json, err) = common::run(&args);
        assert!(ok, "{err}");
        (json, err)
    };
    // Evaluation streams as the run was pretrained, reading a batch at a time: same scores.
    let eval = |run: &str| {
        let (json, err) = evaluate(&["audio", "eval"], run);
        (json["scores"].clone(), err)
    };
    let (in_memory, _) = eval("memory");
    let (streamed_scores, err) = eval("streamed");
    assert!(err.contains("streamed from disk"), "{err}");
    assert_eq!(in_memory, streamed_scores);
    // The label study streams too (fine-tuning reads its clips a batch at a time): same study.
    let study = |run: &str| evaluate(&["eval", "labels"], run).0["study"]["summary"].clone();
    assert_eq!(study("memory"), study("streamed"));
    // So does the report: the map, neighbours (thumbnails read again from disk), confusion.
    let streamed_run = root.join("streamed");
    let (ok, _, err) = common::run(&[
        "report",
        streamed_run.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let html = std::fs::read_to_string(streamed_run.join("report.html")).unwrap();
    for id in ["map", "neighbours", "confusion"] {
        assert!(html.contains(&format!("<section id=\"{id}\">")), "no {id}");
    }
    assert!(err.contains("streamed from disk"), "{err}");
    // Cut after 3 of 6 steps and resumed: the streamed loader starts where it left off.
    let cut = root.join("cut");
    let mut args = streamed.to_vec();
    args.extend([
        "--set",
        "train.max_steps=3",
        "--set",
        "train.checkpoint_every=1",
    ]);
    let (ok, _, err) = pretrain("byol_a", &data, &cut, &args);
    assert!(ok, "{err}");
    let mut args = streamed.to_vec();
    args.push("--resume");
    let (ok, json, err) = pretrain("byol_a", &data, &cut, &args);
    assert!(ok, "{err}");
    assert_eq!(json["result"]["resumed_from_step"], 3);
    same_weights(&root.join("memory"), &cut, "streamed, cut and resumed");

    // A clip that turns out unreadable: left out of the statistics, skipped in the batches
    // that draw it (named once, counted per epoch), or the run stops naming it.
    let bad = data.join("train/tone1/zz_truncated.wav");
    let good = std::fs::read(data.join("train/tone1/0.wav")).unwrap();
    std::fs::write(&bad, &good[..good.len() / 3]).unwrap();
    let (ok, _, err) = pretrain("byol_a", &data, &root.join("skip"), &streamed);
    assert!(ok, "{err}");
    assert!(err.contains("33 clips listed"), "{err}");
    assert!(
        err.contains("band statistics: left out 1 unusable clip(s)")
            && err.contains("zz_truncated"),
        "{err}"
    );
    assert!(
        err.contains("skipped: ") && err.contains("unreadable clip(s)"),
        "{err}"
    );
    let (_, err) = eval("skip");
    assert!(
        err.contains("train: skipped 1 unusable clip(s)") && err.contains("zz_truncated"),
        "{err}"
    );
    let mut args = streamed.to_vec();
    args.extend(["--set", "data.on_error=\"stop\""]);
    let (ok, _, err) = pretrain("byol_a", &data, &root.join("stop"), &args);
    assert!(
        !ok && err.contains("zz_truncated.wav") && err.contains("data.on_error = \"stop\""),
        "{err}"
    );
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn bad_clips_are_counted_and_a_folder_of_only_bad_ones_is_refused() {
    let root = dir("bad");
    let class = root.join("data/train/a");
    std::fs::create_dir_all(&class).unwrap();
    for i in 0..20 {
        write_wav(&class.join(format!("{i}.wav")), &tone(440.0, i), 16000).unwrap();
    }
    let good = std::fs::read(class.join("0.wav")).unwrap();
    std::fs::write(class.join("truncated.wav"), &good[..good.len() / 3]).unwrap();
    let mut zero_rate = good.clone();
    zero_rate[24..32].copy_from_slice(&[0; 8]);
    std::fs::write(class.join("zero_rate.wav"), &zero_rate).unwrap();
    write_wav(&class.join("silent.wav"), &vec![0.0; 8000], 16000).unwrap();
    std::fs::write(class.join("noise.mp3"), b"ID3 but nothing after it").unwrap();
    // Stereo at 8 kHz: mixed down and resampled.
    let stereo = root.join("data/train/a/stereo.wav");
    let spec = hound_spec();
    let mut w = hound::WavWriter::create(&stereo, spec).unwrap();
    for s in tone(440.0, 99).iter().step_by(2) {
        let v = (s * 30000.0) as i16;
        w.write_sample(v).unwrap();
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();
    let (ok, json, err) = pretrain(
        "byol_a",
        &root.join("data"),
        &root.join("run"),
        &["--set", "train.max_steps=1"],
    );
    assert!(ok, "{err}");
    let read = &json["read"];
    assert_eq!(read["clips"], 21, "{read}");
    assert_eq!(read["unreadable"], 3, "{read}");
    assert_eq!(read["silent"], 1, "{read}");
    assert_eq!(
        (read["resampled"].as_u64(), read["mixed_down"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(
        err.contains("truncated") || err.contains("unreadable"),
        "{err}"
    );

    let only_bad = root.join("only_bad/x");
    std::fs::create_dir_all(&only_bad).unwrap();
    std::fs::write(only_bad.join("a.wav"), b"RIFF").unwrap();
    let (ok, _, err) = pretrain("byol_a", &root.join("only_bad"), &root.join("run2"), &[]);
    assert!(
        !ok && err.contains("only_bad") && err.contains("none of its 1 audio files"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).ok();
}

fn hound_spec() -> hound::WavSpec {
    hound::WavSpec {
        channels: 2,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

#[test]
fn a_missing_espeak_ng_says_how_to_install_it() {
    let out = std::process::Command::new(BIN)
        .args(["data", "spoken", "--out"])
        .arg(dir("no-espeak").join("spoken"))
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("apt-get install espeak-ng"),
        "{err}"
    );
}

/// The distinct values of column `column` of a labels.tsv, sorted.
fn distinct_values(tsv: &Path, column: usize) -> Vec<String> {
    let text = std::fs::read_to_string(tsv).unwrap();
    let mut values: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(column).unwrap().to_string())
        .collect();
    values.sort();
    values.dedup();
    values
}

const TIMGM: &str = "/usr/share/sounds/sf2/TimGM6mb.sf2";

#[test]
#[ignore = "needs Debian's timgm6mb-soundfont (CI installs it)"]
fn notes_keep_test_programs_out_of_training() {
    let root = dir("notes");
    let out = root.join("notes");
    let (ok, json, err) = run(&[
        "data",
        "notes",
        "--soundfont",
        TIMGM,
        "--out",
        out.to_str().unwrap(),
        "--programs",
        "0-15",
        "--pitches",
        "48-72:12",
        "--velocities",
        "100",
        "--test-programs",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let r = &json["result"];
    // Programs 0-15 are two families of 8; one program of each held out; 3 pitches each.
    assert_eq!(r["test_programs"].as_array().unwrap().len(), 2);
    assert_eq!(
        r["train"].as_u64().unwrap() + r["silent"].as_u64().unwrap() + r["test"].as_u64().unwrap(),
        48
    );
    let programs = |split: &str| distinct_values(&out.join(split).join("labels.tsv"), 1);
    let (train, test) = (programs("train"), programs("test"));
    assert!(
        train.iter().all(|p| !test.contains(p)),
        "{train:?} {test:?}"
    );
    assert!(out.join("train/piano").is_dir() && out.join("test/chromatic_percussion").is_dir());
    // A second build into the same folder is refused; a file that is no SoundFont is named.
    let (ok, _, err) = run(&[
        "data",
        "notes",
        "--soundfont",
        TIMGM,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("already holds"), "{err}");
    let fake = root.join("fake.sf2");
    std::fs::write(&fake, b"RIFF\0\0\0\0sfbk").unwrap();
    let (ok, _, err) = run(&[
        "data",
        "notes",
        "--soundfont",
        fake.to_str().unwrap(),
        "--out",
        root.join("o").to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("fake.sf2") && err.contains("SoundFont"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).ok();
}

#[test]
#[ignore = "needs Debian's espeak-ng (CI installs it)"]
fn spoken_words_are_split_by_speaker() {
    let root = dir("spoken");
    let out = root.join("spoken");
    let (ok, json, err) = run(&[
        "data",
        "spoken",
        "--out",
        out.to_str().unwrap(),
        "--words",
        "yes,no",
        "--variants",
        "3",
        "--test-variants",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let r = &json["result"];
    // 2 words x 7 voices x 3 variants, one variant held out.
    assert_eq!(
        (r["train"].as_u64(), r["test"].as_u64()),
        (Some(28), Some(14))
    );
    let variants = |split: &str| distinct_values(&out.join(split).join("labels.tsv"), 2);
    let (train, test) = (variants("train"), variants("test"));
    assert_eq!((train.len(), test.len()), (2, 1));
    assert!(!train.contains(&test[0]));
    std::fs::remove_dir_all(&root).ok();
}
