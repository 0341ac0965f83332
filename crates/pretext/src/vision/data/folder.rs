//! Image folders: `DIR/<class>/*.png|jpg`, or `DIR/train/<class>/...` and `DIR/test/<class>/...`.
//!
//! Class names are the sorted subfolder names. Images are decoded in parallel; a folder of mixed
//! sizes is resized to `data.image_size` when set, else to its most common size (the test split
//! to the training split's), and the data description says how many images were resized to
//! what. Grayscale folders stay one
//! channel; a folder with any colour image becomes RGB.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use super::index::{FolderIndex, IndexedFile};
use super::{ImageSet, Splits};
use crate::core::cache::default_cache_dir;

/// An image file the index found: its path and byte size.
#[derive(Debug, Clone)]
pub(super) struct FoundFile {
    pub path: PathBuf,
    pub bytes: u64,
}

/// Decode the image file `f`. The error names the file: unreadable, changed since it was
/// indexed (another byte size, checked when `indexed_size` is set: a streamed run reads each file
/// long after listing it, while a set read into memory at once reads the files as they are),
/// truncated, or not an image the decoders know.
pub(super) fn decode_file(f: &FoundFile, indexed_size: bool) -> Result<image::DynamicImage> {
    let path = f.path.display();
    let bytes = std::fs::read(&f.path).with_context(|| format!("cannot read {path}"))?;
    if indexed_size && bytes.len() as u64 != f.bytes {
        bail!(
            "{path}: {} bytes, {} when the folder was indexed: the file changed since (an index \
             is rebuilt when a file is added to or removed from its folder; `touch` the folder \
             to rebuild it now)",
            bytes.len(),
            f.bytes
        );
    }
    decode_bytes(
        &bytes,
        &path.to_string(),
        image::ImageFormat::from_path(&f.path).ok(),
    )
}

/// Decode the bytes of one image file, named `name` in errors, in `format` (else guessed from
/// the bytes). A JPEG cut short is refused.
pub(super) fn decode_bytes(
    bytes: &[u8],
    name: &str,
    format: Option<image::ImageFormat>,
) -> Result<image::DynamicImage> {
    // The JPEG decoder fills a file cut short with grey instead of failing; a whole JPEG ends
    // with the end-of-image marker (0xFF 0xD9), which cannot occur inside the coded data, so
    // one missing from the file's tail means it was cut (trailing padding is allowed).
    if bytes.starts_with(&[0xFF, 0xD8]) {
        let tail = &bytes[bytes.len().saturating_sub(1024)..];
        if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
            bail!("cannot decode image {name}: truncated JPEG (no end-of-image marker)");
        }
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    match format {
        Some(format) => reader.set_format(format),
        None => reader = reader.with_guessed_format()?,
    }
    reader
        .decode()
        .with_context(|| format!("cannot decode image {name}"))
}

/// Class folders under `dir` holding at least one image, with their files; the names of the
/// subfolders without any, which are skipped (and said so); and the images directly in `dir`.
type ClassFiles = (Vec<(String, Vec<FoundFile>)>, Vec<String>, Vec<FoundFile>);
fn class_files(dir: &Path) -> Result<ClassFiles> {
    let (index, _) = FolderIndex::open(dir, default_cache_dir().as_deref())?;
    let found = |folder: &Path, files: &[IndexedFile]| -> Vec<FoundFile> {
        files
            .iter()
            .map(|f| FoundFile {
                path: folder.join(&f.name),
                bytes: f.bytes,
            })
            .collect()
    };
    let classes = index
        .classes
        .iter()
        .map(|c| (c.name.clone(), found(&dir.join(&c.name), &c.files)))
        .collect();
    Ok((classes, index.empty, found(dir, &index.loose)))
}

/// What an image folder holds: its class names (sorted; none for a flat, unlabelled folder),
/// the files of each split with their labels, and the subfolders skipped for holding no image.
pub(super) struct Layout {
    pub names: Vec<String>,
    pub train: Vec<(u32, FoundFile)>,
    pub test: Option<Vec<(u32, FoundFile)>>,
    pub empty: Vec<String>,
}

