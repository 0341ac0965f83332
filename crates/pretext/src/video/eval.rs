//! Scoring what a video method learned: clip features (the pretrained model's and the same
//! model's at random initialisation) by kNN and a linear probe on any label column, with 1, 10
//! or 100% of the training labels; a column with several values per video (the classes
//! present) gets one binary probe per class, scored per class and by exact match. Next-frame
//! models are also scored as forecasters: MSE and MAE per frame (pixels in [0, 1], summed over
//! the frame, averaged over frames and videos, as OpenSTL reports them) and SSIM, beside the
//! copy-the-last-frame forecast.

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::Serialize;

use super::data::LabelSets;
use super::data::stream::VideoStore;
use super::methods::VideoMethod;
use super::views::first_frames_batch;
use crate::core::config::EvalConfig;
use crate::core::eval::{Features, Labelled, linear_probe_predictions};
use crate::core::feature_scores::{FeatureScores, score_features, standardise};
use crate::core::loader::epoch_order;

/// Videos per forward pass.
const BATCH: usize = 64;

/// Features of the first `frames` frames of the videos at `rows` of `store`, in that order
/// (streamed videos are decoded a batch at a time: memory holds the features).
pub fn clip_features<M: VideoMethod>(
    model: &M,
    store: &VideoStore,
    rows: &[usize],
    frames: usize,
    device: &Device,
) -> Result<Features> {
    let [features] = models_clip_features([model], store, rows, frames, device)?;
    Ok(features)
}

/// [`clip_features`] of several models, each batch read once for all of them.
pub fn models_clip_features<M: VideoMethod, const N: usize>(
    models: [&M; N],
    store: &VideoStore,
    rows: &[usize],
    frames: usize,
    device: &Device,
) -> Result<[Features; N]> {
    let mut out = std::array::from_fn(|_| Features {
        dim: 0,
        values: Vec::new(),
    });
    for batch in rows.chunks(BATCH) {
        let clips = first_frames_batch(store, batch, frames, device)?;
        for (model, features) in models.iter().zip(&mut out) {
            let y = model.features(clips.clone());
            features.dim = y.dims()[1];
            features
                .values
                .extend(y.into_data().convert::<f32>().iter::<f32>());
        }
    }
    Ok(out)
}

/// Every row of `store`.
pub fn all_rows(store: &VideoStore) -> Vec<usize> {
    (0..store.len()).collect()
}

/// A single-label task's labels on both splits, the test's renumbered by the training
/// split's class names (test videos of classes training lacks are dropped: their rows).
pub fn single_labels(
    train: &LabelSets,
    test: &LabelSets,
) -> Result<(Vec<u32>, Vec<usize>, Vec<u32>)> {
    let (Some(train_labels), Some(test_labels)) = (train.single(), test.single()) else {
        bail!("'{}' holds several values per video", train.name);
    };
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for (i, &l) in test_labels.iter().enumerate() {
        if let Some(k) = train
            .classes
            .iter()
            .position(|c| *c == test.classes[l as usize])
        {
            rows.push(i);
            labels.push(k as u32);
        }
    }
    Ok((train_labels, rows, labels))
}

/// Per-class and exact-match accuracy of binary probes, one per class, at each fraction.
#[derive(Debug, Clone, Serialize)]
pub struct MultiLabelScores {
    pub features: String,
    pub dim: usize,
    /// (fraction, mean per-class accuracy, exact match).
    pub by_fraction: Vec<(f64, f64, f64)>,
}

/// Whether each video of `sets` holds class `name`.
fn holds(sets: &LabelSets, name: &str) -> Vec<u32> {
    let id = sets.classes.iter().position(|c| c == name);
    sets.values
        .iter()
        .map(|v| id.is_some_and(|id| v.contains(&(id as u32))) as u32)
        .collect()
}

