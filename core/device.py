"""Compute device selection and torch thread settings."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from .errors import DeviceError

DEVICE_HELP = "auto, cpu, cuda or cuda:N"
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(?::(\d+))?")


def check_device_name(name: str | None) -> str:
    """The device name in lower case (None or "" is auto); DeviceError unless it is one of DEVICE_HELP.
    Needs no torch: QGIS checks a DEVICE parameter with it before a run."""
    text = (name or "auto").strip().lower()
    if not _DEVICE_NAME.fullmatch(text):
        raise DeviceError(f"unknown device {name!r}: use {DEVICE_HELP}.")
    return text


def resolve_device(name: str | None = "auto", default_index: int = 0):
    """``auto`` -> a CUDA GPU if there is one, else the CPU; ``cpu``; ``cuda`` / ``cuda:N``.

    ``default_index``: the GPU that ``auto`` and a bare ``cuda`` mean (a distributed training process
    takes its local rank's). Raises DeviceError for an unknown name or a GPU that is not there.
    """
    import torch

    text = check_device_name(name)
    if text == "auto":
        return torch.device(f"cuda:{default_index}") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _DEVICE_NAME.fullmatch(text)
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but torch sees no CUDA GPU here: use --device cpu "
                          "(or auto).")
    index = int(match.group(1) or default_index)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {name!r} does not exist: this machine has {count} CUDA GPU(s), "
                          f"cuda:0 to cuda:{count - 1}.")
    return torch.device(f"cuda:{index}")


def describe_device(device) -> str:
    """A human-readable device name, e.g. ``cuda:0 (NVIDIA H100)`` or ``cpu (4 threads)``."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"


def check_threads(threads: int | None) -> None:
    if threads is not None and int(threads) < 1:
        raise DeviceError(f"threads must be at least 1, got {threads}.")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with torch capped at ``threads`` CPU threads (None: torch's setting), restored afterwards
    so that a run inside QGIS does not change the setting for the rest of the session."""
    check_threads(threads)
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def is_out_of_memory(error: BaseException) -> bool:
    """True for a CUDA out-of-memory error (torch raises it as RuntimeError subclasses)."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(error, oom):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


# ------------------------------------------------------------------------------------------ GPU path

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
CPU_BATCH_SIZE = 4          # tiles per batch on the CPU (larger batches are no faster there)
MAX_GPU_BATCH = 64          # more tiles per batch than this gain nothing measurable on a GPU
GPU_MEMORY_RESERVE = 0.25   # share of the free GPU memory left unused (fragmentation, cuDNN workspaces)


def autocast_dtype(device, precision: str = "fp32"):
    """The autocast dtype for ``precision`` on ``device``, or None to run in float32.

    Autocast is a CUDA-only path: on the CPU every precision runs in float32 (bf16 matmuls are slower
    than float32 there). ``auto``: bfloat16 where the GPU has it, else float32 (float16 can overflow).
    """
    import torch

    text = (precision or "fp32").strip().lower()
    if text not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}.")
    if text == "fp32" or device.type != "cuda":
        return None
    has_bf16 = torch.cuda.is_bf16_supported()
    if text == "bf16" and not has_bf16:
        raise DeviceError(f"{describe_device(device)} has no bfloat16 support: use --precision fp16 or fp32.")
    if text == "auto":
        return torch.bfloat16 if has_bf16 else None
    return torch.bfloat16 if text == "bf16" else torch.float16


def batch_size_for_memory(free_bytes: int, bytes_per_tile: int, tiles: int | None = None,
                          reserve: float = GPU_MEMORY_RESERVE, limit: int = MAX_GPU_BATCH) -> int:
    """Tiles per batch that fit in ``free_bytes`` of device memory, when one tile takes ``bytes_per_tile``
    (its measured peak), leaving ``reserve`` of it unused; at least 1, at most ``limit`` and ``tiles``."""
    if bytes_per_tile <= 0:
        return 1
    fits = int(max(0, free_bytes) * (1 - reserve) // bytes_per_tile)
    return max(1, min(fits, limit, tiles if tiles else limit))


def free_memory(device) -> int | None:
    """Free bytes on a CUDA device (what the driver reports), None on the CPU."""
    if device.type != "cuda":
        return None
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return int(free)
