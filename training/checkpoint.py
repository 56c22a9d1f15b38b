"""Training checkpoints: writing them atomically, reading them back, the RNG states that make a resume
exact, and a digest of the weights (DDP ranks must agree on it).

A checkpoint is a ``torch.save`` dict with ``format: viser-cr-train`` (tensors and plain values only, so
``load_checkpoint`` reads it with ``weights_only=True``): the config, architecture and band names, the
model, optimizer, scheduler and AMP scaler states, step, epoch, position within the epoch, the best
validation and every process's RNG states.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..core.errors import ViserError

FORMAT = "viser-cr-train"


def get_rng_state(device: torch.device) -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(ckpt: dict, folder: Path, step: int, also=(), keep: int = 0) -> None:
    """``last.pt`` and the names in ``also`` (``best.pt``); with ``keep``, also ``step_<N>.pt``, of which
    the last ``keep`` stay."""
    atomic_save(ckpt, folder / "last.pt")
    for name in also:
        atomic_save(ckpt, folder / name)
    if keep:
        atomic_save(ckpt, folder / f"step_{step:07d}.pt")
        for old in sorted(folder.glob("step_*.pt"))[:-keep]:
            old.unlink()


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ViserError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ViserError(f"{path} is not a viser-cr training checkpoint")
    return ckpt
