"""Sweep the fill gate's threshold of a model over the parts of a config's test list.

``python -m viser_cr.training.gate_sweep --config training/configs/val-8bit-rgb.yaml --model viser-cr-s-rgb
--thresholds 0.35 0.5 0.6 0.7``

The gate decides which pixels the classical fill replaces (``ViserCR.cloud_weight``); the network's
correction does not depend on it, so one forward pass per threshold and image shows what a threshold
would give. Per part: the mean PSNR (clean protocol: reflectance clipped to [0, 1], all bands) of the
model's output at each threshold and the share of images worse than the cloudy input. Every sample is
run at the swept threshold whatever its radiometry (8-bit or reflectance), and otherwise as the pipeline
runs it (``use_radiometry`` from the sample's ``display`` flag): sweep each kind of data on its own, as
``val-8bit-*.yaml`` does, to choose ``fill_threshold`` and ``display_fill_threshold``. As a user's threshold
does, a swept one moves the gate only: the 8-bit raises of the score stay as the card made them, so the column
at the card's own gate is the shipped output.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from ..core.metrics import psnr as _raw_psnr
from .cli import run_cli
from .config import load_config
from .evaluate import load_trained
from .metrics import PSNR_CAP


def psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    """Protocol ``clean``: reflectance clipped to [0, 1], capped like the evaluation's tables."""
    return min(float(_raw_psnr(np.clip(prediction, 0, 1), np.clip(target, 0, 1))), PSNR_CAP)


def sweep(cfg: dict, thresholds, checkpoint=None, model=None, models_dir=None, max_images=200) -> dict:
    """``{part label: {"images": n, "input": mean PSNR, "psnr": [per threshold], "worse": [fractions]}}``."""
    net, _, _, _ = load_trained(checkpoint, model, models_dir)
    rows: dict[str, list[tuple[float, list[float]]]] = {}
    for label, sample, x, target, reference in iter_test_images(cfg, net, max_images):
        scores = []
        # each sample's own radiometry (what the pipeline does for it), with the swept value as the gate of both kinds
        net.use_radiometry(bool(sample["display"]))
        for threshold in thresholds:
            net.use_fill_threshold(threshold)
            with torch.no_grad():
                out, _ = net(x[None])
            scores.append(psnr(out[0].numpy(), target))
        rows.setdefault(label, []).append((psnr(reference, target), scores))
    return summarise(rows)


def iter_test_images(cfg: dict, net, max_images=200):
    """The first ``max_images`` images of ``cfg``'s test list, each as ``(part label, sample, the model's
    input, target, cloudy reference)`` (target and reference as numpy arrays of the target's bands)."""
    from .datasets import build_dataset, part_label, part_of_sample, split_specs

    ds = build_dataset(cfg["data"], "test", int(cfg.get("seed", 0)))
    labels = [part_label(spec) for spec in split_specs(cfg["data"], "test")]
    for i in range(min(len(ds), int(max_images))):
        sample = ds[i]
        x = sample["input"]
        x = x[0] if x.dim() == 4 and net.num_frames == 1 else x
        target = sample["target"].numpy()
        reference = (x[0] if x.dim() == 4 else x).numpy()[: target.shape[0]]
        yield labels[part_of_sample(ds, i)], sample, x, target, reference


def summarise(rows: dict) -> dict:
    """Per part, ``[(input PSNR, [PSNR per variant]), ...]`` -> ``{"images", "input", "psnr", "worse"}``."""
    result = {}
    for label, part in rows.items():
        inputs = np.array([r[0] for r in part])
        outputs = np.array([r[1] for r in part])
        result[label] = {"images": len(part), "input": float(inputs.mean()),
                         "psnr": [float(v) for v in outputs.mean(axis=0)],
                         "worse": [float(v) for v in (outputs < inputs[:, None]).mean(axis=0)]}
    return result


def markdown(result: dict, thresholds) -> str:
    return table(result, [f"{t:g}" for t in thresholds])


def table(result: dict, columns) -> str:
    """A ``summarise`` result as a markdown table: per part, the input's PSNR and each column's."""
    lines = [f"| part | images | cloudy input | {' | '.join(columns)} |", "|---|---:|---:|" + "---:|" * len(columns)]
    for label, row in result.items():
        cells = " | ".join(f"{p:.2f} ({100 * w:.0f} % worse)" for p, w in zip(row["psnr"], row["worse"], strict=True))
        lines.append(f"| {label} | {row['images']} | {row['input']:.2f} | {cells} |")
    return "\n".join(lines) + "\n"


def add_model_arguments(ap: argparse.ArgumentParser, config_help: str) -> None:
    """``--config``, ``--model`` or ``--checkpoint``, ``--models-dir`` and ``--max-images``."""
    ap.add_argument("--config", required=True, help=config_help)
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="bundled model name, card .json or .safetensors")
    which.add_argument("--checkpoint", help="training checkpoint (.pt)")
    ap.add_argument("--models-dir", default=None)
    ap.add_argument("--max-images", type=int, default=200)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m viser_cr.training.gate_sweep", description=__doc__.split("\n")[0])
    add_model_arguments(ap, "a training config; its data.test list is swept")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.35, 0.5, 0.6, 0.7, 0.8])
    args = ap.parse_args(argv)

    def run():
        result = sweep(load_config(args.config), args.thresholds, args.checkpoint, args.model, args.models_dir,
                       args.max_images)
        print(markdown(result, args.thresholds))

    return run_cli("gate_sweep", run)


if __name__ == "__main__":
    sys.exit(main())
