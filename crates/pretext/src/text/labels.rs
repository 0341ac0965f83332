//! Label efficiency on text (`pretext eval labels` with a masked-language-model checkpoint and
//! a labelled TSV): bag-of-words logistic regression, a linear probe on the frozen encoder's
//! mean-pooled features and on the same encoder at random initialisation, the encoder fine-tuned with a linear head, the same encoder
//! architecture trained from scratch on the labels, and a student initialised from the
//! checkpoint that learns the fine-tuned model's soft labels on every unlabelled pool text
//! (`distill`, SimCLRv2's third stage).
//!
//! The TSV is split per class into a labelled pool and a test part (`test_fraction`);
//! fine-tuning and scratch read each text's first window of `max_len` tokens.
//! [`vector_study`] does the same for word vectors: their mean per text against bag-of-words.

use std::cell::OnceCell;
use std::collections::HashMap;

use anyhow::{Result, bail};
use burn::prelude::*;

use super::checkpoint::MlmCheckpoint;
use super::encoder::Encoder;
use super::examples::pad_batch;
use super::masking::Masked;
use super::probe::{
    Pooling, ProbeSettings, bag_of_words_features, encoder_features, mean_pool, text_windows, words,
};
use super::tsv::LabelledTexts;
use crate::core::eval::Features;
use crate::core::finetune::{Classifier, Pass, Plan, Rows, Unlabelled};
pub use crate::core::labels::DISTILL;
use crate::core::labels::{
    ArmOutcome, Comparison, FrozenArms, LabelTask, Teachers, probe_subset, require_classes,
    supervised_arm, unlabelled_rows,
};
use crate::core::loader::mix_seed;
use crate::core::split::{LabelSubset, stratified_split};

pub const BAG_OF_WORDS: &str = "bag_of_words";
pub const LINEAR: &str = "linear";
/// The linear probe on the same architecture at random initialisation (seeded by the study's
/// seed): what pretraining adds over the architecture alone.
pub const RANDOM_LINEAR: &str = "random_linear";
pub const FINETUNE: &str = "finetune";
pub const SCRATCH: &str = "scratch";

/// Texts and labels of one side of the split, with each text's first window of token ids.
struct Side {
    texts: Vec<String>,
    labels: Vec<u32>,
    windows: Vec<Vec<u32>>,
}

/// A study of one MLM checkpoint on labelled texts.
pub struct TextLabels<'a> {
    checkpoint: &'a MlmCheckpoint,
    settings: &'a ProbeSettings,
    pool: Side,
    test: Side,
    class_names: Vec<String>,
    device: Device,
    frozen: OnceCell<Result<(Features, Features), String>>,
    random_frozen: OnceCell<Result<(Features, Features), String>>,
    /// Seeds the random initialisation of [`RANDOM_LINEAR`].
    seed: u64,
    bag: OnceCell<(Features, Features)>,
    /// Fine-tuned models kept for the distillation arm.
    teachers: Teachers<Classifier<Encoder>>,
}

impl<'a> TextLabels<'a> {
    /// Split `data` into pool and test (`settings.test_fraction`, per class, seeded).
    pub fn new(
        checkpoint: &'a MlmCheckpoint,
        data: &LabelledTexts,
        settings: &'a ProbeSettings,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        require_classes(data.classes.len())?;
        if settings.eval.finetune.projection_layers != 0 {
            anyhow::bail!(
                "eval.finetune.projection_layers is for image checkpoints: a masked language \
                 model has no projection head"
            );
        }
        let split = stratified_split(&data.labels, settings.test_fraction, seed)?;
        let tokenizer = &checkpoint.tokenizer;
        let max_len = settings.max_len.min(checkpoint.encoder.max_sequence_len());
        let side = |rows: &[usize]| -> Result<Side> {
            let texts: Vec<String> = rows.iter().map(|&i| data.texts[i].clone()).collect();
            let windows = texts
                .iter()
                .map(|t| Ok(text_windows(tokenizer, t, max_len, 1)?.0.remove(0)))
                .collect::<Result<_>>()?;
            Ok(Side {
                labels: rows.iter().map(|&i| data.labels[i]).collect(),
                texts,
                windows,
            })
        };
        Ok(TextLabels {
            checkpoint,
            settings,
            pool: side(&split.train)?,
            test: side(&split.test)?,
            class_names: data.classes.clone(),
            device: device.clone(),
            frozen: OnceCell::new(),
            random_frozen: OnceCell::new(),
            seed,
            bag: OnceCell::new(),
            teachers: Teachers::default(),
        })
    }

