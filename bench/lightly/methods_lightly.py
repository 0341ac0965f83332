"""Pretext's joint-embedding methods trained with lightly + PyTorch under pretext's recipes.

    methods_lightly.py --method {simclr,mocov2,mocov3,nnclr,byol,simsiam,barlowtwins,vicreg,dino,swav}
                       --data DIR [--epochs 5] [--threads 2] [--batch 256] [--seed 0] [--limit N]
                       [--views matched|lightly]

Trains the method on DIR (MNIST IDX layout: the embedded Fashion-MNIST subset lives in
data/fashion-mnist-subset) as configs/<method>_fmnist.toml does, then scores the backbone
pretext evaluates on frozen features of the whole train and test splits. Prints one JSON object:
method, images_per_sec and train_seconds of the training loop, first/final/last-epoch loss, knn
(weighted kNN, k=200, t=0.1), linear (linear probe), lightly_version, torch_version. Run it by
hand (bench/methods/lightly.sh runs it beside pretext), never in CI.

What matches pretext (configs/<method>_fmnist.toml with the defaults of
crates/pretext/src/vision/methods/*.rs, core/heads.rs, core/losses.rs, core/optim.rs and
core/eval.rs):

* Backbone: pretext's small CNN (3x3 conv without bias, BN, ReLU; 32-64-128 channels, two 2x2
  max pools, global average pool; 128 features), shared with simclr_lightly.py. Every view of
  one size goes through a network in one pass (both views together; for DINO and SwAV the two
  global views in one pass and the six local views in another), so batch-norm statistics cover
  the same images as in pretext.
* Heads, as pretext's `Mlp`: Linear-BN-ReLU blocks, then a last Linear with a bias, or without a
  bias and followed by BN where `last_norm` (linears followed by BN have no bias). Built with
  lightly's classes where their layout is pretext's (BYOLProjectionHead/BYOLPredictionHead,
  NNCLRPredictionHead, SimSiamPredictionHead, BarlowTwinsProjectionHead, VICRegProjectionHead,
  MoCoProjectionHead(batch_norm=True) for MoCo v3, SwaVProjectionHead) and with lightly's
  generic ProjectionHead otherwise; every head's layout is checked against pretext's at start-up.
  SimCLR 128-256-128, MoCo v2 128-512-128, MoCo v3 128-512-512-128 with BN on the output and a
  128-512-128 predictor, NNCLR and BYOL 128-512-128 with a 128-512-128 predictor, SimSiam
  128-512-512 with BN (affine) on the output and a 512-128-512 predictor, Barlow Twins and
  VICReg 128-1024-1024-1024, SwAV 128-512-128 and 512 prototypes, DINO 128-512-512-64 GELU MLP,
  L2 normalisation, 2,048 weight-normalised prototypes (lightly's DINOProjectionHead).
* Losses and their settings: NT-Xent t=0.5 (NTXentLoss); MoCo v2 InfoNCE t=0.2 against a queue
  of 4,096 keys (NTXentLoss with memory_bank_size=(4096, 128)), query on the first view, key on
  the second, key encoder EMA 0.99 constant; MoCo v3 symmetric cross-view InfoNCE t=0.2 scaled
  by 2t, key encoder EMA from 0.99 to 1 along a cosine; NNCLR cross-view InfoNCE t=0.1 with the
  nearest neighbour from a support set of 4,096 first-view projections (NNMemoryBankModule) as
  the anchor and the other view's prediction as the candidates, averaged over both directions;
  BYOL 2 - 2 cos (lightly's NegativeCosineSimilarity, shifted and scaled to pretext's value),
  target EMA from 0.99 to 1 along a cosine; SimSiam negative cosine with stop-gradient;
  BarlowTwinsLoss lambda=0.005; VICRegLoss 25/25/1; DINOLoss student t=0.1, teacher t=0.04 (no
  warm-up), centre momentum 0.9, teacher EMA from 0.996 to 1, last layer frozen during the first
  epoch (cancel_last_layer_gradients); SwaVLoss t=0.1, Sinkhorn 3 iterations, epsilon 0.05,
  prototypes frozen during the first epoch (SwaVPrototypes n_steps_frozen_prototypes), no queue.
  EMA momentum m at step s of S is pretext's 1 - (1 - base)(cos(pi (s+1)/S) + 1)/2 (lightly's
  cosine_schedule(s + 1, S + 1, base, 1)), applied after each optimizer step.
* Views, as pretext's presets (lightly's SimCLRTransform, BYOLTransform with
  BYOLView1Transform/BYOLView2Transform, DINOTransform, SwaVTransform): crop scale 0.2-1
  (DINO: globals 0.4-1, locals 0.05-0.4; SwAV: globals 0.14-1, locals 0.05-0.14; local views of
  12 px, 6 of them), ratio 3/4-4/3, flip 0.5, colour jitter p=0.8 brightness/contrast/
  saturation/hue 0.4/0.4/0.4/0.1 (BYOL presets and DINO: saturation 0.2), grayscale 0.2, blur
  sigma 0.1-2 with p=0 (SimCLR, MoCo v2, SimSiam, SwAV), 1.0 and 0.1 on the two BYOL views
  (MoCo v3, NNCLR, BYOL, Barlow Twins, VICReg, DINO globals), 0.5 on DINO's locals,
  solarisation 0.2 on the second BYOL view (and DINO's second global). On one-channel images
  saturation, hue and grayscale do nothing, in pretext and in torchvision alike. Normalised by
  the training images' mean and standard deviation.
* Optimizer: AdamW (betas 0.9/0.999, eps 1e-8), lr 2e-3 (DINO 1e-3), weight decay 1e-6 (DINO
  0.04) on parameters of rank > 1 only, 1 warm-up epoch (lr (s+1)/W of the peak) then a half
  cosine to 0, per step; batch 256 with the last partial batch dropped; the momentum encoders
  take no gradient.
* Evaluation: features of the un-augmented, normalised images with BN in inference mode, from
  the backbone pretext evaluates (MoCo: the query encoder, BYOL: the online one, DINO: the
  teacher). kNN: L2-normalised features, the k=200 most cosine-similar training images vote
  with weight exp(sim / 0.1). Linear probe (pretext's eval defaults): a linear layer (PyTorch's
  default init) on L2-normalised features (normalised, not standardised, as core/eval.rs
  does), cross-entropy, AdamW lr 0.01, weight decay 1e-5 on the weight only, batch 256 (the
  last partial batch kept), reshuffled every epoch, 30 epochs, half cosine from the peak to 0
  per step without warm-up; test accuracy of the argmax.

Where lightly differs from pretext (kept, unless said otherwise):

* Image pipeline: PIL images (uint8 after every step) through torchvision.transforms.v2;
  pretext keeps f32 values throughout. PIL's bilinear resize antialiases when a crop is shrunk
  (local crops larger than 12 px); pretext samples bilinearly without antialiasing.
  Solarisation inverts uint8 values >= 128 (pretext: f32 values >= 0.5). Random streams differ,
  so the views are never the same images.
* Blur (only with --views matched, the default, changed to pretext's): lightly's GaussianBlur is
  PIL's ImageFilter.GaussianBlur(radius=sigma), an extended-box approximation whose support
  grows with sigma (up to about 3 sigma = 6 px on a 28 px image); pretext uses a 3-tap Gaussian
  kernel (radius max(1, side // 20) = 1 at 28 and 12 px) with reflect padding. The default
  replaces lightly's blur by torchvision's gaussian_blur with pretext's kernel size; --views
  lightly keeps lightly's blur.
* DINO crop interpolation (only with --views matched, changed): DINOTransform resizes bicubic,
  pretext bilinear; the default sets bilinear, --views lightly keeps bicubic.
* DINO head init (changed): lightly's DINOProjectionHead initialises its MLP with a truncated
  normal (std 0.02) and zero biases; pretext's linear layers use the PyTorch-style default
  (uniform +-1/sqrt(fan_in)), which the script restores with reset_parameters(). The teacher's
  head is a copy of the student's (lightly's example builds a second head with its own init).
* SwAV prototypes (changed): lightly's SwaVPrototypes is nn.Linear with a bias; the script
  removes the bias (pretext's prototypes, and the paper's, have none). lightly renormalises the
  prototypes in place before each step (SwaVPrototypes.normalize()); pretext normalises them in
  the forward pass (the same scores; pretext's gradient has no radial part, and weight decay
  acts on pretext's raw weights but is undone by lightly's renormalisation).
* MoCo v3 and NNCLR losses: lightly has no MoCo v3 loss, and its NNCLR example uses NTXentLoss
  (in-batch negatives from both views, 2N-2 of them); pretext's (and the papers') losses contrast
  across views only (N-1 negatives). The script writes pretext's cross-view InfoNCE with
  torch.nn.functional.cross_entropy.
* EMA: lightly's update_momentum moves parameters; pretext's EMA moves every float tensor,
  batch-norm running statistics included, so the script also moves the BN running mean and
  variance of the key/target/teacher networks (they matter only for DINO, whose teacher is
  evaluated).
* AdamW bias correction: both count steps per parameter (pretext since 2026-12-01, when writing
  this script found that it counted them globally, which gave DINO's and SwAV's prototypes,
  frozen for the first epoch, first steps about 3x too large).
* Batch norm: PyTorch's running variance takes the unbiased batch variance (burn's may not);
  momentum 0.1 and eps 1e-5 as in pretext. Only inference-mode features (evaluation) use the
  running statistics.
* Data loading: a DataLoader with --threads worker processes and torch.set_num_threads(--threads)
  for compute; pretext uses --threads threads for both.
"""
import argparse, copy, json, math, os, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms as T1
import torchvision.transforms.v2 as T2
import torchvision.transforms.v2.functional as TF

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simclr_lightly import SmallCnn, Views, features, find, knn, read_idx  # noqa: E402

