"""Synthetic clouds on real clear rasters (SEN12MS-CR clear / clear_unpaired, SEN12MS-CR-TS clear
patches, the Landsat 8 scene, 8-bit RGBN / RGB imagery).

A *clear source* entry of a config names files and how to read them::

    - files: sen12ms-cr/clear/*.tif        # glob, relative to data_root
      layout: s2-13                        # common.LAYOUTS: s2-13, s2-rgbn, landsat8-bgr, rgbn8, rgb8, ...
      include: ["^ROIs1868_summer_135_"]   # regexes on the file stem (optional)
      exclude: []
      window: [0.0, 0.0, 0.75, 1.0]        # optional fractional window (col0, row0, col1, row1): spatial split
      weight: 1.0                          # sampling weight multiplier (by area otherwise)
      stretch: [2, 98]                     # optional: emulate an 8-bit true-colour export (below)
      export: [2, 98]                      # optional: the same, after the clouds (below)
      export_from: either                  # whose percentiles: clear, cloudy or either (at random)
      dates: true                          # optional: the files are dates of one place (stacks, below)

``stretch: [lo, hi]`` turns reflectance into what a GIS "export as 8-bit RGB" writes: each band is
linearly stretched so that its ``lo`` / ``hi`` percentiles (over the file's valid pixels) map to 0 and
255, clipped and rounded, then read back as value / 255 (display radiometry, like ``rgb8``). Clouds are
then composited in that radiometry (near-white, with the ground's own brightest pixels as bright).
``export: [lo, hi]`` exports the crop *after* its clouds were made in reflectance: input and target are
stretched alike, by the percentiles of the clear crop or of the cloudy one (``export_from``; a GIS's
automatic stretch of a cloudy layer is the second), so real-looking exports come out: clouds saturate
or fill the top of the range, and the ground is darker where the clouds set the stretch.

``SyntheticCloudDataset`` draws, per sample: a source (by valid area x weight), a crop, a geometric
augmentation, then clouds (``clouds.CloudGenerator``). For a stack of L dates, date 0 (the
reference) always gets clouds; dates 1..L-1 get independent clouds (clear with ``p_clear_other``)
on a copy of the ground with a per-date radiometric jitter (gain 1 +- ``jitter`` per band, a small
offset) that stands in for acquisition-to-acquisition change, and, with ``shift: n``, a misregistration of
0 to n whole pixels per axis. The target is the untouched clear crop. With ``dates: true`` the files of
an entry are clear dates of one place (e.g. the NAIP series), read onto the first file's grid; a context
date's ground is then another real date of the place (real surface change), not a copy of the target's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import InputError
from .clouds import CloudGenerator
from .common import (
    RGBN,
    EpochDataset,
    apply_geometry,
    crop_box,
    expand_files,
    filter_names,
    get_layout,
    pad_to,
    read_reflectance,
    scene_of,
    stretch_to_8bit,
    to_sample,
)


@dataclass
class ClearImage:
    data: np.ndarray        # (C, H, W) float32 reflectance in the dataset's band order
    valid: np.ndarray       # (H, W) bool
    name: str
    scene: str
    radiometry: str
    quantum: float | None
    weight: float = 1.0
    dates: list | None = None  # the co-registered dates of this place (this one included), for stacks
    export: tuple[float, float] | None = None  # percentiles of an 8-bit export after the clouds (``export``)
    export_from: str = "either"


# whose percentiles an ``export`` stretch takes: the clear date's, the cloudy image's, or either at random
EXPORT_FROM = ("clear", "cloudy", "either")


def load_clear_images(entries, bands, data_root=None) -> list[ClearImage]:
    """Read every clear source entry (see the module docstring) in the band order ``bands``."""
    images = []
    for entry in entries:
        entry = dict(entry)
        if "files" not in entry:
            raise InputError(f"a clear source needs 'files' (a glob): {entry}")
        layout = get_layout(entry.get("layout", "s2-13"))
        missing = [b for b in bands if b not in layout.bands]
        if missing:
            raise InputError(
                f"clear source {entry['files']} (layout {layout.name}: {list(layout.bands)}) lacks band(s) "
                f"{missing} that this dataset needs ({list(bands)}); drop it from this config"
            )
        files = filter_names(expand_files(entry["files"], data_root), entry.get("include"), entry.get("exclude"))
        if not files:
            raise InputError(f"no file matches {entry['files']} (data_root={data_root}, include={entry.get('include')}, "
                             f"exclude={entry.get('exclude')})")
        export, export_from = _export_of(entry, layout)
        dates = bool(entry.get("dates"))
        first = len(images)
        for f in files:
            data, valid = read_reflectance(f, layout, bands, grid=files[0] if dates and f != files[0] else None,
                                           window=entry.get("window"))
            if valid.mean() < 0.05:
                continue
            radiometry, quantum = layout.radiometry, layout.quantum
            if entry.get("stretch") is not None:
                data = stretch_to_8bit(data, valid, entry["stretch"])
                radiometry, quantum = "display", 1 / 255
            images.append(ClearImage(data, valid, Path(f).stem, entry.get("scene") or scene_of(Path(f).stem),
                                     radiometry, quantum, float(entry.get("weight", 1.0)),
                                     export=export, export_from=export_from))
        if dates:
            _link_dates(images[first:], entry["files"])
    if not images:
        raise InputError("the clear sources gave no usable image")
    return images


def _export_of(entry: dict, layout) -> tuple[tuple[float, float] | None, str]:
    """A source entry's ``export`` percentiles (None without) and ``export_from``, checked."""
    export, export_from = entry.get("export"), entry.get("export_from", "either")
    if export_from not in EXPORT_FROM:
        raise InputError(f"export_from must be one of {', '.join(EXPORT_FROM)}, got {export_from!r}")
    if export is None:
        return None, export_from
    if layout.radiometry == "display" or entry.get("stretch") is not None:
        raise InputError(f"{entry['files']}: 'export' stretches reflectance after the clouds; this source is "
                         "8-bit already (drop 'export', or 'stretch')")
    return tuple(float(v) for v in export), export_from