    pub fn pool_size(&self) -> usize {
        self.pool.texts.len()
    }

    pub fn test_size(&self) -> usize {
        self.test.texts.len()
    }

    fn probe(
        &self,
        features: &(Features, Features),
        subset: &LabelSubset,
        seed: u64,
    ) -> Result<f64> {
        probe_subset(
            features,
            &self.pool.labels,
            &self.test.labels,
            self.class_names.len(),
            subset,
            &self.settings.eval,
            seed,
            &self.device,
        )
    }

    /// Mean-pooled features of the pool and test texts by the checkpoint's encoder.
    fn frozen(&self) -> Result<&(Features, Features)> {
        Self::features_once(&self.frozen, || {
            self.pooled_features(&self.checkpoint.model)
        })
    }

    /// The same by the architecture at random initialisation.
    fn random_frozen(&self) -> Result<&(Features, Features)> {
        Self::features_once(&self.random_frozen, || {
            self.device.seed(mix_seed(&[self.seed, 0x5EED]));
            let fresh = self.checkpoint.encoder.init(&self.device)?;
            self.pooled_features(&fresh)
        })
    }

    fn features_once(
        cell: &OnceCell<Result<(Features, Features), String>>,
        compute: impl FnOnce() -> Result<(Features, Features)>,
    ) -> Result<&(Features, Features)> {
        let computed = cell.get_or_init(|| compute().map_err(|e| format!("{e:#}")));
        computed.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn pooled_features(&self, model: &super::encoder::MlmModel) -> Result<(Features, Features)> {
        {
            let s = self.settings;
            let features = |texts: &[String]| {
                encoder_features(
                    model,
                    &self.checkpoint.tokenizer,
                    texts,
                    s.max_len,
                    s.max_windows,
                    Pooling::Mean,
                    s.batch_size,
                    &self.device,
                )
            };
            features(&self.pool.texts).and_then(|p| Ok((p, features(&self.test.texts)?)))
        }
    }

    /// Train `arm` (fine-tuning, scratch or distillation) on `subset`; returns the model too,
    /// which the distillation arm takes as its teacher.
    fn train(
        &self,
        arm: &str,
        subset: &LabelSubset,
        seed: u64,
    ) -> Result<(Classifier<Encoder>, ArmOutcome)> {
        let ad = self.device.clone().autodiff();
        let pretrained = arm != SCRATCH;
        let encoder: Encoder = if pretrained {
            MlmCheckpoint::load(&self.checkpoint.dir, &ad)?
                .model
                .encoder
        } else {
            ad.seed(mix_seed(&[seed, 0x5C2A7C4]));
            self.checkpoint.encoder.init(&ad)?.encoder
        };
        let pad = self.checkpoint.tokenizer.pad_id();
        let features = |e: &Encoder, idx: &[usize], pass: Pass, device: &Device| {
            let side = if pass == Pass::Test {
                &self.test
            } else {
                &self.pool
            };
            let rows: Vec<Masked> = idx
                .iter()
                .map(|&i| Masked::unmasked(&side.windows[i]))
                .collect();
            let batch = pad_batch(&rows, pad, 0)?;
            let hidden = e.forward(batch.input_tensor(device), batch.attention_tensor(device))?;
            Ok(mean_pool(hidden, &batch.attention_mask, device))
        };
        let eval = &self.settings.eval;
        let mut config = if pretrained {
            eval.finetune.clone()
        } else {
            eval.finetune.from_scratch()
        };
        let unlabelled = unlabelled_rows(self.pool.texts.len(), subset);
        let teacher;
        let unlabelled = if arm == DISTILL {
            teacher = self.teachers.soft_labels(
                subset,
                seed,
                || Ok(self.train(FINETUNE, subset, seed)?.0),
                &unlabelled,
                features,
                &eval.distill,
                &self.device,
            )?;
            config.epochs = eval.distill.epochs;
            Unlabelled::Distill {
                rows: &unlabelled,
                teacher: &teacher,
            }
        } else {
            Unlabelled::None
        };
        let test_rows: Vec<usize> = (0..self.test.texts.len()).collect();
        let plan = Plan {
            feature_dim: self.checkpoint.encoder.hidden,
            rows: Rows {
                train: &subset.train,
                validation: &subset.validation,
                pool_labels: &self.pool.labels,
                test: &test_rows,
                test_labels: &self.test.labels,
                classes: self.class_names.len(),
            },
            features,
            config: &config,
            unlabelled,
            lr_scale: None,
            seed,
        };
        supervised_arm(encoder, plan)
    }
}

impl LabelTask for TextLabels<'_> {
    fn arms(&self) -> Vec<String> {
        [
            BAG_OF_WORDS,
            LINEAR,
            RANDOM_LINEAR,
            FINETUNE,
            SCRATCH,
            DISTILL,
        ]
        .map(String::from)
        .to_vec()
    }

