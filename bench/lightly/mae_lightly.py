"""MAE with lightly + PyTorch, set up as pretext's configs/mae_fmnist.toml, then fine-tuned on a
stratified fraction of the labels as `pretext eval labels` fine-tunes (its `finetune` arm).

The recipe is read from the pretext config (--config, default configs/mae_fmnist.toml), with
pretext's own defaults for the keys it leaves out, so a change to the recipe reaches both tools.
For that file:

Matches pretext exactly
- Encoder: ViT, width 192, 6 pre-LayerNorm blocks (vit_tiny's 12 cut to 6), 3 heads, GELU MLP
  4x wide, no dropout, LayerNorm eps 1e-6 and a final LayerNorm; 4x4 patches (49 for 28x28) as a
  linear patch embedding (a 4x4/4 convolution: the same map); a class token (normal, std 0.02);
  fixed 2-D sin-cos positions (MAE's table, the column first; none on the class token); the
  class token's output is the feature (`pool = "cls"`).
- MAE: 75% of the patches masked per image (37 of 49, 12 stay visible), uniform noise sorted,
  the encoder sees only the visible tokens plus the class token; a decoder of width 128, 2
  blocks, 4 heads, fixed sin-cos positions, a mask token (normal, std 0.02), a final LayerNorm
  and a linear map to the 16 pixels of a patch; the loss is the MSE on the masked patches
  against per-patch normalised pixels (norm_pix_loss: mean 0, unbiased variance + 1e-6).
- Training: AdamW lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 0.05 on parameters of rank
  above 1 only (weights, class and mask tokens; not biases or norms), linear warm-up over the
  first epoch (step s: lr (s + 1) / warm-up), then a half cosine to 0 at the last step; batch
  256, the last partial batch dropped; a fresh shuffle every epoch; no gradient clipping.
- Views: one per image, a random resized crop (scale 0.2-1, ratio 3/4-4/3, torchvision's
  sampling, bilinear without antialiasing, as pretext resamples), a horizontal flip (p 0.5), no
  colour jitter, then normalisation with the training images' mean and (population) std.
- Fine-tuning (`[eval.finetune]` defaults, `[finetune_view]`): per class a seeded order of the
  class's images; fraction F labels the first round(n * F) of each class, 10% of those
  (eval.labels.validation_fraction; none when fewer than 2 would be left) choose the epoch. The
  pretrained encoder (all 49 patches visible) + a fresh linear head, cross-entropy, AdamW lr 1e-3
  for the head and encoder_lr_ratio (1) x that for the encoder, betas (0.9, 0.999), weight decay
  1e-4 on rank > 1 parameters, batch min(128, labelled), the last batch kept, epochs raised until
  they make min_steps (300) steps, warm-up over the first total // 20 steps then cosine; views:
  crop scale 0.5-1 + flip 0.5; after every epoch the validation part is scored and the best
  epoch (ties: the later) is the one whose weights score the whole test split.
- images/s: images through the pretraining loop (steps x batch) over its wall time, data loading
  included, as pretext's summary counts them.

Differs from pretext
- Initialisation: lightly's (MAE's reference): xavier-uniform weights with zero biases, and the
  attention's q, k and v initialised as one 3d x d matrix; pretext (burn) draws the biases from
  the same xavier-uniform as the weights and q, k, v as three d x d matrices (a bound sqrt(2)
  larger). Random streams differ, so masks, crops, shuffles and initial weights differ too.
- lightly's torchvision ViT takes 3-channel images: its patch convolution is replaced by a
  1-channel one (same size, initialised as lightly initialises it). timm is not installed, so
  the encoder is lightly's MaskedVisionTransformerTorchvision and the decoder lightly's
  torchvision-based MAEDecoder, wired as lightly's torchvision MAE example does (lightly's
  random_token_mask, set_at_index / get_at_index, patchify); the decoder predicts the masked
  patches only (pretext predicts all and averages over the masked ones: the same loss).
- lightly's MAETransform resizes bicubically; it is not used, to keep pretext's bilinear views.
- The labelled subset is drawn with numpy's generator, not pretext's ChaCha8 order: the same
  sizes per class, other images. One subset and one seed per run.
- Fine-tuning logs nothing per step; the PyTorch DataLoader runs `--threads` worker processes
  beside `--threads` compute threads (pretext: one loader thread plus its compute pool).

Prints one JSON object: images_per_sec and train_seconds of the pretraining loop, epoch_losses
(mean loss per epoch), finetune_accuracy (test accuracy at the chosen epoch), finetune_fraction
and the fine-tuning details, the settings used, and the lightly / torch / torchvision versions.
"""
import argparse, copy, gzip, json, math, os, struct, sys, time, tomllib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.vision_transformer import VisionTransformer
from torchvision.transforms import v2 as T
import lightly
from lightly.models import utils
from lightly.models.modules import MAEDecoder, MaskedVisionTransformerTorchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simclr_lightly  # noqa: E402  (the IDX reader shared by the lightly benches)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VIT_PRESETS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6)}


