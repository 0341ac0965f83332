//! `pretext eval labels`: the label-efficiency study of an image checkpoint (on its image data)
//! or of a masked-language-model checkpoint (on a labelled TSV); writes `labels.json` and
//! `labels.svg` into an image run's folder, `labels.<data>.json` and `.svg` into a text run's
//! (one study per labelled file).

use std::path::Path;

use anyhow::{Context, Result, bail};
use pretext::audio::checkpoint::AudioCheckpoint;
use pretext::audio::eval::align_labels;
use pretext::audio::labels::AudioLabels;
use pretext::core::checkpoint::{Checkpoint, content_hash, remove_stale_temporaries};
use pretext::core::labels::{
    ArmRun, LabelStudy, LabelTask, LabelsConfig, StudyJournal, differing_fields, read_journal,
    run_study,
};
use pretext::core::run_report::{LABELS_FILE, save_label_study, text_labels_file};
use pretext::core::train::RunLock;
use pretext::text::checkpoint::MlmCheckpoint;
use pretext::text::labels::{self as text_labels, TextLabels};
use pretext::text::probe::ProbeSettings;
use pretext::text::tsv::{LabelledTexts, read_labelled_tsv};
use pretext::video::checkpoint::{VideoCheckpoint, read_meta};
use pretext::video::data::stream::open_splits as video_open_splits;
use pretext::video::eval::single_labels;
use pretext::video::labels::VideoLabels;
use pretext::video::methods::VideoMethod;
use pretext::vision::checkpoint::ImageCheckpoint;
use pretext::vision::data::source::limited;
use pretext::vision::labels::{FIXMATCH_SCRATCH, ImageLabels, SCRATCH};
use pretext::with_video_method;
use pretext_word2vec::format::Embeddings;
use serde_json::json;

use crate::Global;
use crate::vision::open_for_eval;

/// The flags of `eval labels`.
pub struct LabelFlags<'a> {
    pub checkpoint: Option<&'a Path>,
    pub vectors: Option<&'a Path>,
    pub data: Option<&'a Path>,
    pub label_column: Option<usize>,
    pub text_column: Option<usize>,
    pub fractions: Option<Vec<f64>>,
    pub seeds: Option<usize>,
    pub arms: Option<Vec<String>>,
    /// Take the from-scratch runs from this other image run's study.
    pub baseline_from: Option<&'a Path>,
    /// Audio checkpoints: the label column studied.
    pub task: Option<&'a str>,
}

/// Finished runs another study lends this one (`--baseline-from`), and the journal they are in.
struct Borrowed {
    runs: Vec<ArmRun>,
    from: std::path::PathBuf,
}

