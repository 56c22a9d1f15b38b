"""Multi-temporal alignment and fusion: SpyNet flow, similarity-gated warping (Eq. 7), date fusion.

- ``SpyNet``: the architecture of Ranjan & Black (2017) as used by BasicVSR++: a 6-level image
  pyramid, one 5-conv 7x7 module per level predicting a flow residual (about 1.44 M parameters for
  3 bands, the same module and parameter names as BasicSR so published weights can be loaded by the
  user). The published weights are non-commercial, so none ship: the last conv of each level starts at
  zero, so the untrained network outputs zero flow, which is right for co-registered stacks. Train it
  with the rest of the network, or give ``load_weights(path)`` a file (safetensors, or a torch file
  read with ``weights_only=True``; a BasicSR ``{"params": ...}`` wrapper is accepted).
- ``similarity``: the per-pixel cosine similarity of the reference's and the date's features, mapped
  through a learned ``sigmoid(a * cos + b)`` to (0, 1). Eq. 7 warps with ``flow * S``: where a date
  disagrees with the reference (a cloud in either), its flow is damped so the occlusion cannot drag
  features across the image.
- ``TemporalFusion``: works for any number of dates 1..num_frames. Each date (reference included)
  gets a per-pixel confidence logit from ``[F_ref, F_l_aligned, S_l]``; a softmax over dates weights
  the aligned features, and the result is merged with the reference by a 1x1 conv over
  ``[F_ref, fused]`` plus a residual. Fixed widths whatever L is; with one date it reduces to a learned
  function of the reference alone. (The paper concatenates the L aligned maps, which fixes L.)
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SpyNet", "flow_warp", "TemporalAlignment", "TemporalFusion"]


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``x`` (B, C, H, W) by ``flow`` (B, 2, H, W) in pixels (x then y), border padding."""
    b, _, h, w = x.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=x.dtype, device=x.device),
        torch.arange(w, dtype=x.dtype, device=x.device),
        indexing="ij",
    )
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


