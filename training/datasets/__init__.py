"""Training datasets. ``build_dataset(data_cfg, split)`` turns the ``data:`` block of a training
config into one dataset (a ``MixDataset`` when several parts are listed); ``PART_TYPES`` maps each
``type:`` to the function that builds it from a ``Part``.

Every dataset yields reflectance in a declared band order (``dataset.band_names``), identical random
crops / flips / rotations for every date and the target, and the sample dict described in
``common``. Kinds (``type:`` of a part):

* ``synthetic`` — synthetic clouds on real clear rasters (``synthetic.py``; ``sources:`` list)
* ``pairs``     — SEN12MS-CR cloudy/clear pairs (``sen12ms.PairsDataset``)
* ``series``    — SEN12MS-CR-TS series, ``mode: real | synthetic`` (``sen12ms.SeriesDataset``)
* ``cuhk-cr``   — CUHK-CR1 / CUHK-CR2 (``benchmarks.CUHKCR``)
* ``sen2mtc``   — Sen2_MTC_New (``benchmarks.Sen2MTC``)

Relative paths resolve against ``data.root`` (environment variable ``VISER_DATA_ROOT`` overrides it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import InputError
from .benchmarks import CUHKCR, Sen2MTC
from .clouds import CloudConfig, CloudGenerator, load_cloud_shapes
from .common import LAYOUTS, RGB, RGBN, S2_13, MixDataset
from .labels import LabelledCloudDataset, load_labelled_images
from .sen12ms import PairsDataset, SeriesDataset
from .synthetic import SyntheticCloudDataset, load_clear_images

__all__ = [
    "build_dataset", "data_root", "CloudConfig", "CloudGenerator", "load_cloud_shapes", "LAYOUTS",
    "RGB", "RGBN", "S2_13", "MixDataset", "PairsDataset", "SeriesDataset", "SyntheticCloudDataset",
    "load_clear_images", "LabelledCloudDataset", "load_labelled_images", "CUHKCR", "Sen2MTC",
]

_COMMON = {"type", "repeat", "patch_size", "flips", "rotations", "label"}


def data_root(data_cfg: dict) -> Path:
    return Path(os.environ.get("VISER_DATA_ROOT") or data_cfg.get("root") or ".")


def _path(root: Path, p) -> Path:
    p = Path(p)
    return p if p.is_absolute() else root / p


def _generator(data_cfg: dict, root: Path, cache: dict) -> CloudGenerator:
    if "generator" not in cache:
        shapes = None
        if data_cfg.get("cloud_shapes"):
            path = _path(root, data_cfg["cloud_shapes"])
            if not path.exists():
                raise InputError(f"cloud shapes file not found: {path} (data.cloud_shapes; set it to null to use "
                                 "procedural shapes only)")
            shapes = load_cloud_shapes(path)
        cache["generator"] = CloudGenerator(CloudConfig.from_dict(data_cfg.get("clouds")), shapes)
    return cache["generator"]


@dataclass
class Part:
    """What one entry of a split is built from: its own keys and what the whole ``data:`` block sets."""

    args: dict                   # the entry's keys, less those every kind shares (_COMMON)
    common: dict                 # seed, train, patch_size, flips, rotations
    bands: tuple[str, ...]
    num_frames: int | None
    root: Path
    split: str
    data_cfg: dict
    cache: dict                  # shared by the entries of a split (one cloud generator)

    def rooted_args(self) -> dict:
        """``args`` with its ``root`` resolved against ``data.root``."""
        return dict(self.args, root=_path(self.root, self.args["root"]))

    def sources(self, kind: str) -> tuple[list, dict]:
        """``(sources, the other args)`` of a part that reads a list of ``sources`` (synthetic, labels)."""
        args = dict(self.args)
        sources = args.pop("sources", None)
        if not sources:
            raise InputError(f"a {kind} part of data.{self.split} needs 'sources'")
        return sources, args

    def generator(self) -> CloudGenerator:
        return _generator(self.data_cfg, self.root, self.cache)


def _synthetic(part: Part):
    sources, args = part.sources("synthetic")
    images = load_clear_images(sources, part.bands, part.root)
    return SyntheticCloudDataset(images, part.bands, part.generator(), num_frames=part.num_frames, **args,
                                 **part.common)


def _pairs(part: Part):
    return PairsDataset(bands=part.bands, num_frames=part.num_frames, **part.rooted_args(), **part.common)


def _series(part: Part):
    args = part.rooted_args()
    generator = part.generator() if args.get("mode", "real") == "synthetic" else None
    return SeriesDataset(bands=part.bands, num_frames=args.pop("frames", part.num_frames or 1), generator=generator,
                         mono=part.num_frames is None, **args, **part.common)


def _labels(part: Part):
    sources, args = part.sources("labels")
    images = load_labelled_images(sources, part.bands, part.root)
    return LabelledCloudDataset(images, part.bands, num_frames=part.num_frames, **args, **part.common)


def _cuhk_cr(part: Part):
    return CUHKCR(nir="nir" in part.bands, num_frames=part.num_frames, **part.rooted_args(), **part.common)


def _sen2mtc(part: Part):
    return Sen2MTC(bands=part.bands, **part.rooted_args(), **part.common)


# ``type:`` of a part -> its builder. Benchmarks fix their own band order: checked against data.bands.
PART_TYPES: dict[str, Callable[[Part], object]] = {
    "synthetic": _synthetic, "pairs": _pairs, "series": _series, "labels": _labels, "cuhk-cr": _cuhk_cr,
    "sen2mtc": _sen2mtc,
}
KINDS = tuple(PART_TYPES)
_FIXED_BANDS = {"cuhk-cr", "sen2mtc"}


def build_part(spec: dict, data_cfg: dict, split: str, seed: int = 0, cache: dict | None = None):
    kind = spec.get("type")
    if kind not in PART_TYPES:
        raise InputError(f"unknown dataset type {kind!r} in data.{split}: use one of {', '.join(KINDS)}")
    train = split == "train"
    default_patch = data_cfg.get("patch_size", 128) if train else data_cfg.get("eval_patch_size", 256)
    common = dict(seed=seed, train=train, patch_size=spec.get("patch_size", default_patch),
                  flips=spec.get("flips", True), rotations=spec.get("rotations", True))
    bands = tuple(data_cfg.get("bands", RGBN))
    part = Part({k: v for k, v in spec.items() if k not in _COMMON}, common, bands, data_cfg.get("num_frames"),
                data_root(data_cfg), split, data_cfg, {} if cache is None else cache)
    ds = PART_TYPES[kind](part)
    if kind in _FIXED_BANDS and tuple(ds.band_names) != bands:
        raise InputError(f"{kind} gives bands {ds.band_names}, the config asks for {bands}")
    return ds


def part_label(spec: dict) -> str:
    """A short name for one entry of a split: its ``label``, else its type and what it reads."""
    if spec.get("label"):
        return str(spec["label"])
    what = spec.get("root") or ", ".join(str(src.get("files", "")) for src in spec.get("sources", []))
    include = spec.get("include") or [inc for src in spec.get("sources", []) for inc in src.get("include", [])]
    pattern = f" [{' '.join(str(i).strip('^_') for i in include)}]" if include else ""
    return f"{spec.get('type')}: {what}{pattern}"


def part_of_sample(dataset, index: int) -> int:
    """Which entry of the split (0-based) sample ``index`` of ``build_dataset(...)`` comes from."""
    return dataset.index[index][0] if isinstance(dataset, MixDataset) else 0


def source_of_sample(dataset, index: int):
    """``(part dataset, index within it)`` of sample ``index`` of ``build_dataset(...)``."""
    if isinstance(dataset, MixDataset):
        part, local = dataset.index[index]
        return dataset.parts[part], local
    return dataset, index


def split_specs(data_cfg: dict, split: str) -> list[dict]:
    """The entries of ``data.<split>`` as a list (one mapping is one entry)."""
    specs = data_cfg.get(split)
    if not specs:
        raise InputError(f"the config lists no data.{split} dataset")
    return [specs] if isinstance(specs, dict) else list(specs)


def build_dataset(data_cfg: dict, split: str = "train", seed: int = 0):
    """The dataset of one split (``train``, ``val`` or ``test``) of a config's ``data:`` block."""
    specs = split_specs(data_cfg, split)
    cache: dict = {}
    parts = [build_part(s, data_cfg, split, seed, cache) for s in specs]
    if len(parts) == 1 and float(specs[0].get("repeat", 1.0)) == 1.0:
        return parts[0]
    return MixDataset(parts, [float(s.get("repeat", 1.0)) for s in specs])
