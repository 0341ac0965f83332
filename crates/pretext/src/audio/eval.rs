//! Scoring audio features: the pretrained encoder's, the same encoder's at random
//! initialisation, and the classic baseline of the mean and standard deviation of every
//! log-mel band over time; each by kNN and a linear probe, on any label column, with 1, 10 or
//! 100% of the training labels.

use burn::prelude::*;

use super::backbones::AudioEncoder;
use super::data::{ClipSet, LabelColumn};
use crate::core::eval::Features;
pub use crate::core::feature_scores::{FeatureScores, score_features, standardise};

/// Clips per forward pass when extracting features.
const BATCH: usize = 128;

/// The encoder's features of every whole clip, normalised band by band with `mean`/`std` (a
/// crop-trained encoder takes whole clips: the CNN pools over time, the ViT's sin-cos
/// positions extend; averaging crop-sized windows instead scored 7 points lower with the
/// BYOL-A CNN on spoken words).
pub fn encoder_features(
    encoder: &AudioEncoder,
    set: &ClipSet,
    (mean, std): (&[f32], &[f32]),
    device: &Device,
) -> Features {
    let (bands, frames) = (set.n_mels, set.frames);
    let mut values = Vec::with_capacity(set.len() * encoder.out_dim());
    for start in (0..set.len()).step_by(BATCH) {
        let end = (start + BATCH).min(set.len());
        let mut x = Vec::with_capacity((end - start) * bands * frames);
        for i in start..end {
            let clip = set.clip(i);
            for m in 0..bands {
                x.extend(
                    clip[m * frames..(m + 1) * frames]
                        .iter()
                        .map(|v| (v - mean[m]) / std[m]),
                );
            }
        }
        let x = Tensor::<4>::from_data(TensorData::new(x, [end - start, 1, bands, frames]), device);
        let y = encoder.forward(x).into_data().convert::<f32>();
        values.extend(y.iter::<f32>());
    }
    Features {
        dim: encoder.out_dim(),
        values,
    }
}

/// The mean and standard deviation of every band over time: `2 x bands` values per clip.
pub fn logmel_stats(set: &ClipSet) -> Features {
    let (bands, frames) = (set.n_mels, set.frames);
    let mut values = Vec::with_capacity(set.len() * 2 * bands);
    for i in 0..set.len() {
        let clip = set.clip(i);
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
    Features {
        dim: 2 * bands,
        values,
    }
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
