"""Thin-cirrus correction of Sentinel-2 L1C with its cirrus band (B10, 1.375 µm).

At 1.375 µm water vapour absorbs the light from the ground, so B10 sees high cloud only; over thin
cirrus the other bands gain a cirrus reflectance roughly proportional to it (Gao & Kaufman 1995; the
cirrus correction of Sen2Cor and of Gao & Li 2017 for Landsat 8). Per band ``b`` and per tile:

    ρ_b' = ρ_b − k_b · max(ρ_cirrus − c₀, 0)

``k_b`` is the slope of the tile's *dark envelope* (a low percentile of ρ_b in bins of ρ_cirrus: the
darkest ground brightens with the cirrus above it, whatever the ground), ``c₀`` the tile's cirrus
floor (a low percentile of B10: what all of the tile has is left, never over-corrected). Applied only
where the physics holds: enough pixels above ``CIRRUS_MIN``, a spread of cirrus wide enough for a
regression, and every slope within ``(0, MAX_SLOPE]`` — thin cirrus gives slopes of about 1-3; thick
cloud, whose B10 and visible reflectance rise together far more steeply, and ground seen in B10 (dry,
high terrain), which gives slopes of either sign, are left to the network's cloud score.
"""

from __future__ import annotations

import numpy as np

CIRRUS_MIN = 0.005          # B10 reflectance above which a pixel counts as under cirrus
MIN_PIXELS = 500            # pixels under cirrus needed for the regression
MIN_SPREAD = 0.005          # B10 range (10th-90th percentile) the regression needs
MAX_SLOPE = 4.0             # steeper than this is thick cloud or ground in B10, not thin cirrus
DARK_PERCENTILE = 5         # the dark envelope: this percentile of each band per cirrus bin
FLOOR_PERCENTILE = 2        # the tile's cirrus floor, left in place
BINS = 8
MIN_BIN_PIXELS = 50


def cirrus_slopes(bands: np.ndarray, cirrus: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray | None:
    """Per band of ``bands`` ``(C, H, W)`` (reflectance), the slope of its dark envelope against
    ``cirrus`` ``(H, W)`` (B10 reflectance), over ``valid`` pixels; None where thin-cirrus physics does
    not hold (too little cirrus, too narrow a range, a slope out of ``(0, MAX_SLOPE]``)."""
    under = cirrus > CIRRUS_MIN
    if valid is not None:
        under &= valid
    if int(under.sum()) < MIN_PIXELS:
        return None
    levels = cirrus[under]
    low, high = np.percentile(levels, [10, 90])
    if high - low < MIN_SPREAD:
        return None
    edges = np.percentile(levels, np.linspace(0, 100, BINS + 1))
    xs, envelopes = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = under & (cirrus >= lo) & (cirrus <= hi)
        if int(in_bin.sum()) < MIN_BIN_PIXELS:
            continue
        xs.append(float(np.median(cirrus[in_bin])))
        envelopes.append(np.percentile(bands[:, in_bin], DARK_PERCENTILE, axis=1))
    if len(xs) < 3:
        return None
    slopes = np.polyfit(np.asarray(xs), np.stack(envelopes), 1)[0]
    if not np.all((slopes > 0) & (slopes <= MAX_SLOPE)):
        return None
    return slopes.astype(np.float32)


def correct_cirrus(bands: np.ndarray, cirrus: np.ndarray, valid: np.ndarray | None = None) -> bool:
    """Remove thin cirrus from ``bands`` ``(C, H, W)`` in place (see the module docstring); True when the
    tile was corrected, False when it was left as it is."""
    slopes = cirrus_slopes(bands, cirrus, valid)
    if slopes is None:
        return False
    floor = np.percentile(cirrus if valid is None else cirrus[valid], FLOOR_PERCENTILE)
    excess = np.clip(cirrus - floor, 0.0, None).astype(np.float32)
    bands -= slopes[:, None, None] * excess[None]
    np.clip(bands, 0.0, None, out=bands)
    if valid is not None:
        bands[:, ~valid] = 0.0
    return True
