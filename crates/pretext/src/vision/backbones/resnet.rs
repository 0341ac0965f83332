//! ResNet-18 and ResNet-50 (He et al. 2016) with a CIFAR stem (3x3, stride 1, no pooling) or an
//! ImageNet stem (7x7, stride 2, 3x3 max pool).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d, Relu};
use burn::prelude::*;

use crate::core::checkpoint::{NamedTensor, module_tensors};
use crate::core::kernels::{BatchNormForward, Conv2dForward, MaxPoolForward};

fn conv(input: usize, output: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([input, output], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            kernel / 2,
            kernel / 2,
            kernel / 2,
            kernel / 2,
        ))
        .with_bias(false)
        .init(device)
}

fn bn(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels).init(device)
}

/// A tensor's name in torchvision's ResNet: see [`ResNet::torchvision_tensors`]; `stages[i]` is
/// block `i`'s (stage from 1, index in the stage).
fn torchvision_name(name: &str, stages: &[(usize, usize)]) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let (prefix, rest) = match parts.as_slice() {
        ["stem", rest @ ..] => ("conv1".to_string(), rest),
        ["stem_norm", rest @ ..] => ("bn1".to_string(), rest),
        ["blocks", i, _variant, rest @ ..] => {
            let (stage, j) = i
                .parse::<usize>()
                .ok()
                .and_then(|i| stages.get(i).copied())
                .unwrap_or_default();
            (format!("layer{stage}.{j}"), rest)
        }
        _ => return name.to_string(),
    };
    let rest: Vec<&str> = rest
        .iter()
        .map(|p| match *p {
            // Only the shortcut has modules named plainly `conv` and `norm`.
            "shortcut" => "downsample",
            "conv" => "0",
            "norm" => "1",
            "gamma" => "weight",
            "beta" => "bias",
            other => other,
        })
        .collect();
    format!("{prefix}.{}", rest.join("."))
}

/// 1x1 projection of the shortcut when the shape changes.
#[derive(Module, Debug)]
pub struct Shortcut {
    conv: Conv2d,
    norm: BatchNorm,
}

impl Shortcut {
    fn new(input: usize, output: usize, stride: usize, device: &Device) -> Option<Self> {
        (stride != 1 || input != output).then(|| Shortcut {
            conv: conv(input, output, 1, stride, device),
            norm: bn(output, device),
        })
    }
}

fn residual(shortcut: &Option<Shortcut>, x: Tensor<4>, out: Tensor<4>) -> Tensor<4> {
    let identity = match shortcut {
        Some(s) => s.norm.forward_fast(s.conv.forward_fast(x)),
        None => x,
    };
    Relu::new().forward(out + identity)
}

/// Two 3x3 convolutions (ResNet-18/34).
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<Shortcut>,
}

/// 1x1 → 3x3 → 1x1 with 4x expansion (ResNet-50).
#[derive(Module, Debug)]
pub struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Conv2d,
    bn3: BatchNorm,
    shortcut: Option<Shortcut>,
}

// Blocks are built once per model; the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Block {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
}

impl Block {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let relu = Relu::new();
        match self {
            Block::Basic(b) => {
                let out = relu.forward(b.bn1.forward_fast(b.conv1.forward_fast(x.clone())));
                let out = b.bn2.forward_fast(b.conv2.forward_fast(out));
                residual(&b.shortcut, x, out)
            }
            Block::Bottleneck(b) => {
                let out = relu.forward(b.bn1.forward_fast(b.conv1.forward_fast(x.clone())));
                let out = relu.forward(b.bn2.forward_fast(b.conv2.forward_fast(out)));
                let out = b.bn3.forward_fast(b.conv3.forward_fast(out));
                residual(&b.shortcut, x, out)
            }
        }
    }
}

#[derive(Module, Debug)]
pub struct ResNet {
    stem: Conv2d,
    stem_norm: BatchNorm,
    stem_pool: Option<MaxPool2d>,
    blocks: Vec<Block>,
    /// Blocks per stage ([2, 2, 2, 2]: ResNet-18), for torchvision's `layerS.J` names.
    #[module(skip)]
    layers: [usize; 4],
}

impl ResNet {
    /// Residual blocks, all stages together.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    fn build(
        channels: usize,
        imagenet_stem: bool,
        bottleneck: bool,
        layers: [usize; 4],
        device: &Device,
    ) -> Self {
        let stem = if imagenet_stem {
            conv(channels, 64, 7, 2, device)
        } else {
            conv(channels, 64, 3, 1, device)
        };
        let stem_pool = imagenet_stem.then(|| {
            MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init()
        });
        let mut blocks = Vec::new();
        let mut input = 64;
        for (stage, &count) in layers.iter().enumerate() {
            let width = 64 << stage;
            for i in 0..count {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                let block = if bottleneck {
                    let output = width * 4;
                    let b = Block::Bottleneck(Bottleneck {
                        conv1: conv(input, width, 1, 1, device),
                        bn1: bn(width, device),
                        conv2: conv(width, width, 3, stride, device),
                        bn2: bn(width, device),
                        conv3: conv(width, output, 1, 1, device),
                        bn3: bn(output, device),
                        shortcut: Shortcut::new(input, output, stride, device),
                    });
                    input = output;
                    b
                } else {
                    let b = Block::Basic(BasicBlock {
                        conv1: conv(input, width, 3, stride, device),
                        bn1: bn(width, device),
                        conv2: conv(width, width, 3, 1, device),
                        bn2: bn(width, device),
                        shortcut: Shortcut::new(input, width, stride, device),
                    });
                    input = width;
                    b
                };
                blocks.push(block);
            }
        }
        ResNet {
            stem,
            stem_norm: bn(64, device),
            stem_pool,
            blocks,
            layers,
        }
    }

    /// The tensors under the state-dict names of torchvision's `resnet18()` / `resnet50()`:
    /// `conv1`, `bn1`, `layerS.J.conv1`, ..., `layerS.J.downsample.0` (the shortcut's conv) and
    /// `.1` (its batch norm), batch norm's scale and shift as `weight` and `bias`. The two
    /// architectures agree layer for layer (the stride sits on ResNet-50's 3x3 conv in both).
    pub fn torchvision_tensors(&self) -> Vec<NamedTensor> {
        let stages: Vec<(usize, usize)> = self
            .layers
            .iter()
            .enumerate()
            .flat_map(|(s, &n)| (0..n).map(move |j| (s + 1, j)))
            .collect();
        module_tensors(self)
            .into_iter()
            .map(|t| NamedTensor {
                name: torchvision_name(&t.name, &stages),
                ..t
            })
            .collect()
    }

    pub fn resnet18(channels: usize, imagenet_stem: bool, device: &Device) -> Self {
        Self::build(channels, imagenet_stem, false, [2, 2, 2, 2], device)
    }

    pub fn resnet50(channels: usize, imagenet_stem: bool, device: &Device) -> Self {
        Self::build(channels, imagenet_stem, true, [3, 4, 6, 3], device)
    }

    pub fn out_dim(&self) -> usize {
        match self.blocks.last() {
            Some(Block::Basic(b)) => b.conv2.weight.shape().dims::<4>()[0],
            Some(Block::Bottleneck(b)) => b.conv3.weight.shape().dims::<4>()[0],
            None => 64,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = Relu::new().forward(self.stem_norm.forward_fast(self.stem.forward_fast(x)));
        if let Some(pool) = &self.stem_pool {
            x = pool.forward_fast(x);
        }
        for block in &self.blocks {
            x = block.forward(x);
        }
        super::global_avg_pool(x)
    }
}