def read_idx(path):
    """simclr_lightly's reader, copied out of the file's buffer (torch wants writable arrays)."""
    return simclr_lightly.read_idx(path).copy()


find = simclr_lightly.find


def round_half_up(x):
    """Rust's f64::round for the non-negative values used here (Python's round is banker's)."""
    return int(math.floor(x + 0.5))


def recipe(path):
    """The settings of a pretext MAE config, with pretext's defaults for keys it leaves out."""
    cfg = tomllib.load(open(path, "rb")) if path else {}
    if cfg.get("method", "mae") != "mae":
        sys.exit(f"{path}: method = {cfg['method']!r}, expected 'mae'")
    b, m, o = cfg.get("backbone", {}), cfg.get("mae", {}), cfg.get("optimizer", {})
    arch = b.get("arch", "vit_tiny")
    if arch not in VIT_PRESETS:
        sys.exit(f"{path}: backbone.arch = {arch!r}: MAE needs vit_tiny or vit_small")
    dim, depth, heads = VIT_PRESETS[arch]
    if b.get("position", "sincos") != "sincos" or b.get("pool", "cls") != "cls":
        sys.exit(f"{path}: only backbone.position = 'sincos' and pool = 'cls' are mirrored here")
    if o.get("kind", "adamw") != "adamw" or o.get("schedule", "cosine") != "cosine" or o.get("grad_clip", 0.0):
        sys.exit(f"{path}: only AdamW with the cosine schedule and no clipping is mirrored here")
    if cfg.get("views") or cfg.get("data", {}).get("image_size"):
        sys.exit(f"{path}: view overrides and data.image_size are not mirrored here")
    ev = cfg.get("eval", {})
    ft, lab, fv = ev.get("finetune", {}), ev.get("labels", {}), cfg.get("finetune_view", {})
    for key in ("jitter_p", "grayscale_p", "blur_p", "solarize_p"):
        if fv.get(key, 0.0):
            sys.exit(f"{path}: finetune_view.{key} is not mirrored here")
    if fv.get("crop_size", 0):
        sys.exit(f"{path}: finetune_view.crop_size is not mirrored here")
    return {
        "seed": cfg.get("seed", 0),
        "epochs": cfg.get("epochs", 10),
        "batch_size": cfg.get("batch_size", 256),
        "dim": b.get("dim") or dim,
        "depth": b.get("depth") or depth,
        "heads": b.get("heads") or heads,
        "patch": b.get("patch_size", 4),
        "mask_ratio": m.get("mask_ratio", 0.75),
        "norm_pix_loss": m.get("norm_pix_loss", True),
        "decoder_dim": m.get("decoder_dim", 128),
        "decoder_depth": m.get("decoder_depth", 2),
        "decoder_heads": m.get("decoder_heads", 4),
        "lr": o.get("lr", 1e-3),
        "beta1": o.get("beta1", 0.9),
        "beta2": o.get("beta2", 0.999),
        "eps": o.get("eps", 1e-8),
        "weight_decay": o.get("weight_decay", 1e-6),
        "warmup_epochs": o.get("warmup_epochs", 1.0),
        "warmup_steps": o.get("warmup_steps", 0),
        # ViewConfig::masked_modelling()
        "crop_scale": (0.2, 1.0),
        "crop_ratio": (0.75, 4.0 / 3.0),
        "flip_p": 0.5,
        # [eval.finetune], [eval.labels], [finetune_view]
        "ft_epochs": ft.get("epochs", 10),
        "ft_min_steps": ft.get("min_steps", 300),
        "ft_batch_size": ft.get("batch_size", 128),
        "ft_lr": ft.get("lr", 1e-3),
        "ft_encoder_lr_ratio": ft.get("encoder_lr_ratio", 1.0),
        "ft_weight_decay": ft.get("weight_decay", 1e-4),
        "validation_fraction": lab.get("validation_fraction", 0.1),
        "ft_crop_scale": tuple(fv.get("crop_scale", (0.5, 1.0))),
        "ft_crop_ratio": tuple(fv.get("crop_ratio", (0.75, 4.0 / 3.0))),
        "ft_flip_p": fv.get("flip_p", 0.5),
    }


