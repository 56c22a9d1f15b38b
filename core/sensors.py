"""Sensor presets: which bands hold red / green / blue / NIR, and how digital numbers become reflectance.

``reflectance = DN * scale + offset``. Every decision carries a reason in plain words, so that
``viser-cr info`` and the QGIS dock can say what was detected and why, and how to override it.

Detection order (first that applies wins):

1. the user's ``sensor`` (a preset name) and ``scale`` / ``offset`` / ``bands``;
2. metadata: GDAL band scale/offset, tags (``BOA_ADD_OFFSET``, ``RADIO_ADD_OFFSET``,
   ``PROCESSING_BASELINE``, ``SPACECRAFT_ID``, ``PRODUCT_TYPE``), band descriptions
   (``B04``, ``SR_B4``, ``red``, ``nir``) and the file name (``S2A_MSIL2A_..._N0400_...``, ``LC08_L2SP_...``);
3. the data type and band count (13 bands uint16 = Sentinel-2 L1C, 8-bit = RGB / RGBN).

A uint16 raster with no such evidence is refused with a message naming the flags to pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

# The names model cards use for bands (``ModelCard.bands``).
CANONICAL_BANDS = ("red", "green", "blue", "nir")

# Sentinel-2's 13 bands in SAFE order (B1..B12 with B8A); the training datasets read this list too.
S2_13 = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08",
          "watervapour", "cirrus", "swir1", "swir2")
_S2_12 = tuple(name for name in S2_13 if name != "cirrus")
_S2_CODES = {"1": "coastal", "2": "blue", "3": "green", "4": "red", "5": "rededge1", "6": "rededge2",
             "7": "rededge3", "8": "nir", "8a": "nir08", "9": "watervapour", "10": "cirrus",
             "11": "swir1", "12": "swir2"}
# Landsat 8/9 OLI band numbers; Landsat 4-7 (TM/ETM+) number their bands differently.
_OLI_CODES = {"1": "coastal", "2": "blue", "3": "green", "4": "red", "5": "nir", "6": "swir1",
              "7": "swir2"}
_TM_CODES = {"1": "blue", "2": "green", "3": "red", "4": "nir", "5": "swir1", "7": "swir2"}


@dataclass(frozen=True)
class SensorPreset:
    """A named sensor / product: its scaling and its usual band layouts by band count."""

    name: str
    title: str
    scale: float
    offset: float
    dtypes: tuple[str, ...]
    layouts: dict[int, tuple[str, ...]]
    layout_notes: dict[int, str] = field(default_factory=dict)
    band_codes: dict[str, str] = field(default_factory=dict)
    radiometry: str = "reflectance"  # or "display": 8-bit imagery stretched for the eye


# Sentinel-2 L1C and L2A files come in the same band layouts
_S2_BANDS = dict(
    layouts={13: S2_13, 12: _S2_12, 4: ("red", "green", "blue", "nir"), 3: ("red", "green", "blue")},
    layout_notes={13: "B1..B12 with B8A, SAFE order", 12: "B1..B12 with B8A, no B10",
                  4: "R, G, B, NIR (Sen2_MTC order)", 3: "R, G, B"},
    band_codes=_S2_CODES,
)

PRESETS: dict[str, SensorPreset] = {
    "s2-l1c": SensorPreset(
        "s2-l1c", "Sentinel-2 L1C (top-of-atmosphere reflectance x 10000)", 1e-4, 0.0, ("uint16",),
        **_S2_BANDS,
    ),
    "s2-l2a": SensorPreset(
        "s2-l2a", "Sentinel-2 L2A (surface reflectance x 10000)", 1e-4, 0.0, ("uint16",),
        **_S2_BANDS,
    ),
    "landsat-c2l2": SensorPreset(
        "landsat-c2l2", "Landsat Collection 2 Level-2 surface reflectance (DN x 0.0000275 - 0.2)",
        2.75e-5, -0.2, ("uint16",),
        layouts={7: ("coastal", "blue", "green", "red", "nir", "swir1", "swir2"),
                 6: ("blue", "green", "red", "nir", "swir1", "swir2"),
                 4: ("blue", "green", "red", "nir"), 3: ("blue", "green", "red")},
        layout_notes={7: "OLI SR_B1..SR_B7", 6: "TM/ETM+ SR_B1..B5, B7",
                      4: "band-number order B2, B3, B4, B5 (blue first)",
                      3: "band-number order B2, B3, B4 (blue first)"},
        band_codes=_OLI_CODES,
    ),
    "rgb8": SensorPreset(
        "rgb8", "8-bit RGB (value / 255)", 1 / 255, 0.0, ("uint8",),
        layouts={3: ("red", "green", "blue"), 4: ("red", "green", "blue", "alpha")},
        layout_notes={3: "R, G, B", 4: "R, G, B, alpha"}, radiometry="display",
    ),
    "rgbn8": SensorPreset(
        "rgbn8", "8-bit RGB + NIR (value / 255)", 1 / 255, 0.0, ("uint8",),
        layouts={4: ("red", "green", "blue", "nir")},
        layout_notes={4: "R, G, B, NIR"}, radiometry="display",
    ),
}

# What --sensor, the Processing SENSOR parameter and the dock offer: detection or a preset.
SENSOR_CHOICES = ("auto", *PRESETS)

_GENERIC_NAMES = {"red": "red", "r": "red", "green": "green", "g": "green", "blue": "blue", "b": "blue",
                  "nir": "nir", "nir08": "nir", "nearinfrared": "nir", "infrared": "nir",
                  "coastal": "coastal", "aerosol": "coastal", "swir1": "swir1", "swir2": "swir2",
                  "alpha": "alpha"}
_COLOR_NAMES = {"red": "red", "green": "green", "blue": "blue", "alpha": "alpha"}
_S2_OFFSET_TAGS = ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET")
_FLOAT_DTYPES = ("float32", "float64", "float16")


@dataclass
class BandFacts:
    """What a raster says about itself, as far as sensor detection cares (no pixel data)."""

    path: str
    count: int
    dtype: str
    descriptions: list[str | None]
    colorinterp: list[str]
    tags: dict[str, str]
    band_tags: list[dict[str, str]]
    scales: list[float]
    offsets: list[float]
    alpha_band_is_data: bool | None = None   # 4-band uint8 with an "alpha" band: holds real data?


@dataclass
class SensorResolution:
    """The outcome: sensor name, scaling, 1-based band index per band name, and the reasons."""

    sensor: str
    scale: float
    offset: float
    band_names: dict[str, int]             # every band name we could assign -> 1-based index
    reasons: list[str]
    radiometry: str = "reflectance"        # or "display" (8-bit imagery): the model's cloud gate differs

    @property
    def reason(self) -> str:
        return " ".join(self.reasons)

    def indexes_for(self, wanted: Sequence[str]) -> list[int]:
        """1-based band indexes for the model's band names, or InputError naming what is missing."""
        missing = [name for name in wanted if name not in self.band_names]
        if missing:
            offered = ", ".join(f"{n}={i}" for n, i in self.band_names.items()) or "none identified"
            raise InputError(
                f"the raster does not offer the band(s) {', '.join(missing)} that the model needs "
                f"(model bands: {', '.join(wanted)}; identified in the raster: {offered}). "
                f"Pass --bands with {len(wanted)} band numbers in the order {','.join(wanted)}, "
                "or choose a model with fewer bands."
            )
        return [self.band_names[name] for name in wanted]