pub fn run(g: &Global, flags: LabelFlags) -> Result<()> {
    let checkpoint = match (flags.checkpoint, flags.vectors) {
        (Some(_), Some(_)) => bail!("give --checkpoint or --vectors, not both"),
        (None, None) => bail!("eval labels needs --checkpoint RUN or --vectors FILE"),
        (None, Some(_)) if flags.baseline_from.is_some() => {
            bail!("--baseline-from is for image checkpoints, not --vectors")
        }
        (None, Some(vectors)) => return vector_study(g, vectors, &flags),
        (Some(c), None) => c,
    };
    let kind = Checkpoint::load(checkpoint)?.meta["kind"]
        .as_str()
        .map(str::to_string);
    if let Some(kind @ ("audio" | "video")) = kind.as_deref() {
        if flags.baseline_from.is_some()
            || flags.label_column.is_some()
            || flags.text_column.is_some()
        {
            bail!(
                "--baseline-from, --label-column and --text-column are not for {kind} checkpoints"
            );
        }
        return if kind == "audio" {
            audio_study(g, checkpoint, flags)
        } else {
            video_study(g, checkpoint, flags)
        };
    }
    if flags.task.is_some() {
        bail!("--task is for audio and video checkpoints (a label column of their data)");
    }
    if pretext::text::checkpoint::is_text_kind(kind.as_deref()) {
        if flags.baseline_from.is_some() {
            bail!("--baseline-from is for image checkpoints; this one is a text run");
        }
        return text_study(g, checkpoint, flags);
    }
    if flags.label_column.is_some() || flags.text_column.is_some() {
        bail!(
            "--label-column and --text-column are for text checkpoints; this one is an image run"
        );
    }
    let (device, splits, loaded, mut config) = open_for_eval(g, checkpoint, flags.data)?;
    apply_flags(&mut config.eval.labels, &flags)?;
    let test = limited(splits.require_test()?.clone(), config.data.test_limit);
    let pool = limited(splits.train.clone(), config.data.train_limit);
    let task = ImageLabels::new(&loaded, &config, &*pool, &*test, &device)?;
    let record = json!({
        "command": "eval labels",
        "checkpoint": checkpoint,
        "data": splits.description,
        "pool": pool.len(),
        "test": test.len(),
        "method": loaded.config.method,
    });
    let json_path = loaded.dir.join(LABELS_FILE);
    // What the runs depend on: the checkpoint (its hash covers its own config), the data's
    // contents (a hash of every pixel and label, so a changed file is another study) and the
    // evaluation settings; not the fractions and seed count, nor config tables a newer
    // pretext adds, which must not orphan a study's journal.
    let mut eval = config.eval.clone();
    eval.labels = LabelsConfig::default();
    let key = json!({
        "checkpoint": content_hash(checkpoint)?,
        "data": splits.description,
        "pool": pool.fingerprint(),
        "test": test.fingerprint(),
        "seed": config.seed,
        "eval": eval,
        "finetune_view": config.finetune_view,
        "strong_view": config.strong_view,
        "validation_fraction": config.eval.labels.validation_fraction,
    });
    let borrowed = match flags.baseline_from {
        Some(other) => Some(borrowed_baseline(&device, other, &loaded, &key)?),
        None => None,
    };
    let labels = &config.eval.labels;
    let study = journaled_study(&task, labels, config.seed, &json_path, key, borrowed)?;
    let headline = format!(
        "{} ({}): {} labelled training images in the pool, {} test images",
        checkpoint.display(),
        loaded.config.method,
        pool.len(),
        test.len()
    );
    finish(g, &json_path, &study, record, &headline)
}

/// The from-scratch runs (supervised and FixMatch) of another image study (`--baseline-from
/// RUN`). Those arms never read the checkpoint's weights: its runs depend on the architecture, the image shape
/// and normalisation, and what the study's key holds besides the checkpoint (data, pool, seed,
/// views, settings). Where all of those agree, rerunning it would give the same numbers, bit
/// for bit, so they are taken instead; where one differs, the message names it.
fn borrowed_baseline(
    device: &burn::prelude::Device,
    other: &Path,
    here: &ImageCheckpoint,
    key: &serde_json::Value,
) -> Result<Borrowed> {
    let there = ImageCheckpoint::open(other, device)
        .with_context(|| format!("--baseline-from {}", other.display()))?;
    let from = there.dir.join(LABELS_FILE).with_extension("runs.jsonl");
    let (their_key, runs) = read_journal(&from)?;
    let baseline_key = |key: &serde_json::Value, ckpt: &ImageCheckpoint| -> Result<_> {
        let mut key = key.clone();
        if let Some(fields) = key.as_object_mut() {
            fields.remove("checkpoint");
            fields.insert(
                "backbone".into(),
                serde_json::to_value(&ckpt.config.backbone)?,
            );
            fields.insert("image".into(), json!(ckpt.shape));
            fields.insert("mean".into(), json!(ckpt.mean));
            fields.insert("std".into(), json!(ckpt.std));
        }
        Ok(key)
    };
    let differing = differing_fields(
        &baseline_key(key, here)?,
        &baseline_key(&their_key, &there)?,
    );
    if !differing.is_empty() {
        bail!(
            "--baseline-from {}: its supervised runs would not be this study's ({}); run this \
             study without the flag",
            other.display(),
            differing.join("; ")
        );
    }
    let runs = runs
        .into_iter()
        .filter(|r| r.arm == SCRATCH || r.arm == FIXMATCH_SCRATCH)
        .collect();
    Ok(Borrowed { runs, from })
}

