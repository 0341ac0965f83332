//! SSL methods. Each is a small module composing shared parts (backbone, heads, losses,
//! momentum updates, masks, corruptions) behind the [`Method`] trait, which is all the trainer
//! knows about.
//!
//! Three families: joint embeddings of two views (SimCLR with negatives; BYOL, SimSiam, Barlow
//! Twins and VICReg without), masked image modelling (MAE,
//! SimMIM: one view, masked inside `loss`), and pretext tasks that reconstruct or classify one
//! view (autoencoders, rotation, jigsaw). Room for the methods to come: MoCo keeps its queue as a
//! buffer refreshed in [`Method::after_step`]; DINO asks for more (multi-crop) views.

pub mod autoencoder;
pub mod barlow_twins;
pub mod byol;
pub mod jigsaw;
pub mod mae;
pub mod rotation;
pub mod simclr;
pub mod simmim;
pub mod simsiam;
pub mod vicreg;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::prelude::*;

use crate::core::heads::Mlp;
use crate::vision::backbones::Backbone;
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

pub use autoencoder::Autoencoder;
pub use barlow_twins::BarlowTwins;
pub use byol::Byol;
pub use jigsaw::Jigsaw;
pub use mae::Mae;
pub use rotation::Rotation;
pub use simclr::SimClr;
pub use simmim::SimMim;
pub use simsiam::SimSiam;
pub use vicreg::VicReg;

/// (channels, height, width) of the training images.
pub type ImageShape = (usize, usize, usize);

/// What a reconstructing method makes of a batch, in normalised pixels
/// `[batch, channels, height, width]`.
pub struct Reconstruction {
    /// What the model was shown: the masked or corrupted images (masked patches at 0, the mean).
    pub input: Tensor<4>,
    /// What it made of them.
    pub output: Tensor<4>,
}

impl Reconstruction {
    /// The picture of a masked-patch method: masked patches blanked in the input; visible
    /// patches as they were and masked ones predicted in the output (as the MAE paper shows
    /// them). `patches` and `pred` are `[batch, patches, values]`, `mask` 1 where masked;
    /// `image` is the (channels, height, width) to crop the patch grid back to.
    pub fn of_patches(
        patches: Tensor<3>,
        pred: Tensor<3>,
        mask: Tensor<2>,
        patch: usize,
        image: ImageShape,
    ) -> Result<Reconstruction> {
        let (channels, height, width) = image;
        let grid = crate::vision::masking::patch_grid(height, width, patch);
        let hidden = mask.unsqueeze_dim::<3>(2);
        let shown = patches * hidden.clone().neg().add_scalar(1.0);
        let output = shown.clone() + pred * hidden;
        let picture = |p: Tensor<3>| -> Result<Tensor<4>> {
            let full = crate::vision::masking::unpatchify(p, patch, channels, grid)?;
            let [b, c, _, _] = full.dims();
            Ok(full.slice([0..b, 0..c, 0..height, 0..width]))
        };
        Ok(Reconstruction {
            input: picture(shown)?,
            output: picture(output)?,
        })
    }
}

pub trait Method: Module + Sized {
    /// Build the method's modules for `image`-shaped inputs.
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self;

    /// The augmentation recipe of each view, in the order `loss` receives them.
    fn view_presets() -> Vec<ViewConfig>;

    /// The loss of one batch; `views[v]` is `[batch, channels, height, width]`.
    fn loss(&self, views: Vec<Tensor<4>>) -> Result<Tensor<1>>;

    /// Masked or corrupted inputs and their reconstructions, for methods that reconstruct
    /// (`None` for the others). Draws masks and noise from the device's random stream.
    fn reconstruct(&self, _images: Tensor<4>) -> Option<Result<Reconstruction>> {
        None
    }

    /// Work after each optimizer step (EMA targets, queues); `progress` is the fraction of
    /// training done.
    fn after_step(self, _progress: f64) -> Self {
        self
    }

    /// The encoder whose features are evaluated and exported.
    fn backbone(&self) -> &Backbone;
}

/// Both views through `backbone` and `projection` in one pass (so batch-norm statistics cover
/// all 2N images), as the first and second half of the result `[2N, dim]`.
pub fn project_views(backbone: &Backbone, projection: &Mlp, views: Vec<Tensor<4>>) -> Tensor<2> {
    projection.forward(backbone.forward(Tensor::cat(views, 0)))
}

/// The first and second halves of `[2N, dim]` rows: view 1's and view 2's.
pub fn halves(t: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let [rows, _] = t.dims();
    let n = rows / 2;
    (t.clone().narrow(0, 0, n), t.narrow(0, n, n))
}

/// The views a config asks for: its own `views` list, or the method's presets.
pub fn view_configs<M: Method>(config: &PretrainConfig) -> Result<Vec<ViewConfig>> {
    let presets = M::view_presets();
    if config.views.is_empty() {
        return Ok(presets);
    }
    if config.views.len() != presets.len() {
        bail!(
            "views: method '{}' takes {} views, the config lists {}",
            config.method,
            presets.len(),
            config.views.len()
        );
    }
    Ok(config.views.clone())
}

/// Every method name a config may give.
pub const METHODS: [&str; 11] = [
    "simclr",
    "byol",
    "simsiam",
    "barlowtwins",
    "vicreg",
    "mae",
    "simmim",
    "autoencoder",
    "denoising_autoencoder",
    "rotation",
    "jigsaw",
];

/// Run `$body` with `$M` bound to the method type that `$name` names.
#[macro_export]
macro_rules! with_method {
    ($name:expr, $M:ident => $body:expr) => {
        match $name {
            "byol" => {
                type $M = $crate::vision::methods::Byol;
                $body
            }
            "simsiam" => {
                type $M = $crate::vision::methods::SimSiam;
                $body
            }
            "barlowtwins" => {
                type $M = $crate::vision::methods::BarlowTwins;
                $body
            }
            "vicreg" => {
                type $M = $crate::vision::methods::VicReg;
                $body
            }
            "mae" => {
                type $M = $crate::vision::methods::Mae;
                $body
            }
            "simmim" => {
                type $M = $crate::vision::methods::SimMim;
                $body
            }
            "autoencoder" | "denoising_autoencoder" => {
                type $M = $crate::vision::methods::Autoencoder;
                $body
            }
            "rotation" => {
                type $M = $crate::vision::methods::Rotation;
                $body
            }
            "jigsaw" => {
                type $M = $crate::vision::methods::Jigsaw;
                $body
            }
            _ => {
                type $M = $crate::vision::methods::SimClr;
                $body
            }
        }
    };
}
