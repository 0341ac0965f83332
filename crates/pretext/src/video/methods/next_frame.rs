//! Next-frame prediction with a SimVP-like model (Gao et al. 2022): every input frame is
//! encoded by strided convolutions to a map at a quarter of its size, the input maps are
//! stacked along channels and a convolutional translator turns them into the output frames'
//! maps, which a mirrored decoder brings back to pixels:
//!
//! ```text
//! h_t = enc(x_t)                   t < input        [hidden, H/4, W/4]
//! z = translator(stack(h_0..h_{input-1}))           [output * hidden, H/4, W/4]
//! y_t = sigmoid(dec(z_t))          t < output
//! loss = mse(y, future frames)
//! ```
//!
//! The features evaluated are the translator's middle layer, averaged over space.

use anyhow::{Result, bail};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d, Relu};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use serde::{Deserialize, Serialize};

use super::{FrameShape, VideoMethod};
use crate::core::kernels::{BatchNormForward, Conv2dForward};
use crate::core::train::Step;
use crate::video::config::VideoConfig;
use crate::video::views::ClipView;
use crate::vision::backbones::decoder::upsample;
use crate::vision::backbones::global_avg_pool;
use crate::vision::backbones::small_cnn::ConvBnRelu;

/// `[next_frame]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NextFrameConfig {
    /// Frames in and frames predicted (OpenSTL's Moving MNIST: 10 and 10).
    pub input: usize,
    pub output: usize,
    /// Channels of each frame's map.
    pub hidden: usize,
    /// Channels inside the translator.
    pub translator: usize,
}

impl Default for NextFrameConfig {
    fn default() -> Self {
        NextFrameConfig {
            input: 10,
            output: 10,
            // SimVP's Moving MNIST model is 64 / 512 wide; a quarter of that fits two CPU cores.
            hidden: 16,
            translator: 128,
        }
    }
}

impl NextFrameConfig {
    pub fn validate(&self, height: usize, width: usize) -> Result<()> {
        if self.input == 0 || self.output == 0 || self.hidden == 0 || self.translator == 0 {
            bail!("next_frame.input, output, hidden and translator must be positive");
        }
        if !height.is_multiple_of(4) || !width.is_multiple_of(4) {
            bail!("next_frame halves frames twice: {height}x{width} is not a multiple of 4");
        }
        Ok(())
    }
}

/// A 3x3 convolution with stride 2 → BN → ReLU: half the size.
#[derive(Module, Debug)]
struct Downsample {
    conv: Conv2d,
    norm: BatchNorm,
    act: Relu,
}

impl Downsample {
    fn new(channels: usize, device: &Device) -> Self {
        Downsample {
            conv: Conv2dConfig::new([channels, channels], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device),
            norm: BatchNormConfig::new(channels).init(device),
            act: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.act
            .forward(self.norm.forward_fast(self.conv.forward_fast(x)))
    }
}

#[derive(Module, Debug)]
pub struct NextFrame {
    enc1: ConvBnRelu,
    down1: Downsample,
    enc2: ConvBnRelu,
    down2: Downsample,
    translate1: ConvBnRelu,
    translate2: ConvBnRelu,
    translate3: Conv2d,
    dec1: ConvBnRelu,
    dec2: ConvBnRelu,
    out: Conv2d,
    #[module(skip)]
    input: usize,
    #[module(skip)]
    output: usize,
    #[module(skip)]
    hidden: usize,
}

impl NextFrame {
    /// Context `[b, input, c, h, w]` → the translator's middle maps `[b, translator, h/4, w/4]`.
    fn middle(&self, context: Tensor<5>) -> Tensor<4> {
        let [b, t, c, h, w] = context.dims();
        let x = context.reshape([b * t, c, h, w]);
        let x = self.down1.forward(self.enc1.forward(x));
        let x = self.down2.forward(self.enc2.forward(x));
        let [_, hid, mh, mw] = x.dims();
        let stacked = x.reshape([b, t * hid, mh, mw]);
        self.translate2.forward(self.translate1.forward(stacked))
    }

    fn forecast(&self, context: Tensor<5>) -> Tensor<5> {
        let [b, _, c, h, w] = context.dims();
        let z = self.translate3.forward_fast(self.middle(context));
        let [_, _, mh, mw] = z.dims();
        let maps = z.reshape([b * self.output, self.hidden, mh, mw]);
        let y = self.dec1.forward(upsample(maps, 2));
        let y = self.dec2.forward(upsample(y, 2));
        sigmoid(self.out.forward_fast(y)).reshape([b, self.output, c, h, w])
    }
}

impl VideoMethod for NextFrame {
    fn init(config: &VideoConfig, frame: FrameShape, device: &Device) -> Self {
        let n = &config.next_frame;
        let (c, hid, mid) = (frame.0, n.hidden, n.translator);
        NextFrame {
            enc1: ConvBnRelu::new(c, hid, device),
            down1: Downsample::new(hid, device),
            enc2: ConvBnRelu::new(hid, hid, device),
            down2: Downsample::new(hid, device),
            translate1: ConvBnRelu::new(n.input * hid, mid, device),
            translate2: ConvBnRelu::new(mid, mid, device),
            translate3: Conv2dConfig::new([mid, n.output * hid], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            dec1: ConvBnRelu::new(hid, hid, device),
            dec2: ConvBnRelu::new(hid, hid, device),
            out: Conv2dConfig::new([hid, c], [1, 1]).init(device),
            input: n.input,
            output: n.output,
            hidden: hid,
        }
    }

    fn clip_frames(config: &VideoConfig) -> usize {
        config.next_frame.input + config.next_frame.output
    }

    fn replicas_refused() -> Option<&'static str> {
        Some("its predictor's batch norm takes statistics over the batch")
    }

    fn view_presets() -> Vec<ClipView> {
        vec![ClipView::default()]
    }

    fn loss(&self, mut clips: Vec<Tensor<5>>) -> Result<Step> {
        let clip = clips.remove(0);
        let context = clip.clone().narrow(1, 0, self.input);
        let future = clip.narrow(1, self.input, self.output);
        let error = self.forecast(context) - future;
        Ok(Step::from(error.powi_scalar(2).mean().reshape([1])))
    }

    fn feature_frames(config: &VideoConfig) -> usize {
        config.next_frame.input
    }

    fn features(&self, clips: Tensor<5>) -> Tensor<2> {
        global_avg_pool(self.middle(clips))
    }

    fn predict(&self, context: Tensor<5>) -> Option<Tensor<5>> {
        Some(self.forecast(context))
    }
}
