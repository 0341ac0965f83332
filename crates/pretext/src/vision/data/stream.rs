//! Image folders read from disk as the loader asks for them: memory holds the file index
//! (path, byte size, label: about a hundred bytes an image), never the pixels, so a folder of
//! millions of images trains in the memory of a few thousand. Each image is decoded at its own
//! size and the views are cropped from it; `data.image_size` is the size the views come out
//! at.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail};
use rayon::prelude::*;

use super::ImageSet;
use super::folder::{FoundFile, Layout, decode_file, empty_note, layout, most_common};
use super::source::{ImageSource, OnError, decoded_into, image_of, sample_stats, stats_sample};
use crate::vision::views::Image;

/// The training split of an image folder, decoded image by image.
#[derive(Debug, Clone)]
pub struct StreamedFolder {
    root: PathBuf,
    files: Vec<FoundFile>,
    labels: Option<Vec<u32>>,
    class_names: Vec<String>,
    channels: usize,
    size: (usize, usize),
}

impl StreamedFolder {
    /// The training split of the folder `dir`, with views at `size` (height, width) or else
    /// the most common size among a sample of its images; `None` when `dir` holds no image.
    /// Returns the description said to the user too.
    pub fn open(dir: &Path, size: Option<(usize, usize)>) -> Result<Option<(Self, String)>> {
        Ok(Self::open_splits(dir, size)?.map(|(train, _, description)| (train, description)))
    }

    /// As [`Self::open`], with the test split (`test/`) too when there is one, at the training
    /// split's size and channels.
    pub fn open_splits(
        dir: &Path,
        size: Option<(usize, usize)>,
    ) -> Result<Option<(Self, Option<Self>, String)>> {
        let Some(Layout {
            names,
            train,
            test,
            empty,
        }) = layout(dir)?
        else {
            return Ok(None);
        };
        let labelled = !names.is_empty();
        let (labels, files): (Vec<u32>, Vec<FoundFile>) = train.into_iter().unzip();
        // Sizes and colour from the headers of the statistics' sample: reading every header of
        // a large folder would cost as much as the index itself.
        let sample = stats_sample(files.len());
        let headers: Vec<Option<((usize, usize), bool)>> = sample
            .par_iter()
            .map(|&i| header(&files[i].path).ok())
            .collect();
        let Some((size, why, colour)) = sampled_shape(headers, size) else {
            bail!(
                "{}: none of the {} images sampled could be read (the first: {})",
                dir.display(),
                sample.len(),
                files[0].path.display()
            );
        };
        let description = format!(
            "image folder {} ({}{} images, streamed from disk; views at {}x{} ({why}){}{})",
            dir.display(),
            if labelled {
                format!("{} classes, ", names.len())
            } else {
                String::new()
            },
            files.len(),
            size.1,
            size.0,
            if colour { "" } else { "; grey" },
            if labelled {
                empty_note(&empty)
            } else {
                "; no class subfolders: unlabelled, for pretraining".into()
            },
        );
        let folder = StreamedFolder {
            root: dir.to_path_buf(),
            labels: labelled.then_some(labels),
            files,
            class_names: names,
            channels: if colour { 3 } else { 1 },
            size,
        };
        let test = test.map(|test| {
            let (labels, files): (Vec<u32>, Vec<FoundFile>) = test.into_iter().unzip();
            StreamedFolder {
                files,
                labels: Some(labels),
                ..folder.clone_empty()
            }
        });
        let description = match &test {
            Some(t) => format!("{description}; test split: {} images", t.files.len()),
            None => description,
        };
        Ok(Some((folder, test, description)))
    }
}

/// (height, width) and whether the image has colour, from its header alone.
fn header(path: &Path) -> Result<((usize, usize), bool)> {
    header_of(image::ImageReader::open(path)?)
}

/// (height, width) and colour from the header `reader` starts at.
pub(super) fn header_of<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
) -> Result<((usize, usize), bool)> {
    let decoder = reader.with_guessed_format()?.into_decoder()?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    let colour = image::ImageDecoder::color_type(&decoder).has_color();
    Ok(((h as usize, w as usize), colour))
}

