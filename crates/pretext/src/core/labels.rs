//! Label efficiency: accuracy against the share of labels used, for every arm of a study
//! (kNN and linear probes on frozen features, fine-tuning, supervised training from scratch),
//! over several seeds, and how many labels pretraining saves.
//!
//! A modality describes its arms through [`LabelTask`]; [`run_study`] draws the nested,
//! stratified subsets once per seed (the same for every arm), runs every arm on them, and
//! summarises. "Labels saved" reads off the supervised curve (log-interpolated between the
//! measured fractions) which fraction of labels training from scratch needs to match the
//! fine-tuned accuracy at each smaller fraction.
//!
//! A study can take hours on a CPU, so every finished run goes to a [`StudyJournal`]: an
//! interrupted study picks up where it stopped, and one extended by a fraction or a seed reruns
//! nothing it already has. The supervised baseline does not read the checkpoint, so a study of
//! a second checkpoint of the same architecture can take that arm's runs from the first study's
//! journal ([`StudyJournal::import`]) instead of training them again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use burn::module::Module;
use burn::prelude::{Device, Tensor};

use crate::core::checkpoint::{unused_path, write_atomic};
use crate::core::config::EvalConfig;
use crate::core::eval::{Features, Labelled, knn_accuracy, linear_probe};
use crate::core::finetune::{Classifier, Pass, Plan, soft_labels, train_classifier};
use crate::core::loader::mix_seed;
use crate::core::split::{LabelSubset, label_subsets};

/// `[eval.labels]`: which fractions of the labels, how many seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    /// Shares of the training labels, each in (0, 1].
    pub fractions: Vec<f64>,
    /// Repetitions, each with its own subsets and initialisations.
    pub seeds: usize,
    /// Share of each labelled subset held out to choose the fine-tuning epoch.
    pub validation_fraction: f64,
    /// Arms to run, by name; empty runs every arm the checkpoint offers.
    pub arms: Vec<String>,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        LabelsConfig {
            fractions: vec![0.01, 0.1, 1.0],
            seeds: 3,
            validation_fraction: 0.1,
            arms: Vec::new(),
        }
    }
}

/// `[eval.distill]`: the distillation arm (SimCLRv2's third stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// Passes of the student over the unlabelled pool (raised to reach
    /// `eval.finetune.min_steps`).
    pub epochs: usize,
    /// Temperature of the teacher's soft labels (1: its probabilities as they are).
    pub temperature: f64,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            epochs: 2,
            temperature: 1.0,
        }
    }
}

impl DistillConfig {
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("eval.distill.epochs must be at least 1");
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            bail!(
                "eval.distill.temperature = {}: must be positive",
                self.temperature
            );
        }
        Ok(())
    }
}

/// Which arms "labels saved" compares: at each fraction, the best of the `pretrained` arms
/// against the curve of the best `baseline` arm (those that never see pretrained weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ComparisonRepr")]
pub struct Comparison {
    pub pretrained: Vec<String>,
    pub baseline: Vec<String>,
}

impl Comparison {
    pub fn new(pretrained: &[&str], baseline: &[&str]) -> Comparison {
        let names = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
        Comparison {
            pretrained: names(pretrained),
            baseline: names(baseline),
        }
    }
}

/// Studies written before the best-of comparison stored one pair of arms.
#[derive(Deserialize)]
#[serde(untagged)]
enum ComparisonRepr {
    Pair(String, String),
    Sets {
        pretrained: Vec<String>,
        baseline: Vec<String>,
    },
}

impl From<ComparisonRepr> for Comparison {
    fn from(r: ComparisonRepr) -> Comparison {
        match r {
            ComparisonRepr::Pair(p, b) => Comparison {
                pretrained: vec![p],
                baseline: vec![b],
            },
            ComparisonRepr::Sets {
                pretrained,
                baseline,
            } => Comparison {
                pretrained,
                baseline,
            },
        }
    }
}

impl LabelsConfig {
    pub fn validate(&self) -> Result<()> {
        if self.fractions.is_empty() {
            bail!("eval.labels.fractions is empty");
        }
        for &f in &self.fractions {
            if !(f > 0.0 && f <= 1.0) {
                bail!("eval.labels.fractions: {f} is outside (0, 1]");
            }
        }
        if self.seeds == 0 {
            bail!("eval.labels.seeds must be at least 1");
        }
        if !(0.0..0.5).contains(&self.validation_fraction) {
            bail!(
                "eval.labels.validation_fraction = {}: must lie in [0, 0.5)",
                self.validation_fraction
            );
        }
        Ok(())
    }
}

/// One arm on one labelled subset.
#[derive(Debug, Clone, Serialize)]
pub struct ArmOutcome {
    pub accuracy: f64,
    /// Arm-specific facts (chosen epoch, steps, ...).
    pub detail: serde_json::Value,
}

/// What a modality offers a label-efficiency study.
pub trait LabelTask {
    /// Arm names, in the order they are reported.
    fn arms(&self) -> Vec<String>;
    /// The pretrained arms and the supervised baselines that "labels saved" compares.
    fn comparison(&self) -> Option<Comparison>;
    /// Whether `arm` has nothing to run at `fraction` (a semi-supervised arm when every
    /// image is labelled).
    fn skips(&self, _arm: &str, _fraction: f64) -> bool {
        false
    }
    /// Labels of the training pool that subsets are drawn from.
    fn pool_labels(&self) -> &[u32];
    fn class_names(&self) -> &[String];
    /// Train (or fit) `arm` on `subset` and score it on the test split.
    fn run_arm(&self, arm: &str, subset: &LabelSubset, seed: u64) -> Result<ArmOutcome>;
}

