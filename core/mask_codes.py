"""Cloud masks as the products deliver them: which values of a mask raster mean cloud (or its shadow).

An analyst's cloud mask is rarely a 0/1 raster. It is the quality layer that came with the image: the
bit-packed ``QA_PIXEL`` band of Landsat Collection 2, the scene classification (``SCL``) of Sentinel-2
L2A, or Fmask's class raster. Each encoding here names the values that mean cloud, thin cirrus or cloud
shadow. Keep-clear fills exactly those pixels, as the model's shadow test would fill shadows too.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from .errors import InputError

DEFAULT_ENCODING = "nonzero"
MAX_BUFFER = 100  # pixels: a wider buffer is a different mask, not a margin around this one
MASK_MODES = ("replace", "add")  # the mask alone decides what is cloud, or it adds to the model's own clouds


@dataclass(frozen=True)
class MaskEncoding:
    """Which raw values of a mask band are cloud: any of ``bits`` set, or a value in ``classes``."""

    name: str
    title: str                          # what a user picks from (QGIS, help texts)
    bits: tuple[int, ...] = ()          # bit positions, 0 = least significant
    classes: tuple[int, ...] = ()
    known: Collection[int] | None = None  # every value the encoding defines (None: any integer)

    @property
    def coded(self) -> bool:
        return bool(self.bits or self.classes)

    def cloud(self, raw: np.ndarray) -> np.ndarray:
        """Boolean cloud map of the raw mask values (float arrays from a raster read, integral values)."""
        if not self.coded:
            return raw != 0
        values = raw.astype(np.int64)
        if self.bits:
            return (values & sum(1 << bit for bit in self.bits)) != 0
        return np.isin(values, self.classes)

    def check_values(self, raw: np.ndarray, what: str) -> None:
        """Refuse a raster whose values this encoding does not define: most likely the wrong layer."""
        if self.known is None or raw.size == 0:
            return
        found = np.unique(raw)
        foreign = [value for value in found if not float(value).is_integer() or int(value) not in self.known]
        if foreign:
            shown = ", ".join(f"{value:g}" for value in foreign[:5])
            raise InputError(f"{what} has values ({shown}) that a {self.title} layer never holds: give the "
                             f"{self.title} band itself, or pick the encoding the mask has (--cloud-mask-type "
                             f"{' | '.join(ENCODINGS)}).")


ENCODINGS: dict[str, MaskEncoding] = {encoding.name: encoding for encoding in (
    MaskEncoding("nonzero", "0 = clear, any other value = cloud"),
    # Collection 2 QA_PIXEL: 1 dilated cloud, 2 cirrus (OLI only), 3 cloud, 4 cloud shadow
    MaskEncoding("landsat-qa-pixel", "Landsat Collection 2 QA_PIXEL", bits=(1, 2, 3, 4),
                 known=range(1 << 16)),
    # Sen2Cor scene classification: 3 cloud shadows, 8 / 9 cloud medium / high probability, 10 thin cirrus
    MaskEncoding("sentinel2-scl", "Sentinel-2 L2A scene classification (SCL)", classes=(3, 8, 9, 10),
                 known=range(12)),
    # Fmask 4: 0 clear land, 1 clear water, 2 cloud shadow, 3 snow, 4 cloud, 255 no observation
    MaskEncoding("fmask", "Fmask", classes=(2, 4), known=(0, 1, 2, 3, 4, 255)),
)}


# a mask read as nonzero that calls at least this share of its pixels cloud, through several values or values
# above 255, is a product band or a probability read the wrong way (a QA_PIXEL's clear land is 21824, an SCL's
# vegetation 4)
EVERYTHING_CLOUD = 0.99


def check_nonzero(raw: np.ndarray, what: str) -> None:
    """Refuse a mask read as ``nonzero`` that calls (nearly) every pixel cloud through several distinct values,
    or through values no plain mask uses (above 255): a coded product band (QA_PIXEL, SCL, Fmask) given without
    its --cloud-mask-type, or a cloud probability, which would fill the whole image. A 0/1 (0/255) mask that
    is all cloud is taken as it is."""
    cloudy = np.count_nonzero(raw)
    if raw.size == 0 or cloudy < EVERYTHING_CLOUD * raw.size:
        return
    values = np.unique(raw)
    if np.count_nonzero(values) < 2 and values.max() <= 255:
        return
    shown = ", ".join(f"{value:g}" for value in values[:5]) + (", ..." if len(values) > 5 else "")
    likely = likely_encodings(raw)
    hint = (f"they look like {' or '.join(ENCODINGS[name].title for name in likely)}: add --cloud-mask-type "
            f"{' or '.join(likely)}" if likely else "give a 0/1 mask (a cloud probability thresholded first, e.g. "
            f"with QGIS's raster calculator) or the encoding its values have (--cloud-mask-type "
            f"{' | '.join(ENCODINGS)})")
    raise InputError(f"{what}, read as nonzero (0 = clear, anything else cloud), calls "
                     f"{cloudy / raw.size:.0%} of its pixels cloud ({shown}): {hint}.")


def likely_encodings(raw: np.ndarray) -> list[str]:
    """The product encodings that define every value of ``raw`` and leave some of it clear."""
    values = np.unique(raw)
    return [name for name, coded in ENCODINGS.items()
            if coded.coded and coded.known is not None
            and all(float(v).is_integer() and int(v) in coded.known for v in values)
            and np.count_nonzero(coded.cloud(raw)) < EVERYTHING_CLOUD * raw.size]


# how the products name their quality bands: LC08_..._QA_PIXEL.TIF, T32UMU_..._SCL_20m.jp2, ..._Fmask4.tif
_PRODUCT_NAMES = ((re.compile(r"qa_pixel", re.IGNORECASE), "landsat-qa-pixel"),
                  (re.compile(r"(?<![a-z])scl(?![a-z])", re.IGNORECASE), "sentinel2-scl"),
                  (re.compile(r"fmask", re.IGNORECASE), "fmask"))


def encoding_from_name(name: str) -> str | None:
    """The encoding a quality band's product name says it has (a file or layer name), or None."""
    return next((encoding for pattern, encoding in _PRODUCT_NAMES if pattern.search(name)), None)


def encoding(name: str) -> MaskEncoding:
    """The encoding called ``name``, or an error listing them."""
    try:
        return ENCODINGS[name]
    except KeyError:
        raise InputError(f"unknown cloud mask type {name!r}: use one of {', '.join(ENCODINGS)} (the values "
                         "that mean cloud in the mask raster).") from None


def buffer_clouds(cloud: np.ndarray, pixels: int) -> np.ndarray:
    """``cloud`` grown by ``pixels`` in every direction (a disc): the thin rim of a cloud that a tight mask
    leaves outside, which the fill would otherwise take brightness from (as Fmask and s2cloudless buffer)."""
    if pixels <= 0:
        return cloud
    from scipy import ndimage

    offsets = np.arange(-pixels, pixels + 1)
    disc = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= pixels * pixels
    return ndimage.binary_dilation(cloud, structure=disc)


def check_buffer(pixels) -> int:
    """The buffer as a whole number of pixels in [0, MAX_BUFFER], or an error saying what to give."""
    try:
        value = float(pixels)
    except (TypeError, ValueError):
        value = float("nan")
    if not value.is_integer() or not 0 <= value <= MAX_BUFFER:
        raise InputError(f"the cloud mask buffer must be a whole number of pixels from 0 to {MAX_BUFFER}, got "
                         f"{pixels!r}: 2-4 px takes the thin rims a tight mask leaves around its clouds.")
    return int(value)
