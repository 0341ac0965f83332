//! Label efficiency on images (`pretext eval labels`): the arms of a study on an image
//! checkpoint. kNN and the linear probe read the pretrained backbone's frozen features;
//! fine-tuning trains that backbone with a linear head end to end (`[eval.finetune]`: encoder
//! rate, layer-wise decay, a probe stage first, batch-norm statistics); the supervised baseline
//! trains the same architecture from a fresh initialisation with the same head, views,
//! optimizer and budget. Two semi-supervised arms also use the unlabelled rest of the pool:
//! `distill`, a student initialised from the checkpoint that learns the fine-tuned model's soft
//! labels on every unlabelled image, and `fixmatch`, the pretrained backbone trained on the
//! labels plus confident pseudo-labels of weak views teaching strong views; `fixmatch_scratch`
//! is the same from fresh weights, so the table shows what pretraining adds to it.

use std::cell::OnceCell;

use anyhow::{Context, Result, bail};
use burn::prelude::*;

use super::backbones::Backbone;
use super::batches::make_views;
use super::checkpoint::ImageCheckpoint;
use super::config::PretrainConfig;
use super::data::{ImageSource, OnError};
use super::eval::extract;
use super::views::{Pipeline, ViewConfig, eval_pipeline};
use crate::core::eval::{Features, Labelled, knn_accuracy};
use crate::core::finetune::{Classifier, Pass, Plan, Rows, Unlabelled};
use crate::core::heads::HiddenLayer;
pub use crate::core::labels::DISTILL;
use crate::core::labels::{
    ArmOutcome, Comparison, LabelTask, Teachers, probe_subset, require_classes, supervised_arm,
    unlabelled_rows,
};
use crate::core::loader::mix_seed;
use crate::core::split::LabelSubset;

pub const KNN: &str = "knn";
pub const LINEAR: &str = "linear";
pub const FINETUNE: &str = "finetune";
pub const SCRATCH: &str = "scratch";
pub const FIXMATCH: &str = "fixmatch";
pub const FIXMATCH_SCRATCH: &str = "fixmatch_scratch";

/// Arms that learn from the unlabelled pool: nothing to run when every image is labelled.
const SEMI_SUPERVISED: [&str; 3] = [DISTILL, FIXMATCH, FIXMATCH_SCRATCH];

/// A study of one image checkpoint on a labelled train pool and test split.
pub struct ImageLabels<'a> {
    checkpoint: &'a ImageCheckpoint,
    /// The checkpoint's config with the evaluation overrides applied.
    config: &'a PretrainConfig,
    pool: &'a dyn ImageSource,
    test: &'a dyn ImageSource,
    pool_labels: &'a [u32],
    test_labels: &'a [u32],
    classes: usize,
    device: Device,
    /// Pretrained features of the pool and the test split, computed on first use.
    frozen: OnceCell<(Features, Features)>,
    /// Fine-tuned models kept for the distillation arm.
    teachers: Teachers<Classifier<TunedEncoder>>,
}

/// What fine-tuning trains under the linear head: the backbone, and (with
/// `eval.finetune.projection_layers = 1`) the pretrained projection head's first layer on top.
#[derive(Module, Debug)]
pub struct TunedEncoder {
    pub backbone: Backbone,
    pub projection_layer: Option<HiddenLayer>,
}

impl TunedEncoder {
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let features = self.backbone.forward(x);
        match &self.projection_layer {
            Some(layer) => layer.forward(features),
            None => features,
        }
    }

    fn out_dim(&self) -> usize {
        self.projection_layer
            .as_ref()
            .map_or(self.backbone.out_dim(), HiddenLayer::out_dim)
    }

    /// Layer-wise decay: the backbone's layers by depth, the projection layer as the last.
    fn layer_decay(&self, path: &str, decay: f64) -> f64 {
        match path.strip_prefix("backbone.") {
            Some(inner) => self.backbone.layer_decay(inner, decay),
            None => 1.0,
        }
    }
}