/// A linear probe trained on the `subset` rows of `features.0` (the pool) and scored on
/// `features.1` (the test rows): the frozen-feature arm of any modality.
#[allow(clippy::too_many_arguments)]
pub fn probe_subset(
    features: &(Features, Features),
    pool_labels: &[u32],
    test_labels: &[u32],
    classes: usize,
    subset: &LabelSubset,
    eval: &EvalConfig,
    seed: u64,
    device: &Device,
) -> Result<f64> {
    let rows = features.0.rows(&subset.train);
    let labels: Vec<u32> = subset.train.iter().map(|&i| pool_labels[i]).collect();
    let train = Labelled {
        features: &rows,
        labels: &labels,
    };
    let test = Labelled {
        features: &features.1,
        labels: test_labels,
    };
    linear_probe(train, test, classes, eval, seed, device)
}

/// The features in `cell` (a study's frozen features of pool and test), computed by `make`
/// the first time an arm asks for them.
pub fn cached_features(
    cell: &std::cell::OnceCell<(Features, Features)>,
    make: impl FnOnce() -> Result<(Features, Features)>,
) -> Result<&(Features, Features)> {
    if cell.get().is_none() {
        let _ = cell.set(make()?);
    }
    cell.get().context("features computed just before")
}

/// Weighted kNN with the `subset` rows of `features.0` (the pool) as neighbours, scored on
/// `features.1` (the test rows).
pub fn knn_subset(
    features: &(Features, Features),
    pool_labels: &[u32],
    test_labels: &[u32],
    classes: usize,
    subset: &LabelSubset,
    eval: &EvalConfig,
) -> f64 {
    let rows = features.0.rows(&subset.train);
    let labels: Vec<u32> = subset.train.iter().map(|&i| pool_labels[i]).collect();
    knn_accuracy(
        Labelled::new(&rows, &labels),
        Labelled::new(&features.1, test_labels),
        classes,
        eval.knn_k,
        eval.knn_temperature,
    )
}

/// One supervised or semi-supervised arm: [`train_classifier`] as `plan` says, with what it
/// reached as the arm's outcome. The caller gives a fresh encoder the settings of
/// [`FineTuneConfig::from_scratch`](crate::core::finetune::FineTuneConfig::from_scratch).
pub fn supervised_arm<E, F>(encoder: E, plan: Plan<F>) -> Result<(Classifier<E>, ArmOutcome)>
where
    E: Module + Clone,
    F: Fn(&E, &[usize], Pass, &Device) -> Result<Tensor<2>>,
{
    let (model, trained) = train_classifier(encoder, plan)?;
    let outcome = ArmOutcome {
        accuracy: trained.test_accuracy,
        detail: serde_json::to_value(&trained)?,
    };
    Ok((model, outcome))
}

/// The distillation arm's name, the same for every modality that offers it.
pub const DISTILL: &str = "distill";

/// Every pool row outside `subset`'s validation part: what the semi-supervised arms learn
/// from. The validation rows stay unseen, so that they choose the epoch honestly.
pub fn unlabelled_rows(pool_len: usize, subset: &LabelSubset) -> Vec<usize> {
    (0..pool_len)
        .filter(|i| subset.validation.binary_search(i).is_err())
        .collect()
}

/// The distillation arm's teachers: the model a study's `finetune` arm trained on a subset,
/// kept by (fraction, seed) until that subset's `distill` arm, which runs right after it,
/// takes it. A teacher whose fine-tuning run was read back from the journal is trained again.
pub struct Teachers<M> {
    kept: RefCell<HashMap<(u64, u64), M>>,
}

impl<M> Default for Teachers<M> {
    fn default() -> Self {
        Teachers {
            kept: RefCell::new(HashMap::new()),
        }
    }
}

impl<M> Teachers<M> {
    /// Keep `model` if the study will distil from it: `arms` (its `eval.labels.arms`, empty
    /// for every arm) includes `distill`, and `task` runs that arm at this fraction.
    pub fn keep(
        &self,
        task: &impl LabelTask,
        arms: &[String],
        subset: &LabelSubset,
        seed: u64,
        model: M,
    ) {
        let wanted = arms.is_empty() || arms.iter().any(|a| a == DISTILL);
        if wanted && !task.skips(DISTILL, subset.fraction) {
            let key = (subset.fraction.to_bits(), seed);
            self.kept.borrow_mut().insert(key, model);
        }
    }

    /// The kept teacher of `subset` and `seed`, or the one `train` makes.
    fn take_or_train(
        &self,
        subset: &LabelSubset,
        seed: u64,
        train: impl FnOnce() -> Result<M>,
    ) -> Result<M> {
        let key = (subset.fraction.to_bits(), seed);
        let kept = self.kept.borrow_mut().remove(&key);
        match kept {
            Some(model) => Ok(model),
            None => train(),
        }
    }
}

