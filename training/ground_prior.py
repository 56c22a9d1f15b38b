"""The typical clear ground under clouds in a config's training data: a fill model's ``ground_prior``.

``python -m viser_cr.training.ground_prior --config training/configs/bundled-rgbn-fill-4.yaml [--samples 2000]``

Draws ``--samples`` training samples (fixed seed) and, for each with at least 100 cloudy pixels, the mean of
its clear target under its cloud mask, band by band; prints the mean of those over the reflectance samples
and over the 8-bit display samples (``ground_prior`` / ``display_ground_prior`` of the model's
architecture, in the config's band order). Under no information about the ground, the mean ground under
the clouds is the value of least squared error: the fill falls back on it where a tile sees no ground at
all (``core.model.fill.push_pull_composite``, docs/model.md "A ground prior").
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .cli import run_cli
from .config import load_config

MIN_CLOUDY_PIXELS = 100


def ground_under_clouds(cfg: dict, samples: int = 2000, seed: int = 0) -> dict:
    """``{"reflectance": [...], "display": [...], "samples": {kind: count}, "bands": [...]}``."""
    from .datasets import build_dataset

    ds = build_dataset(cfg["data"], "train", int(cfg.get("seed", 0)))
    rng = np.random.default_rng(seed)
    means: dict[str, list[np.ndarray]] = {"reflectance": [], "display": []}
    for index in rng.choice(len(ds), size=min(int(samples), len(ds)), replace=False):
        sample = ds[int(index)]
        cloudy = sample["mask"][0].numpy() > 0.5
        if cloudy.sum() < MIN_CLOUDY_PIXELS:
            continue
        kind = "display" if bool(sample["display"]) else "reflectance"
        means[kind].append(sample["target"].numpy()[:, cloudy].mean(axis=1))
    return {"bands": list(cfg["data"].get("bands", [])),
            "samples": {kind: len(v) for kind, v in means.items()},
            **{kind: [round(float(b), 3) for b in np.mean(v, axis=0)] if v else None for kind, v in means.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m viser_cr.training.ground_prior", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="training config whose train split is read")
    ap.add_argument("--samples", type=int, default=2000, help="training samples drawn (default 2000)")
    args = ap.parse_args(argv)
    return run_cli("ground_prior", lambda: print(json.dumps(ground_under_clouds(load_config(args.config), args.samples))))


if __name__ == "__main__":
    sys.exit(main())