/// The images a run's feature function reads, and how each pass presents them.
struct ImageViews<'a> {
    pool: &'a dyn ImageSource,
    test: &'a dyn ImageSource,
    weak: Pipeline,
    strong: Pipeline,
    plain: Pipeline,
    seed: u64,
}

impl ImageViews<'_> {
    fn features(
        &self,
        e: &TunedEncoder,
        idx: &[usize],
        pass: Pass,
        device: &Device,
    ) -> Result<Tensor<2>> {
        let (set, pipeline, seed, epoch): (&dyn ImageSource, &Pipeline, u64, usize) = match pass {
            Pass::Train { epoch } => (self.pool, &self.weak, self.seed, epoch),
            // Its own stream, so a strong view's crop is not drawn from the weak view's numbers.
            Pass::Strong { epoch } => {
                (self.pool, &self.strong, mix_seed(&[self.seed, 0x57]), epoch)
            }
            Pass::Plain => (self.pool, &self.plain, self.seed, 0),
            Pass::Test => (self.test, &self.plain, self.seed, 0),
        };
        let (mut views, shapes, _) = make_views(
            set,
            std::slice::from_ref(pipeline),
            idx,
            seed,
            epoch,
            OnError::Stop,
        )?;
        let x = Tensor::<4>::from_data(TensorData::new(views.remove(0), shapes[0]), device);
        Ok(e.forward(x))
    }
}

impl<'a> ImageLabels<'a> {
    pub fn new(
        checkpoint: &'a ImageCheckpoint,
        config: &'a PretrainConfig,
        pool: &'a dyn ImageSource,
        test: &'a dyn ImageSource,
        device: &Device,
    ) -> Result<Self> {
        checkpoint.check_compatible(pool)?;
        if (pool.channels(), pool.size()) != (test.channels(), test.size()) {
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
            teachers: Teachers::default(),
        })
    }

    fn frozen(&self) -> Result<&(Features, Features)> {
        if self.frozen.get().is_none() {
            let ckpt = self.checkpoint;
            let features = |set| extract(&ckpt.backbone, set, &ckpt.mean, &ckpt.std, &self.device);
            let both = (features(self.pool)?, features(self.test)?);
            let _ = self.frozen.set(both);
        }
        self.frozen.get().context("pretrained features")
    }

    fn probe(&self, arm: &str, subset: &LabelSubset, seed: u64) -> Result<f64> {
        let frozen = self.frozen()?;
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

    /// The encoder an arm starts from: the checkpoint's backbone (and projection layer, when
    /// asked for), or (for `scratch` and `fixmatch_scratch`) the same backbone architecture
    /// freshly initialised from the run's seed.
    pub fn starting_encoder(&self, arm: &str, seed: u64) -> Result<TunedEncoder> {
        let ad = self.device.clone().autodiff();
        if !pretrained(arm) {
            return Ok(TunedEncoder {
                backbone: self
                    .checkpoint
                    .random_backbone(mix_seed(&[seed, 0x5C2A7C4]), &ad),
                projection_layer: None,
            });
        }
        let projection_layer = match self.config.eval.finetune.projection_layers {
            0 => None,
            _ => Some(self.checkpoint.projection_layer_on(&ad)?),
        };
        Ok(TunedEncoder {
            backbone: self.checkpoint.backbone_on(&ad)?,
            projection_layer,
        })
    }

    /// `[strong_view]`, never flipping more often than `[finetune_view]`: a flip turned off
    /// there because it changes the class (digits, letters) stays off in the strong view.
    fn strong_view(&self) -> ViewConfig {
        let mut strong = self.config.strong_view.clone();
        strong.flip_p = strong.flip_p.min(self.config.finetune_view.flip_p);
        strong
    }

    fn views(&self, seed: u64) -> ImageViews<'_> {
        let ckpt = self.checkpoint;
        let size = self.pool.size();
        ImageViews {
            pool: self.pool,
            test: self.test,
            weak: self.config.finetune_view.build(size, &ckpt.mean, &ckpt.std),
            strong: self.strong_view().build(size, &ckpt.mean, &ckpt.std),
            plain: eval_pipeline(&ckpt.mean, &ckpt.std),
            seed,
        }
    }

    /// Train `arm` (fine-tuning, scratch, distillation or FixMatch) on `subset`; returns the
    /// model too, which the distillation arm takes as its teacher.
    fn train(
        &self,
        arm: &str,
        subset: &LabelSubset,
        seed: u64,
    ) -> Result<(Classifier<TunedEncoder>, ArmOutcome)> {
        let encoder = self.starting_encoder(arm, seed)?;
        let eval = &self.config.eval;
        let mut config = if pretrained(arm) {
            eval.finetune.clone()
        } else {
            eval.finetune.from_scratch()
        };
        let views = self.views(seed);
        let features = |e: &TunedEncoder, idx: &[usize], pass: Pass, device: &Device| {
            views.features(e, idx, pass, device)
        };
        let unlabelled = unlabelled_rows(self.pool.len(), subset);
        let teacher;
        let unlabelled = match arm {
            FIXMATCH | FIXMATCH_SCRATCH => Unlabelled::FixMatch {
                rows: &unlabelled,
                config: &eval.fixmatch,
            },
            DISTILL => {
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
            }
            _ => Unlabelled::None,
        };
        let decay = config.layer_decay;
        let shape = encoder.clone();
        let layer_decay = |path: &str| shape.layer_decay(path, decay);
        let test: Vec<usize> = (0..self.test.len()).collect();
        let plan = Plan {
            feature_dim: encoder.out_dim(),
            rows: Rows {
                train: &subset.train,
                validation: &subset.validation,
                pool_labels: self.pool_labels,
                test: &test,
                test_labels: self.test_labels,
                classes: self.classes,
            },
            features,
            config: &config,
            unlabelled,
            lr_scale: (decay != 1.0).then_some(&layer_decay as &dyn Fn(&str) -> f64),
            seed,
        };
        supervised_arm(encoder, plan)
    }
}