impl<E: Module + Clone> Teachers<Classifier<E>> {
    /// The distillation arm's targets: the class probabilities at `config.temperature` of the
    /// teacher of `subset` and `seed` (kept, or made by `train`) on the pool `rows`, which
    /// `features` presents as plain views.
    #[allow(clippy::too_many_arguments)]
    pub fn soft_labels<F>(
        &self,
        subset: &LabelSubset,
        seed: u64,
        train: impl FnOnce() -> Result<Classifier<E>>,
        rows: &[usize],
        features: F,
        config: &DistillConfig,
        device: &Device,
    ) -> Result<Vec<f32>>
    where
        F: Fn(&E, &[usize], Pass, &Device) -> Result<Tensor<2>>,
    {
        let teacher = self.take_or_train(subset, seed, train)?;
        soft_labels(&teacher, rows, features, config.temperature, device)
    }
}

/// A study needs two classes at least.
pub fn require_classes(classes: usize) -> Result<()> {
    if classes < 2 {
        bail!("a label study needs at least two classes; the data has {classes}");
    }
    Ok(())
}

/// A study whose every arm is a linear probe on precomputed features (word vectors against
/// bag-of-words, say).
pub struct FrozenArms {
    /// Each arm's name with its pool and test features.
    pub arms: Vec<(String, (Features, Features))>,
    pub comparison: Option<Comparison>,
    pub pool_labels: Vec<u32>,
    pub test_labels: Vec<u32>,
    pub class_names: Vec<String>,
    pub eval: EvalConfig,
    pub device: Device,
}

impl LabelTask for FrozenArms {
    fn arms(&self) -> Vec<String> {
        self.arms.iter().map(|(name, _)| name.clone()).collect()
    }

    fn comparison(&self) -> Option<Comparison> {
        self.comparison.clone()
    }

    fn pool_labels(&self) -> &[u32] {
        &self.pool_labels
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn run_arm(&self, arm: &str, subset: &LabelSubset, seed: u64) -> Result<ArmOutcome> {
        let Some((_, features)) = self.arms.iter().find(|(name, _)| name == arm) else {
            bail!("unknown arm '{arm}'");
        };
        let accuracy = probe_subset(
            features,
            &self.pool_labels,
            &self.test_labels,
            self.class_names.len(),
            subset,
            &self.eval,
            seed,
            &self.device,
        )?;
        Ok(ArmOutcome {
            accuracy,
            detail: serde_json::json!({}),
        })
    }
}

/// One arm, fraction and seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmRun {
    pub arm: String,
    pub fraction: f64,
    pub seed: u64,
    /// Labelled rows trained on (the validation part excluded).
    pub labelled: usize,
    pub validation: usize,
    pub accuracy: f64,
    pub seconds: f64,
    pub detail: serde_json::Value,
}

/// Mean and standard deviation over seeds of one arm at one fraction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmSummary {
    pub arm: String,
    pub fraction: f64,
    pub labelled: usize,
    pub mean: f64,
    /// Sample standard deviation (0 for a single seed).
    pub std: f64,
    pub seeds: usize,
}

/// How much of the labels the baseline needs to match the pretrained arm at `fraction`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelsSaved {
    pub fraction: f64,
    /// The best pretrained arm at this fraction, and its mean accuracy.
    #[serde(default)]
    pub pretrained_arm: String,
    pub pretrained_accuracy: f64,
    /// The best baseline arm at each measured fraction (the curve read off).
    #[serde(default)]
    pub baseline_arms: Vec<(f64, String)>,
    /// The fraction the baseline needs, when it lies inside the measured range.
    pub baseline_fraction_needed: Option<f64>,
    /// `baseline_fraction_needed / fraction`.
    pub factor: Option<f64>,
    pub statement: String,
}

/// A whole study, as `labels.json` stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelStudy {
    pub arms: Vec<String>,
    pub fractions: Vec<f64>,
    pub seeds: Vec<u64>,
    pub comparison: Option<Comparison>,
    pub runs: Vec<ArmRun>,
    pub summary: Vec<ArmSummary>,
    pub labels_saved: Vec<LabelsSaved>,
    /// Seconds this invocation took (runs read back from the journal cost nothing).
    pub seconds: f64,
    /// Runs read back from the journal instead of being run again.
    #[serde(default)]
    pub reused: usize,
}