/// Score a multi-label column: for each training class a binary linear probe on a seeded
/// random `fraction` of the training videos.
#[allow(clippy::too_many_arguments)]
pub fn score_multi_label(
    name: &str,
    train: &Features,
    test: &Features,
    train_sets: &LabelSets,
    test_sets: &LabelSets,
    fractions: &[f64],
    eval: &EvalConfig,
    seed: u64,
    device: &Device,
) -> Result<MultiLabelScores> {
    let order = epoch_order(train.len(), seed ^ 0x5B5E7, 0);
    let mut by_fraction = Vec::new();
    for &fraction in fractions {
        let take = ((fraction * train.len() as f64).round() as usize).clamp(2, train.len());
        let rows = &order[..take];
        let subset = train.rows(rows);
        let mut all_right = vec![true; test.len()];
        let mut per_class = Vec::new();
        for class in &train_sets.classes {
            let y_train: Vec<u32> = holds(train_sets, class);
            let y_train: Vec<u32> = rows.iter().map(|&r| y_train[r]).collect();
            let y_test = holds(test_sets, class);
            let pred = linear_probe_predictions(
                Labelled::new(&subset, &y_train),
                Labelled::new(test, &y_test),
                2,
                eval,
                seed,
                device,
            )?;
            let mut right = 0;
            for (i, (p, y)) in pred.iter().zip(&y_test).enumerate() {
                if p == y {
                    right += 1;
                } else {
                    all_right[i] = false;
                }
            }
            per_class.push(right as f64 / test.len().max(1) as f64);
        }
        let exact = all_right.iter().filter(|&&r| r).count() as f64 / test.len().max(1) as f64;
        let mean = per_class.iter().sum::<f64>() / per_class.len().max(1) as f64;
        by_fraction.push((fraction, mean, exact));
    }
    Ok(MultiLabelScores {
        features: name.into(),
        dim: train.dim,
        by_fraction,
    })
}

/// The scores of one kind of features on one task.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TaskScores {
    Single(FeatureScores),
    Multi(MultiLabelScores),
}

/// Standardise `train`/`test` features and score them on `task` of both splits.
#[allow(clippy::too_many_arguments)]
pub fn score_task(
    name: &str,
    train: &Features,
    test: &Features,
    train_set: &VideoStore,
    test_set: &VideoStore,
    task: &str,
    fractions: &[f64],
    eval: &EvalConfig,
    seed: u64,
    device: &Device,
) -> Result<TaskScores> {
    let (a, b) = standardise(train, test);
    let (train_task, test_task) = (train_set.task(task)?, test_set.task(task)?);
    if let Ok((train_labels, rows, test_labels)) = single_labels(train_task, test_task) {
        if rows.is_empty() {
            bail!("no test video has a '{task}' class that the training split has");
        }
        let b = b.rows(&rows);
        return Ok(TaskScores::Single(score_features(
            name,
            &a,
            &b,
            &train_labels,
            &test_labels,
            &train_task.classes,
            fractions,
            eval,
            seed,
            device,
        )?));
    }
    Ok(TaskScores::Multi(score_multi_label(
        name, &a, &b, train_task, test_task, fractions, eval, seed, device,
    )?))
}

/// Everything `video eval` measured.
#[derive(Debug, Serialize)]
pub struct VideoReport {
    pub method: String,
    /// (task, pretrained, random init).
    pub tasks: Vec<(String, TaskScores, TaskScores)>,
    /// The model's forecasts and the copy-last-frame forecasts (next-frame methods).
    pub forecast: Option<[ForecastScores; 2]>,
}

/// Forecast quality over a test set.
#[derive(Debug, Clone, Serialize)]
pub struct ForecastScores {
    pub forecast: String,
    /// Per frame: squared error summed over the frame's pixels, averaged over frames, videos.
    pub mse: f64,
    pub mae: f64,
    pub ssim: f64,
    /// The MSE of each predicted frame, first to last.
    pub mse_by_frame: Vec<f64>,
}

