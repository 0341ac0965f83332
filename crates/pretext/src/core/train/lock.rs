//! One process per run folder: an OS file lock (`flock`), so two runs (or a run and a label
//! study) cannot write one folder's checkpoint and metrics at once. The kernel releases it when
//! the process dies, so a `kill -9` leaves no stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Held while alive.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// The lock file inside a run folder.
pub const LOCK_FILE: &str = ".pretext.lock";

impl RunLock {
    /// Lock `dir` (created if missing) for `what` (shown to a second process), or refuse with
    /// the holder's PID and what it is doing.
    pub fn acquire(dir: &Path, what: &str) -> Result<RunLock> {
        if dir.exists() && !dir.is_dir() {
            bail!(
                "{} is a file, not a folder: a run needs a folder of its own (choose another \
                 path)",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                bail!(
                    "{} is in use by another pretext process ({}); wait for it to end, or use \
                     another folder",
                    dir.display(),
                    holder.trim()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Tell a second process who holds it (written after locking, so never by two at once).
        let note = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            write!(file, "pid {}: {what}", std::process::id())?;
            file.sync_data()
        };
        note(&mut file).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(RunLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = std::env::temp_dir().join(format!("pretext-lock-{}", std::process::id()));
        let first = RunLock::acquire(&dir, "pretrain simclr").unwrap();
        // Another open file description of the same file: what another process would have.
        let err = RunLock::acquire(&dir, "eval labels")
            .unwrap_err()
            .to_string();
        assert!(err.contains("in use by another pretext process"), "{err}");
        assert!(
            err.contains(&format!("pid {}: pretrain simclr", std::process::id())),
            "{err}"
        );
        assert!(err.contains(&dir.display().to_string()), "{err}");
        drop(first);
        let again = RunLock::acquire(&dir, "eval labels");
        assert!(again.is_ok(), "released on drop");
        drop(again);
        // A file where the folder should be is named as such, not "File exists".
        let file = dir.join("not-a-folder");
        std::fs::write(&file, "x").unwrap();
        let err = RunLock::acquire(&file, "pretrain").unwrap_err().to_string();
        assert!(err.contains("is a file, not a folder"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