/// The finished runs of one study, a JSON line each after a header line holding the study's
/// key (what the runs depend on besides arm, fraction and seed: the checkpoint's content, the
/// data, the evaluation settings). A journal with another key belongs to another study and is
/// started afresh; a torn last line (a killed process) is dropped.
pub struct StudyJournal {
    path: PathBuf,
    done: HashMap<(String, u64, u64), ArmRun>,
    file: std::fs::File,
    /// What opening found, for the user.
    pub note: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct JournalHeader {
    journal: String,
    key: serde_json::Value,
}

const JOURNAL_KIND: &str = "pretext label study";

fn run_key(arm: &str, fraction: f64, seed: u64) -> (String, u64, u64) {
    (arm.to_string(), fraction.to_bits(), seed)
}

impl StudyJournal {
    pub fn open(path: &Path, key: serde_json::Value) -> Result<StudyJournal> {
        let header = JournalHeader {
            journal: JOURNAL_KIND.into(),
            key,
        };
        let mut done = HashMap::new();
        let mut note = None;
        let mut kept = vec![serde_json::to_string(&header)?];
        if let Ok(text) = std::fs::read_to_string(path) {
            let mut lines = text.lines();
            let same = lines
                .next()
                .and_then(|l| serde_json::from_str::<JournalHeader>(l).ok())
                .is_some_and(|h| h.journal == JOURNAL_KIND && h.key == header.key);
            if same {
                for (i, line) in lines.enumerate() {
                    match serde_json::from_str::<ArmRun>(line) {
                        Ok(run) => {
                            kept.push(line.to_string());
                            done.insert(run_key(&run.arm, run.fraction, run.seed), run);
                        }
                        Err(_) => {
                            note = Some(format!(
                                "{}: line {} is torn (an interrupted write); it and what follows \
                                 are run again",
                                path.display(),
                                i + 2
                            ));
                            break;
                        }
                    }
                }
                if note.is_none() && !done.is_empty() {
                    note = Some(format!(
                        "{}: {} finished run(s) of this study are reused",
                        path.display(),
                        done.len()
                    ));
                }
            } else {
                // Nothing is lost: the other study's runs are moved aside, beside (never over)
                // those of any earlier study kept there.
                let aside = unused_path(&path.with_extension("stale.jsonl"));
                std::fs::rename(path, &aside)
                    .with_context(|| format!("cannot move {} aside", path.display()))?;
                note = Some(format!(
                    "{}: its runs belong to another study (other checkpoint, data or settings); \
                     they are kept in {} and this study starts afresh",
                    path.display(),
                    aside.display()
                ));
            }
        }
        let mut text = kept.join("\n");
        text.push('\n');
        write_atomic(path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot append to {}", path.display()))?;
        Ok(StudyJournal {
            path: path.to_path_buf(),
            done,
            file,
            note,
        })
    }

    /// Record another study's finished runs (read by [`read_journal`]) as this study's, unless
    /// this one already has them, each marked with where it came from (`detail.from`); the
    /// caller has checked that they would come out the same here. Returns how many were taken.
    pub fn import(&mut self, runs: Vec<ArmRun>, from: &Path) -> Result<usize> {
        let mut taken = 0;
        for mut run in runs {
            if self.get(&run.arm, run.fraction, run.seed).is_some() {
                continue;
            }
            if let serde_json::Value::Object(detail) = &mut run.detail {
                detail.insert("from".into(), from.display().to_string().into());
            }
            self.record(&run)?;
            taken += 1;
        }
        Ok(taken)
    }

    fn get(&self, arm: &str, fraction: f64, seed: u64) -> Option<&ArmRun> {
        self.done.get(&run_key(arm, fraction, seed))
    }

    fn record(&mut self, run: &ArmRun) -> Result<()> {
        let mut line = serde_json::to_string(run)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        self.done
            .insert(run_key(&run.arm, run.fraction, run.seed), run.clone());
        Ok(())
    }
}

/// The key and the finished runs of the study journal at `path`, for
/// [`StudyJournal::import`]; a torn last line is left out.
pub fn read_journal(path: &Path) -> Result<(serde_json::Value, Vec<ArmRun>)> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {}: no label study there (run `pretext eval labels` on that run first)",
            path.display()
        )
    })?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .and_then(|l| serde_json::from_str::<JournalHeader>(l).ok())
        .filter(|h| h.journal == JOURNAL_KIND)
        .with_context(|| format!("{}: not a label study journal", path.display()))?;
    let runs = lines
        .map_while(|l| serde_json::from_str::<ArmRun>(l).ok())
        .collect();
    Ok((header.key, runs))
}

