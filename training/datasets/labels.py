"""Real cloud labels without a clear target: samples that teach the cloud score only (issue 10).

A part ``type: labels`` lists ``sources``, each one of::

    - {files: ukis-csmask/*.npz, format: ukis, window: [0.0, 0.0, 0.5, 1.0]}
    - {files: cloud-masks/38cloud_*_patch192.tif, layout: landsat8-rgbn-dn, labels: "{stem}_gt.tif", cloud: [1]}
    - {files: landsat8-cloudy/*_30m.tif, layout: landsat8-l1-10, labels: L8_L1_gulf_coast_cloud_confidence.tif,
       cloud: [3], unknown: [2]}
    - {files: "sen12ms-cr/cloudy/*.tif", layout: s2-13, teacher: viser-l1c-cloud}

* ``format: ukis``: dlr-eoc/ukis-csmask ``.npz`` files, ``img`` (H, W, 6) reflectance in the order blue,
  green, red, NIR, SWIR1, SWIR2 and ``msk`` (H, W, 1) classes, 4 = cloud.
* otherwise a raster in ``layout`` with its label raster beside it (``labels``: a file name, ``{stem}``
  is the image's stem); ``cloud``: the label values that mean cloud (thick and thin alike); ``unknown``: label
  values the score loss leaves out (a QA band's medium confidence: neither cloud nor clear).
* ``teacher``: a 13-band Sentinel-2 L1C raster labelled by an L1C cloud classifier (``core.s2cloudless.CLASSIFIERS``:
  ``viser-l1c-cloud``, the bundled one distilled from s2cloudless, or ``s2cloudless``) as a run computes its
  mask (``window_cloud``): cloud where it is; clear where the probability is below ``teacher_clear`` (0.2) and
  no cloud lies within ``teacher_margin`` (4) pixels; left out of the score loss between (thin cloud, haze and
  cloud edges, where a classifier's label is least sure). The issue's s2cloudless-as-teacher, for the score.
* ``window`` ``[col0, row0, col1, row1]`` (fractions) keeps part of each image, so that one labelled
  scene can give training and test halves; ``weight`` draws a source more often.
* ``stretch: [lo, hi]`` turns each image into an 8-bit export (each band's ``lo`` / ``hi`` percentiles of the
  cloudy image to 0 / 255, as a GIS's automatic stretch renders a cloudy layer): real clouds in display
  imagery, flagged ``display``.
* ``clear_known: false`` trusts the labels' cloud only: the other pixels are left out of the score loss
  (``mask_known`` 0), for labels whose "clear" classes hold thin cloud and haze.

A sample is a random crop of a labelled image (train) or its centre (evaluation): ``input`` the cloudy
image in the config's bands, ``mask`` 1 on labelled cloud with ``mask_weight`` 1 (a manual label is
exact), ``target`` the input itself with ``target_weight`` 0, so the image losses ignore it and the
score loss learns from it (real thin cloud, haze and bright clear ground the synthetic clouds lack).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import InputError
from .common import (
    RGBN,
    EpochDataset,
    Layout,
    apply_geometry,
    expand_files,
    filter_names,
    get_layout,
    read_npz,
    read_reflectance,
    stretch_to_8bit,
    to_sample,
    window_slices,
)

UKIS_BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")
UKIS_CLOUD = 4
# a label raster read as it is (class values, no scaling)
LABEL_LAYOUT = Layout("class-labels", ("class",), 1.0, 0.0, "labels", description="one band of class values")


@dataclass
class LabelledImage:
    image: np.ndarray   # (C, H, W) reflectance in the dataset's bands
    cloud: np.ndarray   # (H, W) bool, labelled cloud
    valid: np.ndarray   # (H, W) bool
    known: np.ndarray   # (H, W) bool, where the label is trusted
    name: str
    weight: float
    display: bool = False  # an 8-bit export (``stretch``)


def _ukis(path: Path, bands, window) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    missing = [b for b in bands if b not in UKIS_BANDS]
    if missing:
        raise InputError(f"{path}: ukis-csmask files have no band(s) {missing} (they have {list(UKIS_BANDS)})")
    arrays = read_npz(path, ("img", "msk"))
    image = np.moveaxis(arrays["img"], -1, 0)[[UKIS_BANDS.index(b) for b in bands]].astype(np.float32)
    classes = arrays["msk"][..., 0]
    if window is not None:
        rows, cols = window_slices(window, *classes.shape)
        image, classes = image[:, rows, cols], classes[rows, cols]
    valid = np.all(np.isfinite(image), axis=0)
    return np.nan_to_num(image), classes == UKIS_CLOUD, valid, np.zeros_like(valid)


def _raster(path: Path, entry: dict, bands, window) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    layout = get_layout(entry.get("layout", "s2-13"))
    if "labels" not in entry or "cloud" not in entry:
        raise InputError(f"labelled source {entry['files']}: give 'labels' (the label raster's name) and 'cloud' "
                         "(the label values meaning cloud), or format: ukis")
    label_path = path.with_name(str(entry["labels"]).format(stem=path.stem))
    image, valid = read_reflectance(path, layout, bands, window=window)
    classes, _ = read_reflectance(label_path, LABEL_LAYOUT, ("class",), window=window)
    if classes.shape[-2:] != image.shape[-2:]:
        raise InputError(f"{label_path} is {classes.shape[-2:]}, its image {path} {image.shape[-2:]}: they must match")
    cloud = np.isin(classes[0], [float(v) for v in entry["cloud"]])
    unknown = np.isin(classes[0], [float(v) for v in entry.get("unknown", [])])
    return image, cloud, valid, unknown


def _teacher(path: Path, entry: dict, bands, window) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from scipy import ndimage

    from ...core import s2cloudless
    from ...core.sensors import S2_13

    layout = get_layout(entry.get("layout", "s2-13"))
    lacking = sorted(set(s2cloudless.MODEL_BANDS) - set(layout.bands))
    if lacking:
        raise InputError(f"labelled source {entry['files']}: a teacher reads 13-band Sentinel-2 L1C; layout "
                         f"{layout.name} lacks {lacking}")
    names = [b for b in S2_13 if b in layout.bands]
    l1c, valid = read_reflectance(path, layout, names, window=window)
    # the mask a run would take (s2cloudless.window_cloud), and the probability it is made from for the clear
    probability = s2cloudless.window_probability(l1c, names, valid, entry["teacher"])
    cloud = s2cloudless.cloud_mask(probability, s2cloudless.INFERENCE_THRESHOLD)
    margin = int(entry.get("teacher_margin", 4))
    near_cloud = ndimage.binary_dilation(cloud, iterations=margin) if margin and cloud.any() else cloud
    clear = (probability < float(entry.get("teacher_clear", 0.2))) & ~near_cloud
    image = l1c[[names.index(b) for b in bands]]
    return image, cloud, valid, ~cloud & ~clear


def load_labelled_images(entries, bands, data_root=None) -> list[LabelledImage]:
    images = []
    for entry in entries:
        if "files" not in entry:
            raise InputError(f"a labelled source needs 'files' (a glob): {entry}")
        files = filter_names(expand_files(entry["files"], data_root), entry.get("include"), entry.get("exclude"))
        if entry.get("labels"):  # a glob may match the label rasters too: they are not images
            label_names = {str(entry["labels"]).format(stem=f.stem) for f in files}
            files = [f for f in files if f.name not in label_names]
        if not files:
            raise InputError(f"no file matches {entry['files']} (data_root={data_root})")
        for path in files:
            if entry.get("format") == "ukis":
                image, cloud, valid, unknown = _ukis(path, bands, entry.get("window"))
            elif entry.get("teacher"):
                image, cloud, valid, unknown = _teacher(path, entry, bands, entry.get("window"))
            else:
                image, cloud, valid, unknown = _raster(path, entry, bands, entry.get("window"))
            known = valid & cloud if entry.get("clear_known", True) is False else valid & ~unknown
            if entry.get("stretch") is not None:
                image = stretch_to_8bit(image, valid, entry["stretch"])
            images.append(LabelledImage(image, cloud & valid, valid, known, path.stem, float(entry.get("weight", 1.0)),
                                        display=entry.get("stretch") is not None))
    return images


class LabelledCloudDataset(EpochDataset):
    """Crops of real labelled cloudy images; see the module docstring."""

    def __init__(self, images: list[LabelledImage], bands=RGBN, length: int = 200, num_frames=None, seed=0,
                 train=True, patch_size=128, flips=True, rotations=True):
        super().__init__(seed, train, patch_size, flips, rotations)
        if not images:
            raise InputError("a labels part needs at least one labelled image")
        self.images, self.band_names, self.num_frames = images, tuple(bands), num_frames
        self.length = int(length) if train else len(images)
        weights = np.array([im.weight for im in images], dtype=np.float64)
        self.p = weights / weights.sum()

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        rng = self.rng(index)
        i = int(rng.choice(len(self.images), p=self.p)) if self.train else index % len(self.images)
        im = self.images[i]
        (x, cloud, known), box = self.crop(rng, [im.image, im.cloud.astype(np.float32), im.known.astype(np.float32)],
                                           im.valid)
        g = self.geometry(rng)
        x, cloud, known = apply_geometry(x, g), apply_geometry(cloud, g), apply_geometry(known, g)
        return to_sample(x[None], x, cloud, None, 1.0, f"{im.name}@{box[0]},{box[1]}",
                         stack=self.num_frames is not None, target_weight=0.0, mask_known=known, display=im.display)
