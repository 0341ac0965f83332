"""SimCLR with lightly + PyTorch, matching pretext's configs/quickstart.toml exactly:
small CNN (32-64-128, BN, ReLU, two 2x2 max pools, global average pool), projection head
128-256-128 (Linear-BN-ReLU-Linear), NT-Xent with temperature 0.5, AdamW lr 2e-3 with weight
decay 1e-6 on weights only, 1 warm-up epoch then cosine, batch 256, views: random resized crop
(scale 0.2-1), flip 0.5, colour jitter p=0.8 (0.4, 0.4, 0.4, 0.1), grayscale 0.2, no blur.
Prints one JSON object: images/s of the training loop and weighted kNN accuracy (k=200, t=0.1)."""
import argparse, gzip, json, math, os, struct, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image
import lightly
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform


def read_idx(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    rank = raw[3]
    dims = struct.unpack(">" + "I" * rank, raw[4 : 4 + 4 * rank])
    return np.frombuffer(raw[4 + 4 * rank :], dtype=np.uint8).reshape(dims)


def find(d, stem):
    for name in (stem + ".gz", stem):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    raise FileNotFoundError(stem)


class Views(torch.utils.data.Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i], mode="L"))


class SmallCnn(nn.Module):
    def __init__(self, width=32):
        super().__init__()
        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
        self.net = nn.Sequential(*block(1, width), nn.MaxPool2d(2), *block(width, 2 * width), nn.MaxPool2d(2),
                                 *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


def features(model, images, mean, std):
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(images), 500):
            x = torch.from_numpy(images[s : s + 500]).float().div(255).unsqueeze(1)
            out.append(model((x - mean) / std))
    return torch.cat(out)


def knn(train_f, train_y, test_f, test_y, k=200, t=0.1, classes=10):
    train_f, test_f = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    correct = 0
    for s in range(0, len(test_f), 500):
        sim = test_f[s : s + 500] @ train_f.T
        w, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(w), classes).scatter_add_(1, train_y[idx], (w / t).exp())
        correct += (votes.argmax(1) == test_y[s : s + 500]).sum().item()
    return correct / len(test_f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train_x = read_idx(find(a.data, "train-images-idx3-ubyte"))
    train_y = torch.from_numpy(read_idx(find(a.data, "train-labels-idx1-ubyte")).astype(np.int64))
    test_x = read_idx(find(a.data, "t10k-images-idx3-ubyte"))
    test_y = torch.from_numpy(read_idx(find(a.data, "t10k-labels-idx1-ubyte")).astype(np.int64))
    mean, std = float(train_x.mean() / 255), float(train_x.std() / 255)
    transform = SimCLRTransform(input_size=train_x.shape[1], cj_prob=0.8, cj_strength=0.5, min_scale=0.2,
                                random_gray_scale=0.2, gaussian_blur=0.0, hf_prob=0.5, vf_prob=0.0, rr_prob=0.0,
                                normalize={"mean": [mean], "std": [std]})
    loader = torch.utils.data.DataLoader(Views(train_x, transform), batch_size=a.batch, shuffle=True,
                                         drop_last=True, num_workers=a.threads, persistent_workers=True)
    backbone, head = SmallCnn(), SimCLRProjectionHead(128, 256, 128)
    model = nn.Sequential(backbone, head)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-6}, {"params": no_decay, "weight_decay": 0.0}], lr=2e-3)
    steps = len(loader) * a.epochs
    warm = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, steps - warm)))))
    criterion = NTXentLoss(temperature=0.5)
    start = time.time()
    losses = []
    for epoch in range(a.epochs):
        model.train()
        for (x0, x1) in loader:
            z = model(torch.cat([x0, x1]))
            loss = criterion(z[: len(x0)], z[len(x0) :])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    train_seconds = time.time() - start
    acc = knn(features(backbone, train_x, mean, std), train_y, features(backbone, test_x, mean, std), test_y)
    print(json.dumps({"images_per_sec": steps * a.batch / train_seconds, "train_seconds": train_seconds,
                      "knn": acc, "first_loss": losses[0], "final_loss": losses[-1],
                      "lightly_version": lightly.__version__, "torch_version": torch.__version__}))


if __name__ == "__main__":
    main()
