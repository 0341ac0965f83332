//! SSL methods. Each is a small module composing shared parts (backbone, heads, losses,
//! momentum updates, masks, corruptions) behind the [`Method`] trait, which is all the trainer
//! knows about.
//!
//! Three families: joint embeddings of two views (SimCLR, MoCo v2 and v3, NNCLR with negatives;
//! BYOL, SimSiam, Barlow Twins and VICReg without), masked image modelling (MAE, SimMIM: one
//! view, masked inside `loss`), and pretext tasks that reconstruct or classify one view
//! (autoencoders, rotation, jigsaw). Methods with a queue (MoCo v2, NNCLR) carry their detached
//! embeddings out of `loss` and push them in [`Method::after_step`]. DINO and SwAV take
//! multi-crop views: two global views and several small local ones ([`per_view`]).

pub mod autoencoder;
pub mod barlow_twins;
pub mod byol;
pub mod dino;
pub mod jigsaw;
pub mod mae;
pub mod mocov2;
pub mod mocov3;
pub mod nnclr;
pub mod rotation;
pub mod simclr;
pub mod simmim;
pub mod simsiam;
pub mod swav;
pub mod vicreg;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::prelude::*;

use crate::core::distributed::gather_rows;
use crate::core::heads::Mlp;
pub use crate::core::train::Step;
use crate::vision::backbones::Backbone;
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

pub use autoencoder::Autoencoder;
pub use barlow_twins::BarlowTwins;
pub use byol::Byol;
pub use dino::Dino;
pub use jigsaw::Jigsaw;
pub use mae::Mae;
pub use mocov2::MocoV2;
pub use mocov3::MocoV3;
pub use nnclr::Nnclr;
pub use rotation::Rotation;
pub use simclr::SimClr;
pub use simmim::SimMim;
pub use simsiam::SimSiam;
pub use swav::Swav;
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

/// What a method's loss gives the trainer: the loss, the embeddings the collapse monitor
/// watches, and keys kept for after the step (MoCo's queue, NNCLR's support set).
pub type MethodStep = Step<Option<Tensor<2>>>;

pub trait Method: Module + Sized {
    /// Build the method's modules for `image`-shaped inputs.
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self;

    /// What the method needs of its `height x width` views beyond the backbone's own limits
    /// (a masked model needs patches to hide and to show), checked before [`Method::init`] so
    /// that a config that cannot work gets an error, not a panic or a loss of zero.
    fn check_shape(_config: &PretrainConfig, _height: usize, _width: usize) -> Result<()> {
        Ok(())
    }

    /// The augmentation recipe of each view, in the order `loss` receives them (multi-crop
    /// methods read how many local views `config` asks for).
    fn view_presets(config: &PretrainConfig) -> Vec<ViewConfig>;

    /// The loss of one batch; `views[v]` is `[batch, channels, height, width]`. Methods with
    /// embeddings hand them to the collapse monitor ([`Step::watching`]); methods with a queue
    /// carry their detached keys to [`Method::after_step`].
    fn loss(&self, views: Vec<Tensor<4>>) -> Result<MethodStep>;

    /// The loss at `progress`, the fraction of training done before this step: what the
    /// trainer calls. Methods with a schedule inside the loss (DINO's teacher temperature, a
    /// head frozen for the first epoch) override it; the others are [`Method::loss`].
    fn loss_at(&self, views: Vec<Tensor<4>>, _progress: f64) -> Result<MethodStep> {
        self.loss(views)
    }

    /// Masked or corrupted inputs and their reconstructions, for methods that reconstruct
    /// (`None` for the others). Draws masks and noise from the device's random stream.
    fn reconstruct(&self, _images: Tensor<4>) -> Option<Result<Reconstruction>> {
        None
    }

    /// Work after each optimizer step (EMA targets, queues); `progress` is the fraction of
    /// training done, `kept` what the step's batches carried.
    fn after_step(self, _progress: f64, _kept: Vec<Tensor<2>>) -> Self {
        self
    }

    /// The encoder whose features are evaluated and exported.
    fn backbone(&self) -> &Backbone;

    /// The projection head on top of the backbone, for methods that have one (fine-tuning
    /// from its first layer, as SimCLRv2 does).
    fn projection(&self) -> Option<&Mlp> {
        None
    }
}

