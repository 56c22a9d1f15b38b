"""The bundled L1C cloud classifier: a small per-pixel network distilled from s2cloudless, shipped with the plugin.

s2cloudless's cloud mask, added to the network's cloud score, is worth +1.2 dB on real L1C pairs of unseen scenes
(docs/model.md), but it needs the ``s2cloudless`` and ``lightgbm`` packages, which QGIS's Python lacks. This
classifier (``resources/cloud/viser-l1c-cloud``, trained by ``training/distill_l1c_cloud.py``) learned
s2cloudless's probability from the same ten L1C bands, so every run on 13-band L1C gets that mask, in QGIS too,
with numpy alone. Its card holds its sha256, the feature range it was trained on and how far it agrees with
s2cloudless on held-out images. The post-processing (averaging, threshold, dilation) is s2cloudless's
(``core.s2cloudless``).

Network: features ``[r, log(max(r, 1e-4))]`` of the ten bands' TOA reflectance ``r``, clipped to the range seen in
training (so that an unusual spectrum is scored like the nearest trained one, not extrapolated), standardised,
then two hidden layers with SiLU and a logistic output.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from .errors import WeightsError
from .weights import sha256_mismatch

NAME = "viser-l1c-cloud"
CLASSIFIER_DIR = Path(__file__).resolve().parent.parent / "resources" / "cloud"
LOG_FLOOR = 1e-4
_FIX = "re-install the plugin, or train it again with python -m viser_cr.training.distill_l1c_cloud"
# the tensors of the file, in the order the network applies them
TENSORS = ("feature_low", "feature_high", "feature_mean", "feature_std", "hidden1.weight", "hidden1.bias",
           "hidden2.weight", "hidden2.bias", "output.weight", "output.bias")


def features(pixels) -> np.ndarray:
    """``(N, 20)``: reflectance and its logarithm of ``(N, 10)`` pixels (the ten bands of ``s2cloudless.MODEL_BANDS``)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    return np.concatenate([pixels, np.log(np.maximum(pixels, np.float32(LOG_FLOOR)))], axis=1)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))  # never overflows
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class L1CCloudClassifier:
    """The distilled classifier's weights (numpy arrays named as ``TENSORS``); ``predict`` is the probability."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        missing = [name for name in TENSORS if name not in tensors]
        if missing:
            raise WeightsError(f"the L1C cloud classifier's weights lack {missing}; {_FIX}")
        self.tensors = {name: np.asarray(tensors[name], dtype=np.float32) for name in TENSORS}

    def predict(self, pixels) -> np.ndarray:
        """``(N,)`` cloud probability of ``(N, 10)`` TOA reflectance pixels, in chunks to bound memory."""
        t = self.tensors
        pixels = np.asarray(pixels, dtype=np.float32)
        out = np.empty(len(pixels), dtype=np.float32)
        for start in range(0, len(pixels), 65536):
            f = np.clip(features(pixels[start:start + 65536]), t["feature_low"], t["feature_high"])
            h = (f - t["feature_mean"]) / t["feature_std"]
            for layer in ("hidden1", "hidden2"):
                z = h @ t[f"{layer}.weight"].T + t[f"{layer}.bias"]
                h = z * _sigmoid(z)  # SiLU
            logit = (h @ t["output.weight"].T + t["output.bias"])[:, 0]
            out[start:start + len(logit)] = _sigmoid(logit)
        return out


def card_path(folder: str | Path | None = None) -> Path:
    return Path(folder or CLASSIFIER_DIR) / f"{NAME}.json"


def load(folder: str | Path | None = None) -> L1CCloudClassifier:
    """The classifier of ``folder`` (the bundled one by default), its file checked against its card's sha256."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as load_safetensors

    card_file = card_path(folder)
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
        weights = card_file.with_name(card["weights"])
        data = weights.read_bytes()
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsError(f"the L1C cloud classifier ({card_file}) cannot be read ({exc}); {_FIX}") from exc
    mismatch = sha256_mismatch(data, str(card.get("sha256", "")))
    if mismatch:
        raise WeightsError(f"the L1C cloud classifier's weights {weights} do not match its card's sha256 "
                           f"({mismatch}); {_FIX}")
    try:
        return L1CCloudClassifier(load_safetensors(data))
    except (SafetensorError, ValueError) as exc:
        raise WeightsError(f"{weights} is not a readable safetensors file ({exc}); {_FIX}") from exc


@functools.lru_cache(maxsize=1)
def bundled() -> L1CCloudClassifier:
    """The bundled classifier, loaded once per process."""
    return load()
