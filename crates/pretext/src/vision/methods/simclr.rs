//! SimCLR (Chen et al. 2020): two views, a shared encoder and projection, NT-Xent.

use burn::prelude::*;

use anyhow::Result;

use super::{ImageShape, Method};
use crate::core::heads::Mlp;
use crate::core::losses::nt_xent;
use crate::vision::backbones::{Backbone, backbone_and_projection};
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

#[derive(Module, Debug)]
pub struct SimClr {
    backbone: Backbone,
    projection: Mlp,
    #[module(skip)]
    temperature: f64,
}

impl Method for SimClr {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let (backbone, projection) =
            backbone_and_projection(&config.backbone, &config.projection, image, device);
        SimClr {
            backbone,
            projection,
            temperature: config.simclr.temperature,
        }
    }

    fn view_presets() -> Vec<ViewConfig> {
        vec![ViewConfig::simclr(), ViewConfig::simclr()]
    }

    fn loss(&self, views: Vec<Tensor<4>>) -> Result<Tensor<1>> {
        let [n, _, _, _] = views[0].dims();
        // One forward pass over both views: batch-norm statistics cover all 2N images.
        let z = self
            .projection
            .forward(self.backbone.forward(Tensor::cat(views, 0)));
        let z1 = z.clone().narrow(0, 0, n);
        let z2 = z.narrow(0, n, n);
        Ok(nt_xent(z1, z2, self.temperature))
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }
}
