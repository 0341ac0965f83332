//! WebDataset shards: tar files whose members that share a key (`KEY.jpg` beside `KEY.cls`)
//! form one sample, the layout of LAION, DataComp and most large image sets.
//!
//! Opening a set of shards reads their tar headers only (a seek past each member's data) into
//! an index of where each sample's image lies: a few dozen bytes a sample. An epoch visits the
//! shards in a seeded order and passes their samples, in the order they lie, through a bounded
//! shuffle buffer (`data.shuffle_buffer`), as WebDataset's pipeline does; the image of each
//! sample the buffer lets out is then read at its offset and decoded on the loader's threads.
//! Because the buffer holds sample numbers rather than bytes, an epoch's order is known without
//! reading a pixel, so `--resume` continues at the very sample it stopped at, and reads stay
//! within the few shards the buffer spans.
//!
//! The tar format is read and written by the `tar` crate. The `webdataset` crate (0.0.1, a first
//! release that ports the whole Python pipeline) was not used: it streams without an index, so it
//! cannot resume at a sample, and it would bring a second loader beside the one every job shares.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::ImageSet;
use super::folder::decode_bytes;
use super::source::{ImageSource, OnError, decoded_into, image_of, sample_stats, stats_sample};
use super::stream::{header_of, sampled_shape};
use crate::core::loader::{epoch_order, mix_seed};
use crate::vision::views::Image;

/// The image members a sample may hold, by extension.
const IMAGE_EXTENSIONS: [(&str, image::ImageFormat); 4] = [
    ("jpg", image::ImageFormat::Jpeg),
    ("jpeg", image::ImageFormat::Jpeg),
    ("png", image::ImageFormat::Png),
    ("webp", image::ImageFormat::WebP),
];

/// Expand the brace expressions of a shard pattern, as WebDataset's `braceexpand` does:
/// `{000..099}` is a range, zero-padded to the width of its first bound; `{a,b}` a list.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>> {
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            bail!("shard pattern '{pattern}': a '}}' without its '{{'");
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = open
        + pattern[open..]
            .find('}')
            .with_context(|| format!("shard pattern '{pattern}': a '{{' without its '}}'"))?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let choices: Vec<String> = if let Some((a, b)) = body.split_once("..") {
        let bad = || {
            anyhow::anyhow!(
                "shard pattern '{pattern}': '{{{body}}}' is not a range of numbers like \
                 {{000000..000099}}"
            )
        };
        let (from, to): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if from > to {
            bail!("shard pattern '{pattern}': the range {{{body}}} runs backwards");
        }
        if to - from >= 10_000_000 {
            bail!("shard pattern '{pattern}': the range {{{body}}} names too many shards");
        }
        (from..=to)
            .map(|n| format!("{n:0width$}", width = a.len()))
            .collect()
    } else {
        body.split(',').map(String::from).collect()
    };
    let rest = expand_braces(tail)?;
    let mut out = Vec::with_capacity(choices.len() * rest.len());
    for c in &choices {
        for r in &rest {
            out.push(format!("{head}{c}{r}"));
        }
    }
    Ok(out)
}

/// The training shards `--data` names, or `None` when it names none: a brace pattern (every
/// shard it expands to must exist), one `.tar` file, or a folder of `.tar` files (those whose
/// names begin with `train` when any do: `pretext data shards` writes `train-*` and `test-*`).
pub fn shard_paths(data: &Path) -> Result<Option<Vec<PathBuf>>> {
    let text = data.to_string_lossy();
    if text.contains('{') {
        let paths: Vec<PathBuf> = expand_braces(&text)?
            .into_iter()
            .map(PathBuf::from)
            .collect();
        if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
            bail!(
                "--data {text}: the shard {} does not exist ({} shards in the pattern)",
                missing.display(),
                paths.len()
            );
        }
        return Ok(Some(paths));
    }
    if data.is_file() {
        return Ok(is_tar(data).then(|| vec![data.to_path_buf()]));
    }
    if !data.is_dir() {
        return Ok(None);
    }
    let mut tars: Vec<PathBuf> = std::fs::read_dir(data)
        .with_context(|| format!("--data {}: cannot list it", data.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_tar(p))
        .collect();
    tars.sort();
    let split = |prefix: &str| -> Vec<PathBuf> {
        tars.iter()
            .filter(|p| file_name(p).starts_with(prefix))
            .cloned()
            .collect()
    };
    let train = split("train");
    Ok(match (tars.is_empty(), train.is_empty()) {
        (true, _) => None,
        (false, true) => Some(tars),
        (false, false) => Some(train),
    })
}

/// The test shards beside the training ones `--data` names: the `test*.tar` files of its folder,
/// when its training shards' names begin with `train` (as `pretext data shards` writes them).
pub fn test_shard_paths(data: &Path, train: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let Some(first) = train.first() else {
        return Ok(Vec::new());
    };
    if !file_name(first).starts_with("train") {
        return Ok(Vec::new());
    }
    let dir = if data.is_dir() {
        data.to_path_buf()
    } else {
        first.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    let mut tests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_tar(p) && file_name(p).starts_with("test"))
        .collect();
    tests.sort();
    Ok(tests)
}

