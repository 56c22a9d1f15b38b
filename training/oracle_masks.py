"""Where the losses are: a fill model with its fill base taken from the sample's true mask.

``python -m viser_cr.training.oracle_masks --config training/configs/bundled-rgbn-gate.yaml --model viser-cr-s-rgbn``

A fill model's output is its learned correction over a classical fill of the pixels its gated score calls
cloud (``ViserCR.cloud_weight``); ``forward(x, cloud)`` takes any other cloud weight for that fill. Run
with the sample's mask (exact for synthetic clouds, a pseudo mask for real pairs) the model shows how
much a better score would give, and how much is left to the correction:

* ``own``: the model as it runs (its gated score);
* ``no false cloud``: its gated score times the mask (the clear pixels it calls cloud are kept);
* ``full recall``: the larger of its gated score and the mask (every cloud pixel is filled);
* ``mask``: the mask alone, a perfect score.

Per part of the config's test list: mean PSNR (clean protocol, as ``gate_sweep``) and the share of images
worse than the cloudy input. The correction sees the input as it does at inference (its features do
not depend on the fill), so the columns differ only by the fill base under it.
"""

from __future__ import annotations

import argparse
import sys

import torch

from ..core.errors import ViserError
from .cli import run_cli
from .config import load_config
from .evaluate import load_trained
from .gate_sweep import add_model_arguments, iter_test_images, psnr, summarise, table

COLUMNS = ("own", "no false cloud", "full recall", "mask")


def _fill_weights(own: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """The fill base's cloud weights of ``COLUMNS`` after ``own`` (the model's gated score)."""
    return [own * mask, torch.maximum(own, mask), mask]


def oracle(cfg: dict, checkpoint=None, model=None, models_dir=None, max_images=200) -> dict:
    """``{part label: {"images": n, "input": mean PSNR, "psnr": [per column], "worse": [fractions]}}``."""
    net, _, _, _ = load_trained(checkpoint, model, models_dir)
    if getattr(net, "residual_base", None) != "fill":
        raise ViserError("oracle_masks needs a fill model (architecture residual_base: fill): only a fill base takes a "
                         "mask; pick a fill model (every bundled model is one)")
    rows: dict[str, list[tuple[float, list[float]]]] = {}
    for label, sample, x, target, reference in iter_test_images(cfg, net, max_images):
        mask = sample["mask"][None].float()
        net.use_radiometry(bool(sample["display"]))
        with torch.no_grad():
            out, score = net(x[None])
            scores = [psnr(out[0].numpy(), target)]
            for weight in _fill_weights(net.cloud_weight(score), mask):
                scores.append(psnr(net(x[None], cloud=weight)[0][0].numpy(), target))
        rows.setdefault(label, []).append((psnr(reference, target), scores))
    return summarise(rows)


def markdown(result: dict) -> str:
    return table(result, COLUMNS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m viser_cr.training.oracle_masks", description=__doc__.split("\n")[0])
    add_model_arguments(ap, "a training config; its data.test list is run")
    args = ap.parse_args(argv)

    def run():
        result = oracle(load_config(args.config), args.checkpoint, args.model, args.models_dir, args.max_images)
        print(markdown(result))

    return run_cli("oracle_masks", run)


if __name__ == "__main__":
    sys.exit(main())
