"""Generated files in the official layouts of the training datasets (tests never read ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasters import write_raster


def smooth_field(rng, h, w, scale=8):
    small = rng.random((h // scale + 2, w // scale + 2))
    ys = np.linspace(0, small.shape[0] - 1.001, h)
    xs = np.linspace(0, small.shape[1] - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = small[y0][:, x0]
    b = small[y0][:, x0 + 1]
    c = small[y0 + 1][:, x0]
    d = small[y0 + 1][:, x0 + 1]
    return a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx


def s2_clear(rng, h=64, w=64, bands=13):
    """A clear-looking 13-band L1C patch as uint16 DN (reflectance x 10^4)."""
    base = smooth_field(rng, h, w)
    refl = np.stack([0.05 + 0.1 * base + 0.02 * smooth_field(rng, h, w, 4) for _ in range(bands)])
    if bands == 13:
        refl[10] = 0.001 + 0.001 * base  # cirrus band: dark when clear
    return np.round(refl * 1e4).astype(np.uint16)


def s2_cloudy(rng, clear, frac=0.4):
    """Add a bright blob (a "cloud") to a uint16 patch."""
    h, w = clear.shape[1:]
    f = smooth_field(rng, h, w, 16)
    cloud = f > np.quantile(f, 1 - frac)
    out = clear.astype(np.float64)
    out[:, cloud] = 0.3 * out[:, cloud] + 0.7 * 6000
    return np.round(out).astype(np.uint16), cloud


def make_sen12mscr(root, scenes=("ROIs1868_summer_135", "ROIs1970_fall_136"), per_scene=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    root = Path(root)
    for s in scenes:
        for k in range(per_scene):
            clear = s2_clear(rng, size, size)
            cloudy, _ = s2_cloudy(rng, clear)
            write_raster(root / "clear" / f"{s}_p{100 + k}.tif", clear)
            write_raster(root / "cloudy" / f"{s}_p{100 + k}.tif", cloudy)
    return root


def make_series(root, n=8, cloudy=(1, 4, 6), size=64, seed=0):
    rng = np.random.default_rng(seed)
    root = Path(root)
    base = s2_clear(rng, size, size)
    for k in range(n):
        img = np.clip(base.astype(np.int64) + rng.integers(-30, 30, base.shape), 0, 65535).astype(np.uint16)
        if k in cloudy:
            img, _ = s2_cloudy(rng, img, 0.5)
        write_raster(root / f"s2_ROIs2017_146_ImgNo_{k}_2018-01-{k + 1:02d}_patch_0.tif", img)
    return root


def make_cuhk(root, version=1, splits=(("train", 3), ("test", 2)), size=64, nir=True, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    name = f"CUHK-CR{version}"
    for split, n in splits:
        for i in range(n):
            label = (smooth_field(rng, size, size)[..., None] * rng.uniform(80, 200, 3)).astype(np.uint8)
            cloud = np.clip(label.astype(int) + (smooth_field(rng, size, size, 16) > 0.6)[..., None] * 120, 0,
                            255).astype(np.uint8)
            for kind, img in (("cloud", cloud), ("label", label)):
                p = root / name / split / kind / f"{i}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(p)
                if nir:
                    q = root / "nir" / name / split / kind / f"{i}.png"
                    q.parent.mkdir(parents=True, exist_ok=True)
                    grey = np.repeat(img[..., :1], 3, axis=2)
                    Image.fromarray(grey).save(q)
    return root


def make_sen2mtc(root, tiles=None, per_tile=2, size=32, seed=0, split_files=True):
    rng = np.random.default_rng(seed)
    root = Path(root)
    tiles = tiles or {"train": ["T10ABC_R001", "T11ABC_R002"], "val": ["T22MCT_R024"], "test": ["T41VMJ_R006"]}
    for split, ts in tiles.items():
        if split_files:
            (root / f"{split}.txt").parent.mkdir(parents=True, exist_ok=True)
            (root / f"{split}.txt").write_text("\n".join(ts) + "\n")
        for t in ts:
            for k in range(per_tile):
                clear = s2_clear(rng, size, size, bands=4)
                write_raster(root / "Sen2_MTC" / t / "cloudless" / f"{t}_{k}.tif", clear)
                for d in range(3):
                    cloudy, _ = s2_cloudy(rng, clear, 0.3)
                    write_raster(root / "Sen2_MTC" / t / "cloud" / f"{t}_{k}_{d}.tif", cloudy)
    return root


def make_clear_sources(root, seed=0):
    """Clear rasters of several layouts: S2 13-band, an 8-bit RGBN, a Landsat-8 BGR with a nodata collar."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for k in range(3):
        write_raster(root / "s2" / f"ROIs2017_winter_s2_84_p{k}.tif", s2_clear(rng, 64, 64))
    rgbn = (smooth_field(rng, 96, 96)[None] * rng.uniform(100, 220, (4, 1, 1))).astype(np.uint8)
    write_raster(root / "rgbn.tif", rgbn, dtype="uint8")
    dn = (8000 + 3000 * smooth_field(rng, 80, 80)[None] * np.ones((3, 1, 1))).astype(np.uint16)
    dn[:, :, :10] = 0  # nodata collar
    write_raster(root / "landsat8.tif", dn)
    return root
