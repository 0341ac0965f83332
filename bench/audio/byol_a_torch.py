"""BYOL-A in PyTorch + torchaudio, the same model, views and recipe as
`pretext audio pretrain --config configs/audio_byol_a.toml`, for a side-by-side speed run
(bench/audio/run.sh). Reads the same folder of WAVs, computes the same log-mel front end
(torchaudio's MelSpectrogram: HTK mel scale, no filter normalisation, power 2, centred frames),
then trains for --steps steps and prints one JSON line with the steady-state clips/s.

The model is BYOL-A's AudioNTT2020 (Niizumi et al. 2021, github.com/nttcslab/byol-a) at the
width the pretext config uses; the views are its MixupBYOLA (mixing a random other clip of the
set, ratio up to 0.4, in the power domain) and RandomResizeCrop (virtual canvas 1.0 x 1.5,
scales 0.6-1.5), written here from the paper, not copied.
"""

import argparse
import glob
import json
import math
import os
import random
import time

import numpy as np
import soundfile
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio


def load_logmels(root, seconds, sample_rate=16000):
    files = sorted(glob.glob(os.path.join(root, "train", "*", "*.wav")))
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=512, win_length=400, hop_length=160,
        n_mels=64, f_min=60.0, f_max=7800.0, power=2.0)
    want = int(round(seconds * sample_rate))
    clips = []
    for f in files:
        x, rate = soundfile.read(f, dtype="float32", always_2d=True)
        x = torch.from_numpy(x.mean(axis=1))
        if rate != sample_rate:
            x = torchaudio.functional.resample(x, rate, sample_rate)
        x = F.pad(x, (0, max(0, want - len(x))))[:want]
        clips.append((mel(x) + 1e-6).log())
    return torch.stack(clips)  # [n, 64, frames]


class AudioNTT2020(nn.Module):
    def __init__(self, n_mels=64, width=32, hidden=512, dropout=0.3):
        super().__init__()
        layers = []
        for i in range(3):
            layers += [nn.Conv2d(1 if i == 0 else width, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2, 2)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(width * (n_mels // 8), hidden), nn.ReLU(),
                                nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, x):
        x = self.features(x)                      # [b, c, f, t]
        x = x.permute(0, 3, 1, 2).flatten(2)      # [b, t, c f]
        x = self.fc(x)
        return x.mean(1) + x.amax(1)


def mlp(dim, hidden, out):
    return nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden),
                         nn.ReLU(), nn.Linear(hidden, out))


class Views:
    def __init__(self, data, mean, std, crop):
        self.data, self.mean, self.std, self.crop = data, mean, std, crop

    def random_crop(self, i):
        start = random.randint(0, self.data.shape[2] - self.crop)
        x = self.data[i, :, start:start + self.crop]
        return (x - self.mean[:, None]) / self.std[:, None]

    def view(self, i):
        x = self.random_crop(i)
        b = self.random_crop(random.randrange(len(self.data)))
        lam = random.uniform(0.0, 0.4)
        x = ((1 - lam) * x.exp() + lam * b.exp() + torch.finfo(torch.float32).eps).log()
        bands, frames = x.shape
        canvas = torch.zeros(bands, int(round(frames * 1.5)))
        left = (canvas.shape[1] - frames) // 2
        canvas[:, left:left + frames] = x
        h = min(bands, max(1, int(round(bands * random.uniform(0.6, 1.5)))))
        w = min(canvas.shape[1], max(1, int(round(frames * random.uniform(0.6, 1.5)))))
        top = random.randint(0, bands - h)
        lft = random.randint(0, canvas.shape[1] - w)
        window = canvas[top:top + h, lft:lft + w]
        return F.interpolate(window[None, None], size=(bands, frames), mode="bilinear",
                             align_corners=False)[0]


class Pairs(torch.utils.data.Dataset):
    def __init__(self, views):
        self.views = views

    def __len__(self):
        return len(self.views.data)

    def __getitem__(self, i):
        return self.views.view(i), self.views.view(i)


def normalized_mse(p, z):
    return (2 - 2 * F.cosine_similarity(p, z, dim=-1)).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    started = time.time()
    data = load_logmels(args.data, 1.0)
    front_end = time.time() - started
    mean = data.mean(dim=(0, 2))
    std = data.std(dim=(0, 2)).clamp_min(1e-3)
    encoder = AudioNTT2020()
    online = nn.Sequential(encoder, mlp(512, 1024, 256))
    predictor = mlp(256, 1024, 256)
    target = nn.Sequential(AudioNTT2020(), mlp(512, 1024, 256))
    target.load_state_dict(online.state_dict())
    for p in target.parameters():
        p.requires_grad_(False)
    params = list(online.parameters()) + list(predictor.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(
        Pairs(Views(data, mean, std, 64)), batch_size=args.batch_size, shuffle=True,
        drop_last=True, num_workers=args.workers, persistent_workers=args.workers > 0)
    step, timed_from = 0, None
    total = args.warmup + args.steps
    while step < total:
        for v1, v2 in loader:
            if step == args.warmup:
                timed_from = time.time()
            both = torch.cat([v1, v2])
            p = predictor(online(both))
            with torch.no_grad():
                z = target(both)
            n = len(v1)
            loss = (normalized_mse(p[:n], z[n:]) + normalized_mse(p[n:], z[:n])) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            tau = 1 - (1 - 0.99) * (math.cos(math.pi * step / total) + 1) / 2
            with torch.no_grad():
                for t, o in zip(target.parameters(), online.parameters()):
                    t.mul_(tau).add_(o, alpha=1 - tau)
            step += 1
            if step >= total:
                break
    elapsed = time.time() - timed_from
    print(json.dumps({
        "framework": f"pytorch {torch.__version__} + torchaudio {torchaudio.__version__}",
        "clips": len(data), "steps": args.steps, "batch_size": args.batch_size,
        "clips_per_sec": args.steps * args.batch_size / elapsed,
        "workers": args.workers, "front_end_seconds": front_end, "final_loss": loss.item(),
    }))


if __name__ == "__main__":
    main()
