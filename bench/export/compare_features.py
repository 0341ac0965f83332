"""What both export checks share: build the model an export's metadata names (its Python, run
with `scope`), load the state dict strictly, and compare its features of the IDX test images with
the ones `pretext embed` wrote.

    gap, scale, meta = compare(EXPORT, FEATURES.npy, IDX_IMAGES.gz, {"torch": torch, ...})
"""

import gzip
import json

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file


def compare(export, features, images, scope):
    """Max |PyTorch - pretext| over every feature, the largest feature, and the metadata."""
    with safe_open(export, "pt") as f:
        meta = f.metadata()
    mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
    exec(meta["model"], scope)
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
    return float(np.abs(got - want).max()), float(np.abs(want).max()), meta, got.shape
