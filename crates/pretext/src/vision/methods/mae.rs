//! MAE (He et al. 2021): hide most patches of an image; the ViT encoder sees only the visible
//! ones (that is MAE's saving: with 75% masked the encoder runs on a quarter of the tokens); a
//! light decoder gets the encoded visible tokens back in place among mask tokens, with its own
//! positions, and predicts the pixels of every patch; the loss is the MSE on the masked patches,
//! against per-patch normalised pixels by default.

use anyhow::Result;
use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{ImageShape, Method, MethodStep, Reconstruction};
use crate::core::kernels::{FastLayerNorm, LinearForward};
use crate::core::losses::masked_mse;
use crate::core::transformer::PreNormBlocks;
use crate::vision::backbones::vit::{final_norm, pre_norm_blocks, sincos_positions};
use crate::vision::backbones::{Backbone, Vit};
use crate::vision::config::PretrainConfig;
use crate::vision::masking::{
    PatchMask, check_patch_masking, gather_tokens, normalize_patches, normalized_patches,
    random_masking,
};
use crate::vision::views::ViewConfig;

/// `[mae]`: the paper's defaults, with a decoder sized for small images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaeConfig {
    /// Share of patches hidden from the encoder.
    pub mask_ratio: f64,
    /// Regress per-patch normalised pixels (the paper's better target) instead of raw ones.
    pub norm_pix_loss: bool,
    pub decoder_dim: usize,
    pub decoder_depth: usize,
    pub decoder_heads: usize,
}

impl Default for MaeConfig {
    fn default() -> Self {
        MaeConfig {
            mask_ratio: 0.75,
            norm_pix_loss: true,
            decoder_dim: 128,
            decoder_depth: 2,
            decoder_heads: 4,
        }
    }
}

impl MaeConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            anyhow::bail!("mae.mask_ratio = {}: must lie in (0, 1)", self.mask_ratio);
        }
        if self.decoder_depth == 0
            || self.decoder_heads == 0
            || !self.decoder_dim.is_multiple_of(4 * self.decoder_heads)
        {
            anyhow::bail!(
                "mae: decoder_depth and decoder_heads must be positive and decoder_dim a multiple \
                 of 4 x decoder_heads; got {} / {} / {}",
                self.decoder_dim,
                self.decoder_depth,
                self.decoder_heads
            );
        }
        Ok(())
    }
}

#[derive(Module, Debug)]
pub struct Mae {
    /// The ViT that is evaluated.
    encoder: Backbone,
    decoder_embed: Linear,
    mask_token: Param<Tensor<3>>,
    decoder: PreNormBlocks,
    decoder_norm: FastLayerNorm,
    /// Pixels of one patch per decoded token.
    decoder_pred: Linear,
    #[module(skip)]
    config: MaeConfig,
    #[module(skip)]
    channels: usize,
}

/// One forward pass: predicted patches, the patches themselves and the mask drawn.
struct Pass {
    pred: Tensor<3>,
    patches: Tensor<3>,
    mask: PatchMask,
}

impl Mae {
    fn forward(&self, images: Tensor<4>) -> Result<Pass> {
        let vit = self.encoder.vit()?;
        let [b, _, h, w] = images.dims();
        let grid = vit.grid_of(h, w);
        let patches = vit.patches(images);
        let [_, l, _] = patches.dims();
        let mask = random_masking(b, l, self.config.mask_ratio, &patches.device());
        let latent = self.encode_visible(vit, patches.clone(), &mask, grid);
        let pred = self.decode(latent, &mask, grid);
        Ok(Pass {
            pred,
            patches,
            mask,
        })
    }

    /// Encoder: only the visible patches are embedded and go in, with their positions.
    /// `[batch, 1 + visible, dim]` (class token first).
    fn encode_visible(
        &self,
        vit: &Vit,
        patches: Tensor<3>,
        mask: &PatchMask,
        grid: (usize, usize),
    ) -> Tensor<3> {
        let positions = vit.patch_positions(grid, &patches.device());
        encode_visible_at(vit, patches, mask, positions)
    }

