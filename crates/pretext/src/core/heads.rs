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
}
