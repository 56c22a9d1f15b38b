"""Semantic Refinement (SR) across the three encoder scales, with Semantic-Prioritized Feature Fusion.

Paper, Alg. 1 and Eq. 5-6: at every refinement step, for each target scale j, the features of every
scale k are resampled to j (up-sampled when coarser, down-sampled when finer), fused by ``SPFF_j`` and
the step is iterated so information flows both ways across depth and resolution.

Our choices for what the paper leaves open:
- Resampling ``F_{j<-k}``: a 1x1 projection to scale j's width, then bilinear up-sampling by
  ``2^|j-k|`` (coarser k) or ``2^|j-k|``-average pooling first and then the projection (finer k).
  Projections run at the lower of the two resolutions (they commute with resampling), which is cheaper.
- SPFF (no public definition). Relevance is decided per image and per pixel: an MLP on the summed
  global descriptors of all scales (SK-Net style selective fusion) gives each scale an image-level
  logit ``c_k`` and each channel a gate ``g``; a shared linear read-out gives each resampled map a
  pixel logit ``r_k(x)``; with a learned prior ``b_k``, the scale weights are
  ``a_k(x) = softmax_k(c_k + r_k(x) + b_k)`` and the fused map ``g * sum_k a_k * F_{j<-k}``. Scales with
  informative (semantic) responses win where they are informative; redundant or noisy ones are
  filtered out, and the channel gate keeps the semantically useful channels.
- Update: ``F_j <- F_j + W_o(fused)`` (``W_o`` zero-initialised, so SR starts as the identity), then
  ``refine_blocks[j]`` transformer blocks at scale j. All scales update from the previous step's maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import pool, stack

__all__ = ["Resample", "SPFF", "RefinementStep", "SemanticRefinement"]


class Resample(nn.Module):
    """Bring a ``(B, H, W, C_k)`` map of scale k to scale j (Eq. 5), with width ``C_j``."""

    def __init__(self, dim_in: int, dim_out: int, source: int, target: int):
        super().__init__()
        self.factor = 2 ** abs(source - target)
        self.upsample = source > target  # larger index = coarser scale
        self.proj = nn.Linear(dim_in, dim_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.upsample:
            return self.proj(pool(x, self.factor))
        y = self.proj(x).permute(0, 3, 1, 2)
        y = F.interpolate(y, scale_factor=self.factor, mode="bilinear", align_corners=False)
        return y.permute(0, 2, 3, 1).contiguous()


class SPFF(nn.Module):
    """Semantic-Prioritized Feature Fusion of ``num_scales`` maps of one shape ``(B, H, W, C)``.

    Returns ``base + W_o(g * sum_k a_k * F_k)``: ``a_k(x) = softmax_k(r(F_k(x)) + c_k + b_k)`` weighs the
    scales per pixel (``r`` a shared linear read-out, ``c_k`` the image-level relevance of scale k from
    an MLP on the pooled descriptors of all scales, ``b_k`` a learned prior) and ``g`` (sigmoid of the
    same MLP) re-weights channels per image. ``g`` is folded into ``W_o`` (one small matrix per image)
    and ``base`` rides in the same ``baddbmm``, so the fusion costs K+1 passes over the maps.
    """

    def __init__(self, dim: int, num_scales: int = 3):
        super().__init__()
        hidden = max(8, dim // 4)
        self.num_scales = num_scales
        self.context_fc1 = nn.Linear(dim, hidden)
        self.context_fc2 = nn.Linear(hidden, num_scales + dim)
        self.pixel = nn.Linear(dim, 1, bias=False)
        self.scale_bias = nn.Parameter(torch.zeros(num_scales))
        self.out = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, maps: list[torch.Tensor], base: torch.Tensor) -> torch.Tensor:
        b, h, w, c = maps[0].shape
        k = self.num_scales
        # Global means as GEMVs with a ones row (a mean over the strided H, W axes is ~2x slower).
        ones = maps[0].new_full((b, 1, h * w), 1.0 / (h * w))
        context = sum(torch.bmm(ones, m.reshape(b, h * w, c)) for m in maps).squeeze(1)  # (B, C)
        ctx = self.context_fc2(F.gelu(self.context_fc1(context)))
        scale_logits, gate = ctx[:, :k] + self.scale_bias, torch.sigmoid(ctx[:, k:])
        # Softmax over scales on a (K, B, H, W, 1) stack: over a last dim of size K it is ~20x slower.
        logits = torch.stack([self.pixel(m) for m in maps], dim=0) + scale_logits.t()[:, :, None, None, None]
        weights = logits.softmax(dim=0)
        fused = maps[0] * weights[0]
        for i in range(1, k):
            fused = torch.addcmul(fused, maps[i], weights[i])
        mixing = gate[:, :, None] * self.out.weight.t()  # diag(g) @ W_o^T, per image
        out = torch.baddbmm(base.reshape(b, h * w, c), fused.view(b, h * w, c), mixing)
        return out.view(b, h, w, c)


class RefinementStep(nn.Module):
    """One SR iteration over all scales."""

    def __init__(self, dims: list[int], heads: list[int], blocks: list[int], expansion: float, bias: bool):
        super().__init__()
        n = len(dims)
        self.resample = nn.ModuleDict(
            {f"{k}to{j}": Resample(dims[k], dims[j], k, j) for j in range(n) for k in range(n) if k != j}
        )
        self.fuse = nn.ModuleList([SPFF(dims[j], n) for j in range(n)])
        self.blocks = nn.ModuleList([stack(dims[j], blocks[j], heads[j], expansion, bias) for j in range(n)])

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(feats)
        out = []
        for j in range(n):
            aligned = [feats[k] if k == j else self.resample[f"{k}to{j}"](feats[k]) for k in range(n)]
            out.append(self.blocks[j](self.fuse[j](aligned, base=feats[j])))
        return out


class SemanticRefinement(nn.Module):
    """``iterations`` refinement steps (the horizontal axis of the paper's feature grid)."""

    def __init__(
        self,
        dims: list[int],
        heads: list[int],
        iterations: int,
        blocks: list[int],
        expansion: float,
        bias: bool,
    ):
        super().__init__()
        self.steps = nn.ModuleList(
            [RefinementStep(dims, heads, blocks, expansion, bias) for _ in range(iterations)]
        )

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        for step in self.steps:
            feats = step(feats)
        return feats
