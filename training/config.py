"""Training configuration: defaults, YAML loading, ``--set key.path=value`` overrides, checks.

A config is a YAML mapping with these blocks (every key optional; ``DEFAULTS`` shows them all)::

    base: bundled-rgbn.yaml         # optional: start from another config file (relative to this one);
                                    #   keys given here replace the base's (lists as a whole)
    name: viser-cr-s-rgbn           # run name; output_dir defaults to runs/<name>
    seed: 0
    model:                          # ViserCR keyword arguments (every ablation switch of the network)
      arch: viser-cr-s              #   a named architecture of core.model.CONFIGS (optional) ...
      width: 16                     #   ... overridden by any explicit keyword
      use_mask: true                #   AM on/off      mask_ratio: 0.25 (rho)
      use_pse: true                 #   PSE on/off
      use_sr: true                  #   SR on/off      sr_iterations: 1
      num_frames: 1                 #   sequence length L (default: data.num_frames or 1)
    data: {root, bands, num_frames, patch_size, eval_patch_size, cloud_shapes, clouds, train, val, test}
    loss: {l1, fft, perceptual, score, aux, perceptual_layers, perceptual_gain, perceptual_views}
    optim: {lr, lr_min, schedule, warmup_steps, betas, weight_decay, grad_clip}
    train: {steps, batch_size, num_workers, amp, device, threads, log_every, val_every, ckpt_every,
            init_from, init_reset, freeze, radiometric, channel_shuffle, random_frames, ...}
    eval: {protocol, max_images, sheet_images, lpips}
    distributed: {backend, find_unused_parameters, check_sync}
    export: {name, half, tile_size, overlap, description, training_data, license}
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..core.errors import InputError

DEFAULTS: dict = {
    "name": "run",
    "seed": 0,
    "output_dir": None,
    "model": {},
    "data": {
        "root": "../shared/data",
        "bands": ["red", "green", "blue", "nir"],
        "num_frames": None,
        "patch_size": 128,
        "eval_patch_size": 256,
        "cloud_shapes": None,
        "clouds": {},
        "train": [],
        "val": [],
        "test": [],
    },
    "loss": {
        "l1": 1.0,
        "fft": 0.05,
        "perceptual": 0.1,
        "score": 0.0,
        "aux": 1.0,
        "perceptual_layers": 5,
        "perceptual_gain": "auto",
        "perceptual_views": ["rgb", "nir-r-g"],
    },
    "optim": {
        "lr": 1e-4,
        "lr_min": 5e-5,
        "schedule": "cosine",   # cosine | linear | constant
        "warmup_steps": 0,
        "betas": [0.9, 0.999],
        "weight_decay": 0.0,
        "grad_clip": 1.0,       # max gradient norm (0 or null = off)
    },
    "train": {
        "steps": 100000,
        "batch_size": 8,        # per process
        "num_workers": 2,
        "amp": "auto",          # auto (bf16 on a GPU that has it, else fp16; off on CPU) | bf16 | fp16 | off
        "device": "auto",
        "threads": None,        # torch CPU threads
        "log_every": 50,
        "val_every": 2000,
        "ckpt_every": 2000,
        "keep_checkpoints": 2,
        "max_minutes": None,    # stop (checkpoint + validate) after this wall-clock time
        "progress": True,
        "init_from": None,      # warm start: a checkpoint .pt or a bundled model (training/warmstart.py)
        "init_reset": [],       # name prefixes that keep their fresh initialisation on a warm start
        "freeze": [],           # name prefixes the optimizer leaves alone (no gradient)
        "radiometric": None,    # {p, gain, gamma, contrast}: random stretch of input and target alike
        "channel_shuffle": None,  # {p, bands}: the first bands of input and target in one random order per sample
        "random_frames": False, # stacks: each batch uses the first L dates, L uniform in 1..num_frames
    },
    "eval": {
        "protocol": "clean",
        "max_images": 16,
        "sheet_images": 4,
        "lpips": False,
    },
    "distributed": {
        "backend": "auto",      # nccl on GPUs, gloo on CPU
        "find_unused_parameters": True,
        "check_sync": True,
    },
    "export": {
        "name": None,
        "half": True,
        "tile_size": 256,
        "overlap": 32,
        "description": "",
        "training_data": "",
        "license": "GPL-2.0-or-later",
        "priority": 0,
    },
}

_FREE = {"model", "data.clouds"}  # blocks taken as given (checked by their consumer: ViserCR, CloudConfig)


def deep_merge(base: dict, over: dict, path: str = "", strict: bool = True) -> dict:
    """``base`` updated by ``over`` recursively; with ``strict``, a key unknown to ``base`` is an error."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        where = f"{path}.{k}" if path else k
        if strict and k not in base:
            raise InputError(f"unknown config key {where!r}; known keys here: {', '.join(sorted(base))}")
        if isinstance(v, dict) and isinstance(out.get(k), dict) and where not in _FREE:
            out[k] = deep_merge(out[k], v, where, strict)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def apply_overrides(cfg: dict, overrides) -> dict:
    """``["train.steps=20", "model.use_sr=false"]`` -> cfg with those values (YAML-parsed)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise InputError(f"override {item!r} must look like key.path=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = parse_value(value)
    return cfg


def read_config_file(path, _seen=()) -> dict:
    """A YAML config file as a mapping, with its ``base:`` chain (if any) merged underneath."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise InputError(f"config file not found: {p}")
    user = yaml.safe_load(p.read_text()) or {}
    if not isinstance(user, dict):
        raise InputError(f"{p}: a config must be a YAML mapping")
    if "base" not in user:
        return user
    base_path = (p.parent / str(user.pop("base"))).resolve()
    if base_path in _seen:
        raise InputError(f"{p}: 'base' chain loops back to {base_path}")
    return deep_merge(read_config_file(base_path, (*_seen, p.resolve())), user, strict=False)


