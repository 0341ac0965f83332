//! Datasets: images decoded once into memory as bytes, with optional labels.
//!
//! Everything downstream (views, loaders, evaluation) reads an [`ImageSet`], whatever the file
//! format was. Readers live in their own modules; [`load_dir`] inspects a folder and says which
//! reader it chose.

pub mod cifar;
pub mod digit_sheet;
pub mod folder;
pub mod idx;
pub mod index;
pub mod letters;
pub mod shards;
pub mod source;
pub mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

pub use source::{ImageSource, OnError};
use stream::StreamedFolder;

/// A set of equally sized images stored as interleaved `HWC` bytes.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub height: usize,
    pub width: usize,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    pub pixels: Vec<u8>,
    /// One label per image when the set is labelled.
    pub labels: Option<Vec<u32>>,
    pub class_names: Vec<String>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.pixels.len() / self.image_len()
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Size, shape and an xxh3 hash of the pixels and labels: what `--resume` checks to continue
    /// on the same data (whatever folder or format it was read from).
    pub fn fingerprint(&self) -> serde_json::Value {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&self.pixels);
        for l in self.labels.iter().flatten() {
            h.update(&l.to_le_bytes());
        }
        serde_json::json!({
            "images": self.len(),
            "shape": [self.channels, self.height, self.width],
            "xxh3": format!("{:016x}", h.digest()),
        })
    }

    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[index * n..(index + 1) * n]
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len().max(
            self.labels
                .as_ref()
                .and_then(|l| l.iter().max())
                .map_or(0, |&m| m as usize + 1),
        )
    }

    /// The labels, or an error saying that this set has none.
    pub fn require_labels(&self) -> Result<&[u32]> {
        self.labels
            .as_deref()
            .context("this dataset has no labels; evaluation needs a labelled train and test split")
    }

    /// The first `limit` images, or all of them when `limit` is 0 (the convention of the
    /// config's `data.train_limit` and `data.test_limit`).
    pub fn limited(&self, limit: usize) -> ImageSet {
        if limit > 0 {
            self.take(limit)
        } else {
            self.clone()
        }
    }

    /// The first `n` images (all of them when `n` is larger).
    pub fn take(&self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        ImageSet {
            pixels: self.pixels[..n * self.image_len()].to_vec(),
            labels: self.labels.as_ref().map(|l| l[..n].to_vec()),
            ..self.clone_shape()
        }
    }

    /// Images at the given indices, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            pixels,
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            ..self.clone_shape()
        }
    }

    fn clone_shape(&self) -> ImageSet {
        ImageSet {
            height: self.height,
            width: self.width,
            channels: self.channels,
            pixels: Vec::new(),
            labels: None,
            class_names: self.class_names.clone(),
        }
    }

    /// Per-channel mean and standard deviation of the pixels scaled to [0, 1].
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let c = self.channels;
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for (i, &p) in self.pixels.iter().enumerate() {
            let v = p as f64 / 255.0;
            sum[i % c] += v;
            sq[i % c] += v * v;
        }
        source::mean_std(&sum, &sq, (self.pixels.len() / c).max(1) as f64)
    }
}

/// A train split and, where the source has one, a test split.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: ImageSet,
    pub test: Option<ImageSet>,
    /// What was found, for the user: "IDX (MNIST layout) in DIR", ...
    pub description: String,
}

impl Splits {
    /// Name the classes of both splits.
    fn with_class_names(mut self, names: &[&str]) -> Splits {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        if let Some(t) = self.test.as_mut() {
            t.class_names = names.clone();
        }
        self.train.class_names = names;
        self
    }

    /// Both splits at `size` (height, width), said in the description; as they are when
    /// `None` or already that size.
    fn resized(mut self, size: Option<(usize, usize)>) -> Splits {
        let Some((height, width)) = size else {
            return self;
        };
        let (h0, w0) = (self.train.height, self.train.width);
        if (h0, w0) == (height, width) {
            return self;
        }
        let channels = self.train.channels;
        self.train = folder::conform(self.train, height, width, channels);
        self.test = self
            .test
            .map(|t| folder::conform(t, height, width, channels));
        self.description = format!(
            "{}; resized from {w0}x{h0} to {width}x{height} (data.image_size)",
            self.description
        );
        self
    }

    pub fn require_test(&self) -> Result<&ImageSet> {
        self.test
            .as_ref()
            .with_context(|| format!("{} has no test split", self.description))
    }
}

