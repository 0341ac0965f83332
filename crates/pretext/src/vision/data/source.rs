//! The one interface the image loader reads: a set of images by index, each decoded when asked
//! for, at its own size. [`ImageSet`] (IDX, CIFAR, the embedded set: small, in memory) is one
//! implementation; [`super::stream::StreamedFolder`] (image folders of any size, read from disk
//! as the loader needs them) another. Views are cropped from what [`ImageSource::image`]
//! returns, so a streamed image keeps its original resolution until the crop.

use std::sync::Arc;

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::ImageSet;
use crate::vision::views::Image;

pub use crate::core::loader::OnError;

/// A set of images read by index.
pub trait ImageSource: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// 1 (grey) or 3 (RGB): every image is returned with this many channels.
    fn channels(&self) -> usize;
    /// (height, width): the size of a view that keeps "the input's size" (`crop_size = 0`), and
    /// the size evaluation reads the images at.
    fn size(&self) -> (usize, usize);
    fn labels(&self) -> Option<&[u32]>;
    fn class_names(&self) -> &[String];
    /// The labels, or an error saying that this set has none.
    fn require_labels(&self) -> Result<&[u32]> {
        self.labels()
            .context("this dataset has no labels; evaluation needs a labelled train and test split")
    }
    /// Classes: as many as there are names, or the largest label plus one.
    fn num_classes(&self) -> usize {
        self.class_names().len().max(
            self.labels()
                .and_then(|l| l.iter().max())
                .map_or(0, |&m| m as usize + 1),
        )
    }
    /// Image `i` at its own size, values in [0, 1]; an error names the file.
    fn image(&self, i: usize) -> Result<Image>;
    /// What `--resume` compares to continue on the same data.
    fn fingerprint(&self) -> serde_json::Value;
    /// Per-channel mean and standard deviation of the pixels in [0, 1].
    fn channel_stats(&self, on_error: OnError) -> Result<(Vec<f32>, Vec<f32>)>;
    /// The images at `indices`, in that order, as a source of the same kind.
    fn subset(&self, indices: &[usize]) -> Arc<dyn ImageSource>;
    /// The images decoded into memory at [`Self::size`] (for small subsets: the online kNN
    /// bank and queries).
    fn to_image_set(&self) -> Result<ImageSet>;
    /// The order the images are visited in epoch `epoch`, in global batches of `batch_size`
    /// that the loader splits over the ranks: a seeded permutation, unless the set is read in a
    /// stream (shards) and has an order of its own. Every epoch's order has the same length
    /// (a stream split over ranks may leave some images out of every epoch).
    fn epoch_order(&self, seed: u64, epoch: usize, batch_size: usize) -> Vec<usize> {
        let _ = batch_size;
        crate::core::loader::epoch_order(self.len(), seed, epoch)
    }
}

impl ImageSource for ImageSet {
    fn len(&self) -> usize {
        ImageSet::len(self)
    }

    fn channels(&self) -> usize {
        self.channels
    }

    fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn image(&self, i: usize) -> Result<Image> {
        Ok(Image::from_bytes(
            ImageSet::image(self, i),
            self.height,
            self.width,
            self.channels,
        ))
    }

    fn fingerprint(&self) -> serde_json::Value {
        ImageSet::fingerprint(self)
    }

    fn channel_stats(&self, _: OnError) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok(ImageSet::channel_stats(self))
    }

    fn subset(&self, indices: &[usize]) -> Arc<dyn ImageSource> {
        Arc::new(self.select(indices))
    }

    fn to_image_set(&self) -> Result<ImageSet> {
        Ok(self.clone())
    }
}

/// A set whose images all come at its [`ImageSource::size`]: what evaluation reads (features of
/// whole images, as a set in memory holds them), where pretraining crops views from each image
/// at its own size. Resized as [`ImageSource::to_image_set`] does.
pub struct AtSize(pub Arc<dyn ImageSource>);

impl AtSize {
    /// `source` at its size; a set in memory is one already.
    pub fn wrap(source: Arc<dyn ImageSource>) -> Arc<dyn ImageSource> {
        Arc::new(AtSize(source))
    }
}

impl ImageSource for AtSize {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn channels(&self) -> usize {
        self.0.channels()
    }

    fn size(&self) -> (usize, usize) {
        self.0.size()
    }

    fn labels(&self) -> Option<&[u32]> {
        self.0.labels()
    }

    fn class_names(&self) -> &[String] {
        self.0.class_names()
    }

    fn image(&self, i: usize) -> Result<Image> {
        let image = self.0.image(i)?;
        let (height, width) = self.size();
        if (image.height, image.width) == (height, width) {
            return Ok(image);
        }
        Ok(resize(&image, height, width))
    }

    fn fingerprint(&self) -> serde_json::Value {
        self.0.fingerprint()
    }

    fn channel_stats(&self, on_error: OnError) -> Result<(Vec<f32>, Vec<f32>)> {
        self.0.channel_stats(on_error)
    }

    fn subset(&self, indices: &[usize]) -> Arc<dyn ImageSource> {
        AtSize::wrap(self.0.subset(indices))
    }

    fn to_image_set(&self) -> Result<ImageSet> {
        self.0.to_image_set()
    }

    fn epoch_order(&self, seed: u64, epoch: usize, batch_size: usize) -> Vec<usize> {
        self.0.epoch_order(seed, epoch, batch_size)
    }
}

