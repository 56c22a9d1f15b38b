"""The trainer's batch-level augmentations, drawn from torch's global RNG (so that a resume is exact).

* ``train.radiometric``: ``{p, gain: [lo, hi], gamma: [lo, hi], contrast: [lo, hi]}``: the same
  random brightness gain, gamma and contrast for the cloudy input(s) and the target of a sample, then
  a clip to [0, 1] (an 8-bit display stretch saturates bright clouds the same way).
* ``train.random_frames``: each batch of a stack uses the first L dates, L uniform in 1..num_frames
  (the reference date is always first), so fewer dates work too.
* ``train.channel_shuffle``: ``{p, bands: 3}``: the first ``bands`` bands (red, green, blue) of a sample's
  input(s) and target put in one random order, so that the cloud score cannot lean on a palette: a cloud is
  near-neutral in every order, ground is not (a false-colour or oddly balanced 8-bit raster is another order).
  Off in every shipped recipe: tried once (the RGB card, tried 17), the score became more conservative on every
  palette but the training scenes' (it does use a cloud's colour in true-colour imagery).
"""

from __future__ import annotations

import torch


def radiometric(x: torch.Tensor, y: torch.Tensor, cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Same random gain / gamma / contrast per sample for input ``x`` ((B,C,H,W) or (B,L,C,H,W)) and
    target ``y`` (B,C,H,W); samples are left alone with probability ``1 - p``."""
    b = y.shape[0]
    p = float(cfg.get("p", 1.0))

    def draw(key, default):
        lo, hi = cfg.get(key, default)
        lo, hi = float(lo), float(hi)
        # log-uniform: as likely to brighten as to darken
        r = torch.rand(b)
        return torch.exp(torch.log(torch.tensor(lo)) + r * (torch.log(torch.tensor(hi)) - torch.log(torch.tensor(lo))))

    gain, gamma, contrast = draw("gain", (1.0, 1.0)), draw("gamma", (1.0, 1.0)), draw("contrast", (1.0, 1.0))
    on = torch.rand(b) < p
    gain = torch.where(on, gain, torch.ones(b))
    gamma = torch.where(on, gamma, torch.ones(b))
    contrast = torch.where(on, contrast, torch.ones(b))

    def shape(v, t):
        return v.view(b, *([1] * (t.dim() - 1))).to(t.device, t.dtype)

    # the contrast pivot: the target's mean after gain and gamma (the same for input and target)
    yt = (y.clamp(0, 1) ** shape(gamma, y)) * shape(gain, y)
    pivot = yt.flatten(1).mean(1)

    def apply(t):
        v = (t.clamp(0, 1) ** shape(gamma, t)) * shape(gain, t)
        v = (v - shape(pivot, t)) * shape(contrast, t) + shape(pivot, t)
        v = v.clamp(0, 1)
        keep = shape(on.float(), t)
        return keep * v + (1 - keep) * t

    return apply(x), apply(y)


def channel_shuffle(x: torch.Tensor, y: torch.Tensor, cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """One random order of the first ``cfg["bands"]`` (default 3) bands per sample, the same for input ``x``
    ((B,C,H,W) or (B,L,C,H,W)) and target ``y`` (B,C,H,W); samples keep their order with probability ``1 - p``."""
    b, bands = y.shape[0], int(cfg.get("bands", 3))
    order = torch.stack([torch.randperm(bands) for _ in range(b)])  # (B, bands)
    on = torch.rand(b) < float(cfg.get("p", 1.0))
    order = torch.where(on[:, None], order, torch.arange(bands).expand(b, bands))

    def apply(t):
        index = order.to(t.device).view(b, *([1] * (t.dim() - 4)), bands, 1, 1).expand(*t.shape[:-3], bands, *t.shape[-2:])
        return torch.cat([t[..., :bands, :, :].gather(-3, index), t[..., bands:, :, :]], dim=-3)

    return apply(x), apply(y)


def random_frames(x: torch.Tensor) -> torch.Tensor:
    """The first L dates of a (B, L, C, H, W) batch, L uniform in 1..L_max (4-D input unchanged)."""
    if x.dim() != 5 or x.shape[1] < 2:
        return x
    n = int(torch.randint(1, x.shape[1] + 1, (1,)).item())
    return x[:, :n]
