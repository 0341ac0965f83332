//! Run-time device selection (`--device`), limited to the backends compiled in.

use anyhow::{Result, bail};
use burn::prelude::Device;

/// The backends this build can use.
pub fn available() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "tch") {
        v.extend(["tch", "tch-cuda"]);
    }
    v
}

/// Parse `flex` (alias `cpu`), `wgpu`, `tch` or `tch-cuda[:N]`.
pub fn parse(name: &str) -> Result<Device> {
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => (k, i.parse::<usize>().ok()),
        None => (name, None),
    };
    match kind {
        #[cfg(feature = "flex")]
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" | "gpu" => Ok(Device::wgpu(Default::default())),
        // burn marks its LibTorch backend deprecated; it is still the fastest CPU path here.
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "tch" => Ok(Device::libtorch()),
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "tch-cuda" => Ok(Device::libtorch_cuda(index.unwrap_or(0))),
        _ => {
            let _ = index;
            bail!(
                "--device {name}: not available in this build (available: {}; rebuild with \
                 `--features wgpu` or `--features tch` for the others)",
                available().join(", ")
            )
        }
    }
}