impl Layout {
    pub fn labelled(&self) -> bool {
        !self.names.is_empty()
    }
}

/// The layout of `dir` (class subfolders, optionally under `train/` and `test/`, or a flat
/// folder of images), or `None` when it holds no image.
pub(super) fn layout(dir: &Path) -> Result<Option<Layout>> {
    let (train_dir, test_dir) = if dir.join("train").is_dir() {
        (
            dir.join("train"),
            Some(dir.join("test")).filter(|p| p.is_dir()),
        )
    } else {
        (dir.to_path_buf(), None)
    };
    let (train_classes, empty, loose) = class_files(&train_dir)?;
    if train_classes.is_empty() {
        if loose.is_empty() {
            return Ok(None);
        }
        return Ok(Some(Layout {
            names: Vec::new(),
            train: loose.into_iter().map(|f| (0, f)).collect(),
            test: None,
            empty,
        }));
    }
    let names: Vec<String> = train_classes.iter().map(|(n, _)| n.clone()).collect();
    let labelled = |classes: Vec<(String, Vec<FoundFile>)>| -> Vec<(u32, FoundFile)> {
        classes
            .into_iter()
            .flat_map(|(name, files)| {
                let label = names.iter().position(|n| *n == name).unwrap_or(0) as u32;
                files.into_iter().map(move |f| (label, f))
            })
            .collect()
    };
    let test = match test_dir {
        Some(t) => {
            let (classes, _, _) = class_files(&t)?;
            if let Some((unknown, _)) = classes.iter().find(|(n, _)| !names.contains(n)) {
                let why = if empty.contains(unknown) {
                    "holds no images (png, jpg, jpeg) in the train split"
                } else {
                    "does not exist in the train split"
                };
                bail!("{}: class folder '{unknown}' {why}", t.display());
            }
            Some(labelled(classes))
        }
        None => None,
    };
    Ok(Some(Layout {
        train: labelled(train_classes),
        test,
        empty,
        names,
    }))
}

/// A note on the subfolders skipped for holding no image, for the data description.
pub(super) fn empty_note(empty: &[String]) -> String {
    if empty.is_empty() {
        String::new()
    } else {
        format!(
            "; skipped {} folder(s) without images: {}",
            empty.len(),
            empty.join(", ")
        )
    }
}

/// The decoded images of `files` at `target` (height, width) or else the most common size;
/// how many had to be resized, and how many grey ones became RGB beside colour ones.
fn decode_set(
    files: &[(u32, FoundFile)],
    names: &[String],
    target: Option<(usize, usize)>,
) -> Result<(ImageSet, usize, usize)> {
    let decoded: Vec<image::DynamicImage> = files
        .par_iter()
        .map(|(_, f)| decode_file(f, false))
        .collect::<Result<_>>()?;
    if decoded.is_empty() {
        bail!("no images");
    }
    let sizes: Vec<(usize, usize)> = decoded
        .iter()
        .map(|im| (im.height() as usize, im.width() as usize))
        .collect();
    let (height, width) = target.unwrap_or_else(|| most_common(&sizes));
    let resized = sizes.iter().filter(|&&s| s != (height, width)).count();
    let color = decoded.iter().any(|im| im.color().has_color());
    let channels = if color { 3 } else { 1 };
    let greys = if color {
        decoded.iter().filter(|im| !im.color().has_color()).count()
    } else {
        0
    };
    let mut pixels = Vec::with_capacity(decoded.len() * width * height * channels);
    for im in &decoded {
        let im = if im.width() as usize != width || im.height() as usize != height {
            im.resize_exact(
                width as u32,
                height as u32,
                image::imageops::FilterType::Triangle,
            )
        } else {
            im.clone()
        };
        if color {
            pixels.extend_from_slice(im.to_rgb8().as_raw());
        } else {
            pixels.extend_from_slice(im.to_luma8().as_raw());
        }
    }
    let set = ImageSet {
        height,
        width,
        channels,
        pixels,
        labels: Some(files.iter().map(|(l, _)| *l).collect()),
        class_names: names.to_vec(),
    };
    Ok((set, resized, greys))
}

