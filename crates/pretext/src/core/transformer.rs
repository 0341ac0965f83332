//! The pre-LayerNorm transformer block every modality shares (the ViT's encoder, MAE's and
//! VideoMAE's decoders, the audio ViT), attending through the fused kernel
//! [`kernels::attention`]. The text encoder keeps its own post-norm layer (BERT's layout and
//! Hugging Face's names) and attends through the same kernel.
//!
//! The pre-norm block mirrors burn's `TransformerEncoderLayer` with `norm_first` parameter for
//! parameter (`mha.{query,key,value,output}`, `pwff.{linear_inner,linear_outer}`, `norm_1`,
//! `norm_2`), so checkpoints written when the ViT used burn's module read unchanged; it exists
//! because burn's module runs its layer norms, softmax and GELU as chains of small tensor ops,
//! which the fused kernels of [`crate::core::kernels`] replace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;

use crate::core::kernels::{self, FastLayerNorm, LinearForward, gelu};

/// The Transformer's fixed 1-D sinusoid positions, `n` rows of `dim` (VideoMAE's
/// `get_sinusoid_encoding_table`): channel pair `2i, 2i + 1` holds the sine and cosine of
/// `position / 10000^(2i / dim)`.
pub fn sinusoid_table(n: usize, dim: usize) -> Vec<f32> {
    let wavelengths: Vec<f64> = (0..dim)
        .map(|j| 10_000f64.powf((2 * (j / 2)) as f64 / dim as f64))
        .collect();
    let mut table = Vec::with_capacity(n * dim);
    for pos in 0..n {
        for (j, wavelength) in wavelengths.iter().enumerate() {
            let angle = pos as f64 / wavelength;
            table.push(if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
        }
    }
    table
}

/// [`sinusoid_table`] as a `[1, n, dim]` tensor. Tables are kept once built: VideoMAE asks for
/// two every step, and 60,000 sines and cosines in f64 were about 1% of the step.
pub fn sinusoid_positions(n: usize, dim: usize, device: &Device) -> Tensor<3> {
    type Tables = HashMap<(usize, usize), Arc<[f32]>>;
    static TABLES: Mutex<Option<Tables>> = Mutex::new(None);
    let table = {
        let mut tables = TABLES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tables
            .get_or_insert_with(HashMap::new)
            .entry((n, dim))
            .or_insert_with(|| sinusoid_table(n, dim).into())
            .clone()
    };
    Tensor::from_data(TensorData::new(table.to_vec(), [1, n, dim]), device)
}

/// Self-attention with its four projections (burn's `MultiHeadAttention` names).
#[derive(Module, Debug)]
pub struct SelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub output: Linear,
    #[module(skip)]
    heads: usize,
}

impl SelfAttention {
    fn forward(&self, x: Tensor<3>, no_dropout: &Dropout) -> Tensor<3> {
        let context = kernels::attention(
            self.query.forward_fast(x.clone()),
            self.key.forward_fast(x.clone()),
            self.value.forward_fast(x),
            self.heads,
            None,
            no_dropout,
        );
        self.output.forward_fast(context)
    }
}

/// The GELU MLP four times as wide as the block (burn's `PositionWiseFeedForward` names).
#[derive(Module, Debug)]
pub struct FeedForward {
    pub linear_inner: Linear,
    pub linear_outer: Linear,
}

/// One pre-norm block: `x + attn(norm_2(x))`, then `x + mlp(norm_1(x))` (burn names the norm
/// before attention `norm_2`).
#[derive(Module, Debug)]
pub struct PreNormBlock {
    pub mha: SelfAttention,
    pub pwff: FeedForward,
    pub norm_1: FastLayerNorm,
    pub norm_2: FastLayerNorm,
}

/// A stack of pre-norm blocks without dropout (MAE and DeiT pretrain without it).
#[derive(Module, Debug)]
pub struct PreNormBlocks {
    pub layers: Vec<PreNormBlock>,
    /// Probability 0: attention takes a dropout module, these blocks use none.
    no_dropout: Dropout,
}

