"""Check `pretext export --format torchvision`: torchvision builds the model the export's
metadata names, loads the state dict strictly, and computes pretext's features of the same
images (max abs difference below 1e-4). Also writes the names and shapes of torchvision's
resnet18() / resnet50() state dicts (classifier left out) to
crates/pretext/tests/fixtures/torchvision_resnet_keys.json, which pretext's unit test compares its
names against. Run by bench/export/check_torchvision.sh; never in CI.

    python check_torchvision.py EXPORT.safetensors FEATURES.npy IDX_IMAGES.gz
"""

import gzip
import json
import pathlib
import sys

import numpy as np
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file

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
with safe_open(export, "pt") as f:
    meta = f.metadata()
model_code = meta["model"]
mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
scope = {"torch": torch, "torchvision": torchvision}
exec(model_code, scope)
model = scope["model"]
model.load_state_dict(load_file(export), strict=True)
model.eval()

want = np.load(features)
with gzip.open(images, "rb") as f:
    raw = f.read()
n, h, w = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 1, h, w)
rows = want.shape[0]
x = torch.from_numpy(pixels[:rows].astype(np.float32) / 255.0)
x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
with torch.no_grad():
    got = torch.cat([model(x[i : i + 250]) for i in range(0, rows, 250)]).numpy()
gap = float(np.abs(got - want).max())
scale = float(np.abs(want).max())
print(
    f"{meta['arch']}: {rows} images, features {got.shape[1]}, max |torch - pretext| = {gap:.2e} "
    f"(largest feature {scale:.2f}); model: {model_code}"
)
sys.exit(0 if gap < 1e-4 else 1)
