//! Scoring audio features: the pretrained encoder's, the same encoder's at random
//! initialisation, and the classic baseline of the mean and standard deviation of every
//! log-mel band over time; each by kNN and a linear probe, on any label column, with 1, 10 or
//! 100% of the training labels.

use std::borrow::Cow;

use anyhow::{Result, bail};
use burn::prelude::*;
use rayon::prelude::*;

use super::backbones::AudioEncoder;
use super::data::stream::ClipStore;
use super::data::{ClipSet, LabelColumn};
use crate::core::eval::Features;
pub use crate::core::feature_scores::{FeatureScores, score_features, standardise};
use crate::core::loader::{OnError, stop_hint};

/// Clips per forward pass when extracting features.
const BATCH: usize = 128;

/// The encoder's features of every whole clip, normalised band by band with `mean`/`std` (a
/// crop-trained encoder takes whole clips: the CNN pools over time, the ViT's sin-cos
/// positions extend; averaging crop-sized windows instead scored 7 points lower with the
/// BYOL-A CNN on spoken words).
pub fn encoder_features(
    encoder: &AudioEncoder,
    set: &ClipSet,
    norm: (&[f32], &[f32]),
    device: &Device,
) -> Features {
    let mut out = [Features {
        dim: encoder.out_dim(),
        values: Vec::with_capacity(set.len() * encoder.out_dim()),
    }];
    for start in (0..set.len()).step_by(BATCH) {
        let images: Vec<&[f32]> = (start..(start + BATCH).min(set.len()))
            .map(|i| set.clip(i))
            .collect();
        encode_batch(
            &[encoder],
            &images,
            (set.n_mels, set.frames),
            norm,
            device,
            &mut out,
        );
    }
    let [features] = out;
    features
}

/// Every encoder's features of the whole clips `images`, appended to `out` (one per encoder).
fn encode_batch(
    encoders: &[&AudioEncoder],
    images: &[&[f32]],
    (bands, frames): (usize, usize),
    (mean, std): (&[f32], &[f32]),
    device: &Device,
    out: &mut [Features],
) {
    if images.is_empty() || encoders.is_empty() {
        return;
    }
    let mut x = Vec::with_capacity(images.len() * bands * frames);
    for clip in images {
        for m in 0..bands {
            x.extend(
                clip[m * frames..(m + 1) * frames]
                    .iter()
                    .map(|v| (v - mean[m]) / std[m]),
            );
        }
    }
    let x = Tensor::<4>::from_data(TensorData::new(x, [images.len(), 1, bands, frames]), device);
    for (encoder, features) in encoders.iter().zip(out) {
        let y = encoder.forward(x.clone()).into_data().convert::<f32>();
        features.values.extend(y.iter::<f32>());
    }
}

/// The mean and standard deviation of every band over time: `2 x bands` values per clip.
pub fn logmel_stats(set: &ClipSet) -> Features {
    let mut values = Vec::with_capacity(set.len() * 2 * set.n_mels);
    for i in 0..set.len() {
        push_band_stats(set.clip(i), set.n_mels, set.frames, &mut values);
    }
    Features {
        dim: 2 * set.n_mels,
        values,
    }
}

/// One clip's band means, then its band standard deviations, appended to `values`.
fn push_band_stats(clip: &[f32], bands: usize, frames: usize, values: &mut Vec<f32>) {
    let (mut means, mut stds) = (Vec::new(), Vec::new());
    for m in 0..bands {
        let row = &clip[m * frames..(m + 1) * frames];
        let mean = row.iter().sum::<f32>() / frames as f32;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / frames as f32;
        means.push(mean);
        stds.push(var.sqrt());
    }
    values.extend(means);
    values.extend(stds);
}

/// What one pass over a split gives: each encoder's features and the log-mel statistics of
/// the clips that could be read (`kept`, indices into the split), and the reasons for those
/// that could not.
pub struct SplitFeatures {
    pub encoders: Vec<Features>,
    pub logmel: Features,
    pub kept: Vec<usize>,
    pub skipped: Vec<String>,
}

/// Every encoder's features and the log-mel statistics of the clips at `indices` of `store`,
/// reading each clip once (streamed: from disk, `BATCH` clips at a time, so memory holds
/// features, never the split's images). An unusable streamed clip is left out and named under
/// [`OnError::Skip`], or stops the evaluation under [`OnError::Stop`]. In memory this computes
/// what [`encoder_features`] and [`logmel_stats`] compute, in the same batches.
pub fn split_features(
    encoders: &[&AudioEncoder],
    store: &ClipStore,
    indices: &[usize],
    norm: (&[f32], &[f32]),
    on_error: OnError,
    device: &Device,
) -> Result<SplitFeatures> {
    let shape = (store.n_mels(), store.frames());
    let mut out = SplitFeatures {
        encoders: encoders
            .iter()
            .map(|e| Features {
                dim: e.out_dim(),
                values: Vec::new(),
            })
            .collect(),
        logmel: Features {
            dim: 2 * shape.0,
            values: Vec::new(),
        },
        kept: Vec::with_capacity(indices.len()),
        skipped: Vec::new(),
    };
    for batch in indices.chunks(BATCH) {
        let read: Vec<Result<Cow<[f32]>>> = batch.par_iter().map(|&i| store.image(i)).collect();
        let mut images = Vec::with_capacity(batch.len());
        for (&i, clip) in batch.iter().zip(read) {
            match clip {
                Ok(image) => {
                    out.kept.push(i);
                    images.push(image);
                }
                Err(e) if on_error == OnError::Skip => out.skipped.push(format!("{e:#}")),
                Err(e) => {
                    return Err(e.context(stop_hint("clip")));
                }
            }
        }
        let images: Vec<&[f32]> = images.iter().map(|c| c.as_ref()).collect();
        encode_batch(encoders, &images, shape, norm, device, &mut out.encoders);
        for image in images {
            push_band_stats(image, shape.0, shape.1, &mut out.logmel.values);
        }
    }
    if out.kept.is_empty() {
        bail!(
            "none of the {} clips could be used ({})",
            indices.len(),
            out.skipped.first().map_or("", String::as_str)
        );
    }
    Ok(out)
}

/// The test rows whose class the training column knows, with their labels renumbered by the
/// training column's classes (a test split may hold a subset of the classes, in another order).
pub fn align_labels(train: &LabelColumn, test: &LabelColumn) -> (Vec<usize>, Vec<u32>) {
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for (i, &l) in test.labels.iter().enumerate() {
        let name = &test.classes[l as usize];
        if let Some(k) = train.classes.iter().position(|c| c == name) {
            rows.push(i);
            labels.push(k as u32);
        }
    }
    (rows, labels)
}
