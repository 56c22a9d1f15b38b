"""Check a model's cloud score against real cloud labels (ukis-csmask: Sentinel-2, Landsat 7, Landsat 5).

``python -m viser_cr.training.score_check --model viser-cr-s-rgbn [--data ../shared/data/ukis-csmask]``

Each ``*.npz`` holds ``img`` (H, W, 6) reflectance in the band order blue, green, red, NIR, SWIR1,
SWIR2 and ``msk`` (H, W, 1) labels: 4 = cloud, 0 = cloud shadow, anything else a clear class. The model
sees the bands it was trained on (reflectance clipped to [0, 1]); a pixel counts as cloud where the
score exceeds the pipeline's keep-clear threshold. Per file: cloud recall (labelled cloud called
cloud), the false-cloud rate on clear pixels (what keep-clear would needlessly replace), the share of
shadow called cloud, IoU and accuracy on cloud vs clear (shadow left out). There is no clear target in
these files, so this checks the score map only, which is what keep-clear relies on.

``--stretch 2 98`` checks the same real clouds in 8-bit display imagery: each image exported as an 8-bit
true-colour GIS export would be (each band's 2 / 98 % percentiles of the cloudy image to 0 / 255, as a
GIS's automatic stretch renders a cloudy layer) and run as the pipeline runs 8-bit rasters
(``use_radiometry(True)``: a model's display gate and display score heads).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ..core.errors import ViserError
from ..core.pipeline import SCORE_THRESHOLD
from .cli import run_cli
from .datasets.common import read_npz, stretch_to_8bit, window_slices
from .datasets.labels import UKIS_BANDS, UKIS_CLOUD

CLOUD, SHADOW = UKIS_CLOUD, 0


def score_map(model, bands, image: np.ndarray, stretch=None) -> np.ndarray:
    """The model's cloud score ``(H, W)`` for a ``(H, W, 6)`` ukis-csmask image (as an 8-bit export with
    ``stretch``: see the module docstring)."""
    missing = [b for b in bands if b not in UKIS_BANDS]
    if missing:
        raise ViserError(f"the model needs bands {missing}, which ukis-csmask files do not have")
    picked = np.clip(np.nan_to_num(np.stack([image[..., UKIS_BANDS.index(b)] for b in bands])), 0.0, 1.0)
    if stretch is not None:
        picked = stretch_to_8bit(picked, np.ones(picked.shape[1:], dtype=bool), stretch)
    model.use_radiometry(stretch is not None)
    x = torch.from_numpy(picked.astype(np.float32))[None]
    with torch.inference_mode():
        _, score = model(x)
    return score[0, 0].numpy()


def agreement(score: np.ndarray, labels: np.ndarray, threshold: float = SCORE_THRESHOLD) -> dict:
    """Cloud-vs-label figures for one image (see the module docstring)."""
    called = score > threshold
    cloud, shadow = labels == CLOUD, labels == SHADOW
    clear = ~cloud & ~shadow
    judged = cloud | clear
    both = called & cloud
    return {
        "pixels": int(labels.size),
        "cloud_fraction": float(cloud.mean()),
        "cloud_recall": float(both.sum() / max(cloud.sum(), 1)),
        "false_cloud_on_clear": float((called & clear).sum() / max(clear.sum(), 1)),
        "shadow_called_cloud": float((called & shadow).sum() / max(shadow.sum(), 1)) if shadow.any() else None,
        "iou": float(both.sum() / max((called & judged).sum() + cloud.sum() - both.sum(), 1)),
        "accuracy": float((called[judged] == cloud[judged]).mean()) if judged.any() else None,
    }


def check(model_name=None, data_dir="../shared/data/ukis-csmask", models_dir=None, checkpoint=None,
          columns=(0.0, 1.0), threshold: float = SCORE_THRESHOLD, stretch=None) -> dict:
    """Figures per file of a bundled model (``model_name``) or a training ``checkpoint``, on the columns
    ``columns`` (fractions: ``(0.5, 1.0)`` is the east half, held out of training.datasets.labels parts
    that train on the west half)."""
    from .evaluate import load_trained

    model, bands, label, _ = load_trained(checkpoint, model_name, models_dir, torch.device("cpu"))
    files = sorted(Path(data_dir).glob("*.npz"))
    if not files:
        raise ViserError(f"no .npz file in {data_dir}; point --data at the ukis-csmask folder")
    window = (columns[0], 0.0, columns[1], 1.0)
    results = {}
    for path in files:
        arrays = read_npz(path, ("img", "msk"))
        rows, cols = window_slices(window, *arrays["msk"].shape[:2])
        image, labels = arrays["img"][rows, cols], arrays["msk"][rows, cols, 0]
        results[path.stem] = agreement(score_map(model, bands, image, stretch), labels, threshold)
    return {"model": label, "threshold": threshold, "columns": list(columns), "files": results,
            "stretch": None if stretch is None else list(stretch)}


def markdown(result: dict) -> str:
    lines = [
        f"Cloud score of {result['model']} vs ukis-csmask labels (cloud = score > {result['threshold']}; "
        f"columns {result['columns'][0]:g}-{result['columns'][1]:g} of each image"
        + (", each as an 8-bit export, stretch {:g}-{:g} %".format(*result["stretch"]) if result.get("stretch") else "")
        + "):",
        "",
        "| file | cloud % | cloud recall | false cloud on clear | shadow called cloud | IoU | accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f} %"

    for name, r in result["files"].items():
        lines.append(
            f"| {name} | {pct(r['cloud_fraction'])} | {pct(r['cloud_recall'])} | {pct(r['false_cloud_on_clear'])} "
            f"| {pct(r['shadow_called_cloud'])} | {r['iou']:.3f} | {pct(r['accuracy'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m viser_cr.training.score_check", description=__doc__.split("\n")[0])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="bundled model name, card .json or .safetensors")
    which.add_argument("--checkpoint", help="training checkpoint (.pt)")
    ap.add_argument("--models-dir", default=None)
    ap.add_argument("--data", default="../shared/data/ukis-csmask", help="folder of ukis-csmask .npz files")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--threshold", type=float, default=SCORE_THRESHOLD,
                    help=f"score above which a pixel is cloud (default {SCORE_THRESHOLD:g}; the bundled models' fill "
                         "gates, which keep-clear keeps by too, are the card's fill_threshold and "
                         "display_fill_threshold)")
    ap.add_argument("--columns", type=float, nargs=2, default=(0.0, 1.0), metavar=("FROM", "TO"),
                    help="check these columns of each image only, as fractions (0.5 1 = the east half)")
    ap.add_argument("--stretch", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="check each image as an 8-bit export stretched between these percentiles (2 98: a GIS's "
                         "automatic stretch), run as 8-bit imagery")
    args = ap.parse_args(argv)

    def run():
        result = check(args.model, args.data, args.models_dir, args.checkpoint, tuple(args.columns), args.threshold,
                       None if args.stretch is None else tuple(args.stretch))
        print(markdown(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))

    return run_cli("score_check", run)


if __name__ == "__main__":
    sys.exit(main())
