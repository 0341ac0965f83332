//! Images: data readers ([`data`]) → augmented views ([`views`], batched on the shared loader
//! by [`batches`]) → backbones ([`backbones`]) → SSL methods ([`methods`], with the patch masks
//! of [`masking`] and the corruptions of [`corruption`]) → the pretraining job ([`pretrain`]);
//! [`eval`] scores a checkpoint's frozen features, [`reconstruct`] draws what a reconstructing
//! method makes of images, [`export`] hands ResNet weights to torchvision.

pub mod backbones;
pub mod batches;
pub mod checkpoint;
pub mod config;
pub mod corruption;
pub mod data;
pub mod eval;
pub mod export;
pub mod labels;
pub mod masking;
pub mod methods;
pub mod pretrain;
pub mod reconstruct;
pub mod report;
pub mod views;
