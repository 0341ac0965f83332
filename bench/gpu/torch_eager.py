"""PyTorch eager reference for bench/gpu/run.sh: the training step of pretext's three GPU
workloads, with the same shapes, on one device, inputs already on the device (pretext's numbers
include its data loader; these do not). Prints one JSON object: steps, items/s (images or
tokens), peak device memory.

  python torch_eager.py --workload simclr_cnn|simclr_resnet18|bert_mini --device cuda|cpu

simclr_cnn       pretext's small CNN (32-64-128, BN, ReLU, two 2x2 max pools, global average
                 pool), projection 128-256-128 with BN, NT-Xent (t = 0.5), AdamW; 2 x 256
                 views of 1 x 28 x 28 (configs/quickstart.toml).
simclr_resnet18  ResNet-18 with the CIFAR stem (3x3 conv, no max pool), projection
                 512-2048-128, 2 x 256 views of 1 x 32 x 32.
bert_mini        BERT-mini (4 layers x 256, 4 heads, FFN 1024, post-LN, GELU, tied decoder),
                 batch 16 x 128 tokens, vocabulary 8,000, 15% of positions scored
                 (configs/mlm_mini.toml).
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class SmallCnn(nn.Module):
    def __init__(self, width=32):
        super().__init__()

        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        self.net = nn.Sequential(
            *block(1, width), nn.MaxPool2d(2), *block(width, 2 * width), nn.MaxPool2d(2),
            *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dim = 4 * width

    def forward(self, x):
        return self.net(x)


class Basic(nn.Module):
    def __init__(self, i, o, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(i, o, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(o)
        self.conv2 = nn.Conv2d(o, o, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(o)
        self.short = None
        if stride != 1 or i != o:
            self.short = nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet18(nn.Module):
    """ResNet-18 with the CIFAR stem: a 3x3 convolution, no max pool."""

    def __init__(self, channels=1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        layers, i = [], 64
        for o, stride in [(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)]:
            layers.append(Basic(i, o, stride))
            i = o
        self.blocks = nn.Sequential(*layers)
        self.dim = 512

    def forward(self, x):
        return F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)


def projection(dim, hidden, out):
    return nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


def nt_xent(z1, z2, t=0.5):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / t
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


class BertMini(nn.Module):
    def __init__(self, vocab=8000, hidden=256, layers=4, heads=4, ffn=1024, max_len=128):
        super().__init__()
        self.words = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(max_len, hidden)
        self.norm = nn.LayerNorm(hidden)
        layer = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.1, activation="gelu",
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        h = self.encoder(self.norm(self.words(ids) + self.positions(pos)))
        return self.head(h) @ self.words.weight.T + self.bias


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True, choices=["simclr_cnn", "simclr_resnet18", "bert_mini"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    if a.workload == "bert_mini":
        model = BertMini().to(dev)
        batch, length, vocab = 16, 128, 8000
        ids = torch.randint(5, vocab, (batch, length), device=dev)
        scored = torch.rand(batch, length, device=dev) < 0.15

        def step():
            logits = model(ids)
            return F.cross_entropy(logits[scored], ids[scored])

        items = batch * length
    else:
        if a.workload == "simclr_cnn":
            backbone, size, hidden = SmallCnn(), 28, 256
        else:
            backbone, size, hidden = ResNet18(), 32, 2048
        head = projection(backbone.dim, hidden, 128)
        model = nn.Sequential(backbone, head).to(dev)
        batch = 256
        views = torch.randn(2 * batch, 1, size, size, device=dev)

        def step():
            z = model(views)
            return nt_xent(z[:batch], z[batch:])

        items = batch
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-6)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            sync()
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = step()
        loss.backward()
        opt.step()
    sync()
    seconds = time.perf_counter() - start
    assert math.isfinite(loss.item())
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
    print(json.dumps({"workload": a.workload, "device": a.device, "torch": torch.__version__,
                      "steps": a.steps, "items_per_sec": a.steps * items / seconds,
                      "peak_mib": peak}))


if __name__ == "__main__":
    main()
