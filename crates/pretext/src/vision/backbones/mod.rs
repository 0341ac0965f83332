//! Image backbones (image → feature vector): a small CNN for 28x28 inputs, ResNet-18/50 and
//! Vision Transformers, chosen by the `[backbone]` table; and the CNN decoder of autoencoders.

pub mod decoder;
pub mod resnet;
pub mod small_cnn;
pub mod vit;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::core::heads::{Mlp, MlpConfig};

pub use decoder::CnnDecoder;
pub use resnet::ResNet;
pub use small_cnn::SmallCnn;
pub use vit::{Vit, VitShape};

/// Which backbone to build; a `[backbone]` table in a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackboneConfig {
    /// `small_cnn` (cheap CPU default for 28x28), `resnet18`, `resnet50`, `vit_tiny` or
    /// `vit_small`.
    pub arch: String,
    /// ResNet stem: `cifar` (3x3 conv, no pooling: small images) or `imagenet` (7x7/2 + max pool).
    pub stem: String,
    /// Channels of the small CNN's first layer (doubled twice).
    pub width: usize,
    /// ViT patch side in pixels (4 makes 49 patches of a 28x28 image; 2 suits 8x8). Images whose
    /// sides are not multiples of it are padded with the mean.
    pub patch_size: usize,
    /// ViT width, depth and heads; 0 keeps the preset's (vit_tiny 192/12/3, vit_small 384/12/6).
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    /// ViT positions: `sincos` (fixed 2-D, any image size) or `learned` (the training size only).
    pub position: String,
    /// ViT features: `cls` (the class token) or `mean` (the mean of the patch tokens).
    pub pool: String,
}

impl Default for BackboneConfig {
    fn default() -> Self {
        BackboneConfig {
            arch: "small_cnn".into(),
            stem: "cifar".into(),
            width: 32,
            patch_size: 4,
            dim: 0,
            depth: 0,
            heads: 0,
            position: "sincos".into(),
            pool: "cls".into(),
        }
    }
}

impl BackboneConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        match self.arch.as_str() {
            "small_cnn" | "resnet18" | "resnet50" | "vit_tiny" | "vit_small" => {}
            other => anyhow::bail!(
                "backbone.arch = \"{other}\": expected \"small_cnn\", \"resnet18\", \"resnet50\", \
                 \"vit_tiny\" or \"vit_small\""
            ),
        }
        if let Some(vit) = self.vit_shape() {
            if vit.patch == 0 {
                anyhow::bail!("backbone.patch_size must be positive");
            }
            if vit.depth == 0 || vit.heads == 0 || !vit.dim.is_multiple_of(4 * vit.heads) {
                anyhow::bail!(
                    "backbone: a ViT needs depth and heads above 0 and dim a multiple of 4 x heads \
                     (sin-cos positions split it in four); got dim {}, depth {}, heads {}",
                    vit.dim,
                    vit.depth,
                    vit.heads
                );
            }
            if !matches!(self.position.as_str(), "sincos" | "learned") {
                anyhow::bail!(
                    "backbone.position = \"{}\": expected \"sincos\" or \"learned\"",
                    self.position
                );
            }
            if !matches!(self.pool.as_str(), "cls" | "mean") {
                anyhow::bail!(
                    "backbone.pool = \"{}\": expected \"cls\" or \"mean\"",
                    self.pool
                );
            }
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

    /// The ViT this config describes, `None` for the CNNs.
    pub fn vit_shape(&self) -> Option<VitShape> {
        let (dim, depth, heads) = VitShape::preset(&self.arch)?;
        let or = |value: usize, preset: usize| if value == 0 { preset } else { value };
        Some(VitShape {
            dim: or(self.dim, dim),
            depth: or(self.depth, depth),
            heads: or(self.heads, heads),
            patch: self.patch_size,
            learned_positions: self.position == "learned",
            mean_pool: self.pool == "mean",
        })
    }

    pub fn is_vit(&self) -> bool {
        self.vit_shape().is_some()
    }

    /// The backbone for `(channels, height, width)` images.
    pub fn init(&self, image: (usize, usize, usize), device: &Device) -> Backbone {
        let channels = image.0;
        if let Some(shape) = self.vit_shape() {
            return Backbone::Vit(Vit::new(&shape, image, device));
        }
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
    Vit(Vit),
}

impl Backbone {
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Backbone::SmallCnn(m) => m.forward(images),
            Backbone::ResNet(m) => m.forward(images),
            Backbone::Vit(m) => m.forward(images),
        }
    }

    /// Size of the feature vector.
    pub fn out_dim(&self) -> usize {
        match self {
            Backbone::SmallCnn(m) => m.out_dim(),
            Backbone::ResNet(m) => m.out_dim(),
            Backbone::Vit(m) => m.dim(),
        }
    }

    /// How many layers deep the parameter at `path` (an optimizer path such as
    /// `SmallCnn.stage2.conv.weight` or `Vit.blocks.layers.3.mlp...`) sits, from 0 at the input,
    /// and the depth of the last layer: what layer-wise learning-rate decay scales by. Stages of
    /// the small CNN, residual blocks of a ResNet (the stem at 0), transformer blocks of a ViT
    /// (patch projection, class token and positions at 0, the final norm last).
    pub fn layer_of(&self, path: &str) -> (usize, usize) {
        let index_after = |name: &str| {
            let mut parts = path.split('.');
            parts.find(|p| *p == name)?;
            parts.find_map(|p| p.parse::<usize>().ok())
        };
        match self {
            Backbone::SmallCnn(_) => {
                let stage = ["stage1", "stage2", "stage3"]
                    .iter()
                    .position(|s| path.split('.').any(|p| p == *s));
                (stage.map_or(3, |s| s + 1), 3)
            }
            Backbone::ResNet(m) => {
                let blocks = m.block_count();
                (index_after("blocks").map_or(0, |b| b + 1), blocks)
            }
            Backbone::Vit(v) => {
                let depth = v.blocks.layers.len();
                match index_after("layers") {
                    Some(b) => (b + 1, depth + 1),
                    None if path.split('.').any(|p| p == "norm") => (depth + 1, depth + 1),
                    None => (0, depth + 1),
                }
            }
        }
    }

    /// Layer-wise learning-rate decay: `decay^(last - layer)` for the parameter at `path`.
    pub fn layer_decay(&self, path: &str, decay: f64) -> f64 {
        let (layer, last) = self.layer_of(path);
        decay.powi(last.saturating_sub(layer) as i32)
    }

    /// The ViT, for methods that work on its patches (MAE, SimMIM).
    pub fn vit(&self) -> anyhow::Result<&Vit> {
        match self {
            Backbone::Vit(v) => Ok(v),
            _ => anyhow::bail!("this method needs a ViT backbone (backbone.arch = \"vit_tiny\")"),
        }
    }

    /// Refuse inputs the backbone cannot take (a ViT with learned positions and another size).
    pub fn check_input(&self, height: usize, width: usize) -> anyhow::Result<()> {
        match self {
            Backbone::Vit(v) => v.check_input(height, width),
            _ => Ok(()),
        }
    }
}

