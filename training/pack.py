"""Pack a training config's data for a lent GPU machine (``make gpu-train-pack``, ``training/gpu_train.sh``).

The GPU machine gets a copy of the repository and at most 64 MiB of git-ignored paths beside it; it has
torch with CUDA but no GDAL and no network, and ``../shared`` does not travel. So this packs exactly
what the config's training datasets read:

1. builds the config's ``train`` (and ``val``) datasets here, recording every raster they read
   (``datasets.common.recording_reads``);
2. writes each of those rasters again under ``<output>/data/`` at its path relative to ``data.root``,
   with the bands no dataset reads set to zero and DEFLATE level 9 (a 13-band Sentinel-2 patch read as
   R, G, B, NIR and cirrus shrinks to about a third), so globs, scene names and band layouts work as
   they are, and the GPU machine reads them with ``tifffile`` (no GDAL needed: plain reads only);
3. copies ``data.cloud_shapes`` and a checkpoint ``train.init_from`` (bundled models travel with the
   repository);
4. writes ``<output>/config.yaml``: the config with its base merged, ``data.root`` pointing at the packed
   data, no test split (evaluation runs here, on ``../shared``, when the checkpoint is back).

It fails before writing anything large when the pack would exceed ``--budget-mib``, naming the
biggest files: drop or narrow the config's sources then.

    python -m viser_cr.training.pack --config training/configs/gpu-rgbn.yaml --output .gpu
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from .cli import run_cli
from .config import apply_overrides, load_config, read_config_file

_LOG = logging.getLogger("viser_cr.training.pack")  # not __name__: run as __main__ by python -m

MIB = 2**20
# the device tool carries 64 MiB of ignored paths with the repository (about 24 MiB of tracked files
# and 1.5 MiB of wheels ride along): room left for data
DEFAULT_BUDGET_MIB = 36.0
PACKED_SPLITS = ("train", "val")


@dataclass(frozen=True)
class PackedRaster:
    source: Path
    relative: Path
    bands: tuple[int, ...]   # 0-based band indexes some dataset reads (the others are written as zeros); () copies
    windows: tuple           # the windows read (fractions, ``read_reflectance``); None: the whole raster


def record_rasters(cfg: dict, splits=PACKED_SPLITS) -> list[PackedRaster]:
    """Every raster the config's ``splits`` datasets read, with the bands read (builds the datasets)."""
    from .datasets import build_dataset, data_root
    from .datasets.common import band_indexes, recording_reads

    root = data_root(cfg["data"]).resolve()
    with recording_reads() as reads:
        for split in splits:
            if cfg["data"].get(split):
                dataset = build_dataset(cfg["data"], split, int(cfg.get("seed", 0)))
                for part in getattr(dataset, "parts", [dataset]):
                    if hasattr(part, "preload"):  # datasets that read their files on first use
                        part.preload()
    bands: dict[Path, set[int]] = {}
    windows: dict[Path, set] = {}
    for path, layout, names, grid, window in reads:
        if layout is None:  # a .npz (datasets.common.read_npz): copied as it is
            bands.setdefault(path.resolve(), set())
            windows.setdefault(path.resolve(), set()).add(None)
            continue
        if grid is not None:
            raise InputError(f"{path} is read onto another date's grid (a part with dates: true); the GPU machine "
                             "has no GDAL to warp with: leave such parts out of a config to pack")
        bands.setdefault(path.resolve(), set()).update(band_indexes(layout.bands, names))
        windows.setdefault(path.resolve(), set()).add(None if window is None else tuple(float(v) for v in window))
    rasters = []
    for path, used in bands.items():
        try:
            relative = path.relative_to(root)
        except ValueError:
            raise InputError(f"{path} is not under data.root ({root}); give data sources relative to data.root") from None
        read = windows[path]
        rasters.append(PackedRaster(path, relative, tuple(sorted(used)), (None,) if None in read else tuple(sorted(read))))
    return sorted(rasters, key=lambda r: str(r.relative))


def write_packed(raster: PackedRaster, out: Path) -> int:
    """The raster again at ``out``, the bands and pixels nobody reads as zeros, DEFLATE 9; returns its size."""
    import rasterio

    from .datasets.common import window_slices

    with rasterio.open(raster.source) as src:
        data = src.read()
        profile = src.profile
    unused = [b for b in range(data.shape[0]) if b not in raster.bands]
    data[unused] = 0
    if None not in raster.windows:  # same size and grid, so the config's windows still apply
        read = np.zeros(data.shape[-2:], dtype=bool)
        for window in raster.windows:
            read[window_slices(window, *read.shape)] = True
        data[:, ~read] = 0
    integer = np.issubdtype(data.dtype, np.integer)
    profile.update(driver="GTiff", compress="deflate", zlevel=9, predictor=2 if integer else 1, tiled=False,
                   blockxsize=None, blockysize=None, interleave="band")
    profile = {k: v for k, v in profile.items() if v is not None}
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out.stat().st_size