    fn comparison(&self) -> Option<Comparison> {
        // Counting words needs no pretraining either: it is a baseline beside scratch.
        Some(Comparison::new(
            &[LINEAR, FINETUNE, DISTILL],
            &[SCRATCH, BAG_OF_WORDS, RANDOM_LINEAR],
        ))
    }

    fn skips(&self, arm: &str, fraction: f64) -> bool {
        // With every text labelled there is nothing left to distil on.
        arm == DISTILL && fraction >= 1.0
    }

    fn pool_labels(&self) -> &[u32] {
        &self.pool.labels
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn run_arm(&self, arm: &str, subset: &LabelSubset, seed: u64) -> Result<ArmOutcome> {
        let probe = |features| -> Result<ArmOutcome> {
            Ok(ArmOutcome {
                accuracy: self.probe(features, subset, seed)?,
                detail: serde_json::json!({}),
            })
        };
        match arm {
            // The vocabulary comes from every pool text (no labels needed), as the encoder's
            // pretraining saw unlabelled text.
            BAG_OF_WORDS => probe(self.bag.get_or_init(|| {
                bag_of_words_features(
                    &self.pool.texts,
                    &self.test.texts,
                    self.settings.bow_max_features,
                )
            })),
            LINEAR => probe(self.frozen()?),
            RANDOM_LINEAR => probe(self.random_frozen()?),
            FINETUNE => {
                let (model, outcome) = self.train(arm, subset, seed)?;
                let arms = &self.settings.eval.labels.arms;
                self.teachers.keep(self, arms, subset, seed, model);
                Ok(outcome)
            }
            SCRATCH | DISTILL => Ok(self.train(arm, subset, seed)?.1),
            other => bail!("unknown arm '{other}'"),
        }
    }
}

pub const VECTORS: &str = "vectors";
pub const VECTORS_SIF: &str = "vectors_sif";

/// SIF's smoothing constant (Arora et al. 2017): a word of probability p weighs a / (a + p),
/// so "the" (p about 0.06) counts about 1/60 as much as a rare word.
const SIF_A: f64 = 1e-3;

/// The study of word vectors (Word2Vec, fastText) on labelled texts: the mean of each text's
/// known word vectors, and their SIF-weighted mean, against bag-of-words, all through the
/// linear probe. `vector` looks a lowercased word up; a text without a known word gets the
/// zero vector. SIF's word probabilities are counted on the pool's texts (no labels needed),
/// as bag-of-words takes its vocabulary from them.
pub fn vector_study<'v>(
    data: &LabelledTexts,
    vector: impl Fn(&str) -> Option<&'v [f32]>,
    dim: usize,
    settings: &ProbeSettings,
    seed: u64,
    device: &Device,
) -> Result<FrozenArms> {
    require_classes(data.classes.len())?;
    let split = stratified_split(&data.labels, settings.test_fraction, seed)?;
    let texts =
        |rows: &[usize]| -> Vec<&str> { rows.iter().map(|&i| data.texts[i].as_str()).collect() };
    let (pool, test) = (texts(&split.train), texts(&split.test));
    let sif = sif_weights(&pool);
    let plain = |_: &str| 1.0;
    let pooled = |texts: &[&str], weight: &dyn Fn(&str) -> f64| {
        weighted_mean_vectors(texts, &vector, dim, weight)
    };
    let labels = |rows: &[usize]| -> Vec<u32> { rows.iter().map(|&i| data.labels[i]).collect() };
    Ok(FrozenArms {
        arms: vec![
            (
                VECTORS.into(),
                (pooled(&pool, &plain), pooled(&test, &plain)),
            ),
            (
                VECTORS_SIF.into(),
                (pooled(&pool, &sif), pooled(&test, &sif)),
            ),
            (
                BAG_OF_WORDS.into(),
                bag_of_words_features(&pool, &test, settings.bow_max_features),
            ),
        ],
        comparison: Some(Comparison::new(&[VECTORS, VECTORS_SIF], &[BAG_OF_WORDS])),
        pool_labels: labels(&split.train),
        test_labels: labels(&split.test),
        class_names: data.classes.clone(),
        eval: settings.eval.clone(),
        device: device.clone(),
    })
}

