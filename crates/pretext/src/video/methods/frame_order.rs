//! Frame order (Shuffle and Learn, Misra et al. 2016): three frames of a clip, in order (or
//! played backwards, which is as plausible) or shuffled; a shared frame encoder embeds each,
//! and a classifier on the three embeddings side by side says which:
//!
//! ```text
//! (a, b, c) = frames 0, t/2, t-1 of the clip
//! triplet = (a, b, c) | (c, b, a)   → in order
//!         | (b, a, c) | (a, c, b)   → shuffled
//! loss = cross_entropy(classifier([f(x1), f(x2), f(x3)]), in order?)
//! ```
//!
//! Each quarter of a batch takes one of the four triplets (by its place in the batch, which the
//! loader shuffles), so every batch is half in order.

use anyhow::{Result, bail};
use burn::prelude::*;

use super::{FrameShape, VideoMethod};
use crate::core::heads::{Mlp, MlpConfig};
use crate::core::losses::cross_entropy;
use crate::core::train::Step;
use crate::video::backbones::FrameEncoder;
use crate::video::config::VideoConfig;
use crate::video::views::ClipView;

#[derive(Module, Debug)]
pub struct FrameOrder {
    encoder: FrameEncoder,
    classifier: Mlp,
}

/// The four triplets over (first, middle, last) and whether each is in order.
const TRIPLETS: [([usize; 3], bool); 4] = [
    ([0, 1, 2], true),
    ([2, 1, 0], true),
    ([1, 0, 2], false),
    ([0, 2, 1], false),
];

/// For a batch of `batch` clips of `frames` frames: the row of every triplet frame in the
/// flattened `[batch * frames]` frames, and each clip's label (1: in order).
pub fn triplet_rows(batch: usize, frames: usize) -> (Vec<i64>, Vec<i64>) {
    let picks = [0, frames / 2, frames - 1];
    let mut rows = Vec::with_capacity(3 * batch);
    let mut labels = Vec::with_capacity(batch);
    for i in 0..batch {
        let (order, in_order) = TRIPLETS[i % 4];
        rows.extend(order.iter().map(|&k| (i * frames + picks[k]) as i64));
        labels.push(in_order as i64);
    }
    (rows, labels)
}

impl VideoMethod for FrameOrder {
    fn init(config: &VideoConfig, frame: FrameShape, device: &Device) -> Self {
        let encoder = FrameEncoder::new(&config.backbone, frame, device);
        let classifier = MlpConfig {
            output: 2,
            ..config.projection.clone()
        }
        .init(3 * encoder.frame_dim(), device);
        FrameOrder {
            encoder,
            classifier,
        }
    }

    fn replicas_refused() -> Option<&'static str> {
        Some("the batch norm of its MLP head takes statistics over the batch")
    }

    fn view_presets() -> Vec<ClipView> {
        vec![ClipView::default()]
    }

    fn loss(&self, mut clips: Vec<Tensor<5>>) -> Result<Step> {
        let clip = clips.remove(0);
        let device = clip.device();
        let [b, t, c, h, w] = clip.dims();
        if t < 3 {
            bail!("frame_order needs clips of 3 frames at least (data.clip_frames = {t})");
        }
        let (rows, labels) = triplet_rows(b, t);
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [3 * b]), &device);
        let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), &device);
        let frames = clip.reshape([b * t, c, h, w]).select(0, rows);
        let f = self.encoder.frames(frames);
        let side_by_side = f.reshape([b, 3 * self.encoder.frame_dim()]);
        Ok(Step::from(cross_entropy(
            self.classifier.forward(side_by_side),
            labels,
        )))
    }

    fn features(&self, clips: Tensor<5>) -> Tensor<2> {
        self.encoder.forward(clips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_triplets_are_in_order_and_rows_stay_in_their_clip() {
        let (rows, labels) = triplet_rows(8, 10);
        assert_eq!(labels.iter().sum::<i64>(), 4);
        assert_eq!(&rows[..3], &[0, 5, 9]);
        assert_eq!(&rows[3..6], &[19, 15, 10]);
        assert_eq!(&rows[6..9], &[25, 20, 29]);
        assert_eq!(&rows[9..12], &[30, 39, 35]);
        assert!(
            rows.chunks(3)
                .enumerate()
                .all(|(i, r)| r.iter().all(|&x| x as usize / 10 == i))
        );
    }
}
