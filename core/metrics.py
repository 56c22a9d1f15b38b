"""Image-quality metrics (PSNR, SSIM, MAE) and a raster-vs-raster evaluation.

Pure numpy (float64). Arrays may also be torch tensors (they are converted with ``np.asarray``).
Conventions, chosen to match scikit-image so results can be checked against it:

* ``psnr = 10·log10(data_range² / MSE)`` over every element given (all bands jointly), or over the
  pixels where ``mask`` is true.
* ``ssim`` is computed per band and averaged over bands. ``window="gaussian"`` is the Wang et al.
  (2004) 11×11 Gaussian window, sigma 1.5, population covariance (skimage
  ``gaussian_weights=True, use_sample_covariance=False``); ``window="uniform"`` is the 7×7 box with
  sample covariance (skimage's defaults). Only positions whose whole window lies inside the image
  are averaged (the same as skimage's border crop).
* ``mae`` is the mean absolute error.

Named protocols (``apply_protocol``) turn a prediction / reference pair into the values on which a
published comparison computes its numbers (see ``PROTOCOLS``); every report says which one it used.

``evaluate_rasters`` compares two rasters on the same grid (the QGIS ``viser:evaluate`` algorithm
calls it). It reads them itself with rasterio, band by band, and converts digital numbers to
reflectance with an explicit ``scale``/``offset`` or the pipeline's own sensor detection
(``core.sensors.resolve``: the same scaling a cloud-removal run would use; see ``scaling_for``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = [
    "PROTOCOLS",
    "psnr",
    "psnr_from_mse",
    "ssim",
    "mae",
    "ssim_map",
    "apply_protocol",
    "protocol_metrics",
    "scaling_for",
    "evaluate_rasters",
]

PROTOCOLS = {
    "clean": "reflectance clipped to [0, 1], no stretch, all model bands; PSNR over all bands jointly "
    "(data range 1), SSIM 11x11 Gaussian (sigma 1.5) per band averaged, MAE in reflectance; "
    "per-image values averaged over images",
    "emrdm-cuhk": "CUHK-CR protocol of EMRDM: images at 256x256 as uint8 (reflectance x 255, rounded, "
    "clipped to 0..255); PSNR over all 4 bands jointly (data range 255); SSIM per band with a 7x7 "
    "uniform window (sample covariance) averaged over bands; MAE in 0..1 units",
    "emrdm-sen2mtc": "Sen2_MTC_New protocol of EMRDM: RGB only, each channel clipped to [0, 2000] DN "
    "(reflectance [0, 0.2]) then min-max stretched to [0, 1] per image (prediction and target "
    "separately); PSNR = 20 log10(1 / RMSE); SSIM 11x11 Gaussian window (sigma 1.5) per band "
    "averaged; MAE on the stretched values",
}



def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _broadcast_mask(mask, shape) -> np.ndarray:
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.dtype != bool:
        mask = mask > 0.5
    if mask.shape != tuple(shape):
        mask = np.broadcast_to(mask, shape)
    return mask


def _masked_mean(values: np.ndarray, mask) -> float:
    """Mean over all elements, or over the masked pixels (NaN when the mask selects none)."""
    if mask is None:
        return float(values.mean())
    m = _broadcast_mask(mask, values.shape)
    return float(values[m].mean()) if m.any() else float("nan")


def mae(prediction, reference, mask=None) -> float:
    """Mean absolute error over all elements (or the masked pixels; the mask broadcasts over bands)."""
    p, r = _as_array(prediction), _as_array(reference)
    if p.shape != r.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {r.shape}")
    return _masked_mean(np.abs(p - r), mask)


def mse(prediction, reference, mask=None) -> float:
    p, r = _as_array(prediction), _as_array(reference)
    if p.shape != r.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {r.shape}")
    return _masked_mean((p - r) ** 2, mask)


def psnr_from_mse(err: float, data_range: float) -> float:
    if math.isnan(err):
        return float("nan")
    if err <= 0:
        return float("inf")
    return float(10.0 * math.log10(data_range**2 / err))


def psnr(prediction, reference, data_range: float = 1.0, mask=None) -> float:
    """PSNR in dB over all elements jointly (or the masked pixels). ``inf`` for identical inputs,
    ``nan`` for an empty mask."""
    return psnr_from_mse(mse(prediction, reference, mask), data_range)


def _gaussian_kernel(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _filter_valid(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable correlation of a 2-D image with the 1-D kernel ``k`` on both axes, 'valid' region."""
    n = len(k)
    h, w = img.shape
    out = np.zeros((h - n + 1, w), dtype=np.float64)
    for i, kv in enumerate(k):
        out += kv * img[i : i + h - n + 1, :]
    out2 = np.zeros((h - n + 1, w - n + 1), dtype=np.float64)
    for i, kv in enumerate(k):
        out2 += kv * out[:, i : i + w - n + 1]
    return out2


