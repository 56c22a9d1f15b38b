"""Long stacks (a season of dates): a stack model given every date against the per-tile pick of the 2 dates
that see most of what the reference cannot, and against the classical composites. Prints figures, asserts
nothing.

The real SEN12MS-CR-TS series in ../shared (one 256 px patch through 2018, real clouds, real change): for
every clear target date t and every cloudy reference date r within ``--window`` dates of t, a stack of r and
the ``--dates`` - 1 dates nearest to t (never t itself), as the evaluation builds its 3-date stacks
(``training.datasets.sen12ms.SeriesDataset``, mode ``real``). Restrict the dates with ``--first`` /
``--last`` (ImgNo): 0-19 is what the models' choices were made on, 20-29 the held-out dates. Per stack:

- ``pick 2``: the reference and the 2 context dates ``choose_context_dates`` picks (what the pipeline does
  per tile for a model without ``all_dates``), through the model;
- ``all``: every date through the model (``all_dates``; the composite takes any number);
- the least-cloudy date, the per-pixel median and the cloud-masked median of all dates (the evaluation's
  composites, over the model's own per-date cloud weights), and the mono model's path on the reference alone.

PSNR (clean protocol) averaged over stacks, and pooled over the reference's cloudy pixels (its pseudo mask).

    .venv/bin/python bench/bench_long_stack.py --model viser-cr-s-rgbn-l3 [--first 0 --last 19] [--dates 9]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))

SERIES = ROOT.parent / "shared" / "data" / "sen12ms-cr-ts" / "series"
METHODS = ("cloudy input", "pick 2", "all", "least-cloudy", "median", "cloud-masked median", "reference alone")


def predictions(net, bands, x) -> dict:
    """Every method's output ``(C, H, W)`` for one stack ``x`` ``(L, C, H, W)``."""
    import torch

    from viser_cr.core.model.fill import choose_context_dates
    from viser_cr.training.metrics import baselines, masked_median

    with torch.no_grad():
        date_clouds = net.date_cloud_weights(x[None])
        picks = [0, *choose_context_dates(date_clouds, 2)[0].tolist()]
        picked, _ = net(x[picks][None], date_clouds=date_clouds[:, picks])
        limit = net.all_dates
        net.all_dates = True  # the same weights, every date
        every, _ = net(x[None], date_clouds=date_clouds)
        net.all_dates = limit
        alone, _ = net(x[:1][None])
    stack = x.numpy()
    composites = baselines(stack, bands)
    return {"cloudy input": stack[0], "pick 2": picked[0].numpy(), "all": every[0].numpy(),
            "least-cloudy": composites["least-cloudy"], "median": composites["median"],
            "cloud-masked median": masked_median(stack, date_clouds[0, :, 0].numpy()),
            "reference alone": alone[0].numpy()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="bundled stack model")
    which.add_argument("--checkpoint", help="training checkpoint (.pt) of a stack model")
    ap.add_argument("--series", type=Path, default=SERIES)
    ap.add_argument("--first", type=int, default=0, help="first ImgNo of the dates used (default 0)")
    ap.add_argument("--last", type=int, default=19, help="last ImgNo of the dates used (default 19)")
    ap.add_argument("--dates", type=int, nargs="+", default=[5, 7, 9], help="stack lengths (default 5 7 9)")
    ap.add_argument("--window", type=int, default=12, help="reference and context within this many dates of t")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from viser_cr.core.metrics import psnr_from_mse
    from viser_cr.training.datasets.sen12ms import SeriesDataset
    from viser_cr.training.evaluate import load_trained
    from viser_cr.training.gate_sweep import psnr  # the evaluation's: clipped to [0, 1], capped

    torch.set_num_threads(args.threads)
    net, bands, label, _ = load_trained(args.checkpoint, args.model, None, torch.device("cpu"))
    print(f"{label}, series dates {args.first}-{args.last}, window {args.window}")
    print("| dates | stacks | " + " | ".join(METHODS) + " |")
    print("|---:|---:|" + "---:|" * len(METHODS))
    for length in args.dates:
        data = SeriesDataset(args.series, bands=bands, num_frames=length, dates=range(args.first, args.last + 1),
                             mode="real", window=args.window, patch_size=256, train=False)
        scores = {m: [] for m in METHODS}
        errors = {m: 0.0 for m in METHODS}
        cloudy_values = 0
        for index in range(len(data)):
            sample = data[index]
            target = sample["target"].numpy()
            cloudy = sample["mask"].numpy().reshape(target.shape[-2:]) > 0.5
            cloudy_values += int(cloudy.sum()) * target.shape[0]
            for method, image in predictions(net, bands, sample["input"]).items():
                scores[method].append(psnr(image, target))
                image, truth = np.clip(image[:, cloudy], 0.0, 1.0), np.clip(target[:, cloudy], 0.0, 1.0)
                errors[method] += float(((image - truth) ** 2).sum())
        cells = [f"{np.mean(scores[m]):.2f} ({psnr_from_mse(errors[m] / max(cloudy_values, 1), 1.0):.2f})" for m in METHODS]
        print(f"| {length} | {len(data)} | " + " | ".join(cells) + " |", flush=True)
    print("PSNR dB averaged over stacks (pooled over the reference's cloudy pixels); "
          "'pick 2' is what the pipeline did per tile before all_dates")


if __name__ == "__main__":
    main()
