//! Label efficiency on sound (`pretext eval labels` with an audio checkpoint): at each fraction
//! of the training labels, the pretrained encoder probed (kNN, linear) and fine-tuned with a
//! linear head, against the same encoder at random initialisation (probed, and trained from
//! scratch on the labels with the same budget) and logistic regression on the mean and
//! standard deviation of the log-mel bands. Pool and test are the data's train and test
//! folders (which keep instruments or speakers apart).

use std::cell::OnceCell;

use anyhow::{Result, bail};
use burn::prelude::*;

use super::backbones::AudioEncoder;
use super::checkpoint::AudioCheckpoint;
use super::data::stream::ClipStore;
use super::eval::{split_features, standardise};
use super::methods::AudioMethod;
use crate::core::config::EvalConfig;
use crate::core::eval::Features;
use crate::core::finetune::{Pass, Plan, Rows, Unlabelled};
use crate::core::labels::{
    ArmOutcome, Comparison, LabelTask, cached_features, knn_subset, probe_subset, require_classes,
    supervised_arm,
};
use crate::core::loader::mix_seed;
use crate::core::split::LabelSubset;
use crate::vision::data::OnError;
use crate::with_audio_method;

pub const KNN: &str = "knn";
pub const LINEAR: &str = "linear";
pub const FINETUNE: &str = "finetune";
pub const RANDOM_LINEAR: &str = "random_linear";
pub const SCRATCH: &str = "scratch";
pub const LOGMEL: &str = "logmel";

/// A study of one audio checkpoint on one label column.
pub struct AudioLabels<'a> {
    checkpoint: &'a AudioCheckpoint,
    pool: ClipStore,
    test: ClipStore,
    pool_labels: Vec<u32>,
    test_labels: Vec<u32>,
    class_names: Vec<String>,
    /// The checkpoint's evaluation settings with the study's `--set eval.*` applied.
    eval: EvalConfig,
    device: Device,
    frozen: OnceCell<(Features, Features)>,
    random: OnceCell<(Features, Features)>,
    logmel: OnceCell<(Features, Features)>,
}

impl<'a> AudioLabels<'a> {
    /// `pool` and `test` hold the clips of each side (in memory or streamed); their labels on
    /// `task` (the test side's already renumbered by the pool's classes).
    pub fn new(
        checkpoint: &'a AudioCheckpoint,
        eval: EvalConfig,
        pool: ClipStore,
        test: ClipStore,
        task: &str,
        test_labels: Vec<u32>,
        device: &Device,
    ) -> Result<Self> {
        let column = pool.task(task)?;
        require_classes(column.classes.len())?;
        if eval.finetune.projection_layers != 0 {
            bail!("eval.finetune.projection_layers is for image checkpoints");
        }
        Ok(AudioLabels {
            checkpoint,
            pool_labels: column.labels.clone(),
            class_names: column.classes.clone(),
            pool,
            test,
            test_labels,
            eval,
            device: device.clone(),
            frozen: OnceCell::new(),
            random: OnceCell::new(),
            logmel: OnceCell::new(),
        })
    }

    pub fn pool_size(&self) -> usize {
        self.pool.len()
    }

    pub fn test_size(&self) -> usize {
        self.test.len()
    }

    /// The method's encoder at random initialisation, seeded by `seed`.
    fn fresh_encoder(&self, seed: u64, device: &Device) -> AudioEncoder {
        let config = &self.checkpoint.config;
        device.seed(seed);
        with_audio_method!(config.method.as_str(), M => {
            M::init(config, config.data.mel.n_mels, config.data.crop_frames, device).encoder()
        })
    }

    /// Frozen features of both sides, standardised with the pool's statistics (as BYOL-A
    /// evaluates embeddings): `encoder`'s, or without one the log-mel statistics. A streamed
    /// clip that cannot be read stops the study, named (as image evaluation does).
    fn features_of(&self, encoder: Option<&AudioEncoder>) -> Result<(Features, Features)> {
        let encoders: Vec<&AudioEncoder> = encoder.into_iter().collect();
        let side = |store: &ClipStore| {
            let all: Vec<usize> = (0..store.len()).collect();
            let c = self.checkpoint;
            split_features(
                &encoders,
                store,
                &all,
                c.norm(),
                OnError::Stop,
                &self.device,
            )
        };
        let (mut pool, mut test) = (side(&self.pool)?, side(&self.test)?);
        Ok(match (pool.encoders.pop(), test.encoders.pop()) {
            (Some(p), Some(t)) => standardise(&p, &t),
            _ => standardise(&pool.logmel, &test.logmel),
        })
    }