def _window(window: str, win_size: int | None, sigma: float):
    if window == "gaussian":
        k = _gaussian_kernel(sigma) if win_size is None else None
        if k is None:
            x = np.arange(win_size, dtype=np.float64) - (win_size - 1) / 2
            k = np.exp(-0.5 * (x / sigma) ** 2)
            k /= k.sum()
        return k, False
    if window == "uniform":
        n = 7 if win_size is None else int(win_size)
        return np.full(n, 1.0 / n), True
    raise ValueError(f"unknown SSIM window {window!r}: use 'gaussian' or 'uniform'")


def ssim_map(prediction, reference, data_range: float = 1.0, window: str = "gaussian",
             win_size: int | None = None, sigma: float = 1.5, sample_covariance: bool | None = None):
    """SSIM map of two 2-D images over the 'valid' region (every window fully inside)."""
    x, y = _as_array(prediction), _as_array(reference)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"ssim_map needs two 2-D images of the same shape, got {x.shape} and {y.shape}")
    k, default_sample_cov = _window(window, win_size, sigma)
    n = len(k)
    if min(x.shape) < n:
        raise ValueError(f"image {x.shape} smaller than the {n}x{n} SSIM window")
    use_sample = default_sample_cov if sample_covariance is None else sample_covariance
    npix = n * n
    cov_norm = npix / (npix - 1) if use_sample else 1.0
    ux, uy = _filter_valid(x, k), _filter_valid(y, k)
    uxx, uyy, uxy = _filter_valid(x * x, k), _filter_valid(y * y, k), _filter_valid(x * y, k)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    a1, a2 = 2 * ux * uy + c1, 2 * vxy + c2
    b1, b2 = ux**2 + uy**2 + c1, vx + vy + c2
    return (a1 * a2) / (b1 * b2)


def ssim(prediction, reference, data_range: float = 1.0, window: str = "gaussian", win_size: int | None = None,
         sigma: float = 1.5, sample_covariance: bool | None = None, valid=None) -> float:
    """Mean SSIM. 2-D images, or (bands, H, W) arrays: SSIM per band, averaged over bands.

    ``valid`` (optional, (H, W) bool): average only over windows made entirely of valid pixels.
    """
    x, y = _as_array(prediction), _as_array(reference)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    if x.ndim == 2:
        x, y = x[None], y[None]
    if x.ndim != 3:
        raise ValueError(f"ssim expects (H, W) or (bands, H, W), got shape {x.shape}")
    weights = None
    if valid is not None:
        k, _ = _window(window, win_size, sigma)
        n = len(k)
        box = _filter_valid(np.asarray(valid, dtype=np.float64), np.full(n, 1.0 / n))
        weights = box > 1 - 1e-9
        if not weights.any():
            return float("nan")
    values = []
    for b in range(x.shape[0]):
        m = ssim_map(x[b], y[b], data_range, window, win_size, sigma, sample_covariance)
        values.append(float(m[weights].mean()) if weights is not None else float(m.mean()))
    return float(np.mean(values))


# ---------------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------------


def _minmax(a: np.ndarray) -> np.ndarray:
    """Min-max stretch of each channel of a (C, H, W) array to [0, 1]."""
    lo = a.min(axis=(-2, -1), keepdims=True)
    hi = a.max(axis=(-2, -1), keepdims=True)
    return (a - lo) / np.maximum(hi - lo, 1e-12)


def apply_protocol(prediction, reference, protocol: str = "clean", rgb=(0, 1, 2)):
    """Values a protocol computes its metrics on.

    Inputs are reflectance arrays (C, H, W). Returns ``(p, r, settings)`` where settings holds
    ``data_range``, ``window``, ``win_size`` and ``mae_scale`` (divides MAE back to 0..1 units).
    ``rgb`` gives the red, green, blue channel indexes for ``emrdm-sen2mtc``.
    """
    p, r = _as_array(prediction), _as_array(reference)
    if p.shape != r.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {r.shape}")
    if protocol == "clean":
        return np.clip(p, 0, 1), np.clip(r, 0, 1), dict(data_range=1.0, window="gaussian", win_size=None,
                                                          mae_scale=1.0)
    if protocol == "emrdm-cuhk":
        q = lambda a: np.clip(np.round(a * 255.0), 0, 255)  # noqa: E731
        return q(p), q(r), dict(data_range=255.0, window="uniform", win_size=7, mae_scale=255.0)
    if protocol == "emrdm-sen2mtc":
        idx = list(rgb)
        pp = _minmax(np.clip(p[idx] * 1e4, 0, 2000))
        rr = _minmax(np.clip(r[idx] * 1e4, 0, 2000))
        return pp, rr, dict(data_range=1.0, window="gaussian", win_size=None, mae_scale=1.0)
    raise ValueError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")


