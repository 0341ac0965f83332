//! A CNN decoder mirroring the small CNN, for autoencoders: the backbone's feature vector →
//! a linear map onto a `4 width`-channel map at a quarter of the image size → two stages of
//! conv3x3-BN-ReLU each followed by 2x nearest upsampling → a conv3x3 to the image's channels,
//! cropped to the image size. Decoding from the pooled vector (not from a spatial map) makes it
//! a true bottleneck: everything the reconstruction needs must pass through the features that
//! evaluation reads.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;

use crate::core::kernels::Conv2dForward;

use super::small_cnn::ConvBnRelu;

#[derive(Module, Debug)]
pub struct CnnDecoder {
    project: Linear,
    act: Relu,
    stage1: ConvBnRelu,
    stage2: ConvBnRelu,
    out: Conv2d,
    /// (channels, rows, columns) of the map the linear layer fills.
    #[module(skip)]
    start: (usize, usize, usize),
    /// (height, width) of the images it reconstructs.
    #[module(skip)]
    image: (usize, usize),
}

/// Nearest-neighbour upsampling: each pixel repeated into a `factor x factor` block,
/// `[b, c, h, w]` → `[b, c, factor h, factor w]`.
pub fn upsample(x: Tensor<4>, factor: usize) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, factor, w, factor])
        .reshape([b, c, factor * h, factor * w])
}

impl CnnDecoder {
    /// A decoder from `features`-long vectors to `(channels, height, width)` images.
    pub fn new(
        features: usize,
        image: (usize, usize, usize),
        width: usize,
        device: &Device,
    ) -> Self {
        let (channels, height, w) = image;
        let start = (4 * width, height.div_ceil(4), w.div_ceil(4));
        CnnDecoder {
            project: LinearConfig::new(features, start.0 * start.1 * start.2).init(device),
            act: Relu::new(),
            stage1: ConvBnRelu::new(4 * width, 2 * width, device),
            stage2: ConvBnRelu::new(2 * width, width, device),
            out: Conv2dConfig::new([width, channels], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            start,
            image: (height, w),
        }
    }

    /// Features `[batch, features]` → images `[batch, channels, height, width]`.
    pub fn forward(&self, features: Tensor<2>) -> Tensor<4> {
        let [batch, _] = features.dims();
        let (c, h, w) = self.start;
        let x = self
            .act
            .forward(self.project.forward(features))
            .reshape([batch, c, h, w]);
        let x = upsample(self.stage1.forward(x), 2);
        let x = upsample(self.stage2.forward(x), 2);
        let (height, width) = self.image;
        self.out
            .forward_fast(x)
            .slice([0..batch, 0..self.out_channels(), 0..height, 0..width])
    }

    fn out_channels(&self) -> usize {
        self.out.weight.dims()[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_to_the_image_size_even_when_not_a_multiple_of_four() {
        let device = Device::flex();
        for (c, h, w) in [(1, 28, 28), (3, 9, 10), (1, 8, 8)] {
            let decoder = CnnDecoder::new(64, (c, h, w), 8, &device);
            let out = decoder.forward(Tensor::ones([2, 64], &device));
            assert_eq!(out.dims(), [2, c, h, w]);
        }
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]),
            &device,
        );
        let up = upsample(x, 2).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(&up[..8], &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
        assert_eq!(&up[8..], &[3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0]);
    }
}
