//! Video SSL methods behind [`VideoMethod`], all the video job knows about: VideoMAE (tube
//! masking of a space-time ViT), temporal contrast (two clips of one video against the other
//! videos of the batch), frame order (is this triplet of frames in order?) and next-frame
//! prediction (a SimVP-like convolutional predictor).

pub mod frame_order;
pub mod next_frame;
pub mod video_contrastive;
pub mod videomae;

use anyhow::Result;
use burn::module::Module;
use burn::prelude::*;

use super::config::VideoConfig;
use super::views::ClipView;
use crate::core::train::Step;

pub use frame_order::FrameOrder;
pub use next_frame::NextFrame;
pub use video_contrastive::VideoContrastive;
pub use videomae::VideoMae;

/// `(channels, height, width)` of a frame.
pub type FrameShape = (usize, usize, usize);

pub trait VideoMethod: Module + Sized {
    fn init(config: &VideoConfig, frame: FrameShape, device: &Device) -> Self;

    /// Frames per training clip.
    fn clip_frames(config: &VideoConfig) -> usize {
        config.data.clip_frames
    }

    /// One view per clip drawn from each video, in the order `loss` receives the clips.
    fn view_presets() -> Vec<ClipView>;

    /// Why the method cannot train as in-process replicas, each on its share of the batch
    /// (`train.replicas`), or `None` where it can: its loss is a mean of per-clip terms and
    /// nothing in it takes statistics over the batch.
    fn replicas_refused() -> Option<&'static str>;

    /// The loss of one batch; `clips[v]` is `[batch, frames, channels, height, width]`.
    fn loss(&self, clips: Vec<Tensor<5>>) -> Result<Step>;

    /// Work after each optimizer step; `progress` is the fraction done.
    fn after_step(self, _progress: f64) -> Self {
        self
    }

    /// Frames of the clips whose features are evaluated.
    fn feature_frames(config: &VideoConfig) -> usize {
        config.data.clip_frames
    }

    /// Features `[batch, dim]` of clips of [`VideoMethod::feature_frames`] frames.
    fn features(&self, clips: Tensor<5>) -> Tensor<2>;

    /// The frames after `context` (next-frame methods only).
    fn predict(&self, _context: Tensor<5>) -> Option<Tensor<5>> {
        None
    }
}

/// Every method name a video config may give.
pub const VIDEO_METHODS: [&str; 4] = ["videomae", "video_contrastive", "frame_order", "next_frame"];

/// Run `$body` with `$M` bound to the video method type that `$name` names.
#[macro_export]
macro_rules! with_video_method {
    ($name:expr, $M:ident => $body:expr) => {
        match $name {
            "video_contrastive" => {
                type $M = $crate::video::methods::VideoContrastive;
                $body
            }
            "frame_order" => {
                type $M = $crate::video::methods::FrameOrder;
                $body
            }
            "next_frame" => {
                type $M = $crate::video::methods::NextFrame;
                $body
            }
            _ => {
                type $M = $crate::video::methods::VideoMae;
                $body
            }
        }
    };
}
