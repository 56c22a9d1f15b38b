"""What the L1C cloud source costs a run: ``remove_clouds`` on a real 13-band Sentinel-2 L1C clip with
``cloud_source="model"`` (the network's score alone), ``"auto"`` (the bundled L1C cloud classifier's mask added, as a
run does by default) and ``"s2cloudless"`` (the s2cloudless package's mask, where it is installed), alternately;
prints the wall and CPU times, their ratios and the share of the raster each changes. Asserts nothing.

The clip is ``../shared/data/sentinel2-cloudy`` (1536 x 768 at 10 m, winter farmland and lakes with thin cloud
streaks and small cumulus): its 10, 20 and 60 m files are stacked into one 13-band L1C GeoTIFF (bilinear to
10 m) in a temporary folder.

    .venv/bin/python bench/bench_cloud_source.py [--repeat 2] [--threads 2] [--figure docs/cloud-source.png]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))

CLIP = ROOT.parent / "shared" / "data" / "sentinel2-cloudy"


def stack_l1c(folder: Path, out: Path) -> Path:
    """The clip's three files as one 13-band uint16 L1C raster on the 10 m grid."""
    import rasterio

    from viser_cr.training.distill_l1c_cloud import read_l1c_clip_dn

    bands, profile = read_l1c_clip_dn(folder)
    with rasterio.open(out, "w", **dict(profile, count=13, dtype="uint16", compress="deflate", tiled=True)) as dst:
        dst.write(bands)
    return out


def timed_run(raster: Path, output: Path, source: str, threads: int | None):
    from viser_cr.core.pipeline import CloudRemovalRequest, remove_clouds

    wall, cpu = time.perf_counter(), time.process_time()
    result = remove_clouds(CloudRemovalRequest([raster], output, cloud_source=source, device="cpu", threads=threads))
    return time.perf_counter() - wall, time.process_time() - cpu, result


def cloud_share(output: Path, raster: Path) -> float:
    """Share of the pixels the run changed (keep-clear keeps the rest as they are)."""
    import rasterio

    with rasterio.open(output) as out, rasterio.open(raster) as src:
        return float((out.read() != src.read([4, 3, 2, 8])).any(axis=0).mean())


def save_figure(raster: Path, outputs: dict[str, Path], path: Path) -> None:
    """Input, the bundled classifier's mask, the score alone and the default run, true colour (reflectance x 3.5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import rasterio

    from viser_cr.core import s2cloudless

    with rasterio.open(raster) as src:
        l1c = src.read().astype(np.float32) * np.float32(1e-4)
    panels = [("cloudy L1C input", l1c[[3, 2, 1]]),
              ("the bundled L1C classifier's mask (probability > 0.6)",
               s2cloudless.window_cloud(l1c, s2cloudless.S2_13, classifier="viser-l1c-cloud")[None])]
    for source, title in (("model", "--cloud-source model (the score alone)"),
                          ("auto", "default: the classifier's mask added")):
        with rasterio.open(outputs[source]) as out:
            panels.append((title, out.read([1, 2, 3]).astype(np.float32) * np.float32(1e-4)))
    fig, axes = plt.subplots(2, 2, figsize=(16, 8.6))
    for ax, (title, image) in zip(axes.flat, panels, strict=True):
        ax.imshow(image[0] if len(image) == 1 else np.clip(np.moveaxis(image, 0, -1) * 3.5, 0, 1),
                  cmap="gray", interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="alternate runs of each; the best is kept")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--figure", type=Path, help="also save the input, the mask and both outputs as a PNG")
    args = parser.parse_args()
    if not CLIP.exists():
        raise SystemExit(f"benchmark clip not found: {CLIP}")
    from viser_cr.core import s2cloudless

    runs: dict[str, list] = {"model": [], "auto": []}
    if s2cloudless.available():
        runs["s2cloudless"] = []
    else:
        print(f"(no s2cloudless row: {s2cloudless.HOW_TO_GET})")
    with tempfile.TemporaryDirectory() as tmp:
        raster = stack_l1c(CLIP, Path(tmp) / "l1c.tif")
        for source in runs:  # loads the model and the classifiers
            timed_run(raster, Path(tmp) / "warm.tif", source, args.threads)
        for _ in range(args.repeat):
            for source in runs:
                runs[source].append(timed_run(raster, Path(tmp) / f"{source}.tif", source, args.threads))
        changed = {source: cloud_share(Path(tmp) / f"{source}.tif", raster) for source in runs}
        if args.figure:
            save_figure(raster, {source: Path(tmp) / f"{source}.tif" for source in runs}, args.figure)
    first = runs["auto"][0][2]
    print(f"clip {CLIP.name}: 1536 x 768, 13-band L1C, {first.tiles} tiles, model {first.model}")
    for source, results in runs.items():
        wall, cpu = min(r[0] for r in results), min(r[1] for r in results)
        score_line = next((m for m in results[0][2].messages if m.startswith("Clouds:")), "")
        share = re.search(r"calls ([\d.]+ %)", score_line)
        print(f"cloud source {source:11}: wall {wall:6.2f} s, CPU {cpu:6.2f} s; pixels changed {100 * changed[source]:.1f} %"
              + (f" (the score alone calls {share.group(1)} cloud)" if share else ""))
    for source in runs:
        if source == "model":
            continue
        wall_ratio = min(r[0] for r in runs[source]) / min(r[0] for r in runs["model"])
        cpu_ratio = min(r[1] for r in runs[source]) / min(r[1] for r in runs["model"])
        print(f"{source} / score alone: {wall_ratio:.2f} x by wall clock, {cpu_ratio:.2f} x by CPU time")


if __name__ == "__main__":
    main()
