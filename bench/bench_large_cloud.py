"""A cloud larger than a tile: the pipeline with its wide-view prior (the overview pass) vs the tile-local fill.
Prints figures, asserts nothing.

A 1024 x 1024 window of the Landsat 8 scene in ../shared, exported as an 8-bit true-colour image (2-98 %
stretch), gets an opaque synthetic cloud: a disk of radius 330 px with a 40 px soft edge (about 650 px
across, more than two 256 px tiles). ``remove_clouds`` runs on it twice with the bundled RGB model: as it
ships (every tile's fill also draws on the model's output over the raster averaged down to one tile), and
with the overview pass switched off (each tile filled from its own clear pixels only: a tile inside the
cloud has none and falls back to its own cloudy mean). PSNR against the clear window on the cloud's pixels
(alpha >= 0.5) and on the others, and the wall time of each run.

    .venv/bin/python bench/bench_large_cloud.py [--figure docs/large-cloud.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))

SCENE = ROOT.parent / "shared" / "data" / "landsat8" / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
WINDOW = (600, 500, 1024, 1024)  # column, row, width, height: reservoir, forest and a city edge
RADIUS, EDGE = 330, 40


def make_rasters(folder: Path):
    """(cloudy path, clear image (3, H, W) in [0, 1], cloud mask (H, W))."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from viser_cr.training.datasets.common import stretch_to_8bit

    with rasterio.open(SCENE) as src:
        window = Window(*WINDOW)
        data = src.read([3, 2, 1], window=window).astype(np.float32)  # stored blue first: red, green, blue
        profile = dict(driver="GTiff", width=window.width, height=window.height, count=3, dtype="uint8",
                       crs=src.crs, transform=src.window_transform(window))
    clear = stretch_to_8bit(data, data.min(axis=0) > 0, (2, 98))  # what a GIS's 8-bit export writes
    rows, cols = np.mgrid[: clear.shape[1], : clear.shape[2]]
    distance = np.hypot(rows - clear.shape[1] / 2, cols - clear.shape[2] / 2)
    alpha = np.clip((RADIUS - distance) / EDGE, 0, 1)[None]
    cloudy = clear * (1 - alpha) + 0.97 * alpha
    path = folder / "large-cloud.tif"
    with rasterio.open(path, "w", **profile) as out:
        out.write(np.round(cloudy * 255).astype(np.uint8))
        out.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green, rasterio.enums.ColorInterp.blue]
    return path, clear, alpha[0] >= 0.5


def run(source: Path, output: Path, overview: bool) -> tuple[float, object]:
    import numpy as np
    import rasterio

    from viser_cr.core.pipeline import CloudRemovalRequest, remove_clouds

    started = time.perf_counter()
    remove_clouds(CloudRemovalRequest([source], output, model="viser-cr-s-rgb", wide_view=overview))
    seconds = time.perf_counter() - started
    with rasterio.open(output) as out:
        return seconds, out.read().astype(np.float32) / 255


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--figure", default=None, help="also write input / clear / both outputs side by side (PNG)")
    args = ap.parse_args(argv)
    from viser_cr.core.metrics import psnr

    if not SCENE.exists():
        print(f"needs {SCENE} (../shared beside the repository)")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source, clear, cloud = make_rasters(folder)
        import rasterio

        with rasterio.open(source) as src:
            cloudy = src.read().astype("float32") / 255
        results = {}
        for name, overview in (("tile-local fill (no overview)", False), ("with the wide-view prior", True)):
            seconds, image = run(source, folder / f"{overview}.tif", overview)
            results[name] = image
            print(f"{name:32s} cloud px {psnr(image[:, cloud], clear[:, cloud]):6.2f} dB   "
                  f"other px {psnr(image[:, ~cloud], clear[:, ~cloud]):6.2f} dB   {seconds:5.1f} s")
        print(f"{'cloudy input':32s} cloud px {psnr(cloudy[:, cloud], clear[:, cloud]):6.2f} dB   "
              f"other px {psnr(cloudy[:, ~cloud], clear[:, ~cloud]):6.2f} dB")
        if args.figure:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            panels = [("cloudy input (synthetic opaque cloud)", cloudy), ("clear", clear), *results.items()]
            fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.4))
            for ax, (title, image) in zip(axes, panels, strict=True):
                ax.imshow(image.transpose(1, 2, 0).clip(0, 1))
                ax.set_title(title, fontsize=10)
                ax.axis("off")
            fig.suptitle("A cloud larger than a tile (Landsat 8, 8-bit export, 1024 px, 256 px tiles): viser-cr-s-rgb",
                         fontsize=11)
            fig.tight_layout(rect=(0, 0, 1, 0.93))
            fig.savefig(args.figure, dpi=60)
            print(f"written: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