# ---------------------------------------------------------------------------------------------- names


def band_name_from_description(description: str | None, codes: dict[str, str] | None = None) -> str | None:
    """``"B04"`` -> ``red`` (with sensor codes), ``"Red"`` / ``"NIR"`` -> the canonical name."""
    if not description:
        return None
    tokens = re.findall(r"[a-z0-9]+", description.lower())
    if "edge" in tokens or "rededge" in tokens:
        return None
    joined = "".join(tokens)
    if joined in _GENERIC_NAMES:
        return _GENERIC_NAMES[joined]
    for token in tokens:
        if token in _GENERIC_NAMES and len(token) > 1:
            return _GENERIC_NAMES[token]
    if codes:
        for token in tokens:
            match = re.fullmatch(r"b0*(\d+a?)", token)
            if match and match.group(1) in codes:
                return codes[match.group(1)]
    return None


def _names_from_descriptions(facts: BandFacts, codes: dict[str, str] | None) -> dict[str, int]:
    names: dict[str, int] = {}
    for index, description in enumerate(facts.descriptions, start=1):
        name = band_name_from_description(description, codes)
        if name and name not in names:
            names[name] = index
    return names


def _names_from_colorinterp(facts: BandFacts) -> dict[str, int]:
    names: dict[str, int] = {}
    for index, interp in enumerate(facts.colorinterp, start=1):
        name = _COLOR_NAMES.get(interp.lower())
        if name and name not in names:
            names[name] = index
    return names


