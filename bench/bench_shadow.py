"""The cloud-shadow test of the bundled mono models: what it finds on real labelled shadows, and its cost.
Prints figures, asserts nothing.

The three ukis-csmask scenes in ../shared (Sentinel-2, Landsat 7, Landsat 5; 512 x 512, labels 4 = cloud,
0 = cloud shadow) go through ``viser-cr-s-rgbn`` (red, green, blue, NIR) and ``viser-cr-s-rgb``, in
reflectance and as 8-bit exports (2-98 % stretch, run as 8-bit display imagery). For each: the share of
the labelled shadow the test finds (recall), the share of what it finds that is labelled shadow
(precision) and the share of the labelled clear pixels it calls shadow. Then the cost: the forward pass of
``viser-cr-s-rgbn`` on the four 256 px tiles of the Sentinel-2 scene with the test on and off, alternated,
median of ``--repeats`` per tile.

    .venv/bin/python bench/bench_shadow.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))

SCENES = ROOT.parent / "shared" / "data" / "ukis-csmask"
SENSORS = ("sentinel2", "landsat7", "landsat5")
CLOUD, SHADOW = 4, 0


def scene(sensor: str, bands: int, display: bool):
    """(image (1, bands, H, W) float32: red, green, blue[, NIR], labels (H, W))."""
    import numpy as np
    import torch

    data = np.load(SCENES / f"{sensor}.npz")
    image = data["img"][..., [2, 1, 0, 3][:bands]].transpose(2, 0, 1).astype(np.float32)
    if display:  # as a GIS exports a cloudy layer: 2-98 % of its own visible bands, 8 bits
        low, high = np.percentile(image[:3], 2), np.percentile(image[:3], 98)
        image = np.round(np.clip((image - low) / (high - low), 0, 1) * 255) / 255
    return torch.from_numpy(image.astype(np.float32))[None], data["msk"][..., 0]


def found_shadows(model, image, display: bool):
    """The pixels the shadow test adds to the model's score (score > 0.5 with the test, not without)."""
    import torch

    model.use_radiometry(display)
    with torch.no_grad():
        model.shadow_test = True
        _, score = model(image)
        model.shadow_test = False
        _, plain = model(image)
    return ((score > 0.5) & ~(plain > 0.5))[0, 0].numpy()


def detection_table(models: dict) -> None:
    print("| model | scene | imagery | labelled shadow % | recall | precision | clear called shadow |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name, model in models.items():
        for sensor in SENSORS:
            for display in (False, True):
                image, labels = scene(sensor, model.in_bands, display)
                found = found_shadows(model, image, display)
                shadow, clear = labels == SHADOW, (labels != SHADOW) & (labels != CLOUD)
                recall = (found & shadow).sum() / max(shadow.sum(), 1)
                precision = (found & shadow).sum() / found.sum() if found.any() else float("nan")
                print(f"| {name} | {sensor} | {'8-bit export' if display else 'reflectance'} | "
                      f"{100 * shadow.mean():.1f} | {100 * recall:.1f} % | "
                      f"{'-' if not found.any() else f'{100 * precision:.1f} %'} | {100 * found[clear].mean():.1f} % |")


def cost(model, repeats: int) -> None:
    import torch

    image, _ = scene("sentinel2", model.in_bands, False)
    model.use_radiometry(False)
    tiles = [image[..., r:r + 256, c:c + 256] for r in (0, 256) for c in (0, 256)]
    times = {True: [], False: []}
    with torch.no_grad():
        for tile in tiles:
            model(tile)  # warm-up
            for _ in range(repeats):
                for on in (True, False):
                    model.shadow_test = on
                    started = time.perf_counter()
                    model(tile)
                    times[on].append(time.perf_counter() - started)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"\nviser-cr-s-rgbn forward per 256 px tile of the Sentinel-2 scene ({torch.get_num_threads()} threads, "
          f"median of {len(times[True])}): {1000 * on:.0f} ms with the shadow test, {1000 * off:.0f} ms without: "
          f"ratio {on / off:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch

    from viser_cr.core.weights import load_model

    torch.set_num_threads(args.threads)
    if not SCENES.is_dir():
        print(f"{SCENES} is missing: this benchmark needs ../shared beside the repository")
        return 1
    models = {name: load_model(name)[0] for name in ("viser-cr-s-rgbn", "viser-cr-s-rgb")}
    detection_table(models)
    cost(models["viser-cr-s-rgbn"], args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
