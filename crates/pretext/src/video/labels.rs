//! Label efficiency on video (`pretext eval labels` with a video checkpoint): at each fraction
//! of the training labels of one single-label column (the direction of motion, the class),
//! the pretrained model's clip features probed (kNN, linear) and the model fine-tuned with a
//! linear head, against the same model at random initialisation, probed and trained from
//! scratch on the labels with the same budget. Pool and test are the data's two splits.

use std::cell::OnceCell;

use anyhow::{Result, bail};
use burn::prelude::*;

use super::checkpoint::VideoCheckpoint;
use super::data::stream::VideoStore;
use super::eval::{all_rows, clip_features};
use super::methods::VideoMethod;
use super::views::first_frames_batch;
use crate::core::config::EvalConfig;
use crate::core::eval::Features;
use crate::core::feature_scores::standardise;
use crate::core::finetune::{Pass, Plan, Rows, Unlabelled};
use crate::core::labels::{
    ArmOutcome, Comparison, LabelTask, cached_features, knn_subset, probe_subset, require_classes,
    supervised_arm,
};
use crate::core::loader::mix_seed;
use crate::core::split::LabelSubset;

pub const KNN: &str = "knn";
pub const LINEAR: &str = "linear";
pub const FINETUNE: &str = "finetune";
pub const RANDOM_LINEAR: &str = "random_linear";
pub const SCRATCH: &str = "scratch";

/// A study of one video checkpoint on one single-label column.
pub struct VideoLabels<'a, M: VideoMethod> {
    checkpoint: &'a VideoCheckpoint<M>,
    pool: VideoStore,
    test: VideoStore,
    /// The test videos scored (those of classes the pool has), in `test_labels`' order.
    test_rows: Vec<usize>,
    pool_labels: Vec<u32>,
    test_labels: Vec<u32>,
    class_names: Vec<String>,
    /// The checkpoint's evaluation settings with the study's `--set eval.*` applied.
    eval: EvalConfig,
    frames: usize,
    device: Device,
    frozen: OnceCell<(Features, Features)>,
    random: OnceCell<(Features, Features)>,
}

impl<'a, M: VideoMethod> VideoLabels<'a, M> {
    /// `test_rows` are the test videos of classes the pool has; `test_labels` their labels,
    /// renumbered by the pool's classes.
    pub fn new(
        checkpoint: &'a VideoCheckpoint<M>,
        eval: EvalConfig,
        (pool, test, test_rows): (VideoStore, VideoStore, Vec<usize>),
        (pool_labels, test_labels): (Vec<u32>, Vec<u32>),
        class_names: Vec<String>,
        device: &Device,
    ) -> Result<Self> {
        require_classes(class_names.len())?;
        if eval.finetune.projection_layers != 0 {
            bail!("eval.finetune.projection_layers is for image checkpoints");
        }
        Ok(VideoLabels {
            frames: M::feature_frames(&checkpoint.config),
            checkpoint,
            pool,
            test,
            test_rows,
            pool_labels,
            test_labels,
            class_names,
            eval,
            device: device.clone(),
            frozen: OnceCell::new(),
            random: OnceCell::new(),
        })
    }

    pub fn pool_size(&self) -> usize {
        self.pool.len()
    }

    pub fn test_size(&self) -> usize {
        self.test_rows.len()
    }

    fn fresh_model(&self, seed: u64, device: &Device) -> M {
        device.seed(seed);
        M::init(&self.checkpoint.config, self.checkpoint.frame, device)
    }

    /// Frozen features of both sides, standardised with the pool's statistics. A streamed
    /// video that cannot be read stops the study, named (as image evaluation does).
    fn features_of(&self, model: &M) -> Result<(Features, Features)> {
        let (frames, device) = (self.frames, &self.device);
        Ok(standardise(
            &clip_features(model, &self.pool, &all_rows(&self.pool), frames, device)?,
            &clip_features(model, &self.test, &self.test_rows, frames, device)?,
        ))
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

    /// Fine-tune the pretrained model, or train a fresh one from scratch, on `subset`.
    fn train(&self, arm: &str, subset: &LabelSubset, seed: u64) -> Result<ArmOutcome> {
        let ad = self.device.clone().autodiff();
        let eval = &self.eval;
        let (model, config) = if arm == FINETUNE {
            let reopened = VideoCheckpoint::<M>::open(&self.checkpoint.dir, &ad)?;
            (reopened.model, eval.finetune.clone())
        } else {
            (
                self.fresh_model(mix_seed(&[seed, 0x5C2A7C4]), &ad),
                eval.finetune.from_scratch(),
            )
        };
        let feature_dim = model
            .features(first_frames_batch(&self.pool, &[0], self.frames, &ad)?)
            .dims()[1];
        // Test rows are positions in `test_rows`, as `test_labels` is indexed.
        let features = |m: &M, idx: &[usize], pass: Pass, device: &Device| {
            let batch = if pass == Pass::Test {
                let rows: Vec<usize> = idx.iter().map(|&k| self.test_rows[k]).collect();
                first_frames_batch(&self.test, &rows, self.frames, device)?
            } else {
                first_frames_batch(&self.pool, idx, self.frames, device)?
            };
            Ok(m.features(batch))
        };
        let test_rows: Vec<usize> = (0..self.test_rows.len()).collect();
        let plan = Plan {
            feature_dim,
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
        Ok(supervised_arm(model, plan)?.1)
    }
}

impl<M: VideoMethod> LabelTask for VideoLabels<'_, M> {
    fn arms(&self) -> Vec<String> {
        [RANDOM_LINEAR, KNN, LINEAR, FINETUNE, SCRATCH]
            .map(String::from)
            .to_vec()
    }

    fn comparison(&self) -> Option<Comparison> {
        Some(Comparison::new(
            &[LINEAR, FINETUNE],
            &[SCRATCH, RANDOM_LINEAR],
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
            RANDOM_LINEAR => {
                let f = cached_features(&self.random, || {
                    let seed = self.checkpoint.config.seed;
                    self.features_of(&self.fresh_model(seed, &self.device))
                })?;
                Ok(scored(self.probe(f, subset, seed)?))
            }
            KNN | LINEAR => {
                let f = cached_features(&self.frozen, || self.features_of(&self.checkpoint.model))?;
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