def protocol_metrics(prediction, reference, protocol: str = "clean", mask=None, rgb=(0, 1, 2)) -> dict:
    """PSNR / SSIM / MAE of one (C, H, W) image under a protocol.

    With ``mask`` ((H, W), true = cloudy) also ``psnr_cloudy``/``psnr_clear`` and ``mae_cloudy``/
    ``mae_clear`` (nan when a set is empty) and ``cloud_fraction``.
    """
    p, r, s = apply_protocol(prediction, reference, protocol, rgb)
    out = {
        "psnr": psnr(p, r, s["data_range"]),
        "ssim": ssim(p, r, s["data_range"], s["window"], s["win_size"]),
        "mae": mae(p, r) / s["mae_scale"],
    }
    if mask is not None:
        m = np.asarray(_as_array(mask) > 0.5).reshape(p.shape[-2:])
        out["cloud_fraction"] = float(m.mean())
        out["psnr_cloudy"] = psnr(p, r, s["data_range"], mask=m)
        out["psnr_clear"] = psnr(p, r, s["data_range"], mask=~m)
        out["mae_cloudy"] = mae(p, r, mask=m) / s["mae_scale"]
        out["mae_clear"] = mae(p, r, mask=~m) / s["mae_scale"]
    return out


# ---------------------------------------------------------------------------------------------
# Rasters
# ---------------------------------------------------------------------------------------------


def scaling_for(dataset, path, sensor: str = "auto", scale: float | None = None, offset: float | None = None):
    """(scale, offset, rule) turning the digital numbers of an open raster into reflectance.

    The pipeline's own detection (``core.sensors.resolve``), so that an evaluation reads a file the
    way a cloud-removal run reads it: explicit ``scale``/``offset`` win, then a named ``sensor``, then
    what the file says (band scale/offset metadata, Sentinel-2 / Landsat tags and names, the data type).
    """
    from .raster import band_facts
    from .sensors import formula, resolve

    resolution = resolve(band_facts(dataset, path), sensor, scale=scale, offset=offset)
    rule = f"{resolution.sensor}: {formula(resolution.scale, resolution.offset)}"
    return resolution.scale, resolution.offset, rule


def _grid(ds):
    return ds.width, ds.height, ds.transform, ds.crs