/// The top-level fields in which two JSON objects differ, each with both values
/// (`field: here A, there B`), for messages that say why two studies cannot share runs.
pub fn differing_fields(here: &serde_json::Value, there: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (
        here.as_object().unwrap_or(&empty),
        there.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let shown = |v: Option<&serde_json::Value>| v.map_or("(absent)".to_string(), |v| v.to_string());
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: here {}, there {}", shown(a.get(k)), shown(b.get(k))))
        .collect()
}

/// Run every arm of `task` on the subsets of every fraction, for `config.seeds` seeds derived
/// from `seed`; `progress` hears of each finished run. Runs found in `journal` are taken from
/// it; new ones are added to it as they finish.
pub fn run_study(
    task: &impl LabelTask,
    config: &LabelsConfig,
    seed: u64,
    mut journal: Option<&mut StudyJournal>,
    progress: impl Fn(&ArmRun),
) -> Result<LabelStudy> {
    config.validate()?;
    let started = Instant::now();
    let mut fractions = config.fractions.clone();
    fractions.sort_by(f64::total_cmp);
    fractions.dedup();
    let offered = task.arms();
    let arms: Vec<String> = if config.arms.is_empty() {
        offered
    } else {
        for arm in &config.arms {
            if !offered.contains(arm) {
                bail!(
                    "eval.labels.arms: unknown arm '{arm}'; this checkpoint offers {}",
                    offered.join(", ")
                );
            }
        }
        offered
            .into_iter()
            .filter(|a| config.arms.contains(a))
            .collect()
    };
    let seeds: Vec<u64> = (0..config.seeds as u64)
        .map(|i| mix_seed(&[seed, i, 0x5EED]))
        .collect();
    let mut runs = Vec::new();
    let mut reused = 0;
    for &s in &seeds {
        let subsets = label_subsets(
            task.pool_labels(),
            task.class_names(),
            &fractions,
            config.validation_fraction,
            s,
        )?;
        for subset in &subsets {
            for arm in &arms {
                if task.skips(arm, subset.fraction) {
                    continue;
                }
                if let Some(run) = journal
                    .as_ref()
                    .and_then(|j| j.get(arm, subset.fraction, s))
                {
                    reused += 1;
                    runs.push(run.clone());
                    continue;
                }
                let t = Instant::now();
                let outcome = task.run_arm(arm, subset, s).with_context(|| {
                    format!("arm '{arm}' at {} of the labels", percent(subset.fraction))
                })?;
                let run = ArmRun {
                    arm: arm.clone(),
                    fraction: subset.fraction,
                    seed: s,
                    labelled: subset.train.len(),
                    validation: subset.validation.len(),
                    accuracy: outcome.accuracy,
                    seconds: t.elapsed().as_secs_f64(),
                    detail: outcome.detail,
                };
                if let Some(j) = journal.as_mut() {
                    j.record(&run)?;
                }
                progress(&run);
                runs.push(run);
            }
        }
    }
    let summary = summarise(&arms, &fractions, &runs);
    let comparison = task.comparison();
    let labels_saved = comparison
        .as_ref()
        .map(|c| labels_saved(&summary, c))
        .unwrap_or_default();
    Ok(LabelStudy {
        arms,
        fractions,
        seeds,
        comparison,
        runs,
        summary,
        labels_saved,
        seconds: started.elapsed().as_secs_f64(),
        reused,
    })
}

fn summarise(arms: &[String], fractions: &[f64], runs: &[ArmRun]) -> Vec<ArmSummary> {
    let mut out = Vec::new();
    for arm in arms {
        for &fraction in fractions {
            let of: Vec<&ArmRun> = runs
                .iter()
                .filter(|r| &r.arm == arm && r.fraction == fraction)
                .collect();
            if of.is_empty() {
                continue;
            }
            let n = of.len() as f64;
            let mean = of.iter().map(|r| r.accuracy).sum::<f64>() / n;
            let var = if of.len() > 1 {
                of.iter().map(|r| (r.accuracy - mean).powi(2)).sum::<f64>() / (n - 1.0)
            } else {
                0.0
            };
            out.push(ArmSummary {
                arm: arm.clone(),
                fraction,
                labelled: (of.iter().map(|r| r.labelled).sum::<usize>() as f64 / n).round()
                    as usize,
                mean,
                std: var.sqrt(),
                seeds: of.len(),
            });
        }
    }
    out
}

fn percent(fraction: f64) -> String {
    let p = 100.0 * fraction;
    if p >= 10.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.2}%").replace(".00%", "%")
    }
}

/// The fraction at which the `curve` (fraction, accuracy; ascending fractions) first reaches
/// `target`, interpolating accuracy linearly in log(fraction) between measured points.
/// `Err(best)` when the curve never reaches it; `Ok(None)` when its first point already does.
pub fn fraction_reaching(
    curve: &[(f64, f64)],
    target: f64,
) -> std::result::Result<Option<f64>, f64> {
    let Some(&(_, first)) = curve.first() else {
        return Err(f64::NAN);
    };
    if first >= target {
        return Ok(None);
    }
    for pair in curve.windows(2) {
        let ((f0, a0), (f1, a1)) = (pair[0], pair[1]);
        if a0 < target && a1 >= target {
            let t = (target - a0) / (a1 - a0);
            return Ok(Some((f0.ln() + t * (f1.ln() - f0.ln())).exp()));
        }
    }
    Err(curve.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max))
}

/// At each fraction, the best mean among `arms` and which arm it was.
fn best_curve(summary: &[ArmSummary], arms: &[String]) -> Vec<(f64, f64, String)> {
    let mut curve: Vec<(f64, f64, String)> = Vec::new();
    for s in summary.iter().filter(|s| arms.contains(&s.arm)) {
        match curve.iter_mut().find(|c| c.0 == s.fraction) {
            Some(c) if s.mean > c.1 => *c = (s.fraction, s.mean, s.arm.clone()),
            Some(_) => {}
            None => curve.push((s.fraction, s.mean, s.arm.clone())),
        }
    }
    curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    curve
}

