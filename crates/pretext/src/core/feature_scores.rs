//! Scoring any frozen features against labels: standardised per dimension on the training
//! rows, then kNN and a linear probe at each fraction of the training labels (stratified,
//! nested subsets). Audio and video features, and hand-made baselines beside them, are scored
//! here alike.

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::Serialize;

use crate::core::config::EvalConfig;
use crate::core::eval::{Features, Labelled, knn_accuracy};
use crate::core::labels::probe_subset;
use crate::core::split::label_subsets;

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
