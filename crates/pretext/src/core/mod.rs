//! The shared core: everything that knows no modality. The training loop ([`train`]) and the
//! background batch producer ([`loader`]); optimizers and schedules; checkpoints; device
//! selection; the config machinery; heads, losses and momentum encoders that act on feature
//! vectors; the transformer blocks ViTs share; frozen-feature evaluation; plots and feature files.

pub mod bench;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod distributed;
pub mod eval;
pub mod feature_scores;
pub mod file_index;
pub mod finetune;
pub mod heads;
pub mod html;
pub mod kernels;
pub mod labels;
pub mod loader;
pub mod losses;
pub mod map2d;
pub mod momentum;
pub mod optim;
pub mod queue;
pub mod report;
pub mod run_report;
pub mod split;
pub mod train;
pub mod transformer;