const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The embedded default: a class-balanced Fashion-MNIST subset (1,000 train and 200 test images
/// per class, MIT licence, see `data/fashion-mnist-subset/LICENSE`).
pub fn embedded_fashion_mnist() -> Result<Splits> {
    const TRAIN_IMAGES: &[u8] =
        include_bytes!("../../../../../data/fashion-mnist-subset/train-images-idx3-ubyte.gz");
    const TRAIN_LABELS: &[u8] =
        include_bytes!("../../../../../data/fashion-mnist-subset/train-labels-idx1-ubyte.gz");
    const TEST_IMAGES: &[u8] =
        include_bytes!("../../../../../data/fashion-mnist-subset/t10k-images-idx3-ubyte.gz");
    const TEST_LABELS: &[u8] =
        include_bytes!("../../../../../data/fashion-mnist-subset/t10k-labels-idx1-ubyte.gz");
    let train = idx_pair(
        idx::parse_idx(TRAIN_IMAGES)?,
        Some(idx::parse_idx(TRAIN_LABELS)?),
        "embedded train",
    )?;
    let test = idx_pair(
        idx::parse_idx(TEST_IMAGES)?,
        Some(idx::parse_idx(TEST_LABELS)?),
        "embedded test",
    )?;
    let splits = Splits {
        train,
        test: Some(test),
        description: "embedded Fashion-MNIST subset (10,000 train / 2,000 test)".into(),
    };
    Ok(splits.with_class_names(&FASHION_CLASSES))
}

/// Combine an image array `[n, h, w]` or `[n, h, w, c]` with a label array `[n]` (none:
/// unlabelled images, for pretraining).
fn idx_pair(images: idx::IdxArray, labels: Option<idx::IdxArray>, what: &str) -> Result<ImageSet> {
    let (n, height, width, channels) = match images.dims[..] {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c] if c == 1 || c == 3 => (n, h, w, c),
        _ => bail!(
            "{what}: image array has dimensions {:?}; expected [n, height, width] or [n, height, width, 1|3]",
            images.dims
        ),
    };
    if let Some(labels) = &labels {
        if labels.dims.len() != 1 {
            bail!(
                "{what}: label array has dimensions {:?}; expected [n]",
                labels.dims
            );
        }
        if labels.dims[0] != n {
            bail!("{what}: {n} images but {} labels", labels.dims[0]);
        }
    }
    if n == 0 {
        bail!("{what}: the file holds no images");
    }
    Ok(ImageSet {
        height,
        width,
        channels,
        pixels: images.data,
        labels: labels.map(|l| l.data.iter().map(|&l| l as u32).collect()),
        class_names: Vec::new(),
    })
}

fn find_idx(dir: &Path, stem: &str) -> Option<std::path::PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// Read the MNIST layout: `train-images-idx3-ubyte[.gz]` and friends.
fn load_mnist_layout(dir: &Path) -> Result<Option<Splits>> {
    let Some(train_images) = find_idx(dir, "train-images-idx3-ubyte") else {
        return Ok(None);
    };
    let labelled = |images: &Path, labels_stem: &str| -> Result<(ImageSet, PathBuf)> {
        let labels = find_idx(dir, labels_stem).with_context(|| {
            format!(
                "{} exists but {labels_stem}[.gz] is missing",
                images.display()
            )
        })?;
        let set = idx_pair(
            idx::read_idx(images)?,
            Some(idx::read_idx(&labels)?),
            &format!("{} + {}", images.display(), labels.display()),
        )?;
        Ok((set, labels))
    };
    // Training images without labels are a set to pretrain on; evaluation asks for labels.
    let train_labels = find_idx(dir, "train-labels-idx1-ubyte");
    // A test split is read unlabelled too when neither split has labels; labels for only
    // one of the two are a layout error.
    let test = match find_idx(dir, "t10k-images-idx3-ubyte") {
        Some(p) if train_labels.is_none() && find_idx(dir, "t10k-labels-idx1-ubyte").is_none() => {
            let what = p.display().to_string();
            Some((idx_pair(idx::read_idx(&p)?, None, &what)?, p))
        }
        Some(p) => Some(labelled(&p, "t10k-labels-idx1-ubyte")?),
        None => None,
    };
    let (train, train_labels) = match train_labels {
        Some(_) => {
            let (set, file) = labelled(&train_images, "train-labels-idx1-ubyte")?;
            (set, Some(file))
        }
        None => {
            let what = train_images.display().to_string();
            (idx_pair(idx::read_idx(&train_images)?, None, &what)?, None)
        }
    };
    // IDX files carry no class names: a `classes.txt` beside them (one per line, as `pretext
    // data letters` writes) gives them; Fashion-MNIST's are known.
    let names_file = dir.join("classes.txt");
    let names: Option<Vec<String>> = if names_file.is_file() {
        let text = std::fs::read_to_string(&names_file)
            .with_context(|| format!("cannot read {}", names_file.display()))?;
        Some(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        )
    } else if dir.to_string_lossy().to_lowercase().contains("fashion") {
        Some(FASHION_CLASSES.map(String::from).to_vec())
    } else {
        None
    };
    let mut all_labels: Vec<u32> = train.labels.clone().unwrap_or_default();
    if let Some((t, _)) = &test {
        all_labels.extend(t.labels.iter().flatten());
    }
    let classes = names.as_ref().map(Vec::len);
    if let Some(file) = &train_labels {
        check_label_range(train.labels.as_deref(), &all_labels, classes, file)?;
    }
    if let Some((t, file)) = &test {
        check_label_range(t.labels.as_deref(), &all_labels, classes, file)?;
    }
    let unlabelled = if train_labels.is_none() {
        " (no train-labels-idx1-ubyte: unlabelled, for pretraining)"
    } else {
        ""
    };
    let splits = Splits {
        description: format!("IDX files (MNIST layout) in {}{unlabelled}", dir.display()),
        train,
        test: test.map(|(set, _)| set),
    };
    Ok(Some(match &names {
        Some(names) => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            splits.with_class_names(&names)
        }
        None => splits,
    }))
}