import lightly  # noqa: E402
from lightly.loss import (  # noqa: E402
    BarlowTwinsLoss, DINOLoss, NegativeCosineSimilarity, NTXentLoss, SwaVLoss, VICRegLoss)
from lightly.models.modules import NNMemoryBankModule  # noqa: E402
from lightly.models.modules.heads import (  # noqa: E402
    BarlowTwinsProjectionHead, BYOLPredictionHead, BYOLProjectionHead, DINOProjectionHead,
    MoCoProjectionHead, NNCLRPredictionHead, ProjectionHead, SimSiamPredictionHead,
    SwaVProjectionHead, SwaVPrototypes, VICRegProjectionHead)
from lightly.models.utils import deactivate_requires_grad, update_momentum  # noqa: E402
from lightly.transforms import (  # noqa: E402
    BYOLTransform, BYOLView1Transform, BYOLView2Transform, DINOTransform, SimCLRTransform,
    SwaVTransform)
from lightly.transforms.gaussian_blur import GaussianBlur as LightlyBlur  # noqa: E402
from lightly.utils.scheduler import cosine_schedule  # noqa: E402

METHODS = ["simclr", "mocov2", "mocov3", "nnclr", "byol", "simsiam", "barlowtwins", "vicreg", "dino", "swav"]
FEATURES = 128  # small CNN, width 32: 4 * 32 channels
LOCAL_VIEWS, LOCAL_SIZE = 6, 12  # [multi_crop] of dino_fmnist.toml and swav_fmnist.toml
# configs/<method>_fmnist.toml [optimizer]: lr, weight decay (warm-up 1 epoch everywhere).
OPTIMIZER = {m: (2e-3, 1e-6) for m in METHODS}
OPTIMIZER["dino"] = (1e-3, 0.04)
# core/config.rs EvalConfig defaults (the configs set no [eval]).
KNN_K, KNN_T = 200, 0.1
LINEAR_EPOCHS, LINEAR_LR, LINEAR_BATCH, LINEAR_WD = 30, 0.01, 256, 1e-5