    fn probe(
        &self,
        features: &(Features, Features),
        subset: &LabelSubset,
        seed: u64,
    ) -> Result<f64> {
        probe_subset(
            features,
            &self.pool_labels,
            &self.test_labels,
            self.class_names.len(),
            subset,
            &self.eval,
            seed,
            &self.device,
        )
    }

    /// The normalised whole clips at `rows` of one side, `[rows, 1, bands, frames]`.
    fn clips(&self, side: &ClipStore, rows: &[usize], device: &Device) -> Result<Tensor<4>> {
        let (bands, frames) = (side.n_mels(), side.frames());
        let (mean, std) = (&self.checkpoint.mean, &self.checkpoint.std);
        let mut x = Vec::with_capacity(rows.len() * bands * frames);
        for &i in rows {
            let clip = side.image(i)?;
            for m in 0..bands {
                x.extend(
                    clip[m * frames..(m + 1) * frames]
                        .iter()
                        .map(|v| (v - mean[m]) / std[m]),
                );
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(x, [rows.len(), 1, bands, frames]),
            device,
        ))
    }

    /// Fine-tune the pretrained encoder, or train a fresh one from scratch, on `subset`.
    fn train(&self, arm: &str, subset: &LabelSubset, seed: u64) -> Result<ArmOutcome> {
        let ad = self.device.clone().autodiff();
        let eval = &self.eval;
        let (encoder, config) = if arm == FINETUNE {
            let reopened = AudioCheckpoint::open(&self.checkpoint.dir, &ad)?;
            (reopened.encoder, eval.finetune.clone())
        } else {
            (
                self.fresh_encoder(mix_seed(&[seed, 0x5C2A7C4]), &ad),
                eval.finetune.from_scratch(),
            )
        };
        let features = |e: &AudioEncoder, idx: &[usize], pass: Pass, device: &Device| {
            let side = if pass == Pass::Test {
                &self.test
            } else {
                &self.pool
            };
            Ok(e.forward(self.clips(side, idx, device)?))
        };
        let test_rows: Vec<usize> = (0..self.test.len()).collect();
        let plan = Plan {
            feature_dim: encoder.out_dim(),
            rows: Rows {
                train: &subset.train,
                validation: &subset.validation,
                pool_labels: &self.pool_labels,
                test: &test_rows,
                test_labels: &self.test_labels,
                classes: self.class_names.len(),
            },
            features,
            config: &config,
            unlabelled: Unlabelled::None,
            lr_scale: None,
            seed,
        };
        Ok(supervised_arm(encoder, plan)?.1)
    }
}

impl LabelTask for AudioLabels<'_> {
    fn arms(&self) -> Vec<String> {
        [LOGMEL, RANDOM_LINEAR, KNN, LINEAR, FINETUNE, SCRATCH]
            .map(String::from)
            .to_vec()
    }

    fn comparison(&self) -> Option<Comparison> {
        Some(Comparison::new(
            &[LINEAR, FINETUNE],
            &[SCRATCH, LOGMEL, RANDOM_LINEAR],
        ))
    }

    fn pool_labels(&self) -> &[u32] {
        &self.pool_labels
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn run_arm(&self, arm: &str, subset: &LabelSubset, seed: u64) -> Result<ArmOutcome> {
        let scored = |accuracy: f64| ArmOutcome {
            accuracy,
            detail: serde_json::json!({}),
        };
        match arm {
            LOGMEL => {
                let f = cached_features(&self.logmel, || self.features_of(None))?;
                Ok(scored(self.probe(f, subset, seed)?))
            }
            RANDOM_LINEAR => {
                let f = cached_features(&self.random, || {
                    let seed = self.checkpoint.config.seed;
                    self.features_of(Some(&self.fresh_encoder(seed, &self.device)))
                })?;
                Ok(scored(self.probe(f, subset, seed)?))
            }
            KNN | LINEAR => {
                let f = cached_features(&self.frozen, || {
                    self.features_of(Some(&self.checkpoint.encoder))
                })?;
                if arm == LINEAR {
                    return Ok(scored(self.probe(f, subset, seed)?));
                }
                let eval = &self.eval;
                let classes = self.class_names.len();
                let (pool, test) = (&self.pool_labels, &self.test_labels);
                Ok(scored(knn_subset(f, pool, test, classes, subset, eval)))
            }
            FINETUNE | SCRATCH => self.train(arm, subset, seed),
            other => bail!("unknown arm '{other}'"),
        }
    }
}