def view(size, scale, ratio, flip_p, mean, std):
    """pretext's view: random resized crop (bilinear, no antialias), flip, normalise."""
    steps = [T.RandomResizedCrop(size, scale=scale, ratio=ratio,
                                 interpolation=T.InterpolationMode.BILINEAR, antialias=False)]
    if flip_p > 0:
        steps.append(T.RandomHorizontalFlip(flip_p))
    steps.append(T.Normalize([mean], [std]))
    return T.Compose(steps)


class Views(torch.utils.data.Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = torch.from_numpy(self.images[i]).float().div_(255).unsqueeze(0)
        return self.transform(x)


def vit_encoder(r, side, channels):
    """lightly's masked ViT on torchvision's VisionTransformer with pretext's sizes."""
    vit = VisionTransformer(image_size=side, patch_size=r["patch"], num_layers=r["depth"],
                            num_heads=r["heads"], hidden_dim=r["dim"], mlp_dim=4 * r["dim"],
                            dropout=0.0, attention_dropout=0.0)
    # torchvision's patch convolution takes 3 channels; Fashion-MNIST has one.
    vit.conv_proj = nn.Conv2d(channels, r["dim"], kernel_size=r["patch"], stride=r["patch"])
    nn.init.zeros_(vit.conv_proj.bias)
    vit.heads = nn.Identity()
    # Xavier weights, zero biases, class token N(0, 0.02), frozen 2-D sin-cos positions.
    return MaskedVisionTransformerTorchvision(vit=vit, pos_embed_initialization="sincos")


class MAE(nn.Module):
    """lightly's torchvision MAE example (examples/pytorch/mae.py before timm), pretext's sizes."""

    def __init__(self, r, side, channels):
        super().__init__()
        self.mask_ratio, self.patch, self.norm_pix = r["mask_ratio"], r["patch"], r["norm_pix_loss"]
        self.backbone = vit_encoder(r, side, channels)
        self.sequence_length = self.backbone.sequence_length
        self.mask_token = nn.Parameter(torch.zeros(1, 1, r["decoder_dim"]))
        nn.init.normal_(self.mask_token, std=0.02)
        self.decoder = MAEDecoder(seq_length=self.sequence_length, num_layers=r["decoder_depth"],
                                  num_heads=r["decoder_heads"], embed_input_dim=r["dim"],
                                  hidden_dim=r["decoder_dim"], mlp_dim=4 * r["decoder_dim"],
                                  out_dim=channels * r["patch"] ** 2, dropout=0.0, attention_dropout=0.0)

    def forward(self, images):
        b = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask(size=(b, self.sequence_length),
                                                     mask_ratio=self.mask_ratio, device=images.device)
        x_encoded = self.backbone.encode(images=images, idx_keep=idx_keep)
        x_decode = self.decoder.embed(x_encoded)
        x_masked = utils.repeat_token(self.mask_token, (b, self.sequence_length))
        x_masked = utils.set_at_index(x_masked, idx_keep, x_decode.type_as(x_masked))
        x_decoded = self.decoder.decode(x_masked)
        x_pred = self.decoder.predict(utils.get_at_index(x_decoded, idx_mask))
        target = utils.get_at_index(utils.patchify(images, self.patch), idx_mask - 1)
        if self.norm_pix:
            target = utils.normalize_mean_var(target, dim=-1, eps=1e-6)
        return F.mse_loss(x_pred, target)


def cosine(step, warmup, total):
    """pretext's cosine_lr with peak 1."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * t))


def adamw(groups, betas, eps, weight_decay):
    """AdamW with decay on rank > 1 parameters only; groups: [(module, lr)]."""
    params = []
    for module, lr in groups:
        ps = [p for p in module.parameters() if p.requires_grad]
        params.append({"params": [p for p in ps if p.ndim > 1], "weight_decay": weight_decay, "lr": lr})
        params.append({"params": [p for p in ps if p.ndim <= 1], "weight_decay": 0.0, "lr": lr})
    return torch.optim.AdamW([g for g in params if g["params"]], betas=betas, eps=eps)


def label_subset(labels, fraction, validation_fraction, rng):
    """pretext's label_subsets for one fraction: (train rows, validation rows)."""
    train, validation = [], []
    for c in range(int(labels.max()) + 1):
        rows = np.flatnonzero(labels == c)
        if len(rows) == 0:
            continue
        order = rows[rng.permutation(len(rows))]
        take = round_half_up(len(rows) * fraction)
        if take == 0:
            sys.exit(f"fraction {fraction} leaves class {c} without a labelled image ({len(rows)} in all)")
        held = round_half_up(take * validation_fraction)
        held = 0 if take - min(held, take) < 2 else held
        validation.extend(order[:held])
        train.extend(order[held:take])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(validation, dtype=np.int64))


