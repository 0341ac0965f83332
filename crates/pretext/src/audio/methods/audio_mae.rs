//! Masked spectrogram modelling (Audio-MAE, Huang et al. 2022; MSM-MAE, Niizumi et al. 2022):
//! the log-mel image cut into patches, most of them (80% here, as Audio-MAE) hidden from a ViT
//! encoder, and a light decoder predicting them: the image MAE of `vision/methods/mae.rs` on a
//! one-channel spectrogram.

use anyhow::Result;
use burn::prelude::*;

use super::AudioMethod;
use crate::audio::backbones::AudioEncoder;
use crate::audio::config::AudioConfig;
use crate::audio::views::AudioView;
use crate::core::train::Step;
use crate::vision::backbones::{Backbone, Vit};
use crate::vision::methods::{Mae, Method};

#[derive(Module, Debug)]
pub struct AudioMae {
    mae: Mae,
}

impl AudioMethod for AudioMae {
    fn init(config: &AudioConfig, bands: usize, frames: usize, device: &Device) -> Self {
        // The config's validation refuses any encoder but a ViT for audio_mae.
        let shape = config.backbone.vit_shape_or_tiny();
        let vit = Backbone::Vit(Vit::new(&shape, (1, bands, frames), device));
        AudioMae {
            mae: Mae::with_encoder(vit, &config.mae, 1, device),
        }
    }

    fn view_presets() -> Vec<AudioView> {
        vec![AudioView::crop_only()]
    }

    fn loss(&self, views: Vec<Tensor<4>>) -> Result<Step> {
        Ok(Step::from(Method::loss(&self.mae, views)?.loss))
    }

    fn encoder(&self) -> AudioEncoder {
        match Method::backbone(&self.mae) {
            Backbone::Vit(vit) => AudioEncoder::Vit(vit.clone()),
            _ => unreachable!("audio_mae is built on a ViT"),
        }
    }
}
