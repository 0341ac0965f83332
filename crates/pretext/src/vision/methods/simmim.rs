//! SimMIM (Xie et al. 2022): masked patches enter the ViT as a learned mask token (the encoder
//! sees every position, unlike MAE), a linear head predicts each patch's raw pixels from its
//! encoded token, and the loss is the L1 error on the masked patches only.

use anyhow::Result;
use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{ImageShape, Method, MethodStep, Reconstruction};
use crate::core::kernels::LinearForward;
use crate::core::losses::masked_l1;
use crate::vision::backbones::Backbone;
use crate::vision::config::PretrainConfig;
use crate::vision::masking::{PatchMask, check_patch_masking, random_masking};
use crate::vision::views::ViewConfig;

/// `[simmim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimMimConfig {
    /// Share of patches replaced by the mask token (the paper's 0.6).
    pub mask_ratio: f64,
}

impl Default for SimMimConfig {
    fn default() -> Self {
        SimMimConfig { mask_ratio: 0.6 }
    }
}

impl SimMimConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            anyhow::bail!(
                "simmim.mask_ratio = {}: must lie in (0, 1)",
                self.mask_ratio
            );
        }
        Ok(())
    }
}

#[derive(Module, Debug)]
pub struct SimMim {
    encoder: Backbone,
    mask_token: Param<Tensor<3>>,
    /// Encoded token → the pixels of its patch.
    head: Linear,
    #[module(skip)]
    mask_ratio: f64,
    #[module(skip)]
    channels: usize,
}

impl SimMim {
    /// Predicted and true patches, and the mask drawn.
    fn forward(&self, images: Tensor<4>) -> Result<(Tensor<3>, Tensor<3>, PatchMask)> {
        let vit = self.encoder.vit()?;
        let [b, _, h, w] = images.dims();
        let device = images.device();
        let grid = vit.grid_of(h, w);
        let patches = vit.patches(images);
        let [_, l, _] = patches.dims();
        let mask = random_masking(b, l, self.mask_ratio, &device);
        let hidden = mask.mask.clone().unsqueeze_dim::<3>(2);
        let tokens = vit.embed(patches.clone()) * hidden.clone().neg().add_scalar(1.0)
            + self.mask_token.val() * hidden;
        let encoded = vit.encode(tokens + vit.patch_positions(grid, &device));
        let pred = self.head.forward_fast(encoded.narrow(1, 1, l));
        Ok((pred, patches, mask))
    }
}

impl Method for SimMim {
    fn check_shape(config: &PretrainConfig, height: usize, width: usize) -> Result<()> {
        let patch = config.backbone.patch_size;
        check_patch_masking("simmim", patch, config.simmim.mask_ratio, height, width)
    }

    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let encoder = config.backbone.init(image, device);
        let patch = config.backbone.patch_size;
        SimMim {
            mask_token: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([1, 1, encoder.out_dim()], device),
            head: LinearConfig::new(encoder.out_dim(), image.0 * patch * patch).init(device),
            encoder,
            mask_ratio: config.simmim.mask_ratio,
            channels: image.0,
        }
    }

    fn view_presets(_config: &PretrainConfig) -> Vec<ViewConfig> {
        vec![ViewConfig::masked_modelling()]
    }

    fn loss(&self, mut views: Vec<Tensor<4>>) -> Result<MethodStep> {
        let (pred, patches, mask) = self.forward(views.remove(0))?;
        Ok(masked_l1(pred, patches, mask.mask).into())
    }

    fn reconstruct(&self, images: Tensor<4>) -> Option<Result<Reconstruction>> {
        Some((|| {
            let [_, _, h, w] = images.dims();
            let patch = self.encoder.vit()?.patch_size();
            let (pred, patches, mask) = self.forward(images)?;
            Reconstruction::of_patches(patches, pred, mask.mask, patch, (self.channels, h, w))
        })())
    }

    fn backbone(&self) -> &Backbone {
        &self.encoder
    }
}
