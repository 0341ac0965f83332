//! A three-stage CNN sized for 28x28 inputs: the cheap CPU default.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d, Relu};
use burn::prelude::*;

use crate::core::kernels::{BatchNormForward, Conv2dForward, MaxPoolForward};

/// conv3x3 → BN → ReLU, the unit of the small CNN.
#[derive(Module, Debug)]
pub struct ConvBnRelu {
    conv: Conv2d,
    norm: BatchNorm,
    act: Relu,
}

impl ConvBnRelu {
    pub fn new(input: usize, output: usize, device: &Device) -> Self {
        ConvBnRelu {
            conv: Conv2dConfig::new([input, output], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .with_bias(false)
                .init(device),
            norm: BatchNormConfig::new(output).init(device),
            act: Relu::new(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.act
            .forward(self.norm.forward_fast(self.conv.forward_fast(x)))
    }
}

/// `width` → `2 width` → `4 width` channels, two 2x2 max pools, global average pooling.
#[derive(Module, Debug)]
pub struct SmallCnn {
    stage1: ConvBnRelu,
    stage2: ConvBnRelu,
    stage3: ConvBnRelu,
    pool: MaxPool2d,
}

impl SmallCnn {
    pub fn new(channels: usize, width: usize, device: &Device) -> Self {
        SmallCnn {
            stage1: ConvBnRelu::new(channels, width, device),
            stage2: ConvBnRelu::new(width, 2 * width, device),
            stage3: ConvBnRelu::new(2 * width, 4 * width, device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
        }
    }

    pub fn out_dim(&self) -> usize {
        self.stage3.conv.weight.shape().dims::<4>()[0]
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.stage1.forward(x);
        let x = pool_if_large(&self.pool, x);
        let x = self.stage2.forward(x);
        let x = pool_if_large(&self.pool, x);
        super::global_avg_pool(self.stage3.forward(x))
    }
}

/// Pool only while the map is at least 2x2, so tiny inputs still pass.
fn pool_if_large(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if h >= 2 && w >= 2 {
        pool.forward_fast(x)
    } else {
        x
    }
}
