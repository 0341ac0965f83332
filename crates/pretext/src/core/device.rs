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

/// Parse `flex` (alias `cpu`), `wgpu`, `tch` or `tch-cuda[:N]`. Under `mpirun`, `{local_rank}`
/// stands for this rank's number among the ranks on its machine, so that one command gives each
/// rank its own GPU (`--device 'tch-cuda:{local_rank}'`); outside `mpirun` it is 0.
pub fn parse(name: &str) -> Result<Device> {
    let given = name;
    let name = &name.replace(
        "{local_rank}",
        &crate::core::distributed::local_rank().to_string(),
    );
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => match i.parse::<usize>() {
            Ok(i) => (k, Some(i)),
            Err(_) => bail!("--device {given}: the device number after ':' must be a number"),
        },
        None => (name.as_str(), None),
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

/// Whether `device` is the flex CPU backend, with or without autodiff.
pub fn is_flex(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        use burn::backend::DispatchDevice;
        match device.as_dispatch() {
            DispatchDevice::Flex(_) => true,
            DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_parsed_and_bad_numbers_named() {
        assert!(parse("cpu").is_ok());
        // Outside mpirun the local rank is 0: `cpu:0`.
        assert!(parse("cpu:{local_rank}").is_ok());
        let err = parse("tch-cuda:first").unwrap_err().to_string();
        assert!(
            err.contains("tch-cuda:first") && err.contains("number"),
            "{err}"
        );
        let err = parse("tpu").unwrap_err().to_string();
        assert!(
            err.contains("--device tpu") && err.contains("available"),
            "{err}"
        );
    }
}
