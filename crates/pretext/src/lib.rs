//! pretext: self-supervised learning on burn.
//!
//! ```text
//! core/       knows no modality: train/ (the one training loop: progress, metrics,
//!             checkpoints, resume, NaN guard, gradient accumulation), loader (background
//!             batches), optim, checkpoint, device, config, heads, losses, momentum,
//!             queue (memory bank), eval (kNN, linear probe on any features), report (plots, .npy), kernels
//!             (pretext's own CPU ops with their backward passes), bench (op timings)
//! vision/     data (IDX, CIFAR, image folders, letters) → views, masking, corruption →
//!             backbones (CNNs, ViT, CNN decoder) → methods (SimCLR, MoCo v2/v3, NNCLR, BYOL,
//!             SimSiam, Barlow Twins, VICReg, DINO, SwAV, MAE, SimMIM, autoencoders,
//!             rotation, jigsaw)
//!             → pretrain job;
//!             eval (image features → core::eval), reconstruct
//! text/       tokenizer → examples → masking → encoder → mlm job; probe, export/import (HF)
//! ```
//!
//! Each modality keeps the same inner shape: its data readers, its views or masking, its
//! backbones and heads, its methods, its job. Audio and video will sit beside `vision/` and
//! `text/` as `audio/` and `video/`, built the same way on the same core.
//!
//! Data flows one way: dataset → views (or masking) → backbone → head → loss → optimizer, driven
//! by [`core::train::run_loop`]; evaluation reads a checkpoint.

pub mod audio;
pub mod core;
pub mod text;
pub mod vision;
