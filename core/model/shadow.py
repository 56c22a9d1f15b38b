"""Cloud shadows found by geometry: the cloud mask, shifted along the sun's direction, lands on dark ground.

A thick cloud casts its shadow at an offset ``h · tan(zenith)`` along the sun's azimuth, the same
direction for every cloud of a scene (Fmask's cloud-shadow matching, Zhu & Woodcock 2012). The raster
carries no sun angles, so the direction is searched: for every offset ``(dy, dx)`` on a polar grid
(``AZIMUTHS`` directions, ``STEP`` to ``MAX_DISTANCE`` pixels), the share of the shifted cloud's
footprint on clear ground that is dark. Two FFT cross-correlations give that share at every offset
at once. A scene with shadows has one direction whose share stands out: well above the dark share of
all its clear ground (``MIN_RATIO``), above ``MIN_MATCH``, and above the opposite direction
(``MIN_OPPOSITE``: dark ground that merely lies around the clouds, or between them, does not pass).
Then the shadow is the dark ground under the cloud mask shifted over the distances that matched,
widened by a few pixels for the penumbra.

Dark means darker than ``DARK`` times the median of the clear ground, in NIR where the model has it
(a shadow keeps the sky's blue light and loses the sun's, so NIR shows it best) and in the mean of the
visible bands otherwise (``DARK_VISIBLE``: the visible is lifted by haze, so the cut is milder; on 8-bit
display imagery the stretch has taken the haze offset away and darkens shadows, ``DARK_DISPLAY``). With
NIR, water (NIR below green) is never a shadow. Nothing here is learned; everything runs without
gradients on the network's own cloud weight.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .morphology import dilate

__all__ = ["cloud_shadows"]

AZIMUTHS = 16               # searched directions (22.5 degrees apart)
STEP, MAX_DISTANCE = 4, 128  # searched shadow distances, pixels (1-2 km clouds at 10-30 m, sun 30-60 degrees)
DARK, DARK_VISIBLE = 0.6, 0.7  # a shadow is darker than this share of the clear ground's median
DARK_DISPLAY = 0.5          # ... in the visible bands of 8-bit display imagery, whose stretch darkens shadows
PENUMBRA = 0.8              # the shadow's rim: darker than this share, next to the shadow
MIN_MATCH = 0.3             # share of the shifted cloud's footprint that must be dark
MIN_RATIO = 3.0             # ... and that many times the dark share of all clear ground
MIN_OPPOSITE = 1.5          # ... and that many times the opposite direction's best share
MIN_FOOTPRINT = 200         # pixels of clear ground under the shifted cloud needed to judge an offset,
MIN_FOOTPRINT_SHARE = 0.25  # and this share of the cloud's pixels (a cloud mostly shifted off the tile or
                            # onto other clouds would match by chance)
CLOUD_SHARE = (0.005, 0.9)  # a tile needs some cloud and some ground
CLOUD = 0.5                 # a pixel of cloud weight above this casts a shadow
MATCH_SPAN = 0.6            # the distances kept: their share is at least this part of the best one
PENUMBRA_PX, SPREAD_PX = 2, 3


def cloud_shadows(image: torch.Tensor, cloud: torch.Tensor, nir: int | None = None,
                  display: bool | torch.Tensor = False) -> torch.Tensor:
    """``(B, 1, H, W)``, 1 where a pixel is the shadow of a cloud of ``cloud`` ``(B, 1, H, W)`` (weights in
    [0, 1]). ``image`` ``(B, C, H, W)``: red, green, blue first, ``nir`` the index of a NIR band if any;
    ``display``: 8-bit display imagery (a bool, or one per sample)."""
    displays = display.reshape(-1).tolist() if isinstance(display, torch.Tensor) else [display] * len(image)
    with torch.no_grad():
        found = [_shadow(img.float(), c[0] > CLOUD, nir, bool(d))
                 for img, c, d in zip(image, cloud, displays, strict=True)]
    return torch.stack(found)[:, None].to(cloud.dtype)


def _darkness_cut(nir: int | None, display: bool) -> float:
    if nir is not None:
        return DARK
    return DARK_DISPLAY if display else DARK_VISIBLE


def _shadow(image: torch.Tensor, cloud: torch.Tensor, nir: int | None, display: bool = False) -> torch.Tensor:
    none = torch.zeros_like(cloud)
    if not CLOUD_SHARE[0] <= cloud.float().mean().item() <= CLOUD_SHARE[1]:
        return none
    ground = ~cloud
    visible = image[:3].mean(0)
    brightness = visible if nir is None else image[nir]
    reference = brightness[ground].median()
    dark = ground & (brightness < _darkness_cut(nir, display) * reference)
    if nir is not None:  # dark in the visible too, and not water (shadowed land stays brighter in NIR than in green)
        dark &= (visible < visible[ground].median()) & (image[nir] > image[1])
    dark_share = dark[ground].float().mean().item()
    if dark_share == 0.0:
        return none
    match = _match_by_offset(cloud, ground, dark)
    best = match.max(dim=1).values
    azimuth = int(best.argmax())
    top, opposite = float(best[azimuth]), float(best[(azimuth + AZIMUTHS // 2) % AZIMUTHS])
    if top < MIN_MATCH or top < MIN_RATIO * dark_share or top < MIN_OPPOSITE * opposite:
        return none
    kept = (match[azimuth] >= MATCH_SPAN * top).nonzero()[:, 0]
    near, far = _distance(int(kept.min())), _distance(int(kept.max()))
    footprint = torch.zeros_like(cloud)
    for d in range(near, far + 1, 2):
        footprint |= _shift(cloud, *_offset(azimuth, d))
    shadow = dilate(footprint, SPREAD_PX) & dark
    return shadow | (dilate(shadow, PENUMBRA_PX) & ground & (brightness < PENUMBRA * reference))


def _distance(k: int) -> int:
    return STEP * (k + 1)


def _offset(azimuth: int, distance: int) -> tuple[int, int]:
    angle = 2.0 * math.pi * azimuth / AZIMUTHS
    return round(distance * math.sin(angle)), round(distance * math.cos(angle))


_OFFSETS = torch.tensor([[_offset(a, _distance(k)) for k in range(MAX_DISTANCE // STEP)]
                         for a in range(AZIMUTHS)])  # (AZIMUTHS, distances, 2): rows, cols


def _match_by_offset(cloud: torch.Tensor, ground: torch.Tensor, dark: torch.Tensor) -> torch.Tensor:
    """``(AZIMUTHS, distances)``: the dark share of the clear ground under the cloud mask shifted by each
    offset (0 where too few such pixels), from two FFT cross-correlations at half resolution (the offsets
    are ``STEP`` = 4 pixels apart, so half resolution loses nothing of the search and costs a quarter)."""
    halves = [F.avg_pool2d(m[None, None].float(), 2, ceil_mode=True)[0, 0] for m in (cloud, ground, dark)]
    h, w = halves[0].shape
    size = (2 * h, 2 * w)  # zero-padded: no wrap-around
    spectrum = torch.fft.rfft2(halves[0], s=size).conj()
    on_ground, on_dark = (torch.fft.irfft2(spectrum * torch.fft.rfft2(m, s=size), s=size) for m in halves[1:])
    rows, cols = (torch.round(_OFFSETS[..., j].to(on_ground.device) / 2.0).long() for j in (0, 1))
    inside = (rows.abs() < h) & (cols.abs() < w)
    rows, cols = rows % size[0], cols % size[1]
    footprint, dark_part = 4.0 * on_ground[rows, cols], 4.0 * on_dark[rows, cols]  # in full-resolution pixels
    enough = inside & (footprint >= max(MIN_FOOTPRINT, MIN_FOOTPRINT_SHARE * float(cloud.sum())))
    return torch.where(enough, dark_part / footprint.clamp_min(1.0), torch.zeros(()))


def _shift(mask: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``mask`` moved by ``(dy, dx)`` pixels, False where nothing moved in."""
    h, w = mask.shape
    out = torch.zeros_like(mask)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out
