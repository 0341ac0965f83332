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
//! audio/      data (clips → log-mel; notes and spoken-word builders) → views (crops, mixup,
//!             random resize crop) → backbones (BYOL-A's CNN, the ViT) → methods (BYOL-A,
//!             COLA, masked spectrogram modelling) → pretrain job; eval, labels, report
//! video/      data (Moving Fashion-MNIST, video files through ffmpeg) → views (clips), tube
//!             masking → backbones (space-time ViT, frame-by-frame CNN) → methods (VideoMAE,
//!             temporal contrast, frame order, next-frame prediction) → pretrain job; eval
//! ```
//!
//! Each modality keeps the same inner shape: its data readers, its views or masking, its
//! backbones and heads, its methods, its job.
//!
//! Data flows one way: dataset → views (or masking) → backbone → head → loss → optimizer, driven
//! by [`core::train::run_loop`]; evaluation reads a checkpoint.

pub mod audio;
pub mod core;
pub mod text;
pub mod video;
pub mod vision;
