"""GPU end to end: a generated 10980 x 10980 4-band Sentinel-2-like raster through ``remove_clouds``,
then the raw forward pass on the same tiles (target: <= 20 s end to end on an H200). Prints figures,
asserts nothing.

For every precision asked (fp32, bf16, ...): end-to-end seconds, tiles/s, Mpx/s, the batch size the run
chose from free memory, the GPU memory peak; then the model alone on the same tiles, already on the
device, with the same batch size and precision (tiles/s), and the ratio end-to-end / raw forward.
Outputs of each precision are compared with fp32 (largest and mean difference in reflectance, PSNR).
A warm-up run on a small raster first takes CUDA's start-up and cuDNN's autotuning out of the figures.
The model is the bundled RGBN one when ``resources/models`` has it, else an untrained ``--config``.

On a lent GPU machine (one prepared command, ~2-4 minutes including the raster's generation):

    python3 bench/bench_gpu.py --workdir /tmp --json "$OUT/bench_gpu.json"

Tested on the CPU with tiny sizes (the same code path, the CUDA-only figures left out):

    .venv/bin/python bench/bench_gpu.py --size 512 --device cpu --precisions fp32 --compare-io
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import make_raster, model_dir  # noqa: E402 - beside this file

SENSOR = "s2-l2a"


def cuda_peak_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peak_mib(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def end_to_end(raster: Path, output: Path, models: Path | None, model: str, device: str, precision: str,
               batch: int | None, overlap_io: bool | None) -> dict:
    import torch

    from viser_cr.core.pipeline import CloudRemovalRequest, remove_clouds

    target = torch.device(device)
    cuda_peak_reset(target)
    result = remove_clouds(CloudRemovalRequest(
        inputs=[raster], output=output, model=model, models_dir=models, device=device, sensor=SENSOR,
        precision=precision, batch_size=batch, overlap_io=overlap_io))
    return {"seconds": result.seconds, "tiles": result.tiles, "tiles_per_s": result.tiles_per_second,
            "batch_size": result.batch_size, "precision": result.precision, "device": result.device,
            "gpu_peak_mib": cuda_peak_mib(target), "messages": result.messages}


def load_tiles(raster: Path, card):
    """The raster's tiles as reflectance tensors, in the pipeline's grid (tile size and overlap)."""
    import numpy as np
    import rasterio
    import torch

    from viser_cr.core.tiling import TileGrid

    with rasterio.open(raster) as src:
        grid = TileGrid(src.height, src.width, card.tile_size, card.overlap)
        data = src.read().astype(np.float32)
    data *= np.float32(1e-4)
    return [torch.from_numpy(np.ascontiguousarray(data[:, t.y:t.y + t.height, t.x:t.x + t.width]))
            for t in grid.tiles]


def raw_forward(model, tiles, device, batch: int, precision: str) -> dict:
    """The model alone on the tiles, already on the device (stacked in batches before the clock starts)."""
    import torch

    from viser_cr.core.device import autocast_dtype

    dtype = autocast_dtype(device, precision)
    batches = [torch.stack(tiles[i:i + batch]).to(device) for i in range(0, len(tiles), batch)]
    cuda_peak_reset(device)
    with torch.inference_mode():
        start = time.perf_counter()
        for x in batches:
            if dtype is None:
                model(x)
            else:
                with torch.autocast(device_type=device.type, dtype=dtype):
                    model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "tiles_per_s": len(tiles) / seconds, "gpu_peak_mib": cuda_peak_mib(device)}


def compare(reference: Path, other: Path) -> dict:
    """Differences of two outputs in reflectance (uint16 x 10^-4)."""
    import numpy as np
    import rasterio

    with rasterio.open(reference) as a, rasterio.open(other) as b:
        diff = np.abs(a.read().astype(np.float64) - b.read().astype(np.float64)) * 1e-4
    mse = float((diff ** 2).mean())
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980, help="raster side in pixels (default: 10980)")
    parser.add_argument("--warmup-size", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        help="fp32, bf16, fp16, auto (the first is the reference of the comparison)")
    parser.add_argument("--batch", type=int, help="tiles per batch (default: from free memory on a GPU)")
    parser.add_argument("--config", default="viser-cr-s", help="untrained config when no bundled model")
    parser.add_argument("--models-dir", type=Path, help="take --model from this folder instead")
    parser.add_argument("--model", help="model name (with --models-dir)")
    parser.add_argument("--compare-io", action="store_true",
                        help="also run with the reader/writer threads switched the other way")
    parser.add_argument("--skip-raw", action="store_true", help="skip the raw forward pass")
    parser.add_argument("--workdir", type=Path, help="where the generated rasters go (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    import torch

    from viser_cr.core.device import describe_device, resolve_device
    from viser_cr.core.weights import find_model, load_model

    device = resolve_device(args.device)
    figures = {"device": describe_device(device), "size": args.size, "torch": torch.__version__, "runs": {}}
    print(f"device {figures['device']}, torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        models, name = (args.models_dir, args.model) if args.model else model_dir(args.config, tmp)
        card = find_model(name, models_dir=models)
        started = time.perf_counter()
        raster = tmp / f"s2_{args.size}.tif"
        make_raster(raster, args.size)
        make_raster(tmp / "warmup.tif", args.warmup_size)
        print(f"generated {args.size} x {args.size} x 4 uint16 in {time.perf_counter() - started:.1f} s; "
              f"model {card.name}, tile {card.tile_size}, overlap {card.overlap}", flush=True)

        outputs = {}
        for precision in args.precisions:
            end_to_end(tmp / "warmup.tif", tmp / "warmup_out.tif", models, name, str(device), precision,
                       args.batch, None)
            outputs[precision] = tmp / f"out_{precision}.tif"
            run = end_to_end(raster, outputs[precision], models, name, str(device), precision, args.batch, None)
            figures["runs"][precision] = run
            print(f"[{precision}] end to end: {run['seconds']:.2f} s, {run['tiles']} tiles, "
                  f"{run['tiles_per_s']:.2f} tiles/s, {args.size ** 2 / run['seconds'] / 1e6:.2f} Mpx/s, batch "
                  f"{run['batch_size']}, ran {run['precision']}, GPU peak {_mib(run['gpu_peak_mib'])}", flush=True)
            if args.compare_io:
                other = device.type != "cuda"  # the opposite of the default
                alt = end_to_end(raster, tmp / "out_io.tif", models, name, str(device), precision, args.batch, other)
                run["io_threads_" + ("on" if other else "off")] = alt
                print(f"[{precision}] reader/writer threads {'on' if other else 'off'}: {alt['seconds']:.2f} s "
                      f"= {run['seconds'] / alt['seconds']:.3f} x the default's speed", flush=True)

        if not args.skip_raw:
            model, _ = load_model(card, device=str(device))
            tiles = load_tiles(raster, card)
            for precision, run in figures["runs"].items():
                raw = raw_forward(model, tiles, device, run["batch_size"], precision)
                run["raw_forward"] = raw
                run["ratio"] = run["tiles_per_s"] / raw["tiles_per_s"]
                print(f"[{precision}] raw forward on the same {len(tiles)} tiles: {raw['seconds']:.2f} s, "
                      f"{raw['tiles_per_s']:.2f} tiles/s, GPU peak {_mib(raw['gpu_peak_mib'])}; "
                      f"end to end / raw = {100 * run['ratio']:.1f} %", flush=True)

        first = args.precisions[0]
        for precision in args.precisions[1:]:
            diff = compare(outputs[first], outputs[precision])
            figures["runs"][precision]["vs_" + first] = diff
            print(f"[{precision}] vs {first}: max |diff| {diff['max_abs']:.4f}, mean {diff['mean_abs']:.6f} "
                  f"reflectance, PSNR {diff['psnr_db']:.1f} dB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


def _mib(value) -> str:
    return "n/a (CPU)" if value is None else f"{value:.0f} MiB"


if __name__ == "__main__":
    main()
