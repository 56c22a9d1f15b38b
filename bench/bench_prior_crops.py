"""The wide-view prior on larger crops of held-out test scenes: the pipeline with and without its overview pass.
Prints figures, asserts nothing.

Takes one synthetic part of a training config's test list at 512 px instead of 256 (so every crop spans
several 256 px tiles and a large cloud can cover a tile whole), writes each cloudy crop as a GeoTIFF (8-bit
parts as uint8, reflectance as uint16 x 10^4), runs ``remove_clouds`` on it with the overview pass
(as shipped) and without (each tile filled from its own clear pixels only), and prints the PSNR (clean
protocol) of both against the clear crop, overall and on the cloud's pixels, per crop and on average.

    .venv/bin/python bench/bench_prior_crops.py --config training/configs/bundled-rgb-sat.yaml \\
        --part "Landsat 8 exported after synthetic clouds (columns 75-100 %, 2-98 % of the clear or the cloudy crop)"
    .venv/bin/python bench/bench_prior_crops.py --config training/configs/bundled-rgbn-sat.yaml \\
        --part "S2 synthetic clouds (ROIs1158_spring_s2_101)"
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))


def write_crop(path: Path, x, display: bool) -> None:
    import numpy as np
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    data = np.clip(x, 0, 1)
    data = (data * 255 + 0.5).astype(np.uint8) if display else (data * 10000).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=x.shape[2], height=x.shape[1], count=x.shape[0],
                       dtype=data.dtype, crs="EPSG:32633", transform=from_origin(500000, 4000000, 30, 30)) as out:
        out.write(data)
        if x.shape[0] == 3:
            out.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]


def run(source: Path, output: Path, display: bool, bands: int, overview: bool):
    import numpy as np
    import rasterio

    from viser_cr.core.pipeline import CloudRemovalRequest, remove_clouds

    sensor = ("rgb8" if bands == 3 else "rgbn8") if display else "auto"
    remove_clouds(CloudRemovalRequest([source], output, sensor=sensor, scale=None if display else 1e-4,
                                      wide_view=overview))
    with rasterio.open(output) as out:
        return out.read().astype(np.float32) / (255.0 if display else 1e4)


def main(argv=None) -> int:
    import numpy as np

    from viser_cr.core.metrics import psnr
    from viser_cr.training.config import load_config
    from viser_cr.training.datasets import build_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="a training config whose test list holds the part")
    ap.add_argument("--part", required=True, help="the label of a synthetic part of that test list")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    specs = [spec for spec in cfg["data"]["test"] if spec.get("label") == args.part]
    if not specs:
        print(f"no test part labelled {args.part!r} in {args.config}")
        return 1
    cfg["data"]["test"] = [dict(specs[0], patch_size=args.size, length=args.images)]
    dataset = build_dataset(cfg["data"], "test", int(cfg.get("seed", 0)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(min(args.images, len(dataset))):
            sample = dataset[i]
            x, target = sample["input"].numpy(), sample["target"].numpy()
            cloud, display = sample["mask"].numpy()[0] > 0.5, bool(sample["display"])
            source = Path(tmp) / f"crop{i}.tif"
            write_crop(source, x, display)
            row = [psnr(np.clip(x, 0, 1), target), float(cloud.mean())]
            for overview in (False, True):
                image = np.clip(run(source, Path(tmp) / f"out{i}_{overview}.tif", display, x.shape[0], overview), 0, 1)
                row += [psnr(image, target), psnr(image[:, cloud], target[:, cloud]) if cloud.any() else np.nan]
            rows.append(row)
            print(f"crop {i}: input {row[0]:.2f} dB, cloud {100 * row[1]:.0f} %; tile-local fill {row[2]:.2f} "
                  f"(cloud px {row[3]:.2f}); with the wide-view prior {row[4]:.2f} (cloud px {row[5]:.2f})", flush=True)
    mean = np.nanmean(np.array(rows), axis=0)
    print(f"{args.part}, {len(rows)} crops of {args.size} px: input {mean[0]:.2f} dB; tile-local fill {mean[2]:.2f} "
          f"(cloud px {mean[3]:.2f}); with the wide-view prior {mean[4]:.2f} (cloud px {mean[5]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
