"""Named architectures of the bundled models (``ViserCR`` keyword arguments, without the bands).

``config(name, in_bands=4, out_bands=4)`` returns a copy with overrides. Costs per 256x256 tile and
CPU speeds are printed by ``make bench`` (bench/bench_forward.py) and listed in docs/model.md.

- ``viser-cr-s``: a CPU model: width 32, most blocks at 1/2 and 1/4
  resolution, where CPU work is compute- rather than memory-bound (full-resolution blocks are bound
  by memory traffic: ~20 % of sgemm at width 24, ~25 % at 32, against 40-50 % deeper down).
- ``viser-cr-xs``: width 24, same layout: ~30 % cheaper to train and run, less efficient per FLOP;
  the bundled weights use it (twice the training steps of ``-s`` on the 2-core CPU they were trained on).
- ``viser-cr-m``: the larger model for a GPU or patient CPU users: width 48, two SR iterations.
- ``*-t3``: the same for up to 3 dates (SpyNet flow at half resolution to keep its cost down).
"""

from __future__ import annotations

import copy

__all__ = ["CONFIGS", "config"]

_SMALL = dict(
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
)

_MEDIUM = dict(_SMALL, width=48, sr_iterations=2)

CONFIGS: dict[str, dict] = {
    "viser-cr-xs": dict(_SMALL, width=24, num_frames=1),
    "viser-cr-s": dict(_SMALL, num_frames=1),
    "viser-cr-m": dict(_MEDIUM, num_frames=1),
    "viser-cr-s-t3": dict(_SMALL, num_frames=3, use_flow=True, flow_downsample=2),
    "viser-cr-m-t3": dict(_MEDIUM, num_frames=3, use_flow=True, flow_downsample=2),
}


def config(name: str, **overrides) -> dict:
    """A copy of the named architecture with ``overrides`` applied (e.g. ``in_bands=3``)."""
    if name not in CONFIGS:
        raise KeyError(f"unknown model config {name!r}; choose one of {', '.join(sorted(CONFIGS))}")
    arch = copy.deepcopy(CONFIGS[name])
    arch.update(overrides)
    return arch
