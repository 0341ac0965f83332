//! MLP heads on top of any backbone's features: SimCLR's projection, BYOL's projection and
//! prediction.

use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::core::kernels::BatchNormForward;

/// `[projection]` / `[prediction]` tables in a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlpConfig {
    pub hidden: usize,
    pub output: usize,
    /// Linear layers, at least 1.
    pub layers: usize,
    /// Batch norm after the last linear layer too (SimCLR v2, Barlow Twins).
    pub last_norm: bool,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            hidden: 512,
            output: 128,
            layers: 2,
            last_norm: false,
        }
    }
}

impl MlpConfig {
    pub fn validate(&self, name: &str) -> anyhow::Result<()> {
        if self.layers == 0 || self.hidden == 0 || self.output == 0 {
            anyhow::bail!("{name}: layers, hidden and output must be positive");
        }
        Ok(())
    }

    pub fn init(&self, input: usize, device: &Device) -> Mlp {
        let mut linears = Vec::new();
        let mut norms = Vec::new();
        let mut dim = input;
        for i in 0..self.layers {
            let last = i + 1 == self.layers;
            let out = if last { self.output } else { self.hidden };
            linears.push(
                LinearConfig::new(dim, out)
                    .with_bias(last && !self.last_norm)
                    .init(device),
            );
            if !last || self.last_norm {
                norms.push(BatchNormConfig::new(out).init(device));
            }
            dim = out;
        }
        Mlp {
            linears,
            norms,
            act: Relu::new(),
        }
    }
}

/// Linear → BN → ReLU blocks, then a final linear layer (optionally normalised).
#[derive(Module, Debug)]
pub struct Mlp {
    linears: Vec<Linear>,
    norms: Vec<BatchNorm>,
    act: Relu,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let mut x = x;
        let last = self.linears.len() - 1;
        for (i, linear) in self.linears.iter().enumerate() {
            x = linear.forward(x);
            if let Some(norm) = self.norms.get(i) {
                x = norm.forward_fast(x);
            }
            if i < last {
                x = self.act.forward(x);
            }
        }
        x
    }

    /// The first hidden layer (linear, batch norm, ReLU), for fine-tuning through it as
    /// SimCLRv2 does; `None` for a head of one layer, which has no hidden layer.
    pub fn first_hidden(&self) -> Option<HiddenLayer> {
        if self.linears.len() < 2 {
            return None;
        }
        Some(HiddenLayer {
            linear: self.linears[0].clone(),
            norm: self.norms.first()?.clone(),
            act: Relu::new(),
        })
    }
}

/// One hidden layer of an MLP head: linear → batch norm → ReLU.
#[derive(Module, Debug)]
pub struct HiddenLayer {
    linear: Linear,
    norm: BatchNorm,
    act: Relu,
}

impl HiddenLayer {
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.act
            .forward(self.norm.forward_fast(self.linear.forward(x)))
    }

    pub fn out_dim(&self) -> usize {
        self.linear.weight.shape().dims::<2>()[1]
    }
}

/// Unit prototype vectors scored against unit embeddings (SwAV's prototypes, the last layer of
/// DINO's head): a bias-free linear layer whose weight columns are normalised in the forward
/// pass (weight normalisation with the gain fixed at 1, as DINO's `norm_last_layer`). lightly's
/// SwAV renormalises its prototypes in place before each step instead: the same scores, and a
/// gradient that here has no radial part.
#[derive(Module, Debug)]
pub struct Prototypes {
    /// `[dim, prototypes]`.
    weight: burn::module::Param<Tensor<2>>,
}

impl Prototypes {
    pub fn new(dim: usize, prototypes: usize, device: &Device) -> Self {
        let scale = (1.0 / dim as f64).sqrt();
        let weight = Tensor::<2>::random(
            [dim, prototypes],
            burn::tensor::Distribution::Uniform(-scale, scale),
            device,
        );
        Prototypes {
            weight: burn::module::Param::from_tensor(weight),
        }
    }

    /// Scores `[batch, prototypes]` of the rows of `z` (unit rows), each the cosine with a
    /// prototype. `frozen` stops the gradient at the prototypes (DINO's last layer and SwAV's
    /// prototypes stay fixed during the first epoch, which stabilises the start).
    pub fn scores(&self, z: Tensor<2>, frozen: bool) -> Tensor<2> {
        let w = self.weight.val();
        let w = if frozen { w.detach() } else { w };
        let norm = w.clone().powi_scalar(2).sum_dim(0).sqrt().clamp_min(1e-12);
        z.matmul(w / norm)
    }
}

/// DINO's projection head: a GELU MLP (no batch norm) to a bottleneck, L2 normalisation, then
/// weight-normalised prototypes.
#[derive(Module, Debug)]
pub struct DinoHead {
    linears: Vec<Linear>,
    prototypes: Prototypes,
}

impl DinoHead {
    /// `layers` linear layers (3 in the paper) from `input` through `hidden` to `bottleneck`.
    pub fn new(
        input: usize,
        hidden: usize,
        bottleneck: usize,
        prototypes: usize,
        layers: usize,
        device: &Device,
    ) -> Self {
        let layers = layers.max(1);
        let linears = (0..layers)
            .map(|i| {
                let from = if i == 0 { input } else { hidden };
                let to = if i + 1 == layers { bottleneck } else { hidden };
                LinearConfig::new(from, to).init(device)
            })
            .collect();
        DinoHead {
            linears,
            prototypes: Prototypes::new(bottleneck, prototypes, device),
        }
    }

    /// Logits `[batch, prototypes]`; `freeze_last` stops the gradient at the prototypes.
    pub fn forward(&self, x: Tensor<2>, freeze_last: bool) -> Tensor<2> {
        let last = self.linears.len() - 1;
        let mut x = x;
        for (i, linear) in self.linears.iter().enumerate() {
            x = linear.forward(x);
            if i < last {
                x = crate::core::kernels::gelu(x);
            }
        }
        self.prototypes
            .scores(crate::core::losses::l2_normalize(x), freeze_last)
    }
}
