"""Patch Saliency Encoding (PSE): a learned per-patch saliency and position encoding.

The paper describes PSE only as a self-guided mechanism that models the structural importance of
patches (its ablation calls it "Pos Enc"); there is no public definition. Ours, on the same patch grid
as the Adaptive Mask at each encoder scale, after masking (so masked patches, now tokens, also get
their position and saliency, as mask tokens do in MAE):

    d_p   = mean of the features over patch p                      (patch descriptor, C)
    a_p   = sigmoid(MLP([d_p, mean score over p]))                  (saliency of the patch, scalar)
    E(x)  = a_p * (W d_p + P[x mod patch])                          for a pixel x inside patch p
    X'    = X + E

``P`` is a learned ``patch x patch x C`` intra-patch position table: relative, not absolute,
positions, so any tile size and tile offset works. ``a_p`` gates the encoding by how structurally
important the patch is, which is what lets the network "focus on structurally important regions";
it sees the cloud score so that occluded and clear patches can be treated differently. ``W`` starts
at zero so the encoding begins as a small position-only term and cannot disturb early training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import pool

__all__ = ["PatchSaliencyEncoding"]


class PatchSaliencyEncoding(nn.Module):
    """Add a saliency-gated patch code and intra-patch position encoding to ``(B, H, W, C)`` features."""

    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        hidden = max(8, dim // 4)
        self.saliency_fc1 = nn.Linear(dim + 1, hidden)
        self.saliency_fc2 = nn.Linear(hidden, 1)
        self.code = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.code.weight)
        self.position = nn.Parameter(torch.randn(patch, patch, dim) * 0.02)

    def saliency(self, x: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the patch descriptors ``(B, h, w, C)`` and their saliency ``(B, h, w, 1)``."""
        descriptor = pool(x, self.patch)
        patch_score = pool(score, self.patch)
        hidden = F.gelu(self.saliency_fc1(torch.cat([descriptor, patch_score], dim=-1)))
        return descriptor, torch.sigmoid(self.saliency_fc2(hidden))

    def forward(self, x: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        b, height, width, c = x.shape
        p = self.patch
        descriptor, weight = self.saliency(x, score)
        h, w = descriptor.shape[1:3]
        code = (weight * self.code(descriptor))[:, :, None, :, None, :]  # (B, h, 1, w, 1, C)
        gate = weight[:, :, None, :, None, :]  # (B, h, 1, w, 1, 1)
        position = self.position.view(1, 1, p, 1, p, c)
        out = torch.addcmul(x.view(b, h, p, w, p, c) + code, gate, position)
        return out.view(b, height, width, c)
