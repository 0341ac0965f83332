"""Check `pretext export --format torchvision`: torchvision builds the model the export's
metadata names, loads the state dict strictly, and computes pretext's features of the same
images (max abs difference below 1e-4). Also writes the names and shapes of torchvision's
resnet18() / resnet50() state dicts (classifier left out) to
crates/pretext/tests/fixtures/torchvision_resnet_keys.json, which pretext's unit test compares its
names against. Run by bench/export/check_torchvision.sh; never in CI.

    python check_torchvision.py EXPORT.safetensors FEATURES.npy IDX_IMAGES.gz
"""

import json
import pathlib
import sys

import torch
import torchvision

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from compare_features import compare  # noqa: E402

root = pathlib.Path(__file__).resolve().parents[2]
keys = {}
for arch in ("resnet18", "resnet50"):
    sd = getattr(torchvision.models, arch)().state_dict()
    keys[arch] = {k: list(v.shape) for k, v in sd.items() if not k.startswith("fc.")}
fixture = root / "crates/pretext/tests/fixtures/torchvision_resnet_keys.json"
# One tensor per line, so a diff shows what changed.
arches = [
    f'"{arch}": {{\n'
    + ",\n".join(f'  "{k}": {json.dumps(v)}' for k, v in sorted(shapes.items()))
    + "\n}"
    for arch, shapes in keys.items()
]
fixture.write_text("{\n" + ",\n".join(arches) + "\n}\n")

export, features, images = sys.argv[1:4]
gap, scale, meta, (rows, dim) = compare(export, features, images, {"torch": torch, "torchvision": torchvision})
model_code = meta["model"]
print(
    f"{meta['arch']}: {rows} images, features {dim}, max |torch - pretext| = {gap:.2e} "
    f"(largest feature {scale:.2f}); model: {model_code}"
)
sys.exit(0 if gap < 1e-4 else 1)
