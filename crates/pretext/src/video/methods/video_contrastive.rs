//! Temporal contrast (CVRL, Qian et al. 2021): two clips of one video, each from its own random
//! start and with its own spatial augmentation (the same for all of a clip's frames), are a
//! positive pair; the other videos of the batch are the negatives:
//!
//! ```text
//! z1, z2 = proj(encoder(clip1)), proj(encoder(clip2))
//! loss = nt_xent(z1, z2, temperature)
//! ```

use anyhow::Result;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{FrameShape, VideoMethod};
use crate::core::distributed::gather_rows;
use crate::core::heads::Mlp;
use crate::core::losses::nt_xent;
use crate::core::train::Step;
use crate::video::backbones::VideoEncoder;
use crate::video::config::VideoConfig;
use crate::video::views::ClipView;

/// `[contrast]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContrastConfig {
    pub temperature: f64,
}

impl Default for ContrastConfig {
    fn default() -> Self {
        // CVRL's temperature.
        ContrastConfig { temperature: 0.1 }
    }
}

#[derive(Module, Debug)]
pub struct VideoContrastive {
    encoder: VideoEncoder,
    projection: Mlp,
    #[module(skip)]
    temperature: f64,
}

impl VideoMethod for VideoContrastive {
    fn init(config: &VideoConfig, frame: FrameShape, device: &Device) -> Self {
        let encoder = VideoEncoder::new(&config.backbone, config.tubelet, frame, device);
        VideoContrastive {
            projection: config.projection.init(encoder.out_dim(), device),
            encoder,
            temperature: config.contrast.temperature,
        }
    }

    /// Crops, no flips: a flip turns left into right, and the direction of motion is what a
    /// video encoder should keep.
    fn replicas_refused() -> Option<&'static str> {
        Some("its loss contrasts each clip with the other clips of its batch")
    }

    fn view_presets() -> Vec<ClipView> {
        let view = ClipView {
            crop_scale: [0.5, 1.0],
            flip: false,
        };
        vec![view.clone(), view]
    }

    fn loss(&self, clips: Vec<Tensor<5>>) -> Result<Step> {
        let [a, b]: [Tensor<5>; 2] = clips
            .try_into()
            .map_err(|_| anyhow::anyhow!("video_contrastive takes two clips per video"))?;
        let z1 = self.projection.forward(self.encoder.forward(a));
        let z2 = self.projection.forward(self.encoder.forward(b));
        // Under MPI the other videos of the whole global batch are the negatives.
        let loss = nt_xent(gather_rows(z1.clone()), gather_rows(z2), self.temperature);
        Ok(Step::from(loss).watching(z1))
    }

    fn features(&self, clips: Tensor<5>) -> Tensor<2> {
        self.encoder.forward(clips)
    }
}
