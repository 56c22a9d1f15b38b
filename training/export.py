"""Export a training checkpoint as a bundled model: ``resources/models/<name>.safetensors`` (float16 by
default) + its model card, through ``viser_cr.core.weights.save_model``.

``viser-cr-export --checkpoint runs/NAME/checkpoints/best.pt [--name NAME] [--metrics eval.json ...]
[--models-dir resources/models] [--fp32] [--max-mb 20]``

The card gets the architecture, bands, frame count, reflectance scaling, tile size / overlap, the
description and training data of the config's ``export:`` block, the metrics of the given
evaluation JSON files (``viser-cr-evaluate`` output) and the sha256 of the weights. A file over
``--max-mb`` (20 MB: the plugin zip must stay under 25 MB) is refused and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from ..core.errors import ViserError
from .cli import run_cli

MAX_MB = 20.0
_LOG = logging.getLogger(__name__)


def read_notes(path) -> dict:
    """Extra model-card sections from a YAML/JSON mapping (evaluation tables, limitations, speed, ...)."""
    import dataclasses

    import yaml

    from ..core.weights import ModelCard

    p = Path(path)
    if not p.is_file():
        raise ViserError(f"notes file {p} not found")
    notes = yaml.safe_load(p.read_text())
    if not isinstance(notes, dict):
        raise ViserError(f"{p}: notes must be a mapping of card sections")
    taken = {f.name for f in dataclasses.fields(ModelCard)} | {"training"}
    clash = sorted(set(notes) & taken)
    if clash:
        raise ViserError(f"{p}: {', '.join(clash)} are card fields the export fills itself; rename those sections")
    return notes


def export(checkpoint, name=None, models_dir=None, half=None, metrics_files=(), max_mb=MAX_MB, overrides=None,
           notes=None):
    from ..core.model import ViserCR
    from ..core.weights import DEFAULT_MODELS_DIR, ModelCard, save_model
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    cfg = ckpt["config"]
    ex = dict(cfg.get("export") or {})
    ex.update(overrides or {})
    name = name or ex.get("name") or cfg.get("name")
    half = ex.get("half", True) if half is None else half
    model = ViserCR(**ckpt["arch"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    metrics = {}
    for mf in metrics_files or ():
        data = json.loads(Path(mf).read_text())
        key = f"{data.get('config', 'data')}/{data.get('split', 'test')}/{data.get('protocol', 'clean')}"
        metrics[key] = {"images": data.get("images"), "table": data.get("table")}
        if data.get("by_part"):
            metrics[key]["by_part"] = data["by_part"]
    models_dir = Path(models_dir) if models_dir else DEFAULT_MODELS_DIR
    if not models_dir.is_dir():
        raise ViserError(f"models folder {models_dir} does not exist")
    fields = dict(
        name=name,
        bands=list(ckpt["band_names"]),
        num_frames=int(ckpt["arch"].get("num_frames", 1)),
        tile_size=int(ex.get("tile_size", 256)),
        overlap=int(ex.get("overlap", 32)),
        description=ex.get("description", ""),
        training_data=ex.get("training_data", ""),
        license=ex.get("license", "GPL-2.0-or-later"),
        priority=int(ex.get("priority", 0)),
        metrics=metrics,
        training={"config": cfg.get("name"), "steps": ckpt["step"], "seed": cfg.get("seed"),
                  "loss": cfg.get("loss"), "patch_size": cfg.get("data", {}).get("patch_size")},
        **(read_notes(notes) if notes else {}),
    )
    with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
        card = save_model(model, Path(tmp) / name, half=bool(half), **fields)
        wfile = Path(tmp) / card.weights
        size_mb = wfile.stat().st_size / 1e6
        if size_mb > max_mb:
            raise ViserError(
                f"{name}: weights are {size_mb:.1f} MB, over the {max_mb:g} MB limit (the plugin zip must stay under "
                "25 MB); export in float16 or train a smaller architecture"
            )
        dest_w, dest_c = models_dir / card.weights, models_dir / f"{name}.json"
        shutil.move(str(wfile), dest_w)
        shutil.move(str(Path(tmp) / f"{name}.json"), dest_c)
        for f in (dest_w, dest_c):
            f.chmod(0o644)  # shipped files: world-readable (the temporary files are private)
    card = ModelCard.load(dest_c)
    _LOG.info(f"exported {name}: {dest_w} ({size_mb:.2f} MB, {card.dtype}, {card.sha256[:23]}...) + {dest_c}")
    return card


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="viser-cr-export", description="Export a checkpoint as a bundled model.")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--name", default=None, help="model name (default: the config's export.name or name)")
    ap.add_argument("--models-dir", default=None, help="default: resources/models")
    ap.add_argument("--fp32", action="store_true", help="store float32 instead of float16")
    ap.add_argument("--metrics", action="append", default=[], help="evaluation JSON(s) to put in the card")
    ap.add_argument("--max-mb", type=float, default=MAX_MB)
    ap.add_argument("--description", default=None)
    ap.add_argument("--notes", default=None,
                    help="YAML/JSON mapping of extra card sections (evaluation summary, limitations, ...)")
    args = ap.parse_args(argv)
    over = {"description": args.description} if args.description else None
    return run_cli("viser-cr-export", lambda: export(
        args.checkpoint, args.name, args.models_dir, False if args.fp32 else None, args.metrics, args.max_mb, over,
        notes=args.notes))


if __name__ == "__main__":
    sys.exit(main())
