"""Adaptive Mask (AM): a per-pixel occlusion score, and top-k patch replacement by learnable tokens.

Paper, Eq. 1-3: ``S = F_proj(X)`` (1 x H x W), pooled per patch; during training the top ``rho``
fraction of patches (highest score) is replaced by learnable tokens: ``X' = M*T + (1-M)*X``.

How the score network learns (top-k has no gradient). Two signals, one built in, one optional:

1. Straight-through gate (built in, always active while masking). The forward pass is exactly the
   paper's hard replacement, but the gate is ``g = M + s - stop_grad(s)`` with ``s`` the patch's
   pooled score, so ``dL/ds = sum((T - X) * dL/dX')`` over the patch: the score of every patch is
   pushed up where swapping its features for the learned prior would lower the loss (cloud-
   corrupted features) and down where its own features are worth keeping (clear ground). This is
   the score-weighted soft replacement ``X + s*(T - X)`` linearised around the hard top-k choice.
2. Pseudo cloud mask supervision (optional, recommended for training). ``score_targets(cloudy,
   target)`` turns a training pair into a soft occlusion map from the per-pixel difference between
   the cloudy input and its clear target; ``score_loss(score, targets)`` is a BCE between the model's
   score output and that map. Add ``lambda * score_loss(...)`` (lambda ~ 0.1) to the objective. It
   makes the score a calibrated cloud score, which the pipeline uses for keep-clear mode.

The score also conditions the decoder (see ``ScoreInjection``), so it receives gradient even with
masking switched off. In ``eval()`` nothing is masked: the module only returns the score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import pool

__all__ = ["ScoreHead", "AdaptiveMask", "ScoreInjection", "score_targets", "score_loss"]


class ScoreHead(nn.Module):
    """``F_proj`` of Eq. 1: a light per-pixel MLP giving the occlusion score in (0, 1)."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = max(8, dim // 4)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.gelu(self.fc1(x))))  # (B, H, W, 1)


class AdaptiveMask(nn.Module):
    """Score the features; in training, replace the top-``ratio`` patches by learnable tokens.

    ``patch`` is the patch side at this scale (in feature pixels). The tokens are a learned
    ``patch x patch x C`` prior shared across samples and broadcast to every masked patch (Eq. 3);
    initialised from a small Gaussian (std 0.02) as the paper allows.
    """

    def __init__(self, dim: int, patch: int, ratio: float = 0.25, masking: bool = True):
        super().__init__()
        self.patch = patch
        self.ratio = float(ratio)
        self.masking = masking
        self.score = ScoreHead(dim)
        if masking:
            self.tokens = nn.Parameter(torch.randn(patch, patch, dim) * 0.02)
        else:
            self.register_parameter("tokens", None)

    def patch_scores(self, score: torch.Tensor) -> torch.Tensor:
        """Per-patch mean score ``(B, h, w)`` of a ``(B, H, W, 1)`` score map."""
        return pool(score, self.patch)[..., 0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(features, score)``; features masked only in training with masking on."""
        score = self.score(x)
        if not (self.training and self.masking and self.ratio > 0):
            return x, score
        b, height, width, c = x.shape
        p = self.patch
        patches = self.patch_scores(score)  # (B, h, w)
        h, w = patches.shape[1:]
        k = int(round(self.ratio * h * w))
        if k == 0:
            return x, score
        chosen = patches.detach().flatten(1).topk(k, dim=1).indices
        hard = torch.zeros_like(patches.flatten(1)).scatter_(1, chosen, 1.0).view(b, h, w)
        gate = hard + (patches - patches.detach())  # forward: exactly hard top-k; backward: d/ds = 1
        gate = gate[:, :, None, :, None, None]
        xv = x.view(b, h, p, w, p, c)
        tokens = self.tokens.view(1, 1, p, 1, p, c)
        out = torch.addcmul(xv, gate, tokens - xv)
        return out.view(b, height, width, c), score


class ScoreInjection(nn.Module):
    """Inject the AM prior into a decoder skip: ``x + s * e`` with a learned per-channel vector ``e``."""

    def __init__(self, dim: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, score, self.embedding)


def score_targets(cloudy: torch.Tensor, target: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """Pseudo cloud mask for supervising the score: ``clamp(mean_c |cloudy - target| / threshold, 0, 1)``.

    ``cloudy`` is ``(B, C, H, W)`` or ``(B, L, C, H, W)`` (the reference date, index 0, is used);
    ``target`` ``(B, C', H, W)``. Bands are compared over the first ``min(C, C')``. ``threshold`` is the
    mean absolute reflectance difference treated as fully occluded (0.05 suits thick and thin cloud).
    Returns ``(B, 1, H, W)`` in [0, 1] with no gradient.
    """
    with torch.no_grad():
        if cloudy.dim() == 5:
            cloudy = cloudy[:, 0]
        n = min(cloudy.shape[1], target.shape[1])
        diff = (cloudy[:, :n] - target[:, :n]).abs().mean(dim=1, keepdim=True)
        return (diff / threshold).clamp(0.0, 1.0)


def score_loss(score: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy between the model's score ``(B, 1, H, W)`` and ``score_targets(...)``."""
    score = score.float().clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(score, targets.float())
