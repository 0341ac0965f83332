//! Audio encoders (log-mel image `[batch, 1, bands, frames]` → feature vector): BYOL-A's
//! convolutional network, and the shared ViT on patches of the log-mel image (what Audio-MAE
//! and MSM-MAE use).

use anyhow::Result;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::core::kernels::{DropoutForward, LinearForward, MaxPoolForward};
use crate::vision::backbones::small_cnn::ConvBnRelu;
use crate::vision::backbones::{Vit, VitShape};

/// `[backbone]` of an audio config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioBackboneConfig {
    /// `audio_cnn` (BYOL-A's network), `vit_tiny` or `vit_small`.
    pub arch: String,
    /// Channels of the CNN's three convolutions.
    pub width: usize,
    /// Width of the CNN's per-frame MLP: the feature size.
    pub hidden: usize,
    pub dropout: f64,
    /// ViT patch side, and width, depth and heads (0: the preset's).
    pub patch_size: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
}

impl Default for AudioBackboneConfig {
    /// BYOL-A's network at half its width (64 channels, 2048 features in the paper), a size a
    /// 2-core CPU trains in minutes.
    fn default() -> Self {
        AudioBackboneConfig {
            arch: "audio_cnn".into(),
            width: 32,
            hidden: 512,
            dropout: 0.3,
            patch_size: 8,
            dim: 0,
            depth: 0,
            heads: 0,
        }
    }
}

impl AudioBackboneConfig {
    pub fn validate(&self, bands: usize) -> Result<()> {
        match self.arch.as_str() {
            "audio_cnn" => {
                if self.width == 0 || self.hidden == 0 {
                    anyhow::bail!("backbone: width and hidden must be positive");
                }
                if bands < 8 {
                    anyhow::bail!(
                        "backbone.arch = \"audio_cnn\" pools the bands 8-fold; data.n_mels = \
                         {bands} is too few"
                    );
                }
                if !(0.0..1.0).contains(&self.dropout) {
                    anyhow::bail!("backbone.dropout = {}: expected [0, 1)", self.dropout);
                }
            }
            "vit_tiny" | "vit_small" => {
                let shape = self.vit_shape_or_tiny();
                if shape.patch == 0
                    || shape.depth == 0
                    || shape.heads == 0
                    || !shape.dim.is_multiple_of(4 * shape.heads)
                {
                    anyhow::bail!(
                        "backbone: a ViT needs a positive patch_size, depth and heads, and dim a \
                         multiple of 4 x heads; got patch {}, dim {}, depth {}, heads {}",
                        shape.patch,
                        shape.dim,
                        shape.depth,
                        shape.heads
                    );
                }
            }
            other => anyhow::bail!(
                "backbone.arch = \"{other}\": expected \"audio_cnn\", \"vit_tiny\" or \"vit_small\""
            ),
        }
        Ok(())
    }

    pub fn vit_shape(&self) -> Option<VitShape> {
        let (dim, depth, heads) = VitShape::preset(&self.arch)?;
        let or = |v: usize, preset: usize| if v == 0 { preset } else { v };
        Some(VitShape {
            dim: or(self.dim, dim),
            depth: or(self.depth, depth),
            heads: or(self.heads, heads),
            patch: self.patch_size,
            learned_positions: false,
            // Crops and whole clips differ in length: sin-cos positions and a mean over patches
            // take any length.
            mean_pool: true,
        })
    }

    /// The ViT this config describes; `vit_tiny`'s shape with the config's overrides when
    /// `arch` names no ViT.
    pub fn vit_shape_or_tiny(&self) -> VitShape {
        let tiny = AudioBackboneConfig {
            arch: "vit_tiny".into(),
            ..self.clone()
        };
        self.vit_shape()
            .or_else(|| tiny.vit_shape())
            .unwrap_or(VitShape {
                dim: 192,
                depth: 12,
                heads: 3,
                patch: self.patch_size,
                learned_positions: false,
                mean_pool: true,
            })
    }

    /// The encoder for `bands x frames` log-mel images.
    pub fn init(&self, bands: usize, frames: usize, device: &Device) -> AudioEncoder {
        match self.vit_shape() {
            Some(shape) => AudioEncoder::Vit(Vit::new(&shape, (1, bands, frames), device)),
            None => AudioEncoder::Cnn(AudioCnn::new(self, bands, device)),
        }
    }
}

/// BYOL-A's encoder (Niizumi et al. 2021, "AudioNTT2020"): three conv3x3-BN-ReLU-maxpool
/// stages, each frame's channels x remaining bands through a two-layer MLP, then the mean plus
/// the max over time, so that a clip of any length gives one vector.
#[derive(Module, Debug)]
pub struct AudioCnn {
    stages: Vec<ConvBnRelu>,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
    dropout: Dropout,
    act: Relu,
}

impl AudioCnn {
    pub fn new(config: &AudioBackboneConfig, bands: usize, device: &Device) -> AudioCnn {
        let w = config.width;
        AudioCnn {
            stages: vec![
                ConvBnRelu::new(1, w, device),
                ConvBnRelu::new(w, w, device),
                ConvBnRelu::new(w, w, device),
            ],
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc1: LinearConfig::new(w * (bands / 8), config.hidden).init(device),
            fc2: LinearConfig::new(config.hidden, config.hidden).init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
            act: Relu::new(),
        }
    }

    pub fn out_dim(&self) -> usize {
        self.fc2.weight.dims()[1]
    }