/// The first `limit` images of `source`, or all of them when `limit` is 0 (`data.train_limit`,
/// `data.test_limit`).
pub fn limited(source: Arc<dyn ImageSource>, limit: usize) -> Arc<dyn ImageSource> {
    if limit > 0 && limit < source.len() {
        source.subset(&(0..limit).collect::<Vec<_>>())
    } else {
        source
    }
}

/// `image` resized to (height, width) as [`ImageSource::to_image_set`] resizes a decoded image
/// (bytes, triangle filter), so a set read at its size and one decoded into memory agree.
fn resize(image: &Image, height: usize, width: usize) -> Image {
    let bytes: Vec<u8> = image
        .data
        .iter()
        .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    let (h, w) = (image.height as u32, image.width as u32);
    let decoded = match image.channels {
        3 => image::RgbImage::from_raw(w, h, bytes).map(image::DynamicImage::ImageRgb8),
        _ => image::GrayImage::from_raw(w, h, bytes).map(image::DynamicImage::ImageLuma8),
    };
    let Some(decoded) = decoded else {
        return image.clone();
    };
    let resized = decoded.resize_exact(
        width as u32,
        height as u32,
        image::imageops::FilterType::Triangle,
    );
    let raw = if image.channels == 3 {
        resized.into_rgb8().into_raw()
    } else {
        resized.into_luma8().into_raw()
    };
    Image::from_bytes(&raw, height, width, image.channels)
}

/// How many images [`sample_stats`] reads: enough for the mean and spread of each channel to
/// two decimals, few enough to take a second or two on a laptop.
pub const STATS_SAMPLE: usize = 1024;

/// An image's pixels as `channels`-channel bytes (RGB or grey), row-major.
pub fn raw_pixels(im: image::DynamicImage, channels: usize) -> Vec<u8> {
    if channels == 3 {
        im.into_rgb8().into_raw()
    } else {
        im.into_luma8().into_raw()
    }
}

/// A decoded image at its own size, as `channels`-channel views take it.
pub fn image_of(im: image::DynamicImage, channels: usize) -> Image {
    let (h, w) = (im.height() as usize, im.width() as usize);
    Image::from_bytes(&raw_pixels(im, channels), h, w, channels)
}

/// `set` (its shape, labels and names given, its pixels empty) filled with the `len` images
/// `decode` gives, each resized to the set's size with the Triangle filter, in parallel: the
/// in-memory copy a streamed set's `to_image_set` makes.
pub fn decoded_into(
    mut set: ImageSet,
    len: usize,
    decode: impl Fn(usize) -> Result<image::DynamicImage> + Sync,
) -> Result<ImageSet> {
    let (height, width, channels) = (set.height, set.width, set.channels);
    let images: Vec<Vec<u8>> = (0..len)
        .into_par_iter()
        .map(|i| {
            let im = decode(i)?.resize_exact(
                width as u32,
                height as u32,
                image::imageops::FilterType::Triangle,
            );
            Ok(raw_pixels(im, channels))
        })
        .collect::<Result<_>>()?;
    set.pixels = images.concat();
    Ok(set)
}

/// Which images of a set of `len` the statistics are taken from: all of them up to
/// [`STATS_SAMPLE`], else a fixed-seed sample (the same for every run on the set), sorted.
pub fn stats_sample(len: usize) -> Vec<usize> {
    if len <= STATS_SAMPLE {
        return (0..len).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x57A7_5A3B);
    let mut picked = sample(&mut rng, len, STATS_SAMPLE).into_vec();
    picked.sort_unstable();
    picked
}

/// Per-channel mean and standard deviation over the pixels of the [`stats_sample`] of
/// `source`; unreadable images are left out under [`OnError::Skip`].
pub fn sample_stats(source: &dyn ImageSource, on_error: OnError) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = source.channels();
    let sums: Vec<(Vec<f64>, Vec<f64>, usize)> = stats_sample(source.len())
        .par_iter()
        .map(|&i| {
            let image = match source.image(i) {
                Ok(image) => image,
                Err(_) if on_error == OnError::Skip => return Ok((vec![0.0; c], vec![0.0; c], 0)),
                Err(e) => return Err(e),
            };
            let (mut sum, mut sq) = (vec![0f64; c], vec![0f64; c]);
            for px in image.data.chunks_exact(c) {
                for (ch, &v) in px.iter().enumerate() {
                    sum[ch] += v as f64;
                    sq[ch] += (v as f64) * (v as f64);
                }
            }
            Ok((sum, sq, image.data.len() / c))
        })
        .collect::<Result<_>>()
        .context("reading the images that normalisation statistics are taken from")?;
    let (mut sum, mut sq, mut n) = (vec![0f64; c], vec![0f64; c], 0usize);
    for (s, q, k) in sums {
        for ch in 0..c {
            sum[ch] += s[ch];
            sq[ch] += q[ch];
        }
        n += k;
    }
    Ok(mean_std(&sum, &sq, n.max(1) as f64))
}

/// Per-channel mean and standard deviation from the sums of the values and of their squares
/// over `n` pixels.
pub(super) fn mean_std(sum: &[f64], sq: &[f64], n: f64) -> (Vec<f32>, Vec<f32>) {
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(s, &m)| ((s / n - (m as f64).powi(2)).max(1e-12)).sqrt() as f32)
        .collect();
    (mean, std)
}

/// Image `index` of `source`, or under [`OnError::Skip`] the next readable one after it (in
/// index order, wrapping), with the reasons of those that were not.
pub fn readable_image(
    source: &dyn ImageSource,
    index: usize,
    on_error: OnError,
) -> Result<(Image, Vec<String>)> {
    crate::core::loader::next_usable(source.len(), index, on_error, "image", |i| source.image(i))
}
