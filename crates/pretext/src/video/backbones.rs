//! Clip encoders, `[batch, frames, channels, height, width]` → `[batch, features]`:
//! - a space-time ViT (VideoMAE's): tubelets of `tubelet` frames x `patch x patch` pixels
//!   embedded linearly, fixed 1-D sinusoid positions over the space-time token order, the
//!   shared ViT blocks; each tubelet slot's tokens averaged over space;
//! - any image backbone applied frame by frame.
//!
//! Both read a clip out alike ([`clip_readout`]): the mean over time of the per-slot (per-frame)
//! features beside their mean change from the first to the last. A mean alone cannot tell
//! forwards from backwards, and averaging where things are over time blurs where they went, so
//! the direction of motion would be left to what the mean happens to keep.

use anyhow::{Result, bail};
use burn::prelude::*;

use crate::core::transformer::sinusoid_positions;
use crate::vision::backbones::{Backbone, BackboneConfig, Vit};

/// A ViT over tubelets.
#[derive(Module, Debug)]
pub struct SpaceTimeVit {
    pub vit: Vit,
    #[module(skip)]
    tubelet: usize,
}

impl SpaceTimeVit {
    /// For clips of `(channels, height, width)` frames.
    pub fn new(
        config: &BackboneConfig,
        tubelet: usize,
        frame: (usize, usize, usize),
        device: &Device,
    ) -> SpaceTimeVit {
        let (c, h, w) = frame;
        let mut shape = config.vit_shape().unwrap_or_else(|| {
            BackboneConfig {
                arch: "vit_tiny".into(),
                ..config.clone()
            }
            .vit_shape()
            .expect("vit_tiny is a ViT preset")
        });
        // Token order is space-time: the features average tokens, as VideoMAE's do.
        shape.mean_pool = true;
        SpaceTimeVit {
            vit: Vit::new(&shape, (tubelet * c, h, w), device),
            tubelet,
        }
    }

    pub fn out_dim(&self) -> usize {
        2 * self.vit.dim()
    }

    pub fn tubelet(&self) -> usize {
        self.tubelet
    }

    /// Clips `[b, t, c, h, w]` → tubelet pixels `[b, (t / tubelet) * patches, tubelet * c * p²]`
    /// in time-major order; trailing frames that do not fill a tubelet are dropped.
    pub fn tubelets(&self, clips: Tensor<5>) -> Tensor<3> {
        tubelets(&self.vit, self.tubelet, clips)
    }

    pub fn forward(&self, clips: Tensor<5>) -> Tensor<2> {
        space_time_features(&self.vit, self.tubelet, clips)
    }
}

/// Clips `[b, t, c, h, w]` → the pixels of `vit`'s patches of `tubelet`-frame stacks,
/// `[b, (t / tubelet) * patches, tubelet * c * p²]` in time-major order (the ViT was built
/// for `tubelet * c`-channel images); trailing frames that do not fill a tubelet are dropped.
pub fn tubelets(vit: &Vit, tubelet: usize, clips: Tensor<5>) -> Tensor<3> {
    let [b, t, c, h, w] = clips.dims();
    let slots = t / tubelet;
    let clips = clips.narrow(1, 0, slots * tubelet);
    let frames = clips.reshape([b * slots, tubelet * c, h, w]);
    let patches = vit.patches(frames);
    let [_, l, values] = patches.dims();
    patches.reshape([b, slots * l, values])
}

/// Every tubelet embedded with its position and encoded; each slot's tokens averaged over
/// space and the slots read out by [`clip_readout`]: `[b, 2 dim]`.
pub fn space_time_features(vit: &Vit, tubelet: usize, clips: Tensor<5>) -> Tensor<2> {
    let device = clips.device();
    let slots = clips.dims()[1] / tubelet;
    let patches = tubelets(vit, tubelet, clips);
    let [b, tokens, _] = patches.dims();
    let x = vit.embed(patches) + sinusoid_positions(tokens, vit.dim(), &device);
    let encoded = vit.encode(x);
    let d = vit.dim();
    // Drop the class token; tokens are time-major, `tokens / slots` patches per slot.
    let per_slot = encoded
        .narrow(1, 1, tokens)
        .reshape([b, slots, tokens / slots, d])
        .mean_dim(2)
        .reshape([b, slots, d]);
    clip_readout(per_slot)
}

