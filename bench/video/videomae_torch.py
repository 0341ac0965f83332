"""VideoMAE pretraining speed in PyTorch: Hugging Face's VideoMAEForPreTraining with the tiny
configuration of configs/video_videomae.toml (64x64 grey clips of 10 frames, 2x8x8 tubelets,
128 wide, 4 deep, 4 heads; decoder 64 wide, 2 deep; 90% tube masking; per-patch normalised
targets), AdamW at batch 32, clips taken from the same Moving Fashion-MNIST file. Prints one
JSON line with clips/s over the steps after the warm-up."""
import argparse
import gzip
import json
import time

import numpy as np
import torch
from transformers import VideoMAEConfig, VideoMAEForPreTraining

p = argparse.ArgumentParser()
p.add_argument("--data", required=True, help="train-videos-idx4-ubyte.gz")
p.add_argument("--steps", type=int, default=60)
p.add_argument("--warmup", type=int, default=10)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--frames", type=int, default=10)
args = p.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

raw = gzip.open(args.data).read()
rank = raw[3]
dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
videos = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)
n, length, size = dims[0], dims[1], dims[2]

cfg = VideoMAEConfig(
    image_size=size, patch_size=8, num_channels=1, num_frames=args.frames, tubelet_size=2,
    hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
    decoder_hidden_size=64, decoder_num_hidden_layers=2, decoder_num_attention_heads=4,
    decoder_intermediate_size=256, norm_pix_loss=True, use_mean_pooling=True, qkv_bias=True,
)
model = VideoMAEForPreTraining(cfg)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
rng = np.random.default_rng(0)
space = (size // 8) ** 2
slots = args.frames // 2
masked = round(0.9 * space)


def batch():
    idx = rng.choice(n, args.batch, replace=False)
    starts = rng.integers(0, length - args.frames + 1, args.batch)
    clips = np.stack([videos[i, s : s + args.frames] for i, s in zip(idx, starts)])
    x = torch.from_numpy(clips.astype(np.float32) / 255.0).unsqueeze(2)
    # Tube masking: one spatial mask per clip, repeated over every tubelet slot.
    spatial = np.zeros((args.batch, space), dtype=bool)
    for row in spatial:
        row[rng.permutation(space)[:masked]] = True
    mask = torch.from_numpy(np.tile(spatial, (1, slots)))
    return x, mask


model.train()
for step in range(args.warmup + args.steps):
    if step == args.warmup:
        start = time.perf_counter()
    x, mask = batch()
    loss = model(pixel_values=x, bool_masked_pos=mask).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
seconds = time.perf_counter() - start
print(json.dumps({
    "framework": f"pytorch {torch.__version__} + transformers VideoMAEForPreTraining",
    "steps": args.steps, "clips_per_sec": args.steps * args.batch / seconds,
    "last_loss": loss.item(),
}))