/// A label outside the classes is a corrupt byte, not a class. With class names (`classes`),
/// every label must name one; without, a label at or past twice the number of distinct labels
/// in use (`all`: both splits) cannot be one of them.
fn check_label_range(
    labels: Option<&[u32]>,
    all: &[u32],
    classes: Option<usize>,
    file: &Path,
) -> Result<()> {
    let Some(labels) = labels else {
        return Ok(());
    };
    let (limit, why) = match classes {
        Some(n) => (n, format!("there are {n} class names")),
        None => {
            let distinct = all.iter().collect::<std::collections::HashSet<_>>().len();
            (
                2 * distinct,
                format!(
                    "the labels take {distinct} distinct values (a classes.txt beside the files \
                     names the classes)"
                ),
            )
        }
    };
    if let Some(i) = labels.iter().position(|&l| l as usize >= limit) {
        bail!(
            "{}: label {} at index {i} is outside the classes ({why}); a corrupt file?",
            file.display(),
            labels[i]
        );
    }
    Ok(())
}

/// `--data DIR` is a folder that can be listed; the error says what it is instead.
fn check_data_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("--data {}: a file, not a folder of images", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("--data {}: no such folder", dir.display())
        }
        Err(e) => bail!("--data {}: {e}", dir.display()),
    }
    if let Err(e) = std::fs::read_dir(dir) {
        bail!("--data {}: cannot list it: {e}", dir.display());
    }
    Ok(())
}

/// The sets held in memory whole: IDX (MNIST layout) and CIFAR binary batches.
fn load_in_memory(dir: &Path) -> Result<Option<Splits>> {
    if let Some(s) = load_mnist_layout(dir)? {
        return Ok(Some(s));
    }
    cifar::load(dir)
}

fn no_dataset(dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: found no dataset. Expected IDX files (train-images-idx3-ubyte[.gz], ...), CIFAR \
         binary batches (data_batch_1.bin ... or train.bin/test.bin), or an image folder \
         (class subfolders of PNG/JPEG files, optionally under train/ and test/)",
        dir.display()
    )
}

/// Inspect `dir` and read whichever supported layout it holds, at `size` (height, width) when
/// given (`data.image_size`).
pub fn load_dir(dir: &Path, size: Option<(usize, usize)>) -> Result<Splits> {
    check_data_dir(dir)?;
    let splits = match load_in_memory(dir)? {
        Some(s) => s,
        None => folder::load(dir, size)?.ok_or_else(|| no_dataset(dir))?,
    };
    if splits.train.is_empty() {
        bail!("{}: the dataset is empty", splits.description);
    }
    Ok(splits.resized(size))
}

/// `None` means the embedded default; `size` as in [`load_dir`].
pub fn load(data: Option<&Path>, size: Option<(usize, usize)>) -> Result<Splits> {
    match data {
        None => Ok(embedded_fashion_mnist()?.resized(size)),
        Some(dir) => load_dir(dir, size),
    }
}

