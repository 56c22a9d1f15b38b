"""Classical completion of cloudy pixels: push-pull normalised convolution over an image pyramid.

``push_pull_fill(x, clear)`` fills the pixels of low ``clear`` weight from the clear pixels around
them, at whatever distance they are: the pyramid's *push* pass averages ``clear·x`` and ``clear``
down to a few pixels (normalised convolution with a 2x2 box at every level), the *pull* pass
up-samples the coarse estimate bilinearly and, at each finer level, keeps the level's own
normalised value where it saw enough clear pixels:

    est_l = a_l · (Σ clear·x / Σ clear)_l + (1 − a_l) · up(est_{l+1}),   a_l = clear fraction at level l

At full resolution ``a_0 = clear``, so the result is ``clear·x + (1 − clear)·fill`` — exactly the
residual base of the network (``docs/model.md``: prior-guided completion). Everything is
differentiable in ``x`` and ``clear``; cost is O(pixels) (about 20 element-wise passes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["choose_context_dates", "harmonise_date", "push_pull_composite", "push_pull_fill", "temporal_haze"]

_EPS = 1e-4


def _down(t: torch.Tensor) -> torch.Tensor:
    """2x2 average; an odd last row/column is replicated first so no pixel is dropped."""
    h, w = t.shape[-2:]
    if h % 2 or w % 2:
        t = F.pad(t, (0, w % 2, 0, h % 2), mode="replicate")
    return F.avg_pool2d(t, 2)


# The ground prior's weight at the coarsest level of the pyramid, as a share of trusted pixels: a cell there
# takes the tile's estimate in proportion GROUND_CELL_WEIGHT against its own trusted share, and the tile's
# estimate takes the typical ground in proportion GROUND_TILE_WEIGHT against the whole tile's trusted share.
# Chosen on validation data (docs/model.md, "A ground prior").
GROUND_CELL_WEIGHT, GROUND_TILE_WEIGHT = 0.003, 0.03


def _coarsest_with_ground(num: torch.Tensor, den: torch.Tensor, ground: torch.Tensor) -> torch.Tensor:
    """The coarsest level's estimate with a typical ground as the last resort. A soft cloud weight never
    reaches 1, so a tile that is all cloud still "trusts" its pixels by 1e-5 or so, and the plain
    normalisation then fills it with the cloud itself. Here every cell leans on the tile's estimate and
    the tile's estimate on ``ground`` by small pseudo-weights: near the ground a tile sees they change
    nothing that matters; far from it (a sixth of the tile clear) the fill moves a sixth of the way towards
    the typical ground; where the tile sees none, the fill is that ground."""
    ground = ground.reshape(-1, num.shape[1], 1, 1)
    cells = num.shape[-2] * num.shape[-1]
    tile = ((num.sum(dim=(-2, -1), keepdim=True) + GROUND_TILE_WEIGHT * cells * ground)
            / (den.sum(dim=(-2, -1), keepdim=True) + GROUND_TILE_WEIGHT * cells))
    return (num + GROUND_CELL_WEIGHT * tile) / (den + GROUND_CELL_WEIGHT)


def push_pull_fill(x: torch.Tensor, clear: torch.Tensor, min_size: int = 2,
                   ground: torch.Tensor | None = None) -> torch.Tensor:
    """``clear·x + (1 − clear)·fill(x)``, the fill coming from the clear pixels at every scale.

    ``x`` (B, C, H, W); ``clear`` (B, 1, H, W) in [0, 1] (1 = trust this pixel). Where no pixel of the
    image is clear the result is the unweighted image mean, or ``ground`` where given (see
    ``push_pull_composite``).
    """
    return push_pull_composite(x[:, None], clear[:, None], min_size, ground)


def push_pull_composite(values: torch.Tensor, weights: torch.Tensor, min_size: int = 2,
                        ground: torch.Tensor | None = None) -> torch.Tensor:
    """Push-pull over several sources: ``Σ w_l·x_l + (1 − Σ w_l)·fill``, the fill coming from every
    source's trusted pixels at every scale (the temporal prior of a stack: the reference's clear
    pixels, then what the context dates see, then the spatial completion).

    ``values`` (B, L, C, H, W); ``weights`` (B, L, 1, H, W), each in [0, 1] with ``Σ_l w_l <= 1`` per
    pixel. Where nothing is trusted nearby, the mean of the trusted pixels; where nothing is trusted
    at all, the mean of source 0 — or, with ``ground`` ((B or 1, C) typical clear ground, the mean
    ground under the clouds of the training data), that ground: see ``_coarsest_with_ground``.
    """
    weights = weights.to(values.dtype).clamp(0.0, 1.0)
    nums, dens = [(values * weights).sum(dim=1)], [weights.sum(dim=1).clamp(max=1.0)]
    while min(nums[-1].shape[-2:]) > min_size:
        nums.append(_down(nums[-1]))
        dens.append(_down(dens[-1]))
    num, den = nums[-1], dens[-1]
    if ground is not None:
        est = _coarsest_with_ground(num, den, ground.to(num.dtype))
    else:
        # coarsest level: normalised value where anything was trusted; elsewhere the trusted pixels' mean
        # over the whole image, or source 0's plain mean where nothing at all was trusted
        total_num, total_den = num.sum(dim=(-2, -1), keepdim=True), den.sum(dim=(-2, -1), keepdim=True)
        fallback = torch.where(total_den > _EPS, total_num / total_den.clamp_min(_EPS),
                               values[:, 0].mean(dim=(-2, -1), keepdim=True))
        est = torch.where(den > _EPS, num / den.clamp_min(_EPS), fallback.expand_as(num))
    for num, den in zip(reversed(nums[:-1]), reversed(dens[:-1]), strict=True):
        up = F.interpolate(est, size=num.shape[-2:], mode="bilinear", align_corners=False)
        est = num + (1.0 - den) * up  # = den·(num/den) + (1 − den)·up, without dividing by a small den
    return est


# the least share of a tile seen clear in both dates for a regression (below it the date is left as it is)
HARMONISE_MIN_SHARED = 0.02
HARMONISE_GAIN = (0.5, 2.0)


def harmonise_date(ref: torch.Tensor, ref_clear: torch.Tensor, img: torch.Tensor, img_clear: torch.Tensor,
                   min_shared: float = HARMONISE_MIN_SHARED) -> torch.Tensor:
    """A context date ``img`` (B, C, H, W) brought to the reference's radiometry: per band, the linear
    gain and offset that map the date onto the reference over the pixels both see clear (weights
    ``ref_clear · img_clear``, each (B, 1, H, W)) — relative radiometric normalisation, the classical
    answer to sun angle, phenology and processing differences between dates (8-bit mosaics of other
    years most of all). Gains are kept within ``HARMONISE_GAIN``; a tile with less than ``min_shared`` of
    its pixels clear in both keeps the date as it is (nothing to regress on: a fully cloudy reference)."""
    weight = (ref_clear * img_clear).to(img.dtype)
    total = weight.sum(dim=(-2, -1), keepdim=True)
    norm = total.clamp_min(_EPS)
    img_mean = (weight * img).sum(dim=(-2, -1), keepdim=True) / norm
    ref_mean = (weight * ref).sum(dim=(-2, -1), keepdim=True) / norm
    img_dev = img - img_mean
    covariance = (weight * img_dev * (ref - ref_mean)).sum(dim=(-2, -1), keepdim=True) / norm
    variance = (weight * img_dev * img_dev).sum(dim=(-2, -1), keepdim=True) / norm
    gain = (covariance / variance.clamp_min(1e-8)).clamp(*HARMONISE_GAIN)
    harmonised = img_dev * gain + ref_mean
    enough = total >= min_shared * img.shape[-2] * img.shape[-1]
    return torch.where(enough, harmonised, img)


# the temporal haze test: a reference pixel brighter in red, green and blue than the clear context dates
# counts as cloud from a blue excess of HAZE_BLUE_START, fully from HAZE_BLUE_START + HAZE_BLUE_WIDTH
HAZE_BLUE_START, HAZE_BLUE_WIDTH, HAZE_SMOOTH = 0.015, 0.02, 5


def temporal_haze(ref: torch.Tensor, cloud: torch.Tensor, context, start: float = HAZE_BLUE_START,
                  width: float = HAZE_BLUE_WIDTH, smooth: int = HAZE_SMOOTH) -> torch.Tensor:
    """The reference's cloud weight ``cloud`` (B, 1, H, W) raised where the stack shows haze the score
    missed: the multi-temporal cloud test of MAJA / Tmask. Against the clear-weighted mean of the context
    dates ``[(image (B, C, H, W), clear weight (B, 1, H, W)), ...]``, a reference pixel brighter in red,
    green and blue (bands 0-2: the order of the bundled models and of the flow's input) whose blue
    excess passes ``start`` is haze or thin cloud (scattering brightens the visible bands, blue most;
    a change of the ground rarely brightens all three). The weight rises linearly over ``width``, is
    averaged over ``smooth`` pixels (no speckle) and counts only where the context is clear (at least
    0.9 of a date). Reflectance only: 8-bit exports of other dates carry other stretches."""
    clears = torch.stack([c.to(ref.dtype) for _, c in context], dim=1)
    images = torch.stack([img for img, _ in context], dim=1)
    total = clears.sum(dim=1)
    context_mean = (clears * images).sum(dim=1) / total.clamp_min(_EPS)
    seen = ((total - 0.5) / 0.4).clamp(0.0, 1.0)
    excess = ref[:, :3] - context_mean[:, :3]
    brighter = (excess.amin(dim=1, keepdim=True) > 0).to(ref.dtype)
    haze = ((excess[:, 2:3] - start) / width).clamp(0.0, 1.0) * brighter
    if smooth > 1:
        haze = F.avg_pool2d(haze, smooth, 1, smooth // 2, count_include_pad=False)
    return torch.maximum(cloud, haze * seen)


def choose_context_dates(cloud: torch.Tensor, count: int, days: torch.Tensor | None = None) -> torch.Tensor:
    """The ``count`` context dates (indexes ``1..N-1``, ``(B, count)``) of a stack that see most of what
    the reference cannot, from every date's cloud weight ``(B, N, 1, H, W)`` (date 0 the reference).

    Greedy cover: each pick is the date whose clear pixels cover most of what the reference and the
    dates picked so far leave cloudy. Ties (nothing left to cover, or dates that cover the same) go to
    the date nearest the reference in time when ``days`` (``(N,)`` acquisition days, NaN where unknown)
    says, then to the clearest date, then to the earlier one in the stack's order.
    """
    b, n = cloud.shape[:2]
    if not 0 < count < n:
        raise ValueError(f"choose 1 to {n - 1} context dates of {n}, not {count}")
    unseen = cloud[:, 0].flatten(1).float()  # (B, HW): still cloudy in everything chosen
    clear = 1.0 - cloud[:, 1:].flatten(2).float()  # (B, N-1, HW)
    # tie-breaks below any real gain of more than 0.1 % of the tile: nearness in time (1 on the
    # reference's day, 1/2 at 16 days, a Landsat revisit), then clearness
    tie_break = 1e-4 * clear.mean(dim=2)
    if days is not None:
        apart = (days[1:] - days[0]).abs().to(clear.device, clear.dtype)
        nearness = torch.nan_to_num(1.0 / (1.0 + apart / 16.0), nan=0.0)
        tie_break = tie_break + 1e-3 * nearness[None]
    taken = torch.zeros(b, n - 1, dtype=torch.bool, device=cloud.device)
    rows = torch.arange(b, device=cloud.device)
    picks = []
    for _ in range(count):
        gain = torch.einsum("bp,bnp->bn", unseen, clear) / unseen.shape[1] + tie_break
        pick = gain.masked_fill(taken, -1.0).argmax(dim=1)
        taken[rows, pick] = True
        unseen = unseen * (1.0 - clear[rows, pick])
        picks.append(pick + 1)
    return torch.stack(picks, dim=1)