/// "Labels saved": at each fraction below 1, the best pretrained arm's accuracy read off the
/// best baseline's curve (log-interpolated), and the statement that says it with both names.
fn labels_saved(summary: &[ArmSummary], comparison: &Comparison) -> Vec<LabelsSaved> {
    let pre = best_curve(summary, &comparison.pretrained);
    let base = best_curve(summary, &comparison.baseline);
    let (Some((first_fraction, ..)), Some((last_fraction, ..))) = (base.first(), base.last())
    else {
        return Vec::new();
    };
    let (first_fraction, last_fraction) = (*first_fraction, *last_fraction);
    let points: Vec<(f64, f64)> = base.iter().map(|(f, a, _)| (*f, *a)).collect();
    let baseline_arms: Vec<(f64, String)> =
        base.iter().map(|(f, _, arm)| (*f, arm.clone())).collect();
    let mut names: Vec<&str> = base.iter().map(|(_, _, a)| a.as_str()).collect();
    names.dedup();
    let baseline = if names.len() == 1 {
        names[0].to_string()
    } else {
        let each: Vec<String> = base
            .iter()
            .map(|(f, _, a)| format!("{a} at {}", percent(*f)))
            .collect();
        format!("the best baseline ({})", each.join(", "))
    };
    pre.iter()
        .filter(|(f, ..)| *f < 1.0)
        .map(|(fraction, accuracy, pretrained)| {
            let (fraction, accuracy) = (*fraction, *accuracy);
            let acc = format!("{:.2}%", 100.0 * accuracy);
            let (needed, statement) = match fraction_reaching(&points, accuracy) {
                Ok(Some(needed)) if needed >= fraction => (
                    Some(needed),
                    format!(
                        "{baseline} needs about {} of the labels to match {pretrained} on {} \
                         ({acc}): {:.1}x the labels",
                        percent(needed),
                        percent(fraction),
                        needed / fraction
                    ),
                ),
                Ok(Some(needed)) => (
                    Some(needed),
                    format!(
                        "{baseline} matches {pretrained} on {} ({acc}) with only about {} of the \
                         labels ({:.1}x): no saving",
                        percent(fraction),
                        percent(needed),
                        needed / fraction
                    ),
                ),
                Ok(None) => (
                    None,
                    format!(
                        "{baseline} already reaches {pretrained}'s {acc} (on {}) with the \
                         smallest measured fraction, {}: no saving shown in the measured range",
                        percent(fraction),
                        percent(first_fraction)
                    ),
                ),
                Err(best) => (
                    None,
                    format!(
                        "{baseline} never reaches {pretrained}'s {acc} (on {}) in the measured \
                         range: its best is {:.2}%, so it would need more than {} of the labels",
                        percent(fraction),
                        100.0 * best,
                        if last_fraction >= 1.0 {
                            "all".to_string()
                        } else {
                            percent(last_fraction)
                        }
                    ),
                ),
            };
            LabelsSaved {
                fraction,
                pretrained_arm: pretrained.clone(),
                pretrained_accuracy: accuracy,
                baseline_arms: baseline_arms.clone(),
                baseline_fraction_needed: needed,
                factor: needed.map(|n| n / fraction),
                statement,
            }
        })
        .collect()
}