fn is_tar(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("tar"))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// A sample's label as its shard states it.
#[derive(Debug, Clone, PartialEq)]
enum Label {
    Index(u32),
    Name(String),
}

/// One sample of a shard: where its image lies.
#[derive(Debug, Clone)]
struct Sample {
    shard: u32,
    /// The image member's data: offset in the shard, and length.
    offset: u64,
    bytes: u64,
    format: image::ImageFormat,
    /// The image member's name, for messages.
    member: String,
}

/// What one shard holds, as its headers say; `problems` are the members and samples left out.
struct ShardListing {
    samples: Vec<(Sample, Option<Label>)>,
    problems: Vec<String>,
}

/// List the samples of shard number `shard` at `path`, reading its headers and its label
/// members only. A shard cut short inside a member, or with a damaged header, keeps the whole
/// samples before the damage and names it.
fn list_shard(path: &Path, shard: u32) -> Result<ShardListing> {
    let name = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("cannot open shard {name}"))?;
    let file_len = file.metadata()?.len();
    let mut archive = tar::Archive::new(file);
    let mut listing = ShardListing {
        samples: Vec::new(),
        problems: Vec::new(),
    };
    // The members of the sample being read: its key, image and label.
    let mut key: Option<String> = None;
    let mut image: Option<Sample> = None;
    let mut label: Option<Label> = None;
    // Where the last member's data (padded to a block) ends, and its name.
    let mut last: Option<(u64, String)> = None;
    let finish = |key: &Option<String>,
                  image: &mut Option<Sample>,
                  label: &mut Option<Label>,
                  listing: &mut ShardListing| {
        if let Some(k) = key {
            match image.take() {
                Some(s) => listing.samples.push((s, label.take())),
                None => listing.problems.push(format!(
                    "{name}: sample '{k}' has no image (jpg, jpeg, png, webp)"
                )),
            }
        }
        *label = None;
    };
    let entries = archive
        .entries_with_seek()
        .with_context(|| format!("cannot read shard {name}"))?;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                listing.problems.push(format!(
                    "{name}: damaged tar header after {} whole sample(s) ({e}); the rest of the \
                     shard is left out",
                    listing.samples.len()
                ));
                // The sample being read may be missing members: leave it out too.
                key = None;
                break;
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry.path()?.to_string_lossy().into_owned();
        let (offset, bytes) = (entry.raw_file_position(), entry.size());
        // WebDataset's rule: the key is the path up to the first dot of the file name.
        let dir_len = member.rfind('/').map_or(0, |i| i + 1);
        let (stem, extension) = match member[dir_len..].find('.') {
            Some(dot) => (
                &member[..dir_len + dot],
                member[dir_len + dot + 1..].to_ascii_lowercase(),
            ),
            None => (member.as_str(), String::new()),
        };
        if key.as_deref() != Some(stem) {
            finish(&key, &mut image, &mut label, &mut listing);
            key = Some(stem.to_string());
        }
        if offset + bytes > file_len {
            listing.problems.push(format!(
                "{name}: cut short inside member '{member}' ({} of its {bytes} bytes are there); \
                 the samples before it are kept",
                file_len.saturating_sub(offset)
            ));
            // The sample it belongs to is incomplete: left out.
            key = None;
            break;
        }
        last = Some((offset + bytes.div_ceil(512) * 512, member.clone()));
        if let Some((_, format)) = IMAGE_EXTENSIONS.iter().find(|(e, _)| *e == extension) {
            if image.is_none() {
                image = Some(Sample {
                    shard,
                    offset,
                    bytes,
                    format: *format,
                    member: member.clone(),
                });
            }
        } else if matches!(extension.as_str(), "cls" | "txt" | "json") {
            if bytes > 1 << 20 {
                bail!("{name}: label member '{member}' is {bytes} bytes; a label is a few");
            }
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .with_context(|| format!("{name}: cannot read member '{member}' as text"))?;
            label = Some(
                parse_label(&extension, &text)
                    .with_context(|| format!("{name}: member '{member}'"))?,
            );
        }
    }
    // A shard cut at a member's boundary reads as one that ends there; a whole one goes on
    // with the end-of-archive marker (two zero blocks), whose absence gives the cut away.
    if key.is_some()
        && let Some((end, member)) = last
        && file_len < end + 1024
    {
        listing.problems.push(format!(
            "{name}: ends after member '{member}' without the end-of-archive marker: cut short? \
             The samples before that member's are kept"
        ));
        key = None;
    }
    finish(&key, &mut image, &mut label, &mut listing);
    Ok(listing)
}

/// A label member's text: `.cls` a class number, `.txt` a class name, `.json` a number or name,
/// bare or under "label", "cls" or "class".
fn parse_label(extension: &str, text: &str) -> Result<Label> {
    let text = text.trim();
    match extension {
        "cls" => text
            .parse()
            .map(Label::Index)
            .with_context(|| format!("'{text}' is not a class number")),
        "txt" if text.is_empty() => bail!("an empty class name"),
        "txt" => Ok(Label::Name(text.to_string())),
        _ => {
            let value: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
            let value = match &value {
                serde_json::Value::Object(o) => ["label", "cls", "class"]
                    .iter()
                    .find_map(|k| o.get(*k))
                    .context("a JSON object without \"label\", \"cls\" or \"class\"")?,
                v => v,
            };
            match value {
                serde_json::Value::Number(n) => n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(Label::Index)
                    .with_context(|| format!("label {n} is not a class number")),
                serde_json::Value::String(s) => Ok(Label::Name(s.clone())),
                v => bail!("label {v} is neither a class number nor a name"),
            }
        }
    }
}