def _copy(source: Path, out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out)
    return out.stat().st_size


def _check_budget(sizes: dict[str, int], budget_mib: float) -> None:
    total = sum(sizes.values())
    if total > budget_mib * MIB:
        biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
        listed = ", ".join(f"{name} ({size / MIB:.1f} MiB)" for name, size in biggest)
        raise InputError(f"the pack would take {total / MIB:.1f} MiB, over the {budget_mib:g} MiB budget; the biggest: "
                         f"{listed}. Drop or narrow sources in the config (include patterns, fewer files)")


def _write_pack(rasters, extras: dict[str, Path], raw: dict, config, folder: Path, budget_mib: float) -> dict[str, int]:
    """The packed rasters, the other files and ``config.yaml`` written into ``folder``; their sizes."""
    import yaml

    sizes = {name: source.stat().st_size for name, source in extras.items()}
    _check_budget(sizes, budget_mib)
    for raster in rasters:
        out = folder / "data" / raster.relative
        sizes["data/" + str(raster.relative)] = write_packed(raster, out) if raster.bands else _copy(raster.source, out)
        _check_budget(sizes, budget_mib)
    for name, source in extras.items():
        _copy(source, folder / name)
    (folder / "config.yaml").write_text(
        f"# packed by viser_cr.training.pack from {config} for training/gpu_train.sh\n" + yaml.safe_dump(raw, sort_keys=False))
    return sizes


def pack(config, output, overrides=(), budget_mib: float = DEFAULT_BUDGET_MIB) -> dict[str, int]:
    """Pack ``config`` (a path) into ``output``; returns the packed files' sizes by relative name."""
    from .datasets import data_root

    cfg = load_config(config, list(overrides))
    output = Path(output)
    rasters = record_rasters(cfg)
    if not rasters:
        raise InputError(f"{config}: its train / val datasets read no raster; nothing to pack")
    raw = apply_overrides(read_config_file(config), list(overrides))
    data = raw.setdefault("data", {})
    extras: dict[str, Path] = {}
    if cfg["data"].get("cloud_shapes"):
        shapes = Path(cfg["data"]["cloud_shapes"])
        extras["data/" + str(shapes)] = data_root(cfg["data"]) / shapes
    init = cfg["train"].get("init_from")
    if init and Path(str(init)).is_file():  # a checkpoint of a run here (bundled model names travel as they are)
        extras["init.pt"] = Path(str(init))
        raw.setdefault("train", {})["init_from"] = str(output / "init.pt")
    data["root"] = str(output / "data")
    data["test"] = []  # evaluation runs here, on ../shared, when the checkpoint is back
    partial = output.with_name(output.name + ".partial")  # renamed onto output only when complete
    shutil.rmtree(partial, ignore_errors=True)
    try:
        sizes = _write_pack(rasters, extras, raw, config, partial, budget_mib)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    wheels = output / "wheels"
    if wheels.is_dir():  # downloaded once (make gpu-train-pack); kept across packs
        shutil.move(str(wheels), str(partial / "wheels"))
    shutil.rmtree(output, ignore_errors=True)
    partial.rename(output)
    _LOG.info(f"packed {len(rasters)} rasters and {len(extras)} other files: {sum(sizes.values()) / MIB:.1f} MiB "
              f"(sources {sum(r.source.stat().st_size for r in rasters) / MIB:.1f} MiB) in {output}")
    return sizes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m viser_cr.training.pack", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="training config (YAML)")
    ap.add_argument("--output", default=".gpu", help="pack folder, git-ignored, carried by the device tool (default .gpu)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, as for viser-cr-train (repeatable)")
    ap.add_argument("--budget-mib", type=float, default=DEFAULT_BUDGET_MIB,
                    help=f"largest pack allowed (default {DEFAULT_BUDGET_MIB:g} MiB)")
    args = ap.parse_args(argv)
    return run_cli("viser_cr.training.pack", lambda: pack(args.config, args.output, args.overrides, args.budget_mib))


if __name__ == "__main__":
    sys.exit(main())
