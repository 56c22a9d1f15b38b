"""Figures written during training and evaluation: learning curves and before/after sheets."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

_LOG = logging.getLogger(__name__)


def _plt():
    """pyplot, or None where matplotlib is missing (a lent GPU machine's Python): training goes on
    without its figures there."""
    try:
        import matplotlib
    except ImportError:
        _LOG.warning("matplotlib is not installed: no figure written")
        return None

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def display_rgb(img: np.ndarray, rgb, lo_hi=None) -> tuple[np.ndarray, tuple[float, float]]:
    """(C, H, W) reflectance -> (H, W, 3) in [0, 1] with a 2-98 % stretch (``lo_hi`` reuses one)."""
    a = np.asarray(img, dtype=np.float64)[list(rgb)]
    if lo_hi is None:
        lo, hi = np.percentile(a, 2), np.percentile(a, 98)
        if hi - lo < 1e-6:
            hi = lo + 1e-6
        lo_hi = (float(lo), float(hi))
    lo, hi = lo_hi
    return np.clip((a - lo) / (hi - lo), 0, 1).transpose(1, 2, 0), lo_hi


def save_sheet(path, rows, rgb=(0, 1, 2), title: str = "") -> Path | None:
    """A before/after sheet: one row per sample, columns cloudy | output | clear reference | score |
    mask. ``rows``: dicts with ``cloudy``, ``output``, ``target`` (C, H, W), optional ``score`` and
    ``mask`` (H, W), optional ``label``. The three images share the reference's stretch."""
    plt = _plt()
    if plt is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["cloudy input", "output", "clear reference", "cloud score", "mask"]
    n = max(1, len(rows))
    fig, axes = plt.subplots(n, len(cols), figsize=(3.0 * len(cols), 3.0 * n + 0.4), squeeze=False)
    for i, r in enumerate(rows):
        tgt, lo_hi = display_rgb(r["target"], rgb)
        imgs = [display_rgb(r["cloudy"], rgb, lo_hi)[0], display_rgb(r["output"], rgb, lo_hi)[0], tgt]
        for j in range(3):
            axes[i, j].imshow(imgs[j])
        for j, key in ((3, "score"), (4, "mask")):
            if r.get(key) is not None:
                axes[i, j].imshow(np.asarray(r[key]), cmap="magma", vmin=0, vmax=1)
        if r.get("label"):
            axes[i, 0].set_ylabel(r["label"], fontsize=7)
        for j in range(len(cols)):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(cols[j], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.0 * n + 0.4)) if title else None)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _col(rows, key):
    xs, ys = [], []
    for r in rows:
        try:
            x, y = float(r["step"]), float(r[key])
        except (KeyError, ValueError, TypeError):
            continue
        if np.isfinite(y):
            xs.append(x)
            ys.append(y)
    return xs, ys


def save_curves(run_dir, path=None) -> Path | None:
    """``curves.png`` from ``train_log.csv`` and ``val_log.csv`` of a run folder."""
    plt = _plt()
    if plt is None:
        return None
    run_dir = Path(run_dir)
    path = Path(path) if path else run_dir / "curves.png"
    train, val = _read_csv(run_dir / "train_log.csv"), _read_csv(run_dir / "val_log.csv")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = (
        (train, [(k, k) for k in ("loss", "l1", "fft", "perceptual", "score")], "training loss (per logging interval)", {}),
        (val, [("psnr", "model"), ("input_psnr", "cloudy input"), ("psnr_cloudy", "model, cloudy px"),
               ("input_psnr_cloudy", "input, cloudy px"), ("psnr_clear", "model, clear px")],
         "validation PSNR (dB)", {"marker": "o"}),
        (val, [("ssim", "model"), ("input_ssim", "cloudy input")], "validation SSIM", {"marker": "o"}),
    )
    for ax, (rows, series, title, style) in zip(axes, panels, strict=True):
        for key, label in series:
            xs, ys = _col(rows, key)
            if xs:
                ax.plot(xs, ys, label=label, **style)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
