"""The op shapes of `pretext bench ops`, timed in PyTorch: forward alone (no grad) and
forward + backward of sum(op(x)), median of REPEATS calls after one warm-up. Prints one JSON
object. Run by bench/ops/run.sh, beside pretext, with the same thread count."""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--repeats", type=int, default=10)
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)


def median_ms(f):
    f()
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measure(op, *inputs):
    def fwd():
        with torch.no_grad():
            op(*inputs)

    tracked = [t.clone().requires_grad_(True) for t in inputs]

    def both():
        op(*tracked).sum().backward()

    return median_ms(fwd), median_ms(both)


rows = []


def row(model, op, shape, timing):
    rows.append({"model": model, "op": op, "shape": shape,
                 "forward_ms": timing[0], "forward_backward_ms": timing[1]})


convs = [("small_cnn", 512, 1, 32, 28), ("small_cnn", 512, 32, 64, 14), ("small_cnn", 512, 64, 128, 7),
         ("resnet18_cifar", 64, 64, 64, 32), ("resnet18_cifar", 64, 128, 128, 16),
         ("resnet18_cifar", 64, 256, 256, 8), ("resnet18_cifar", 64, 512, 512, 4)]
for model, n, cin, cout, side in convs:
    x, w = torch.randn(n, cin, side, side), torch.randn(cout, cin, 3, 3)
    row(model, "conv2d 3x3", f"{n}x{cin}x{side}x{side} -> {cout}",
        measure(lambda x, w: F.conv2d(x, w, padding=1), x, w))

x = torch.randn(512, 32, 28, 28)
shape = "512x32x28x28"
norm = torch.nn.BatchNorm2d(32).train()
# Training-mode batch norm: the forward alone still uses batch statistics.
row("small_cnn", "batch_norm (train)", shape,
    (median_ms(lambda: norm(x)), measure(lambda t: norm(t), x)[1]))
row("small_cnn", "max_pool2d 2x2", shape, measure(lambda t: F.max_pool2d(t, 2, 2), x))
row("small_cnn", "relu", shape, measure(F.relu, x))
for model, m, k, n in [("small_cnn", 512, 128, 256), ("bert_mini", 2048, 256, 256),
                       ("bert_mini", 2048, 256, 1024), ("bert_mini", 2048, 1024, 256)]:
    row(model, "matmul", f"{m}x{k} . {k}x{n}",
        measure(torch.matmul, torch.randn(m, k), torch.randn(k, n)))
row("bert_mini", "softmax (attention)", "16x4x128x128",
    measure(lambda t: torch.softmax(t, 3), torch.randn(16, 4, 128, 128)))
ln = torch.nn.LayerNorm(256)
row("bert_mini", "layer_norm", "16x128x256", measure(ln, torch.randn(16, 128, 256)))
# Dropout in training mode on attention probabilities (p = 0.1), as BERT's attention applies it.
row("bert_mini", "dropout (attention)", "16x4x128x128",
    measure(lambda t: F.dropout(t, 0.1, training=True), torch.randn(16, 4, 128, 128)))
row("bert_mini", "gelu", "16x128x1024", measure(F.gelu, torch.randn(16, 128, 1024)))


def attention(heads):
    # What transformers' models run: heads split, scaled_dot_product_attention, heads joined.
    def op(q, k, v):
        b, n, d = q.shape
        split = lambda t: t.view(b, n, heads, d // heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return out.transpose(1, 2).reshape(b, n, d)
    return op


for model, (b, n, d, h) in [("bert_mini", (16, 128, 256, 4)), ("videomae_decoder", (32, 321, 64, 4))]:
    row(model, "attention", f"{b}x{n}x{d}, {h} heads",
        measure(attention(h), torch.randn(b, n, d), torch.randn(b, n, d), torch.randn(b, n, d)))

print(json.dumps({"torch_version": torch.__version__, "threads": args.threads, "ops": rows}))
