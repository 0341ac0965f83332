//! The index a folder streamed from disk keeps in memory in place of its decoded data: each
//! file's path, and its byte size when the folder was listed, so that a file rewritten during
//! a run is refused by name rather than read as something else, and `--resume` can check that
//! it continues on the same files without reading them.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};

pub struct FileIndex {
    dir: PathBuf,
    files: Vec<PathBuf>,
    sizes: Vec<u64>,
}

impl FileIndex {
    /// The folder a run trains on: `root/train` when there is one, else `root`.
    pub fn train_dir(root: &Path) -> PathBuf {
        let train = root.join("train");
        if train.is_dir() { train } else { root.into() }
    }

    /// `files` (under `dir`), with their sizes now.
    pub fn new(dir: &Path, files: Vec<PathBuf>) -> Result<FileIndex> {
        let sizes = files
            .iter()
            .map(|path| {
                std::fs::metadata(path)
                    .map(|m| m.len())
                    .map_err(|e| anyhow!("{}: {e}", path.display()))
            })
            .collect::<Result<Vec<u64>>>()?;
        Ok(FileIndex {
            dir: dir.into(),
            files,
            sizes,
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, i: usize) -> &Path {
        &self.files[i]
    }

    /// The files at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> FileIndex {
        FileIndex {
            dir: self.dir.clone(),
            files: indices.iter().map(|&i| self.files[i].clone()).collect(),
            sizes: indices.iter().map(|&i| self.sizes[i]).collect(),
        }
    }

    /// File `i`'s path, or an error naming it when its size is not what it was when the
    /// folder was listed.
    pub fn unchanged(&self, i: usize) -> Result<&Path> {
        let path = &self.files[i];
        let size = std::fs::metadata(path)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?
            .len();
        if size != self.sizes[i] {
            bail!(
                "{}: {size} bytes, {} when the folder was listed: the file changed during the run",
                path.display(),
                self.sizes[i]
            );
        }
        Ok(path)
    }

    /// An xxh3 hash of the files' paths relative to the folder and their byte sizes, to which
    /// a reader adds its labels: what `--resume` checks.
    pub fn hash(&self) -> xxhash_rust::xxh3::Xxh3 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (path, size) in self.files.iter().zip(&self.sizes) {
            let rel = path.strip_prefix(&self.dir).unwrap_or(path);
            h.update(rel.to_string_lossy().as_bytes());
            h.update(&[0]);
            h.update(&size.to_le_bytes());
        }
        h
    }
}