/// The class names written beside the shards (`classes.txt`, one per line), if any.
fn read_class_names(dir: &Path) -> Result<Option<Vec<String>>> {
    let file = dir.join("classes.txt");
    if !file.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    Ok(Some(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
    ))
}

/// The largest class number taken without a `classes.txt` (a corrupt `.cls` would otherwise
/// size the classifier).
const MAX_UNNAMED_CLASS: u32 = 100_000;

/// Class numbers for every sample, and the class names: from `classes.txt` when there is one,
/// else the sorted distinct names (or none, for numbered classes). `None` when no sample has a
/// label; an error when some have one and others not, or one names no class.
fn resolve_labels(
    labels: &[Option<Label>],
    members: &[String],
    names: Option<Vec<String>>,
) -> Result<(Option<Vec<u32>>, Vec<String>)> {
    if labels.iter().all(Option::is_none) {
        return Ok((None, names.unwrap_or_default()));
    }
    if let Some(i) = labels.iter().position(Option::is_none) {
        bail!(
            "{}: this sample has no label (KEY.cls, KEY.txt or KEY.json) while others have one; \
             a labelled set needs one for every sample",
            members[i]
        );
    }
    let names = names.unwrap_or_else(|| {
        let mut found: Vec<String> = labels
            .iter()
            .filter_map(|l| match l {
                Some(Label::Name(n)) => Some(n.clone()),
                _ => None,
            })
            .collect();
        found.sort();
        found.dedup();
        found
    });
    let index: HashMap<&str, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();
    let resolved = labels
        .iter()
        .zip(members)
        .map(|(l, member)| match l {
            Some(Label::Index(i)) if names.is_empty() && *i >= MAX_UNNAMED_CLASS => bail!(
                "{member}: class {i}; numbers this large need a classes.txt beside the shards \
                 naming the classes"
            ),
            Some(Label::Index(i)) if names.is_empty() || (*i as usize) < names.len() => Ok(*i),
            Some(Label::Index(i)) => bail!(
                "{member}: class {i}, but classes.txt names {} classes",
                names.len()
            ),
            Some(Label::Name(n)) => index
                .get(n.as_str())
                .copied()
                .with_context(|| format!("{member}: class '{n}' is not in classes.txt")),
            None => unreachable!("checked above"),
        })
        .collect::<Result<_>>()?;
    Ok((Some(resolved), names))
}

/// A set of WebDataset shards, read sample by sample at the offsets their headers give.
#[derive(Debug, Clone)]
pub struct ShardSet {
    shards: Arc<Vec<(PathBuf, u64)>>,
    samples: Vec<Sample>,
    labels: Option<Vec<u32>>,
    class_names: Vec<String>,
    channels: usize,
    size: (usize, usize),
    shuffle_buffer: usize,
}

