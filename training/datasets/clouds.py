"""Synthetic clouds and shadows composited onto clear imagery.

Physical picture (per pixel, per band b):

    ground'  = ground * (1 - S * d_b)                      # cloud shadow: S in [0, 1], d_b ~ (λ/842)^0.25
    thick    = ground' * (1 - A) + A * c_b                 # opaque cloud of opacity A, colour c_b
    cloudy   = thick * (1 - a * t_b) + a * t_b * h_b       # thin cloud / haze of opacity a

* Shapes: ``A`` and ``a`` are soft-thresholded fields, either procedural fractal noise (random phase,
  power spectrum 1/f^beta) or real s2cloudless cloud-probability maps (``CLP.npy`` of eo-learn: a
  random window, zoomed, rotated, with fractal detail added). Coverage, edge softness and opacity
  are drawn per date.
* Colours: thick clouds are bright and nearly grey in the visible / NIR (a slight blue excess),
  darker in SWIR (swir1 x0.8, swir2 x0.55), dim in the water-vapour band, and bright in cirrus
  only for a share of them; brightness has a fractal texture. Thin clouds scatter more at short
  wavelengths: their opacity is ``a * (560/λ)^k`` (k in 0.3..1.2, an Angstrom-like law), capped at 1.
* Shadows: the thick-cloud opacity shifted along a random sun direction by 3-15 % of the patch,
  blurred, darkening direct light (NIR most, blue least: diffuse sky light is bluer).
* Radiometry: ``reflectance`` sources get cloud reflectance 0.3..0.85; ``display`` sources (8-bit
  stretched imagery / 255) get near-white clouds (0.78..1), are clipped to [0, 1] and re-quantised to
  1/255.

Guarantee: pixels outside the returned ``mask`` are bit-identical to the input; the input array is
never modified. Everything is drawn from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .common import WAVELENGTH_NM, _box_mean, apply_geometry


@dataclass
class CloudConfig:
    """Probabilities and ranges of the cloud generator (every field can be set in the YAML config
    under ``clouds:``)."""

    p_thick: float = 0.75            # a date gets opaque clouds
    p_thin: float = 0.5              # a date gets thin clouds / haze (independent of thick)
    p_shadow: float = 0.6            # thick clouds cast a visible shadow
    p_clp: float = 0.5               # shape from a real CLP map (when maps are loaded) vs fractal noise
    thick_coverage: tuple[float, float] = (0.05, 0.7)
    thick_edge: tuple[float, float] = (0.04, 0.25)       # soft-edge width, in quantiles of the field
    thin_coverage: tuple[float, float] = (0.3, 1.0)
    thin_opacity: tuple[float, float] = (0.1, 0.6)
    thin_exponent: tuple[float, float] = (0.3, 1.2)
    fractal_beta: tuple[float, float] = (2.2, 3.4)       # spectral slope: larger = smoother clouds
    brightness_reflectance: tuple[float, float] = (0.3, 0.85)
    brightness_display: tuple[float, float] = (0.78, 1.0)
    thin_brightness_reflectance: tuple[float, float] = (0.2, 0.5)
    thin_brightness_display: tuple[float, float] = (0.7, 0.95)
    shadow_strength: tuple[float, float] = (0.3, 0.75)
    shadow_shift: tuple[float, float] = (0.03, 0.15)     # fraction of the patch size
    clp_zoom: tuple[float, float] = (1.0, 4.0)
    clp_threshold: tuple[float, float] = (0.3, 0.6)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> CloudConfig:
        d = dict(d or {})
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "extra"}
        unknown = {k: v for k, v in d.items() if k not in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown cloud settings: {sorted(unknown)}")
        for k, v in known.items():
            if isinstance(v, list):
                known[k] = tuple(v)
        return cls(**known)


def _u(rng, r) -> float:
    return float(rng.uniform(r[0], r[1]))


def fractal_field(rng: np.random.Generator, h: int, w: int, beta: float) -> np.ndarray:
    """Fractal noise in [0, 1] with a roughly uniform histogram: white noise shaped by 1/f^beta."""
    noise = rng.standard_normal((h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    spec = np.fft.rfft2(noise) / f ** (beta / 2)
    spec[0, 0] = 0.0
    field_ = np.fft.irfft2(spec, s=(h, w))
    z = (field_ - field_.mean()) / (field_.std() + 1e-12)
    # Gaussian CDF (tanh approximation, no scipy): a roughly uniform histogram in [0, 1].
    return 0.5 * (1.0 + np.tanh(0.7978845608 * (z + 0.044715 * z**3)))


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy().astype(np.float64)


def load_cloud_shapes(path, min_cover: float = 0.03, max_cover: float = 0.97) -> np.ndarray:
    """Real cloud-probability maps (eo-learn ``CLP.npy``: (T, H, W, 1) float in [0, 1]) -> (N, H, W),
    keeping the partly cloudy dates (fraction of p > 0.4 between ``min_cover`` and ``max_cover``)."""
    a = np.load(Path(path), allow_pickle=False)
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 4:
        a = a[..., 0]
    if a.ndim != 3:
        raise ValueError(f"{path}: expected (T, H, W[, 1]) cloud probabilities, got {a.shape}")
    if a.max() > 1.5:  # stored as 0..255
        a = a / 255.0
    cover = (a > 0.4).mean(axis=(1, 2))
    keep = (cover >= min_cover) & (cover <= max_cover)
    if not keep.any():
        raise ValueError(f"{path}: no partly cloudy map to use as a cloud shape")
    return a[keep]


class CloudGenerator:
    """Draws clouds and shadows for one image; see the module docstring."""

    def __init__(self, config: CloudConfig | dict | None = None, shapes: np.ndarray | None = None):
        self.config = config if isinstance(config, CloudConfig) else CloudConfig.from_dict(config)
        self.shapes = shapes

    # ---------------------------------------------------------------- shapes
    def _shape_field(self, rng, h, w) -> tuple[np.ndarray, bool]:
        c = self.config
        beta = _u(rng, c.fractal_beta)
        if self.shapes is not None and len(self.shapes) and rng.random() < c.p_clp:
            m = self.shapes[int(rng.integers(0, len(self.shapes)))]
            zoom = _u(rng, c.clp_zoom)
            sh = max(8, min(m.shape[0], int(round(h / zoom))))
            sw = max(8, min(m.shape[1], int(round(w / zoom))))
            r0 = int(rng.integers(0, m.shape[0] - sh + 1))
            c0 = int(rng.integers(0, m.shape[1] - sw + 1))
            p = _resize(m[r0 : r0 + sh, c0 : c0 + sw], h, w)
            p = apply_geometry(p, (int(rng.integers(0, 4)), bool(rng.integers(0, 2))))
            detail = fractal_field(rng, h, w, 2.2) - 0.5
            return np.clip(p + 0.15 * detail, 0.0, 1.0), True
        return fractal_field(rng, h, w, beta), False

    def _opaque_alpha(self, rng, h, w) -> np.ndarray:
        c = self.config
        f, real = self._shape_field(rng, h, w)
        edge = _u(rng, c.thick_edge)
        if real:
            t = _u(rng, c.clp_threshold)
        else:
            t = float(np.quantile(f, 1.0 - _u(rng, c.thick_coverage)))
        a = np.clip((f - t) / edge, 0.0, 1.0)
        return a * a * (3 - 2 * a)  # smoothstep edge

    def _thin_alpha(self, rng, h, w) -> np.ndarray:
        c = self.config
        f = fractal_field(rng, h, w, _u(rng, c.fractal_beta) + 0.4)
        cover = _u(rng, c.thin_coverage)
        t = float(np.quantile(f, 1.0 - cover)) if cover < 1.0 else -1e-9
        edge = _u(rng, (0.2, 0.6))
        a = np.clip((f - t) / edge, 0.0, 1.0)
        return a * _u(rng, c.thin_opacity)

    # ---------------------------------------------------------------- colours
    @staticmethod
    def _spectral(band_names, thin: bool, cirrus_share: float) -> np.ndarray:
        out = []
        for b in band_names:
            lam = WAVELENGTH_NM.get(b, 665)
            if b == "swir1":
                s = 0.8
            elif b == "swir2":
                s = 0.55
            elif b == "watervapour":
                s = 0.45
            elif b == "cirrus":
                s = cirrus_share * (0.9 if thin else 0.5)
            else:
                s = 1.0 + 0.06 * (560 - lam) / 280.0
            out.append(s)
        return np.asarray(out, dtype=np.float64)

    # ---------------------------------------------------------------- main
    def generate(self, rng: np.random.Generator, image: np.ndarray, band_names, radiometry: str = "reflectance",
                 valid: np.ndarray | None = None, p_clear: float = 0.0, quantum: float | None = None) -> dict:
        """Clouds on ``image`` (C, H, W reflectance). Returns ``cloudy`` (float32, C×H×W), ``mask``
        (bool H×W: every pixel that changed may be inside, nothing outside changed), ``cloud``
        (opacity H×W in [0, 1]) and ``shadow`` (H×W in [0, 1]). With probability ``p_clear`` the date
        stays clear (empty mask)."""
        c = self.config
        img = np.asarray(image)
        C, H, W = img.shape
        display = radiometry == "display"
        zeros = np.zeros((H, W), dtype=np.float64)
        if rng.random() < p_clear:
            return {"cloudy": img.astype(np.float32, copy=True), "mask": zeros.astype(bool),
                    "cloud": zeros.astype(np.float32), "shadow": zeros.astype(np.float32)}
        thick = rng.random() < c.p_thick
        thin = rng.random() < c.p_thin
        if not thick and not thin:
            thick = True
        A = self._opaque_alpha(rng, H, W) if thick else zeros
        a = self._thin_alpha(rng, H, W) if thin else zeros

        # shadow of the opaque clouds
        S = zeros
        if thick and rng.random() < c.p_shadow and A.any():
            theta = rng.uniform(0, 2 * math.pi)
            dist = _u(rng, c.shadow_shift) * max(H, W)
            dy, dx = int(round(dist * math.sin(theta))), int(round(dist * math.cos(theta)))
            shifted = np.zeros_like(A)
            ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
            xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
            shifted[yd, xd] = A[ys, xs]
            blurred = _box_mean(shifted, int(rng.integers(1, 4))).astype(np.float64)
            S = np.clip((blurred - 0.1) / 0.9, 0.0, 1.0) * _u(rng, c.shadow_strength)

        lam = np.asarray([WAVELENGTH_NM.get(b, 665) for b in band_names], dtype=np.float64)
        cirrus_share = float(rng.uniform(0.0, 1.0))
        tint = 1.0 + rng.uniform(-0.03, 0.03, size=C)
        out = img.astype(np.float64)
        if S.any():
            dark = (lam / 842.0) ** 0.25
            out = out * (1.0 - S[None] * np.minimum(dark, 1.0)[:, None, None])
        if thick:
            lo_hi = c.brightness_display if display else c.brightness_reflectance
            b0 = _u(rng, lo_hi)
            texture = 0.85 + 0.3 * (fractal_field(rng, H, W, 2.6) - 0.5)
            colour = (b0 * texture)[None] * (self._spectral(band_names, False, cirrus_share) * tint)[:, None, None]
            out = out * (1.0 - A[None]) + A[None] * colour
        if thin:
            k = _u(rng, c.thin_exponent)
            ab = np.minimum(a[None] * ((560.0 / lam) ** k)[:, None, None], 1.0)
            lo_hi = c.thin_brightness_display if display else c.thin_brightness_reflectance
            hcol = _u(rng, lo_hi) * self._spectral(band_names, True, cirrus_share) * tint
            out = out * (1.0 - ab) + ab * hcol[:, None, None]

        mask = (A > 0) | (a > 0) | (S > 0)
        if valid is not None:
            mask &= valid
        if display:
            out = np.clip(out, 0.0, 1.0)
        else:
            out = np.maximum(out, 0.0)
        if quantum:
            out = np.round(out / quantum) * quantum
        cloudy = np.where(mask[None], out.astype(np.float32), img.astype(np.float32))
        cloud = 1.0 - (1.0 - A) * (1.0 - a)
        return {"cloudy": cloudy, "mask": mask, "cloud": (cloud * mask).astype(np.float32),
                "shadow": (S * mask).astype(np.float32)}