def evaluate_rasters(prediction, reference, bands=None, scale=None, offset=None, sensor="auto",
                     protocol="clean", mask=None, reference_bands=None) -> dict:
    """Compare a prediction raster with a reference raster on the same grid.

    ``bands``: 1-based band indexes compared (default: every band; the same indexes in both files
    unless ``reference_bands`` is given). Digital numbers become reflectance via ``scaling_for``
    (applied to each file with its own data type unless scale/offset are explicit). Pixels that are
    nodata (or not finite) in either file in any compared band are skipped. ``mask``: optional
    raster on the same grid, non-zero = cloudy: adds cloudy-pixel and clear-pixel PSNR / MAE.

    Returns a dict: ``protocol``, ``pixels`` (valid pixels compared), ``psnr``, ``ssim``, ``mae``
    (overall: PSNR on the MSE pooled over bands, SSIM and MAE averaged over bands), ``per_band``
    (list of dicts with band, psnr, ssim, mae) and the scaling used. Under ``clean`` the values are
    reflectance clipped to [0, 1]; under ``emrdm-cuhk`` reflectance x 255 rounded; under
    ``emrdm-sen2mtc`` each band clipped to [0, 0.2] and min-max stretched (bands should be R, G, B).
    """
    try:
        import rasterio
    except ImportError as exc:  # pragma: no cover
        from .errors import DependencyError

        raise DependencyError("rasterio is needed to read rasters: install python3-rasterio") from exc
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    paths = {"prediction": Path(prediction), "reference": Path(reference)}
    for what, path in paths.items():
        if not path.exists():
            raise InputError(f"{what} raster not found: {path}")
    with rasterio.open(paths["prediction"]) as pds, rasterio.open(paths["reference"]) as rds:
        pw, ph, pt, pcrs = _grid(pds)
        rw, rh, rt, rcrs = _grid(rds)
        if (pw, ph) != (rw, rh):
            raise InputError(
                f"the rasters are not on the same grid: prediction is {pw}x{ph} pixels, reference {rw}x{rh}; "
                "resample one onto the other's grid first"
            )
        if not pt.almost_equals(rt, precision=1e-6 * max(abs(pt.a), 1e-12)):
            raise InputError(
                f"the rasters are not on the same grid: transforms differ ({tuple(pt)[:6]} vs {tuple(rt)[:6]}); "
                "resample one onto the other's grid first"
            )
        if pcrs and rcrs and pcrs != rcrs:
            raise InputError(f"the rasters use different CRS ({pcrs} vs {rcrs}); reproject one first")
        bands = list(range(1, pds.count + 1)) if bands is None else [int(b) for b in bands]
        ref_bands = bands if reference_bands is None else [int(b) for b in reference_bands]
        if len(ref_bands) != len(bands):
            raise InputError("bands and reference_bands must have the same length")
        for b in bands:
            if not 1 <= b <= pds.count:
                raise InputError(f"band {b} not in the prediction raster (it has {pds.count} bands)")
        for b in ref_bands:
            if not 1 <= b <= rds.count:
                raise InputError(f"band {b} not in the reference raster (it has {rds.count} bands)")
        ps, po, prule = scaling_for(pds, paths["prediction"], sensor, scale, offset)
        rs, ro, rrule = scaling_for(rds, paths["reference"], sensor, scale, offset)

        valid = np.ones((ph, pw), dtype=bool)
        pred_stack, ref_stack = [], []
        for pb, rb in zip(bands, ref_bands, strict=True):
            a = pds.read(pb).astype(np.float64)
            c = rds.read(rb).astype(np.float64)
            for arr, ds, b in ((a, pds, pb), (c, rds, rb)):
                valid &= np.isfinite(arr)
                nd = ds.nodatavals[b - 1]
                if nd is not None and not (isinstance(nd, float) and math.isnan(nd)):
                    valid &= arr != nd
            pred_stack.append(a * ps + po)
            ref_stack.append(c * rs + ro)
        cloud = None
        if mask is not None:
            with rasterio.open(mask) as mds:
                if (mds.width, mds.height) != (pw, ph):
                    raise InputError(f"the mask is {mds.width}x{mds.height} pixels, the rasters {pw}x{ph}")
                mk = mds.read(1)
                cloud = (mk != 0) & np.isfinite(mk)
                if mds.nodata is not None:
                    valid &= mk != mds.nodata

    npx = int(valid.sum())
    if npx == 0:
        raise InputError("no valid pixel to compare: every pixel is nodata in one of the rasters")
    pred = np.stack(pred_stack)
    ref = np.stack(ref_stack)
    pred[:, ~valid] = 0.0
    ref[:, ~valid] = 0.0
    p, r, s = apply_protocol(pred, ref, protocol, rgb=tuple(range(min(3, len(bands)))))
    if protocol == "emrdm-sen2mtc":
        bands, ref_bands = bands[:3], ref_bands[:3]
    dr = s["data_range"]
    per_band = []
    sq_total, abs_total = 0.0, 0.0
    ssim_window = dict(window=s["window"], win_size=s["win_size"])
    small = min(ph, pw) < (7 if s["window"] == "uniform" else 11)
    for i, b in enumerate(bands):
        d = p[i][valid] - r[i][valid]
        sq, ab = float(np.sum(d * d)), float(np.sum(np.abs(d)))
        sq_total += sq
        abs_total += ab
        band_ssim = float("nan") if small else ssim(p[i], r[i], dr, valid=valid, **ssim_window)
        per_band.append({
            "band": b,
            "reference_band": ref_bands[i],
            "psnr": psnr_from_mse(sq / npx, dr),
            "ssim": band_ssim,
            "mae": ab / npx / s["mae_scale"],
        })
    result = {
        "protocol": protocol,
        "protocol_description": PROTOCOLS[protocol],
        "pixels": npx,
        "bands": bands,
        "psnr": psnr_from_mse(sq_total / (npx * len(bands)), dr),
        "ssim": float(np.nanmean([b["ssim"] for b in per_band])) if not small else float("nan"),
        "mae": abs_total / (npx * len(bands)) / s["mae_scale"],
        "per_band": per_band,
        "scaling": {"prediction": [ps, po, prule], "reference": [rs, ro, rrule]},
    }
    if cloud is not None:
        for name, sel in (("cloudy", cloud & valid), ("clear", ~cloud & valid)):
            n = int(sel.sum())
            result[f"pixels_{name}"] = n
            if n == 0:
                result[f"psnr_{name}"] = float("nan")
                result[f"mae_{name}"] = float("nan")
                continue
            d = p[:, sel] - r[:, sel]
            result[f"psnr_{name}"] = psnr_from_mse(float(np.mean(d * d)), dr)
            result[f"mae_{name}"] = float(np.mean(np.abs(d))) / s["mae_scale"]
    return result
