//! Scoring audio features: the pretrained encoder's, the same encoder's at random
//! initialisation, and the classic baseline of the mean and standard deviation of every
//! log-mel band over time; each by kNN and a linear probe, on any label column, with 1, 10 or
//! 100% of the training labels.

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::Serialize;

use super::backbones::AudioEncoder;
use super::data::{ClipSet, LabelColumn};
use crate::core::config::EvalConfig;
use crate::core::eval::{Features, Labelled, knn_accuracy};
use crate::core::labels::probe_subset;
use crate::core::split::label_subsets;

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

/// Standardise every dimension of `train` and `test` with `train`'s mean and deviation, so
/// that the probes' L2 normalisation weighs hand-made features of different scales alike.
pub fn standardise(train: &Features, test: &Features) -> (Features, Features) {
    let dim = train.dim;
    let n = train.len().max(1) as f64;
    let mut mean = vec![0f64; dim];
    let mut sq = vec![0f64; dim];
    for i in 0..train.len() {
        for (d, &v) in train.row(i).iter().enumerate() {
            mean[d] += v as f64 / n;
            sq[d] += (v as f64).powi(2) / n;
        }
    }
    let std: Vec<f64> = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q - m * m).max(0.0).sqrt().max(1e-6))
        .collect();
    let apply = |f: &Features| Features {
        dim,
        values: f
            .values
            .chunks(dim)
            .flat_map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(d, &v)| ((v as f64 - mean[d]) / std[d]) as f32)
                    .collect::<Vec<_>>()
            })
            .collect(),
    };
    (apply(train), apply(test))
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

/// kNN and linear-probe accuracy of one kind of features at each label fraction.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureScores {
    pub features: String,
    pub dim: usize,
    /// (fraction, kNN accuracy, linear accuracy).
    pub by_fraction: Vec<(f64, f64, f64)>,
}

/// Score `train`/`test` features on a task with each fraction of the training labels
/// (stratified, nested subsets drawn with `seed`).
#[allow(clippy::too_many_arguments)]
pub fn score_features(
    name: &str,
    train: &Features,
    test: &Features,
    train_labels: &[u32],
    test_labels: &[u32],
    classes: &[String],
    fractions: &[f64],
    eval: &EvalConfig,
    seed: u64,
    device: &Device,
) -> Result<FeatureScores> {
    if train.is_empty() || test.is_empty() {
        bail!("no clips to score");
    }
    let subsets = label_subsets(train_labels, classes, fractions, 0.0, seed)?;
    let pair = (train.clone(), test.clone());
    let mut by_fraction = Vec::new();
    for subset in &subsets {
        let rows = train.rows(&subset.train);
        let labels: Vec<u32> = subset.train.iter().map(|&i| train_labels[i]).collect();
        let knn = knn_accuracy(
            Labelled::new(&rows, &labels),
            Labelled::new(test, test_labels),
            classes.len(),
            eval.knn_k,
            eval.knn_temperature,
        );
        let linear = probe_subset(
            &pair,
            train_labels,
            test_labels,
            classes.len(),
            subset,
            eval,
            seed,
            device,
        )?;
        by_fraction.push((subset.fraction, knn, linear));
    }
    Ok(FeatureScores {
        features: name.into(),
        dim: train.dim,
        by_fraction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardised_features_have_zero_mean_and_unit_spread_on_train() {
        let train = Features {
            dim: 2,
            values: vec![1.0, 10.0, 3.0, 30.0],
        };
        let test = Features {
            dim: 2,
            values: vec![2.0, 20.0],
        };
        let (a, b) = standardise(&train, &test);
        assert_eq!(a.values, vec![-1.0, -1.0, 1.0, 1.0]);
        assert_eq!(b.values, vec![0.0, 0.0]);
    }
}
