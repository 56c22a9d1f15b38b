"""Named architectures of the bundled models (``ViserCR`` keyword arguments, without the bands).

``config(name, in_bands=4, out_bands=4)`` returns a copy with overrides. Costs per 256x256 tile and
CPU speeds are printed by ``make bench`` (bench/bench_forward.py) and listed in docs/model.md.

On a CPU the transformer blocks at full resolution are bound by their element-wise work and small
channel counts (LayerNorm over 24-32 channels, depthwise 3x3, GELU): ~20 % of sgemm, against 35-50 %
at 1/2 and 1/4 resolution, and each block costs about the same FLOPs at every scale. So the CPU models
put their transformer blocks at 1/2 and 1/4 resolution; full resolution keeps the embedding, the
Adaptive Mask score, PSE, the SR fusion, the skip connection and the output conv.

- ``viser-cr-s``: the bundled CPU model: width 32, blocks [0, 2, 4] (decoder [0, 2]), AM, PSE, SR.
- ``viser-cr-xs``: width 24 with one block per path at full resolution (blocks [1, 2, 4]); the first
  bundled weights used it (0.26 MFLOP/px, ~30 % of sgemm on 2 cores). Kept for comparison.
- ``viser-cr-m``: the larger model for a GPU or patient CPU users: width 48, blocks [1, 2, 4], two SR
  iterations.
- All of them refine a classical completion (``residual_base="fill"``) and up-sample bilinearly; the
  cards of earlier weights record ``input`` / ``shuffle`` and load as they were trained.
- ``*-t3``: the same for up to 3 dates (SpyNet flow at half resolution to keep its cost down).
"""

from __future__ import annotations

import copy

__all__ = ["CONFIGS", "config"]

_RESTORMER_LAYOUT = dict(
    width=32,
    blocks=[1, 2, 4],
    decoder_blocks=[1, 2],
    heads=[1, 2, 4],
    ffn_expansion=2.66,
    refine_blocks=[0, 1, 1],
    use_mask=True,
    mask_ratio=0.25,
    mask_patch=8,
    use_pse=True,
    use_sr=True,
    sr_iterations=1,
    residual_base="fill",  # prior-guided completion (docs/model.md)
    upsample="bilinear",   # no 2/4 px sub-pixel grid
)

# no transformer blocks at full resolution (see the module docstring)
_CPU = dict(_RESTORMER_LAYOUT, blocks=[0, 2, 4], decoder_blocks=[0, 2])

_MEDIUM = dict(_RESTORMER_LAYOUT, width=48, sr_iterations=2)

_TEMPORAL = dict(num_frames=3, use_flow=True, flow_downsample=2)

CONFIGS: dict[str, dict] = {
    "viser-cr-xs": dict(_RESTORMER_LAYOUT, width=24, num_frames=1),
    "viser-cr-s": dict(_CPU, num_frames=1),
    "viser-cr-m": dict(_MEDIUM, num_frames=1),
    "viser-cr-s-t3": dict(_CPU, **_TEMPORAL),
    "viser-cr-m-t3": dict(_MEDIUM, **_TEMPORAL),
}


def config(name: str, **overrides) -> dict:
    """A copy of the named architecture with ``overrides`` applied (e.g. ``in_bands=3``)."""
    if name not in CONFIGS:
        raise KeyError(f"unknown model config {name!r}; choose one of {', '.join(sorted(CONFIGS))}")
    arch = copy.deepcopy(CONFIGS[name])
    arch.update(overrides)
    return arch
