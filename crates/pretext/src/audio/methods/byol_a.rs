//! BYOL-A (Niizumi et al. 2021): BYOL on two views of a clip's log-mel image, each a random
//! crop with a background clip mixed in and a random resize crop; an online network with a
//! predictor regresses the projection of its EMA target on the other view.

use anyhow::Result;
use burn::prelude::*;

use super::{AudioBranch, AudioMethod};
use crate::audio::backbones::AudioEncoder;
use crate::audio::config::AudioConfig;
use crate::audio::views::AudioView;
use crate::core::heads::Mlp;
use crate::core::losses::byol_symmetric;
use crate::core::momentum::{cosine_tau, detached_copy, ema_update};
use crate::core::train::Step;

#[derive(Module, Debug)]
pub struct ByolA {
    pub online: AudioBranch,
    pub predictor: Mlp,
    /// Updated only by EMA; its outputs are detached.
    pub target: AudioBranch,
    #[module(skip)]
    tau_base: f64,
}

impl AudioMethod for ByolA {
    fn init(config: &AudioConfig, bands: usize, frames: usize, device: &Device) -> Self {
        let online = AudioBranch::init(config, bands, frames, device);
        let predictor = config.prediction.init(config.projection.output, device);
        let target = detached_copy(&online, AudioBranch::init(config, bands, frames, device));
        ByolA {
            online,
            predictor,
            target,
            tau_base: config.byol.tau_base,
        }
    }

    fn view_presets() -> Vec<AudioView> {
        vec![AudioView::byol_a(), AudioView::byol_a()]
    }

    fn loss(&self, views: Vec<Tensor<4>>) -> Result<Step> {
        let both = Tensor::cat(views, 0);
        let p = self.predictor.forward(self.online.forward(both.clone()));
        let z = self.target.forward(both).detach();
        Ok(Step::from(byol_symmetric(p.clone(), z)).watching(p))
    }

    fn after_step(self, progress: f64) -> Self {
        let tau = cosine_tau(self.tau_base, progress);
        let target = ema_update(self.target, &self.online, tau);
        ByolA { target, ..self }
    }

    fn encoder(&self) -> AudioEncoder {
        self.online.encoder.clone()
    }
}