/// Per-step features `[b, t, d]` → `[mean over t, (last - first) / (t - 1)]`: `[b, 2 d]`.
pub fn clip_readout(steps: Tensor<3>) -> Tensor<2> {
    let [b, t, d] = steps.dims();
    let mean = steps.clone().mean_dim(1).reshape([b, d]);
    let change = if t > 1 {
        (steps.clone().narrow(1, t - 1, 1) - steps.narrow(1, 0, 1)).reshape([b, d]) / (t - 1) as f32
    } else {
        mean.zeros_like()
    };
    Tensor::cat(vec![mean, change], 1)
}

/// An image backbone on every frame, with two coordinate planes added to its input
/// (CoordConv, Liu et al. 2018): the CNNs end in global average pooling, which would otherwise
/// leave little of where an object is, and where it is from frame to frame is the motion.
#[derive(Module, Debug)]
pub struct FrameEncoder {
    pub backbone: Backbone,
}

/// Rows and columns from -1 to 1 as two planes `[n, 2, h, w]`.
fn coordinate_planes(n: usize, h: usize, w: usize, device: &Device) -> Tensor<4> {
    let at = |i: usize, len: usize| {
        if len > 1 {
            2.0 * i as f32 / (len - 1) as f32 - 1.0
        } else {
            0.0
        }
    };
    let mut planes = Vec::with_capacity(2 * h * w);
    planes.extend((0..h * w).map(|p| at(p / w, h)));
    planes.extend((0..h * w).map(|p| at(p % w, w)));
    Tensor::<4>::from_data(TensorData::new(planes, [1, 2, h, w]), device).expand([n, 2, h, w])
}

impl FrameEncoder {
    pub fn new(config: &BackboneConfig, frame: (usize, usize, usize), device: &Device) -> Self {
        let (c, h, w) = frame;
        FrameEncoder {
            backbone: config.init((c + 2, h, w), device),
        }
    }

    pub fn frame_dim(&self) -> usize {
        self.backbone.out_dim()
    }

    /// Frames `[n, c, h, w]` → `[n, dim]`.
    pub fn frames(&self, frames: Tensor<4>) -> Tensor<2> {
        let [n, _, h, w] = frames.dims();
        let device = frames.device();
        let with_coordinates = Tensor::cat(vec![frames, coordinate_planes(n, h, w, &device)], 1);
        self.backbone.forward(with_coordinates)
    }

    /// Every frame's features `[b, t, dim]`.
    pub fn per_frame(&self, clips: Tensor<5>) -> Tensor<3> {
        let [b, t, c, h, w] = clips.dims();
        let f = self.frames(clips.reshape([b * t, c, h, w]));
        f.reshape([b, t, self.frame_dim()])
    }

    /// `[mean over frames, mean frame-to-frame change]`: `[b, 2 dim]`.
    pub fn forward(&self, clips: Tensor<5>) -> Tensor<2> {
        clip_readout(self.per_frame(clips))
    }

    pub fn out_dim(&self) -> usize {
        2 * self.frame_dim()
    }
}

/// What a video method's features are read from.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum VideoEncoder {
    SpaceTime(SpaceTimeVit),
    Frames(FrameEncoder),
}

impl VideoEncoder {
    /// The space-time ViT for a ViT `backbone.arch`, the frame-by-frame backbone otherwise.
    pub fn new(
        config: &BackboneConfig,
        tubelet: usize,
        frame: (usize, usize, usize),
        device: &Device,
    ) -> Self {
        if config.is_vit() {
            VideoEncoder::SpaceTime(SpaceTimeVit::new(config, tubelet, frame, device))
        } else {
            VideoEncoder::Frames(FrameEncoder::new(config, frame, device))
        }
    }

