//! The file index of an image folder: its class sub-folders (sorted), each one's image files
//! with their byte sizes, the sub-folders without images, and the images lying directly in it.
//! Built in parallel (one task per sub-folder) and cached under the user's cache folder, keyed by
//! the folder's path; the cache holds the modification times of the folder and of each
//! sub-folder, which change whenever a file is added, removed or renamed in them, so checking it
//! costs one `stat` per folder, not one per file. (A file rewritten in place under the same
//! name keeps its folder's time: its byte size, kept here, is what a reader compares.)

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// One image file of the index: its name inside its folder, and its size in bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexedFile {
    pub name: String,
    pub bytes: u64,
}

/// A class sub-folder holding at least one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexedClass {
    pub name: String,
    pub files: Vec<IndexedFile>,
}

/// What [`FolderIndex::open`] found in a folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FolderIndex {
    /// Class sub-folders with images, sorted by name; their files sorted by name.
    pub classes: Vec<IndexedClass>,
    /// Sub-folders without any image (skipped, and said so).
    pub empty: Vec<String>,
    /// Images directly in the folder: a flat, unlabelled set when there are no classes.
    pub loose: Vec<IndexedFile>,
    /// The cache's key: modification times (ns since the epoch) of the folder ("") and of
    /// each sub-folder.
    stamps: Vec<(String, u128)>,
}

/// How an index was obtained, for the data description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexSource {
    Built,
    Cached,
}

/// The image formats the folder readers decode.
pub fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg" | "webp")
    )
}

/// A folder's entries, sorted by name.
pub fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    out.sort();
    Ok(out)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn modified_ns(p: &Path) -> Result<u128> {
    let t = std::fs::metadata(p)
        .and_then(|m| m.modified())
        .with_context(|| format!("cannot read the modification time of {}", p.display()))?;
    Ok(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos())
}