/// The labelled TSV and the probe settings (`--config`, `--set`) of a text study.
fn text_inputs(g: &Global, flags: &LabelFlags) -> Result<(LabelledTexts, ProbeSettings)> {
    let data = flags
        .data
        .context("eval labels on text needs --data FILE.tsv (labelled texts)")?;
    let mut settings: ProbeSettings =
        pretext::core::config::load_config(g.config.as_deref(), &g.set)?;
    apply_flags(&mut settings.eval.labels, flags)?;
    settings.eval.validate()?;
    let texts = read_labelled_tsv(data, flags.label_column, flags.text_column)?;
    for w in &texts.warnings {
        eprintln!("warning: {w}");
    }
    Ok((texts, settings))
}

fn vector_study(g: &Global, vectors: &Path, flags: &LabelFlags) -> Result<()> {
    let device = pretext::core::device::parse(&g.device)?;
    let (texts, settings) = text_inputs(g, flags)?;
    let (embeddings, _) = Embeddings::load(vectors)?;
    for w in embeddings.warnings() {
        eprintln!("warning: {w}");
    }
    let seed = g.seed.unwrap_or(0);
    let task = text_labels::vector_study(
        &texts,
        |w| embeddings.get(w),
        embeddings.dim(),
        &settings,
        seed,
        &device,
    )?;
    let data = flags.data.unwrap_or(Path::new(""));
    let record = json!({
        "command": "eval labels",
        "vectors": vectors,
        "data": data,
        "pool": task.pool_labels.len(),
        "test": task.test_labels.len(),
        "method": "word vectors",
    });
    // Vectors have no run folder: the study goes beside the file, named after it and the data
    // (vectors.sentiment.labels.json), so studies of one file on several sets all stay.
    let stem = data.file_stem().and_then(|s| s.to_str()).unwrap_or("data");
    let out = vectors.with_extension(format!("{stem}.labels.json"));
    let key = text_key(vectors, data, flags, seed, &settings)?;
    let study = journaled_study(&task, &settings.eval.labels, seed, &out, key, None)?;
    let headline = format!(
        "{} ({} words x {}): {}: {} labelled texts in the pool, {} test texts",
        vectors.display(),
        embeddings.len(),
        embeddings.dim(),
        data.display(),
        task.pool_labels.len(),
        task.test_labels.len()
    );
    finish(g, &out, &study, record, &headline)
}

fn text_study(g: &Global, checkpoint: &Path, flags: LabelFlags) -> Result<()> {
    let device = pretext::core::device::parse(&g.device)?;
    let (texts, settings) = text_inputs(g, &flags)?;
    let data = flags.data.unwrap_or(Path::new(""));
    let ckpt = MlmCheckpoint::load(checkpoint, &device)?;
    let seed = g.seed.unwrap_or(ckpt.config.seed);
    let task = TextLabels::new(&ckpt, &texts, &settings, seed, &device)?;
    let json_path = text_labels_file(&ckpt.dir, data);
    let key = text_key(checkpoint, data, &flags, seed, &settings)?;
    let study = journaled_study(&task, &settings.eval.labels, seed, &json_path, key, None)?;
    let record = json!({
        "command": "eval labels",
        "checkpoint": checkpoint,
        "data": data,
        "pool": task.pool_size(),
        "test": task.test_size(),
        "method": ckpt.objective(),
    });
    let headline = format!(
        "{} ({}, step {}): {}: {} labelled texts in the pool, {} test texts",
        checkpoint.display(),
        ckpt.objective(),
        ckpt.step,
        data.display(),
        task.pool_size(),
        task.test_size()
    );
    finish(g, &json_path, &study, record, &headline)
}