    /// Decoder: the visible tokens back in place among mask tokens, the decoder's own positions,
    /// pixels predicted for every patch `[batch, patches, channels * patch²]`.
    fn decode(&self, latent: Tensor<3>, mask: &PatchMask, grid: (usize, usize)) -> Tensor<3> {
        let positions = sincos_positions(grid, self.config.decoder_dim, &latent.device());
        self.decode_at(latent, mask, positions)
    }

    /// [`Mae::decode`] with the decoder's positions `[1, patches, decoder_dim]` given: a video
    /// MAE lays its tubelets out in space and time.
    pub fn decode_at(
        &self,
        latent: Tensor<3>,
        mask: &PatchMask,
        positions: Tensor<3>,
    ) -> Tensor<3> {
        let l = positions.dims()[1];
        let decoded = self.decoder_tokens(latent, mask, positions);
        self.decoder_pred.forward_fast(decoded.narrow(1, 1, l))
    }

    /// The decoder's normalised tokens `[batch, 1 + patches, decoder_dim]` (class token
    /// first), each patch's token in its place.
    fn decoder_tokens(
        &self,
        latent: Tensor<3>,
        mask: &PatchMask,
        positions: Tensor<3>,
    ) -> Tensor<3> {
        let x = self.decoder_embed.forward_fast(latent);
        let [b, n, dim] = x.dims();
        let l = positions.dims()[1];
        let cls = x.clone().narrow(1, 0, 1);
        let visible = x.narrow(1, 1, n - 1);
        let masked = self.mask_token.val().expand([b, l - mask.visible(), dim]);
        let in_place =
            gather_tokens(Tensor::cat(vec![visible, masked], 1), mask.restore.clone()) + positions;
        self.decoder_norm
            .forward(self.decoder.forward(Tensor::cat(vec![cls, in_place], 1)))
    }

    /// [`Mae::masked_loss`] of [`Mae::decode_at`], with pixels predicted for the hidden patches
    /// only, as VideoMAE's reference predicts them: every sequence hides as many patches, so
    /// the mean over the hidden patches is the masked mean. At 90% masking the head's product
    /// and the loss's terms for the visible tenth were waste, and picking the hidden tokens
    /// leaves no strided view for the head to copy.
    pub fn hidden_loss_at(
        &self,
        latent: Tensor<3>,
        mask: &PatchMask,
        positions: Tensor<3>,
        patches: Tensor<3>,
    ) -> Tensor<1> {
        let decoded = self.decoder_tokens(latent, mask, positions);
        // The class token comes first: patch `i`'s token is row `i + 1`.
        let hidden_tokens = gather_tokens(decoded, mask.hidden.clone().add_scalar(1));
        let pred = self.decoder_pred.forward_fast(hidden_tokens);
        let target = gather_tokens(patches, mask.hidden.clone());
        let target = if self.config.norm_pix_loss {
            normalized_patches(target)
        } else {
            target
        };
        (pred - target).powi_scalar(2).mean()
    }
}

/// Embed the visible patches, add their positions (of `[1, patches, dim]`), and encode them:
/// `[batch, 1 + visible, dim]` (class token first).
///
/// The embedding is linear per patch, so picking the visible patches before it gives what
/// picking their tokens after it gives, for a tenth of the product at 90% masking (the patch
/// embedding of all 320 tubelets was about 4% of a VideoMAE step, forward and weight gradient).
pub fn encode_visible_at(
    vit: &Vit,
    patches: Tensor<3>,
    mask: &PatchMask,
    positions: Tensor<3>,
) -> Tensor<3> {
    let [batch, visible] = mask.keep.dims();
    let dim = positions.dims()[2];
    // Every image's visible positions picked from the one table, as one sequence.
    let picked = gather_tokens(positions, mask.keep.clone().reshape([1, batch * visible]))
        .reshape([batch, visible, dim]);
    vit.encode(vit.embed(gather_tokens(patches, mask.keep.clone())) + picked)
}

impl Mae {
    /// The MSE on the masked patches, against per-patch normalised pixels under
    /// `norm_pix_loss`.
    pub fn masked_loss(&self, pred: Tensor<3>, patches: Tensor<3>, mask: Tensor<2>) -> Tensor<1> {
        let target = if self.config.norm_pix_loss {
            normalized_patches(patches)
        } else {
            patches
        };
        masked_mse(pred, target, mask)
    }