impl PreNormBlocks {
    /// `depth` blocks `dim` wide with `heads` heads; Xavier-uniform linear layers (weights and
    /// biases, as burn's `TransformerEncoderConfig` with that initializer), γ = 1, β = 0.
    pub fn new(dim: usize, depth: usize, heads: usize, epsilon: f64, device: &Device) -> Self {
        let linear = |i: usize, o: usize| {
            LinearConfig::new(i, o)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device)
        };
        let layers = (0..depth)
            .map(|_| PreNormBlock {
                mha: SelfAttention {
                    query: linear(dim, dim),
                    key: linear(dim, dim),
                    value: linear(dim, dim),
                    output: linear(dim, dim),
                    heads,
                },
                pwff: FeedForward {
                    linear_inner: linear(dim, 4 * dim),
                    linear_outer: linear(4 * dim, dim),
                },
                norm_1: FastLayerNorm::new(dim, epsilon, device),
                norm_2: FastLayerNorm::new(dim, epsilon, device),
            })
            .collect();
        PreNormBlocks {
            layers,
            no_dropout: DropoutConfig::new(0.0).init(),
        }
    }

    /// Tokens `[batch, len, dim]` through every block.
    pub fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        for block in &self.layers {
            let attended = block
                .mha
                .forward(block.norm_2.forward(x.clone()), &self.no_dropout);
            x = x + attended;
            let mlp = &block.pwff;
            let h = gelu(
                mlp.linear_inner
                    .forward_fast(block.norm_1.forward(x.clone())),
            );
            x = x + mlp.linear_outer.forward_fast(h);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderInput};
    use burn::tensor::Distribution;

    fn close<const D: usize>(a: Tensor<D>, b: Tensor<D>, what: &str) {
        let (a, b) = (
            a.into_data().try_to_vec::<f32>().unwrap(),
            b.into_data().try_to_vec::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// The blocks compute what burn's pre-norm `TransformerEncoder` computes with the same
    /// parameters, forward and backward: the kernels replace burn's ops, not the maths.
    #[test]
    fn blocks_match_burns_pre_norm_encoder() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let (dim, depth, heads, eps) = (12, 2, 3, 1e-6);
        let burns = TransformerEncoderConfig::new(dim, 4 * dim, heads, depth)
            .with_norm_first(true)
            .with_dropout(0.0)
            .with_layer_norm_eps(eps)
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: 0.3,
            })
            .init(&device);
        // burn's parameters copied into ours by name: the two share every name and shape.
        let theirs = crate::core::checkpoint::module_tensors(&burns);
        let ours = PreNormBlocks::new(dim, depth, heads, eps, &device);
        let ours = crate::core::checkpoint::load_module(ours, &theirs).unwrap();
        assert_eq!(
            crate::core::checkpoint::module_tensors(&ours).len(),
            theirs.len()
        );

        let x = Tensor::<3>::random([2, 5, dim], Distribution::Normal(0.0, 1.0), &device);
        // A weighted sum makes the upstream gradient non-uniform.
        let weights = Tensor::<3>::random([2, 5, dim], Distribution::Normal(0.0, 1.0), &device);
        let fast_x = x.clone().detach().require_grad();
        let fast = ours.forward(fast_x.clone());
        let fast_grads = (fast.clone() * weights.clone()).sum().backward();
        let ref_x = x.detach().require_grad();
        let reference = burns.forward(TransformerEncoderInput::new(ref_x.clone()));
        let ref_grads = (reference.clone() * weights).sum().backward();

        close(fast, reference, "output");
        close(
            fast_x.grad(&fast_grads).unwrap(),
            ref_x.grad(&ref_grads).unwrap(),
            "input gradient",
        );
        for (i, (a, b)) in ours.layers.iter().zip(&burns.layers).enumerate() {
            close(
                a.norm_2.gamma.grad(&fast_grads).unwrap(),
                b.norm_2.gamma.grad(&ref_grads).unwrap(),
                &format!("block {i} attention-norm gamma gradient"),
            );
            close(
                a.mha.query.weight.grad(&fast_grads).unwrap(),
                b.mha.query.weight.grad(&ref_grads).unwrap(),
                &format!("block {i} query weight gradient"),
            );
            close(
                a.pwff.linear_inner.weight.grad(&fast_grads).unwrap(),
                b.pwff.linear_inner.weight.grad(&ref_grads).unwrap(),
                &format!("block {i} MLP weight gradient"),
            );
        }
    }
}
