#!/usr/bin/env python3
"""The image folders of the data benchmarks (docs/data.md): JPEGs of mixed sizes in class folders.

    python bench/data/make_folder.py --idx DIR/images/fashion-mnist --out OUT --count 20000

Each image is one Fashion-MNIST training image (taken in order, wrapping around), scaled with
bicubic filtering to a random width and height between --min and --max pixels (48 and 256 by
default, each side drawn on its own, so aspect ratios vary), converted to RGB with a random tint
so that colour matters, and saved as a JPEG (quality 90) under OUT/train/<class>/<index>.jpg;
--test N writes OUT/test/ the same way from the t10k files. The content is learnable (the classes
are Fashion-MNIST's) and the decode cost realistic. Seeded: the same arguments give the same
bytes. Needs Pillow (bench/data/run.sh installs it into its virtual environment).
"""
import argparse
import gzip
import os
import random
import struct

from PIL import Image

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle-boot"]


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return shape, data[4 + 4 * dims:]


def find(directory, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise SystemExit(f"{directory}: no {stem}[.gz]")


def write_split(idx_dir, split, out, count, args, rng):
    (n, h, w), pixels = read_idx(find(idx_dir, f"{split}-images-idx3-ubyte"))
    _, labels = read_idx(find(idx_dir, f"{split}-labels-idx1-ubyte"))
    folder = os.path.join(out, "train" if split == "train" else "test")
    for name in CLASSES:
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    for i in range(count):
        k = i % n
        grey = Image.frombytes("L", (w, h), pixels[k * h * w:(k + 1) * h * w])
        size = (rng.randint(args.min, args.max), rng.randint(args.min, args.max))
        tint = [rng.randint(128, 255) for _ in range(3)]
        rgb = Image.merge("RGB", [grey.point(lambda v, t=t: v * t // 255) for t in tint])
        rgb = rgb.resize(size, Image.BICUBIC)
        rgb.save(os.path.join(folder, CLASSES[labels[k]], f"{i:07d}.jpg"), quality=90)
        if (i + 1) % 10000 == 0:
            print(f"{split}: {i + 1} of {count}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--idx", required=True, help="Fashion-MNIST folder (IDX files)")
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=20000, help="training images")
    p.add_argument("--test", type=int, default=2000, help="test images")
    p.add_argument("--min", type=int, default=48)
    p.add_argument("--max", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not 1 <= args.min <= args.max:
        raise SystemExit(f"--min {args.min} --max {args.max}: need 1 <= min <= max")
    rng = random.Random(args.seed)
    write_split(args.idx, "train", args.out, args.count, args, rng)
    if args.test > 0:
        write_split(args.idx, "t10k", args.out, args.test, args, rng)
    print(f"wrote {args.count} training and {args.test} test JPEGs under {args.out}")


if __name__ == "__main__":
    main()
