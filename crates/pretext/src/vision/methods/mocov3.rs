//! MoCo v3 (Chen, Xie and He 2021): no queue. A query encoder with a predictor learns to pick,
//! among the batch, the other view's key from a momentum (EMA) key encoder; symmetric.
//! Paper pseudocode:
//!
//! ```text
//! q1, q2 = g(f_q(x1)), g(f_q(x2)); k1, k2 = f_k(x1), f_k(x2)   # keys detached
//! loss = ctr(q1, k2) + ctr(q2, k1)
//! ctr(q, k) = CE(q·kᵀ / t, diagonal) · 2t
//! f_k = m f_k + (1 - m) f_q, m rising to 1 along a cosine
//! ```
//!
//! With a ViT, `mocov3.freeze_patch_embed` keeps the patch projection at its random
//! initialisation, the paper's fix for the loss spikes of long ViT runs (§4.2; `--stop-grad-conv1`
//! in its code).

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Branch, ImageShape, Method, MethodStep, Step, global_halves};
use crate::core::heads::Mlp;
use crate::core::losses::cross_view_info_nce;
use crate::core::momentum::{cosine_tau, detached_copy, ema_update};
use crate::vision::backbones::Backbone;
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

/// `[mocov3]`: the paper's temperature and starting momentum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoV3Config {
    pub temperature: f64,
    /// Starting EMA rate of the key encoder, raised to 1 along a cosine.
    pub momentum_base: f64,
    /// Keep a ViT's patch projection at its random initialisation (ViT backbones only).
    pub freeze_patch_embed: bool,
}

impl Default for MocoV3Config {
    fn default() -> Self {
        MocoV3Config {
            temperature: 0.2,
            momentum_base: 0.99,
            freeze_patch_embed: false,
        }
    }
}

impl MocoV3Config {
    pub fn validate(&self) -> Result<()> {
        if self.temperature <= 0.0 || !(0.0..=1.0).contains(&self.momentum_base) {
            bail!(
                "mocov3: temperature must be positive and momentum_base in [0, 1] (they are {} \
                 and {})",
                self.temperature,
                self.momentum_base
            );
        }
        Ok(())
    }
}

#[derive(Module, Debug)]
pub struct MocoV3 {
    pub query: Branch,
    pub predictor: Mlp,
    /// Updated only by EMA; its outputs are detached (stop-gradient).
    pub key: Branch,
    #[module(skip)]
    temperature: f64,
    #[module(skip)]
    momentum_base: f64,
}

impl Method for MocoV3 {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let mut query = Branch::init(config, image, device);
        let predictor = config.prediction.init(config.projection.output, device);
        let key = detached_copy(&query, Branch::init(config, image, device));
        if config.mocov3.freeze_patch_embed {
            // The key's copy is frozen already; the EMA of two equal projections leaves both.
            query.backbone = match query.backbone {
                Backbone::Vit(vit) => Backbone::Vit(vit.with_frozen_patch_embed()),
                cnn => cnn, // refused by PretrainConfig::validate
            };
        }
        MocoV3 {
            query,
            predictor,
            key,
            temperature: config.mocov3.temperature,
            momentum_base: config.mocov3.momentum_base,
        }
    }

    fn view_presets(_config: &PretrainConfig) -> Vec<ViewConfig> {
        ViewConfig::byol().to_vec()
    }

    fn loss(&self, views: Vec<Tensor<4>>) -> Result<MethodStep> {
        let both = Tensor::cat(views, 0);
        let q = self.predictor.forward(self.query.forward(both.clone()));
        let k = self.key.forward(both).detach();
        let ((q1, q2), (k1, k2)) = (global_halves(q.clone()), global_halves(k));
        let t = self.temperature;
        let loss =
            (cross_view_info_nce(q1, k2, t) + cross_view_info_nce(q2, k1, t)).mul_scalar(2.0 * t);
        Ok(Step::from(loss).watching(q))
    }

    fn after_step(self, progress: f64, _kept: Vec<Tensor<2>>) -> Self {
        let m = cosine_tau(self.momentum_base, progress);
        MocoV3 {
            key: ema_update(self.key, &self.query, m),
            ..self
        }
    }

    fn backbone(&self) -> &Backbone {
        &self.query.backbone
    }

    fn projection(&self) -> Option<&Mlp> {
        Some(&self.query.projection)
    }
}
