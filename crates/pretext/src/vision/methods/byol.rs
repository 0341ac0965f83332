//! BYOL (Grill et al. 2020): an online network with a predictor regresses the projection of a
//! momentum (EMA) target network on the other view; no negatives.

use burn::prelude::*;

use anyhow::Result;

use super::{Branch, ImageShape, Method, MethodStep, Step};
use crate::core::heads::Mlp;
use crate::core::losses::byol_symmetric;
use crate::core::momentum::{cosine_tau, detached_copy, ema_update};
use crate::vision::backbones::Backbone;
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

#[derive(Module, Debug)]
pub struct Byol {
    pub online: Branch,
    pub predictor: Mlp,
    /// Updated only by EMA; its outputs are detached (stop-gradient).
    pub target: Branch,
    #[module(skip)]
    tau_base: f64,
}

impl Method for Byol {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let online = Branch::init(config, image, device);
        let predictor = config.prediction.init(config.projection.output, device);
        let target = detached_copy(&online, Branch::init(config, image, device));
        Byol {
            online,
            predictor,
            target,
            tau_base: config.byol.tau_base,
        }
    }

    fn view_presets(_config: &PretrainConfig) -> Vec<ViewConfig> {
        ViewConfig::byol().to_vec()
    }

    fn loss(&self, views: Vec<Tensor<4>>) -> Result<MethodStep> {
        let both = Tensor::cat(views, 0);
        let p = self.predictor.forward(self.online.forward(both.clone()));
        let z = self.target.forward(both).detach();
        Ok(Step::from(byol_symmetric(p.clone(), z)).watching(p))
    }

    fn after_step(self, progress: f64, _kept: Vec<Tensor<2>>) -> Self {
        let tau = cosine_tau(self.tau_base, progress);
        let target = ema_update(self.target, &self.online, tau);
        Byol { target, ..self }
    }

    fn backbone(&self) -> &Backbone {
        &self.online.backbone
    }

    fn projection(&self) -> Option<&Mlp> {
        Some(&self.online.projection)
    }
}
