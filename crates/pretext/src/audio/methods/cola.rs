//! COLA (Saeed et al. 2021): two random segments of one clip are a positive pair, the other
//! clips of the batch are negatives. Each segment is encoded, projected by a dense layer, layer
//! norm and tanh, and pairs are scored by a learned bilinear similarity `a^T W b`; the loss is
//! the cross-entropy of picking each anchor's own positive among the batch.

use anyhow::Result;
use burn::module::Param;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::AudioMethod;
use crate::audio::backbones::AudioEncoder;
use crate::audio::config::AudioConfig;
use crate::audio::views::AudioView;
use crate::core::losses::cross_entropy;
use crate::core::train::Step;
use crate::vision::methods::global_halves;

/// `[cola]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColaConfig {
    /// Width of the projection the similarity is taken in (512 in the paper).
    pub dim: usize,
}

impl Default for ColaConfig {
    fn default() -> Self {
        ColaConfig { dim: 512 }
    }
}

#[derive(Module, Debug)]
pub struct Cola {
    encoder: AudioEncoder,
    projection: Linear,
    norm: LayerNorm,
    /// The bilinear similarity's `W` `[dim, dim]`.
    similarity: Param<Tensor<2>>,
}

impl Cola {
    fn embed(&self, x: Tensor<4>) -> Tensor<2> {
        let h = self.projection.forward(self.encoder.forward(x));
        self.norm.forward(h).tanh()
    }
}

/// COLA's loss: row `i` of `a` should pick row `i` of `b` under the similarity `a W b^T`.
pub fn bilinear_contrast(a: Tensor<2>, b: Tensor<2>, w: Tensor<2>) -> Tensor<1> {
    let [n, _] = a.dims();
    let logits = a.matmul(w).matmul(b.transpose());
    let targets = Tensor::<1, Int>::arange(0..n as i64, &logits.device());
    cross_entropy(logits, targets)
}

impl AudioMethod for Cola {
    fn init(config: &AudioConfig, bands: usize, frames: usize, device: &Device) -> Self {
        let encoder = config.backbone.init(bands, frames, device);
        let dim = config.cola.dim;
        Cola {
            projection: LinearConfig::new(encoder.out_dim(), dim).init(device),
            norm: LayerNormConfig::new(dim).init(device),
            similarity: Initializer::XavierUniform { gain: 1.0 }.init_with(
                [dim, dim],
                Some(dim),
                Some(dim),
                device,
            ),
            encoder,
        }
    }

    fn view_presets() -> Vec<AudioView> {
        vec![AudioView::crop_only(), AudioView::crop_only()]
    }

    fn loss(&self, views: Vec<Tensor<4>>) -> Result<Step> {
        let z = self.embed(Tensor::cat(views, 0));
        let (anchors, positives) = global_halves(z.clone());
        let loss = bilinear_contrast(anchors, positives, self.similarity.val());
        Ok(Step::from(loss).watching(z))
    }

    fn encoder(&self) -> AudioEncoder {
        self.encoder.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_is_the_cross_entropy_of_bilinear_scores() {
        let device = Device::flex();
        let t = |v: Vec<f32>, shape: [usize; 2]| {
            Tensor::<2>::from_data(TensorData::new(v, shape), &device)
        };
        let a = t(vec![1.0, 0.0, 0.0, 1.0], [2, 2]);
        let b = t(vec![0.5, 0.5, -1.0, 2.0], [2, 2]);
        let w = t(vec![2.0, 0.0, 1.0, 1.0], [2, 2]);
        // a W = [[2, 0], [1, 1]]; scores (a W) b^T = [[1, -2], [1, 1]].
        // Row 0 picks column 0: -ln(e^1 / (e^1 + e^-2)); row 1 picks column 1: ln 2.
        let expected = ((1.0f64 + (-3.0f64).exp()).ln() + 2f64.ln()) / 2.0;
        let got = bilinear_contrast(a, b, w).into_scalar::<f64>();
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    }
}
