"""Shared test fixtures: real crops under tests/fixtures and tiny VISER-CR models built on the fly."""

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Small enough to run a 96x96 raster in well under a second on 2 CPU cores; every module switched on.
TINY_ARCH = dict(
    in_bands=4,
    out_bands=4,
    width=8,
    blocks=(1, 1, 1),
    refine_blocks=1,
    heads=(1, 2, 4),
    use_mask=True,
    use_pse=True,
    use_sr=True,
    sr_iterations=1,
)


@pytest.fixture(autouse=True)
def isolated_pip(monkeypatch):
    """Every pip the tests start ignores the host's pip configuration and PIP_* variables.

    A machine may carry a global pip.conf with a constraint file or an index: the tests install
    tiny local wheels offline and must give the same result everywhere. PIP_CONFIG_FILE=/dev/null
    makes pip skip every configuration file (global, user and site).
    """
    for name in [name for name in os.environ if name.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


def _save_tiny(directory: Path, name: str, bands, num_frames: int = 1, **arch_overrides):
    import torch

    from viser_cr.core.model import ViserCR
    from viser_cr.core.weights import save_model

    torch.manual_seed(0)
    arch = dict(TINY_ARCH, in_bands=len(bands), out_bands=len(bands), num_frames=num_frames)
    arch.update(arch_overrides)
    model = ViserCR(**arch).eval()
    return save_model(
        model,
        directory / name,
        name=name,
        bands=list(bands),
        num_frames=num_frames,
        tile_size=64,
        overlap=16,
        description="untrained tiny test model",
    )


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """A models folder holding untrained tiny RGBN, RGB and 3-date RGBN models with their cards."""
    directory = tmp_path_factory.mktemp("models")
    _save_tiny(directory, "tiny-rgbn", ["red", "green", "blue", "nir"])
    _save_tiny(directory, "tiny-rgb", ["red", "green", "blue"])
    _save_tiny(directory, "tiny-rgbn-l3", ["red", "green", "blue", "nir"], num_frames=3)
    return directory


@pytest.fixture(scope="session")
def tiny_fill_models_dir(tmp_path_factory) -> Path:
    """A models folder holding an untrained tiny 3-date RGBN model with a fill base, as the bundled stack models."""
    directory = tmp_path_factory.mktemp("fill-models")
    _save_tiny(directory, "tiny-fill-l3", ["red", "green", "blue", "nir"], num_frames=3, residual_base="fill")
    return directory


@pytest.fixture(scope="session")
def tiny_all_dates_models_dir(tmp_path_factory) -> Path:
    """A models folder holding an untrained tiny 3-date RGBN fill model that takes every date of a longer stack
    in each tile (``all_dates``, as the bundled stack models)."""
    directory = tmp_path_factory.mktemp("all-dates-models")
    _save_tiny(directory, "tiny-all-l3", ["red", "green", "blue", "nir"], num_frames=3, residual_base="fill",
               all_dates=True)
    return directory


@pytest.fixture(scope="session")
def tiny_model_card(tiny_models_dir):
    from viser_cr.core.weights import find_model

    return find_model("tiny-rgbn", models_dir=tiny_models_dir)
