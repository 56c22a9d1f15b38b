"""The paper's benchmarks in their official on-disk layouts (DESIGN §4).

CUHK-CR1 / CUHK-CR2 (Jilin-1, 8-bit PNG, 512x512)::

    <root>/CUHK-CR1/{train,test}/{cloud,label}/<n>.png          RGB; cloud = input, label = target
    <root>/nir/CUHK-CR1/{train,test}/{cloud,label}/<n>.png      NIR as a 3-channel grey PNG (channel 0)

Values / 255 (``display`` radiometry), bands red, green, blue, nir. ``resize=256`` downsamples
512 -> 256 with PIL's bicubic filter on the uint8 images, as the published comparisons do, before
any crop. CR1: 534 train / 134 test; CR2: 448 / 111.

Sen2_MTC_New (Sentinel-2 L2A, 256x256, R, G, B, NIR reflectance x 10^4)::

    <root>/train.txt, val.txt, test.txt                         tile ids, one per line
    <root>/Sen2_MTC/<tile>/cloud/<tile>_<k>_{0,1,2}.tif          three cloudy dates
    <root>/Sen2_MTC/<tile>/cloudless/<tile>_<k>.tif              target

A split file that is missing falls back to the published tile lists (``SEN2MTC_TEST`` /
``SEN2MTC_VAL``; train = every other tile folder). Inputs are the three dates (reference = ``_0``),
or one of them with ``mono_temporal=k``.

No cloud mask ships with these: the sample carries a pseudo mask (cloudy reference against the
target, ``common.change_mask``) with the pseudo weight.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.errors import InputError
from .common import PSEUDO_MASK_WEIGHT, RGB, RGBN, EpochDataset, apply_geometry, change_mask, to_sample

SEN2MTC_TEST = ("T41VMJ_R006", "T31TBG_R051", "T50JML_R060", "T33VXG_R022", "T41UNR_R020", "T46TEL_R033",
                "T54HTJ_R102", "T15UVU_R012", "T12TUR_R027", "T56JMQ_R030")
SEN2MTC_VAL = ("T22MCT_R024", "T34TDT_R036", "T43UGQ_R048", "T60KWF_R072", "T39VIF_R078")


def _read_png(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


class CUHKCR(EpochDataset):
    """CUHK-CR1 (``version=1``) or CUHK-CR2 (``version=2``), split ``train`` or ``test``."""

    def __init__(self, root, version=1, split="train", nir=True, resize=256, patch_size=None, seed=0,
                 train=None, num_frames=None, flips=True, rotations=True, pseudo_weight=PSEUDO_MASK_WEIGHT):
        super().__init__(seed, split == "train" if train is None else train, patch_size, flips, rotations)
        if split not in ("train", "test"):
            raise InputError(f"CUHK-CR split must be 'train' or 'test', not {split!r}")
        self.root = Path(root)
        self.name = f"CUHK-CR{int(version)}"
        self.band_names = RGBN if nir else RGB
        self.num_frames = num_frames
        self.resize = resize
        self.pseudo_weight = pseudo_weight
        base = self.root / self.name / split
        dirs = {"cloud": base / "cloud", "label": base / "label"}
        if nir:
            nbase = self.root / "nir" / self.name / split
            dirs.update({"nir_cloud": nbase / "cloud", "nir_label": nbase / "label"})
        for what, d in dirs.items():
            if not d.is_dir():
                raise InputError(f"{self.name} folder missing: {d} ({what}); expected the official layout "
                                 f"<root>/{self.name}/{{train,test}}/{{cloud,label}} and <root>/nir/{self.name}/...")
        names = sorted(p.name for p in dirs["cloud"].glob("*.png"))
        if not names:
            raise InputError(f"no PNG in {dirs['cloud']}")
        for what, d in dirs.items():
            if what == "cloud":
                continue
            missing = [n for n in names if not (d / n).exists()]
            if missing:
                raise InputError(f"{len(missing)} {self.name} {split} image(s) lack their partner in {d}: "
                                 f"{', '.join(missing[:5])}")
        self.names, self.dirs = names, dirs

    def __len__(self):
        return len(self.names)

    def _load(self, n):
        cloud = _read_png(self.dirs["cloud"] / n, self.resize)
        label = _read_png(self.dirs["label"] / n, self.resize)
        if "nir_cloud" in self.dirs:
            cloud = np.concatenate([cloud, _read_png(self.dirs["nir_cloud"] / n, self.resize)[:1]])
            label = np.concatenate([label, _read_png(self.dirs["nir_label"] / n, self.resize)[:1]])
        return cloud.astype(np.float32) / 255.0, label.astype(np.float32) / 255.0

    def __getitem__(self, index):
        i = index % len(self.names)
        rng = self.rng(index)
        cloud, label = self._load(self.names[i])
        mask = change_mask(cloud, label, self.band_names, cloud_thr=0.08, shadow_thr=0.08).astype(np.float32)
        (c, t, m), box = self.crop(rng, [cloud, label, mask])
        g = self.geometry(rng)
        c, t, m = apply_geometry(c, g), apply_geometry(t, g), apply_geometry(m, g)
        return to_sample(c[None], t, m, None, self.pseudo_weight, f"{self.name}/{self.names[i]}",
                         stack=self.num_frames is not None, display=True)


def _read_split(root: Path, split: str, tiles_present) -> list[str]:
    f = root / f"{split}.txt"
    if f.exists():
        tiles = [t.strip() for t in f.read_text().split() if t.strip()]
        if not tiles:
            raise InputError(f"{f} lists no tile")
        return tiles
    if split == "test":
        return list(SEN2MTC_TEST)
    if split == "val":
        return list(SEN2MTC_VAL)
    held = set(SEN2MTC_TEST) | set(SEN2MTC_VAL)
    return [t for t in tiles_present if t not in held]


class Sen2MTC(EpochDataset):
    """Sen2_MTC_New, split ``train`` / ``val`` / ``test``; see the module docstring."""

    def __init__(self, root, split="train", num_frames=3, mono_temporal=None, bands=RGBN, patch_size=None,
                 seed=0, train=None, flips=True, rotations=True, pseudo_weight=PSEUDO_MASK_WEIGHT):
        super().__init__(seed, split == "train" if train is None else train, patch_size, flips, rotations)
        if split not in ("train", "val", "test"):
            raise InputError(f"Sen2_MTC_New split must be train, val or test, not {split!r}")
        self.root = Path(root)
        data = self.root / "Sen2_MTC"
        if not data.is_dir():
            raise InputError(f"Sen2_MTC_New folder missing: {data} (expected <root>/Sen2_MTC/<tile>/{{cloud,cloudless}})")
        from .common import band_indexes

        self.band_idx = band_indexes(RGBN, bands)
        self.band_names = tuple(bands)
        self.mono = mono_temporal
        self.num_frames = None if mono_temporal is not None else int(num_frames)
        self.L = int(num_frames)
        self.pseudo_weight = pseudo_weight
        present = sorted(p.name for p in data.iterdir() if p.is_dir())
        self.tiles = _read_split(self.root, split, present)
        self.items = []
        for tile in self.tiles:
            cdir, tdir = data / tile / "cloud", data / tile / "cloudless"
            for d in (cdir, tdir):
                if not d.is_dir():
                    raise InputError(f"Sen2_MTC_New tile {tile} ({split}) folder missing: {d}")
            for target in sorted(tdir.glob("*.tif")):
                clouds = [cdir / f"{target.stem}_{k}.tif" for k in range(3)]
                missing = [c.name for c in clouds if not c.exists()]
                if missing:
                    raise InputError(f"Sen2_MTC_New {target.name}: cloudy partner(s) missing in {cdir}: {', '.join(missing)}")
                self.items.append((clouds, target))
        if not self.items:
            raise InputError(f"Sen2_MTC_New {split}: no sample in tiles {self.tiles}")

    def __len__(self):
        return len(self.items)

    def _read(self, path):
        import rasterio

        with rasterio.open(path) as ds:
            a = ds.read().astype(np.float32)
        if a.shape[0] != 4 and a.shape[-1] == 4:  # stored pixel-interleaved without band metadata
            a = np.moveaxis(a, -1, 0)
        if a.shape[0] < 4:
            raise InputError(f"{path}: expected 4 bands (R, G, B, NIR), found {a.shape[0]}")
        return a[self.band_idx] / 1e4

    def __getitem__(self, index):
        i = index % len(self.items)
        rng = self.rng(index)
        clouds, target = self.items[i]
        order = [self.mono] if self.mono is not None else list(range(self.L))
        x = np.stack([self._read(clouds[k]) for k in order])
        t = self._read(target)
        dm = np.stack([change_mask(d, t, self.band_names) for d in x]).astype(np.float32)
        (x, t, dm), box = self.crop(rng, [x, t, dm])
        g = self.geometry(rng)
        x, t, dm = apply_geometry(x, g), apply_geometry(t, g), apply_geometry(dm, g)
        return to_sample(x, t, dm[0], dm, self.pseudo_weight, f"Sen2_MTC/{target.stem}",
                         stack=self.num_frames is not None)
