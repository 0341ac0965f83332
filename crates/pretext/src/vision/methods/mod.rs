//! SSL methods. Each is a small module composing shared parts (backbone, heads, losses,
//! momentum updates) behind the [`Method`] trait, which is all the trainer knows about.
//!
//! Room for the methods to come: MoCo keeps its queue as a buffer refreshed in
//! [`Method::after_step`]; DINO asks for more (multi-crop) views and centres its teacher in
//! `after_step`; MAE asks for one view and masks it inside `loss`.

pub mod byol;
pub mod simclr;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::prelude::*;

use crate::vision::backbones::Backbone;
use crate::vision::config::PretrainConfig;
use crate::vision::views::ViewConfig;

pub use byol::Byol;
pub use simclr::SimClr;

pub trait Method: Module + Sized {
    /// Build the method's modules for images with `channels` channels.
    fn init(config: &PretrainConfig, channels: usize, device: &Device) -> Self;

    /// The augmentation recipe of each view, in the order `loss` receives them.
    fn view_presets() -> Vec<ViewConfig>;

    /// The loss of one batch; `views[v]` is `[batch, channels, height, width]`.
    fn loss(&self, views: Vec<Tensor<4>>) -> Tensor<1>;

    /// Work after each optimizer step (EMA targets, queues); `progress` is the fraction of
    /// training done.
    fn after_step(self, _progress: f64) -> Self {
        self
    }

    /// The encoder whose features are evaluated and exported.
    fn backbone(&self) -> &Backbone;
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

/// Run `$body` with `$M` bound to the method type that `$name` names.
#[macro_export]
macro_rules! with_method {
    ($name:expr, $M:ident => $body:expr) => {
        match $name {
            "byol" => {
                type $M = $crate::vision::methods::Byol;
                $body
            }
            _ => {
                type $M = $crate::vision::methods::SimClr;
                $body
            }
        }
    };
}