/// The image files of `dir` (not descending), with their sizes.
fn image_files(dir: &Path) -> Result<Vec<IndexedFile>> {
    sorted_entries(dir)?
        .into_iter()
        .filter(|p| is_image(p) && p.is_file())
        .map(|p| {
            let bytes = std::fs::metadata(&p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .len();
            Ok(IndexedFile {
                name: name_of(&p),
                bytes,
            })
        })
        .collect()
}

impl FolderIndex {
    /// List `dir` afresh: one parallel task per sub-folder.
    pub fn build(dir: &Path) -> Result<FolderIndex> {
        let entries = sorted_entries(dir)?;
        let subs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
        let listed: Vec<(String, u128, Vec<IndexedFile>)> = subs
            .par_iter()
            .map(|sub| Ok((name_of(sub), modified_ns(sub)?, image_files(sub)?)))
            .collect::<Result<_>>()?;
        let mut index = FolderIndex {
            classes: Vec::new(),
            empty: Vec::new(),
            loose: image_files(dir)?,
            stamps: vec![(String::new(), modified_ns(dir)?)],
        };
        for (name, stamp, files) in listed {
            index.stamps.push((name.clone(), stamp));
            if files.is_empty() {
                index.empty.push(name);
            } else {
                index.classes.push(IndexedClass { name, files });
            }
        }
        Ok(index)
    }

    /// Whether the folder still looks as it did when this index was built: the same
    /// modification times of the folder and of every sub-folder.
    fn is_current(&self, dir: &Path) -> bool {
        self.stamps.iter().all(|(name, stamp)| {
            let path = if name.is_empty() {
                dir.to_path_buf()
            } else {
                dir.join(name)
            };
            modified_ns(&path).is_ok_and(|now| now == *stamp)
        })
    }

    /// The index of `dir`: from the cache under `cache` when the folder has not changed since,
    /// else built and (when every folder is older than two seconds, so that a file added within
    /// the same tick of the file system's clock cannot go unseen) cached. A cache that cannot
    /// be read or written is rebuilt or skipped: it only saves time.
    pub fn open(dir: &Path, cache: Option<&Path>) -> Result<(FolderIndex, IndexSource)> {
        let file = cache.and_then(|c| cache_file(c, dir));
        if let Some(file) = &file
            && let Ok(bytes) = std::fs::read(file)
            && let Ok(index) = serde_json::from_slice::<FolderIndex>(&bytes)
            && index.is_current(dir)
        {
            return Ok((index, IndexSource::Cached));
        }
        let index = FolderIndex::build(dir)?;
        let settled = SystemTime::now()
            .checked_sub(Duration::from_secs(2))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos());
        let is_settled = settled.is_some_and(|limit| index.stamps.iter().all(|(_, s)| *s < limit));
        if let Some(file) = &file
            && is_settled
            && let Ok(json) = serde_json::to_vec(&index)
        {
            let _ = file
                .parent()
                .map(std::fs::create_dir_all)
                .transpose()
                .ok()
                .and_then(|_| crate::core::checkpoint::write_atomic(file, &json).ok());
        }
        Ok((index, IndexSource::Built))
    }

    /// The number of images indexed (classes and loose files).
    pub fn len(&self) -> usize {
        self.loose.len() + self.classes.iter().map(|c| c.files.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The cache file of `dir`'s index: named by a hash of its canonical path.
fn cache_file(cache: &Path, dir: &Path) -> Option<PathBuf> {
    let canonical = dir.canonicalize().ok()?;
    let key = xxhash_rust::xxh3::xxh3_64(canonical.to_string_lossy().as_bytes());
    Some(cache.join("index").join(format!("{key:016x}.json")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, seconds: u64) {
        let t = SystemTime::now() - Duration::from_secs(seconds);
        std::fs::File::open(path).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn the_cache_is_used_until_a_file_is_added_removed_or_a_class_appears() {
        let root = crate::vision::data::tests::tempdir("index");
        let (dir, cache) = (root.join("images"), root.join("cache"));
        for class in ["cat", "dog", "empty"] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
        }
        std::fs::write(dir.join("cat/a.png"), b"12345").unwrap();
        std::fs::write(dir.join("cat/b.jpg"), b"1").unwrap();
        std::fs::write(dir.join("dog/c.JPEG"), b"123").unwrap();
        std::fs::write(dir.join("dog/notes.txt"), b"not an image").unwrap();
        let settle = || {
            for sub in ["", "cat", "dog", "empty"] {
                age(&dir.join(sub), 10);
            }
        };
        settle();

        let (index, source) = FolderIndex::open(&dir, Some(&cache)).unwrap();
        assert_eq!(source, IndexSource::Built);
        let names: Vec<&str> = index.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cat", "dog"]);
        assert_eq!(index.empty, ["empty"]);
        assert_eq!(
            index.classes[0].files,
            [
                IndexedFile {
                    name: "a.png".into(),
                    bytes: 5
                },
                IndexedFile {
                    name: "b.jpg".into(),
                    bytes: 1
                }
            ]
        );
        assert_eq!(index.len(), 3);
        let (again, source) = FolderIndex::open(&dir, Some(&cache)).unwrap();
        assert_eq!((source, &again), (IndexSource::Cached, &index));

        // A file added to a class folder changes that folder's time: rebuilt, and seen.
        std::fs::write(dir.join("dog/d.png"), b"1234").unwrap();
        let (index, source) = FolderIndex::open(&dir, Some(&cache)).unwrap();
        assert_eq!((source, index.len()), (IndexSource::Built, 4));
        // Just changed: not cached yet (a change within the clock's tick could go unseen).
        let (_, source) = FolderIndex::open(&dir, Some(&cache)).unwrap();
        assert_eq!(source, IndexSource::Built);
        settle();
        assert_eq!(
            FolderIndex::open(&dir, Some(&cache)).unwrap().1,
            IndexSource::Built
        );
        assert_eq!(
            FolderIndex::open(&dir, Some(&cache)).unwrap().1,
            IndexSource::Cached
        );

        // A file removed, and a new class folder: both rebuild.
        std::fs::remove_file(dir.join("cat/b.jpg")).unwrap();
        let (index, source) = FolderIndex::open(&dir, Some(&cache)).unwrap();
        assert_eq!(
            (source, index.classes[0].files.len()),
            (IndexSource::Built, 1)
        );
        settle();
        FolderIndex::open(&dir, Some(&cache)).unwrap();
        std::fs::create_dir_all(dir.join("eel")).unwrap();
        std::fs::write(dir.join("eel/e.png"), b"1").unwrap();
        let (index, source) = FolderIndex::open(&dir, Some(&cache)).unwrap();
        assert_eq!((source, index.classes.len()), (IndexSource::Built, 3));

        // A damaged cache file is rebuilt, not an error.
        settle();
        age(&dir.join("eel"), 10);
        FolderIndex::open(&dir, Some(&cache)).unwrap();
        let file = cache_file(&cache, &dir).unwrap();
        std::fs::write(&file, b"{ torn").unwrap();
        let (index, source) = FolderIndex::open(&dir, Some(&cache)).unwrap();
        assert_eq!((source, index.len()), (IndexSource::Built, 4));
        let _ = std::fs::remove_dir_all(&root);
    }
}