    pub fn decoder_dim(&self) -> usize {
        self.config.decoder_dim
    }

    /// An MAE around `encoder` (a ViT; other backbones fail at the first loss) for images of
    /// `channels` channels: what audio's masked spectrogram modelling builds on log-mel images.
    pub fn with_encoder(encoder: Backbone, c: &MaeConfig, channels: usize, device: &Device) -> Mae {
        let patch = encoder.vit().map_or(1, Vit::patch_size);
        Mae {
            decoder_embed: LinearConfig::new(encoder.out_dim(), c.decoder_dim)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device),
            mask_token: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([1, 1, c.decoder_dim], device),
            decoder: pre_norm_blocks(c.decoder_dim, c.decoder_depth, c.decoder_heads, device),
            decoder_norm: final_norm(c.decoder_dim, device),
            decoder_pred: LinearConfig::new(c.decoder_dim, channels * patch * patch)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device),
            encoder,
            config: c.clone(),
            channels,
        }
    }
}

impl Method for Mae {
    fn check_shape(config: &PretrainConfig, height: usize, width: usize) -> Result<()> {
        let patch = config.backbone.patch_size;
        check_patch_masking("mae", patch, config.mae.mask_ratio, height, width)
    }

    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        Mae::with_encoder(
            config.backbone.init(image, device),
            &config.mae,
            image.0,
            device,
        )
    }

    /// MAE's augmentation is a crop and a flip only: the masking is the hard part.
    fn view_presets(_config: &PretrainConfig) -> Vec<ViewConfig> {
        vec![ViewConfig::masked_modelling()]
    }

    fn loss(&self, mut views: Vec<Tensor<4>>) -> Result<MethodStep> {
        let pass = self.forward(views.remove(0))?;
        Ok(self
            .masked_loss(pass.pred, pass.patches, pass.mask.mask)
            .into())
    }

    fn reconstruct(&self, images: Tensor<4>) -> Option<Result<Reconstruction>> {
        Some((|| {
            let [_, _, h, w] = images.dims();
            let patch = self.encoder.vit()?.patch_size();
            let pass = self.forward(images)?;
            // Predictions of normalised patches are mapped back with the true patches' stats.
            let pred = if self.config.norm_pix_loss {
                let (_, mean, std) = normalize_patches(pass.patches.clone());
                pass.pred * std + mean
            } else {
                pass.pred
            };
            let image = (self.channels, h, w);
            Reconstruction::of_patches(pass.patches, pred, pass.mask.mask, patch, image)
        })())
    }

    fn backbone(&self) -> &Backbone {
        &self.encoder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_mae(device: &Device) -> Mae {
        let mut config = PretrainConfig {
            method: "mae".into(),
            ..PretrainConfig::default()
        };
        config.backbone.arch = "vit_tiny".into();
        (
            config.backbone.dim,
            config.backbone.depth,
            config.backbone.heads,
        ) = (16, 1, 2);
        config.mae.decoder_dim = 8;
        config.mae.decoder_heads = 2;
        config.mae.decoder_depth = 1;
        Mae::init(&config, (1, 28, 28), device)
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Each of the named value lists of `a` within 1e-5 (relative) of `b`'s.
    fn assert_close<const N: usize>(names: [&str; N], a: [Vec<f32>; N], b: [Vec<f32>; N]) {
        for ((what, a), b) in names.iter().zip(a).zip(b) {
            assert_eq!(a.len(), b.len(), "{what}: sizes");
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "{what}[{i}]: {x} against {y}"
                );
            }
        }
    }

    /// Embedding only the visible patches gives the encoder's output, and the gradients of the
    /// patches, the embedding and (learned) positions, that embedding every patch and picking
    /// the visible tokens gives.
    #[test]
    fn embedding_the_visible_patches_equals_picking_the_embedded_tokens() {
        let device = Device::flex().autodiff();
        let mae = tiny_mae(&device);
        let vit = mae.encoder.vit().unwrap();
        let images =
            Tensor::<4>::random([3, 1, 28, 28], burn::tensor::Distribution::Default, &device);
        let mask = random_masking(3, 49, 0.75, &device);
        // A weighted sum of the class token and the 12 visible tokens, so every output element
        // has a gradient of its own.
        let weights =
            Tensor::<3>::random([3, 13, 16], burn::tensor::Distribution::Default, &device);
        let run = |picked_first: bool| {
            let patches = vit.patches(images.clone()).detach().require_grad();
            let positions = sincos_positions((7, 7), 16, &device)
                .mul_scalar(0.5)
                .detach()
                .require_grad();
            let out = if picked_first {
                encode_visible_at(vit, patches.clone(), &mask, positions.clone())
            } else {
                let tokens = vit.embed(patches.clone()) + positions.clone();
                vit.encode(gather_tokens(tokens, mask.keep.clone()))
            };
            let grads = (out.clone() * weights.clone()).sum().backward();
            let weight = &vit.patch_embed.weight;
            [
                values(out),
                values(patches.grad(&grads).unwrap()),
                values(positions.grad(&grads).unwrap()),
                values(weight.grad(&grads).unwrap()),
            ]
        };
        assert_close(
            [
                "encoder output",
                "patch gradients",
                "position gradients",
                "embedding gradients",
            ],
            run(true),
            run(false),
        );
    }

    /// The loss on the hidden patches' predictions alone equals the masked loss of every
    /// patch's prediction, in value and in the gradients of the head, the decoder and the
    /// encoder, with and without `norm_pix_loss`.
    #[test]
    fn the_hidden_patches_loss_equals_the_masked_loss_of_all_predictions() {
        let device = Device::flex().autodiff();
        for norm_pix in [true, false] {
            let mut mae = tiny_mae(&device);
            mae.config.norm_pix_loss = norm_pix;
            let vit = mae.encoder.vit().unwrap();
            let images =
                Tensor::<4>::random([3, 1, 28, 28], burn::tensor::Distribution::Default, &device);
            let patches = vit.patches(images);
            let mask = random_masking(3, 49, 0.75, &device);
            let run = |hidden_only: bool| {
                let latent = mae.encode_visible(vit, patches.clone(), &mask, (7, 7));
                let positions = sincos_positions((7, 7), 8, &device);
                let loss = if hidden_only {
                    mae.hidden_loss_at(latent, &mask, positions, patches.clone())
                } else {
                    let pred = mae.decode_at(latent, &mask, positions);
                    mae.masked_loss(pred, patches.clone(), mask.mask.clone())
                };
                let grads = loss.clone().backward();
                [
                    values(loss),
                    values(mae.decoder_pred.weight.grad(&grads).unwrap()),
                    values(mae.decoder_embed.weight.grad(&grads).unwrap()),
                    values(vit.patch_embed.weight.grad(&grads).unwrap()),
                ]
            };
            assert_close(
                [
                    "loss",
                    "head gradient",
                    "decoder gradient",
                    "encoder gradient",
                ],
                run(true),
                run(false),
            );
        }
    }

    #[test]
    fn the_encoder_sees_only_visible_patches_and_the_decoder_predicts_all() {
        let device = Device::flex();
        let mae = tiny_mae(&device);
        let vit = mae.encoder.vit().unwrap();
        let images =
            Tensor::<4>::random([3, 1, 28, 28], burn::tensor::Distribution::Default, &device);
        let patches = vit.patches(images.clone());
        assert_eq!(patches.dims(), [3, 49, 16]);
        let mask = random_masking(3, 49, 0.75, &device);
        let latent = mae.encode_visible(vit, patches, &mask, (7, 7));
        assert_eq!(
            latent.dims(),
            [3, 1 + 12, 16],
            "class token + 12 of 49 patches"
        );
        assert_eq!(mae.decode(latent, &mask, (7, 7)).dims(), [3, 49, 16]);
        let loss = mae
            .loss(vec![images.clone()])
            .unwrap()
            .loss
            .into_scalar::<f32>();
        assert!(loss.is_finite() && loss > 0.0);
        let shown = mae.reconstruct(images).unwrap().unwrap();
        assert_eq!(shown.input.dims(), [3, 1, 28, 28]);
        assert_eq!(shown.output.dims(), [3, 1, 28, 28]);
    }
}
