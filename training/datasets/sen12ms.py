"""SEN12MS-CR pairs and SEN12MS-CR-TS series (Sentinel-2 L1C, 13 bands, uint16 reflectance x 10^4).

* ``PairsDataset``: ``<root>/cloudy/<name>.tif`` with its partner ``<root>/clear/<name>.tif``; the mask
  is a pseudo mask (``common.change_mask`` of cloudy against clear, plus the cirrus band).
  Split by scene with ``include`` / ``exclude`` regexes on the file stem (``ROIs1970_fall_136_p100``:
  scene ``ROIs1970_fall_136``).
* ``SeriesDataset``: ``<root>/*ImgNo_<k>_<YYYY-MM-DD>*.tif``, one patch through time. Each date's
  cloud fraction is estimated against a clear background (the per-pixel median of the dates that a
  first, absolute test finds mostly clear). Two modes:
  - ``real``: for every clear target date t (cloud fraction <= ``clear_max``) and every cloudy
    reference date r (>= ``ref_min_cloud``) within ``window`` dates of t, one sample: inputs
    ``[r, the L-1 dates nearest to t (not t, not r, cloud fraction >= others_min_cloud)]``,
    target t. Real clouds, real change. ``others_min_cloud > 0`` gives Sen2_MTC-like samples
    (every input date cloudy); ``context_clear_max`` keeps the samples with at least one context date
    that cloudy at most (a clear or partly clear context).
  - ``synthetic``: reference = a clear date r (target = r itself), synthetic clouds drawn on every
    input date (the other dates keep their real clouds and get more with probability
    ``1 - p_clear_other``); the other L-1 dates are drawn within ``window`` of r (nearest in
    evaluation). Real temporal change between dates, an exact mask for the reference.
  Restrict the dates with ``dates`` (ImgNo list) to split by time.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...core.errors import InputError
from .clouds import CloudGenerator
from .common import (
    PSEUDO_MASK_WEIGHT,
    RGBN,
    EpochDataset,
    apply_geometry,
    change_mask,
    filter_names,
    get_layout,
    read_reflectance,
    stretch_to_8bit,
    to_sample,
)

_MASK_BANDS = ("blue", "green", "red", "nir", "cirrus")


def _read_with_mask_bands(path, layout, bands):
    """Reflectance of ``bands`` plus the bands the pseudo-mask rule uses (when the layout has them)."""
    extra = [b for b in _MASK_BANDS if b in layout.bands and b not in bands]
    names = list(bands) + extra
    data, valid = read_reflectance(path, layout, names)
    return data, valid, names


class PairsDataset(EpochDataset):
    """Real cloudy / clear pairs in ``cloudy/`` and ``clear/`` folders with the same file names;
    ``stretch: [lo, hi]`` turns each pair into an 8-bit export of both dates (``stretch_to_8bit``, the
    clear date's percentiles for both: real clouds in display radiometry, the mask still from the reflectance)."""

    def __init__(self, root, bands=RGBN, layout="s2-13", include=None, exclude=None, patch_size=128,
                 seed=0, train=True, num_frames=None, flips=True, rotations=True,
                 cloudy_dir="cloudy", clear_dir="clear", pseudo_weight=PSEUDO_MASK_WEIGHT, stretch=None):
        super().__init__(seed, train, patch_size, flips, rotations)
        self.stretch = None if stretch is None else tuple(float(v) for v in stretch)
        self.root = Path(root)
        self.layout = get_layout(layout)
        self.band_names = tuple(bands)
        self.num_frames = num_frames
        self.pseudo_weight = pseudo_weight
        cdir, tdir = self.root / cloudy_dir, self.root / clear_dir
        for d in (cdir, tdir):
            if not d.is_dir():
                raise InputError(f"SEN12MS-CR folder missing: {d} (expected {cloudy_dir}/ and {clear_dir}/ under {self.root})")
        files = filter_names(sorted(cdir.glob("*.tif")), include, exclude)
        if not files:
            raise InputError(f"no cloudy GeoTIFF in {cdir} matches include={include} exclude={exclude}")
        missing = [f.name for f in files if not (tdir / f.name).exists()]
        if missing:
            raise InputError(f"{len(missing)} cloudy file(s) have no clear partner in {tdir}: {', '.join(missing[:5])}")
        self.pairs = [(f, tdir / f.name) for f in files]
        self._cache: dict[int, tuple] = {}

    def __len__(self):
        return len(self.pairs)

    def preload(self) -> None:
        """Read every pair now (they are read on first use otherwise): ``training.pack`` records the reads."""
        for i in range(len(self.pairs)):
            self._load(i)

    def _load(self, i):
        if i not in self._cache:
            cpath, tpath = self.pairs[i]
            cloudy, v1, names = _read_with_mask_bands(cpath, self.layout, self.band_names)
            clear, v2, _ = _read_with_mask_bands(tpath, self.layout, self.band_names)
            if cloudy.shape != clear.shape:
                raise InputError(f"{cpath.name}: cloudy {cloudy.shape} and clear {clear.shape} differ in size")
            mask = change_mask(cloudy, clear, names)
            n = len(self.band_names)
            cloudy, clear = cloudy[:n], clear[:n]
            if self.stretch is not None:  # one 8-bit export of both dates: real clouds saturate as in real exports
                cloudy = stretch_to_8bit(cloudy, v1 & v2, self.stretch, reference=clear)
                clear = stretch_to_8bit(clear, v1 & v2, self.stretch)
            self._cache[i] = (cloudy, clear, mask & v1 & v2, v1 & v2)
        return self._cache[i]

    def __getitem__(self, index):
        i = index % len(self.pairs)
        rng = self.rng(index)
        cloudy, clear, mask, valid = self._load(i)
        (c, t, m), box = self.crop(rng, [cloudy, clear, mask.astype(np.float32)], valid)
        g = self.geometry(rng)
        c, t, m = apply_geometry(c, g), apply_geometry(t, g), apply_geometry(m, g)
        name = f"{self.pairs[i][0].stem}@{box[0]},{box[1]}"
        return to_sample(c[None], t, m, None, self.pseudo_weight, name, stack=self.num_frames is not None,
                         display=self.stretch is not None)

    def cloudy_all_bands(self, index) -> tuple[np.ndarray, tuple[str, ...]]:
        """Every band of the layout of sample ``index``'s cloudy image, cropped and turned as the sample is,
        with their names: for a cloud detector that reads more bands than the model (s2cloudless)."""
        i = index % len(self.pairs)
        rng = self.rng(index)
        valid = self._load(i)[3]
        data, _ = read_reflectance(self.pairs[i][0], self.layout, self.layout.bands)
        (cropped,), _ = self.crop(rng, [data], valid)
        return apply_geometry(cropped, self.geometry(rng)), tuple(self.layout.bands)


_DATE_RX = re.compile(r"ImgNo_(\d+)_(\d{4}-\d{2}-\d{2})")


def parse_series(files) -> list[tuple[int, str, Path]]:
    out = []
    for f in files:
        m = _DATE_RX.search(Path(f).name)
        if not m:
            raise InputError(f"cannot read the date of {Path(f).name}: expected ...ImgNo_<k>_<YYYY-MM-DD>...")
        out.append((int(m.group(1)), m.group(2), Path(f)))
    return sorted(out)


def estimate_series_masks(images: np.ndarray, names) -> tuple[np.ndarray, np.ndarray]:
    """Per-date pseudo cloud masks (T, H, W) of a co-registered series (T, C, H, W) and the background.

    Pass 1 finds mostly clear dates with absolute rules (bright blue or cirrus); their per-pixel
    median is the background; pass 2 is ``change_mask`` against it.
    """
    names = list(names)
    vis = [names.index(b) for b in ("blue", "green", "red") if b in names]
    bright = images[:, vis].mean(1) > 0.2
    if "cirrus" in names:
        bright |= images[:, names.index("cirrus")] > 0.03
    coarse = bright.mean(axis=(1, 2))
    clearish = coarse <= max(0.1, float(np.sort(coarse)[len(coarse) // 3]))
    background = np.median(images[clearish], axis=0)
    masks = np.stack([change_mask(img, background, names) for img in images])
    return masks, background


class SeriesDataset(EpochDataset):
    """SEN12MS-CR-TS style series of one patch; see the module docstring."""

    def __init__(self, root, bands=RGBN, num_frames=3, layout="s2-13", dates=None, mode="real",
                 clear_max=0.05, ref_min_cloud=0.05, others_min_cloud=0.0, context_clear_max=None, window=4,
                 generator: CloudGenerator | None = None,
                 p_clear_other=0.3, patch_size=128, seed=0, train=True, flips=True, rotations=True,
                 pattern="*.tif", pseudo_weight=PSEUDO_MASK_WEIGHT, mono=False):
        super().__init__(seed, train, patch_size, flips, rotations)
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"SEN12MS-CR-TS series folder missing: {self.root}")
        if mode not in ("real", "synthetic"):
            raise InputError(f"series mode must be 'real' or 'synthetic', not {mode!r}")
        if mode == "synthetic" and generator is None:
            generator = CloudGenerator()
        self.layout = get_layout(layout)
        self.band_names = tuple(bands)
        self.L = int(num_frames)
        self.num_frames = None if mono else self.L
        self.mode, self.generator = mode, generator
        self.p_clear_other = p_clear_other
        self.pseudo_weight = pseudo_weight
        entries = parse_series(sorted(self.root.glob(pattern)))
        if not entries:
            raise InputError(f"no series GeoTIFF ({pattern}) in {self.root}")
        stack, valid = [], None
        names = None
        for _, _, path in entries:
            data, v, names = _read_with_mask_bands(path, self.layout, self.band_names)
            stack.append(data)
            valid = v if valid is None else valid & v
        full = np.stack(stack)
        masks, _ = estimate_series_masks(full, names)
        n = len(self.band_names)
        all_imgno = [e[0] for e in entries]
        keep = [i for i, e in enumerate(entries) if dates is None or e[0] in set(dates)]
        if not keep:
            raise InputError(f"none of the dates {dates} is in {self.root} (it has ImgNo {all_imgno})")
        self.imgno = [entries[i][0] for i in keep]
        self.dates = [entries[i][1] for i in keep]
        self.images = full[keep][:, :n].copy()
        self.masks = masks[keep] & valid
        self.valid = valid
        self.cloud_fraction = self.masks.mean(axis=(1, 2))
        self.samples = self._build_samples(clear_max, ref_min_cloud, others_min_cloud, window)
        if context_clear_max is not None:  # stacks with at least one clear or partly clear context date
            self.samples = [sample for sample in self.samples
                            if min(self.cloud_fraction[j] for j in sample[1][1:]) <= context_clear_max]
        if not self.samples:
            raise InputError(
                f"no {mode} sample in {self.root} for dates {self.imgno}: cloud fractions "
                f"{dict(zip(self.imgno, np.round(self.cloud_fraction, 2).tolist(), strict=True))}; "
                "relax clear_max / ref_min_cloud / window or add dates"
            )

    def _build_samples(self, clear_max, ref_min_cloud, others_min_cloud, window):
        T = len(self.imgno)
        cf = self.cloud_fraction
        order = lambda t, cands: sorted(cands, key=lambda j: (abs(self.imgno[j] - self.imgno[t]), j))  # noqa: E731
        samples = []
        for t in range(T):
            if cf[t] > clear_max:
                continue
            near = [j for j in range(T) if j != t and abs(self.imgno[j] - self.imgno[t]) <= window]
            if self.mode == "real":
                for r in order(t, [j for j in near if cf[j] >= ref_min_cloud]):
                    others = order(t, [j for j in near if j != r and cf[j] >= others_min_cloud])[: self.L - 1]
                    if len(others) == self.L - 1:
                        samples.append((t, [r] + others, near))
            else:
                others = order(t, near)[: self.L - 1]
                if len(others) == self.L - 1:
                    samples.append((t, [t] + others, near))
        return samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        i = index % len(self.samples)
        rng = self.rng(index)
        t, inputs, near = self.samples[i]
        if self.mode == "synthetic" and self.train and self.L > 1:
            pool = [j for j in near]
            pick = rng.choice(len(pool), size=self.L - 1, replace=False)
            inputs = [t] + [pool[k] for k in sorted(pick)]
        x = self.images[inputs]
        dm = self.masks[inputs].astype(np.float32)
        target = self.images[t]
        (x, target, dm), box = self.crop(rng, [x, target, dm], self.valid)
        x, dm = x.copy(), dm.copy()
        weight = self.pseudo_weight
        if self.mode == "synthetic":
            for d in range(len(inputs)):
                res = self.generator.generate(rng, x[d], self.band_names, self.layout.radiometry,
                                              p_clear=0.0 if d == 0 else self.p_clear_other)
                x[d] = res["cloudy"]
                dm[d] = res["mask"].astype(np.float32) if d == 0 else np.maximum(dm[d], res["mask"])
            weight = 1.0
        g = self.geometry(rng)
        x, target, dm = apply_geometry(x, g), apply_geometry(target, g), apply_geometry(dm, g)
        name = f"series t={self.imgno[t]} in={[self.imgno[j] for j in inputs]}@{box[0]},{box[1]}"
        if self.num_frames is None:
            x, dm = x[:1], dm[:1]
        return to_sample(x, target, dm[0], dm, weight, name, stack=self.num_frames is not None,
                         display=self.layout.radiometry == "display")
