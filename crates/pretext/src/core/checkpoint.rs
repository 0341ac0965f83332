//! Checkpoints: one safetensors file holding the model (`model/<path>`), the optimizer state
//! (`optim/<path>#first|second`) and a JSON metadata entry (config, step, data position).
//!
//! Files are written to a temporary name in the same folder, synced, then renamed over the old
//! one, so a crash leaves either the previous checkpoint or the new one, never half of one; the
//! one before is kept as `checkpoint.prev.safetensors`. An xxh3 checksum of every tensor is
//! stored beside the metadata and verified on load, so flipped bits are an error, not silently
//! wrong weights.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// A tensor with its path in the module tree.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

#[derive(Default)]
struct Collect {
    stack: Vec<String>,
    out: Vec<NamedTensor>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let values = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        self.out.push(NamedTensor {
            name: self.stack.join("."),
            shape,
            values,
        });
    }
}

/// Every float tensor (parameters and buffers) of `module`, by path.
pub fn module_tensors<M: Module>(module: &M) -> Vec<NamedTensor> {
    let mut c = Collect::default();
    module.visit(&mut c);
    c.out
}

struct Assign<'a> {
    stack: Vec<String>,
    tensors: &'a HashMap<String, &'a NamedTensor>,
    errors: Vec<String>,
    used: usize,
}

impl ModuleMapper for Assign<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.stack.join(".");
        let Some(stored) = self.tensors.get(&name) else {
            self.errors.push(format!("missing tensor '{name}'"));
            return param;
        };
        let want = param.lazy_shape().dims::<D>().to_vec();
        if stored.shape != want {
            self.errors.push(format!(
                "tensor '{name}' has shape {:?}, the model expects {want:?}",
                stored.shape
            ));
            return param;
        }
        self.used += 1;
        param.map(|old| {
            let require_grad = old.is_require_grad();
            let device = old.device();
            let t = Tensor::<D>::from_data(
                TensorData::new(stored.values.clone(), stored.shape.clone()),
                &device,
            );
            if require_grad { t.require_grad() } else { t }
        })
    }
}

/// Load `tensors` into `module` by path; every tensor of the module must be present with the
/// right shape.
pub fn load_module<M: Module>(module: M, tensors: &[NamedTensor]) -> Result<M> {
    let map: HashMap<String, &NamedTensor> = tensors.iter().map(|t| (t.name.clone(), t)).collect();
    let mut assign = Assign {
        stack: Vec::new(),
        tensors: &map,
        errors: Vec::new(),
        used: 0,
    };
    let module = module.map(&mut assign);
    if !assign.errors.is_empty() {
        bail!(
            "checkpoint does not fit the model: {}",
            assign.errors.join("; ")
        );
    }
    Ok(module)
}

/// Everything a checkpoint holds.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub model: Vec<NamedTensor>,
    pub optimizer: Vec<(String, Vec<f32>)>,
    pub meta: serde_json::Value,
}

const META_KEY: &str = "pretext";
/// Metadata key of the checksum over every tensor (name, shape, bytes, in name order).
const CHECKSUM_KEY: &str = "pretext.xxh3";

/// The previous checkpoint kept beside `path` (`checkpoint.prev.safetensors`).
pub fn previous_checkpoint(path: &Path) -> std::path::PathBuf {
    path.with_extension("prev.safetensors")
}

/// xxh3 over (name, shape, bytes) of every tensor, in name order.
fn tensor_checksum<'a>(tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>) -> String {
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (name, shape, bytes) in sorted {
        h.update(name.as_bytes());
        for d in shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(bytes);
    }
    format!("{:016x}", h.digest())
}

/// safetensors bytes of `views` with `meta`, the same bytes for the same tensors and metadata
/// in every run: safetensors writes the metadata map in its (randomised) hash order, so the
/// header is rewritten with every object's keys sorted. Same content, same length, so the
/// offsets and padding stay as they were; readers do not depend on key order.
pub fn serialize_stable<V: safetensors::View>(
    views: Vec<(String, V)>,
    meta: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut bytes = safetensors::tensor::serialize(views, Some(meta))?;
    let Some(len) = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(|b| u64::from_le_bytes(b) as usize)
    else {
        return Ok(bytes);
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return Ok(bytes);
    };
    let text = String::from_utf8_lossy(header);
    let trimmed = text.trim_end_matches(' ');
    let Ok(value) = serde_json::from_str::<serde_json::Value>(trimmed) else {
        return Ok(bytes);
    };
    let mut canonical = String::with_capacity(trimmed.len());
    write_sorted_json(&value, &mut canonical);
    if canonical.len() == trimmed.len() {
        bytes[8..8 + canonical.len()].copy_from_slice(canonical.as_bytes());
    }
    Ok(bytes)
}