impl ShardSet {
    /// The samples of the shards at `paths`, with views at `size` or else the most common size
    /// of a sample of them; `shuffle_buffer` samples mix in the buffer. Damaged shards are named
    /// and their whole samples kept under [`OnError::Skip`]; under [`OnError::Stop`] they stop
    /// the run. Returns the description said to the user too.
    pub fn open(
        paths: &[PathBuf],
        size: Option<(usize, usize)>,
        shuffle_buffer: usize,
        on_error: OnError,
    ) -> Result<(Self, String)> {
        if paths.is_empty() {
            bail!("no shards to read");
        }
        let listings: Vec<ShardListing> = paths
            .par_iter()
            .enumerate()
            .map(|(i, p)| list_shard(p, i as u32))
            .collect::<Result<_>>()?;
        let mut samples = Vec::new();
        let mut labels = Vec::new();
        let mut problems = Vec::new();
        for listing in listings {
            problems.extend(listing.problems);
            for (s, l) in listing.samples {
                samples.push(s);
                labels.push(l);
            }
        }
        if let Some(first) = problems.first() {
            if on_error == OnError::Stop {
                bail!("{first} (data.on_error = \"stop\"; \"skip\" leaves it out and goes on)");
            }
            for p in problems.iter().take(5) {
                eprintln!("skipped: {p}");
            }
            if problems.len() > 5 {
                eprintln!("skipped: {} more", problems.len() - 5);
            }
        }
        let shown = if paths.len() == 1 {
            paths[0].display().to_string()
        } else {
            format!(
                "{} .. {}",
                paths[0].display(),
                file_name(&paths[paths.len() - 1])
            )
        };
        if samples.is_empty() {
            bail!("{shown}: the shards hold no image samples");
        }
        let shards: Vec<(PathBuf, u64)> = paths
            .iter()
            .map(|p| Ok((p.clone(), std::fs::metadata(p)?.len())))
            .collect::<Result<_>>()?;
        let dir = paths[0].parent().unwrap_or(Path::new("."));
        let members: Vec<String> = samples
            .iter()
            .map(|s| format!("{}:{}", file_name(&paths[s.shard as usize]), s.member))
            .collect();
        let (labels, class_names) = resolve_labels(&labels, &members, read_class_names(dir)?)?;
        let mut set = ShardSet {
            shards: Arc::new(shards),
            samples,
            labels,
            class_names,
            channels: 1,
            size: (0, 0),
            shuffle_buffer,
        };
        let sample = stats_sample(set.len());
        let headers: Vec<Option<((usize, usize), bool)>> = sample
            .par_iter()
            .map(|&i| {
                let bytes = set.read(i).ok()?;
                header_of(image::ImageReader::new(std::io::Cursor::new(bytes))).ok()
            })
            .collect();
        let Some((size, why, colour)) = sampled_shape(headers, size) else {
            bail!(
                "{shown}: none of the {} images sampled could be read (the first: {})",
                sample.len(),
                set.name(0)
            );
        };
        set.size = size;
        set.channels = if colour { 3 } else { 1 };
        let description = format!(
            "WebDataset shards {shown} ({} shards, {}{} samples, streamed; shuffle buffer {}; \
             views at {}x{} ({why}){}{}{})",
            paths.len(),
            if set.labels.is_some() {
                format!("{} classes, ", ImageSource::num_classes(&set))
            } else {
                String::new()
            },
            set.len(),
            shuffle_buffer,
            size.1,
            size.0,
            if colour { "" } else { "; grey" },
            if set.labels.is_none() {
                "; no labels: for pretraining"
            } else {
                ""
            },
            if problems.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} damaged member(s) or sample(s) left out",
                    problems.len()
                )
            },
        );
        Ok((set, description))
    }

    /// The test split `paths` as a set of the training split `self`'s size and channels.
    pub fn open_test(&self, paths: &[PathBuf], on_error: OnError) -> Result<ShardSet> {
        let (test, _) = ShardSet::open(paths, Some(self.size), self.shuffle_buffer, on_error)?;
        if test.labels.is_some() && test.class_names != self.class_names {
            bail!(
                "{}: the test shards name other classes than the training shards ({:?} against \
                 {:?}); a classes.txt beside them names the classes for both",
                paths[0].display(),
                test.class_names,
                self.class_names
            );
        }
        Ok(ShardSet {
            channels: self.channels,
            ..test
        })
    }

    /// `shard.tar:KEY.jpg`, for messages.
    fn name(&self, i: usize) -> String {
        let s = &self.samples[i];
        format!("{}:{}", self.shards[s.shard as usize].0.display(), s.member)
    }

    /// The bytes of sample `i`'s image.
    fn read(&self, i: usize) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let s = &self.samples[i];
        let (path, indexed) = &self.shards[s.shard as usize];
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open shard {}", path.display()))?;
        let now = file.metadata()?.len();
        if now != *indexed {
            bail!(
                "{}: {now} bytes, {indexed} when it was opened: the shard changed during the run",
                path.display()
            );
        }
        let mut bytes = vec![0u8; s.bytes as usize];
        file.read_exact_at(&mut bytes, s.offset)
            .with_context(|| format!("cannot read {}", self.name(i)))?;
        Ok(bytes)
    }

    fn decode(&self, i: usize) -> Result<image::DynamicImage> {
        decode_bytes(&self.read(i)?, &self.name(i), Some(self.samples[i].format))
    }
}