def load_config(path=None, overrides=None, base: dict | None = None) -> dict:
    """Defaults <- YAML file <- overrides; checks unknown keys and fills derived values."""
    user = read_config_file(path) if path is not None else {}
    if base:
        user = deep_merge(base, user, strict=False)
    user = apply_overrides(user, overrides)
    cfg = deep_merge(DEFAULTS, user)
    return finalize(cfg)


def model_arch(cfg: dict) -> dict:
    """ViserCR keyword arguments of a config: the named ``arch`` overridden by explicit keys,
    bands and frame count from ``data`` unless given."""
    from ..core.model import config as named_config

    m = dict(cfg.get("model") or {})
    name = m.pop("arch", None)
    arch = named_config(name) if name else {}
    arch.update(m)
    nb = len(cfg["data"]["bands"])
    arch.setdefault("in_bands", nb)
    arch.setdefault("out_bands", nb)
    arch.setdefault("num_frames", int(cfg["data"].get("num_frames") or 1))
    return arch


def finalize(cfg: dict) -> dict:
    if not cfg.get("output_dir"):
        cfg["output_dir"] = str(Path("runs") / str(cfg["name"]))
    t = cfg["train"]
    if int(t["steps"]) < 0:
        raise InputError(f"train.steps must be 0 (write the warm start as is) or more (got {t['steps']})")
    for k in ("batch_size", "log_every", "val_every", "ckpt_every"):
        if int(t[k]) <= 0:
            raise InputError(f"train.{k} must be positive (got {t[k]})")
    if cfg["optim"]["schedule"] not in ("cosine", "linear", "constant"):
        raise InputError(f"optim.schedule must be cosine, linear or constant, not {cfg['optim']['schedule']!r}")
    if cfg["train"]["amp"] not in ("auto", "bf16", "fp16", "off", False, True):
        raise InputError(f"train.amp must be auto, bf16, fp16 or off, not {cfg['train']['amp']!r}")
    return cfg
