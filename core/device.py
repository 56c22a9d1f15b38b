"""Compute device selection and torch thread settings."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from .errors import DeviceError

DEVICE_HELP = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str | None = "auto"):
    """``auto`` -> the first CUDA GPU if there is one, else the CPU; ``cpu``; ``cuda`` / ``cuda:N``.

    Raises DeviceError for an unknown name or a GPU that is not there.
    """
    import torch

    text = (name or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not match:
        raise DeviceError(f"unknown device {name!r}: use {DEVICE_HELP}.")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but torch sees no CUDA GPU here: use --device cpu "
                          "(or auto).")
    index = int(match.group(1) or 0)
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