/// SIF weights a / (a + p(w)), with p(w) the word's share of the words of `texts` (an unseen
/// word has p = 0 and weight 1).
fn sif_weights(texts: &[&str]) -> impl Fn(&str) -> f64 + use<> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for w in texts.iter().flat_map(|t| words(t)) {
        *counts.entry(w).or_default() += 1;
    }
    let total = counts.values().sum::<usize>().max(1) as f64;
    move |w: &str| SIF_A / (SIF_A + counts.get(w).map_or(0.0, |&c| c as f64 / total))
}

/// Each text's `weight`-weighted mean of its known word vectors (zero without one).
fn weighted_mean_vectors<'v>(
    texts: &[&str],
    vector: &impl Fn(&str) -> Option<&'v [f32]>,
    dim: usize,
    weight: &dyn Fn(&str) -> f64,
) -> Features {
    let mut values = vec![0f32; texts.len() * dim];
    for (row, text) in values.chunks_mut(dim).zip(texts) {
        let mut mass = 0f64;
        for (w, v) in words(text).filter_map(|w| vector(&w).map(|v| (weight(&w), v))) {
            row.iter_mut().zip(v).for_each(|(r, x)| *r += w as f32 * x);
            mass += w;
        }
        let mass = if mass > 0.0 { mass as f32 } else { 1.0 };
        row.iter_mut().for_each(|r| *r /= mass);
    }
    Features { dim, values }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::labels::{LabelsConfig, run_study};
    use crate::text::test_support::{TempDir, tiny_mlm_run, two_topic_texts};
    use serde_json::json;

    #[test]
    fn text_study_runs_every_arm_on_the_same_rows() {
        let dir = TempDir::new("text-labels");
        let device = Device::flex();
        let ckpt = MlmCheckpoint::load(&tiny_mlm_run(&dir, 20), &device).unwrap();
        let data = two_topic_texts();
        let mut settings = ProbeSettings {
            max_len: 16,
            ..ProbeSettings::default()
        };
        settings.eval.linear_epochs = 20;
        settings.eval.linear_lr = 0.05;
        settings.eval.linear_batch_size = 32;
        settings.eval.finetune.min_steps = 20;
        settings.eval.finetune.epochs = 1;
        settings.eval.finetune.batch_size = 16;
        settings.eval.finetune.lr = 3e-3;
        let task = TextLabels::new(&ckpt, &data, &settings, 1, &device).unwrap();
        assert_eq!((task.pool_size(), task.test_size()), (96, 24));
        let study = run_study(
            &task,
            &LabelsConfig {
                fractions: vec![0.5, 1.0],
                seeds: 1,
                validation_fraction: 0.1,
                arms: Vec::new(),
            },
            2,
            None,
            |_| {},
        )
        .unwrap();
        // Distillation has nothing unlabelled to learn from at 100%.
        assert_eq!(study.runs.len(), 5 * 2 + 1);
        for arm in [BAG_OF_WORDS, LINEAR, RANDOM_LINEAR, FINETUNE, SCRATCH] {
            assert!(
                study.runs.iter().filter(|r| r.arm == arm).count() == 2,
                "{arm}"
            );
        }
        let distilled = study.runs.iter().find(|r| r.arm == DISTILL).unwrap();
        assert_eq!(distilled.fraction, 0.5);
        // The student's passes run over the 96 pool texts less the few validation ones (never
        // the test texts): 6 steps of 16, raised from 2 passes to 4 to reach min_steps = 20.
        // Over the 48 labelled texts a pass would be 3 steps, and 21 steps in all.
        let detail = &distilled.detail;
        assert_eq!(
            (&detail["epochs"], &detail["steps"]),
            (&json!(4), &json!(24)),
            "{detail}"
        );
        assert!(distilled.accuracy > 0.6, "student {}", distilled.accuracy);
        // The topics are told apart by their nouns: bag-of-words gets them all.
        let bow = study
            .runs
            .iter()
            .find(|r| r.arm == BAG_OF_WORDS && r.fraction == 1.0)
            .unwrap();
        assert!(bow.accuracy > 0.95, "bag of words {}", bow.accuracy);
        let finetuned = study
            .runs
            .iter()
            .find(|r| r.arm == FINETUNE && r.fraction == 1.0)
            .unwrap();
        assert!(
            finetuned.accuracy > 0.6,
            "fine-tuned {}",
            finetuned.accuracy
        );

        let one_class = LabelledTexts {
            texts: vec!["a".into(), "b".into()],
            labels: vec![0, 0],
            classes: vec!["only".into()],
            warnings: Vec::new(),
        };
        let err = TextLabels::new(&ckpt, &one_class, &settings, 1, &device)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("at least two classes"), "{err}");
    }

    #[test]
    fn word_vector_study_pools_known_words() {
        let data = two_topic_texts();
        // Animals point one way, people the other; every other word is unknown.
        let (animal, person) = ([1.0f32, 0.0], [0.0f32, 1.0]);
        let lookup = |w: &str| match w {
            "fox" | "dog" | "cat" | "yak" => Some(&animal[..]),
            "knight" | "queen" | "king" | "bishop" => Some(&person[..]),
            _ => None,
        };
        let mut settings = ProbeSettings::default();
        settings.eval.linear_epochs = 20;
        settings.eval.linear_lr = 0.05;
        let task = vector_study(&data, lookup, 2, &settings, 3, &Device::flex()).unwrap();
        assert_eq!(task.arms(), [VECTORS, VECTORS_SIF, BAG_OF_WORDS]);
        let (pool, test) = &task.arms[0].1;
        assert_eq!((pool.len(), test.len()), (96, 24));
        // "the fox chases the yak today": two animal words, mean (1, 0).
        assert!(
            pool.values
                .chunks(2)
                .all(|r| r == [1.0, 0.0] || r == [0.0, 1.0])
        );
        let study = run_study(
            &task,
            &LabelsConfig {
                fractions: vec![0.25, 1.0],
                seeds: 1,
                validation_fraction: 0.0,
                arms: Vec::new(),
            },
            1,
            None,
            |_| {},
        )
        .unwrap();
        let vectors = study.runs.iter().find(|r| r.arm == VECTORS).unwrap();
        assert_eq!(vectors.accuracy, 1.0);
        // Within a topic every known word points the same way, so weighting changes nothing.
        let weighted = &task.arms[1].1.0.values;
        assert!(
            weighted
                .iter()
                .zip(&pool.values)
                .all(|(w, p)| (w - p).abs() < 1e-6)
        );
        assert_eq!(study.labels_saved.len(), 1);
    }

    #[test]
    fn sif_weighs_frequent_words_down() {
        let texts = ["the cat", "the the dog"];
        let (the, cat) = ([1.0f32, 0.0], [0.0f32, 1.0]);
        let lookup = |w: &str| match w {
            "the" => Some(&the[..]),
            "cat" => Some(&cat[..]),
            _ => None,
        };
        // p(the) = 3/5, p(cat) = 1/5: weights 1e-3/0.601 and 1e-3/0.201.
        let (w_the, w_cat) = (1e-3 / 0.601, 1e-3 / 0.201);
        let sif = sif_weights(&texts);
        assert!((sif("the") - w_the).abs() < 1e-12 && (sif("cat") - w_cat).abs() < 1e-12);
        assert_eq!(sif("unseen"), 1.0);
        let weighted = weighted_mean_vectors(&texts, &lookup, 2, &sif);
        let expected = [w_the / (w_the + w_cat), w_cat / (w_the + w_cat)];
        for (got, want) in weighted.values[..2].iter().zip(expected) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        // "the the dog": only "the" is known, so its direction whatever the weight.
        assert_eq!(&weighted.values[2..], &[1.0, 0.0]);
        let plain = weighted_mean_vectors(&texts, &lookup, 2, &|_| 1.0);
        assert_eq!(&plain.values[..2], &[0.5, 0.5]);
    }
}
