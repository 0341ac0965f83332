//! One rule for every command that writes a file: the output never replaces one of the
//! command's inputs. Paths are compared after resolving links and `..`, so `RUN/../RUN/x` and
//! a symlink to the corpus are caught too.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// What a command reads, as the output check sees it.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// A file or folder given by `flag`: the output may be neither it nor (for a file) the
    /// same file under another name.
    Path(&'a str, &'a Path),
    /// A run folder (or its checkpoint file): its checkpoints and journals are its record and
    /// are never an output, nor is the folder itself.
    Run(&'a Path),
    /// A data set given by `flag`: a file, or a folder whose every file may be read (images,
    /// IDX files, shards), so nothing is written anywhere inside it.
    Data(&'a str, &'a Path),
}

/// `out` with its folder resolved (the file itself need not exist yet).
fn resolved(out: &Path) -> PathBuf {
    if let Ok(p) = out.canonicalize() {
        return p;
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (parent.canonicalize(), out.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => out.to_path_buf(),
    }
}

/// A run's own record: what training and evaluation wrote and resume reads.
fn is_run_record(name: &str) -> bool {
    (name.starts_with("checkpoint") && name.ends_with(".safetensors"))
        || name.ends_with(".jsonl")
        || name == "config.toml"
}

/// Refuse `out` (given by `flag`) when writing it would destroy one of `inputs`.
pub fn refuse_output_over_inputs(flag: &str, out: &Path, inputs: &[Input]) -> Result<()> {
    let target = resolved(out);
    for input in inputs {
        match *input {
            Input::Path(input_flag, path) => {
                if path.canonicalize().is_ok_and(|p| p == target) {
                    bail!(
                        "{flag} {} is the {input_flag} input ({}); writing there would destroy \
                         it: choose another path",
                        out.display(),
                        path.display()
                    );
                }
            }
            Input::Data(input_flag, data) => {
                let Ok(data) = data.canonicalize() else {
                    continue;
                };
                if target.starts_with(&data) {
                    bail!(
                        "{flag} {} is {} {input_flag} data set ({}); a data set is never an \
                         output: choose a path outside it",
                        out.display(),
                        if target == data { "the" } else { "inside the" },
                        data.display()
                    );
                }
            }
            Input::Run(run) => {
                let Ok(run) = run.canonicalize() else {
                    continue;
                };
                let dir = if run.is_dir() {
                    run
                } else {
                    run.parent().map(Path::to_path_buf).unwrap_or(run)
                };
                let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if target == dir {
                    bail!(
                        "{flag} {} is the run folder itself; its files would be mixed with or \
                         replace the run's: choose another path",
                        out.display()
                    );
                }
                if target.parent() == Some(dir.as_path()) && is_run_record(name) {
                    bail!(
                        "{flag} {} would replace the run's own {name} (its checkpoint and \
                         records are never an output): choose another path",
                        out.display()
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_onto_inputs_or_a_runs_record_are_refused() {
        let root = std::env::temp_dir().join(format!("pretext-outputs-{}", std::process::id()));
        let run = root.join("run");
        std::fs::create_dir_all(&run).unwrap();
        let checkpoint = run.join("checkpoint.safetensors");
        let corpus = root.join("corpus.txt");
        std::fs::write(&checkpoint, b"x").unwrap();
        std::fs::write(&corpus, b"the cat").unwrap();
        let refused = |out: &Path, inputs: &[Input]| {
            refuse_output_over_inputs("--out", out, inputs)
                .err()
                .map(|e| e.to_string())
        };
        // The corpus, under its own name and through `..`.
        let err = refused(&corpus, &[Input::Path("--corpus", &corpus)]).unwrap();
        assert!(err.contains("--out") && err.contains("--corpus"), "{err}");
        let roundabout = run.join("../corpus.txt");
        assert!(refused(&roundabout, &[Input::Path("--corpus", &corpus)]).is_some());
        // The run's checkpoint, its journal and the folder, whether the run is named by its
        // folder or its checkpoint file.
        for named in [&run, &checkpoint] {
            let inputs = [Input::Run(named)];
            let err = refused(&checkpoint, &inputs).unwrap();
            assert!(err.contains("checkpoint.safetensors"), "{err}");
            assert!(refused(&run.join("checkpoint.prev.safetensors"), &inputs).is_some());
            assert!(refused(&run.join("labels.runs.jsonl"), &inputs).is_some());
            assert!(refused(&run, &inputs).is_some());
            // New files beside them are fine: a report, an embedding.
            assert_eq!(refused(&run.join("report.html"), &inputs), None);
            assert_eq!(
                refused(&run.join("sub/checkpoint.safetensors"), &inputs),
                None
            );
        }
        // Nothing inside a data folder, at any depth; beside it is fine.
        let data = root.join("images");
        std::fs::create_dir_all(data.join("cat")).unwrap();
        let inputs = [Input::Data("--data", &data)];
        for inside in [data.join("train-images-idx3-ubyte"), data.join("cat/x.npy")] {
            let err = refused(&inside, &inputs).unwrap();
            assert!(err.contains("inside the --data data set"), "{err}");
        }
        assert!(refused(&data, &inputs).is_some());
        assert_eq!(refused(&root.join("images.npy"), &inputs), None);
        assert_eq!(
            refused(
                &root.join("vectors.bin"),
                &[Input::Path("--corpus", &corpus)]
            ),
            None
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
