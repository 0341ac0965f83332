"""Check `pretext export --format timm`: timm builds the VisionTransformer the export's metadata
names, loads the state dict strictly, and computes pretext's features of the same images (max
abs difference below 1e-4). Also writes the names and shapes of the state dict timm gives the
ViT that pretext's unit test builds (28x28 grey images, patch 4, width 192, 2 blocks, 3 heads,
no head) to crates/pretext/tests/fixtures/timm_vit_keys.json, which that test compares its names
against. Run by bench/export/check_timm.sh; never in CI.

    python check_timm.py EXPORT.safetensors FEATURES.npy IDX_IMAGES.gz
"""

import json
import pathlib
import sys

import timm
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from compare_features import compare  # noqa: E402

root = pathlib.Path(__file__).resolve().parents[2]
reference = timm.models.vision_transformer.VisionTransformer(
    img_size=(28, 28), patch_size=4, in_chans=1, num_classes=0, embed_dim=192, depth=2,
    num_heads=3, mlp_ratio=4.0, qkv_bias=True, class_token=True, global_pool="token", fc_norm=False)
keys = {k: list(v.shape) for k, v in reference.state_dict().items()}
fixture = root / "crates/pretext/tests/fixtures/timm_vit_keys.json"
# One tensor per line, so a diff shows what changed.
fixture.write_text("{\n" + ",\n".join(f'  "{k}": {json.dumps(v)}' for k, v in sorted(keys.items())) + "\n}\n")

export, features, images = sys.argv[1:4]
gap, scale, meta, (rows, _) = compare(export, features, images, {"timm": timm, "torch": torch})
print(json.dumps({"model": meta["model"], "images": rows, "max_abs_diff": gap, "max_abs_feature": scale,
                  "timm_version": timm.__version__, "torch_version": torch.__version__}))
if not gap < 1e-4:
    sys.exit(f"features differ by {gap} (threshold 1e-4)")