/// The training images pretraining reads, and their description: WebDataset shards (a brace
/// pattern, a `.tar`, or a folder of them) and image folders streamed from disk (views at
/// `data.image_size`, else the most common size), any other set in memory as [`load`] reads it.
pub fn open_train(
    data: Option<&Path>,
    reading: &crate::vision::config::DataConfig,
) -> Result<(Arc<dyn ImageSource>, String)> {
    let size = reading.resize_to()?;
    let in_memory = |splits: Splits| -> (Arc<dyn ImageSource>, String) {
        (Arc::new(splits.train), splits.description)
    };
    let Some(dir) = data else {
        return Ok(in_memory(load(None, size)?));
    };
    if let Some(paths) = shards::shard_paths(dir)? {
        let (set, description) =
            shards::ShardSet::open(&paths, size, reading.shuffle_buffer, reading.on_error)?;
        return Ok((Arc::new(set), description));
    }
    check_data_dir(dir)?;
    if let Some(splits) = load_in_memory(dir)? {
        if splits.train.is_empty() {
            bail!("{}: the dataset is empty", splits.description);
        }
        return Ok(in_memory(splits.resized(size)));
    }
    let (folder, description) = StreamedFolder::open(dir, size)?.ok_or_else(|| no_dataset(dir))?;
    Ok((Arc::new(folder), description))
}

/// A train split and, where there is one, a test split, read through [`ImageSource`]: what
/// evaluation reads, in batches, so a streamed set never needs its images in memory.
#[derive(Clone)]
pub struct SourceSplits {
    pub train: Arc<dyn ImageSource>,
    pub test: Option<Arc<dyn ImageSource>>,
    pub description: String,
}

impl SourceSplits {
    pub fn require_test(&self) -> Result<&Arc<dyn ImageSource>> {
        self.test
            .as_ref()
            .with_context(|| format!("{} has no test split", self.description))
    }
}

impl From<Splits> for SourceSplits {
    fn from(splits: Splits) -> Self {
        SourceSplits {
            train: Arc::new(splits.train),
            test: splits.test.map(|t| Arc::new(t) as Arc<dyn ImageSource>),
            description: splits.description,
        }
    }
}