# ---------------------------------------------------------------------------------------------
# Heads


def mlp(inp, hidden, out, layers, last_norm=False):
    """Pretext's `Mlp` (core/heads.rs) with lightly's generic ProjectionHead: Linear-BN-ReLU
    blocks, then a last Linear (BN after it, and then no bias, where `last_norm`)."""
    blocks, d = [], inp
    for i in range(layers):
        last = i + 1 == layers
        o = out if last else hidden
        norm = nn.BatchNorm1d(o) if (not last or last_norm) else None
        blocks.append((d, o, norm, None if last else nn.ReLU()))
        d = o
    return ProjectionHead(blocks)


def layout(module):
    """The layer sequence of a head: (kind, shape, bias / affine) per layer."""
    out = []
    for m in module.modules():
        if isinstance(m, nn.Linear):
            out.append(("linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            out.append(("bn", m.num_features, m.affine))
        elif isinstance(m, (nn.ReLU, nn.GELU)):
            out.append((type(m).__name__,))
    return out


def checked(head, inp, hidden, out, layers, last_norm=False):
    """`head`, after checking that its layout is pretext's Mlp of these sizes."""
    want = layout(mlp(inp, hidden, out, layers, last_norm))
    got = layout(head)
    if got != want:
        raise AssertionError(f"{type(head).__name__}: layout {got} is not pretext's {want}")
    return head


@torch.no_grad()
def ema(source, target, m):
    """Pretext's EMA (core/momentum.rs): every float tensor, parameters (lightly's
    update_momentum) and batch-norm running statistics."""
    update_momentum(source, target, m)
    for bs, bt in zip(source.buffers(), target.buffers()):
        if bt.is_floating_point():
            bt.mul_(m).add_(bs, alpha=1.0 - m)


def momentum_copy(module):
    copy_ = copy.deepcopy(module)
    deactivate_requires_grad(copy_)
    return copy_


def cross_view_info_nce(a, b, t):
    """Pretext's cross_view_info_nce (core/losses.rs): row a[i] classified among the rows of b,
    b[i] the positive, by cosine similarity / t."""
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / t
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def halves(z, parts=2):
    return list(z.chunk(parts))


# ---------------------------------------------------------------------------------------------
# Views


class PretextBlur:
    """Pretext's GaussianBlur (vision/views/transforms.rs): with probability `prob`, sigma
    uniform in `sigmas`, a (2r+1)-tap kernel with r = max(1, min(h, w) // 20), reflect padding."""

    def __init__(self, prob, sigmas):
        self.prob, self.sigmas = prob, sigmas

    def __call__(self, img):
        if self.prob <= 0 or torch.rand(()).item() >= self.prob:
            return img
        sigma = float(torch.empty(()).uniform_(self.sigmas[0], self.sigmas[1]))
        w, h = img.size
        k = 2 * max(1, min(h, w) // 20) + 1
        return TF.gaussian_blur(img, kernel_size=[k, k], sigma=[sigma, sigma])


def match_pretext(transform):
    """Swap lightly's PIL blur for pretext's kernel and set bilinear crops, in place, anywhere
    inside a lightly transform."""
    seen = set()

    def walk(obj):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        items = getattr(obj, "transforms", None)
        if isinstance(items, list):
            for i, t in enumerate(items):
                if isinstance(t, LightlyBlur):
                    items[i] = PretextBlur(t.prob, t.sigmas)
                else:
                    walk(t)
        if isinstance(obj, (T1.RandomResizedCrop, T2.RandomResizedCrop)):
            obj.interpolation = T2.InterpolationMode.BILINEAR
        inner = getattr(obj, "transform", None)
        if inner is not None:
            walk(inner)

    walk(transform)
    return transform


def view_transform(method, size, mean, std, views):
    norm = {"mean": [mean], "std": [std]}
    # ViewConfig::simclr(): scale 0.2-1, flip 0.5, jitter 0.8 x (0.4, 0.4, 0.4, 0.1), gray 0.2.
    simclr = dict(input_size=size, cj_prob=0.8, cj_strength=0.5, cj_bright=0.8, cj_contrast=0.8, cj_sat=0.8,
                  cj_hue=0.2, min_scale=0.2, random_gray_scale=0.2, gaussian_blur=0.0, hf_prob=0.5,
                  vf_prob=0.0, rr_prob=0.0, normalize=norm)
    # ViewConfig::byol(): saturation 0.2; blur 1.0 / 0.1, solarise 0 / 0.2, sigma 0.1-2.
    byol = dict(input_size=size, cj_prob=0.8, cj_strength=1.0, cj_bright=0.4, cj_contrast=0.4, cj_sat=0.2,
                cj_hue=0.1, min_scale=0.2, random_gray_scale=0.2, sigmas=(0.1, 2.0), hf_prob=0.5,
                vf_prob=0.0, rr_prob=0.0, normalize=norm)
    if method in ("simclr", "mocov2", "simsiam"):
        t = SimCLRTransform(**simclr)
    elif method in ("mocov3", "nnclr", "byol", "barlowtwins", "vicreg"):
        t = BYOLTransform(BYOLView1Transform(gaussian_blur=1.0, solarization_prob=0.0, **byol),
                          BYOLView2Transform(gaussian_blur=0.1, solarization_prob=0.2, **byol))
    elif method == "dino":
        # BYOL's views at 0.4-1, locals at 0.05-0.4 with blur 0.5 and no solarisation.
        t = DINOTransform(global_crop_size=size, global_crop_scale=(0.4, 1.0), local_crop_size=LOCAL_SIZE,
                          local_crop_scale=(0.05, 0.4), n_local_views=LOCAL_VIEWS, hf_prob=0.5, vf_prob=0.0,
                          rr_prob=0.0, cj_prob=0.8, cj_strength=0.5, cj_bright=0.8, cj_contrast=0.8,
                          cj_sat=0.4, cj_hue=0.2, random_gray_scale=0.2, gaussian_blur=(1.0, 0.1, 0.5),
                          sigmas=(0.1, 2.0), solarization_prob=0.2, normalize=norm)
    else:  # swav: SimCLR's views, globals 0.14-1, locals 0.05-0.14
        t = SwaVTransform(crop_sizes=(size, LOCAL_SIZE), crop_counts=(2, LOCAL_VIEWS), crop_min_scales=(0.14, 0.05),
                          crop_max_scales=(1.0, 0.14), hf_prob=0.5, vf_prob=0.0, rr_prob=0.0, cj_prob=0.8,
                          cj_strength=0.5, cj_bright=0.8, cj_contrast=0.8, cj_sat=0.8, cj_hue=0.2,
                          random_gray_scale=0.2, gaussian_blur=0.0, sigmas=(0.1, 2.0), normalize=norm)
    return match_pretext(t) if views == "matched" else t


# ---------------------------------------------------------------------------------------------
# Methods: loss(views, step) -> loss; before_step(step) after backward; after_step(step) after
# the optimizer step; `evaluated` is the backbone pretext evaluates.


class Method(nn.Module):
    def before_step(self, step):
        pass

    def after_step(self, step):
        pass

    def momentum(self, base, step):
        return cosine_schedule(step + 1, self.total_steps + 1, base, 1.0)


class SimClr(Method):
    def __init__(self):
        super().__init__()
        self.backbone = SmallCnn()
        self.projection = mlp(FEATURES, 256, 128, 2)
        self.criterion = NTXentLoss(temperature=0.5)
        self.evaluated = self.backbone

    def loss(self, views, step):
        z1, z2 = halves(self.projection(self.backbone(torch.cat(views))))
        return self.criterion(z1, z2)


class MocoV2(Method):
    def __init__(self):
        super().__init__()
        self.query = nn.Sequential(SmallCnn(), mlp(FEATURES, 512, 128, 2))
        self.key = momentum_copy(self.query)
        self.criterion = NTXentLoss(temperature=0.2, memory_bank_size=(4096, 128))
        self.evaluated = self.query[0]

    def loss(self, views, step):
        q = self.query(views[0])
        with torch.no_grad():
            k = self.key(views[1])
        return self.criterion(q, k)  # enqueues k after using the queue

    def after_step(self, step):
        ema(self.query, self.key, 0.99)


class MocoV3(Method):
    def __init__(self):
        super().__init__()
        projection = checked(MoCoProjectionHead(FEATURES, 512, 128, num_layers=3, batch_norm=True),
                             FEATURES, 512, 128, 3, last_norm=True)
        self.query = nn.Sequential(SmallCnn(), projection)
        self.predictor = mlp(128, 512, 128, 2)
        self.key = momentum_copy(self.query)
        self.t = 0.2
        self.evaluated = self.query[0]

    def loss(self, views, step):
        both = torch.cat(views)
        q1, q2 = halves(self.predictor(self.query(both)))
        with torch.no_grad():
            k1, k2 = halves(self.key(both))
        return (cross_view_info_nce(q1, k2, self.t) + cross_view_info_nce(q2, k1, self.t)) * 2 * self.t

    def after_step(self, step):
        ema(self.query, self.key, self.momentum(0.99, step))


class Nnclr(Method):
    def __init__(self):
        super().__init__()
        self.backbone = SmallCnn()
        self.projection = mlp(FEATURES, 512, 128, 2)
        self.predictor = checked(NNCLRPredictionHead(128, 512, 128), 128, 512, 128, 2)
        self.support = NNMemoryBankModule(size=(4096, 128))
        self.t = 0.1
        self.evaluated = self.backbone

    def loss(self, views, step):
        z = self.projection(self.backbone(torch.cat(views)))
        (z1, z2), (p1, p2) = halves(z), halves(self.predictor(z))
        # Both neighbours from the support set before this batch; then z1 enters it.
        nn2 = self.support(z2.detach(), update=False)
        nn1 = self.support(z1.detach(), update=True)
        return (cross_view_info_nce(nn1, p2, self.t) + cross_view_info_nce(nn2, p1, self.t)) / 2


class Byol(Method):
    def __init__(self):
        super().__init__()
        projection = checked(BYOLProjectionHead(FEATURES, 512, 128), FEATURES, 512, 128, 2)
        self.online = nn.Sequential(SmallCnn(), projection)
        self.predictor = checked(BYOLPredictionHead(128, 512, 128), 128, 512, 128, 2)
        self.target = momentum_copy(self.online)
        self.criterion = NegativeCosineSimilarity()
        self.evaluated = self.online[0]

    def loss(self, views, step):
        both = torch.cat(views)
        p1, p2 = halves(self.predictor(self.online(both)))
        with torch.no_grad():
            z1, z2 = halves(self.target(both))
        # mean of (2 - 2 cos) over both directions, pretext's normalized_mse
        return 2 + self.criterion(p1, z2) + self.criterion(p2, z1)

    def after_step(self, step):
        ema(self.online, self.target, self.momentum(0.99, step))


class SimSiam(Method):
    def __init__(self):
        super().__init__()
        self.backbone = SmallCnn()
        self.projection = mlp(FEATURES, 512, 512, 2, last_norm=True)
        self.predictor = checked(SimSiamPredictionHead(512, 128, 512), 512, 128, 512, 2)
        self.criterion = NegativeCosineSimilarity()
        self.evaluated = self.backbone

    def loss(self, views, step):
        z = self.projection(self.backbone(torch.cat(views)))
        p1, p2 = halves(self.predictor(z))
        z1, z2 = halves(z.detach())
        return (self.criterion(p1, z2) + self.criterion(p2, z1)) / 2


class BarlowTwins(Method):
    def __init__(self):
        super().__init__()
        self.backbone = SmallCnn()
        self.projection = checked(BarlowTwinsProjectionHead(FEATURES, 1024, 1024), FEATURES, 1024, 1024, 3)
        self.criterion = BarlowTwinsLoss(lambda_param=0.005)
        self.evaluated = self.backbone

    def loss(self, views, step):
        z1, z2 = halves(self.projection(self.backbone(torch.cat(views))))
        return self.criterion(z1, z2)


class VicReg(Method):
    def __init__(self):
        super().__init__()
        self.backbone = SmallCnn()
        self.projection = checked(VICRegProjectionHead(FEATURES, 1024, 1024, num_layers=3),
                                  FEATURES, 1024, 1024, 3)
        self.criterion = VICRegLoss(lambda_param=25.0, mu_param=25.0, nu_param=1.0)
        self.evaluated = self.backbone

    def loss(self, views, step):
        z1, z2 = halves(self.projection(self.backbone(torch.cat(views))))
        return self.criterion(z1, z2)


def dino_head():
    head = DINOProjectionHead(FEATURES, 512, 64, 2048, batch_norm=False, freeze_last_layer=1, norm_last_layer=True)
    for m in head.layers.modules():  # pretext's init, not lightly's truncated normal
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    return head


class Dino(Method):
    def __init__(self):
        super().__init__()
        self.student = nn.Sequential(SmallCnn(), dino_head())
        # A copy of the student (weight norm does not deepcopy): a fresh network, loaded.
        self.teacher = nn.Sequential(SmallCnn(), dino_head())
        self.teacher.load_state_dict(self.student.state_dict())
        deactivate_requires_grad(self.teacher)
        self.criterion = DINOLoss(output_dim=2048, warmup_teacher_temp=0.04, teacher_temp=0.04,
                                  warmup_teacher_temp_epochs=0, student_temp=0.1, center_momentum=0.9)
        self.evaluated = self.teacher[0]

    def loss(self, views, step):
        globals_ = torch.cat(views[:2])
        with torch.no_grad():
            teacher = halves(self.teacher(globals_))
        student = halves(self.student(globals_))
        if len(views) > 2:
            student += halves(self.student(torch.cat(views[2:])), len(views) - 2)
        return self.criterion(teacher, student, teacher_temp=0.04)

    def before_step(self, step):
        self.student[1].cancel_last_layer_gradients(current_epoch=step // self.steps_per_epoch)

    def after_step(self, step):
        ema(self.student, self.teacher, self.momentum(0.996, step))


class Swav(Method):
    def __init__(self, steps_per_epoch):
        super().__init__()
        self.backbone = SmallCnn()
        self.projection = checked(SwaVProjectionHead(FEATURES, 512, 128), FEATURES, 512, 128, 2)
        self.prototypes = SwaVPrototypes(128, 512, n_steps_frozen_prototypes=steps_per_epoch)
        for layer in self.prototypes.heads:
            layer.bias = None  # pretext's (and the paper's) prototypes have no bias
        self.criterion = SwaVLoss(temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)
        self.evaluated = self.backbone

    def embed(self, x):
        return F.normalize(self.projection(self.backbone(x)), dim=1)

    def loss(self, views, step):
        with torch.no_grad():
            self.prototypes.normalize()
        high = halves(self.prototypes(self.embed(torch.cat(views[:2])), step))
        low = []
        if len(views) > 2:
            low = halves(self.prototypes(self.embed(torch.cat(views[2:])), step), len(views) - 2)
        return self.criterion(high, low).squeeze()


def build(method, steps_per_epoch, total_steps):
    model = {"simclr": SimClr, "mocov2": MocoV2, "mocov3": MocoV3, "nnclr": Nnclr, "byol": Byol,
             "simsiam": SimSiam, "barlowtwins": BarlowTwins, "vicreg": VicReg, "dino": Dino,
             "swav": lambda: Swav(steps_per_epoch)}[method]()
    model.steps_per_epoch, model.total_steps = steps_per_epoch, total_steps
    return model


# ---------------------------------------------------------------------------------------------
# Evaluation


def linear_probe(train_f, train_y, test_f, test_y, seed, classes):
    """Pretext's linear probe (core/eval.rs linear_probe_predictions)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train_f, test_f = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    model = nn.Linear(train_f.shape[1], classes)
    opt = torch.optim.AdamW([{"params": [model.weight], "weight_decay": LINEAR_WD},
                             {"params": [model.bias], "weight_decay": 0.0}], lr=LINEAR_LR)
    batch = max(1, min(LINEAR_BATCH, len(train_f)))
    total = math.ceil(len(train_f) / batch) * LINEAR_EPOCHS
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    for _ in range(LINEAR_EPOCHS):
        for idx in torch.randperm(len(train_f), generator=gen).split(batch):
            loss = F.cross_entropy(model(train_f[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        return (model(test_f).argmax(1) == test_y).float().mean().item()


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", required=True, choices=METHODS)
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N training images (smoke tests)")
    ap.add_argument("--views", choices=["matched", "lightly"], default="matched",
                    help="matched: lightly's transforms with pretext's blur kernel and bilinear crops (default); "
                         "lightly: lightly's transforms unchanged")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)

    train_x = read_idx(find(a.data, "train-images-idx3-ubyte"))
    train_y = torch.from_numpy(read_idx(find(a.data, "train-labels-idx1-ubyte")).astype(np.int64))
    test_x = read_idx(find(a.data, "t10k-images-idx3-ubyte"))
    test_y = torch.from_numpy(read_idx(find(a.data, "t10k-labels-idx1-ubyte")).astype(np.int64))
    train_set = train_x[: a.limit] if a.limit > 0 else train_x
    # Pretext's channel_stats: over the images it trains on, population standard deviation.
    mean, std = float(train_set.mean() / 255), float(train_set.std() / 255)

    steps_per_epoch = len(train_set) // a.batch
    if steps_per_epoch == 0:
        sys.exit(f"batch {a.batch} is larger than the training set ({len(train_set)} images)")
    total_steps = steps_per_epoch * a.epochs
    transform = view_transform(a.method, train_x.shape[1], mean, std, a.views)
    loader = torch.utils.data.DataLoader(
        Views(train_set, transform), batch_size=a.batch, shuffle=True, drop_last=True,
        num_workers=a.threads, persistent_workers=a.threads > 0,
        generator=torch.Generator().manual_seed(a.seed))

    model = build(a.method, steps_per_epoch, total_steps)
    lr, wd = OPTIMIZER[a.method]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": wd},
                             {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}], lr=lr)
    warm = round(1.0 * steps_per_epoch)  # warmup_epochs = 1
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm
        else 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, total_steps - warm)))))

    losses, epoch_losses, step = [], [], 0
    start = time.time()
    for epoch in range(a.epochs):
        model.train()
        epoch_losses = []
        for views in loader:
            loss = model.loss(views, step)
            opt.zero_grad()
            loss.backward()
            model.before_step(step)
            opt.step()
            sched.step()
            model.after_step(step)
            value = loss.item()
            if not math.isfinite(value):
                sys.exit(f"{a.method}: loss became {value} at step {step}")
            losses.append(value)
            epoch_losses.append(value)
            step += 1
    train_seconds = time.time() - start

    backbone = model.evaluated
    ftrain, ftest = features(backbone, train_x, mean, std), features(backbone, test_x, mean, std)
    classes = int(max(train_y.max(), test_y.max())) + 1
    print(json.dumps({
        "method": a.method, "seed": a.seed, "epochs": a.epochs, "batch": a.batch, "train_images": len(train_set),
        "steps": step, "views": a.views,
        "images_per_sec": step * a.batch / train_seconds, "train_seconds": train_seconds,
        "first_loss": losses[0], "final_loss": losses[-1],
        "last_epoch_loss": sum(epoch_losses) / len(epoch_losses),
        "knn": knn(ftrain, train_y, ftest, test_y, k=KNN_K, t=KNN_T, classes=classes),
        "linear": linear_probe(ftrain, train_y, ftest, test_y, a.seed, classes),
        "lightly_version": lightly.__version__, "torch_version": torch.__version__}))


if __name__ == "__main__":
    main()
