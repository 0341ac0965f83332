//! Autoencoders on the CNN backbones: encode an image to the backbone's feature vector, decode
//! it with a mirrored CNN, and minimise the MSE against the clean image. `denoising_autoencoder`
//! (Vincent et al. 2008) corrupts the input first (Gaussian noise, salt and pepper, random
//! erasing or block masking); the target stays clean.

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{ImageShape, Method, MethodStep, Reconstruction};
use crate::vision::backbones::{Backbone, CnnDecoder};
use crate::vision::config::PretrainConfig;
use crate::vision::corruption::Corruption;
use crate::vision::views::ViewConfig;

/// `[autoencoder]`: the decoder's width and, for the denoising variant, the corruption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoencoderConfig {
    /// Channels of the decoder's last stage (doubled twice towards the bottleneck).
    pub decoder_width: usize,
    /// `gaussian`, `salt_pepper`, `erase` or `block` (denoising_autoencoder only).
    pub corruption: String,
    /// Gaussian noise's standard deviation, in units of the dataset's pixel std.
    pub noise_std: f64,
    /// Share of pixels set to the batch's darkest or brightest value (half each).
    pub salt_pepper: f64,
    /// Random erasing: one rectangle per image covering this share of it (drawn uniformly).
    pub erase_scale: (f64, f64),
    /// Block masking: share of `block_size` x `block_size` blocks blanked.
    pub block_ratio: f64,
    pub block_size: usize,
}

impl Default for AutoencoderConfig {
    fn default() -> Self {
        AutoencoderConfig {
            decoder_width: 32,
            corruption: "gaussian".into(),
            noise_std: 0.5,
            salt_pepper: 0.2,
            erase_scale: (0.1, 0.4),
            block_ratio: 0.5,
            block_size: 4,
        }
    }
}

impl AutoencoderConfig {
    pub fn validate(&self) -> Result<()> {
        if self.decoder_width == 0 {
            bail!("autoencoder.decoder_width must be positive");
        }
        self.corruption().map(|_| ())
    }

    /// The corruption the keys describe; errors name the key.
    pub fn corruption(&self) -> Result<Corruption> {
        if self.noise_std.is_nan() || self.noise_std <= 0.0 {
            bail!(
                "autoencoder.noise_std = {}: must be positive",
                self.noise_std
            );
        }
        for (name, share) in [
            ("salt_pepper", self.salt_pepper),
            ("block_ratio", self.block_ratio),
        ] {
            if !(share > 0.0 && share < 1.0) {
                bail!("autoencoder.{name} = {share}: must lie in (0, 1)");
            }
        }
        let (lo, hi) = self.erase_scale;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            bail!("autoencoder.erase_scale = [{lo}, {hi}]: need 0 < min <= max <= 1");
        }
        if self.block_size == 0 {
            bail!("autoencoder.block_size must be positive");
        }
        Ok(match self.corruption.as_str() {
            "gaussian" => Corruption::Gaussian {
                std: self.noise_std,
            },
            "salt_pepper" => Corruption::SaltPepper {
                share: self.salt_pepper,
            },
            "erase" => Corruption::Erase {
                scale: self.erase_scale,
            },
            "block" => Corruption::Block {
                ratio: self.block_ratio,
                size: self.block_size,
            },
            other => bail!(
                "autoencoder.corruption = \"{other}\": expected \"gaussian\", \"salt_pepper\", \
                 \"erase\" or \"block\""
            ),
        })
    }
}

#[derive(Module, Debug)]
pub struct Autoencoder {
    encoder: Backbone,
    decoder: CnnDecoder,
    /// `None` for the plain autoencoder.
    #[module(skip)]
    corruption: Option<Corruption>,
}

impl Autoencoder {
    /// The (possibly corrupted) input and its reconstruction.
    fn forward(&self, images: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let input = match &self.corruption {
            Some(c) => c.apply(images),
            None => images,
        };
        let output = self.decoder.forward(self.encoder.forward(input.clone()));
        (input, output)
    }
}

impl Method for Autoencoder {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let encoder = config.backbone.init(image, device);
        let decoder = CnnDecoder::new(
            encoder.out_dim(),
            image,
            config.autoencoder.decoder_width,
            device,
        );
        // The config was validated, so the corruption builds.
        let corruption = (config.method == "denoising_autoencoder")
            .then(|| config.autoencoder.corruption().ok())
            .flatten();
        Autoencoder {
            encoder,
            decoder,
            corruption,
        }
    }

    /// A mild crop and a flip: the image itself is the target.
    fn view_presets(_config: &PretrainConfig) -> Vec<ViewConfig> {
        vec![ViewConfig::finetune()]
    }

    fn loss(&self, mut views: Vec<Tensor<4>>) -> Result<MethodStep> {
        let clean = views.remove(0);
        let (_, output) = self.forward(clean.clone());
        Ok((output - clean).powi_scalar(2).mean().into())
    }

    fn reconstruct(&self, images: Tensor<4>) -> Option<Result<Reconstruction>> {
        let (input, output) = self.forward(images);
        Some(Ok(Reconstruction { input, output }))
    }

    fn backbone(&self) -> &Backbone {
        &self.encoder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_named() {
        let bad = AutoencoderConfig {
            corruption: "blur".into(),
            ..AutoencoderConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("autoencoder.corruption")
        );
        let bad = AutoencoderConfig {
            salt_pepper: 1.5,
            ..AutoencoderConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("salt_pepper")
        );
    }

    #[test]
    fn only_the_denoising_variant_corrupts_and_the_target_stays_clean() {
        let device = Device::flex();
        let mut config = PretrainConfig {
            method: "autoencoder".into(),
            ..PretrainConfig::default()
        };
        config.backbone.width = 4;
        config.autoencoder.decoder_width = 4;
        let plain = Autoencoder::init(&config, (1, 12, 12), &device);
        let images = Tensor::<4>::ones([2, 1, 12, 12], &device);
        let shown = plain.reconstruct(images.clone()).unwrap().unwrap();
        assert_eq!(shown.input.into_data(), images.clone().into_data());
        assert_eq!(shown.output.dims(), [2, 1, 12, 12]);
        config.method = "denoising_autoencoder".into();
        config.autoencoder.corruption = "block".into();
        let denoising = Autoencoder::init(&config, (1, 12, 12), &device);
        let shown = denoising.reconstruct(images.clone()).unwrap().unwrap();
        let zeros = shown.input.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(
            zeros.iter().filter(|v| **v == 0.0).count(),
            2 * 5 * 16,
            "5 of 9 blocks blank"
        );
        assert!(
            denoising
                .loss(vec![images])
                .unwrap()
                .loss
                .into_scalar::<f32>()
                .is_finite()
        );
    }
}