def normalised(images, mean, std):
    return (torch.from_numpy(images).float().div(255).unsqueeze(1) - mean) / std


def accuracy(encoder, head, x, y):
    encoder.eval(), head.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(x), 256):
            correct += (head(encoder(x[s : s + 256])).argmax(1) == y[s : s + 256]).sum().item()
    return correct / max(1, len(x))


def finetune(encoder, r, train_x, train_y, test_x, test_y, mean, std, fraction, epochs, seed):
    """`pretext eval labels`' finetune arm on one subset: encoder + linear head, end to end."""
    rng = np.random.default_rng(seed + 0x4EAD)
    torch.manual_seed(seed + 0x4EAD)
    train_rows, val_rows = label_subset(train_y, fraction, r["validation_fraction"], rng)
    classes = int(max(train_y.max(), test_y.max())) + 1
    head = nn.Linear(encoder.vit.hidden_dim, classes)
    ratio = r["ft_encoder_lr_ratio"]
    if ratio == 0:
        for p in encoder.parameters():
            p.requires_grad = False
    groups = [(head, r["ft_lr"])] + ([(encoder, r["ft_lr"] * ratio)] if ratio > 0 else [])
    opt = adamw(groups, (0.9, 0.999), 1e-8, r["ft_weight_decay"])
    n = len(train_rows)
    batch = min(r["ft_batch_size"], n)
    steps_per_epoch = -(-n // batch)
    epochs = max(epochs, -(-r["ft_min_steps"] // steps_per_epoch))
    total, warmup = epochs * steps_per_epoch, (epochs * steps_per_epoch) // 20
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine(s, warmup, total))
    augment = view(train_x.shape[1:], r["ft_crop_scale"], r["ft_crop_ratio"], r["ft_flip_p"], mean, std)
    pool = torch.from_numpy(train_x[train_rows]).float().div(255).unsqueeze(1)
    labels = torch.from_numpy(train_y[train_rows].astype(np.int64))
    val_x = normalised(train_x[val_rows], mean, std)
    val_y = torch.from_numpy(train_y[val_rows].astype(np.int64))
    shuffle = torch.Generator().manual_seed(seed + 0xF1E7)
    best, steps, started = None, 0, time.time()
    for epoch in range(epochs):
        encoder.train(), head.train()
        for idx in torch.randperm(n, generator=shuffle).split(batch):
            x = torch.stack([augment(pool[i]) for i in idx.tolist()])
            loss = F.cross_entropy(head(encoder(x)), labels[idx])
            if not math.isfinite(loss.item()):
                sys.exit(f"the classifier's loss became {loss.item()} at step {steps}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
        if len(val_rows):
            score = accuracy(encoder, head, val_x, val_y)
            if best is None or score >= best[0]:
                best = (score, epoch, copy.deepcopy(encoder.state_dict()), copy.deepcopy(head.state_dict()))
    val_acc, chosen = None, epochs - 1
    if best is not None:
        val_acc, chosen = best[0], best[1]
        encoder.load_state_dict(best[2])
        head.load_state_dict(best[3])
    test = accuracy(encoder, head, normalised(test_x, mean, std), torch.from_numpy(test_y.astype(np.int64)))
    return {"test_accuracy": test, "validation_accuracy": val_acc, "chosen_epoch": chosen + 1,
            "epochs": epochs, "steps": steps, "labelled": n, "validation": len(val_rows),
            "seconds": time.time() - started}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder in the MNIST IDX layout")
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "mae_fmnist.toml"),
                    help="the pretext config to mirror (default: configs/mae_fmnist.toml)")
    ap.add_argument("--epochs", type=int, help="pretraining epochs (default: the config's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, help="default: the config's")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training images (data.train_limit)")
    ap.add_argument("--finetune-fraction", type=float, default=0.1)
    ap.add_argument("--finetune-epochs", type=int, help="default: eval.finetune.epochs (10)")
    a = ap.parse_args()
    r = recipe(a.config)
    epochs = r["epochs"] if a.epochs is None else a.epochs
    seed = r["seed"] if a.seed is None else a.seed
    ft_epochs = r["ft_epochs"] if a.finetune_epochs is None else a.finetune_epochs
    if not 0 < a.finetune_fraction <= 1:
        sys.exit(f"--finetune-fraction {a.finetune_fraction}: must be in (0, 1]")
    torch.set_num_threads(a.threads)
    torch.manual_seed(seed)

    train_x = read_idx(find(a.data, "train-images-idx3-ubyte"))
    train_y = read_idx(find(a.data, "train-labels-idx1-ubyte"))
    test_x = read_idx(find(a.data, "t10k-images-idx3-ubyte"))
    test_y = read_idx(find(a.data, "t10k-labels-idx1-ubyte"))
    if a.limit:
        train_x, train_y = train_x[: a.limit], train_y[: a.limit]
    side, channels = train_x.shape[1], 1
    if train_x.shape[1] != train_x.shape[2] or side % r["patch"]:
        sys.exit(f"{train_x.shape[1]}x{train_x.shape[2]} images: need square images, a multiple of the patch")
    batch = r["batch_size"]
    if len(train_x) < batch:
        sys.exit(f"batch_size = {batch} is larger than the training set ({len(train_x)} images)")
    mean, std = float(train_x.mean() / 255), float(train_x.std() / 255)

    transform = view((side, side), r["crop_scale"], r["crop_ratio"], r["flip_p"], mean, std)
    loader = torch.utils.data.DataLoader(Views(train_x, transform), batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=a.threads, persistent_workers=True,
                                         generator=torch.Generator().manual_seed(seed))
    model = MAE(r, side, channels)
    opt = adamw([(model, r["lr"])], (r["beta1"], r["beta2"]), r["eps"], r["weight_decay"])
    steps_per_epoch = len(loader)
    total = steps_per_epoch * epochs
    warmup = r["warmup_steps"] or round_half_up(r["warmup_epochs"] * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine(s, warmup, total))
    encoder_params = sum(p.numel() for p in model.backbone.parameters() if p.requires_grad) - model.backbone.mask_token.numel()

    start = time.time()
    epoch_losses, first_loss = [], None
    for epoch in range(epochs):
        model.train()
        losses = []
        for x in loader:
            loss = model(x)
            if not math.isfinite(loss.item()):
                sys.exit(f"loss became {loss.item()} at epoch {epoch + 1}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        first_loss = losses[0] if first_loss is None else first_loss
        epoch_losses.append(sum(losses) / len(losses))
        print(f"[lightly mae] epoch {epoch + 1}/{epochs}: loss {epoch_losses[-1]:.4f} "
              f"({time.time() - start:.0f}s)", file=sys.stderr)
    train_seconds = time.time() - start

    print(f"[lightly mae] fine-tuning on {100 * a.finetune_fraction:g}% of the labels", file=sys.stderr)
    tuned = finetune(model.backbone, r, train_x, train_y, test_x, test_y, mean, std,
                     a.finetune_fraction, ft_epochs, seed)
    print(json.dumps({
        "images_per_sec": total * batch / train_seconds, "train_seconds": train_seconds,
        "epochs": epochs, "steps": total, "first_loss": first_loss, "epoch_losses": epoch_losses,
        "finetune_accuracy": tuned["test_accuracy"], "finetune_fraction": a.finetune_fraction,
        "finetune": tuned, "train_images": len(train_x), "test_images": len(test_x),
        "encoder_parameters": encoder_params, "threads": a.threads, "seed": seed, "settings": r,
        "lightly_version": lightly.__version__, "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__}))


if __name__ == "__main__":
    main()
