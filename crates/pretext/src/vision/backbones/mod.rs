//! Image backbones (image → feature vector): a small CNN for 28x28 inputs and ResNet-18/50,
//! chosen by the `[backbone]` table.

pub mod resnet;
pub mod small_cnn;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::core::heads::{Mlp, MlpConfig};

pub use resnet::ResNet;
pub use small_cnn::SmallCnn;

/// Which backbone to build; a `[backbone]` table in a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackboneConfig {
    /// `small_cnn` (cheap CPU default for 28x28), `resnet18` or `resnet50`.
    pub arch: String,
    /// ResNet stem: `cifar` (3x3 conv, no pooling: small images) or `imagenet` (7x7/2 + max pool).
    pub stem: String,
    /// Channels of the small CNN's first layer (doubled twice).
    pub width: usize,
}

impl Default for BackboneConfig {
    fn default() -> Self {
        BackboneConfig {
            arch: "small_cnn".into(),
            stem: "cifar".into(),
            width: 32,
        }
    }
}

impl BackboneConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        match self.arch.as_str() {
            "small_cnn" | "resnet18" | "resnet50" => {}
            other => anyhow::bail!(
                "backbone.arch = \"{other}\": expected \"small_cnn\", \"resnet18\" or \"resnet50\""
            ),
        }
        match self.stem.as_str() {
            "cifar" | "imagenet" => {}
            other => {
                anyhow::bail!("backbone.stem = \"{other}\": expected \"cifar\" or \"imagenet\"")
            }
        }
        if self.width == 0 {
            anyhow::bail!("backbone.width must be positive");
        }
        Ok(())
    }

    pub fn init(&self, channels: usize, device: &Device) -> Backbone {
        match self.arch.as_str() {
            "resnet18" => {
                Backbone::ResNet(ResNet::resnet18(channels, self.stem == "imagenet", device))
            }
            "resnet50" => {
                Backbone::ResNet(ResNet::resnet50(channels, self.stem == "imagenet", device))
            }
            _ => Backbone::SmallCnn(SmallCnn::new(channels, self.width, device)),
        }
    }
}

/// An image encoder: `[batch, channels, height, width]` → `[batch, features]`. Every backbone
/// ends in global average pooling, so any input size works.
#[allow(clippy::large_enum_variant)] // built once per run
#[derive(Module, Debug)]
pub enum Backbone {
    SmallCnn(SmallCnn),
    ResNet(ResNet),
}

impl Backbone {
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Backbone::SmallCnn(m) => m.forward(images),
            Backbone::ResNet(m) => m.forward(images),
        }
    }

    /// Size of the feature vector.
    pub fn out_dim(&self) -> usize {
        match self {
            Backbone::SmallCnn(m) => m.out_dim(),
            Backbone::ResNet(m) => m.out_dim(),
        }
    }
}

/// A backbone with the projection head on top of it, as SimCLR, BYOL and MoCo build them.
pub fn backbone_and_projection(
    backbone: &BackboneConfig,
    projection: &MlpConfig,
    channels: usize,
    device: &Device,
) -> (Backbone, Mlp) {
    let backbone = backbone.init(channels, device);
    let projection = projection.init(backbone.out_dim(), device);
    (backbone, projection)
}

/// Global average pooling of `[b, c, h, w]` to `[b, c]`.
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h * w]).mean_dim(2).reshape([b, c])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backbones_adapt_to_input_size_and_channels() {
        let device = Device::flex();
        let cases = [
            ("small_cnn", "cifar", 1, 28, 128),
            ("small_cnn", "cifar", 3, 9, 128),
            ("resnet18", "cifar", 3, 32, 512),
            ("resnet18", "imagenet", 1, 40, 512),
            ("resnet50", "cifar", 3, 16, 2048),
        ];
        for (arch, stem, channels, side, dim) in cases {
            let cfg = BackboneConfig {
                arch: arch.into(),
                stem: stem.into(),
                width: 32,
            };
            let model = cfg.init(channels, &device);
            assert_eq!(model.out_dim(), dim, "{arch}");
            let out = model.forward(Tensor::zeros([2, channels, side, side], &device));
            assert_eq!(out.dims(), [2, dim], "{arch} on {side}x{side}x{channels}");
        }
    }
}
