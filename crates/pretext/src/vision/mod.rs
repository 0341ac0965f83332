//! Images: data readers ([`data`]) → augmented views ([`views`], batched on the shared loader
//! by [`batches`]) → backbones ([`backbones`]) → SSL methods ([`methods`]) → the pretraining
//! job ([`pretrain`]); [`eval`] scores a checkpoint's frozen features.

pub mod backbones;
pub mod batches;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod labels;
pub mod methods;
pub mod pretrain;
pub mod report;
pub mod views;