/// Both splits of `data` for evaluation, each image at the set's size: sets held in memory as
/// [`load`] reads them (at `data.image_size` when set), WebDataset shards and image folders
/// streamed, at `data.image_size` or else `stream_size` (the size the checkpoint was trained at).
pub fn open_splits(
    data: Option<&Path>,
    reading: &crate::vision::config::DataConfig,
    stream_size: (usize, usize),
) -> Result<SourceSplits> {
    let size = reading.resize_to()?;
    let in_memory = SourceSplits::from;
    let Some(dir) = data else {
        return Ok(in_memory(load(None, size)?));
    };
    let streamed =
        |train: Arc<dyn ImageSource>, test: Option<Arc<dyn ImageSource>>, description| {
            SourceSplits {
                train: source::AtSize::wrap(train),
                test: test.map(source::AtSize::wrap),
                description,
            }
        };
    let size = Some(size.unwrap_or(stream_size));
    if let Some(paths) = shards::shard_paths(dir)? {
        let (train, description) =
            shards::ShardSet::open(&paths, size, reading.shuffle_buffer, reading.on_error)?;
        let tests = shards::test_shard_paths(dir, &paths)?;
        let test = if tests.is_empty() {
            None
        } else {
            Some(Arc::new(train.open_test(&tests, reading.on_error)?) as Arc<dyn ImageSource>)
        };
        let description = match &test {
            Some(t) => format!(
                "{description}; test split: {} shards, {} samples",
                tests.len(),
                t.len()
            ),
            None => description,
        };
        return Ok(streamed(Arc::new(train), test, description));
    }
    check_data_dir(dir)?;
    if let Some(splits) = load_in_memory(dir)? {
        if splits.train.is_empty() {
            bail!("{}: the dataset is empty", splits.description);
        }
        return Ok(in_memory(splits.resized(reading.resize_to()?)));
    }
    let (train, test, description) =
        StreamedFolder::open_splits(dir, size)?.ok_or_else(|| no_dataset(dir))?;
    Ok(streamed(
        Arc::new(train),
        test.map(|t| Arc::new(t) as Arc<dyn ImageSource>),
        description,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn embedded_set_is_balanced_and_labelled() {
        let s = embedded_fashion_mnist().unwrap();
        assert_eq!(s.train.len(), 10_000);
        assert_eq!(s.test.as_ref().unwrap().len(), 2_000);
        assert_eq!(
            (s.train.height, s.train.width, s.train.channels),
            (28, 28, 1)
        );
        let mut counts = [0usize; 10];
        for &l in s.train.labels.as_ref().unwrap() {
            counts[l as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c == 1000));
        assert_eq!(s.train.num_classes(), 10);
    }

    #[test]
    fn mnist_layout_errors_name_the_file() {
        let dir = tempdir("mnist-layout");
        let images = idx::IdxArray {
            dims: vec![4, 2, 2],
            data: vec![0; 16],
        };
        let labels = idx::IdxArray {
            dims: vec![3],
            data: vec![0; 3],
        };
        std::fs::write(
            dir.join("train-images-idx3-ubyte"),
            idx::encode_idx(&images),
        )
        .unwrap();
        // Without labels the images are read for pretraining, and evaluation says why not.
        let unlabelled = load_dir(&dir, None).unwrap();
        assert!(unlabelled.description.contains("unlabelled"));
        assert_eq!(
            (unlabelled.train.len(), unlabelled.train.labels.as_ref()),
            (4, None)
        );
        let err = unlabelled.train.require_labels().unwrap_err().to_string();
        assert!(err.contains("no labels"), "{err}");
        // A test split without labels beside it is unlabelled too, not a missing file.
        let t10k = dir.join("t10k-images-idx3-ubyte");
        std::fs::write(&t10k, idx::encode_idx(&images)).unwrap();
        let both = load_dir(&dir, None).unwrap();
        let test = both.test.as_ref().unwrap();
        assert_eq!((test.len(), test.labels.as_ref()), (4, None));
        std::fs::remove_file(&t10k).unwrap();
        std::fs::write(
            dir.join("train-labels-idx1-ubyte"),
            idx::encode_idx(&labels),
        )
        .unwrap();
        let err = format!("{:#}", load_dir(&dir, None).unwrap_err());
        assert!(err.contains("4 images but 3 labels"), "{err}");
        let labels = idx::IdxArray {
            dims: vec![4],
            data: vec![0, 1, 2, 3],
        };
        std::fs::write(
            dir.join("train-labels-idx1-ubyte"),
            idx::encode_idx(&labels),
        )
        .unwrap();
        let s = load_dir(&dir, None).unwrap();
        assert_eq!(s.train.len(), 4);
        assert!(s.test.is_none());
        std::fs::write(dir.join("t10k-images-idx3-ubyte.gz"), b"\x1f\x8bjunk").unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx::encode_idx(&labels)).unwrap();
        let err = format!("{:#}", load_dir(&dir, None).unwrap_err());
        assert!(err.contains("t10k-images-idx3-ubyte.gz"), "{err}");
        // A label past the classes: with class names, any; without, one far past the rest.
        let corrupt = |labels: Vec<u8>| {
            let array = idx::IdxArray {
                dims: vec![4],
                data: labels,
            };
            std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx::encode_idx(&array)).unwrap();
            load_dir(&dir, None).err().map(|e| format!("{e:#}"))
        };
        std::fs::write(dir.join("t10k-images-idx3-ubyte.gz"), b"").unwrap();
        std::fs::remove_file(dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx::encode_idx(&images)).unwrap();
        assert_eq!(corrupt(vec![3, 2, 1, 0]), None);
        let err = corrupt(vec![3, 2, 200, 0]).unwrap();
        assert!(
            err.contains("t10k-labels-idx1-ubyte: label 200 at index 2"),
            "{err}"
        );
        std::fs::write(dir.join("classes.txt"), "a\nb\nc\nd\n").unwrap();
        assert_eq!(corrupt(vec![3, 2, 1, 0]), None);
        let err = corrupt(vec![0, 4, 1, 0]).unwrap();
        assert!(
            err.contains("label 4 at index 1") && err.contains("4 class names"),
            "{err}"
        );
        let missing = format!("{:#}", load_dir(&dir.join("nope"), None).unwrap_err());
        assert!(missing.contains("no such folder"), "{missing}");
        let file = format!(
            "{:#}",
            load_dir(&dir.join("classes.txt"), None).unwrap_err()
        );
        assert!(file.contains("a file, not a folder"), "{file}");
        let empty = tempdir("empty-dir");
        assert!(format!("{:#}", load_dir(&empty, None).unwrap_err()).contains("found no dataset"));
    }

    pub(crate) fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pretext-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
