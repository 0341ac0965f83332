//! Batches of augmented views for image methods, built on the shared [`Loader`].
//!
//! Each view's randomness is seeded from (seed, epoch, image, view), so a run is reproducible
//! whatever the thread count, and a resumed run sees exactly the views it would have seen.

use std::sync::Arc;
use std::time::Duration;

use burn::prelude::*;
use rayon::prelude::*;

use anyhow::{Context, Result};

use super::config::DataConfig;
use super::data::source::readable_image;
use super::data::{ImageSource, OnError};
use super::views::{Image, Pipeline};
use crate::core::loader::{Loader, Schedule, SkipReport, view_rng};
use crate::core::train::BatchSource;

/// Views of one batch: `views[v]` is `[batch, channels, height, width]` flattened.
#[derive(Debug)]
pub struct ViewBatch {
    pub views: Vec<Vec<f32>>,
    pub shapes: Vec<[usize; 4]>,
    pub epoch: usize,
    pub step_in_epoch: usize,
    /// Which images of the set the batch holds, in order (methods never see them).
    pub indices: Vec<usize>,
    /// Why each image left out of this batch could not be read (`data.on_error = "skip"`).
    pub skipped: Vec<String>,
}

/// Each view's batch (`[batch, channels, height, width]` flattened), its shape, and the reasons
/// of the images skipped.
pub type MadeViews = (Vec<Vec<f32>>, Vec<[usize; 4]>, Vec<String>);

/// Every view of the images at `indices`, and the reasons of the unreadable images that
/// [`OnError::Skip`] replaced by the next readable ones.
pub fn make_views(
    data: &dyn ImageSource,
    pipelines: &[Pipeline],
    indices: &[usize],
    seed: u64,
    epoch: usize,
    on_error: OnError,
) -> Result<MadeViews> {
    let per_image: Vec<(Vec<Image>, Vec<String>)> = indices
        .par_iter()
        .map(|&idx| {
            let (image, skipped) = readable_image(data, idx, on_error)?;
            let views = pipelines
                .iter()
                .enumerate()
                .map(|(v, p)| {
                    let mut rng = view_rng(seed, epoch, idx, v);
                    p.apply(image.clone(), &mut rng)
                })
                .collect();
            Ok((views, skipped))
        })
        .collect::<Result<_>>()?;
    let mut views = Vec::with_capacity(pipelines.len());
    let mut shapes = Vec::with_capacity(pipelines.len());
    for v in 0..pipelines.len() {
        let first = &per_image[0].0[v];
        let len = first.data.len();
        let mut buf = vec![0f32; len * indices.len()];
        buf.par_chunks_mut(len)
            .zip(per_image.par_iter())
            .for_each(|(out, (imgs, _))| imgs[v].write_chw(out));
        shapes.push([indices.len(), first.channels, first.height, first.width]);
        views.push(buf);
    }
    let skipped = per_image.into_iter().flat_map(|(_, s)| s).collect();
    Ok((views, shapes, skipped))
}

/// Where the loader builds its batches: on `workers` threads of its own, or (0) on the
/// training's thread pool.
fn worker_pool(workers: usize) -> Option<rayon::ThreadPool> {
    if workers == 0 {
        return None;
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("pretext-data-{i}"))
        .build()
        .ok()
}

/// A loader of augmented views of `data`, one view per pipeline.
pub fn view_loader(
    data: Arc<dyn ImageSource>,
    pipelines: Arc<Vec<Pipeline>>,
    schedule: Schedule,
    reading: &DataConfig,
) -> Loader<Result<ViewBatch>> {
    let seed = schedule.seed;
    let on_error = reading.on_error;
    let pool = worker_pool(reading.workers);
    let stream = data.clone();
    let batch_size = schedule.batch_size;
    let order = move |epoch| stream.epoch_order(seed, epoch, batch_size);
    Loader::spawn_ordered(data.len(), schedule, order, move |epoch, step, indices| {
        let make = || make_views(&*data, &pipelines, indices, seed, epoch, on_error);
        let (views, shapes, skipped) = match &pool {
            Some(pool) => pool.install(make),
            None => make(),
        }
        .with_context(|| format!("epoch {}, batch {}", epoch + 1, step + 1))?;
        Ok(ViewBatch {
            views,
            shapes,
            epoch,
            step_in_epoch: step,
            indices: indices.to_vec(),
            skipped,
        })
    })
}

/// Image views from the background [`Loader`], as the tensors a method takes.
pub struct ViewBatches {
    pub loader: Loader<Result<ViewBatch>>,
    pub device: Device,
    skips: SkipReport,
}

impl ViewBatches {
    pub fn new(loader: Loader<Result<ViewBatch>>, device: Device) -> Self {
        ViewBatches {
            loader,
            device,
            skips: SkipReport::new("image"),
        }
    }
}

impl BatchSource for ViewBatches {
    type Batch = Vec<Tensor<4>>;

    fn next_batch(&mut self) -> Result<Option<(Self::Batch, usize)>> {
        let Some(batch) = self.loader.next_batch() else {
            self.skips.end_epoch();
            return Ok(None);
        };
        let batch = batch?;
        self.skips.batch(batch.epoch, batch.skipped);
        let tensors = batch
            .views
            .into_iter()
            .zip(&batch.shapes)
            .map(|(v, s)| Tensor::from_data(TensorData::new(v, *s), &self.device))
            .collect();
        Ok(Some((tensors, batch.epoch)))
    }

    fn waited(&self) -> Duration {
        self.loader.waited()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::data::ImageSet;
    use crate::vision::views::ViewConfig;

    fn tiny_set(n: usize) -> ImageSet {
        ImageSet {
            height: 6,
            width: 6,
            channels: 1,
            pixels: (0..n * 36).map(|i| (i % 251) as u8).collect(),
            labels: Some((0..n as u32).collect()),
            class_names: vec![],
        }
    }

    #[test]
    fn resumed_loader_yields_the_same_batches() {
        let data: Arc<dyn ImageSource> = Arc::new(tiny_set(20));
        let pipes = Arc::new(vec![ViewConfig::simclr().build((6, 6), &[0.5], &[0.25])]);
        let sched = Schedule {
            batch_size: 4,
            steps_per_epoch: 5,
            epochs: 2,
            start_epoch: 0,
            start_step: 0,
            prefetch: 2,
            seed: 9,
        };
        let mut full = view_loader(data.clone(), pipes.clone(), sched, &DataConfig::default());
        let mut all = Vec::new();
        while let Some(b) = full.next_batch() {
            all.push(b.unwrap());
        }
        assert_eq!(all.len(), 10);
        let resumed_sched = Schedule {
            start_epoch: 1,
            start_step: 2,
            ..sched
        };
        let mut resumed = view_loader(data, pipes, resumed_sched, &DataConfig::default());
        let mut rest = Vec::new();
        while let Some(b) = resumed.next_batch() {
            rest.push(b.unwrap());
        }
        assert_eq!(rest.len(), 3);
        for (a, b) in all[7..].iter().zip(&rest) {
            assert_eq!(a.indices, b.indices);
            assert_eq!(a.views, b.views);
        }
    }
}
