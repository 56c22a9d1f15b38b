"""Peak memory of the pipeline does not grow with the raster: peak RSS on a generated 8192 x 8192
raster, and on a wide sparse 30000 x 30000 one, minus that on a 1024 x 1024 one (target <= 300 MB).
Prints figures, asserts nothing.

Each measurement runs ``remove_clouds`` in a fresh subprocess (so peaks do not mix) on a 4-band
uint16 Sentinel-2-like raster generated strip by strip. The wide raster (``--wide``) is sparse and
compressed so it is cheap to make: nodata except a 256-row band of data across its whole width and a
512 x 512 patch in two corners, so the model runs on a few hundred tiles while every buffer that
could grow with the width is exercised. The model is the bundled one when ``resources/models`` has
one for R,G,B,NIR, else an untrained model of a bundled config (``--config``) saved to a temporary
folder.

    .venv/bin/python bench/bench_memory.py [--sizes 1024 8192] [--wide 30000] [--config viser-cr-s]
                                           [--threads 2]
    .venv/bin/python bench/bench_memory.py --sizes 1024 --wide 30000    # the wide raster only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))


def make_raster(path: Path, size: int, strip: int = 512) -> None:
    """A smooth 4-band uint16 raster (reflectance x 10000) with a real CRS, written by strips."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    profile = dict(driver="GTiff", width=size, height=size, count=4, dtype="uint16", crs="EPSG:32633",
                   transform=from_origin(500000, 5000000, 10, 10), tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate", predictor=2)
    rng = np.random.default_rng(0)
    cols = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, strip):
            rows = np.arange(top, min(size, top + strip), dtype=np.float32)[:, None]
            base = 1500 + 800 * np.sin(rows / 97.0) * np.cos(cols / 131.0)
            cloud = 6000 * (np.sin(rows / 400.0 + cols / 300.0) > 0.6)
            data = np.stack([base + 300 * b + cloud + rng.normal(0, 30, base.shape) for b in range(4)])
            dst.write(np.clip(data, 1, 20000).astype("uint16"),
                      window=rasterio.windows.Window(0, top, size, len(rows)))


def make_sparse_raster(path: Path, size: int, panel: int = 4096) -> None:
    """A ``size`` x ``size`` 4-band uint16 raster, nodata 0, tiled and compressed; data only in a
    256-row band across the whole width (middle) and a 512 x 512 patch in the top-left and bottom-right
    corners. Unwritten tiles stay sparse (SPARSE_OK), so the file is small and quick to make."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(driver="GTiff", width=size, height=size, count=4, dtype="uint16", crs="EPSG:32633",
                   transform=from_origin(500000, 5000000, 10, 10), tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate", predictor=2, nodata=0, sparse_ok=True, bigtiff="yes")
    rng = np.random.default_rng(0)

    def patch(rows: int, cols: int, top: int) -> np.ndarray:
        y = np.arange(top, top + rows, dtype=np.float32)[:, None]
        x = np.arange(cols, dtype=np.float32)[None, :]
        base = 1500 + 800 * np.sin(y / 97.0) * np.cos(x / 131.0) + 6000 * (np.sin(y / 40.0 + x / 30.0) > 0.6)
        return np.clip(np.stack([base + 300 * b + rng.normal(0, 30, base.shape) for b in range(4)]), 1, 20000) \
            .astype("uint16")

    middle = (size // 2) // 256 * 256
    with rasterio.open(path, "w", **profile) as dst:
        for left in range(0, size, panel):
            width = min(panel, size - left)
            dst.write(patch(256, width, middle), window=Window(left, middle, width, 256))
        dst.write(patch(512, 512, 0), window=Window(0, 0, 512, 512))
        dst.write(patch(512, 512, size - 512), window=Window(size - 512, size - 512, 512, 512))


def model_dir(config_name: str, workdir: Path) -> tuple[Path | None, str]:
    """The bundled models folder if it has an RGBN model, else a temporary untrained one."""
    from viser_cr.core.errors import WeightsError
    from viser_cr.core.weights import select_model

    try:
        card = select_model(["red", "green", "blue", "nir"], 1)
        return None, card.name
    except WeightsError:
        pass
    import torch
    from trained_like import as_trained

    from viser_cr.core.model import ViserCR, config
    from viser_cr.core.weights import save_model

    torch.manual_seed(0)
    model = as_trained(ViserCR(**config(config_name, in_bands=4, out_bands=4)).eval())
    name = f"untrained-{config_name}"
    save_model(model, workdir / name, name=name, bands=["red", "green", "blue", "nir"], tile_size=256,
               overlap=32, description="untrained, for benchmarks")
    return workdir, name


def child(raster: str, output: str, models: str | None, model: str, threads: int) -> None:
    from viser_cr.core.pipeline import CloudRemovalRequest, remove_clouds

    start = time.perf_counter()
    result = remove_clouds(CloudRemovalRequest(
        inputs=[raster], output=output, model=model, models_dir=Path(models) if models else None,
        device="cpu", threads=threads, sensor="s2-l2a"))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": peak_kib / 1024, "seconds": time.perf_counter() - start,
                      "tiles": result.tiles}))


def measure(raster: Path, output: Path, models: Path | None, model: str, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", str(raster), str(output), str(models or ""), model,
               str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        raster, output, models, model, threads = sys.argv[2:7]
        child(raster, output, models or None, model, int(threads))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 8192],
                        help="dense square rasters; the first is the baseline")
    parser.add_argument("--wide", type=int, default=30000, help="side of the sparse raster (0: none)")
    parser.add_argument("--config", default="viser-cr-s", help="bundled config for the untrained model")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--workdir", type=Path, help="where to put the generated rasters (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        models, model = model_dir(args.config, tmp)
        runs = [(size, f"{size} x {size}", make_raster) for size in args.sizes]
        if args.wide:
            runs.append((args.wide, f"{args.wide} x {args.wide} sparse", make_sparse_raster))
        peaks = {}
        for size, label, make in runs:
            raster = tmp / f"in_{size}.tif"
            make(raster, size)
            figures = measure(raster, tmp / f"out_{size}.tif", models, model, args.threads)
            peaks[label] = figures["peak_mb"]
            print(f"{label}: peak RSS {figures['peak_mb']:.0f} MB, {figures['tiles']} tiles, "
                  f"{figures['seconds']:.1f} s (model {model})", flush=True)
            raster.unlink()
            (tmp / f"out_{size}.tif").unlink(missing_ok=True)
        baseline = runs[0][1]
        for _, label, _ in runs[1:]:
            print(f"peak RSS {label} - {baseline} = {peaks[label] - peaks[baseline]:.0f} MB (target <= 300 MB)")


if __name__ == "__main__":
    main()
