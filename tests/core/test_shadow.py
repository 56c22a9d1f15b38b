"""Cloud shadows found by geometry (core.model.shadow) and filled by the bundled RGBN model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from viser_cr.core.model import ViserCR
from viser_cr.core.model.shadow import cloud_shadows
from viser_cr.core.weights import find_model, load_model

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


def test_the_bundled_rgbn_model_fills_real_labelled_cloud_shadows(fixtures_dir, one_torch_thread):
    """A real Sentinel-2 crop with labelled clouds and shadows (ukis-csmask): the bundled model calls the
    shadows occluded and brightens them toward the ground around them; the same weights without the
    shadow test leave them (so the test can fail)."""
    data = np.load(fixtures_dir / "ukis_s2_shadows_128.npz")
    image = torch.from_numpy(data["img"].astype(np.float32) * 1e-4)[None]
    labels = data["msk"]
    shadow, clear = labels == 0, (labels != 0) & (labels != 4)
    card = find_model("viser-cr-s-rgbn")
    assert card.architecture.get("shadow_test") and card.architecture.get("shadow_nir_band") == 3
    model, _ = load_model(card)
    with torch.no_grad():
        output, score = model(image)
        model.shadow_test = False
        plain_output, plain_score = model(image)
    called, plain_called = score[0, 0].numpy() > 0.5, plain_score[0, 0].numpy() > 0.5
    assert called[shadow].mean() > 0.75 and plain_called[shadow].mean() < 0.2  # 0.88 and 0.01 when written
    assert called[clear].mean() - plain_called[clear].mean() < 0.05  # clear ground taken for shadow: 0.036
    nir_clear = float(np.median(image[0, 3].numpy()[clear]))
    gap_before = abs(float(np.median(plain_output[0, 3].numpy()[shadow])) - nir_clear)
    gap_after = abs(float(np.median(output[0, 3].numpy()[shadow])) - nir_clear)
    assert gap_after < 0.5 * gap_before, (gap_before, gap_after)


def test_the_command_line_fills_cloud_shadows_unless_told_not_to(fixtures_dir, tmp_path, capsys):
    """The real labelled crop as a georeferenced raster through ``viser-cr remove-clouds`` and the bundled
    model: the log and the score raster name the shadows, ``--no-cloud-shadows`` leaves them."""
    import rasterio
    from rasters import write_raster

    from viser_cr.core.cli import main

    data = np.load(fixtures_dir / "ukis_s2_shadows_128.npz")
    source = write_raster(tmp_path / "ukis.tif", data["img"])  # red, green, blue, NIR, reflectance x 10^4
    shadow = data["msk"] == 0
    runs = {}
    for flags in ([], ["--no-cloud-shadows"]):
        name = "plain" if flags else "shadows"
        out, score = tmp_path / f"{name}.tif", tmp_path / f"{name}-score.tif"
        assert main(["remove-clouds", str(source), "-o", str(out), "--score-out", str(score), "--bands", "1,2,3,4",
                     "--scale", "0.0001", "--offset", "0", "--threads", "1", *flags]) == 0
        log = capsys.readouterr().err
        with rasterio.open(out) as image, rasterio.open(score) as scored:
            runs[name] = (log, image.read(4).astype(np.float32) * 1e-4, scored.read(1))
    log, nir, score = runs["shadows"]
    plain_log, plain_nir, plain_score = runs["plain"]
    assert "Cloud shadows:" in log and "valid pixels cloud or cloud shadow (score above" in log
    assert "Cloud shadows:" not in plain_log and "valid pixels cloud (score above" in plain_log
    assert (score > 0.5)[shadow].mean() > 0.75 and (plain_score > 0.5)[shadow].mean() < 0.2
    assert np.median(nir[shadow]) > np.median(plain_nir[shadow]) + 0.03  # the shadow is filled with brighter ground