/// The view size (the one asked for, else the most common among the sampled `headers`), why,
/// and whether any sampled image has colour; `None` when no header could be read.
pub(super) fn sampled_shape(
    headers: Vec<Option<((usize, usize), bool)>>,
    size: Option<(usize, usize)>,
) -> Option<((usize, usize), &'static str, bool)> {
    let read: Vec<((usize, usize), bool)> = headers.into_iter().flatten().collect();
    if read.is_empty() {
        return None;
    }
    let sizes: Vec<(usize, usize)> = read.iter().map(|(s, _)| *s).collect();
    let colour = read.iter().any(|(_, c)| *c);
    Some(match size {
        Some(s) => (s, "data.image_size", colour),
        None => (
            most_common(&sizes),
            "the most common size in a sample; set data.image_size to choose",
            colour,
        ),
    })
}

impl ImageSource for StreamedFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn channels(&self) -> usize {
        self.channels
    }

    fn size(&self) -> (usize, usize) {
        self.size
    }

    fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn image(&self, i: usize) -> Result<Image> {
        Ok(image_of(self.decode(i)?, self.channels))
    }

    /// The folder's index (relative paths, byte sizes, labels) and the view size, hashed: a
    /// resume checks the same files, without reading a pixel.
    fn fingerprint(&self) -> serde_json::Value {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (i, f) in self.files.iter().enumerate() {
            let relative = f.path.strip_prefix(&self.root).unwrap_or(&f.path);
            h.update(relative.to_string_lossy().as_bytes());
            h.update(&f.bytes.to_le_bytes());
            if let Some(labels) = &self.labels {
                h.update(&labels[i].to_le_bytes());
            }
        }
        serde_json::json!({
            "images": self.files.len(),
            "shape": [self.channels, self.size.0, self.size.1],
            "index_xxh3": format!("{:016x}", h.digest()),
        })
    }

    fn channel_stats(&self, on_error: OnError) -> Result<(Vec<f32>, Vec<f32>)> {
        sample_stats(self, on_error)
    }

    fn subset(&self, indices: &[usize]) -> Arc<dyn ImageSource> {
        Arc::new(StreamedFolder {
            files: indices.iter().map(|&i| self.files[i].clone()).collect(),
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            ..self.clone_empty()
        })
    }

    fn to_image_set(&self) -> Result<ImageSet> {
        let set = ImageSet {
            height: self.size.0,
            width: self.size.1,
            channels: self.channels,
            pixels: Vec::new(),
            labels: self.labels.clone(),
            class_names: self.class_names.clone(),
        };
        decoded_into(set, self.len(), |i| self.decode(i))
    }
}

impl StreamedFolder {
    /// Image `i` decoded; an error names the file.
    fn decode(&self, i: usize) -> Result<image::DynamicImage> {
        decode_file(&self.files[i], true)
    }

