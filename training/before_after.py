"""A before/after sheet (cloudy | output | clear reference | cloud score | mask) of chosen held-out samples.

``python -m viser_cr.training.before_after --config training/configs/bundled-rgbn.yaml
--model viser-cr-s-rgbn --pick ROIs1970_fall_85_p492 --pick ... --output docs/before-after.png``

Samples come from the config's ``--split`` (default ``test``: scenes never used in training); each
``--pick`` is a substring of a sample name (the first match is used). Row labels give the PSNR of
the cloudy input and of the output against the clear reference (protocol ``clean``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from ..core.errors import ViserError
from ..core.metrics import psnr
from .config import load_config
from .metrics import PSNR_CAP


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of the row labels: protocol ``clean`` (reflectance clipped to 0..1), capped like the tables."""
    return min(psnr(np.clip(a, 0, 1), np.clip(b, 0, 1)), PSNR_CAP)


def main(argv=None) -> int:
    from .datasets import build_dataset
    from .evaluate import load_trained
    from .metrics import rgb_indexes
    from .viz import save_sheet

    ap = argparse.ArgumentParser(prog="before_after", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint")
    g.add_argument("--model")
    ap.add_argument("--split", default="test")
    ap.add_argument("--pick", action="append", default=[], help="substring of a sample name (repeatable)")
    ap.add_argument("--output", required=True)
    ap.add_argument("--title", default=None)
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        net, bands, label, _ = load_trained(args.checkpoint, args.model)
        ds = build_dataset(cfg["data"], args.split, int(cfg.get("seed", 0)))
        wanted = list(args.pick)
        rows = []
        for i in range(len(ds)):
            if not wanted:
                break
            s = ds[i]
            hit = next((w for w in wanted if w in s["name"]), None)
            if hit is None:
                continue
            wanted.remove(hit)
            x = s["input"]
            net.use_radiometry(bool(s["display"]))
            with torch.no_grad():
                pred, score = net(x[None])
            pred = pred.float()[0].numpy()
            ref = x.numpy()[0] if x.dim() == 4 else x.numpy()
            tgt = s["target"].numpy()
            mask = s["mask"][0].numpy() if float(s["mask_weight"]) > 0 else None
            rows.append({"cloudy": ref, "output": pred, "target": tgt, "score": score.float()[0, 0].numpy(),
                         "mask": mask,
                         "label": f"{s['name'][:34]}: input {_psnr(ref, tgt):.1f} dB -> {_psnr(pred, tgt):.1f} dB"})
        if not rows:
            raise ViserError("no sample matched --pick")
        title = args.title or f"{label}, held-out {args.split} samples of {cfg['name']} (protocol clean)"
        save_sheet(args.output, rows, rgb_indexes(bands), title)
        print(f"written: {args.output} ({len(rows)} rows); not found: {wanted or 'none'}")
    except ViserError as exc:
        print(f"before_after: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
