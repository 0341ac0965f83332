//! The cache directory shared by every derived-data cache.

use std::path::PathBuf;

/// Where pretext caches what it derives from data (folder indexes, token files):
/// `$PRETEXT_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/pretext`, else `~/.cache/pretext`; `None` when none is known.
pub fn default_cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("PRETEXT_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("pretext")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("pretext")))
}