/// Encoder and projection: the part shared in shape by an online network and its momentum
/// copy (BYOL's target, MoCo's key encoder).
#[derive(Module, Debug)]
pub struct Branch {
    pub backbone: Backbone,
    pub projection: Mlp,
}

impl Branch {
    pub fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let (backbone, projection) = crate::vision::backbones::backbone_and_projection(
            &config.backbone,
            &config.projection,
            image,
            device,
        );
        Branch {
            backbone,
            projection,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.projection.forward(self.backbone.forward(x))
    }
}

/// Both views through `backbone` and `projection` in one pass (so batch-norm statistics cover
/// all 2N images), as the first and second half of the result `[2N, dim]`.
pub fn project_views(backbone: &Backbone, projection: &Mlp, views: Vec<Tensor<4>>) -> Tensor<2> {
    projection.forward(backbone.forward(Tensor::cat(views, 0)))
}

/// Each view through `net`, consecutive views of one size in one pass (multi-crop views differ
/// in size; the global views share a pass and its batch-norm statistics, as do the local ones),
/// back as one `[batch, dim]` output per view, in order.
pub fn per_view(views: Vec<Tensor<4>>, net: impl Fn(Tensor<4>) -> Tensor<2>) -> Vec<Tensor<2>> {
    let mut groups: Vec<Vec<Tensor<4>>> = Vec::new();
    for view in views {
        match groups.last_mut() {
            Some(group) if group[0].dims()[1..] == view.dims()[1..] => group.push(view),
            _ => groups.push(vec![view]),
        }
    }
    let mut outputs = Vec::new();
    for group in groups {
        let (count, batch) = (group.len(), group[0].dims()[0]);
        let y = net(Tensor::cat(group, 0));
        outputs.extend((0..count).map(|i| y.clone().narrow(0, i * batch, batch)));
    }
    outputs
}

/// The first and second halves of `[2N, dim]` rows: view 1's and view 2's.
pub fn halves(t: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let [rows, _] = t.dims();
    let n = rows / 2;
    (t.clone().narrow(0, 0, n), t.narrow(0, n, n))
}

/// [`halves`] of the whole global batch: under MPI every rank's rows of each view, in rank
/// order (a differentiable gather), so that a loss over the batch sees the batch one process
/// would; in one process, the halves themselves.
pub fn global_halves(t: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let (a, b) = halves(t);
    (gather_rows(a), gather_rows(b))
}

/// The views a config asks for: the method's presets, changed by the config's `views` list
/// (one entry for every view, or one per view).
pub fn view_configs<M: Method>(config: &PretrainConfig) -> Result<Vec<ViewConfig>> {
    let presets = M::view_presets(config);
    let views: Vec<ViewConfig> = match config.views.len() {
        0 => return Ok(presets),
        1 => presets.iter().map(|p| config.views[0].apply(p)).collect(),
        n if n == presets.len() => presets
            .iter()
            .zip(&config.views)
            .map(|(p, v)| v.apply(p))
            .collect(),
        n => bail!(
            "views: method '{}' takes {} views, the config lists {n} (list one entry to change \
             every view, or one per view)",
            config.method,
            presets.len()
        ),
    };
    for (i, v) in views.iter().enumerate() {
        v.validate(&format!("views[{i}]"))?;
    }
    Ok(views)
}

/// Every method name a config may give.
pub const METHODS: [&str; 16] = [
    "simclr",
    "mocov2",
    "mocov3",
    "nnclr",
    "byol",
    "simsiam",
    "barlowtwins",
    "dino",
    "swav",
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
            "mocov2" => {
                type $M = $crate::vision::methods::MocoV2;
                $body
            }
            "mocov3" => {
                type $M = $crate::vision::methods::MocoV3;
                $body
            }
            "nnclr" => {
                type $M = $crate::vision::methods::Nnclr;
                $body
            }
            "byol" => {
                type $M = $crate::vision::methods::Byol;
                $body
            }
            "simsiam" => {
                type $M = $crate::vision::methods::SimSiam;
                $body
            }
            "dino" => {
                type $M = $crate::vision::methods::Dino;
                $body
            }
            "swav" => {
                type $M = $crate::vision::methods::Swav;
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