    /// Per-frame features `[batch, frames / 8, hidden]`.
    pub fn frames(&self, x: Tensor<4>) -> Tensor<3> {
        let mut x = x;
        for stage in &self.stages {
            x = self.pool.forward_fast(stage.forward(x));
        }
        let [b, c, f, t] = x.dims();
        let x = x.permute([0, 3, 1, 2]).reshape([b, t, c * f]);
        let x = self.act.forward(self.fc1.forward_fast(x));
        let x = self.dropout.forward_fast(x);
        self.act.forward(self.fc2.forward_fast(x))
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        mean_plus_max_over_time(self.frames(x))
    }
}

/// BYOL-A's clip readout of per-time-step features `[batch, steps, dim]`: their mean plus their
/// maximum over time.
fn mean_plus_max_over_time(steps: Tensor<3>) -> Tensor<2> {
    let [b, _, d] = steps.dims();
    let mean = steps.clone().mean_dim(1).reshape([b, d]);
    let max = steps.max_dim(1).reshape([b, d]);
    mean + max
}

/// A ViT's clip features as MSM-MAE reads them out (Niizumi et al. 2022, its runtime's
/// timestamp embeddings): at each time step the encoded patches of every band group side by
/// side (`[batch, steps, band groups · dim]`), then mean plus max over time as the CNN's. The
/// ViT's own mean over all patches would average the band groups together: features that
/// cannot tell where in the spectrum a sound is.
fn vit_clip_features(vit: &Vit, x: Tensor<4>) -> Tensor<2> {
    let (encoded, (band_groups, steps)) = vit.encode_images(x);
    let [b, n, d] = encoded.dims();
    let per_step = encoded
        .narrow(1, 1, n - 1)
        .reshape([b, band_groups, steps, d])
        .permute([0, 2, 1, 3])
        .reshape([b, steps, band_groups * d]);
    mean_plus_max_over_time(per_step)
}

/// An audio encoder.
#[allow(clippy::large_enum_variant)] // built once per run
#[derive(Module, Debug)]
pub enum AudioEncoder {
    Cnn(AudioCnn),
    Vit(Vit),
}

impl AudioEncoder {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            AudioEncoder::Cnn(m) => m.forward(x),
            AudioEncoder::Vit(m) => vit_clip_features(m, x),
        }
    }

    pub fn out_dim(&self) -> usize {
        match self {
            AudioEncoder::Cnn(m) => m.out_dim(),
            AudioEncoder::Vit(m) => m.training_grid().0 * m.dim(),
        }
    }

    pub fn vit(&self) -> Result<&Vit> {
        match self {
            AudioEncoder::Vit(v) => Ok(v),
            AudioEncoder::Cnn(_) => anyhow::bail!(
                "masked spectrogram modelling needs a ViT (backbone.arch = \"vit_tiny\")"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoders_take_crops_and_whole_clips() {
        let device = Device::flex();
        for arch in ["audio_cnn", "vit_tiny"] {
            let config = AudioBackboneConfig {
                arch: arch.into(),
                width: 8,
                hidden: 16,
                dim: 16,
                depth: 1,
                heads: 2,
                ..AudioBackboneConfig::default()
            };
            config.validate(64).unwrap();
            let encoder = config.init(64, 48, &device);
            let dim = encoder.out_dim();
            // The ViT sets its 8 band groups of 8x8 patches side by side.
            assert_eq!(dim, if arch == "audio_cnn" { 16 } else { 8 * 16 });
            for frames in [48, 101] {
                let y = encoder.forward(Tensor::zeros([2, 1, 64, frames], &device));
                assert_eq!(y.dims(), [2, dim], "{arch} on {frames} frames");
            }
        }
    }

    #[test]
    fn the_vit_reads_band_groups_side_by_side_then_mean_plus_max_over_time() {
        let device = Device::flex();
        let config = AudioBackboneConfig {
            arch: "vit_tiny".into(),
            dim: 8,
            depth: 1,
            heads: 2,
            ..AudioBackboneConfig::default()
        };
        // 16 bands x 24 frames: 2 band groups x 3 time steps of 8x8 patches.
        let encoder = config.init(16, 24, &device);
        let AudioEncoder::Vit(vit) = &encoder else {
            panic!("a ViT")
        };
        let x = Tensor::<4>::random([2, 1, 16, 24], burn::tensor::Distribution::Default, &device);
        let tokens = vit
            .encode_images(x.clone())
            .0
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let got = encoder.forward(x).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(encoder.out_dim(), 16);
        assert_eq!(got.len(), 2 * 16);
        let (groups, steps, d) = (2, 3, 8);
        for b in 0..2 {
            for g in 0..groups {
                for j in 0..d {
                    // Token 0 is the class token; patch (g, t) is token 1 + g * steps + t.
                    let at =
                        |t: usize| tokens[(b * (1 + groups * steps) + 1 + g * steps + t) * d + j];
                    let series: Vec<f32> = (0..steps).map(at).collect();
                    let mean = series.iter().sum::<f32>() / steps as f32;
                    let max = series.iter().cloned().fold(f32::MIN, f32::max);
                    let value = got[b * 16 + g * d + j];
                    assert!(
                        (value - (mean + max)).abs() < 1e-5,
                        "b {b} group {g} feature {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_cnn_pools_mean_plus_max_over_time() {
        let device = Device::flex();
        let config = AudioBackboneConfig {
            width: 4,
            hidden: 8,
            ..AudioBackboneConfig::default()
        };
        let cnn = AudioCnn::new(&config, 16, &device);
        let x = Tensor::<4>::random([1, 1, 16, 32], burn::tensor::Distribution::Default, &device);
        let frames = cnn.frames(x.clone());
        assert_eq!(frames.dims(), [1, 4, 8]);
        let expected = frames.clone().mean_dim(1) + frames.max_dim(1);
        let got = cnn.forward(x);
        let diff = (got - expected.reshape([1, 8]))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(diff < 1e-6);
    }
}