impl ImageSource for ShardSet {
    fn len(&self) -> usize {
        self.samples.len()
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

    /// The shard list (names and sizes), the samples' places and labels, and the shuffle
    /// buffer (it sets the order of every epoch), hashed: no pixel is read.
    fn fingerprint(&self) -> serde_json::Value {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (path, bytes) in self.shards.iter() {
            h.update(file_name(path).as_bytes());
            h.update(&bytes.to_le_bytes());
        }
        for (i, s) in self.samples.iter().enumerate() {
            h.update(&s.shard.to_le_bytes());
            h.update(&s.offset.to_le_bytes());
            if let Some(labels) = &self.labels {
                h.update(&labels[i].to_le_bytes());
            }
        }
        serde_json::json!({
            "images": self.len(),
            "shards": self.shards.len(),
            "shape": [self.channels, self.size.0, self.size.1],
            "shuffle_buffer": self.shuffle_buffer,
            "index_xxh3": format!("{:016x}", h.digest()),
        })
    }

    fn channel_stats(&self, on_error: OnError) -> Result<(Vec<f32>, Vec<f32>)> {
        sample_stats(self, on_error)
    }

    fn subset(&self, indices: &[usize]) -> Arc<dyn ImageSource> {
        Arc::new(ShardSet {
            samples: indices.iter().map(|&i| self.samples[i].clone()).collect(),
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            ..self.clone()
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

    /// The shards in a seeded order, each read front to back, through a shuffle buffer of
    /// `data.shuffle_buffer` samples: a sample arriving at a full buffer takes the place of
    /// one drawn at random, which leaves; at the epoch's end the rest leave in random order.
    /// Under MPI with at least as many shards as ranks, each rank streams whole shards of its
    /// own ([`ShardSet::order_over_ranks`]).
    fn epoch_order(&self, seed: u64, epoch: usize, batch_size: usize) -> Vec<usize> {
        self.order_over_ranks(seed, epoch, batch_size, crate::core::distributed::world())
    }
}

impl ShardSet {
    /// The samples of each shard, as consecutive runs in index order.
    fn runs(&self) -> Vec<std::ops::Range<usize>> {
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        for (i, s) in self.samples.iter().enumerate() {
            match runs.last_mut() {
                Some(r) if self.samples[r.start].shard == s.shard => r.end = i + 1,
                _ => runs.push(i..i + 1),
            }
        }
        runs
    }

    /// The epoch's order for `world`. One process, or fewer shards than ranks: one stream of
    /// every shard, of which the loader hands each rank its share of each global batch. With
    /// enough shards, rank r reads every N-th shard from the r-th (whole shards, front to
    /// back, never another rank's) through its own shuffle buffer, and global batch k is rank
    /// 0's k-th share of `batch_size / N` samples, then rank 1's, and so on, so the loader's
    /// split hands each rank its own stream. Every rank computes every stream (sample numbers
    /// only, from the shard headers), cut to the shortest, so all take the same steps; the
    /// longer streams' tails sit out each epoch (different samples each epoch).
    fn order_over_ranks(
        &self,
        seed: u64,
        epoch: usize,
        batch_size: usize,
        world: crate::core::distributed::World,
    ) -> Vec<usize> {
        let runs = self.runs();
        let ranks = world.size;
        if ranks == 1 || runs.len() < ranks || !batch_size.is_multiple_of(ranks) {
            return self.stream(&runs, seed, epoch);
        }
        let streams: Vec<Vec<usize>> = (0..ranks)
            .map(|r| {
                let own: Vec<_> = runs.iter().skip(r).step_by(ranks).cloned().collect();
                self.stream(&own, mix_seed(&[seed, r as u64, 0x5A4E]), epoch)
            })
            .collect();
        let share = batch_size / ranks;
        let batches = streams.iter().map(Vec::len).min().unwrap_or(0) / share.max(1);
        let mut order = Vec::with_capacity(batches * batch_size);
        for k in 0..batches {
            for stream in &streams {
                order.extend_from_slice(&stream[k * share..(k + 1) * share]);
            }
        }
        order
    }

    /// The samples of `runs` (whole shards) in a seeded shard order, through the shuffle buffer.
    fn stream(&self, runs: &[std::ops::Range<usize>], seed: u64, epoch: usize) -> Vec<usize> {
        let shard_order = epoch_order(runs.len(), mix_seed(&[seed, 0x5A4D]), epoch);
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[seed, epoch as u64, 0xB0FF]));
        let capacity = self.shuffle_buffer.max(1);
        let mut buffer: Vec<usize> = Vec::with_capacity(capacity.min(self.len()));
        let mut order = Vec::with_capacity(runs.iter().map(|r| r.len()).sum());
        for r in shard_order {
            for i in runs[r].clone() {
                if buffer.len() < capacity {
                    buffer.push(i);
                } else {
                    let j = rng.random_range(0..capacity);
                    order.push(std::mem::replace(&mut buffer[j], i));
                }
            }
        }
        while !buffer.is_empty() {
            let j = rng.random_range(0..buffer.len());
            order.push(buffer.swap_remove(j));
        }
        order
    }
}

/// How `write_shards` did: shards and samples written, bytes of image data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub shards: usize,
    pub samples: usize,
    pub bytes: u64,
}

/// Write the image files `files` (with their labels, if any) as shards
/// `OUT/PREFIX-000000.tar ...` of `shard_size` samples each, in a seeded order so that each
/// shard mixes the classes: `KEY.EXT` holds the file's bytes as they are, `KEY.cls` its class
/// number. Keys are the sample's number. Each shard is written under a temporary name and
/// renamed when whole; every tar field that could vary (times, owners) is fixed, so the same
/// files and seed give the same bytes.
pub fn write_shards(
    files: &[(Option<u32>, PathBuf)],
    out: &Path,
    prefix: &str,
    shard_size: usize,
    seed: u64,
) -> Result<Written> {
    if shard_size == 0 {
        bail!("--shard-size 0: a shard holds at least one sample");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let order = epoch_order(files.len(), mix_seed(&[seed, 0x5A4D_3417]), 0);
    let chunks: Vec<(usize, &[usize])> = order.chunks(shard_size).enumerate().collect();
    let written: Vec<u64> = chunks
        .par_iter()
        .map(|&(shard, chunk)| {
            let path = out.join(format!("{prefix}-{shard:06}.tar"));
            let tmp = out.join(format!(".{prefix}-{shard:06}.tar.tmp"));
            let mut builder = tar::Builder::new(std::io::BufWriter::new(
                std::fs::File::create(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?,
            ));
            let mut bytes = 0;
            let mut append = |name: &str, data: &[u8]| -> Result<()> {
                let mut header = tar::Header::new_ustar();
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                header.set_mtime(0);
                header.set_entry_type(tar::EntryType::Regular);
                builder
                    .append_data(&mut header, name, data)
                    .with_context(|| format!("cannot write {}", tmp.display()))
            };
            for &n in chunk {
                let (label, file) = &files[n];
                let data = std::fs::read(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let extension = file
                    .extension()
                    .map_or_else(String::new, |e| e.to_string_lossy().to_ascii_lowercase());
                let key = format!("{n:09}");
                append(&format!("{key}.{extension}"), &data)?;
                if let Some(label) = label {
                    append(&format!("{key}.cls"), label.to_string().as_bytes())?;
                }
                bytes += data.len() as u64;
            }
            let file = builder
                .into_inner()
                .with_context(|| format!("cannot write {}", tmp.display()))?
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path).with_context(|| {
                format!("cannot rename {} to {}", tmp.display(), path.display())
            })?;
            Ok(bytes)
        })
        .collect::<Result<_>>()?;
    Ok(Written {
        shards: written.len(),
        samples: files.len(),
        bytes: written.iter().sum(),
    })
}

/// `pretext data shards`: the image folder `from` (class subfolders, optionally under `train/`
/// and `test/`) as shards `OUT/train-*.tar` (and `OUT/test-*.tar`), with `OUT/classes.txt`.
/// Refuses a folder that already holds shards, so none are mixed with another set's.
pub fn shards_from_folder(
    from: &Path,
    out: &Path,
    shard_size: usize,
    seed: u64,
) -> Result<Vec<(&'static str, Written)>> {
    let layout = super::folder::layout(from)?.with_context(|| {
        format!(
            "{}: no images found (class subfolders of PNG/JPEG files, optionally under train/ \
             and test/)",
            from.display()
        )
    })?;
    if out.is_dir()
        && let Some(existing) = std::fs::read_dir(out)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| is_tar(p))
    {
        bail!(
            "--out {}: already holds shards ({}); remove them or choose another folder",
            out.display(),
            existing.display()
        );
    }
    let labelled = layout.labelled();
    let with_labels = |files: Vec<(u32, super::folder::FoundFile)>| -> Vec<(Option<u32>, PathBuf)> {
        files
            .into_iter()
            .map(|(l, f)| (labelled.then_some(l), f.path))
            .collect()
    };
    let mut written = vec![(
        "train",
        write_shards(&with_labels(layout.train), out, "train", shard_size, seed)?,
    )];
    if let Some(test) = layout.test {
        written.push((
            "test",
            write_shards(&with_labels(test), out, "test", shard_size, seed)?,
        ));
    }
    if labelled {
        let classes = out.join("classes.txt");
        let tmp = out.join(".classes.txt.tmp");
        std::fs::write(&tmp, layout.names.join("\n") + "\n")
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &classes)
            .with_context(|| format!("cannot write {}", classes.display()))?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::batches::make_views;
    use crate::vision::data::stream::StreamedFolder;
    use crate::vision::data::tests::tempdir;
    use crate::vision::views::ViewConfig;

    #[test]
    fn brace_patterns_expand_as_webdataset_does() {
        assert_eq!(
            expand_braces("d/train-{008..011}.tar").unwrap(),
            [
                "d/train-008.tar",
                "d/train-009.tar",
                "d/train-010.tar",
                "d/train-011.tar"
            ]
        );
        assert_eq!(
            expand_braces("{a,b}-{0..1}.tar").unwrap(),
            ["a-0.tar", "a-1.tar", "b-0.tar", "b-1.tar"]
        );
        assert_eq!(expand_braces("plain.tar").unwrap(), ["plain.tar"]);
        for (bad, says) in [
            ("x-{1..}.tar", "not a range of numbers"),
            ("x-{3..1}.tar", "runs backwards"),
            ("x-{1..2.tar", "without its '}'"),
            ("x-1}.tar", "without its '{'"),
        ] {
            let err = expand_braces(bad).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains(bad), "{bad}: {err}");
        }
    }

    /// `cat/` and `dog/` of RGB PNGs of several sizes, seven in each class.
    fn folder(name: &str) -> PathBuf {
        let dir = tempdir(name);
        for (class, shade) in [("cat", 10u8), ("dog", 150u8)] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            for i in 0..7u8 {
                let (w, h) = (6 + (i as u32 % 3), 5 + (i as u32 % 2));
                let im = image::RgbImage::from_fn(w, h, |x, y| {
                    image::Rgb([shade + i, (x * 20) as u8, (y * 30) as u8])
                });
                im.save(dir.join(class).join(format!("{i}.png"))).unwrap();
            }
        }
        dir
    }

