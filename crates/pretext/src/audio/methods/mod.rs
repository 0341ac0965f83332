//! Audio SSL methods behind [`AudioMethod`], which is all the audio job knows about: BYOL-A
//! (two augmented views, an EMA target, no negatives), COLA (two segments of a clip against
//! the other clips of the batch) and masked spectrogram modelling (MAE on log-mel patches).

pub mod audio_mae;
pub mod byol_a;
pub mod cola;

use anyhow::Result;
use burn::module::Module;
use burn::prelude::*;

use super::backbones::AudioEncoder;
use super::config::AudioConfig;
use super::views::AudioView;
use crate::core::heads::Mlp;
use crate::core::train::Step;

pub use audio_mae::AudioMae;
pub use byol_a::ByolA;
pub use cola::Cola;

pub trait AudioMethod: Module + Sized {
    /// Build the method for `bands x frames` crops.
    fn init(config: &AudioConfig, bands: usize, frames: usize, device: &Device) -> Self;

    /// The augmentation of each view, in the order `loss` receives them.
    fn view_presets() -> Vec<AudioView>;

    /// The loss of one batch; `views[v]` is `[batch, 1, bands, frames]`.
    fn loss(&self, views: Vec<Tensor<4>>) -> Result<Step>;

    /// Work after each optimizer step (EMA targets); `progress` is the fraction done.
    fn after_step(self, _progress: f64) -> Self {
        self
    }

    /// The encoder whose features are evaluated.
    fn encoder(&self) -> AudioEncoder;
}

/// Encoder and projection: an online network or its momentum copy.
#[derive(Module, Debug)]
pub struct AudioBranch {
    pub encoder: AudioEncoder,
    pub projection: Mlp,
}

impl AudioBranch {
    pub fn init(config: &AudioConfig, bands: usize, frames: usize, device: &Device) -> Self {
        let encoder = config.backbone.init(bands, frames, device);
        let projection = config.projection.init(encoder.out_dim(), device);
        AudioBranch {
            encoder,
            projection,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.projection.forward(self.encoder.forward(x))
    }
}

/// Every method name an audio config may give.
pub const AUDIO_METHODS: [&str; 3] = ["byol_a", "cola", "audio_mae"];

/// Run `$body` with `$M` bound to the audio method type that `$name` names.
#[macro_export]
macro_rules! with_audio_method {
    ($name:expr, $M:ident => $body:expr) => {
        match $name {
            "cola" => {
                type $M = $crate::audio::methods::Cola;
                $body
            }
            "audio_mae" => {
                type $M = $crate::audio::methods::AudioMae;
                $body
            }
            _ => {
                type $M = $crate::audio::methods::ByolA;
                $body
            }
        }
    };
}