def _layout_names(preset: SensorPreset, count: int) -> dict[str, int]:
    layout = preset.layouts.get(count)
    return {name: index for index, name in enumerate(layout, start=1)} if layout else {}


# ------------------------------------------------------------------------------------------ evidence


def _all_tags(facts: BandFacts) -> dict[str, str]:
    merged = {key.upper(): str(value) for key, value in facts.tags.items()}
    for tags in facts.band_tags:
        for key, value in tags.items():
            merged.setdefault(key.upper(), str(value))
    return merged


def _s2_offset_from_tags(facts: BandFacts) -> tuple[float, str] | None:
    """The processing-baseline offset in DN (e.g. -1000) when metadata states it."""
    for key, value in _all_tags(facts).items():
        if any(tag in key for tag in _S2_OFFSET_TAGS):
            try:
                return float(value), f"metadata {key}={value}"
            except ValueError:
                continue
    for key, value in _all_tags(facts).items():
        if "PROCESSING_BASELINE" in key:
            try:
                baseline = float(value)
            except ValueError:
                continue
            if baseline >= 4.0:
                return -1000.0, f"metadata {key}={value} (baseline 04.00 or later adds 1000)"
            return 0.0, f"metadata {key}={value} (before baseline 04.00: no offset)"
    match = re.search(r"_N(\d{2})(\d{2})_", Path(facts.path).name)
    if match:
        baseline = int(match.group(1)) + int(match.group(2)) / 100
        if baseline >= 4.0:
            return -1000.0, f"file name baseline N{match.group(1)}{match.group(2)} (04.00 or later adds 1000)"
        return 0.0, f"file name baseline N{match.group(1)}{match.group(2)} (before 04.00: no offset)"
    return None


def _metadata_scaling(facts: BandFacts) -> tuple[float, float] | None:
    """GDAL band scale/offset when the file sets them (same for every band)."""
    pairs = {(s, o) for s, o in zip(facts.scales, facts.offsets, strict=False)}
    if len(pairs) == 1:
        scale, offset = pairs.pop()
        if (scale, offset) != (1.0, 0.0) and scale:
            return float(scale), float(offset)
    return None