def _link_dates(group: list[ClearImage], pattern) -> None:
    """Make co-registered dates of one place each other's context: one valid mask (where every date is
    valid), one list of the group's dates on each."""
    if len(group) < 2:
        raise InputError(f"'dates: true' needs at least two dates of one place, {pattern} gives {len(group)}")
    valid = np.logical_and.reduce([im.valid for im in group])
    for im in group:
        im.valid = valid
        im.dates = group


def exported(rng, dates: np.ndarray, clear: np.ndarray, valid: np.ndarray, percentiles, source: str):
    """The cloudy ``dates`` (L, C, H, W) and the ``clear`` target as one 8-bit export of the crop: each band
    stretched by the ``percentiles`` of the clear ground or of the cloudy reference (what a GIS's automatic
    stretch of the cloudy layer gives: clouds push the ground down), the same setting for all, so the
    target differs from the input only by the clouds. Clouds made in reflectance then saturate or spread
    over the top of the range as they do in real exports."""
    if source == "either":
        source = "clear" if rng.random() < 0.5 else "cloudy"
    reference = clear if source == "clear" else dates[0]
    out = np.stack([stretch_to_8bit(date, valid, percentiles, reference=reference) for date in dates])
    return out, stretch_to_8bit(clear, valid, percentiles, reference=reference)


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` (C, H, W) moved by whole pixels, edges repeated: a context date's misregistration."""
    if not (dy or dx):
        return image
    pad = max(abs(dy), abs(dx))
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    h, w = image.shape[1:]
    return padded[:, pad - dy : pad - dy + h, pad - dx : pad - dx + w]


class SyntheticCloudDataset(EpochDataset):
    """Synthetic clouds on clear images; see the module docstring."""

    def __init__(self, images: list[ClearImage], bands=RGBN, generator: CloudGenerator | None = None,
                 num_frames=None, length=None, patch_size=128, seed=0, train=True, p_clear_other=0.2,
                 p_clear_ref=0.0, jitter=0.05, shift=0, flips=True, rotations=True):
        super().__init__(seed, train, patch_size, flips, rotations)
        if not images:
            raise InputError("SyntheticCloudDataset needs at least one clear image")
        self.images = images
        self.band_names = tuple(bands)
        for im in images:
            if im.data.shape[0] != len(self.band_names):
                raise InputError(f"clear image {im.name} has {im.data.shape[0]} bands, expected {len(self.band_names)}")
        self.generator = generator or CloudGenerator()
        self.num_frames = num_frames
        self.L = 1 if num_frames is None else int(num_frames)
        self.p_clear_other, self.p_clear_ref, self.jitter = p_clear_other, p_clear_ref, jitter
        self.shift = int(shift)
        area = np.array([im.valid.sum() * im.weight for im in images], dtype=np.float64)
        self.probs = area / area.sum()
        if length is None:
            ps = patch_size or 256
            length = int(sum(math.ceil(im.valid.sum() / (ps * ps)) for im in images))
        self.length = max(1, int(length))

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        rng = self.rng(index)
        if self.train:
            k = int(rng.choice(len(self.images), p=self.probs))
        else:
            k = index % len(self.images)
        im = self.images[k]
        H, W = im.valid.shape
        r0, c0, sh, sw = crop_box(rng, H, W, self.patch_size, im.valid)
        clear = pad_to(im.data[:, r0 : r0 + sh, c0 : c0 + sw], self.patch_size)
        valid = pad_to(im.valid[r0 : r0 + sh, c0 : c0 + sw], self.patch_size)
        g = self.geometry(rng)
        clear, valid = apply_geometry(clear, g), apply_geometry(valid, g)
        C, h, w = clear.shape
        x = np.empty((self.L, C, h, w), dtype=np.float32)
        masks = np.zeros((self.L, h, w), dtype=np.float32)
        others = [other for other in (im.dates or ()) if other is not im]
        for d in range(self.L):
            ground = clear
            if d > 0 and others:  # another real date of the place: real surface change
                other = others[int(rng.integers(len(others)))]
                ground = apply_geometry(pad_to(other.data[:, r0 : r0 + sh, c0 : c0 + sw], self.patch_size), g)
            if d > 0 and self.jitter:
                gain = 1.0 + rng.uniform(-self.jitter, self.jitter, size=(C, 1, 1))
                off = rng.uniform(-self.jitter, self.jitter, size=(C, 1, 1)) * 0.2 * clear.mean(axis=(1, 2), keepdims=True)
                ground = np.where(valid[None], np.maximum(ground * gain + off, 0.0), ground).astype(np.float32)
                if im.radiometry == "display":
                    ground = np.clip(ground, 0, 1)
                if im.quantum:
                    ground = (np.round(ground / im.quantum) * im.quantum).astype(np.float32)
            if d > 0 and self.shift:
                ground = shifted(ground, *rng.integers(-self.shift, self.shift + 1, size=2))
            res = self.generator.generate(rng, ground, self.band_names, im.radiometry, valid=valid,
                                          p_clear=self.p_clear_ref if d == 0 else self.p_clear_other,
                                          quantum=im.quantum)
            x[d] = res["cloudy"]
            masks[d] = res["mask"]
        name = f"{im.name}@{r0},{c0}"
        if im.export is not None:
            x, clear = exported(rng, x, clear, valid, im.export, im.export_from)
        return to_sample(x, clear, masks[0], masks, 1.0, name, stack=self.num_frames is not None,
                         display=im.radiometry == "display" or im.export is not None)
