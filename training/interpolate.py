"""Weight-space interpolation of a fine-tuned model with the model it started from (WiSE-FT).

``python -m viser_cr.training.interpolate --start A.pt --finetuned B.pt --alpha 0.5 --output C.pt``

Wortsman et al., "Robust fine-tuning of zero-shot models" (CVPR 2022): when ``B`` was fine-tuned from
``A``, the weights ``(1 - alpha) * A + alpha * B`` often keep most of what the fine-tune gained on its
target data while losing less of what ``A`` did well elsewhere. The bundled RGB model uses it: the
8-bit fine-tune (bundled-rgb-ft.yaml) helped 8-bit true-colour exports but cost ~10 dB on reflectance
input; the midpoint keeps most of both. The output is a training checkpoint of ``B`` (its config, step
and band names) with interpolated weights, ready for ``viser-cr-evaluate`` / ``viser-cr-export``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..core.errors import ViserError
from .checkpoint import load_checkpoint
from .cli import run_cli


def interpolate(start, finetuned, alpha: float, output) -> dict:
    if not 0.0 <= alpha <= 1.0:
        raise ViserError(f"alpha must be in [0, 1], got {alpha}")
    a, b = load_checkpoint(start), load_checkpoint(finetuned)
    if a["arch"] != b["arch"] or set(a["model"]) != set(b["model"]):
        raise ViserError(f"{start} and {finetuned} hold different architectures; interpolate only a fine-tune "
                         "with the checkpoint it started from")
    weights = {}
    for key, tb in b["model"].items():
        ta = a["model"][key]
        weights[key] = torch.lerp(ta, tb, alpha) if tb.is_floating_point() else tb
    out = {k: v for k, v in b.items() if k not in ("optimizer", "scaler", "scheduler")}  # not for resuming
    out["model"] = weights
    out["interpolation"] = {"method": "WiSE-FT", "start": str(start), "finetuned": str(finetuned), "alpha": alpha}
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, output)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m viser_cr.training.interpolate", description=__doc__.split("\n")[0])
    ap.add_argument("--start", required=True, help="checkpoint the fine-tune started from")
    ap.add_argument("--finetuned", required=True, help="fine-tuned checkpoint")
    ap.add_argument("--alpha", type=float, default=0.5, help="0 = start, 1 = fine-tuned (default 0.5)")
    ap.add_argument("--output", required=True, help="where to write the interpolated checkpoint")
    args = ap.parse_args(argv)

    def run():
        interpolate(args.start, args.finetuned, args.alpha, args.output)
        print(f"wrote {args.output} (alpha {args.alpha})")

    return run_cli("interpolate", run)


if __name__ == "__main__":
    sys.exit(main())
