"""Batch scaling: scenes per minute of ``viser-cr batch``'s engine with 1 and with 2 local Dask workers
on generated Sentinel-2-like scenes, and the ratio. Prints figures, asserts nothing.

Each configuration gets a fresh local cluster of worker processes (the cores split between them, as
``viser-cr batch`` does) and processes every scene again (``force``); the clock runs from the first
submission to the last result, the cluster's start (and every worker's import of torch
and the engine) is reported apart. The model is the bundled RGBN one
when ``resources/models`` has it, else an untrained ``--config``.

    .venv/bin/python bench/bench_batch.py [--scenes 6] [--size 768] [--workers 1 2] [--cores N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import make_raster, model_dir  # noqa: E402 - beside this file


def _import_engine() -> None:
    import viser_cr.core.pipeline
    import viser_cr.core.weights  # noqa: F401


def scenes_per_minute(scenes, out_dir: Path, models: Path | None, model: str, workers: int, cores: int) -> dict:
    from viser_cr.core.batch import dask_client, make_jobs, plan_workers, run_batch
    from viser_cr.core.pipeline import CloudRemovalRequest

    plans = plan_workers(workers, cores, gpus=[], device="cpu")
    out_dir.mkdir(exist_ok=True)

    def request(scene):
        return CloudRemovalRequest(scene.inputs, out_dir / f"{scene.name}.tif", model=model, models_dir=models,
                                   sensor="s2-l2a", device="cpu", threads=plans[0].threads)

    started = time.perf_counter()
    with dask_client(plans=plans) as client:
        client.run(_import_engine)  # every worker imports torch and the engine before the clock starts
        ready = time.perf_counter()
        report = run_batch(make_jobs(scenes, request), client, force=True, tune_allocator=True)
    failed = [r for r in report.results if r.status != "done"]
    if failed:
        raise SystemExit(f"{len(failed)} scene(s) failed: {failed[0].message}")
    return {"workers": workers, "threads": plans[0].threads, "seconds": report.seconds,
            "start_seconds": ready - started, "per_minute": len(scenes) / report.seconds * 60,
            "scene_seconds": sorted(r.seconds for r in report.results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--size", type=int, default=768, help="scene side in pixels")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="cores to split between workers")
    parser.add_argument("--config", default="viser-cr-s", help="untrained config when no bundled model")
    parser.add_argument("--models-dir", type=Path, help="take --model from this folder instead")
    parser.add_argument("--model", help="model name (with --models-dir)")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()

    from viser_cr.core.batch import Scene

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        models, name = (args.models_dir, args.model) if args.model else model_dir(args.config, tmp)
        scenes = []
        for index in range(args.scenes):
            path = tmp / f"S2_{index:02d}.tif"
            make_raster(path, args.size)
            scenes.append(Scene(path.stem, [path]))
        print(f"{args.scenes} scenes of {args.size} x {args.size} x 4 uint16, model {name}, {args.cores} cores",
              flush=True)
        rates = {}
        for workers in args.workers:
            figures = scenes_per_minute(scenes, tmp / f"out_{workers}", models, name, workers, args.cores)
            rates[workers] = figures["per_minute"]
            print(f"{workers} worker(s) x {figures['threads']} thread(s): {figures['per_minute']:.2f} scenes/min "
                  f"({figures['seconds']:.1f} s for {args.scenes} scenes; cluster start {figures['start_seconds']:.1f} s; "
                  f"per scene {figures['scene_seconds'][0]:.1f}-{figures['scene_seconds'][-1]:.1f} s)", flush=True)
        if len(rates) > 1:
            base = min(rates)
            for workers in sorted(rates)[1:]:
                print(f"scaling {workers} vs {base} worker(s): {rates[workers] / rates[base]:.2f} x")


if __name__ == "__main__":
    main()