/// The study of an audio checkpoint on the train and test folders of `--data`, on the label
/// column `--task` (default `class`); written to `labels.<task>.json` in the run folder.
fn audio_study(g: &Global, checkpoint: &Path, flags: LabelFlags) -> Result<()> {
    let device = pretext::core::device::parse(&g.device)?;
    let ckpt = AudioCheckpoint::open(checkpoint, &device)?;
    let data = flags
        .data
        .context("an audio study needs --data DIR (a folder with train/ and test/)")?;
    let task_name = flags.task.unwrap_or("class");
    let mut config: pretext::audio::config::AudioConfig =
        pretext::core::config::with_eval_settings(
            &ckpt.config.to_toml(),
            &g.set,
            "an audio study",
        )?;
    config.eval.validate()?;
    apply_flags(&mut config.eval.labels, &flags)?;
    let seed = g.seed.unwrap_or(config.seed);
    let (pool, test) = pretext::audio::data::stream::read_splits(data, None, &config.data)?;
    let (rows, test_labels) = align_labels(pool.task(task_name)?, test.task(task_name)?);
    let test = test.select(&rows);
    let task = AudioLabels::new(
        &ckpt,
        config.eval.clone(),
        pool,
        test,
        task_name,
        test_labels,
        &device,
    )?;
    let json_path = ckpt.dir.join(format!("labels.{task_name}.json"));
    let mut eval = config.eval.clone();
    eval.labels = LabelsConfig::default();
    let key = json!({
        "checkpoint": content_hash(checkpoint)?,
        "data": data,
        "task": task_name,
        "data_config": config.data,
        "seed": seed,
        "eval": eval,
        "validation_fraction": config.eval.labels.validation_fraction,
    });
    let study = journaled_study(&task, &config.eval.labels, seed, &json_path, key, None)?;
    let record = json!({
        "command": "eval labels",
        "checkpoint": checkpoint,
        "data": data,
        "task": task_name,
        "pool": task.pool_size(),
        "test": task.test_size(),
        "method": config.method,
    });
    let headline = format!(
        "{} ({}): '{task_name}' of {}: {} labelled clips in the pool, {} test clips",
        checkpoint.display(),
        config.method,
        data.display(),
        task.pool_size(),
        task.test_size()
    );
    finish(g, &json_path, &study, record, &headline)
}

/// The study of a video checkpoint on the two splits of `--data`, on one single-label column
/// (`--task`, default `direction`).
fn video_study(g: &Global, checkpoint: &Path, flags: LabelFlags) -> Result<()> {
    let device = pretext::core::device::parse(&g.device)?;
    let (_, config, _) = read_meta(checkpoint)?;
    with_video_method!(config.method.as_str(), M => {
        let ckpt = VideoCheckpoint::<M>::open(checkpoint, &device)?;
        video_study_of(g, checkpoint, &ckpt, flags, &device)
    })
}

fn video_study_of<M: VideoMethod>(
    g: &Global,
    checkpoint: &Path,
    ckpt: &VideoCheckpoint<M>,
    flags: LabelFlags,
    device: &burn::prelude::Device,
) -> Result<()> {
    let data = flags
        .data
        .context("a video study needs --data DIR (Moving MNIST, or train/ and test/ folders)")?;
    let task_name = flags.task.unwrap_or("direction");
    let mut config: pretext::video::config::VideoConfig =
        pretext::core::config::with_eval_settings(&ckpt.config.to_toml(), &g.set, "a video study")?;
    config.eval.validate()?;
    apply_flags(&mut config.eval.labels, &flags)?;
    let seed = g.seed.unwrap_or(config.seed);
    let data_config = config.data.first_frames_only(M::feature_frames(&config));
    let (pool, test, _) = video_open_splits(data, &data_config)?;
    let test = test.with_context(|| format!("{}: no test split", data.display()))?;
    let (pool_labels, rows, test_labels) =
        single_labels(pool.task(task_name)?, test.task(task_name)?)?;
    let classes = pool.task(task_name)?.classes.clone();
    let task = VideoLabels::new(
        ckpt,
        config.eval.clone(),
        (pool, test, rows),
        (pool_labels, test_labels),
        classes,
        device,
    )?;
    let json_path = ckpt.dir.join(format!("labels.{task_name}.json"));
    let mut eval = config.eval.clone();
    eval.labels = LabelsConfig::default();
    let key = json!({
        "checkpoint": content_hash(checkpoint)?,
        "data": data,
        "task": task_name,
        "data_config": data_config,
        "seed": seed,
        "eval": eval,
        "validation_fraction": config.eval.labels.validation_fraction,
    });
    let study = journaled_study(&task, &config.eval.labels, seed, &json_path, key, None)?;
    let record = json!({
        "command": "eval labels",
        "checkpoint": checkpoint,
        "data": data,
        "task": task_name,
        "pool": task.pool_size(),
        "test": task.test_size(),
        "method": config.method,
    });
    let headline = format!(
        "{} ({}): '{task_name}' of {}: {} labelled videos in the pool, {} test videos",
        checkpoint.display(),
        config.method,
        data.display(),
        task.pool_size(),
        task.test_size()
    );
    finish(g, &json_path, &study, record, &headline)
}

