#!/usr/bin/env python3
"""PyTorch's side of the loader benchmark (docs/data.md): torchvision's ImageFolder and a
DataLoader producing SimCLR's two views at 64x64, as `pretext bench loader` does.

    python bench/data/loader_torch.py --data FOLDER --workers 2 --batches 20 --batch-size 256

The transforms are pretext's SimCLR presets (configs/quickstart.toml; vision/views):
RandomResizedCrop(scale 0.2-1, ratio 3/4-4/3), horizontal flip 0.5, colour jitter
(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale 0.2, then ToTensor and Normalize. Like pretext it
times the batches after the first (which pays for starting the workers).
"""
import argparse
import json
import time

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


class TwoViews:
    def __init__(self, t):
        self.t = t

    def __call__(self, x):
        return self.t(x), self.t(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="ImageFolder root (class subfolders)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    torch.set_num_threads(1)
    view = transforms.Compose([
        transforms.RandomResizedCrop(a.size, scale=(0.2, 1.0), antialias=True),
        transforms.RandomHorizontalFlip(),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.ToTensor(),
        transforms.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]),
    ])
    started = time.perf_counter()
    ds = datasets.ImageFolder(a.data, transform=TwoViews(view))
    opened = time.perf_counter() - started
    dl = DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=a.workers,
                    drop_last=True, persistent_workers=a.workers > 0)
    it = iter(dl)
    next(it)
    t = time.perf_counter()
    for _ in range(a.batches):
        next(it)
    seconds = time.perf_counter() - t
    print(json.dumps({"images_per_sec": a.batches * a.batch_size / seconds, "seconds": seconds,
                      "open_seconds": opened, "workers": a.workers, "images": len(ds),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