def _sensor_from_metadata(facts: BandFacts) -> tuple[str, str] | None:
    """(preset name, reason) from tags, band descriptions or the file name; None if no evidence."""
    tags = _all_tags(facts)
    name = Path(facts.path).name.upper()
    product = " ".join(tags.get(k, "") for k in ("PRODUCT_TYPE", "PROCESSING_LEVEL", "PRODUCT_URI")).upper()
    if "MSIL2A" in name or "S2MSI2A" in product or "LEVEL-2A" in product:
        return "s2-l2a", "Sentinel-2 Level-2A named in the " + ("file name" if "MSIL2A" in name else "metadata")
    if "MSIL1C" in name or "S2MSI1C" in product or "LEVEL-1C" in product:
        return "s2-l1c", "Sentinel-2 Level-1C named in the " + ("file name" if "MSIL1C" in name else "metadata")
    spacecraft = tags.get("SPACECRAFT_ID", "") + tags.get("SPACECRAFT_NAME", "")
    if re.match(r"^L[CET]0[4-9]_L2S[PR]_", name) or "L2SP" in product:
        return "landsat-c2l2", "Landsat Collection 2 Level-2 named in the file name"
    if spacecraft.upper().startswith("SENTINEL-2") and any(k in tags for k in ("BOA_QUANTIFICATION_VALUE",)):
        return "s2-l2a", f"metadata SPACECRAFT={spacecraft} with BOA_QUANTIFICATION_VALUE"
    descriptions = " ".join(d or "" for d in facts.descriptions).upper()
    if re.search(r"\bSR_B\d\b", descriptions):
        return "landsat-c2l2", "band descriptions SR_B* (Landsat Collection 2 surface reflectance)"
    if re.search(r"\bB0?8A\b", descriptions) or re.search(r"\bB0\d\b", descriptions):
        return "s2-l1c", "band descriptions in Sentinel-2 style (B02, B8A, ...)"
    return None


def _landsat_codes(facts: BandFacts) -> dict[str, str]:
    tags = _all_tags(facts)
    text = (Path(facts.path).name + " " + tags.get("SPACECRAFT_ID", "")).upper()
    return _TM_CODES if re.search(r"\bL[TE]0[457]|LANDSAT_[457]", text) else _OLI_CODES


# ------------------------------------------------------------------------------------------- resolve


def _unknown_scaling_error(facts: BandFacts) -> InputError:
    hint = ""
    if re.match(r"^L[CETO]0\d_L1(TP|GT|GS)_", Path(facts.path).name.upper()):
        hint = ("The file name says Landsat Level-1: top-of-atmosphere reflectance is "
                "--scale 0.00002 --offset -0.1 (per the MTL file). ")
    return InputError(
        f"cannot tell how to turn the {facts.dtype} values of {Path(facts.path).name} ({facts.count} bands, "
        f"no sensor metadata) into reflectance. {hint}Say what it is: --sensor s2-l1c or s2-l2a "
        "(Sentinel-2 reflectance x 10000; add --offset -0.1 for processing baseline 04.00 or later), "
        "--sensor landsat-c2l2 (Landsat Collection 2 Level-2), or --scale S --offset O "
        "(reflectance = DN x S + O); and --bands R,G,B[,NIR] if the bands are not in the usual order."
    )


def _auto_preset(facts: BandFacts) -> tuple[str, str]:
    """(sensor name, reason) for sensor='auto' when the user gave no scale."""
    found = _sensor_from_metadata(facts)
    if found:
        return found
    if _metadata_scaling(facts):
        scale, offset = _metadata_scaling(facts)
        return "custom", f"the file sets band scale {scale:g} and offset {offset:g}"
    if facts.dtype == "uint8":
        if facts.count == 4:
            if facts.alpha_band_is_data is False:
                return "rgb8", "8-bit, 4 bands, band 4 is an alpha mask (only 0 and 255): RGB + alpha"
            note = " (band 4 is flagged alpha but holds varied values, so it is taken as NIR)" \
                if facts.alpha_band_is_data else ""
            return "rgbn8", "8-bit with 4 bands: RGB + NIR" + note
        return "rgb8", f"8-bit with {facts.count} band(s): RGB"
    if facts.dtype == "uint16" and facts.count == 13:
        return "s2-l1c", "uint16 with 13 bands: the Sentinel-2 L1C layout (B1..B12 with B8A)"
    if facts.dtype == "uint16" and facts.count == 12:
        return "s2-l2a", "uint16 with 12 bands: the Sentinel-2 L2A layout (B10 dropped)"
    if facts.dtype in _FLOAT_DTYPES:
        return "reflectance", f"{facts.dtype} values are taken as reflectance (0..1)"
    raise _unknown_scaling_error(facts)


