//! `pretext export --format torchvision`: a ResNet backbone as a safetensors state dict that
//! torchvision's `resnet18()` / `resnet50()` load with `load_state_dict` once their classifier is
//! replaced by `Identity` (and, for a CIFAR stem or grey images, their first conv and pooling
//! swapped as the file's metadata says). `bench/export/check_torchvision.sh` checks that
//! PyTorch then computes pretext's features.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, bail};
use safetensors::tensor::{Dtype, TensorView};

use super::backbones::Backbone;
use super::checkpoint::ImageCheckpoint;
use crate::core::checkpoint::write_atomic;

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TorchvisionExport {
    pub arch: String,
    /// Entries of the state dict (weights, batch-norm statistics and counters).
    pub tensors: usize,
    /// The Python that builds the matching torchvision model.
    pub model: String,
}

/// Write `ckpt`'s ResNet backbone to `out` under torchvision's names.
pub fn export_torchvision(ckpt: &ImageCheckpoint, out: &Path) -> Result<TorchvisionExport> {
    let Backbone::ResNet(resnet) = &ckpt.backbone else {
        bail!(
            "{}: backbone.arch = \"{}\"; the torchvision export covers resnet18 and resnet50",
            ckpt.dir.display(),
            ckpt.config.backbone.arch
        );
    };
    let arch = ckpt.config.backbone.arch.clone();
    let channels = ckpt.shape.0;
    let imagenet_stem = ckpt.config.backbone.stem == "imagenet";
    let mut lines = vec![
        format!("model = torchvision.models.{arch}()"),
        "model.fc = torch.nn.Identity()".to_string(),
    ];
    if !imagenet_stem {
        lines.push(format!(
            "model.conv1 = torch.nn.Conv2d({channels}, 64, 3, 1, 1, bias=False)"
        ));
        lines.push("model.maxpool = torch.nn.Identity()".to_string());
    } else if channels != 3 {
        lines.push(format!(
            "model.conv1 = torch.nn.Conv2d({channels}, 64, 7, 2, 3, bias=False)"
        ));
    }
    let model = lines.join("; ");

    let tensors = resnet.torchvision_tensors();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            let bytes = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (t.name.clone(), Dtype::F32, t.shape.clone(), bytes)
        })
        .collect();
    // torchvision's batch norms also count the batches they saw; 0 changes nothing at
    // inference and lets a strict load_state_dict succeed.
    for t in &tensors {
        if let Some(prefix) = t.name.strip_suffix(".running_var") {
            owned.push((
                format!("{prefix}.num_batches_tracked"),
                Dtype::I64,
                vec![],
                0i64.to_le_bytes().to_vec(),
            ));
        }
    }
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    let views = owned
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let meta = HashMap::from([
        ("format".to_string(), "torchvision".to_string()),
        ("arch".to_string(), arch.clone()),
        ("model".to_string(), model.clone()),
        ("mean".to_string(), serde_json::to_string(&ckpt.mean)?),
        ("std".to_string(), serde_json::to_string(&ckpt.std)?),
    ]);
    let bytes = safetensors::tensor::serialize(views, Some(meta))?;
    write_atomic(out, &bytes)?;
    Ok(TorchvisionExport {
        arch,
        tensors: owned.len(),
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::super::backbones::resnet::ResNet;
    use burn::prelude::*;

    /// The names and shapes torchvision 0.24 gives `resnet18()` and `resnet50()` (classifier
    /// left out), written by bench/export/check_torchvision.sh.
    fn torchvision_keys() -> serde_json::Value {
        serde_json::from_str(include_str!(
            "../../tests/fixtures/torchvision_resnet_keys.json"
        ))
        .unwrap()
    }

    #[test]
    fn resnet_tensors_carry_torchvisions_names_and_shapes() {
        let device = Device::flex();
        let want = torchvision_keys();
        for (arch, model) in [
            ("resnet18", ResNet::resnet18(3, true, &device)),
            ("resnet50", ResNet::resnet50(3, true, &device)),
        ] {
            let want = want[arch].as_object().unwrap();
            let mut ours: Vec<(String, Vec<usize>)> = model
                .torchvision_tensors()
                .into_iter()
                .map(|t| (t.name, t.shape))
                .collect();
            // The counters the export adds.
            let counters: Vec<(String, Vec<usize>)> = ours
                .iter()
                .filter_map(|(n, _)| n.strip_suffix(".running_var"))
                .map(|p| (format!("{p}.num_batches_tracked"), vec![]))
                .collect();
            ours.extend(counters);
            ours.sort();
            let mut theirs: Vec<(String, Vec<usize>)> = want
                .iter()
                .map(|(k, v)| {
                    let shape = v
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_u64().unwrap() as usize)
                        .collect();
                    (k.clone(), shape)
                })
                .collect();
            theirs.sort();
            assert_eq!(ours.len(), theirs.len(), "{arch}: tensor count");
            for (o, t) in ours.iter().zip(&theirs) {
                assert_eq!(o, t, "{arch}");
            }
        }
    }
}