    /// The pixels as interleaved bytes of this set's channel count.
    fn clone_empty(&self) -> StreamedFolder {
        StreamedFolder {
            root: self.root.clone(),
            files: Vec::new(),
            labels: None,
            class_names: self.class_names.clone(),
            channels: self.channels,
            size: self.size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::batches::make_views;
    use crate::vision::data::tests::tempdir;
    use crate::vision::views::ViewConfig;

    /// `cat/` and `dog/` of grey PNGs: three 8x8 and one 12x10 in each class.
    fn folder(name: &str) -> PathBuf {
        let dir = tempdir(name);
        for (class, shade) in [("cat", 10u8), ("dog", 200u8)] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            for i in 0..4u8 {
                let (w, h) = if i == 3 { (12, 10) } else { (8, 8) };
                let im = image::GrayImage::from_fn(w, h, |x, y| {
                    image::Luma([shade.wrapping_add((x * 3 + y * 5) as u8 + i)])
                });
                im.save(dir.join(class).join(format!("{i}.png"))).unwrap();
            }
        }
        dir
    }

    #[test]
    fn a_streamed_folder_reads_each_image_at_its_own_size() {
        let dir = folder("stream-sizes");
        let (f, description) = StreamedFolder::open(&dir, None).unwrap().unwrap();
        assert_eq!((f.len(), f.channels(), f.size()), (8, 1, (8, 8)));
        assert!(
            description
                .contains("2 classes, 8 images, streamed from disk; views at 8x8 (the most common"),
            "{description}"
        );
        assert_eq!(f.labels(), Some(&[0, 0, 0, 0, 1, 1, 1, 1][..]));
        assert_eq!(f.class_names(), ["cat", "dog"]);
        let big = f.image(7).unwrap();
        assert_eq!((big.height, big.width), (10, 12));
        assert_eq!(big.data[0], 203.0 / 255.0);
        // data.image_size sets the view size, not the stored one.
        let (g, _) = StreamedFolder::open(&dir, Some((4, 6))).unwrap().unwrap();
        assert_eq!((g.size(), g.image(7).unwrap().height), ((4, 6), 10));
        // A subset keeps labels and reads the same files; to_image_set resizes to the size.
        let sub = g.subset(&[7, 0]);
        assert_eq!(sub.labels(), Some(&[1, 0][..]));
        let set = sub.to_image_set().unwrap();
        assert_eq!((set.len(), set.height, set.width), (2, 4, 6));
        // Streamed and in memory, the same images give the same views where no resize
        // intervenes.
        let memory = crate::vision::data::folder::load(&dir, None)
            .unwrap()
            .unwrap();
        let pipes = [ViewConfig::simclr().build((8, 8), &[0.5], &[0.25])];
        let same = [0, 1, 2, 4, 5, 6];
        let a = make_views(&f, &pipes, &same, 3, 1, OnError::Stop).unwrap();
        let b = make_views(&memory.train, &pipes, &same, 3, 1, OnError::Stop).unwrap();
        assert_eq!(a.0, b.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn webp_images_are_read_beside_png_and_jpeg() {
        let dir = folder("stream-webp");
        // The image crate writes WebP losslessly: decoded, it gives back exactly these pixels.
        let im = image::RgbImage::from_fn(9, 7, |x, y| {
            image::Rgb([(x * 20) as u8, (y * 30) as u8, 77])
        });
        im.save(dir.join("dog/4.webp")).unwrap();
        let (f, _) = StreamedFolder::open(&dir, None).unwrap().unwrap();
        assert_eq!(
            (f.len(), f.channels()),
            (9, 3),
            "the WebP is indexed, in colour"
        );
        assert_eq!(f.labels().unwrap()[8], 1);
        let read = f.image(8).unwrap();
        let expected = image_of(image::DynamicImage::ImageRgb8(im), 3);
        assert_eq!((read.height, read.width), (7, 9));
        assert_eq!(read.data, expected.data);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreadable_images_are_skipped_and_counted_or_stop_the_run() {
        let dir = folder("stream-errors");
        let (f, _) = StreamedFolder::open(&dir, None).unwrap().unwrap();
        let fingerprint = f.fingerprint();
        let pipes = [ViewConfig::simclr().build((8, 8), &[0.5], &[0.25])];
        // A truncated PNG in place of a good one: the index's byte size no longer matches.
        let png = dir.join("cat/1.png");
        let bytes = std::fs::read(&png).unwrap();
        std::fs::write(&png, &bytes[..bytes.len() / 2]).unwrap();
        let err = format!("{:#}", f.image(1).unwrap_err());
        assert!(
            err.contains("cat/1.png") && err.contains("changed since"),
            "{err}"
        );
        // Indexed afresh, the truncated file is a decoding error naming the file.
        let (f, _) = StreamedFolder::open(&dir, None).unwrap().unwrap();
        assert_ne!(f.fingerprint(), fingerprint);
        let err = format!("{:#}", f.image(1).unwrap_err());
        assert!(
            err.contains("cannot decode image") && err.contains("cat/1.png"),
            "{err}"
        );
        let (views, _, skipped) = make_views(&f, &pipes, &[0, 1, 5], 3, 0, OnError::Skip).unwrap();
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("cat/1.png"), "{skipped:?}");
        // Image 1 was replaced by the next readable one, so the batch keeps its size.
        assert_eq!(views[0].len(), 3 * 64);
        let err = format!(
            "{:#}",
            make_views(&f, &pipes, &[0, 1], 3, 0, OnError::Stop).unwrap_err()
        );
        assert!(
            err.contains("cat/1.png") && err.contains("on_error"),
            "{err}"
        );
        // A JPEG cut short decodes to grey without complaint from the decoder: refused too.
        let jpeg = dir.join("dog/9.jpg");
        image::GrayImage::from_pixel(16, 16, image::Luma([90]))
            .save(&jpeg)
            .unwrap();
        let (f, _) = StreamedFolder::open(&dir, None).unwrap().unwrap();
        assert_eq!(f.files[8].path, jpeg);
        assert_eq!(f.image(8).unwrap().width, 16);
        let bytes = std::fs::read(&jpeg).unwrap();
        std::fs::write(&jpeg, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let (f, _) = StreamedFolder::open(&dir, None).unwrap().unwrap();
        let err = format!("{:#}", f.image(8).unwrap_err());
        assert!(err.contains("dog/9.jpg: truncated JPEG"), "{err}");
        // The statistics leave it out under "skip" and stop under "stop".
        assert!(f.channel_stats(OnError::Skip).is_ok());
        assert!(f.channel_stats(OnError::Stop).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn evaluation_reads_streamed_splits_as_the_in_memory_loader_does() {
        let dir = tempdir("stream-eval");
        let base = folder("stream-eval-base");
        std::fs::rename(&base, dir.join("train")).unwrap();
        for class in ["cat", "dog"] {
            std::fs::create_dir_all(dir.join("test").join(class)).unwrap();
            for i in [0, 3] {
                let name = format!("{i}.png");
                std::fs::copy(
                    dir.join("train").join(class).join(&name),
                    dir.join("test").join(class).join(&name),
                )
                .unwrap();
            }
        }
        let reading = crate::vision::config::DataConfig {
            image_size: vec![6, 5],
            ..Default::default()
        };
        let streamed = crate::vision::data::open_splits(Some(&dir), &reading, (8, 8)).unwrap();
        assert!(
            streamed.description.contains("test split: 4 images"),
            "{}",
            streamed.description
        );
        let memory = crate::vision::data::load_dir(&dir, Some((6, 5))).unwrap();
        let test = streamed.require_test().unwrap();
        for (source, set) in [
            (&streamed.train, &memory.train),
            (test, memory.test.as_ref().unwrap()),
        ] {
            assert_eq!((source.len(), source.size()), (set.len(), (6, 5)));
            assert_eq!(source.labels(), set.labels.as_deref());
            for i in 0..set.len() {
                // Resized from its own size (8x8 or 12x10) as the in-memory loader resizes.
                assert_eq!(
                    source.image(i).unwrap(),
                    ImageSource::image(set, i).unwrap()
                );
            }
        }
        // Without data.image_size, a streamed set is read at the checkpoint's size.
        let at_checkpoint = crate::vision::data::open_splits(
            Some(&dir),
            &crate::vision::config::DataConfig::default(),
            (8, 8),
        )
        .unwrap();
        assert_eq!(at_checkpoint.train.image(7).unwrap().height, 8);
        // Shards written from the folder carry their test split along.
        let out = dir.join("shards");
        crate::vision::data::shards::shards_from_folder(&dir, &out, 3, 0).unwrap();
        let shards = crate::vision::data::open_splits(Some(&out), &reading, (8, 8)).unwrap();
        assert_eq!(shards.train.len(), 8);
        assert_eq!(shards.require_test().unwrap().len(), 4);
        assert_eq!(shards.require_test().unwrap().size(), (6, 5));
        assert!(
            shards
                .description
                .contains("test split: 2 shards, 4 samples"),
            "{}",
            shards.description
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