    pub fn forward(&self, clips: Tensor<5>) -> Tensor<2> {
        match self {
            VideoEncoder::SpaceTime(m) => m.forward(clips),
            VideoEncoder::Frames(m) => m.forward(clips),
        }
    }

    pub fn out_dim(&self) -> usize {
        match self {
            VideoEncoder::SpaceTime(m) => m.out_dim(),
            VideoEncoder::Frames(m) => m.out_dim(),
        }
    }
}

/// Clips of `frames` frames of `height x width` split into whole tubelets of patches.
pub fn check_tubelets(
    tubelet: usize,
    patch: usize,
    frames: usize,
    height: usize,
    width: usize,
) -> Result<()> {
    if tubelet == 0 || frames < tubelet {
        bail!("tubelet = {tubelet}: must be positive and at most the clip's {frames} frames");
    }
    if patch == 0 || !height.is_multiple_of(patch) || !width.is_multiple_of(patch) {
        bail!("backbone.patch_size = {patch} does not divide the {height}x{width} frames");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tubelets_stack_consecutive_frames_under_one_patch() {
        let device = Device::flex();
        let config = BackboneConfig {
            arch: "vit_tiny".into(),
            patch_size: 2,
            dim: 8,
            depth: 1,
            heads: 2,
            ..BackboneConfig::default()
        };
        let vit = SpaceTimeVit::new(&config, 2, (1, 4, 4), &device);
        // Frame t holds the value t everywhere.
        let values: Vec<f32> = (0..4).flat_map(|t| vec![t as f32; 16]).collect();
        let clips = Tensor::<5>::from_data(TensorData::new(values, [1, 4, 1, 4, 4]), &device);
        let tubes = vit.tubelets(clips.clone());
        assert_eq!(tubes.dims(), [1, 2 * 4, 2 * 2 * 2]);
        let v = tubes.into_data().try_to_vec::<f32>().unwrap();
        // The first 4 tokens (first tubelet slot) hold frames 0 and 1, the next 4 frames 2, 3.
        assert_eq!(&v[..8], &[0., 0., 0., 0., 1., 1., 1., 1.]);
        assert_eq!(&v[32..40], &[2., 2., 2., 2., 3., 3., 3., 3.]);
        assert_eq!(vit.forward(clips).dims(), [1, 2 * 8]);
        let p = sinusoid_positions(3, 4, &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        // Position 1: sin(1), cos(1), sin(1/100), cos(1/100).
        let want = [1f32.sin(), 1f32.cos(), 0.01f32.sin(), 0.01f32.cos()];
        for (a, b) in p[4..8].iter().zip(want) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn coordinate_planes_run_from_minus_one_to_one() {
        let p = coordinate_planes(1, 2, 3, &Device::flex());
        let v = p.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        assert_eq!(v, vec![-1., -1., -1., 1., 1., 1., -1., 0., 1., -1., 0., 1.]);
    }

    #[test]
    fn frame_features_see_which_way_a_clip_runs() {
        let device = Device::flex();
        let enc = FrameEncoder::new(&BackboneConfig::default(), (1, 8, 8), &device);
        let clip = Tensor::<5>::random(
            [1, 3, 1, 8, 8],
            burn::tensor::Distribution::Default,
            &device,
        );
        let backwards = clip.clone().flip([1]);
        let (a, b) = (enc.forward(clip), enc.forward(backwards));
        let d = enc.frame_dim();
        let diff = |x: Tensor<2>, y: Tensor<2>| (x - y).abs().max().into_scalar::<f32>();
        // The same mean, the opposite change.
        assert!(diff(a.clone().narrow(1, 0, d), b.clone().narrow(1, 0, d)) < 1e-4);
        assert!(diff(a.clone().narrow(1, d, d), -b.narrow(1, d, d)) < 1e-4);
        assert!(a.narrow(1, d, d).abs().max().into_scalar::<f32>() > 1e-4);
    }
}
