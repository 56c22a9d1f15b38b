"""Cloud shadows found by geometry (core.model.shadow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from viser_cr.core.model import ViserCR
from viser_cr.core.model.shadow import cloud_shadows

SIZE = 192
OFFSET = (14, 22)  # (rows, cols) from every cloud to its shadow: one sun direction for the scene
CLOUDS = [(40, 40, 14), (120, 60, 18), (60, 120, 12), (130, 140, 10)]  # row, col, radius


def _disc(row: int, col: int, radius: int) -> np.ndarray:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    return (rows - row) ** 2 + (cols - col) ** 2 <= radius**2


def _ground(seed: int = 0) -> np.ndarray:
    """Red, green, blue, NIR reflectance of vegetated ground with fields of different brightness."""
    rng = np.random.default_rng(seed)
    fields = np.kron(rng.uniform(0.85, 1.15, (SIZE // 16, SIZE // 16)), np.ones((16, 16)))
    texture = rng.normal(1.0, 0.03, (SIZE, SIZE))
    base = np.array([0.05, 0.08, 0.04, 0.30])[:, None, None]
    return (base * fields * texture).astype(np.float32)


def _scene(shadow_at=OFFSET, darken: float = 0.35, water: bool = False):
    """Ground, round thick clouds and, where ``shadow_at`` is an offset, each cloud's shadow there."""
    image = _ground()
    cloud = np.zeros((SIZE, SIZE), bool)
    shadow = np.zeros((SIZE, SIZE), bool)
    for row, col, radius in CLOUDS:
        cloud |= _disc(row, col, radius)
        if shadow_at is not None:
            shadow |= _disc(row + shadow_at[0], col + shadow_at[1], radius)
    shadow &= ~cloud
    if water:  # dark water where the shadows would be: NIR below green
        image[:, shadow] = np.array([0.03, 0.05, 0.04, 0.01], dtype=np.float32)[:, None]
    else:
        image[:, shadow] *= darken
    image[:, cloud] = 0.6
    return image, cloud, shadow


def _found(image: np.ndarray, cloud: np.ndarray, nir: int | None = 3) -> np.ndarray:
    found = cloud_shadows(torch.from_numpy(image)[None], torch.from_numpy(cloud.astype(np.float32))[None, None], nir)
    return found[0, 0].numpy() > 0.5


@pytest.mark.parametrize("nir", [3, None], ids=["with NIR", "visible bands only"])
def test_shadows_cast_in_one_direction_are_found(nir):
    image, cloud, shadow = _scene()
    found = _found(image if nir is not None else image[:3], cloud, nir)
    clear = ~cloud & ~shadow
    assert (found & shadow).sum() / shadow.sum() > 0.9
    # only the penumbra rim (a few pixels around each shadow) may reach clear ground
    assert (found & clear).sum() / clear.sum() < 0.02
    assert not (found & cloud).any()


@pytest.mark.parametrize("case", ["no cloud", "no shadow", "dark ground all around the clouds", "water"])
def test_what_is_not_a_cloud_shadow_is_left_alone(case):
    if case == "no cloud":
        image, cloud = _ground(), np.zeros((SIZE, SIZE), bool)
    elif case == "no shadow":
        image, cloud, _ = _scene(shadow_at=None)
    elif case == "dark ground all around the clouds":  # a dark rim on every side matches no one direction
        image, cloud, _ = _scene(shadow_at=None)
        for row, col, radius in CLOUDS:
            image[:, _disc(row, col, radius + 12) & ~cloud] *= 0.35
    else:
        image, cloud, _ = _scene(water=True)
    assert not _found(image, cloud).any()


def test_the_architecture_records_the_shadow_test_and_checks_its_nir_band():
    model = ViserCR(in_bands=4, out_bands=4, width=8, blocks=(1, 1, 1), residual_base="fill", shadow_test=True,
                    shadow_nir_band=3)
    assert model.arch["shadow_test"] is True and model.arch["shadow_nir_band"] == 3
    assert "shadow_test" not in ViserCR(in_bands=4, out_bands=4, width=8, blocks=(1, 1, 1)).arch
    with pytest.raises(ValueError, match="shadow_nir_band"):
        ViserCR(in_bands=4, out_bands=4, width=8, blocks=(1, 1, 1), shadow_test=True, shadow_nir_band=1)

