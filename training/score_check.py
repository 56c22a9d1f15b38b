"""Check a model's cloud score against real cloud labels (ukis-csmask: Sentinel-2, Landsat 7, Landsat 5).

``python -m viser_cr.training.score_check --model viser-cr-s-rgbn [--data ../shared/data/ukis-csmask]``

Each ``*.npz`` holds ``img`` (H, W, 6) reflectance in the band order blue, green, red, NIR, SWIR1,
SWIR2 and ``msk`` (H, W, 1) labels: 4 = cloud, 0 = cloud shadow, anything else a clear class. The model
sees the bands it was trained on (reflectance clipped to [0, 1]); a pixel counts as cloud where the
score exceeds the pipeline's keep-clear threshold. Per file: cloud recall (labelled cloud called
cloud), the false-cloud rate on clear pixels (what keep-clear would needlessly replace), and apart on clear
water and on bright clear ground away from the clouds (``metrics.ground_kinds`` of the reflectance, also under
``--stretch``), the share of shadow called cloud, IoU and accuracy on cloud vs clear (shadow left out). There is
no clear target in these files, so this checks the score map only, which is what keep-clear relies on.

``--raster IMAGE --labels LABELS --layout L --cloud V [--unknown V]`` checks a labelled raster instead, read as a
``type: labels`` training part reads it (training/datasets/labels.py): e.g. the real Landsat 8 cumulus field of
``landsat8-cloudy`` against its QA band's cloud confidence (``--cloud 3 --unknown 2``: high is cloud, medium is left
out). ``--rows`` and ``--columns`` keep a part of each image (the part a training run held out).

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
from .datasets.labels import UKIS_BANDS, UKIS_CLOUD, load_labelled_images
from .metrics import BRIGHT_GROUND, EDGE_MARGIN, ground_kinds

CLOUD, SHADOW = UKIS_CLOUD, 0
UNKNOWN = 255  # a label class left out of every figure (a labelled raster's ``unknown`` values)


def score_map(model, bands, image: np.ndarray, stretch=None) -> np.ndarray:
    """The model's cloud score ``(H, W)`` for a ``(H, W, 6)`` ukis-csmask image (as an 8-bit export with
    ``stretch``: see the module docstring)."""
    missing = [b for b in bands if b not in UKIS_BANDS]
    if missing:
        raise ViserError(f"the model needs bands {missing}, which ukis-csmask files do not have")
    return score_of(model, np.stack([image[..., UKIS_BANDS.index(b)] for b in bands]), stretch)


def score_of(model, picked: np.ndarray, stretch=None, valid=None) -> np.ndarray:
    """The model's cloud score ``(H, W)`` for ``(C, H, W)`` reflectance in the model's bands (``valid``: the pixels
    an 8-bit export's stretch is measured on; all by default)."""
    picked = np.clip(np.nan_to_num(picked), 0.0, 1.0)
    if stretch is not None:
        valid = np.ones(picked.shape[1:], dtype=bool) if valid is None else valid
        picked = stretch_to_8bit(picked, valid, stretch)
    model.use_radiometry(stretch is not None)
    x = torch.from_numpy(picked.astype(np.float32))[None]
    with torch.inference_mode():
        _, score = model(x)
    return score[0, 0].numpy()


def agreement(score: np.ndarray, labels: np.ndarray, threshold: float = SCORE_THRESHOLD,
              kinds: dict[str, np.ndarray] | None = None) -> dict:
    """Cloud-vs-label figures for one image (see the module docstring); ``kinds``: ``metrics.ground_kinds`` of the
    image, for the false-cloud rate on each (None where the image has none of it)."""
    called = score > threshold
    cloud, shadow = labels == CLOUD, labels == SHADOW
    clear = ~cloud & ~shadow & (labels != UNKNOWN)
    judged = cloud | clear
    both = called & cloud
    figures = {
        "pixels": int(labels.size),
        "cloud_fraction": float(cloud.mean()),
        "cloud_recall": float(both.sum() / max(cloud.sum(), 1)),
        "false_cloud_on_clear": float((called & clear).sum() / max(clear.sum(), 1)),
        "shadow_called_cloud": float((called & shadow).sum() / max(shadow.sum(), 1)) if shadow.any() else None,
        "iou": float(both.sum() / max((called & judged).sum() + cloud.sum() - both.sum(), 1)),
        "accuracy": float((called[judged] == cloud[judged]).mean()) if judged.any() else None,
    }
    for kind, where in (kinds or {}).items():
        ground = where & clear
        figures[f"false_cloud_on_{kind}"] = float((called & ground).sum() / ground.sum()) if ground.any() else None
        figures[f"{kind}_pixels"] = int(ground.sum())
    return figures


def check(model_name=None, data_dir="../shared/data/ukis-csmask", models_dir=None, checkpoint=None,
          columns=(0.0, 1.0), threshold: float = SCORE_THRESHOLD, stretch=None, rows=(0.0, 1.0),
          labelled_raster: dict | None = None) -> dict:
    """Figures per file of a bundled model (``model_name``) or a training ``checkpoint``, on the columns
    ``columns`` and rows ``rows`` (fractions: columns ``(0.5, 1.0)`` is the east half, held out of
    training.datasets.labels parts that train on the west half). ``labelled_raster``: a ``type: labels`` source
    (``files``, ``layout``, ``labels``, ``cloud``, ``unknown``) checked instead of the ukis-csmask files."""
    from .evaluate import load_trained

    model, bands, label, _ = load_trained(checkpoint, model_name, models_dir, torch.device("cpu"))
    window = (columns[0], rows[0], columns[1], rows[1])
    if labelled_raster is not None:
        images = load_labelled_images([{**labelled_raster, "window": window}], bands)
        results = {im.name: agreement(score_of(model, im.image, stretch, im.valid), _label_classes(im), threshold,
                                      ground_kinds(im.image, bands, im.display, im.cloud & im.known))
                   for im in images}
    else:
        files = sorted(Path(data_dir).glob("*.npz"))
        if not files:
            raise ViserError(f"no .npz file in {data_dir}; point --data at the ukis-csmask folder")
        results = {}
        for path in files:
            arrays = read_npz(path, ("img", "msk"))
            row_slice, col_slice = window_slices(window, *arrays["msk"].shape[:2])
            image, labels = arrays["img"][row_slice, col_slice], arrays["msk"][row_slice, col_slice, 0]
            kinds = ground_kinds(np.moveaxis(image, -1, 0), UKIS_BANDS, cloud=labels == CLOUD)
            results[path.stem] = agreement(score_map(model, bands, image, stretch), labels, threshold, kinds)
    return {"model": label, "threshold": threshold, "columns": list(columns), "rows": list(rows), "files": results,
            "stretch": None if stretch is None else list(stretch),
            "labels": "ukis-csmask" if labelled_raster is None else str(labelled_raster["labels"])}


def _label_classes(image) -> np.ndarray:
    """A labelled image's cloud / clear / left-out pixels as the classes ``agreement`` reads."""
    classes = np.where(image.cloud, CLOUD, 1).astype(np.uint8)
    classes[~image.known] = UNKNOWN
    return classes


def markdown(result: dict) -> str:
    lines = [
        f"Cloud score of {result['model']} vs {result.get('labels', 'ukis-csmask')} labels (cloud = score > "
        f"{result['threshold']}; columns {result['columns'][0]:g}-{result['columns'][1]:g}"
        + (" and rows {:g}-{:g}".format(*result["rows"]) if list(result.get("rows", (0, 1))) != [0, 1] else "")
        + " of each image"
        + (", each as an 8-bit export, stretch {:g}-{:g} %".format(*result["stretch"]) if result.get("stretch") else "")
        + "):",
        "",
        f"Water: clear pixels whose NIR is below green; bright ground: clear pixels whose mean R, G, B reflectance is at "
        f"least {BRIGHT_GROUND:g} (sand, bare soil, concrete); both {EDGE_MARGIN} px or more from labelled cloud (nearer, "
        "the cloud's edge); each with its pixel count.",
        "",
        "| file | cloud % | cloud recall | false cloud on clear | on water | on bright ground | shadow called cloud "
        "| IoU | accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f} %"

    def kind_cell(r, kind):
        rate = r.get(f"false_cloud_on_{kind}")
        return "–" if rate is None else f"{pct(rate)} ({r[f'{kind}_pixels']} px)"

    for name, r in result["files"].items():
        lines.append(
            f"| {name} | {pct(r['cloud_fraction'])} | {pct(r['cloud_recall'])} | {pct(r['false_cloud_on_clear'])} "
            f"| {kind_cell(r, 'water')} | {kind_cell(r, 'bright')} "
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
    ap.add_argument("--rows", type=float, nargs=2, default=(0.0, 1.0), metavar=("FROM", "TO"),
                    help="check these rows of each image only, as fractions (0 0.5 = the north half)")
    raster = ap.add_argument_group("a labelled raster instead of the ukis-csmask files")
    raster.add_argument("--raster", default=None, help="the cloudy image (e.g. "
                        "../shared/data/landsat8-cloudy/L8_L1_gulf_coast_cloudy_30m.tif)")
    raster.add_argument("--labels", default=None, help="its label raster (e.g. ..._cloud_confidence.tif, band 1)")
    raster.add_argument("--layout", default=None, help="the image's layout (training.datasets.common.LAYOUTS, e.g. "
                        "landsat8-l1-10)")
    raster.add_argument("--cloud", type=float, nargs="+", default=None, help="label values meaning cloud (e.g. 3)")
    raster.add_argument("--unknown", type=float, nargs="*", default=(), help="label values left out (e.g. 2)")
    ap.add_argument("--stretch", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="check each image as an 8-bit export stretched between these percentiles (2 98: a GIS's "
                         "automatic stretch), run as 8-bit imagery")
    args = ap.parse_args(argv)
    given = [args.raster, args.labels, args.layout, args.cloud]
    if any(v is not None for v in given) and not all(v is not None for v in given):
        ap.error("a labelled raster needs --raster, --labels, --layout and --cloud together")
    labelled_raster = None if args.raster is None else {
        "files": str(Path(args.raster).resolve()), "labels": Path(args.labels).name, "layout": args.layout,
        "cloud": args.cloud, "unknown": list(args.unknown)}
    if labelled_raster is not None and Path(args.labels).resolve().parent != Path(args.raster).resolve().parent:
        ap.error("--labels must lie beside --raster (the label raster is found by name in the image's folder)")

    def run():
        result = check(args.model, args.data, args.models_dir, args.checkpoint, tuple(args.columns), args.threshold,
                       None if args.stretch is None else tuple(args.stretch), tuple(args.rows), labelled_raster)
        print(markdown(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))

    return run_cli("score_check", run)


if __name__ == "__main__":
    sys.exit(main())
