//! Label efficiency on images (`pretext eval labels`): the four arms of a study on an image
//! checkpoint. kNN and the linear probe read the pretrained backbone's frozen features;
//! fine-tuning trains that backbone with a linear head end to end (the backbone at
//! `eval.finetune.encoder_lr_ratio` of the head's rate, 1 by default); the supervised
//! baseline trains the same architecture from a fresh initialisation with the same head,
//! views, optimizer and budget, its backbone always at the head's full rate.

use std::cell::OnceCell;

use anyhow::{Result, bail};
use burn::prelude::*;

use super::backbones::Backbone;
use super::batches::make_views;
use super::checkpoint::ImageCheckpoint;
use super::config::PretrainConfig;
use super::data::ImageSet;
use super::eval::extract;
use super::views::{Pipeline, eval_pipeline};
use crate::core::eval::{Features, Labelled, knn_accuracy};
use crate::core::finetune::{Pass, Rows};
use crate::core::labels::{ArmOutcome, LabelTask, probe_subset, require_classes, supervised_arm};
use crate::core::loader::mix_seed;
use crate::core::split::LabelSubset;

pub const KNN: &str = "knn";
pub const LINEAR: &str = "linear";
pub const FINETUNE: &str = "finetune";
pub const SCRATCH: &str = "scratch";

/// A study of one image checkpoint on a labelled train pool and test split.
pub struct ImageLabels<'a> {
    checkpoint: &'a ImageCheckpoint,
    /// The checkpoint's config with the evaluation overrides applied.
    config: &'a PretrainConfig,
    pool: &'a ImageSet,
    test: &'a ImageSet,
    pool_labels: &'a [u32],
    test_labels: &'a [u32],
    classes: usize,
    device: Device,
    /// Pretrained features of the pool and the test split, computed on first use.
    frozen: OnceCell<(Features, Features)>,
}

impl<'a> ImageLabels<'a> {
    pub fn new(
        checkpoint: &'a ImageCheckpoint,
        config: &'a PretrainConfig,
        pool: &'a ImageSet,
        test: &'a ImageSet,
        device: &Device,
    ) -> Result<Self> {
        checkpoint.check_compatible(pool)?;
        if (pool.channels, pool.height, pool.width) != (test.channels, test.height, test.width) {
            bail!("train and test images differ in shape");
        }
        let classes = pool.num_classes().max(test.num_classes());
        require_classes(classes)?;
        Ok(ImageLabels {
            checkpoint,
            config,
            pool,
            test,
            pool_labels: pool.require_labels()?,
            test_labels: test.require_labels()?,
            classes,
            device: device.clone(),
            frozen: OnceCell::new(),
        })
    }

    fn frozen(&self) -> &(Features, Features) {
        self.frozen.get_or_init(|| {
            let ckpt = self.checkpoint;
            let features = |set| extract(&ckpt.backbone, set, &ckpt.mean, &ckpt.std, &self.device);
            (features(self.pool), features(self.test))
        })
    }

    fn probe(&self, arm: &str, subset: &LabelSubset, seed: u64) -> Result<f64> {
        let frozen = self.frozen();
        let eval = &self.config.eval;
        if arm == LINEAR {
            return probe_subset(
                frozen,
                self.pool_labels,
                self.test_labels,
                self.classes,
                subset,
                eval,
                seed,
                &self.device,
            );
        }
        let rows = frozen.0.rows(&subset.train);
        let labels: Vec<u32> = subset.train.iter().map(|&i| self.pool_labels[i]).collect();
        let train = Labelled {
            features: &rows,
            labels: &labels,
        };
        let test = Labelled {
            features: &frozen.1,
            labels: self.test_labels,
        };
        Ok(knn_accuracy(
            train,
            test,
            self.classes,
            eval.knn_k,
            eval.knn_temperature,
        ))
    }

    fn train(&self, pretrained: bool, subset: &LabelSubset, seed: u64) -> Result<ArmOutcome> {
        let ad = self.device.clone().autodiff();
        let encoder: Backbone = if pretrained {
            self.checkpoint.backbone_on(&ad)?
        } else {
            self.checkpoint
                .random_backbone(mix_seed(&[seed, 0x5C2A7C4]), &ad)
        };
        let ckpt = self.checkpoint;
        let (h, w) = (self.pool.height, self.pool.width);
        let augment = self
            .config
            .finetune_view
            .build((h, w), &ckpt.mean, &ckpt.std);
        let plain = eval_pipeline(&ckpt.mean, &ckpt.std);
        let features = |e: &Backbone, idx: &[usize], pass: Pass, device: &Device| {
            let (set, pipeline, epoch): (&ImageSet, &Pipeline, usize) = match pass {
                Pass::Train { epoch } => (self.pool, &augment, epoch),
                Pass::Validation => (self.pool, &plain, 0),
                Pass::Test => (self.test, &plain, 0),
            };
            let (mut views, shapes) =
                make_views(set, std::slice::from_ref(pipeline), idx, seed, epoch);
            let x = Tensor::<4>::from_data(TensorData::new(views.remove(0), shapes[0]), device);
            Ok(e.forward(x))
        };
        let rows = Rows {
            train: &subset.train,
            validation: &subset.validation,
            pool_labels: self.pool_labels,
            test: &(0..self.test.len()).collect::<Vec<_>>(),
            test_labels: self.test_labels,
            classes: self.classes,
        };
        let dim = encoder.out_dim();
        supervised_arm(
            encoder,
            dim,
            rows,
            features,
            &self.config.eval.finetune,
            pretrained,
            seed,
        )
    }
}

impl LabelTask for ImageLabels<'_> {
    fn arms(&self) -> Vec<String> {
        [KNN, LINEAR, FINETUNE, SCRATCH].map(String::from).to_vec()
    }

    fn comparison(&self) -> Option<(String, String)> {
        Some((FINETUNE.into(), SCRATCH.into()))
    }

    fn pool_labels(&self) -> &[u32] {
        self.pool_labels
    }

    fn class_names(&self) -> &[String] {
        &self.pool.class_names
    }

    fn run_arm(&self, arm: &str, subset: &LabelSubset, seed: u64) -> Result<ArmOutcome> {
        match arm {
            KNN | LINEAR => Ok(ArmOutcome {
                accuracy: self.probe(arm, subset, seed)?,
                detail: serde_json::json!({}),
            }),
            FINETUNE => self.train(true, subset, seed),
            SCRATCH => self.train(false, subset, seed),
            other => bail!("unknown arm '{other}'"),
        }
    }
}
