"""s2cloudless (Sentinel Hub's LightGBM pixel classifier) as an optional cloud source for Sentinel-2 L1C.

Optional, never required: used only where the ``s2cloudless`` and ``lightgbm`` packages are installed
(``pip install --no-deps s2cloudless==1.7.2 lightgbm==4.7.0 narwhals==2.29.0``, as ``make setup`` does; inside QGIS's Python it is not
needed and not installed by the plugin). The package is located without importing it, because its
``__init__`` imports ``sentinelhub`` (a download client this needs none of): its LightGBM model file
is read with ``lightgbm.Booster`` and the classifier's post-processing is repeated here with scipy —
disk averaging of the probability, threshold, disk dilation — with the settings s2cloudless
recommends for 10 m data (threshold 0.4, average over 4 px, dilate 2 px).

The probability comes from either classifier (``CLASSIFIERS``): s2cloudless's own, or the bundled copy distilled
from it (``core.l1c_cloud``, numpy alone), which a run takes by default; the post-processing is the same for both.

Input: top-of-atmosphere reflectance (DN / 10000) of 13-band L1C (B1..B12 with B8A, SAFE order).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from .errors import DependencyError, InputError
from .sensors import S2_13

MODEL_FILE = ("models", "pixel_s2_cloud_detector_lightGBM_v0.1.txt")
# B01, B02, B04, B05, B08, B8A, B09, B10, B11, B12: the ten bands the classifier was trained on
MODEL_BANDS = ("coastal", "blue", "red", "rededge1", "nir", "nir08", "watervapour", "cirrus", "swir1", "swir2")
THRESHOLD, AVERAGE_OVER, DILATION = 0.4, 4, 2
# At inference a run takes what the classifier puts above 0.6, not the 0.4 s2cloudless recommends: on a clear winter
# L1C clip (bench/bench_cloud_source.py) 0.4 calls 25 % of bright fields and haze cloud, 0.6 9 % (its cloud streaks);
# on the 20 real L1C pairs of other scenes added to the score 28.37 dB at 0.6, 28.05 at 0.4, 28.27 at 0.5, 28.28 at 0.7
INFERENCE_THRESHOLD = 0.6
# The classifiers that give the probability: s2cloudless's own (the optional packages) or the bundled copy
# distilled from it (core.l1c_cloud, numpy alone: what a run takes by default)
CLASSIFIERS = ("s2cloudless", "viser-l1c-cloud")
# At inference the classifier runs on 4 x 4 cell means (40 m on 10 m bands; its SWIR and red-edge bands are 20 m,
# three are 60 m): 12 times faster, and on the 29 real L1C test pairs 0.03 dB from running it on every pixel
STEP = 4
# pixels beyond a window that its mask depends on: the averaging and the dilation, and a cell each side for the
# interpolation; a window that starts on a multiple of STEP has the cells of the whole raster
MARGIN = AVERAGE_OVER + DILATION + 2 * STEP
# the run's cloud source (core.pipeline: CloudRemovalRequest): auto takes the bundled classifier on 13-band L1C
CLOUD_SOURCES = ("auto", "model", "s2cloudless", "l1c-classifier")

HOW_TO_GET = ("s2cloudless is optional: install it into the Python that runs this (not QGIS's) with "
              "`pip install --no-deps s2cloudless==1.7.2 lightgbm==4.7.0 narwhals==2.29.0`")


def model_path() -> Path | None:
    """The classifier file of the installed s2cloudless package, found without importing it; None when absent."""
    spec = importlib.util.find_spec("s2cloudless")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MODEL_FILE)
    return path if path.is_file() else None


def available() -> bool:
    """True when both the s2cloudless model file and lightgbm are installed."""
    return model_path() is not None and importlib.util.find_spec("lightgbm") is not None


@functools.lru_cache(maxsize=1)
def _booster():
    path = model_path()
    if path is None or importlib.util.find_spec("lightgbm") is None:
        raise DependencyError(f"the s2cloudless cloud source needs the s2cloudless and lightgbm packages. {HOW_TO_GET}")
    from lightgbm import Booster

    return Booster(model_file=str(path))


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (yy * yy + xx * xx <= radius * radius).astype(np.float32)


def predictor(classifier):
    """The function ``(N, 10) pixels -> (N,) probability`` of ``classifier``: a name of ``CLASSIFIERS``, or an
    object with that ``predict`` (a classifier being trained, ``training.distill_l1c_cloud``)."""
    if hasattr(classifier, "predict"):
        return classifier.predict
    if classifier == "s2cloudless":
        return _booster().predict
    if classifier == "viser-l1c-cloud":
        from . import l1c_cloud

        return l1c_cloud.bundled().predict
    raise InputError(f"unknown L1C cloud classifier {classifier!r}: use one of {', '.join(CLASSIFIERS)}")


def cloud_probability(l1c: np.ndarray, band_names=S2_13, step: int = 1, classifier="s2cloudless") -> np.ndarray:
    """``(H, W)`` cloud probability of ``classifier`` (one of ``CLASSIFIERS``, or see ``predictor``) for ``l1c`` ``(C, H, W)`` TOA
    reflectance whose bands are named ``band_names`` (they must include the ten the classifier uses). ``step``
    > 1: the classifier runs on ``step`` x ``step`` cell means and its probability is interpolated back (bilinear)."""
    missing = [b for b in MODEL_BANDS if b not in band_names]
    if missing:
        raise InputError(f"the L1C cloud classifier needs the Sentinel-2 L1C bands {', '.join(missing)}, which the input lacks: "
                         "give a 13-band L1C raster (B1..B12 with B8A) or use the network's own cloud score")
    idx = [list(band_names).index(b) for b in MODEL_BANDS]
    bands = np.asarray(l1c, dtype=np.float64)[idx]
    height, width = bands.shape[-2:]
    if step > 1:
        bands = cell_means(bands, step)
    pixels = np.moveaxis(bands, 0, -1).reshape(-1, len(idx))
    probability = predictor(classifier)(pixels).reshape(bands.shape[-2:]).astype(np.float32)
    if step > 1:
        from scipy import ndimage

        probability = ndimage.zoom(probability, step, order=1, mode="nearest", grid_mode=True)[:height, :width]
    return probability


def cell_means(bands: np.ndarray, step: int) -> np.ndarray:
    """``(C, ceil(H / step), ceil(W / step))`` means of ``step`` x ``step`` cells (edges padded by repetition)."""
    channels, height, width = bands.shape
    pad_h, pad_w = -height % step, -width % step
    if pad_h or pad_w:
        bands = np.pad(bands, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")
    return bands.reshape(channels, bands.shape[1] // step, step, bands.shape[2] // step, step).mean(axis=(2, 4))


def cloud_mask(probability: np.ndarray, threshold: float = THRESHOLD, average_over: int = AVERAGE_OVER,
               dilation: int = DILATION) -> np.ndarray:
    """s2cloudless's post-processing: probability averaged over a disk, thresholded, dilated by a disk."""
    from scipy import ndimage

    prob = np.asarray(probability, dtype=np.float32)
    if average_over:
        disk = _disk(average_over)
        prob = ndimage.convolve(prob, disk / disk.sum(), mode="reflect")
    mask = prob > threshold
    if dilation:
        mask = ndimage.binary_dilation(mask, structure=_disk(dilation).astype(bool))
    return mask


def window_probability(l1c: np.ndarray, band_names, valid: np.ndarray | None = None,
                       classifier="s2cloudless") -> np.ndarray:
    """The probability ``(H, W)`` a run's mask is made from (``window_cloud``): ``classifier`` on ``STEP`` cells;
    pixels not ``valid`` (no data) have none."""
    probability = cloud_probability(l1c, band_names, STEP, classifier)
    if valid is not None:
        probability[~valid] = 0.0
    return probability


def window_cloud(l1c: np.ndarray, band_names, valid: np.ndarray | None = None,
                 classifier="s2cloudless") -> np.ndarray:
    """A run's cloud mask ``(H, W)`` of a window of L1C TOA reflectance ``(C, H, W)``: ``window_probability``
    above ``INFERENCE_THRESHOLD``. Read the window ``MARGIN`` pixels wider than the part kept, from a multiple of
    ``STEP``: it is then the whole raster's mask there."""
    return cloud_mask(window_probability(l1c, band_names, valid, classifier), INFERENCE_THRESHOLD)