def _base_scaling(sensor: str, facts: BandFacts, reasons: list[str]) -> tuple[float, float]:
    if sensor == "reflectance":
        return 1.0, 0.0
    if sensor == "custom":
        return _metadata_scaling(facts) or (1.0, 0.0)
    return _preset_scaling(sensor, facts, reasons)


def _preset_scaling(sensor: str, facts: BandFacts, reasons: list[str]) -> tuple[float, float]:
    if sensor == "reflectance":
        return 1.0, 0.0
    preset = PRESETS[sensor]
    scale, offset = preset.scale, preset.offset
    if sensor.startswith("s2-"):
        found = _s2_offset_from_tags(facts)
        if found:
            dn_offset, why = found
            offset = dn_offset * scale
            reasons.append(f"Offset {dn_offset:g} DN from {why}.")
        else:
            reasons.append("No processing-baseline offset in the metadata: none applied "
                           "(pass --offset -0.1 for products of baseline 04.00 or later).")
    if facts.dtype not in preset.dtypes and facts.dtype not in _FLOAT_DTYPES:
        reasons.append(f"Note: {preset.name} data is usually {'/'.join(preset.dtypes)}, this is {facts.dtype}.")
    return scale, offset


def _generic_layout(count: int) -> dict[str, int]:
    """Layout by band count for data with no preset: R,G,B[,NIR], or Sentinel-2's 13 / 12 bands."""
    if count in (3, 4):
        return {name: index for index, name in enumerate(CANONICAL_BANDS[:count], start=1)}
    return _layout_names(PRESETS["s2-l1c"], count)


def _band_layout(sensor: str, facts: BandFacts, reasons: list[str]) -> dict[str, int]:
    """Band name -> index: descriptions, then colour interpretation, then the preset's layout."""
    preset = PRESETS.get(sensor)
    codes = None
    if preset is not None:
        codes = _landsat_codes(facts) if sensor == "landsat-c2l2" else preset.band_codes
    names = _names_from_descriptions(facts, codes)
    if len(set(names) & set(CANONICAL_BANDS)) >= 3:
        reasons.append("Bands identified from their descriptions: "
                       + ", ".join(f"{n}={i}" for n, i in names.items() if n in CANONICAL_BANDS) + ".")
        return names
    colours = _names_from_colorinterp(facts)
    if {"red", "green", "blue"} <= set(colours):
        alpha = colours.pop("alpha", None)
        layout = _layout_names(preset, facts.count) if preset else _generic_layout(facts.count)
        if "nir" in layout and layout["nir"] not in colours.values() and (alpha is None or sensor == "rgbn8"):
            colours["nir"] = layout["nir"]
        reasons.append("Bands identified from their colour interpretation: "
                       + ", ".join(f"{n}={i}" for n, i in colours.items()) + ".")
        return colours
    layout = _layout_names(preset, facts.count) if preset else _generic_layout(facts.count)
    layout.pop("alpha", None)
    if layout:
        note = preset.layout_notes.get(facts.count, "") if preset else ""
        reasons.append(f"No band descriptions: assumed the usual {facts.count}-band layout"
                       + (f" ({note})" if note else "") + ": "
                       + ", ".join(f"{n}={i}" for n, i in layout.items() if n in CANONICAL_BANDS)
                       + "; pass --bands to override.")
    else:
        reasons.append(f"No band descriptions and no usual {facts.count}-band layout: pass --bands.")
    return layout