/// What a text study's runs depend on besides arm, fraction and seed: the model, the TSV's
/// contents and which of its columns are the label and the text, and the settings.
fn text_key(
    model: &Path,
    data: &Path,
    flags: &LabelFlags,
    seed: u64,
    settings: &ProbeSettings,
) -> Result<serde_json::Value> {
    let mut settings = settings.clone();
    settings.eval.labels = LabelsConfig::default();
    Ok(json!({
        "model": content_hash(model)?,
        "data": content_hash(data)?,
        "label_column": flags.label_column,
        "text_column": flags.text_column,
        "seed": seed,
        "settings": settings,
    }))
}

/// [`run_study`] with its journal beside `json_path` (`labels.runs.jsonl`), so an interrupted
/// or extended study reruns nothing it has. `key` holds what the runs depend on besides arm,
/// fraction and seed; the fractions and seed count are left out of it on purpose.
fn journaled_study(
    task: &impl LabelTask,
    labels: &LabelsConfig,
    seed: u64,
    json_path: &Path,
    key: serde_json::Value,
    borrowed: Option<Borrowed>,
) -> Result<LabelStudy> {
    // One study per folder at a time (and none while a run trains there): they share files.
    let dir = json_path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let _lock = RunLock::acquire(dir, "eval labels")?;
    remove_stale_temporaries(dir);
    let mut journal = StudyJournal::open(&json_path.with_extension("runs.jsonl"), key)?;
    if let Some(note) = &journal.note {
        eprintln!("{note}");
    }
    if let Some(Borrowed { runs, from }) = borrowed {
        let offered = runs.len();
        let taken = journal.import(runs, &from)?;
        eprintln!(
            "{}: took {taken} from-scratch run(s) ({offered} there, the rest already here)",
            from.display()
        );
    }
    run_study(task, labels, seed, Some(&mut journal), progress)
}

/// `--fractions`, `--seeds` and `--arms` replace the config's `eval.labels` settings.
fn apply_flags(labels: &mut LabelsConfig, flags: &LabelFlags) -> Result<()> {
    if let Some(f) = &flags.fractions {
        labels.fractions = f.clone();
    }
    if let Some(n) = flags.seeds {
        labels.seeds = n;
    }
    if let Some(arms) = &flags.arms {
        labels.arms = arms.clone();
    }
    labels.validate().context("--fractions / --seeds")
}

fn progress(run: &ArmRun) {
    eprintln!(
        "{:<12} {:>7.2}% of labels ({:>6} rows), seed {:>20}: {:.2}% ({:.0}s)",
        run.arm,
        100.0 * run.fraction,
        run.labelled,
        run.seed,
        100.0 * run.accuracy,
        run.seconds
    );
}

fn finish(
    g: &Global,
    json_path: &Path,
    study: &LabelStudy,
    record: serde_json::Value,
    headline: &str,
) -> Result<()> {
    let (json_path, svg_path) = save_label_study(json_path, study, record.clone())?;
    if g.json {
        let mut record = record;
        record["study"] = serde_json::to_value(study)?;
        println!("{record}");
    } else {
        let reused = match study.reused {
            0 => String::new(),
            n => format!(
                " ({n} of {} runs read back from the journal)",
                study.runs.len()
            ),
        };
        println!("{headline}, {} seed(s){reused}", study.seeds.len());
        print!("{}", study.table());
        for saved in &study.labels_saved {
            println!("labels saved: {}", saved.statement);
        }
        println!("wrote {} and {}", json_path.display(), svg_path.display());
    }
    Ok(())
}
