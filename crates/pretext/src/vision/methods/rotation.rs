//! Rotation prediction (RotNet, Gidaris et al. 2018): every image is shown at 0, 90, 180 and
//! 270 degrees and a linear head on the backbone's features says which. Recognising "upright"
//! needs the object's shape, which is what the features learn.

use anyhow::{Result, bail};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use super::{ImageShape, Method, MethodStep};
use crate::core::losses::cross_entropy;
use crate::vision::backbones::Backbone;
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

/// `images` `[b, c, n, n]` turned counter-clockwise by `quarter` x 90 degrees (as numpy's
/// `rot90(image, quarter)`): after one quarter, pixel (i, j) shows the old (j, n - 1 - i).
pub fn rotate(images: Tensor<4>, quarter: usize) -> Tensor<4> {
    match quarter % 4 {
        0 => images,
        1 => images.swap_dims(2, 3).flip([2]),
        2 => images.flip([2, 3]),
        _ => images.swap_dims(2, 3).flip([3]),
    }
}

#[derive(Module, Debug)]
pub struct Rotation {
    encoder: Backbone,
    head: Linear,
}

impl Method for Rotation {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let encoder = config.backbone.init(image, device);
        Rotation {
            head: LinearConfig::new(encoder.out_dim(), 4).init(device),
            encoder,
        }
    }

    fn view_presets(_config: &PretrainConfig) -> Vec<ViewConfig> {
        vec![ViewConfig::finetune()]
    }

    fn loss(&self, mut views: Vec<Tensor<4>>) -> Result<MethodStep> {
        let images = views.remove(0);
        let [b, _, h, w] = images.dims();
        if h != w {
            bail!("rotation needs square images (or views with crop_size set); these are {h}x{w}");
        }
        let device = images.device();
        let all = Tensor::cat((0..4).map(|q| rotate(images.clone(), q)).collect(), 0);
        let labels: Vec<i64> = (0..4).flat_map(|q| std::iter::repeat_n(q, b)).collect();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [4 * b]), &device);
        Ok(cross_entropy(self.head.forward(self.encoder.forward(all)), labels).into())
    }

    fn backbone(&self) -> &Backbone {
        &self.encoder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_move_pixels_as_numpy_rot90_does() {
        let device = Device::flex();
        // [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
        let image = Tensor::<4>::from_data(
            TensorData::new((0..9).map(|v| v as f32).collect(), [1, 1, 3, 3]),
            &device,
        );
        let at = |q| {
            rotate(image.clone(), q)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(at(0), vec![0., 1., 2., 3., 4., 5., 6., 7., 8.]);
        assert_eq!(at(1), vec![2., 5., 8., 1., 4., 7., 0., 3., 6.]);
        assert_eq!(at(2), vec![8., 7., 6., 5., 4., 3., 2., 1., 0.]);
        assert_eq!(at(3), vec![6., 3., 0., 7., 4., 1., 8., 5., 2.]);
        let twice = rotate(rotate(image.clone(), 1), 1)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(twice, at(2));
    }
}
