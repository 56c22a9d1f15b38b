"""The training objective: L1 + λ1·FFT-L1 + λ2·perceptual (paper: λ1 = 0.05, λ2 = 0.1), plus an
optional auxiliary score loss and whatever ``model.aux_losses()`` returns.

* ``fft``: L1 between the real and imaginary parts of ``torch.fft.rfft2(·, norm="ortho")`` of the
  prediction and the target (real/imag rather than amplitude/phase: no phase wrapping, and it is
  zero exactly when the images agree). Computed in float32 even under AMP.
* ``perceptual``: mean over *views* of the mean over VGG16 taps (relu1_2 .. relu5_3, the first
  ``perceptual_layers``) of the L1 distance between features. VGG wants an RGB image, so a
  multispectral image is shown to it as 3-band views: ``rgb`` = (red, green, blue) and, when the
  bands include NIR, ``nir-r-g`` = (nir, red, green), the standard false-colour composite, so NIR
  errors are penalised with the same network. Reflectance is dark for an ImageNet network, so each
  sample is brightened by a gain (``perceptual_gain``; ``auto`` = 0.8 / 99th percentile of the
  target's view, clamped to [1, 5], the same for prediction and target, no gradient through it).
  A dataset whose bands lack red/green/blue uses its first three bands.
* ``score`` (weight ``score``, default 0 = off): BCE between the model's cloud score ``(B, 1, H, W)``
  and the sample's mask, weighted per sample by ``mask_weight`` (1 for synthetic clouds, lower for
  pseudo masks of real pairs, 0 when none is known).
* ``aux``: ``aux`` x the sum of ``model.aux_losses()``.

The image terms (L1, FFT, perceptual) are weighted per sample by ``target_weight`` when given: a sample
with real cloud labels and no clear target (``datasets.labels``) has weight 0 and trains the score only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import VGG16Features, load_state


def fft_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    p = torch.fft.rfft2(pred.float(), norm="ortho")
    t = torch.fft.rfft2(target.float(), norm="ortho")
    return weighted_mean((torch.view_as_real(p) - torch.view_as_real(t)).abs().flatten(1).mean(1), weight)


def weighted_mean(per_sample: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-sample values, weighted (``None``: plain mean; all weights 0: 0, with no gradient)."""
    if weight is None:
        return per_sample.mean()
    w = weight.float().to(per_sample.device)
    return (per_sample * w).sum() / w.sum().clamp_min(1e-6)


def perceptual_views(band_names, views=("rgb", "nir-r-g")) -> list[tuple[str, list[int]]]:
    names = list(band_names)
    out = []
    for v in views:
        want = {"rgb": ("red", "green", "blue"), "nir-r-g": ("nir", "red", "green")}.get(v)
        if want is None:
            raise ValueError(f"unknown perceptual view {v!r}: use rgb or nir-r-g")
        if all(b in names for b in want):
            out.append((v, [names.index(b) for b in want]))
    if not out:
        out.append(("first3", [0, 1, 2] if len(names) >= 3 else [0] * 3))
    return out


def score_bce(score: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
              known: torch.Tensor | None = None) -> torch.Tensor:
    """BCE of the score against the mask, per sample over the pixels whose label is ``known`` (all when
    None), weighted per sample by ``weight``."""
    s = score.float().clamp(1e-6, 1 - 1e-6)
    m = mask.float()
    bce = F.binary_cross_entropy(s, m, reduction="none")
    if known is None:
        per = bce.flatten(1).mean(1)
    else:
        k = known.float().to(bce.device)
        per = (bce * k).flatten(1).sum(1) / k.flatten(1).sum(1).clamp_min(1.0)
    w = weight.float().to(per.device)
    return (per * w).sum() / w.sum().clamp_min(1e-6)


class CloudRemovalLoss(nn.Module):
    def __init__(self, band_names, l1: float = 1.0, fft: float = 0.05, perceptual: float = 0.1, score: float = 0.0,
                 aux: float = 1.0, perceptual_layers: int = 5, perceptual_gain="auto",
                 views=("rgb", "nir-r-g"), vgg_state=None):
        super().__init__()
        self.w = dict(l1=float(l1), fft=float(fft), perceptual=float(perceptual), score=float(score), aux=float(aux))
        self.gain = perceptual_gain
        self.views = perceptual_views(band_names, views)
        self.vgg = None
        if self.w["perceptual"] > 0:
            self.vgg = VGG16Features(vgg_state if vgg_state is not None else load_state(), layers=perceptual_layers)

    @classmethod
    def from_config(cls, cfg: dict, band_names):
        cfg = dict(cfg or {})
        views = cfg.pop("perceptual_views", ("rgb", "nir-r-g"))
        return cls(band_names, views=tuple(views), **cfg)

    def _gain(self, t: torch.Tensor) -> torch.Tensor:
        if self.gain == "auto":
            q = torch.quantile(t.detach().float().flatten(1), 0.99, dim=1)
            return (0.8 / q.clamp_min(1e-3)).clamp(1.0, 5.0).view(-1, 1, 1, 1).to(t.dtype)
        return torch.full((t.shape[0], 1, 1, 1), float(self.gain), dtype=t.dtype, device=t.device)

    def perceptual(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for _, idx in self.views:
            p, t = pred[:, idx], target[:, idx]
            g = self._gain(t)
            fp = self.vgg(p * g)
            with torch.no_grad():
                ft = self.vgg(t * g)
            total = total + sum((a - b).abs().mean() for a, b in zip(fp, ft, strict=True)) / len(fp)
        return total / len(self.views)

    def forward(self, pred, target, score=None, mask=None, mask_weight=None, aux_losses=None, target_weight=None,
                mask_known=None):
        """``target_weight`` (B,), optional: per-sample weight of the image terms (0 for a sample that has
        cloud labels but no clear target, which trains the score only). ``mask_known`` (B, 1, H, W),
        optional: 1 where the mask is known (labels that mark cloud only leave the rest unknown)."""
        parts = {}
        dev_type = pred.device.type
        parts["l1"] = weighted_mean((pred.float() - target.float()).abs().flatten(1).mean(1), target_weight)
        with torch.autocast(device_type=dev_type, enabled=False):
            if self.w["fft"]:
                parts["fft"] = fft_l1(pred, target, target_weight)
            if self.w["score"] and score is not None and mask is not None:
                weight = mask_weight if mask_weight is not None else torch.ones(pred.shape[0], device=pred.device)
                parts["score"] = score_bce(score, mask, weight, mask_known)
        with_target = slice(None) if target_weight is None else target_weight > 0
        if self.w["perceptual"] and self.vgg is not None and pred[with_target].shape[0]:
            parts["perceptual"] = self.perceptual(pred[with_target], target[with_target]).float()
        if aux_losses:
            parts["aux"] = sum(v.float() for v in aux_losses.values())
        total = sum(self.w[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}
