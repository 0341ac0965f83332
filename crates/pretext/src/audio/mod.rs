//! Sound: data ([`data`]: folders of clips → log-mel images; data sets built from SoundFonts
//! and speech synthesis) → views ([`views`]: crops, mixup, random resize crops, batched on the
//! shared loader) → encoders ([`backbones`]: BYOL-A's CNN, the shared ViT) → methods
//! ([`methods`]: BYOL-A, COLA, masked spectrogram modelling) → the pretraining job
//! ([`pretrain`]); [`eval`] scores a checkpoint's ([`checkpoint`]) frozen features against
//! random initialisation and a log-mel baseline.

pub mod backbones;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod labels;
pub mod methods;
pub mod pretrain;
pub mod report;
pub mod views;