impl LabelStudy {
    /// The mean ± std table, one row per arm, one column per fraction.
    pub fn table(&self) -> String {
        let mut out = format!("{:<14}", "arm");
        for &f in &self.fractions {
            let labelled = self
                .summary
                .iter()
                .find(|s| s.fraction == f)
                .map_or(0, |s| s.labelled);
            out += &format!(" {:>20}", format!("{} ({labelled})", percent(f)));
        }
        out.push('\n');
        for arm in &self.arms {
            out += &format!("{arm:<14}");
            for &f in &self.fractions {
                let cell = self
                    .summary
                    .iter()
                    .find(|s| &s.arm == arm && s.fraction == f)
                    .map_or("-".into(), |s| {
                        format!("{:.2} ± {:.2}%", 100.0 * s.mean, 100.0 * s.std)
                    });
                out += &format!(" {cell:>20}");
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn log_interpolation_reads_the_curve() {
        let curve = [(0.01, 0.50), (0.1, 0.70), (1.0, 0.90)];
        // Halfway in accuracy between 1% and 10% is halfway in log: sqrt(0.01 * 0.1).
        let f = fraction_reaching(&curve, 0.60).unwrap().unwrap();
        assert!((f - 0.031_622_8).abs() < 1e-6, "{f}");
        assert_eq!(fraction_reaching(&curve, 0.90).unwrap(), Some(1.0));
        assert_eq!(fraction_reaching(&curve, 0.40).unwrap(), None);
        assert_eq!(fraction_reaching(&curve, 0.95).unwrap_err(), 0.90);
    }

    /// A task whose arms score a fixed function of the labelled count, recording the subsets.
    struct Fake {
        labels: Vec<u32>,
        names: Vec<String>,
        seen: RefCell<Vec<(String, u64, Vec<usize>)>>,
    }

    impl LabelTask for Fake {
        fn arms(&self) -> Vec<String> {
            vec!["finetune".into(), "scratch".into()]
        }
        fn comparison(&self) -> Option<Comparison> {
            Some(Comparison::new(&["finetune"], &["scratch"]))
        }
        fn pool_labels(&self) -> &[u32] {
            &self.labels
        }
        fn class_names(&self) -> &[String] {
            &self.names
        }
        fn run_arm(&self, arm: &str, subset: &LabelSubset, seed: u64) -> Result<ArmOutcome> {
            self.seen
                .borrow_mut()
                .push((arm.into(), seed, subset.train.clone()));
            let n = subset.train.len() as f64;
            // Scratch needs ten times the labels for the same accuracy; seeds add noise.
            let accuracy = match arm {
                "finetune" => 0.3 + 0.1 * (10.0 * n).log10(),
                _ => 0.3 + 0.1 * n.log10(),
            } + (seed % 7) as f64 * 1e-3;
            Ok(ArmOutcome {
                accuracy,
                detail: serde_json::json!({}),
            })
        }
    }

    #[test]
    fn every_arm_sees_the_same_subsets_and_savings_are_read_off() {
        let task = Fake {
            labels: (0..2000).map(|i| (i % 4) as u32).collect(),
            names: Vec::new(),
            seen: RefCell::new(Vec::new()),
        };
        let config = LabelsConfig {
            fractions: vec![1.0, 0.01, 0.1],
            seeds: 2,
            validation_fraction: 0.1,
            arms: Vec::new(),
        };
        let study = run_study(&task, &config, 7, None, |_| {}).unwrap();
        assert_eq!(study.fractions, vec![0.01, 0.1, 1.0]);
        assert_eq!(study.runs.len(), 2 * 3 * 2, "arms x fractions x seeds");
        let seen = task.seen.borrow();
        for pair in seen.chunks(2) {
            assert_eq!(pair[0].1, pair[1].1);
            assert_eq!(pair[0].2, pair[1].2, "both arms train on the same rows");
        }
        assert_ne!(seen[0].2, seen[6].2, "another seed draws other subsets");
        let s = &study.summary[0];
        assert_eq!((s.arm.as_str(), s.fraction, s.seeds), ("finetune", 0.01, 2));
        assert!(s.std > 0.0);
        // finetune at 1% scores what scratch scores with 10x the rows: the 10% point.
        assert_eq!(study.labels_saved.len(), 2);
        let at1 = &study.labels_saved[0];
        let factor = at1.factor.unwrap();
        assert!((factor - 10.0).abs() < 1.5, "{at1:?}");
        let at10 = &study.labels_saved[1];
        assert!(
            at10.factor.is_some_and(|f| (f - 10.0).abs() < 1.5),
            "{at10:?}"
        );
        let table = study.table();
        assert!(
            table.contains("finetune") && table.contains("10%"),
            "{table}"
        );
        let json = serde_json::to_string(&study).unwrap();
        let back: LabelStudy = serde_json::from_str(&json).unwrap();
        assert_eq!(back.runs.len(), study.runs.len());
    }

    #[test]
    fn a_journal_resumes_and_extends_a_study_without_rerunning_it() {
        let dir = crate::text::test_support::TempDir::new("journal");
        let path = dir.path().join("labels.runs.jsonl");
        let task = || Fake {
            labels: (0..2000).map(|i| (i % 4) as u32).collect(),
            names: Vec::new(),
            seen: RefCell::new(Vec::new()),
        };
        let key = serde_json::json!({"checkpoint": "abc"});
        let config = |fractions: Vec<f64>, seeds| LabelsConfig {
            fractions,
            seeds,
            validation_fraction: 0.1,
            arms: Vec::new(),
        };
        let first_task = task();
        let mut journal = StudyJournal::open(&path, key.clone()).unwrap();
        assert!(journal.note.is_none());
        let first = run_study(
            &first_task,
            &config(vec![0.01, 0.1], 1),
            7,
            Some(&mut journal),
            |_| {},
        )
        .unwrap();
        assert_eq!((first.runs.len(), first.reused), (4, 0));
        drop(journal);

        // One more fraction and one more seed: only the new runs are run.
        let second_task = task();
        let mut journal = StudyJournal::open(&path, key.clone()).unwrap();
        assert!(
            journal
                .note
                .as_deref()
                .unwrap()
                .contains("4 finished run(s)")
        );
        let all = config(vec![0.01, 0.1, 1.0], 2);
        let second = run_study(&second_task, &all, 7, Some(&mut journal), |_| {}).unwrap();
        assert_eq!((second.runs.len(), second.reused), (12, 4));
        assert_eq!(second_task.seen.borrow().len(), 8);
        for old in &first.runs {
            let again = second
                .runs
                .iter()
                .find(|r| r.arm == old.arm && r.fraction == old.fraction && r.seed == old.seed)
                .unwrap();
            assert_eq!(again.accuracy, old.accuracy);
        }
        drop(journal);

        // A torn last line is dropped and that run is run again.
        let mut text = std::fs::read_to_string(&path).unwrap();
        let cut = text.trim_end().rfind('\n').unwrap() + 1;
        text.truncate(cut + 20);
        std::fs::write(&path, &text).unwrap();
        let third_task = task();
        let mut journal = StudyJournal::open(&path, key).unwrap();
        assert!(
            journal.note.as_deref().unwrap().contains("torn"),
            "{:?}",
            journal.note
        );
        let third = run_study(&third_task, &all, 7, Some(&mut journal), |_| {}).unwrap();
        assert_eq!((third.reused, third_task.seen.borrow().len()), (11, 1));
        drop(journal);

        // Another key (say, a retrained checkpoint) starts afresh.
        let journal = StudyJournal::open(&path, serde_json::json!({"checkpoint": "def"})).unwrap();
        assert!(journal.note.as_deref().unwrap().contains("another study"));
        assert!(journal.done.is_empty());
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 1, "only the new header remains");
        let aside = std::fs::read_to_string(path.with_extension("stale.jsonl")).unwrap();
        assert_eq!(
            aside.lines().count(),
            13,
            "the other study's runs are kept aside"
        );
        // A third study keeps the second's header beside the first study's runs.
        let journal = StudyJournal::open(&path, serde_json::json!({"checkpoint": "ghi"})).unwrap();
        assert!(journal.note.as_deref().unwrap().contains("stale-2.jsonl"));
        let first_kept = std::fs::read_to_string(path.with_extension("stale.jsonl")).unwrap();
        assert_eq!(
            first_kept, aside,
            "the first study's runs are not overwritten"
        );
        let second_kept = std::fs::read_to_string(path.with_extension("stale-2.jsonl")).unwrap();
        assert!(second_kept.contains("def"), "{second_kept}");
    }

    #[test]
    fn a_study_takes_another_studys_runs_of_one_arm_and_runs_only_the_rest() {
        let dir = crate::text::test_support::TempDir::new("borrow");
        let (first, second) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        let task = || Fake {
            labels: (0..2000).map(|i| (i % 4) as u32).collect(),
            names: Vec::new(),
            seen: RefCell::new(Vec::new()),
        };
        let config = LabelsConfig {
            fractions: vec![0.1, 1.0],
            seeds: 2,
            validation_fraction: 0.1,
            arms: Vec::new(),
        };
        let mut journal =
            StudyJournal::open(&first, serde_json::json!({"checkpoint": "a"})).unwrap();
        let lender = run_study(&task(), &config, 7, Some(&mut journal), |_| {}).unwrap();
        drop(journal);

        let (key, runs) = read_journal(&first).unwrap();
        assert_eq!(key["checkpoint"], "a");
        assert_eq!(runs.len(), 8);
        let scratch: Vec<ArmRun> = runs.into_iter().filter(|r| r.arm == "scratch").collect();
        let mut journal =
            StudyJournal::open(&second, serde_json::json!({"checkpoint": "b"})).unwrap();
        assert_eq!(journal.import(scratch.clone(), &first).unwrap(), 4);
        assert_eq!(journal.import(scratch, &first).unwrap(), 0, "taken once");
        let borrower_task = task();
        let borrower = run_study(&borrower_task, &config, 7, Some(&mut journal), |_| {}).unwrap();
        let seen = borrower_task.seen.borrow();
        assert_eq!(seen.len(), 4);
        assert!(
            seen.iter().all(|(arm, ..)| arm == "finetune"),
            "scratch is not rerun"
        );
        assert_eq!(borrower.reused, 4);
        for (a, b) in lender.runs.iter().zip(&borrower.runs) {
            assert_eq!((&a.arm, a.fraction, a.seed), (&b.arm, b.fraction, b.seed));
            assert_eq!(a.accuracy, b.accuracy);
        }
        let marked = borrower.runs.iter().find(|r| r.arm == "scratch").unwrap();
        assert_eq!(marked.detail["from"], first.display().to_string());
        drop(journal);
        // The borrowed runs are this study's own from now on: reopening keeps them.
        let (_, kept) = read_journal(&second).unwrap();
        assert_eq!(kept.len(), 8);

        let here = serde_json::json!({"data": "x", "pool": 10, "seed": 0});
        let there = serde_json::json!({"data": "x", "pool": 12});
        assert_eq!(
            differing_fields(&here, &there),
            vec!["pool: here 10, there 12", "seed: here 0, there (absent)"]
        );
        assert!(read_journal(&dir.path().join("none.jsonl")).is_err());
    }

    #[test]
    fn labels_saved_compares_the_best_arm_of_each_side_and_names_them() {
        let row = |arm: &str, fraction: f64, mean: f64| ArmSummary {
            arm: arm.into(),
            fraction,
            labelled: 0,
            mean,
            std: 0.0,
            seeds: 1,
        };
        let summary = vec![
            row("finetune", 0.01, 0.60),
            row("fixmatch", 0.01, 0.72),
            row("finetune", 0.1, 0.80),
            row("fixmatch", 0.1, 0.78),
            row("scratch", 0.01, 0.50),
            row("scratch", 0.1, 0.70),
            row("scratch", 1.0, 0.90),
            row("fixmatch_scratch", 0.01, 0.55),
            row("fixmatch_scratch", 0.1, 0.66),
        ];
        let comparison =
            Comparison::new(&["finetune", "fixmatch"], &["scratch", "fixmatch_scratch"]);
        let saved = labels_saved(&summary, &comparison);
        assert_eq!(saved.len(), 2);
        assert_eq!(saved[0].pretrained_arm, "fixmatch");
        assert_eq!(saved[1].pretrained_arm, "finetune");
        assert_eq!(
            saved[0].baseline_arms,
            vec![
                (0.01, "fixmatch_scratch".to_string()),
                (0.1, "scratch".to_string()),
                (1.0, "scratch".to_string())
            ]
        );
        // 72% is above the best baseline's 70% at 10%, so it is read between 10% (70%) and
        // 100% (90%), a tenth of the way in accuracy and so in log(fraction).
        let needed = saved[0].baseline_fraction_needed.unwrap();
        assert!((needed - 0.1 * 10f64.powf(0.1)).abs() < 1e-9, "{needed}");
        assert!(
            saved[0].statement.contains("fixmatch on 1%"),
            "{}",
            saved[0].statement
        );
        assert!(
            saved[0].statement.contains("fixmatch_scratch at 1%"),
            "{}",
            saved[0].statement
        );
        // Studies written before stored one pair.
        let old: Comparison = serde_json::from_str(r#"["finetune", "scratch"]"#).unwrap();
        assert_eq!(old, Comparison::new(&["finetune"], &["scratch"]));
        let new: Comparison =
            serde_json::from_str(&serde_json::to_string(&comparison).unwrap()).unwrap();
        assert_eq!(new, comparison);
    }

    #[test]
    fn bad_fractions_are_refused_by_name() {
        for fractions in [vec![], vec![0.0], vec![1.5]] {
            let config = LabelsConfig {
                fractions,
                ..LabelsConfig::default()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("eval.labels.fractions"), "{err}");
        }
    }
}