/// The most common of `sizes` (the first seen among equally common ones).
pub(super) fn most_common(sizes: &[(usize, usize)]) -> (usize, usize) {
    let mut counts: Vec<((usize, usize), usize)> = Vec::new();
    for &size in sizes {
        match counts.iter_mut().find(|(s, _)| *s == size) {
            Some((_, n)) => *n += 1,
            None => counts.push((size, 1)),
        }
    }
    counts
        .iter()
        .copied()
        .fold(counts[0], |best, c| if c.1 > best.1 { c } else { best })
        .0
}

/// Read an image folder into memory at `target` (height, width; `None`: the most common
/// size), or `None` when `dir` has no image.
pub fn load(dir: &Path, target: Option<(usize, usize)>) -> Result<Option<Splits>> {
    let Some(layout) = layout(dir)? else {
        return Ok(None);
    };
    if !layout.labelled() {
        return unlabelled(dir, &layout.train, target);
    }
    let names = &layout.names;
    let (train, mut resized, greys) = decode_set(&layout.train, names, target)?;
    let mut total = train.len();
    let test = match &layout.test {
        Some(files) => {
            let (mut test, test_resized, _) =
                decode_set(files, names, Some((train.height, train.width)))?;
            total += test.len();
            resized += test_resized;
            if test.channels != train.channels {
                // A grey test split of a colour training split (or the reverse).
                test = conform(test, train.height, train.width, train.channels);
            }
            Some(test)
        }
        None => None,
    };
    let note = if resized > 0 {
        let why = if target.is_some() {
            "data.image_size"
        } else {
            "the most common size; set data.image_size to choose"
        };
        format!(
            "; {resized} of {total} images resized to {}x{} ({why})",
            train.width, train.height
        )
    } else {
        String::new()
    };
    let note = if greys > 0 {
        format!("{note}; {greys} grey images read as RGB beside the colour ones")
    } else {
        note
    };
    let note = format!("{note}{}", empty_note(&layout.empty));
    Ok(Some(Splits {
        description: format!(
            "image folder {} ({} classes{note})",
            dir.display(),
            names.len()
        ),
        train,
        test,
    }))
}

/// A flat folder of images without class subfolders: a training split without labels, for
/// pretraining (evaluation asks for labels and says so).
fn unlabelled(
    dir: &Path,
    files: &[(u32, FoundFile)],
    target: Option<(usize, usize)>,
) -> Result<Option<Splits>> {
    let (mut train, resized, _) = decode_set(files, &[], target)?;
    train.labels = None;
    let note = if resized > 0 {
        format!(", {resized} resized to {}x{}", train.width, train.height)
    } else {
        String::new()
    };
    Ok(Some(Splits {
        description: format!(
            "image folder {} ({} images without class subfolders{note}: unlabelled, for \
             pretraining)",
            dir.display(),
            train.len()
        ),
        train,
        test: None,
    }))
}