    /// The shard paths under `out`, with the folder's files in index order.
    fn written(name: &str, shard_size: usize) -> (PathBuf, PathBuf, Vec<PathBuf>) {
        let dir = folder(name);
        let out = dir.join("shards");
        let w = shards_from_folder(&dir, &out, shard_size, 5).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(
            (w[0].1.samples, w[0].1.shards),
            (14, 14usize.div_ceil(shard_size))
        );
        let paths = shard_paths(&out).unwrap().unwrap();
        (dir, out, paths)
    }

    #[test]
    fn shards_and_folder_give_the_same_samples() {
        let (dir, out, paths) = written("shards-same", 4);
        assert_eq!(paths.len(), 4);
        assert_eq!(file_name(&paths[0]), "train-000000.tar");
        let (shards, description) = ShardSet::open(&paths, None, 5, OnError::Stop).unwrap();
        assert!(
            description.contains("4 shards, 2 classes, 14 samples"),
            "{description}"
        );
        let (folder, _) = StreamedFolder::open(&dir, None).unwrap().unwrap();
        assert_eq!(shards.class_names(), ["cat", "dog"]);
        assert_eq!((shards.size(), shards.channels()), (folder.size(), 3));
        // Each sample's key is the folder's index of its file: the same image, the same label.
        let mut seen = [false; 14];
        for i in 0..shards.len() {
            let n: usize = shards.samples[i].member[..9].parse().unwrap();
            assert!(!std::mem::replace(&mut seen[n], true));
            assert_eq!(shards.image(i).unwrap(), folder.image(n).unwrap());
            assert_eq!(shards.labels().unwrap()[i], folder.labels().unwrap()[n]);
        }
        assert!(seen.iter().all(|&s| s));
        // GNU tar reads the shards as written.
        let listed = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&paths[0])
            .output();
        if let Ok(listed) = listed {
            let names = String::from_utf8_lossy(&listed.stdout).into_owned();
            assert_eq!(names.lines().count(), 8, "{names}");
            assert!(
                names
                    .lines()
                    .all(|l| l.ends_with(".png") || l.ends_with(".cls"))
            );
        }
        // The same files and seed write the same bytes.
        let again = dir.join("again");
        shards_from_folder(&dir, &again, 4, 5).unwrap();
        assert_eq!(
            std::fs::read(&paths[2]).unwrap(),
            std::fs::read(again.join("train-000002.tar")).unwrap()
        );
        let err = format!("{:#}", shards_from_folder(&dir, &out, 4, 5).unwrap_err());
        assert!(err.contains("already holds shards"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_shuffle_buffer_is_deterministic_and_bounded() {
        let (dir, _, paths) = written("shards-buffer", 3);
        let (set, _) = ShardSet::open(&paths, None, 4, OnError::Stop).unwrap();
        let order = set.epoch_order(1, 0, 2);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..14).collect::<Vec<_>>());
        assert_eq!(order, set.epoch_order(1, 0, 2));
        assert_ne!(order, set.epoch_order(1, 1, 2));
        assert_ne!(order, set.epoch_order(2, 0, 2));
        // Without a buffer the shards are read whole, one after another, in a seeded order.
        let (one, _) = ShardSet::open(&paths, None, 1, OnError::Stop).unwrap();
        let plain = one.epoch_order(1, 0, 2);
        let shard_of = |i: usize| one.samples[i].shard;
        let mut runs: Vec<u32> = plain.iter().map(|&i| shard_of(i)).collect();
        runs.dedup();
        assert_eq!(runs.len(), 5, "{plain:?}");
        assert!(
            plain
                .windows(2)
                .all(|w| shard_of(w[0]) != shard_of(w[1]) || w[1] == w[0] + 1)
        );
        // With a buffer of 4, a sample leaves at most 4 places before it arrived: the stream
        // position of each sample (shards in the epoch's shard order) bounds its place.
        let arrived: Vec<usize> = {
            let mut pos = vec![0; 14];
            for (p, &i) in plain.iter().enumerate() {
                pos[i] = p;
            }
            pos
        };
        for (place, &i) in order.iter().enumerate() {
            assert!(
                arrived[i] <= place + 4,
                "sample {i} at {place} arrived at {}",
                arrived[i]
            );
        }
        assert!(order.iter().enumerate().any(|(p, &i)| arrived[i] != p));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Under MPI with enough shards every rank streams whole shards of its own: each global
    /// batch is rank 0's share, then rank 1's, each from that rank's shards only, disjoint,
    /// the same on every call, as long in every epoch.
    #[test]
    fn ranks_stream_whole_shards_of_their_own() {
        use crate::core::distributed::World;
        let (dir, _, paths) = written("shards-ranks", 3);
        let (set, _) = ShardSet::open(&paths, None, 4, OnError::Stop).unwrap();
        // 5 shards of 3, 3, 3, 3, 2 samples: rank 0 reads shards 0, 2, 4 (8 samples), rank 1
        // shards 1 and 3 (6); global batches of 4 are two samples from each.
        let two = |rank| World { rank, size: 2 };
        let order = set.order_over_ranks(1, 0, 4, two(0));
        assert_eq!(
            order,
            set.order_over_ranks(1, 0, 4, two(1)),
            "every rank agrees"
        );
        assert_eq!(
            order.len(),
            12,
            "3 batches: rank 1's 6 samples in shares of 2"
        );
        let shard_of = |i: usize| set.samples[i].shard;
        for batch in order.chunks(4) {
            assert!(
                batch[..2].iter().all(|&i| shard_of(i) % 2 == 0),
                "{batch:?}"
            );
            assert!(
                batch[2..].iter().all(|&i| shard_of(i) % 2 == 1),
                "{batch:?}"
            );
        }
        let mut seen = order.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 12, "no sample twice");
        for epoch in 1..4 {
            let later = set.order_over_ranks(1, epoch, 4, two(0));
            assert_eq!(later.len(), 12);
            assert_ne!(later, order);
        }
        // One rank, or more ranks than shards: one stream of every shard.
        assert_eq!(
            set.order_over_ranks(1, 0, 4, World { rank: 0, size: 1 })
                .len(),
            14
        );
        assert_eq!(
            set.order_over_ranks(1, 0, 6, World { rank: 0, size: 6 })
                .len(),
            14
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn damaged_shards_are_named_and_their_whole_samples_kept() {
        let (dir, out, paths) = written("shards-damaged", 7);
        // A corrupt image member: it decodes to an error naming the shard and member, and the
        // loader skips and counts it.
        let (set, _) = ShardSet::open(&paths, None, 4, OnError::Skip).unwrap();
        let victim = set.samples[2].clone();
        let mut bytes = std::fs::read(&paths[0]).unwrap();
        let at = victim.offset as usize;
        bytes[at..at + victim.bytes as usize].fill(0x55);
        std::fs::write(&paths[0], &bytes).unwrap();
        let err = format!("{:#}", set.image(2).unwrap_err());
        assert!(
            err.contains(&format!("train-000000.tar:{}", victim.member))
                && err.contains("cannot decode"),
            "{err}"
        );
        let pipes = [ViewConfig::simclr().build((5, 6), &[0.5; 3], &[0.25; 3])];
        let (_, _, skipped) = make_views(&set, &pipes, &[1, 2, 3], 0, 0, OnError::Skip).unwrap();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        // A shard cut inside a member keeps the samples before it, says where, and stops the
        // run under "stop".
        let cut = set.samples[10].clone();
        let bytes = std::fs::read(&paths[1]).unwrap();
        std::fs::write(&paths[1], &bytes[..cut.offset as usize + 10]).unwrap();
        let (kept, description) = ShardSet::open(&paths, None, 4, OnError::Skip).unwrap();
        assert_eq!(kept.len(), 10);
        assert!(description.contains("1 damaged"), "{description}");
        let err = format!(
            "{:#}",
            ShardSet::open(&paths, None, 4, OnError::Stop).unwrap_err()
        );
        assert!(
            err.contains("train-000001.tar: cut short inside member")
                && err.contains(&cut.member)
                && err.contains("10 of its"),
            "{err}"
        );
        // Cut between two members: the end-of-archive marker is missing.
        std::fs::write(&paths[1], &bytes[..cut.offset as usize - 512]).unwrap();
        let (kept, _) = ShardSet::open(&paths, None, 4, OnError::Skip).unwrap();
        assert_eq!(kept.len(), 9);
        let err = format!(
            "{:#}",
            ShardSet::open(&paths, None, 4, OnError::Stop).unwrap_err()
        );
        assert!(err.contains("without the end-of-archive marker"), "{err}");
        // A labelled set with a sample that has no label, and labels by name.
        let loose = out.join("loose");
        std::fs::create_dir_all(&loose).unwrap();
        let png = std::fs::read(dir.join("cat/0.png")).unwrap();
        let write = |name: &str, members: &[(&str, &[u8])]| {
            let mut b = tar::Builder::new(Vec::new());
            for (m, data) in members {
                let mut h = tar::Header::new_ustar();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, m, *data).unwrap();
            }
            let p = loose.join(name);
            std::fs::write(&p, b.into_inner().unwrap()).unwrap();
            p
        };
        let named = write(
            "named.tar",
            &[
                ("a.png", &png),
                ("a.txt", b"zebra\n"),
                ("b.png", &png),
                ("b.json", br#"{"label": "ant"}"#),
                ("c.txt", b"no image here"),
            ],
        );
        let (set, description) =
            ShardSet::open(std::slice::from_ref(&named), None, 4, OnError::Skip).unwrap();
        assert_eq!(set.class_names(), ["ant", "zebra"]);
        assert_eq!(set.labels(), Some(&[1, 0][..]));
        assert!(description.contains("1 damaged"), "{description}");
        let err = format!(
            "{:#}",
            ShardSet::open(&[named], None, 4, OnError::Stop).unwrap_err()
        );
        assert!(err.contains("sample 'c' has no image"), "{err}");
        let unlabelled = write(
            "half.tar",
            &[("a.png", &png), ("a.cls", b"1"), ("b.png", &png)],
        );
        let err = format!(
            "{:#}",
            ShardSet::open(&[unlabelled], None, 4, OnError::Skip).unwrap_err()
        );
        assert!(
            err.contains("half.tar:b.png: this sample has no label"),
            "{err}"
        );
        let bad = write("bad.tar", &[("a.png", &png), ("a.cls", b"cat")]);
        let err = format!(
            "{:#}",
            ShardSet::open(&[bad], None, 4, OnError::Skip).unwrap_err()
        );
        assert!(
            err.contains("bad.tar: member 'a.cls'") && err.contains("not a class number"),
            "{err}"
        );
        let missing = shard_paths(&loose.join("x-{0..3}.tar"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("x-0.tar does not exist"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
