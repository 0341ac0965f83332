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

use super::index::{FolderIndex, IndexedFile, default_cache_dir};
use super::{ImageSet, Splits};

/// Class folders under `dir` holding at least one image, with their files; the names of the
/// subfolders without any, which are skipped (and said so); and the images directly in `dir`.
type ClassFiles = (Vec<(String, Vec<PathBuf>)>, Vec<String>, Vec<PathBuf>);
fn class_files(dir: &Path) -> Result<ClassFiles> {
    let (index, _) = FolderIndex::open(dir, default_cache_dir().as_deref())?;
    let paths = |folder: &Path, files: &[IndexedFile]| -> Vec<PathBuf> {
        files.iter().map(|f| folder.join(&f.name)).collect()
    };
    let classes = index
        .classes
        .iter()
        .map(|c| (c.name.clone(), paths(&dir.join(&c.name), &c.files)))
        .collect();
    Ok((classes, index.empty, paths(dir, &index.loose)))
}

/// The decoded images of `classes` at `target` (height, width) or else the most common size;
/// how many had to be resized, and how many grey ones became RGB beside colour ones.
fn decode_set(
    classes: &[(String, Vec<PathBuf>)],
    names: &[String],
    target: Option<(usize, usize)>,
) -> Result<(ImageSet, usize, usize)> {
    let files: Vec<(u32, &PathBuf)> = classes
        .iter()
        .flat_map(|(name, files)| {
            let label = names.iter().position(|n| n == name).unwrap_or(0) as u32;
            files.iter().map(move |f| (label, f))
        })
        .collect();
    let decoded: Vec<image::DynamicImage> = files
        .par_iter()
        .map(|(_, f)| {
            image::open(f).with_context(|| format!("cannot decode image {}", f.display()))
        })
        .collect::<Result<_>>()?;
    if decoded.is_empty() {
        bail!("no images");
    }
    // The most common size (the first seen among equally common ones).
    let mut counts: Vec<((u32, u32), usize)> = Vec::new();
    for im in &decoded {
        let size = (im.width(), im.height());
        match counts.iter_mut().find(|(s, _)| *s == size) {
            Some((_, n)) => *n += 1,
            None => counts.push((size, 1)),
        }
    }
    let ((w, h), _) = counts
        .iter()
        .copied()
        .fold(counts[0], |best, c| if c.1 > best.1 { c } else { best });
    let (height, width) = target.unwrap_or((h as usize, w as usize));
    let resized = decoded
        .iter()
        .filter(|im| (im.height() as usize, im.width() as usize) != (height, width))
        .count();
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

/// Read an image folder at `target` (height, width; `None`: the most common size), or `None`
/// when `dir` has no class subfolders with images.
pub fn load(dir: &Path, target: Option<(usize, usize)>) -> Result<Option<Splits>> {
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
        return unlabelled(dir, loose, target);
    }
    let names: Vec<String> = train_classes.iter().map(|(n, _)| n.clone()).collect();
    let (train, mut resized, greys) = decode_set(&train_classes, &names, target)?;
    let mut total = train.len();
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
            let (mut test, test_resized, _) =
                decode_set(&classes, &names, Some((train.height, train.width)))?;
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
    let note = if empty.is_empty() {
        note
    } else {
        format!(
            "{note}; skipped {} folder(s) without images: {}",
            empty.len(),
            empty.join(", ")
        )
    };
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
/// pretraining (evaluation asks for labels and says so); `None` when it holds no image either.
fn unlabelled(
    dir: &Path,
    files: Vec<PathBuf>,
    target: Option<(usize, usize)>,
) -> Result<Option<Splits>> {
    if files.is_empty() {
        return Ok(None);
    }
    let (mut train, resized, _) = decode_set(&[(String::new(), files)], &[], target)?;
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
