//! A Vision Transformer (Dosovitskiy et al. 2021) sized for small images: non-overlapping
//! patches embedded linearly, a class token, fixed 2-D sin-cos or learned positions, pre-LayerNorm
//! blocks ([`PreNormBlocks`], burn's pre-norm layout on pretext's kernels), a final LayerNorm.
//!
//! The steps are public so masked-image methods can enter between them: MAE encodes only the
//! visible patches' tokens, SimMIM swaps masked patches' embeddings for a mask token.

use anyhow::{Context, Result, bail};
use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

use crate::core::kernels::{FastLayerNorm, LinearForward};
use crate::core::transformer::PreNormBlocks;

use crate::vision::masking::{pad_to_patches, patch_grid, patchify};

/// timm's LayerNorm epsilon for ViTs.
const LAYER_NORM_EPS: f64 = 1e-6;

/// The shape of a ViT: `vit_tiny` is 192 wide, 12 deep, 3 heads; `vit_small` 384, 12, 6 (DeiT's
/// sizes); any field can be overridden from the `[backbone]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct VitShape {
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub patch: usize,
    /// Learned positions (fixed to the training grid) instead of fixed 2-D sin-cos.
    pub learned_positions: bool,
    /// Features: the mean of the patch tokens instead of the class token.
    pub mean_pool: bool,
}

impl VitShape {
    /// A preset's (dim, depth, heads).
    pub fn preset(arch: &str) -> Option<(usize, usize, usize)> {
        match arch {
            "vit_tiny" => Some((192, 12, 3)),
            "vit_small" => Some((384, 12, 6)),
            _ => None,
        }
    }
}

/// Pre-LayerNorm transformer blocks with a GELU MLP four times as wide and no dropout (MAE and
/// DeiT pretrain without it): the ViT's encoder and MAE's decoder.
pub fn pre_norm_blocks(dim: usize, depth: usize, heads: usize, device: &Device) -> PreNormBlocks {
    PreNormBlocks::new(dim, depth, heads, LAYER_NORM_EPS, device)
}

/// The final LayerNorm of a stack of pre-norm blocks.
pub fn final_norm(dim: usize, device: &Device) -> FastLayerNorm {
    FastLayerNorm::new(dim, LAYER_NORM_EPS, device)
}

/// Fixed 2-D sin-cos positions `[1, rows * cols, dim]` (MAE's `get_2d_sincos_pos_embed`): half
/// of the channels encode the row, half the column, each as sines and cosines of geometrically
/// spaced frequencies. `dim` must be a multiple of 4.
pub fn sincos_positions(grid: (usize, usize), dim: usize, device: &Device) -> Tensor<3> {
    let (rows, cols) = grid;
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|i| 1.0 / 10_000f64.powf(i as f64 / quarter as f64))
        .collect();
    let mut table = Vec::with_capacity(rows * cols * dim);
    for r in 0..rows {
        for c in 0..cols {
            // MAE puts the column (its grid's first axis) first, then the row.
            for pos in [c as f64, r as f64] {
                table.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                table.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
            table.extend(std::iter::repeat_n(0.0, dim - 4 * quarter));
        }
    }
    Tensor::from_data(TensorData::new(table, [1, rows * cols, dim]), device)
}

/// The ViT backbone.
#[derive(Module, Debug)]
pub struct Vit {
    /// A `patch x patch` convolution written as a linear map of flattened patches.
    pub patch_embed: Linear,
    pub cls_token: Param<Tensor<3>>,
    /// `[1, 1 + patches, dim]` when positions are learned (class token first).
    pub positions: Option<Param<Tensor<3>>>,
    pub blocks: PreNormBlocks,
    pub norm: FastLayerNorm,
    #[module(skip)]
    patch: usize,
    #[module(skip)]
    mean_pool: bool,
    /// The patch grid of the training images (learned positions fit only it).
    #[module(skip)]
    grid: (usize, usize),
}

