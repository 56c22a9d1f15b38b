"""Warm start (``train.init_from``).

``init_from``: a training checkpoint (``.pt``) or a bundled model (name, card ``.json`` or
``.safetensors``). Its weights are loaded into the new network with ``strict=False``:

* tensors of the same name and shape are copied;
* the band-dependent convolutions (``embed.weight``: input bands, ``output.weight`` / ``output.bias``:
  output bands) are adapted by band *name*: a band the source knows is copied, a new band gets zeros
  (so an RGBN model gives an RGB model by dropping the NIR channel of the first and last conv);
* tensors the source lacks (e.g. the temporal alignment / fusion of a stack model started from a
  mono-temporal one) keep their initialisation, except ``fusion.merge.weight``, which is zeroed so that
  the warm-started stack network computes exactly what the source computed on the reference date;
* any other shape mismatch is skipped and reported;
* ``train.init_reset``: name prefixes whose tensors keep their fresh initialisation (e.g. ``output.``
  when the residual base changes from the input to the fill: the old correction would be added on
  top of a base that no longer holds the cloud, and the zero-initialised output conv makes the
  warm-started network start exactly at the classical completion).

The batch augmentations of the training loop live in ``augment.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.errors import ViserError
from .checkpoint import load_checkpoint

BAND_INPUT = ("embed.weight",)
BAND_OUTPUT = ("output.weight", "output.bias")
ZERO_WHEN_NEW = ("fusion.merge.weight",)


def load_source(source, models_dir=None) -> tuple[dict, list[str]]:
    """``(state_dict, band_names)`` of a training checkpoint or a bundled model."""
    path = Path(str(source))
    if path.suffix == ".pt":
        ckpt = load_checkpoint(path)
        return dict(ckpt["model"]), list(ckpt["band_names"])
    from ..core.weights import load_model

    try:
        net, card = load_model(str(source), models_dir=models_dir)
    except Exception as exc:  # WeightsError and friends: report as a config problem
        raise ViserError(f"train.init_from: cannot load {source!r}: {exc}") from exc
    return {k: v.float() for k, v in net.state_dict().items()}, list(card.bands)


def _by_band(src: torch.Tensor, src_bands, dst_bands, dim: int, shape) -> torch.Tensor:
    out = torch.zeros(shape, dtype=src.dtype)
    lower = [b.lower() for b in src_bands]
    for j, name in enumerate(dst_bands):
        if name.lower() in lower:
            out.select(dim, j).copy_(src.select(dim, lower.index(name.lower())))
    return out


def adapt_state(src: dict, src_bands, model: torch.nn.Module, dst_bands) -> tuple[dict, dict]:
    """The state dict to load into ``model`` and a report ``{copied, adapted, new, skipped}``."""
    dst = model.state_dict()
    state, report = {}, {"copied": [], "adapted": [], "new": [], "skipped": []}
    for key, target in dst.items():
        if key not in src:
            report["new"].append(key)
            if key in ZERO_WHEN_NEW:
                state[key] = torch.zeros_like(target)
            continue
        value = src[key].to(target.dtype)
        if value.shape == target.shape and not (key in BAND_INPUT + BAND_OUTPUT and list(src_bands) != list(dst_bands)):
            state[key] = value
            report["copied"].append(key)
        elif key in BAND_INPUT and value.dim() == 4 and value.shape[0] == target.shape[0]:
            state[key] = _by_band(value, src_bands, dst_bands, 1, target.shape)
            report["adapted"].append(key)
        elif key in BAND_OUTPUT and value.shape[1:] == target.shape[1:]:
            state[key] = _by_band(value, src_bands, dst_bands, 0, target.shape)
            report["adapted"].append(key)
        else:
            report["skipped"].append(f"{key} {tuple(value.shape)} -> {tuple(target.shape)}")
    return state, report


def init_from(model: torch.nn.Module, source, band_names, models_dir=None, reset=()) -> dict:
    """Load ``source``'s weights into ``model`` (see the module docstring); returns the report."""
    src, src_bands = load_source(source, models_dir)
    state, report = adapt_state(src, src_bands, model, list(band_names))
    report["reset"] = [key for key in state if key.startswith(tuple(reset))] if reset else []
    for key in report["reset"]:
        del state[key]
    if not report["copied"] and not report["adapted"]:
        raise ViserError(f"train.init_from: {source} shares no weights with this network")
    model.load_state_dict(state, strict=False)
    report["source"] = str(source)
    report["source_bands"] = list(src_bands)
    return report