fn pretrained(arm: &str) -> bool {
    arm != SCRATCH && arm != FIXMATCH_SCRATCH
}

impl LabelTask for ImageLabels<'_> {
    fn arms(&self) -> Vec<String> {
        [
            KNN,
            LINEAR,
            FINETUNE,
            SCRATCH,
            DISTILL,
            FIXMATCH,
            FIXMATCH_SCRATCH,
        ]
        .map(String::from)
        .to_vec()
    }

    fn comparison(&self) -> Option<Comparison> {
        Some(Comparison::new(
            &[KNN, LINEAR, FINETUNE, DISTILL, FIXMATCH],
            &[SCRATCH, FIXMATCH_SCRATCH],
        ))
    }

    fn skips(&self, arm: &str, fraction: f64) -> bool {
        fraction >= 1.0 && SEMI_SUPERVISED.contains(&arm)
    }

    fn pool_labels(&self) -> &[u32] {
        self.pool_labels
    }

    fn class_names(&self) -> &[String] {
        self.pool.class_names()
    }

    fn run_arm(&self, arm: &str, subset: &LabelSubset, seed: u64) -> Result<ArmOutcome> {
        match arm {
            KNN | LINEAR => Ok(ArmOutcome {
                accuracy: self.probe(arm, subset, seed)?,
                detail: serde_json::json!({}),
            }),
            FINETUNE => {
                let (model, outcome) = self.train(arm, subset, seed)?;
                let arms = &self.config.eval.labels.arms;
                self.teachers.keep(self, arms, subset, seed, model);
                Ok(outcome)
            }
            SCRATCH | DISTILL | FIXMATCH | FIXMATCH_SCRATCH => Ok(self.train(arm, subset, seed)?.1),
            other => bail!("unknown arm '{other}'"),
        }
    }
}