/// A backbone with the projection head on top of it, as SimCLR, BYOL and MoCo build them.
pub fn backbone_and_projection(
    backbone: &BackboneConfig,
    projection: &MlpConfig,
    image: (usize, usize, usize),
    device: &Device,
) -> (Backbone, Mlp) {
    let backbone = backbone.init(image, device);
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
            ("vit_tiny", "cifar", 1, 28, 192),
        ];
        for (arch, stem, channels, side, dim) in cases {
            let cfg = BackboneConfig {
                arch: arch.into(),
                stem: stem.into(),
                width: 32,
                depth: 1,
                ..BackboneConfig::default()
            };
            cfg.validate().unwrap();
            let model = cfg.init((channels, side, side), &device);
            assert_eq!(model.out_dim(), dim, "{arch}");
            let out = model.forward(Tensor::zeros([2, channels, side, side], &device));
            assert_eq!(out.dims(), [2, dim], "{arch} on {side}x{side}x{channels}");
        }
    }

    #[test]
    fn layer_depths_count_from_the_input() {
        let device = Device::flex();
        let cnn = BackboneConfig::default().init((1, 28, 28), &device);
        assert_eq!(cnn.layer_of("SmallCnn.stage1.conv.weight"), (1, 3));
        assert_eq!(cnn.layer_of("SmallCnn.stage3.norm.gamma"), (3, 3));
        assert!((cnn.layer_decay("SmallCnn.stage1.conv.weight", 0.5) - 0.25).abs() < 1e-12);
        let vit = BackboneConfig {
            arch: "vit_tiny".into(),
            depth: 2,
            ..BackboneConfig::default()
        }
        .init((1, 28, 28), &device);
        assert_eq!(vit.layer_of("Vit.patch_embed.weight"), (0, 3));
        assert_eq!(vit.layer_of("Vit.blocks.layers.1.mlp.fc1.weight"), (2, 3));
        assert_eq!(vit.layer_of("Vit.norm.gamma"), (3, 3));
        let resnet = BackboneConfig {
            arch: "resnet18".into(),
            ..BackboneConfig::default()
        }
        .init((1, 28, 28), &device);
        assert_eq!(resnet.layer_of("ResNet.stem.weight"), (0, 8));
        assert_eq!(resnet.layer_of("ResNet.blocks.7.conv2.weight"), (8, 8));
        // The paths the optimizer really sees reach every layer.
        for (model, expected) in [(cnn, 1..=3), (vit, 0..=3), (resnet, 0..=8)] {
            let mut paths = ParamPaths::default();
            model.visit(&mut paths);
            let mut layers: Vec<usize> = paths.found.iter().map(|p| model.layer_of(p).0).collect();
            layers.sort_unstable();
            layers.dedup();
            assert_eq!(layers, expected.collect::<Vec<_>>(), "{:?}", paths.found);
        }
    }

    /// The module path of every float parameter, as the optimizer builds it.
    #[derive(Default)]
    struct ParamPaths {
        stack: Vec<String>,
        found: Vec<String>,
    }

    impl burn::module::ModuleVisitor for ParamPaths {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, _: &burn::module::Param<Tensor<D>>) {
            self.found.push(self.stack.join("."));
        }
    }
}
