"""Where a stack model stands against the least-cloudy date: the reference's clear pixels and its clouds apart.

``python -m viser_cr.training.stack_gap --config training/configs/val-haze-rgbn-l3.yaml --model viser-cr-s-rgbn-l3``

On real series the target is another clear date, so a method that keeps the reference's own clear pixels
(what a cloud-removal tool must do) is scored against the ground of a different day there, while the
least-cloudy composite hands in a whole clear date. Per part of the config's test list, over its stacks:

* ``model``, ``least-cloudy``: mean PSNR (clean protocol, as ``gate_sweep``);
* the same two on the reference's clear and on its cloudy pixels (the reference's cloud weight as the
  fill base takes it, haze test included; PSNR of the pooled squared error);
* ``visible lows`` and ``all lows``: the model with the reference's low frequencies (a box of
  ``LOW_RADIUS`` px) in the visible bands, or in every band, taken from its clear context dates where
  both see the ground. A haze the score missed lives in the visible lows; a change of the ground between
  the dates (vegetation in NIR) in all of them. What the second gains over the first is the change of the
  ground, which no cloud-removal method may take from other dates.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import ViserError
from ..core.metrics import psnr_from_mse
from .cli import run_cli
from .config import load_config
from .evaluate import load_trained
from .gate_sweep import add_model_arguments, iter_test_images, psnr
from .metrics import baselines

LOW_RADIUS = 32  # px: the box of the low frequencies taken from the context dates
COLUMNS = ("model", "least-cloudy", "model, ref clear px", "least-cloudy, ref clear px", "model, ref cloudy px",
           "least-cloudy, ref cloudy px", "visible lows from the context", "all lows from the context")


def _box(t: torch.Tensor, radius: int) -> torch.Tensor:
    return F.avg_pool2d(t, 2 * radius + 1, 1, radius, count_include_pad=False)


def with_context_lows(x: torch.Tensor, date_clouds: torch.Tensor, ref_cloud: torch.Tensor, bands: int,
                      radius: int = LOW_RADIUS) -> torch.Tensor:
    """The stack ``x`` (1, L, C, H, W) with its reference's first ``bands`` bands' low frequencies replaced by
    those of its context dates' clear-weighted mean, over the pixels the reference and a context see clear."""
    clears = 1.0 - date_clouds[:, 1:]                                  # (1, L-1, 1, H, W)
    total = clears.sum(dim=1)
    context = (clears * x[:, 1:]).sum(dim=1) / total.clamp_min(1e-6)  # (1, C, H, W)
    both = (1.0 - ref_cloud) * (total - 0.5).div(0.4).clamp(0.0, 1.0)
    difference = (x[:, 0, :bands] - context[:, :bands]) * both
    support = _box(both, radius)
    lows = _box(difference, radius) / support.clamp_min(1e-6) * (support > 0.2).to(x.dtype)
    out = x.clone()
    out[:, 0, :bands] = x[:, 0, :bands] - lows
    return out


def _pooled_psnr(errors: list[tuple[float, int]]) -> float:
    """PSNR of the squared errors pooled over images: ``[(sum of squared errors, values), ...]``."""
    squared, count = sum(e for e, _ in errors), sum(n for _, n in errors)
    return psnr_from_mse(squared / count if count else float("nan"), 1.0)


def gap(cfg: dict, checkpoint=None, model=None, models_dir=None, max_images=200) -> dict:
    """``{part label: {"images": n, "columns": [per COLUMNS]}}`` over the stacks of ``cfg``'s test list."""
    net, _, _, _ = load_trained(checkpoint, model, models_dir)
    if net.num_frames < 2 or getattr(net, "residual_base", None) != "fill":
        raise ViserError("stack_gap needs a stack fill model (num_frames >= 2, residual_base: fill), e.g. "
                         "viser-cr-s-rgbn-l3")
    parts: dict[str, dict[str, list]] = {}
    for label, sample, x, target, _ in iter_test_images(cfg, net, max_images):
        if x.dim() != 4 or x.shape[0] < 2:
            continue
        net.use_radiometry(bool(sample["display"]))
        stack = x[None]
        with torch.no_grad():
            out = net(stack)[0][0].numpy()
            date_clouds = net.date_cloud_weights(stack)
            ref_cloud = net.reference_cloud_weight(stack, date_clouds)
            lows = [net(with_context_lows(stack, date_clouds, ref_cloud, bands))[0][0].numpy()
                    for bands in (min(3, target.shape[0]), target.shape[0])]
        least = baselines(x.numpy(), sample.get("band_names") or ["red", "green", "blue"])["least-cloudy"]
        least = least[: target.shape[0]]
        clear = ref_cloud[0, 0].numpy() < 0.5
        part = parts.setdefault(label, {"whole": [], "clear": [], "cloudy": []})
        part["whole"].append([psnr(out, target), psnr(least, target)] + [psnr(o, target) for o in lows])
        for name, pixels in (("clear", clear), ("cloudy", ~clear)):
            part[name].append([(float(((a[:, pixels] - target[:, pixels]) ** 2).sum()), int(pixels.sum()) * len(a))
                               for a in (np.clip(out, 0, 1), np.clip(least, 0, 1))])
    result = {}
    for label, part in parts.items():
        whole = np.mean(part["whole"], axis=0)
        pooled = [_pooled_psnr([row[k] for row in part[name]]) for name in ("clear", "cloudy") for k in (0, 1)]
        result[label] = {"images": len(part["whole"]), "columns": [*whole[:2], *pooled, *whole[2:]]}
    return result


def markdown(result: dict) -> str:
    lines = [f"| part | stacks | {' | '.join(COLUMNS)} |", "|---|---:|" + "---:|" * len(COLUMNS)]
    for label, row in result.items():
        lines.append(f"| {label} | {row['images']} | " + " | ".join(f"{v:.2f}" for v in row["columns"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m viser_cr.training.stack_gap", description=__doc__.split("\n")[0])
    add_model_arguments(ap, "a training config of stacks; its data.test list is run")
    args = ap.parse_args(argv)

    def run():
        print(markdown(gap(load_config(args.config), args.checkpoint, args.model, args.models_dir, args.max_images)))

    return run_cli("stack_gap", run)


if __name__ == "__main__":
    sys.exit(main())