/// Compact JSON with every object's keys in sorted order.
fn write_sorted_json(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::from(key.as_str()).to_string());
                out.push(':');
                write_sorted_json(&map[key], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `path` if nothing is there, else the first free `stem-2.ext`, `stem-3.ext`, ...: where a
/// file that must be kept goes without replacing one kept before it.
pub fn unused_path(path: &Path) -> PathBuf {
    if !path.exists() {
        return path.to_path_buf();
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (2..)
        .map(|n| path.with_file_name(format!("{stem}-{n}{ext}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| path.to_path_buf())
}

/// Write `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_atomically(path, bytes, || Ok(()))
}

/// [`write_atomic`], calling `before_rename` once the new bytes are safely on disk and just
/// before they replace `path`; on a full disk nothing has been touched by then.
fn replace_atomically(
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_orphaned_temporaries(dir, &name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })()
    .with_context(|| format!("cannot write {}", path.display()));
    let result = written.and_then(|()| before_rename()).and_then(|()| {
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else if let Ok(d) = std::fs::File::open(dir) {
        // The rename itself survives a power cut only once the folder is synced.
        let _ = d.sync_all();
    }
    result
}

/// Remove the temporary files (or folders) of `name` that writers killed before their rename
/// left in `dir` (`.NAME.tmp-PID` of a process that no longer runs), so that a file written
/// outside a run folder's lock (an export, a report, a token cache) does not gather them. Only
/// where `/proc` tells which processes run.
pub fn remove_orphaned_temporaries(dir: &Path, name: &str) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let pid = file
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !proc.join(pid.to_string()).exists()
        {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}

/// Remove the temporary files a killed writer left in `dir` (`.NAME.tmp-PID`, see
/// [`write_atomic`]); call it only while holding the folder's lock, so none is in use. Returns
/// what was removed.
pub fn remove_stale_temporaries(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') && n.contains(".tmp-"))
        })
        .filter(|p| std::fs::remove_file(p).is_ok())
        .collect()
}

/// The xxh3 hash of a file's bytes as 16 hex digits (for a run folder: of its checkpoint), to
/// tell whether two runs of an evaluation saw the same file.
pub fn content_hash(path: &Path) -> Result<String> {
    let path = if path.is_dir() {
        path.join("checkpoint.safetensors")
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)))
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Checkpoint {
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for t in &self.model {
            owned.push((
                format!("model/{}", t.name),
                t.shape.clone(),
                f32_bytes(&t.values),
            ));
        }
        for (name, values) in &self.optimizer {
            owned.push((
                format!("optim/{name}"),
                vec![values.len()],
                f32_bytes(values),
            ));
        }
        let views = owned
            .iter()
            .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        let checksum = tensor_checksum(owned.iter().map(|(n, s, b)| (n.as_str(), &s[..], &b[..])));
        let meta = HashMap::from([
            (META_KEY.to_string(), self.meta.to_string()),
            (CHECKSUM_KEY.to_string(), checksum),
        ]);
        let bytes = serialize_stable(views, meta)?;
        // The checkpoint being replaced becomes the previous one, a fallback if this one is ever
        // damaged: once the new bytes are on disk (so a full disk leaves both as they were), a
        // hard link then two renames, so at every instant `path` exists, whole.
        replace_atomically(path, &bytes, || {
            if !path.is_file() {
                return Ok(());
            }
            let prev = previous_checkpoint(path);
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let link = path.with_file_name(format!(".{name}.prev.tmp-{}", std::process::id()));
            let _ = std::fs::remove_file(&link);
            std::fs::hard_link(path, &link)
                .and_then(|()| std::fs::rename(&link, &prev))
                .with_context(|| format!("cannot keep {} as {}", path.display(), prev.display()))
        })
    }

    pub fn load(path: &Path) -> Result<Checkpoint> {
        let path = if path.is_dir() {
            path.join("checkpoint.safetensors")
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&path)
            .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
        let parse = || -> Result<Checkpoint> {
            let (_, header) = SafeTensors::read_metadata(&bytes)?;
            let meta_text = header
                .metadata()
                .as_ref()
                .and_then(|m| m.get(META_KEY))
                .context("not a pretext checkpoint (no 'pretext' metadata)")?;
            let meta: serde_json::Value = serde_json::from_str(meta_text)?;
            let st = SafeTensors::deserialize(&bytes)?;
            if let Some(stored) = header.metadata().as_ref().and_then(|m| m.get(CHECKSUM_KEY)) {
                let tensors = st.tensors();
                let actual = tensor_checksum(
                    tensors
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.shape(), v.data())),
                );
                if &actual != stored {
                    let prev = previous_checkpoint(&path);
                    bail!(
                        "checksum mismatch (stored {stored}, computed {actual}): the file was \
                         damaged after it was written. {}",
                        if prev.is_file() {
                            format!(
                                "The previous checkpoint is {}: move it over this one to resume \
                                 or evaluate from it",
                                prev.display()
                            )
                        } else {
                            "No previous checkpoint is kept beside it".to_string()
                        }
                    );
                }
            }
            let mut model = Vec::new();
            let mut optimizer = Vec::new();
            for (name, view) in st.tensors() {
                if view.dtype() != Dtype::F32 {
                    bail!("tensor '{name}' is {:?}, expected F32", view.dtype());
                }
                let values: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                if let Some(n) = name.strip_prefix("model/") {
                    // Training never saves such weights; a file holding them was written
                    // elsewhere or by a run that diverged, and every output read from it
                    // would be NaN.
                    if values.iter().any(|v| !v.is_finite()) {
                        bail!(
                            "weight '{n}' holds NaN or infinity: a diverged model, which no \
                             evaluation can use"
                        );
                    }
                    model.push(NamedTensor {
                        name: n.to_string(),
                        shape: view.shape().to_vec(),
                        values,
                    });
                } else if let Some(n) = name.strip_prefix("optim/") {
                    optimizer.push((n.to_string(), values));
                }
            }
            model.sort_by(|a, b| a.name.cmp(&b.name));
            optimizer.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(Checkpoint {
                model,
                optimizer,
                meta,
            })
        };
        parse().with_context(|| format!("{} is not a valid pretext checkpoint", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn module_round_trip_and_shape_errors() {
        let device = Device::flex();
        let a: Linear = LinearConfig::new(3, 2).init(&device);
        let ckpt = Checkpoint {
            model: module_tensors(&a),
            optimizer: vec![("weight#first".into(), vec![1.0, 2.0])],
            meta: serde_json::json!({"step": 7}),
        };
        let dir = crate::vision::data::tests::tempdir("ckpt");
        let path = dir.join("c.safetensors");
        ckpt.save(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back.meta["step"], 7);
        assert_eq!(back.optimizer, ckpt.optimizer);
        let b: Linear = LinearConfig::new(3, 2).init(&device);
        let b = load_module(b, &back.model).unwrap();
        assert_eq!(module_tensors(&b), module_tensors(&a));
        let wrong: Linear = LinearConfig::new(4, 2).init(&device);
        let err = load_module(wrong, &back.model).unwrap_err().to_string();
        assert!(err.contains("weight") && err.contains("shape"), "{err}");
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        std::fs::write(&path, b"garbage").unwrap();
        assert!(format!("{:#}", Checkpoint::load(&path).unwrap_err()).contains("c.safetensors"));
        // A killed writer's temporary file goes at the next write of that file; a running
        // process's stays.
        let orphan = dir.join(format!(".c.safetensors.tmp-{}", u32::MAX - 1));
        let live = dir.join(".c.safetensors.tmp-1");
        std::fs::write(&orphan, b"half").unwrap();
        std::fs::write(&live, b"in use").unwrap();
        ckpt.save(&path).unwrap();
        assert!(!orphan.exists() && live.exists());
        std::fs::remove_file(&live).unwrap();
        // The same tensors and metadata give the same bytes, whatever the hash order of the
        // metadata map (two keys: a coin flip per save without sorting).
        let bytes = |c: &Checkpoint| {
            c.save(&path).unwrap();
            std::fs::read(&path).unwrap()
        };
        let first = bytes(&ckpt);
        for _ in 0..12 {
            assert!(
                bytes(&ckpt) == first,
                "checkpoint bytes differ between saves"
            );
        }
        assert_eq!(Checkpoint::load(&path).unwrap().meta["step"], 7);
        // Weights that diverged are refused by every reader, naming the tensor.
        let mut diverged = ckpt.clone();
        diverged.model[0].values[1] = f32::NAN;
        diverged.save(&path).unwrap();
        let err = format!("{:#}", Checkpoint::load(&path).unwrap_err());
        let name = &diverged.model[0].name;
        assert!(
            err.contains(&format!("'{name}'")) && err.contains("NaN"),
            "{err}"
        );
    }

    #[test]
    fn flipped_bits_are_caught_and_the_previous_checkpoint_is_kept() {
        let dir = crate::vision::data::tests::tempdir("ckpt-sum");
        let path = dir.join("checkpoint.safetensors");
        let save = |step: u64, value: f32| {
            Checkpoint {
                model: vec![NamedTensor {
                    name: "w".into(),
                    shape: vec![4],
                    values: vec![value; 4],
                }],
                optimizer: Vec::new(),
                meta: serde_json::json!({ "step": step }),
            }
            .save(&path)
            .unwrap()
        };
        save(1, 1.0);
        assert!(
            !previous_checkpoint(&path).exists(),
            "nothing to keep on the first save"
        );
        save(2, 2.0);
        let prev = previous_checkpoint(&path);
        assert_eq!(prev, dir.join("checkpoint.prev.safetensors"));
        assert_eq!(Checkpoint::load(&prev).unwrap().meta["step"], 1);
        assert_eq!(
            Checkpoint::load(&path).unwrap().model[0].values,
            vec![2.0; 4]
        );

        // Flip one bit of the tensor data (after the 8-byte length and the JSON header).
        let mut bytes = std::fs::read(&path).unwrap();
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        bytes[8 + header + 1] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let err = format!("{:#}", Checkpoint::load(&path).unwrap_err());
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(
            err.contains("checkpoint.prev.safetensors"),
            "names the fallback: {err}"
        );
        assert_eq!(
            Checkpoint::load(&prev).unwrap().model[0].values,
            vec![1.0; 4]
        );
    }
}