/// SSIM of two `h x w` planes in [0, 1] (Wang et al. 2004, scikit-image's defaults: 7x7
/// uniform windows with sample covariance, K1 = 0.01, K2 = 0.03), the mean over every window
/// that fits inside the frame.
pub fn ssim(a: &[f32], b: &[f32], h: usize, w: usize) -> f64 {
    const WIN: usize = 7;
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    if h < WIN || w < WIN {
        return f64::NAN;
    }
    let n = (WIN * WIN) as f64;
    let cov_norm = n / (n - 1.0);
    let mut total = 0.0;
    for r in 0..=h - WIN {
        for c in 0..=w - WIN {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for i in r..r + WIN {
                for j in c..c + WIN {
                    let (x, y) = (a[i * w + j] as f64, b[i * w + j] as f64);
                    sa += x;
                    sb += y;
                    saa += x * x;
                    sbb += y * y;
                    sab += x * y;
                }
            }
            let (ma, mb) = (sa / n, sb / n);
            let va = cov_norm * (saa / n - ma * ma);
            let vb = cov_norm * (sbb / n - mb * mb);
            let vab = cov_norm * (sab / n - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * vab + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
        }
    }
    total / ((h - WIN + 1) * (w - WIN + 1)) as f64
}

/// Accumulates forecast errors frame by frame.
struct ForecastTally {
    name: String,
    frame_len: usize,
    plane: (usize, usize),
    sq: Vec<f64>,
    abs: f64,
    ssim: f64,
    frames: usize,
}

impl ForecastTally {
    fn add(&mut self, pred: &[f32], truth: &[f32]) {
        let (h, w) = self.plane;
        for (t, (p, y)) in pred
            .chunks(self.frame_len)
            .zip(truth.chunks(self.frame_len))
            .enumerate()
        {
            let slot = t % self.sq.len();
            self.sq[slot] += p
                .iter()
                .zip(y)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>();
            self.abs += p
                .iter()
                .zip(y)
                .map(|(a, b)| (a - b).abs() as f64)
                .sum::<f64>();
            let planes = p.chunks(h * w).zip(y.chunks(h * w));
            let channels = self.frame_len / (h * w);
            self.ssim += planes.map(|(a, b)| ssim(a, b, h, w)).sum::<f64>() / channels as f64;
            self.frames += 1;
        }
    }

    fn finish(self) -> ForecastScores {
        let per_video_frames = self.sq.len();
        let videos = (self.frames / per_video_frames).max(1) as f64;
        let frames = self.frames.max(1) as f64;
        ForecastScores {
            forecast: self.name,
            mse: self.sq.iter().sum::<f64>() / frames,
            mae: self.abs / frames,
            ssim: self.ssim / frames,
            mse_by_frame: self.sq.iter().map(|s| s / videos).collect(),
        }
    }
}

/// The model's forecast of `output` frames after the first `input` of every test video, and
/// the copy-last-frame forecast, scored against the true frames.
pub fn forecast_scores<M: VideoMethod>(
    model: &M,
    store: &VideoStore,
    input: usize,
    output: usize,
    device: &Device,
) -> Result<Option<[ForecastScores; 2]>> {
    if let VideoStore::Memory(set) = store
        && set.min_frames() < input + output
    {
        bail!(
            "{}: the shortest video has {} frames; forecasts need {input} + {output}",
            set.source,
            set.min_frames()
        );
    }
    let (channels, height, width) = store.frame();
    let frame_len = channels * height * width;
    let tally = |name: &str| ForecastTally {
        name: name.into(),
        frame_len,
        plane: (height, width),
        sq: vec![0.0; output],
        abs: 0.0,
        ssim: 0.0,
        frames: 0,
    };
    let (mut model_tally, mut copy_tally) = (tally("model"), tally("copy last frame"));
    for rows in all_rows(store).chunks(BATCH) {
        let clips = first_frames_batch(store, rows, input + output, device)?;
        let context = clips.clone().narrow(1, 0, input);
        let Some(pred) = model.predict(context.clone()) else {
            return Ok(None);
        };
        let truth = clips.narrow(1, input, output);
        let last = context.narrow(1, input - 1, 1);
        let copy = Tensor::cat(vec![last; output], 1);
        let values = |t: Tensor<5>| {
            t.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default()
        };
        let (pred, truth, copy) = (values(pred), values(truth), values(copy));
        let per_video = output * frame_len;
        for ((p, y), c) in pred
            .chunks(per_video)
            .zip(truth.chunks(per_video))
            .zip(copy.chunks(per_video))
        {
            model_tally.add(p, y);
            copy_tally.add(c, y);
        }
    }
    Ok(Some([model_tally.finish(), copy_tally.finish()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssim_is_one_for_equal_frames_and_drops_with_noise() {
        let (h, w) = (12, 12);
        let a: Vec<f32> = (0..h * w)
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect();
        assert!((ssim(&a, &a, h, w) - 1.0).abs() < 1e-9);
        let b: Vec<f32> = a.iter().map(|v| 1.0 - v).collect();
        assert!(
            ssim(&a, &b, h, w) < 0.0,
            "an inverted frame is anti-correlated"
        );
        // A constant offset of 0.1 on one 7x7 window: only the luminance term moves.
        let (x, y) = (vec![0.5f32; 49], vec![0.6f32; 49]);
        let (mx, my, c1) = (0.5f64, 0.6f64, 1e-4);
        let want = (2.0 * mx * my + c1) / (mx * mx + my * my + c1);
        assert!((ssim(&x, &y, 7, 7) - want).abs() < 1e-6);
    }

    #[test]
    fn forecast_errors_are_summed_over_pixels_and_averaged_over_frames() {
        let mut t = ForecastTally {
            name: "x".into(),
            frame_len: 4,
            plane: (2, 2),
            sq: vec![0.0; 2],
            abs: 0.0,
            ssim: 0.0,
            frames: 0,
        };
        // Two frames: errors 0.5 on every pixel, then 0.
        t.add(&[0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0], &[0.0; 8]);
        let s = t.finish();
        assert!((s.mse - (4.0 * 0.25) / 2.0).abs() < 1e-9);
        assert!((s.mae - (4.0 * 0.5) / 2.0).abs() < 1e-9);
        assert_eq!(s.mse_by_frame, vec![1.0, 0.0]);
    }
}
