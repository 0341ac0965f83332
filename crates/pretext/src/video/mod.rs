//! Video: data ([`data`]: Moving Fashion-MNIST built from IDX objects, folders of video files
//! decoded by ffmpeg) → clips ([`views`]: random starts, one spatial augmentation per clip) and
//! tube masking ([`masking`]) → encoders ([`backbones`]: a space-time ViT, any image backbone
//! frame by frame) → methods ([`methods`]: VideoMAE, temporal contrast, frame order, next-frame
//! prediction) → the pretraining job ([`pretrain`]); [`eval`] scores a checkpoint
//! ([`checkpoint`]) against its random initialisation, and next-frame models as forecasters.

pub mod backbones;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod labels;
pub mod masking;
pub mod methods;
pub mod pretrain;
pub mod report;
pub mod views;
