//! VideoMAE (Tong et al. 2022): a clip cut into tubelets (2 frames x 8x8 pixels here), 90% of
//! them hidden by tube masking; the space-time ViT encodes the visible tubelets and the image
//! MAE's light decoder predicts the pixels of the hidden ones:
//!
//! ```text
//! x = tubelets(clip); mask = tube_mask(90%)
//! latent = encoder(embed(x[visible]) + pos[visible])
//! pred = head(decoder(latent ++ mask tokens, decoder positions)[hidden])
//! loss = mse(pred, norm(x[hidden]))
//! ```

use anyhow::Result;
use burn::prelude::*;

use super::{FrameShape, VideoMethod};
use crate::core::train::Step;
use crate::core::transformer::sinusoid_positions;
use crate::video::backbones::{SpaceTimeVit, space_time_features, tubelets};
use crate::video::config::VideoConfig;
use crate::video::masking::tube_masking;
use crate::video::views::ClipView;
use crate::vision::backbones::{Backbone, Vit};
use crate::vision::methods::mae::encode_visible_at;
use crate::vision::methods::{Mae, Method};

#[derive(Module, Debug)]
pub struct VideoMae {
    /// The image MAE around the space-time ViT (a ViT of `tubelet x channels`-channel images).
    mae: Mae,
    #[module(skip)]
    tubelet: usize,
    #[module(skip)]
    mask_ratio: f64,
}

impl VideoMae {
    fn vit(&self) -> &Vit {
        match Method::backbone(&self.mae) {
            Backbone::Vit(vit) => vit,
            _ => unreachable!("VideoMAE is built on a ViT"),
        }
    }
}

impl VideoMethod for VideoMae {
    fn init(config: &VideoConfig, frame: FrameShape, device: &Device) -> Self {
        let encoder = SpaceTimeVit::new(&config.backbone, config.tubelet, frame, device);
        let channels = config.tubelet * frame.0;
        VideoMae {
            mae: Mae::with_encoder(Backbone::Vit(encoder.vit), &config.mae, channels, device),
            tubelet: config.tubelet,
            mask_ratio: config.mae.mask_ratio,
        }
    }

    fn replicas_refused() -> Option<&'static str> {
        None
    }

    fn view_presets() -> Vec<ClipView> {
        vec![ClipView::default()]
    }

    fn loss(&self, mut clips: Vec<Tensor<5>>) -> Result<Step> {
        let clip = clips.remove(0);
        let device = clip.device();
        let [b, t, _, h, w] = clip.dims();
        let vit = self.vit();
        let patches = tubelets(vit, self.tubelet, clip);
        let tokens = patches.dims()[1];
        let (rows, cols) = vit.grid_of(h, w);
        let mask = tube_masking(b, t / self.tubelet, rows * cols, self.mask_ratio, &device);
        let positions = sinusoid_positions(tokens, vit.dim(), &device);
        let latent = encode_visible_at(vit, patches.clone(), &mask, positions);
        let positions = sinusoid_positions(tokens, self.mae.decoder_dim(), &device);
        Ok(Step::from(
            self.mae.hidden_loss_at(latent, &mask, positions, patches),
        ))
    }

    fn features(&self, clips: Tensor<5>) -> Tensor<2> {
        space_time_features(self.vit(), self.tubelet, clips)
    }
}