def resolve(
    facts: BandFacts,
    sensor: str = "auto",
    bands: Sequence[int] | None = None,
    scale: float | None = None,
    offset: float | None = None,
    wanted: Sequence[str] | None = None,
) -> SensorResolution:
    """Decide sensor, scaling and band mapping for one raster.

    ``bands`` are 1-based indexes in the order of ``wanted`` (the model's band names; default
    red, green, blue, nir truncated to the length of ``bands``).
    """
    sensor = (sensor or "auto").strip().lower()
    if sensor != "auto" and sensor not in PRESETS:
        raise InputError(f"unknown sensor {sensor!r}: use auto or one of {', '.join(PRESETS)}.")
    if facts.count < 1:
        raise InputError(f"{Path(facts.path).name} has no bands.")
    check_real_valued(facts)
    reasons: list[str] = []
    if sensor == "auto" and scale is not None:
        sensor = "custom"
        reasons.append("Scaling given by the user.")
    elif sensor == "auto":
        sensor, why = _auto_preset(facts)
        reasons.append(f"Detected {sensor}: {why}.")
    else:
        reasons.append(f"Sensor {sensor} chosen by the user.")

    base_scale, base_offset = _base_scaling(sensor, facts, reasons)
    final_scale = _number(scale, "scale") if scale is not None else base_scale
    final_offset = _number(offset, "offset") if offset is not None else base_offset
    check_scaling(facts, final_scale, final_offset, given=scale is not None or offset is not None)
    who = "User scaling" if scale is not None or offset is not None else "Scaling"
    reasons.append(f"{who}: {formula(final_scale, final_offset)}.")

    if bands is not None:
        names = _explicit_bands(facts, bands, wanted, reasons)
    else:
        names = _band_layout(sensor, facts, reasons)
    if sensor in PRESETS:
        radiometry = PRESETS[sensor].radiometry
    else:  # the user's own scaling: 8-bit data is display imagery
        radiometry = "display" if facts.dtype == "uint8" else "reflectance"
    return SensorResolution(sensor, final_scale, final_offset, names, reasons, radiometry)


MAX_OFFSET = 10.0   # reflectance units: real products use small offsets (Sentinel-2 -0.1, Landsat -0.2)


def _number(value, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}.") from None


def check_real_valued(facts: BandFacts) -> None:
    """InputError for complex data: its imaginary part would be dropped without a word."""
    if facts.dtype.startswith(("complex", "cint", "cfloat")):
        raise InputError(
            f"{Path(facts.path).name} holds complex values ({facts.dtype}), not reflectance: cloud removal needs "
            "optical bands of a real data type. Convert the values first (e.g. the amplitude with gdal_calc, or "
            "`gdal_translate -ot Float32` for the real part) or give the optical image."
        )


def check_scaling(facts: BandFacts, scale: float, offset: float, given: bool = True) -> None:
    """InputError unless ``reflectance = DN x scale + offset`` is finite, increasing and plausible.

    Plausible: the offset is small, and for integer data the range of the data type maps onto
    reflectances that reach into 0..1.
    """
    where = "given" if given else f"from the metadata of {Path(facts.path).name}"
    fix = ("Give --scale S --offset O with reflectance = DN x S + O (e.g. --scale 0.0001 for reflectance "
           "x 10000, --offset -0.1 for Sentinel-2 baseline 04.00) or a --sensor preset.")
    if not math.isfinite(scale) or scale <= 0:
        raise InputError(f"the scale {where} must be a positive, finite number, got {scale:g}. {fix}")
    if not math.isfinite(offset) or abs(offset) > MAX_OFFSET:
        raise InputError(f"the offset {where} must be a finite reflectance offset between {-MAX_OFFSET:g} and "
                         f"{MAX_OFFSET:g}, got {offset:g}. {fix}")
    if np.dtype(facts.dtype).kind in "iu":
        info = np.iinfo(facts.dtype)
        low, high = info.min * scale + offset, info.max * scale + offset
        if high <= 0 or low >= 1:
            raise InputError(
                f"with the scaling {where} ({formula(scale, offset)}) every {facts.dtype} value becomes a "
                f"reflectance between {low:g} and {high:g}, outside 0..1: the scaling does not fit this data. {fix}"
            )


