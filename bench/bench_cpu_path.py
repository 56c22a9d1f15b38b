"""The CPU path against an earlier revision: ``remove_clouds`` of the same generated raster with this
checkout and with ``--against REV`` (``git archive``), alternating, best of ``--repeat``; the speed ratio
and whether the pixels are identical. Prints figures, asserts nothing.

    .venv/bin/python bench/bench_cpu_path.py --against 4738286 [--size 1024] [--repeat 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import make_raster  # noqa: E402 - beside this file

CHILD = """
import json, sys, time
import viser_cr
from viser_cr.core.pipeline import CloudRemovalRequest, remove_clouds
raster, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]) or None
wall, cpu = time.perf_counter(), time.process_time()
result = remove_clouds(CloudRemovalRequest(inputs=[raster], output=out, sensor="s2-l2a", device="cpu",
                                           threads=threads))
print(json.dumps({"tree": viser_cr.__file__, "wall": time.perf_counter() - wall,
                  "cpu": time.process_time() - cpu, "tiles": result.tiles}))
"""


def tree_of(revision: str, folder: Path) -> Path:
    """``folder/viser_cr`` holding ``revision`` of this repository; returns ``folder`` (for PYTHONPATH)."""
    target = folder / "viser_cr"
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return folder


def current_tree(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "viser_cr").symlink_to(ROOT)
    return folder


def run(path_root: Path, raster: Path, output: Path, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(path_root)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(raster), str(output), str(threads)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision to compare with (e.g. main)")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import numpy as np
    import rasterio

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {"before": tree_of(args.against, tmp / "before"), "now": current_tree(tmp / "now")}
        raster = tmp / "in.tif"
        make_raster(raster, args.size)
        runs: dict[str, list[dict]] = {"before": [], "now": []}
        for _ in range(args.repeat):
            for label, root in trees.items():
                runs[label].append(run(root, raster, tmp / f"out_{label}.tif", args.threads))
        with rasterio.open(tmp / "out_before.tif") as a, rasterio.open(tmp / "out_now.tif") as b:
            identical = bool(np.array_equal(a.read(), b.read()))
    best = {label: (min(r["wall"] for r in rs), min(r["cpu"] for r in rs)) for label, rs in runs.items()}
    for label, (wall, cpu) in best.items():
        walls = ", ".join(f"{r['wall']:.1f}" for r in runs[label])
        print(f"{label:6s}: best wall {wall:.2f} s, CPU {cpu:.2f} s, {runs[label][0]['tiles']} tiles (runs: {walls} s)")
    print(f"now / before speed: {best['before'][0] / best['now'][0]:.3f} x by wall clock, "
          f"{best['before'][1] / best['now'][1]:.3f} x by CPU time; identical pixels: {identical}")


if __name__ == "__main__":
    main()