class BasicModule(nn.Module):
    """One SpyNet pyramid level: five 7x7 convs predicting a flow residual."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.basic_module = nn.Sequential(
            nn.Conv2d(in_channels, 32, 7, padding=3),
            nn.ReLU(),
            nn.Conv2d(32, 64, 7, padding=3),
            nn.ReLU(),
            nn.Conv2d(64, 32, 7, padding=3),
            nn.ReLU(),
            nn.Conv2d(32, 16, 7, padding=3),
            nn.ReLU(),
            nn.Conv2d(16, 2, 7, padding=3),
        )
        nn.init.zeros_(self.basic_module[-1].weight)  # zero flow until trained
        nn.init.zeros_(self.basic_module[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SpyNet(nn.Module):
    """Optical flow from the reference image to another date (pixels, channel 0 = x, 1 = y)."""

    levels = 6

    def __init__(self, bands: int = 3):
        super().__init__()
        self.bands = bands
        self.basic_module = nn.ModuleList([BasicModule(2 * bands + 2) for _ in range(self.levels)])
        if bands == 3:  # ImageNet statistics, as the published SpyNet expects
            mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        else:
            mean, std = [0.45] * bands, [0.225] * bands
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def _process(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        ref_pyr = [(ref - self.mean) / self.std]
        supp_pyr = [(supp - self.mean) / self.std]
        for _ in range(self.levels - 1):
            ref_pyr.insert(0, F.avg_pool2d(ref_pyr[0], 2, 2, count_include_pad=False))
            supp_pyr.insert(0, F.avg_pool2d(supp_pyr[0], 2, 2, count_include_pad=False))
        flow = None
        for level, module in enumerate(self.basic_module):
            if flow is None:  # the coarsest level starts from zero flow
                b, _, h, w = ref_pyr[0].shape
                up = ref.new_zeros(b, 2, h, w)
            else:
                up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            warped = flow_warp(supp_pyr[level], up)
            flow = module(torch.cat([ref_pyr[level], warped, up], dim=1)) + up
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor, downsample: int = 1) -> torch.Tensor:
        """Flow ``(B, 2, H, W)`` that warps ``supp`` onto ``ref``; computed at ``1/downsample`` resolution."""
        h, w = ref.shape[-2:]
        hs = max(32, int(math.ceil(h / downsample / 32.0)) * 32)
        ws = max(32, int(math.ceil(w / downsample / 32.0)) * 32)
        ref_s = F.interpolate(ref, size=(hs, ws), mode="bilinear", align_corners=False)
        supp_s = F.interpolate(supp, size=(hs, ws), mode="bilinear", align_corners=False)
        flow = F.interpolate(self._process(ref_s, supp_s), size=(h, w), mode="bilinear", align_corners=False)
        scale = torch.tensor([w / ws, h / hs], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)
        return flow * scale

    def load_weights(self, path: str | Path) -> None:
        """Load user-supplied SpyNet weights (safetensors or a torch file); never unpickles objects."""
        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "params" in state:
                state = state["params"]
        state = {k.removeprefix("spynet."): v for k, v in state.items() if k not in ("mean", "std")}
        self.load_state_dict(state, strict=True)


class TemporalAlignment(nn.Module):
    """Align one date's features to the reference: ``W(F_l, flow_l * S_l)`` (Eq. 7)."""

    def __init__(self, dim: int, flow_bands: int, use_flow: bool):
        super().__init__()
        self.flow_bands = flow_bands
        self.spynet = SpyNet(flow_bands) if use_flow else None
        self.sim_proj = nn.Linear(dim, dim, bias=False)
        self.sim_scale = nn.Parameter(torch.tensor(5.0))
        self.sim_bias = nn.Parameter(torch.tensor(0.0))

    def similarity(self, ref_feat: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """``S`` in (0, 1), ``(B, H, W, 1)``, from the cosine similarity of projected features."""
        cos = F.cosine_similarity(self.sim_proj(ref_feat), self.sim_proj(feat), dim=-1, eps=1e-6)
        return torch.sigmoid(self.sim_scale * cos + self.sim_bias).unsqueeze(-1)

    def forward(
        self,
        ref_img: torch.Tensor,
        img: torch.Tensor,
        ref_feat: torch.Tensor,
        feat: torch.Tensor,
        downsample: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Return the aligned features ``(B, H, W, C)``, the similarity ``(B, H, W, 1)`` and the flow
        ``(B, 2, H, W)`` that aligned them (None without SpyNet: the dates are taken as co-registered)."""
        sim = self.similarity(ref_feat, feat)
        if self.spynet is None:
            return feat, sim, None
        n = self.flow_bands
        flow = self.spynet(ref_img[:, :n], img[:, :n], downsample) * sim.permute(0, 3, 1, 2)
        aligned = flow_warp(feat.permute(0, 3, 1, 2), flow)
        return aligned.permute(0, 2, 3, 1).contiguous(), sim, flow


class TemporalFusion(nn.Module):
    """Confidence-weighted softmax over dates, then a merge with the reference (any L >= 1)."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = max(8, dim // 2)
        self.confidence_fc1 = nn.Linear(2 * dim + 1, hidden)
        self.confidence_fc2 = nn.Linear(hidden, 1)
        self.merge = nn.Linear(2 * dim, dim, bias=False)

    def forward(
        self, ref: torch.Tensor, aligned: list[torch.Tensor], sims: list[torch.Tensor]
    ) -> torch.Tensor:
        logits = [
            self.confidence_fc2(F.gelu(self.confidence_fc1(torch.cat([ref, feat, sim], dim=-1))))
            for feat, sim in zip(aligned, sims, strict=True)
        ]
        weights = torch.stack(logits, dim=0).softmax(dim=0)
        fused = (weights * torch.stack(aligned, dim=0)).sum(dim=0)
        return ref + self.merge(torch.cat([ref, fused], dim=-1))