def _explicit_bands(facts: BandFacts, bands: Sequence[int], wanted: Sequence[str] | None,
                    reasons: list[str]) -> dict[str, int]:
    bands = [int(b) for b in bands]
    bad = [b for b in bands if b < 1 or b > facts.count]
    if bad:
        raise InputError(
            f"band number(s) {', '.join(map(str, bad))} out of range: {Path(facts.path).name} has "
            f"{facts.count} band(s), numbered 1 to {facts.count}."
        )
    names = list(wanted) if wanted is not None else list(CANONICAL_BANDS[: len(bands)])
    if len(bands) != len(names):
        raise InputError(
            f"{len(bands)} band number(s) given ({','.join(map(str, bands))}) but the model needs "
            f"{len(names)}: {', '.join(names)} (in that order)."
        )
    mapping = dict(zip(names, bands, strict=True))
    reasons.append("Bands chosen by the user: " + ", ".join(f"{n}={i}" for n, i in mapping.items()) + ".")
    return mapping


def formula(scale: float, offset: float) -> str:
    """``reflectance = DN x 0.0001 - 0.1``"""
    sign = "-" if offset < 0 else "+"
    return f"reflectance = DN x {scale:g} {sign} {abs(offset):g}"


def parse_bands(text: str) -> list[int]:
    """``"4,3,2,8"``, ``"4 3 2 8"`` or ``"4;3;2;8"`` -> ``[4, 3, 2, 8]``; ``""`` -> ``[]``. ValueError for
    anything else (the CLI's --bands and the dock's Bands field read band lists with this)."""
    parts = [part for part in re.split(r"[\s,;]+", text or "") if part]
    try:
        bands = [int(part) for part in parts]
    except ValueError:
        raise ValueError(f"bands must be comma-separated band numbers like 4,3,2,8 (spaces or semicolons also "
                         f"separate them), got {text!r}") from None
    if any(band < 1 for band in bands):
        raise ValueError(f"band numbers start at 1, got {text!r}")
    return bands


def offered_bands(resolution: SensorResolution) -> list[str]:
    """The canonical band names this raster offers, in canonical order (for model selection)."""
    return [name for name in CANONICAL_BANDS if name in resolution.band_names]


# An acquisition date in a file name: Sentinel-2 (..._20170105T013442_...), Landsat (LC08_L1TP_224078_20200518_
# 20200527_...: the first date is the acquisition), NAIP (..._20090818), ISO (2018-11-27). Not preceded or
# followed by another digit, so tile ids and times do not match.
_NAME_DATE = re.compile(r"(?<!\d)(19[7-9]\d|20\d\d)[-_]?(0[1-9]|1[0-2])[-_]?(0[1-9]|[12]\d|3[01])(?!\d)")
_DATE_TAGS = ("ACQUISITION_DATE", "DATE_ACQUIRED", "SENSING_TIME", "DATATAKE_1_DATATAKE_SENSING_START",
              "PRODUCT_START_TIME", "SENSING_START")


def acquisition_date(facts: BandFacts):
    """The date the raster was acquired (``datetime.date``), from its metadata or, failing that, its file
    name; None when neither says. (TIFFTAG_DATETIME is left out: it is usually the processing time.)"""
    import datetime

    tags = _all_tags(facts)
    texts = [tags[key] for key in _DATE_TAGS if key in tags] + [Path(facts.path).name]
    for text in texts:
        match = _NAME_DATE.search(str(text))
        if match:
            try:
                return datetime.date(*(int(part) for part in match.groups()))
            except ValueError:  # 2021-02-30 and the like
                continue
    return None
