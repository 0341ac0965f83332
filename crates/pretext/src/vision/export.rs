//! Backbones for PyTorch, as safetensors state dicts whose metadata holds the Python that builds
//! the model to load them into (and the normalisation the images need):
//! - `--format torchvision`: a ResNet that torchvision's `resnet18()` / `resnet50()` load with
//!   `load_state_dict` once their classifier is replaced by `Identity` (and, for a CIFAR stem or
//!   grey images, their first conv and pooling swapped as the metadata says);
//! - `--format timm`: a ViT that timm's `VisionTransformer` of the same size loads (no head).
//!
//! `bench/export/check_torchvision.sh` and `check_timm.sh` check that PyTorch then computes
//! pretext's features.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, bail};
use safetensors::tensor::{Dtype, TensorView};

use super::backbones::Backbone;
use super::backbones::vit::timm_tensors;
use super::checkpoint::ImageCheckpoint;
use crate::core::checkpoint::{NamedTensor, write_atomic};

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Export {
    pub arch: String,
    /// Entries of the state dict (weights, batch-norm statistics and counters).
    pub tensors: usize,
    /// The Python that builds the matching torchvision model.
    pub model: String,
}

/// Write `ckpt`'s ResNet backbone to `out` under torchvision's names.
pub fn export_torchvision(ckpt: &ImageCheckpoint, out: &Path) -> Result<Export> {
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
    // torchvision's batch norms also count the batches they saw; 0 changes nothing at
    // inference and lets a strict load_state_dict succeed.
    let counters = tensors
        .iter()
        .filter_map(|t| t.name.strip_suffix(".running_var"))
        .map(|prefix| format!("{prefix}.num_batches_tracked"))
        .collect();
    write_state_dict(ckpt, out, "torchvision", arch, model, tensors, counters)
}

/// Write `ckpt`'s ViT backbone to `out` under timm's names.
pub fn export_timm(ckpt: &ImageCheckpoint, out: &Path) -> Result<Export> {
    let (Backbone::Vit(vit), Some(shape)) = (&ckpt.backbone, ckpt.config.backbone.vit_shape())
    else {
        bail!(
            "{}: backbone.arch = \"{}\"; the timm export covers the ViTs (vit_tiny, vit_small)",
            ckpt.dir.display(),
            ckpt.config.backbone.arch
        );
    };
    let (channels, height, width) = ckpt.shape;
    let pool = if shape.mean_pool { "avg" } else { "token" };
    // pretext pads images to whole patches at the bottom and right, as timm's dynamic padding.
    let padded = !(height.is_multiple_of(shape.patch) && width.is_multiple_of(shape.patch));
    let model = format!(
        "model = timm.models.vision_transformer.VisionTransformer(img_size=({height}, {width}), \
         patch_size={}, in_chans={channels}, num_classes=0, embed_dim={}, depth={}, \
         num_heads={}, mlp_ratio=4.0, qkv_bias=True, class_token=True, global_pool=\"{pool}\", \
         fc_norm=False, dynamic_img_pad={})",
        shape.patch,
        shape.dim,
        shape.depth,
        shape.heads,
        if padded { "True" } else { "False" }
    );
    let arch = ckpt.config.backbone.arch.clone();
    write_state_dict(
        ckpt,
        out,
        "timm",
        arch,
        model,
        timm_tensors(vit)?,
        Vec::new(),
    )
}

/// `tensors` (f32) and `zero_counters` (i64 scalars of 0) as a safetensors file at `out`, with
/// the format, the model code and the checkpoint's normalisation in its metadata.
fn write_state_dict(
    ckpt: &ImageCheckpoint,
    out: &Path,
    format: &str,
    arch: String,
    model: String,
    tensors: Vec<NamedTensor>,
    zero_counters: Vec<String>,
) -> Result<Export> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            let bytes = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (t.name.clone(), Dtype::F32, t.shape.clone(), bytes)
        })
        .collect();
    owned.extend(
        zero_counters
            .into_iter()
            .map(|name| (name, Dtype::I64, vec![], 0i64.to_le_bytes().to_vec())),
    );
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    let views = owned
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let meta = HashMap::from([
        ("format".to_string(), format.to_string()),
        ("arch".to_string(), arch.clone()),
        ("model".to_string(), model.clone()),
        ("mean".to_string(), serde_json::to_string(&ckpt.mean)?),
        ("std".to_string(), serde_json::to_string(&ckpt.std)?),
    ]);
    let bytes = crate::core::checkpoint::serialize_stable(views, meta)?;
    write_atomic(out, &bytes)?;
    Ok(Export {
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

    /// The names and shapes timm 1.0 gives a 2-block ViT of width 192 on 28x28 grey images
    /// with patch 4, written by bench/export/check_timm.sh.
    #[test]
    fn vit_tensors_carry_timms_names_and_shapes() {
        use super::super::backbones::vit::{Vit, VitShape, timm_tensors};
        let want: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/timm_vit_keys.json")).unwrap();
        let mut theirs: Vec<(String, Vec<usize>)> = want
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let shape = v.as_array().unwrap().iter();
                (
                    k.clone(),
                    shape.map(|d| d.as_u64().unwrap() as usize).collect(),
                )
            })
            .collect();
        theirs.sort();
        for learned_positions in [false, true] {
            let shape = VitShape {
                dim: 192,
                depth: 2,
                heads: 3,
                patch: 4,
                learned_positions,
                mean_pool: false,
            };
            let vit = Vit::new(&shape, (1, 28, 28), &Device::flex());
            let mut ours: Vec<(String, Vec<usize>)> = timm_tensors(&vit)
                .unwrap()
                .into_iter()
                .map(|t| {
                    assert_eq!(
                        t.values.len(),
                        t.shape.iter().product::<usize>(),
                        "{}",
                        t.name
                    );
                    (t.name, t.shape)
                })
                .collect();
            ours.sort();
            assert_eq!(ours, theirs, "learned positions: {learned_positions}");
        }
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