impl Vit {
    /// A ViT for `(channels, height, width)` images.
    pub fn new(shape: &VitShape, image: (usize, usize, usize), device: &Device) -> Vit {
        let (channels, height, width) = image;
        let grid = patch_grid(height, width, shape.patch);
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        Vit {
            patch_embed: LinearConfig::new(channels * shape.patch * shape.patch, shape.dim)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device),
            cls_token: normal.init([1, 1, shape.dim], device),
            positions: shape
                .learned_positions
                .then(|| normal.init([1, 1 + grid.0 * grid.1, shape.dim], device)),
            blocks: pre_norm_blocks(shape.dim, shape.depth, shape.heads, device),
            norm: final_norm(shape.dim, device),
            patch: shape.patch,
            mean_pool: shape.mean_pool,
            grid,
        }
    }

    pub fn dim(&self) -> usize {
        self.cls_token.dims()[2]
    }

    pub fn patch_size(&self) -> usize {
        self.patch
    }

    /// The patch grid the ViT makes of `height x width` images.
    pub fn grid_of(&self, height: usize, width: usize) -> (usize, usize) {
        patch_grid(height, width, self.patch)
    }

    /// Refuse images whose grid learned positions do not cover.
    pub fn check_input(&self, height: usize, width: usize) -> Result<()> {
        let grid = self.grid_of(height, width);
        if self.positions.is_some() && grid != self.grid {
            bail!(
                "this ViT learned positions for a {}x{} grid of {p}x{p} patches; {height}x{width} \
                 images make a {}x{} grid (use images of the training size, or \
                 backbone.position = \"sincos\")",
                self.grid.0,
                self.grid.1,
                grid.0,
                grid.1,
                p = self.patch
            );
        }
        Ok(())
    }

    /// Images `[batch, channels, H, W]` → pixel patches `[batch, patches, channels * patch²]`,
    /// after padding to whole patches.
    pub fn patches(&self, images: Tensor<4>) -> Tensor<3> {
        let padded = pad_to_patches(images, self.patch);
        // Padding made the sides multiples of the patch, so this cannot fail.
        patchify(padded, self.patch).expect("padded to whole patches")
    }

    /// Patch embeddings `[batch, patches, dim]`, without positions.
    pub fn embed(&self, patches: Tensor<3>) -> Tensor<3> {
        self.patch_embed.forward_fast(patches)
    }

    /// Positions of the patch tokens `[1, patches, dim]` for a `grid`.
    pub fn patch_positions(&self, grid: (usize, usize), device: &Device) -> Tensor<3> {
        match &self.positions {
            Some(learned) => {
                assert_eq!(
                    grid, self.grid,
                    "learned positions cover only the training grid"
                );
                let table = learned.val();
                let [_, n, dim] = table.dims();
                table.narrow(1, 1, n - 1).reshape([1, n - 1, dim])
            }
            None => sincos_positions(grid, self.dim(), device),
        }
    }

    /// The class token (with its position) prepended to `tokens` `[batch, n, dim]` (positions
    /// already added), through the blocks and the final norm: `[batch, 1 + n, dim]`.
    pub fn encode(&self, tokens: Tensor<3>) -> Tensor<3> {
        let [batch, _, dim] = tokens.dims();
        let mut cls = self.cls_token.val();
        if let Some(learned) = &self.positions {
            cls = cls + learned.val().narrow(1, 0, 1);
        }
        let x = Tensor::cat(vec![cls.expand([batch, 1, dim]), tokens], 1);
        self.norm.forward(self.blocks.forward(x))
    }

    /// The feature vector of encoded tokens: the class token, or the mean of the patch tokens.
    pub fn pool(&self, encoded: Tensor<3>) -> Tensor<2> {
        let [batch, n, dim] = encoded.dims();
        if self.mean_pool {
            encoded
                .narrow(1, 1, n - 1)
                .mean_dim(1)
                .reshape([batch, dim])
        } else {
            encoded.narrow(1, 0, 1).reshape([batch, dim])
        }
    }

    /// This ViT with its patch projection out of the gradient (it keeps its current values).
    pub fn with_frozen_patch_embed(self) -> Vit {
        Vit {
            patch_embed: self.patch_embed.no_grad(),
            ..self
        }
    }

    /// Images → encoded tokens `[batch, 1 + patches, dim]` (the class token first, patches in
    /// row-major order) and their patch grid, every patch visible.
    pub fn encode_images(&self, images: Tensor<4>) -> (Tensor<3>, (usize, usize)) {
        let [_, _, h, w] = images.dims();
        let device = images.device();
        let grid = self.grid_of(h, w);
        let tokens = self.embed(self.patches(images)) + self.patch_positions(grid, &device);
        (self.encode(tokens), grid)
    }

    /// Images → features `[batch, dim]`, every patch visible.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.pool(self.encode_images(images).0)
    }

    /// The patch grid of the training images (rows, columns).
    pub fn training_grid(&self) -> (usize, usize) {
        self.grid
    }
}

