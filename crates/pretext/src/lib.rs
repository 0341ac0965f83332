//! pretext: self-supervised learning on burn.
//!
//! Data flows one way: [`data`] (datasets, loader) → [`views`] (augmentation) → [`models`]
//! (backbone, heads) → [`losses`] → [`optim`], driven by [`train`] for any [`methods::Method`];
//! [`eval`] reads a checkpoint's backbone and scores its frozen features.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod eval;
pub mod losses;
pub mod methods;
pub mod models;
pub mod momentum;
pub mod optim;
pub mod report;
pub mod text;
pub mod train;
pub mod views;