/// `set` resized to `height` x `width` and recoloured to `channels`.
pub(super) fn conform(set: ImageSet, height: usize, width: usize, channels: usize) -> ImageSet {
    let mut pixels = Vec::with_capacity(set.len() * height * width * channels);
    for i in 0..set.len() {
        let raw = set.image(i).to_vec();
        let im: image::DynamicImage = if set.channels == 3 {
            image::RgbImage::from_raw(set.width as u32, set.height as u32, raw).map(Into::into)
        } else {
            image::GrayImage::from_raw(set.width as u32, set.height as u32, raw).map(Into::into)
        }
        .unwrap_or_default();
        let im = if (set.height, set.width) == (height, width) {
            im
        } else {
            im.resize_exact(
                width as u32,
                height as u32,
                image::imageops::FilterType::Triangle,
            )
        };
        if channels == 3 {
            pixels.extend_from_slice(im.to_rgb8().as_raw());
        } else {
            pixels.extend_from_slice(im.to_luma8().as_raw());
        }
    }
    ImageSet {
        height,
        width,
        channels,
        pixels,
        ..set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_with_classes_and_a_corrupt_image() {
        let dir = crate::vision::data::tests::tempdir("folder");
        for (class, shade) in [("cat", 10u8), ("dog", 200u8)] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            for i in 0..3 {
                let im = image::GrayImage::from_pixel(6 + i, 5, image::Luma([shade]));
                im.save(dir.join(class).join(format!("{i}.png"))).unwrap();
            }
        }
        let s = load(&dir, None).unwrap().unwrap();
        assert_eq!(s.train.len(), 6);
        assert_eq!((s.train.height, s.train.width, s.train.channels), (5, 6, 1));
        assert!(
            s.description.contains("4 of 6 images resized to 6x5"),
            "{}",
            s.description
        );
        assert_eq!(s.train.class_names, vec!["cat", "dog"]);
        assert_eq!(s.train.labels.as_deref(), Some(&[0, 0, 0, 1, 1, 1][..]));
        assert_eq!(s.train.image(4)[0], 200);
        // The most common size wins, not the first file's.
        for class in ["cat", "dog"] {
            for i in 3..6 {
                let im = image::GrayImage::from_pixel(8, 8, image::Luma([9]));
                im.save(dir.join(class).join(format!("{i}.png"))).unwrap();
            }
        }
        let s = load(&dir, None).unwrap().unwrap();
        assert_eq!((s.train.height, s.train.width), (8, 8));
        assert!(
            s.description.contains("6 of 12 images resized to 8x8"),
            "{}",
            s.description
        );
        // data.image_size chooses the size instead.
        let s = load(&dir, Some((4, 6))).unwrap().unwrap();
        assert_eq!((s.train.height, s.train.width, s.train.len()), (4, 6, 12));
        assert_eq!(s.train.pixels.len(), 12 * 4 * 6);
        assert!(
            s.description
                .contains("12 of 12 images resized to 6x4 (data.image_size)"),
            "{}",
            s.description
        );
        // An empty class folder is skipped and said so; a test split with that class says why.
        std::fs::create_dir_all(dir.join("eel")).unwrap();
        let s = load(&dir, None).unwrap().unwrap();
        assert_eq!(s.train.class_names, vec!["cat", "dog"]);
        assert!(
            s.description
                .contains("skipped 1 folder(s) without images: eel"),
            "{}",
            s.description
        );
        std::fs::remove_dir(dir.join("eel")).unwrap();
        // One colour image makes the set RGB, and the description says the rest were grey.
        let red = image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]));
        red.save(dir.join("cat").join("red.png")).unwrap();
        let s = load(&dir, None).unwrap().unwrap();
        assert_eq!(s.train.channels, 3);
        assert!(
            s.description.contains("12 grey images read as RGB"),
            "{}",
            s.description
        );
        std::fs::remove_file(dir.join("cat").join("red.png")).unwrap();
        std::fs::write(dir.join("dog").join("broken.png"), b"not a png").unwrap();
        let err = format!("{:#}", load(&dir, None).unwrap_err());
        assert!(err.contains("broken.png"), "{err}");
    }

    #[test]
    fn a_flat_folder_is_an_unlabelled_set_to_pretrain_on() {
        let dir = crate::vision::data::tests::tempdir("flat-folder");
        assert!(load(&dir, None).unwrap().is_none(), "no images at all");
        for i in 0..4u8 {
            let im = image::GrayImage::from_pixel(5, 5, image::Luma([i * 40]));
            im.save(dir.join(format!("{i}.png"))).unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
        let s = load(&dir, None).unwrap().unwrap();
        assert_eq!((s.train.len(), s.train.labels.as_ref()), (4, None));
        assert!(s.test.is_none());
        assert!(s.description.contains("unlabelled"), "{}", s.description);
        assert_eq!(s.train.image(3)[0], 120);
        let err = s.train.require_labels().unwrap_err().to_string();
        assert!(err.contains("no labels"), "{err}");
    }
}