/// The ViT's tensors under the names and layouts of timm's `VisionTransformer` (`cls_token`,
/// `pos_embed`, `patch_embed.proj`, `blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
/// mlp.fc2}`, `norm`): linear weights transposed to PyTorch's `[out, in]`, the query, key and
/// value projections stacked into one `qkv`, the patch embedding as a `patch x patch`
/// convolution, and sin-cos positions written out (the class token's position 0, as MAE's).
/// burn's pre-norm block normalises with `norm_2` before attention and `norm_1` before the MLP.
pub fn timm_tensors(vit: &Vit) -> Result<Vec<crate::core::checkpoint::NamedTensor>> {
    use crate::core::checkpoint::{NamedTensor, module_tensors};
    let ours: std::collections::HashMap<String, NamedTensor> = module_tensors(vit)
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let get = |name: &str| {
        ours.get(name)
            .cloned()
            .with_context(|| format!("the ViT has no tensor '{name}'"))
    };
    let renamed = |t: NamedTensor, name: &str| NamedTensor {
        name: name.to_string(),
        ..t
    };
    // A burn `[in, out]` weight as PyTorch's `[out, in]`.
    let transposed = |t: NamedTensor, name: &str| {
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let mut values = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                values[c * rows + r] = t.values[r * cols + c];
            }
        }
        NamedTensor {
            name: name.to_string(),
            shape: vec![cols, rows],
            values,
        }
    };
    let dim = vit.dim();
    let mut out = vec![renamed(get("cls_token")?, "cls_token")];
    let positions = match &vit.positions {
        Some(_) => get("positions")?.values,
        None => {
            let table = sincos_positions(vit.grid, dim, &Device::flex());
            let mut values = vec![0f32; dim];
            values.extend(
                table
                    .into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("sin-cos positions: {e:?}"))?,
            );
            values
        }
    };
    let tokens = positions.len() / dim;
    out.push(NamedTensor {
        name: "pos_embed".into(),
        shape: vec![1, tokens, dim],
        values: positions,
    });
    let embed = transposed(get("patch_embed.weight")?, "patch_embed.proj.weight");
    let channels = embed.shape[1] / (vit.patch * vit.patch);
    out.push(NamedTensor {
        shape: vec![dim, channels, vit.patch, vit.patch],
        ..embed
    });
    out.push(renamed(get("patch_embed.bias")?, "patch_embed.proj.bias"));
    for i in 0..vit.blocks.layers.len() {
        let ours = |part: &str| format!("blocks.layers.{i}.{part}");
        let theirs = |part: &str| format!("blocks.{i}.{part}");
        for (norm, timm) in [("norm_2", "norm1"), ("norm_1", "norm2")] {
            out.push(renamed(
                get(&ours(&format!("{norm}.gamma")))?,
                &theirs(&format!("{timm}.weight")),
            ));
            out.push(renamed(
                get(&ours(&format!("{norm}.beta")))?,
                &theirs(&format!("{timm}.bias")),
            ));
        }
        let (mut qkv_weight, mut qkv_bias) = (Vec::new(), Vec::new());
        for part in ["query", "key", "value"] {
            qkv_weight.extend(transposed(get(&ours(&format!("mha.{part}.weight")))?, "").values);
            qkv_bias.extend(get(&ours(&format!("mha.{part}.bias")))?.values);
        }
        out.push(NamedTensor {
            name: theirs("attn.qkv.weight"),
            shape: vec![3 * dim, dim],
            values: qkv_weight,
        });
        out.push(NamedTensor {
            name: theirs("attn.qkv.bias"),
            shape: vec![3 * dim],
            values: qkv_bias,
        });
        for (linear, timm) in [
            ("mha.output", "attn.proj"),
            ("pwff.linear_inner", "mlp.fc1"),
            ("pwff.linear_outer", "mlp.fc2"),
        ] {
            out.push(transposed(
                get(&ours(&format!("{linear}.weight")))?,
                &theirs(&format!("{timm}.weight")),
            ));
            out.push(renamed(
                get(&ours(&format!("{linear}.bias")))?,
                &theirs(&format!("{timm}.bias")),
            ));
        }
    }
    out.push(renamed(get("norm.gamma")?, "norm.weight"));
    out.push(renamed(get("norm.beta")?, "norm.bias"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(learned: bool, mean_pool: bool) -> VitShape {
        VitShape {
            dim: 16,
            depth: 2,
            heads: 2,
            patch: 4,
            learned_positions: learned,
            mean_pool,
        }
    }

    #[test]
    fn features_come_from_any_padded_size_and_positions_differ() {
        let device = Device::flex();
        let vit = Vit::new(&shape(false, false), (1, 28, 28), &device);
        assert_eq!(
            vit.forward(Tensor::zeros([2, 1, 28, 28], &device)).dims(),
            [2, 16]
        );
        // 9x10 pads to 12x12: 9 patches.
        assert_eq!(
            vit.patches(Tensor::zeros([1, 1, 9, 10], &device)).dims(),
            [1, 9, 16]
        );
        assert_eq!(
            vit.forward(Tensor::zeros([3, 1, 9, 10], &device)).dims(),
            [3, 16]
        );
        let mean = Vit::new(&shape(false, true), (3, 8, 8), &device);
        assert_eq!(
            mean.forward(Tensor::ones([2, 3, 8, 8], &device)).dims(),
            [2, 16]
        );

        let pos = sincos_positions((2, 3), 16, &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let rows: Vec<&[f32]> = pos.chunks(16).collect();
        assert_eq!(rows.len(), 6);
        for i in 0..6 {
            for j in 0..i {
                assert_ne!(rows[i], rows[j], "patches {i} and {j} share a position");
            }
        }
        // Patch (0, 0): sin 0 = 0 and cos 0 = 1 for every frequency.
        assert_eq!(&rows[0][..4], &[0.0; 4]);
        assert_eq!(&rows[0][4..8], &[1.0; 4]);
    }

    #[test]
    fn learned_positions_refuse_another_grid() {
        let device = Device::flex();
        let vit = Vit::new(&shape(true, false), (1, 16, 16), &device);
        assert!(vit.check_input(16, 16).is_ok());
        assert!(
            vit.check_input(13, 16).is_ok(),
            "13 pads to the same 4x4 grid"
        );
        let err = vit.check_input(28, 28).unwrap_err().to_string();
        assert!(err.contains("4x4 grid") && err.contains("7x7"), "{err}");
        assert_eq!(
            vit.forward(Tensor::zeros([2, 1, 16, 16], &device)).dims(),
            [2, 16]
        );
    }
}
