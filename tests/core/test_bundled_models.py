"""The models shipped in resources/models/: each card matches its weights and the weights run.

These are the real bundled files (not the tiny test models): a wrong sha256 in a card, weights that no
longer fit the architecture code, or a selection rule that picks the wrong model for a sensor would
break the plugin for every user, so they are checked here on CPU (a 64x64 input, a fraction of a second).
"""

from __future__ import annotations

import math

import pytest
import torch

from viser_cr.core.weights import list_models, load_model, select_model

BUNDLED = list_models()


def test_the_four_bundled_models_are_there():
    assert {card.name for card in BUNDLED} == {"viser-cr-s-rgbn", "viser-cr-s-rgb", "viser-cr-s-rgbn-l3",
                                               "viser-cr-s-rgb-l3"}


@pytest.mark.parametrize("card", BUNDLED, ids=lambda card: card.name)
def test_bundled_model_loads_and_restores_a_tile(card):
    model, loaded = load_model(card)  # checks the sha256 and the architecture
    assert loaded.name == card.name and card.sha256.startswith("sha256:")
    frames = card.num_frames
    torch.manual_seed(0)
    x = torch.rand(1, frames, len(card.bands), 64, 64) * 0.3 if frames > 1 else torch.rand(1, len(card.bands), 64, 64) * 0.3
    with torch.inference_mode():
        image, score = model(x)
    assert image.shape == (1, len(card.bands), 64, 64) and score.shape == (1, 1, 64, 64)
    assert torch.isfinite(image).all() and 0.0 <= float(score.min()) <= float(score.max()) <= 1.0
    # trained weights, not the identity an untrained network starts as (zero output conv)
    assert float((image - (x[:, 0] if frames > 1 else x)).abs().mean()) > 1e-4


@pytest.mark.parametrize("card", BUNDLED, ids=lambda card: card.name)
def test_bundled_card_reports_its_evaluation(card):
    assert card.metrics, f"{card.name}: the card carries no measured metrics"
    assert card.tile_size >= 64 and 0 <= card.overlap < card.tile_size
    assert math.isclose(card.input_scaling["scale"], 1.0) and card.input_scaling["unit"] == "reflectance"


def test_sensor_presets_pick_the_right_bundled_model():
    assert select_model(["red", "green", "blue", "nir"]).name == "viser-cr-s-rgbn"
    assert select_model(["red", "green", "blue"]).name == "viser-cr-s-rgb"
    assert select_model(["red", "green", "blue", "nir"], num_frames=3).name == "viser-cr-s-rgbn-l3"
    assert select_model(["red", "green", "blue", "nir"], num_frames=2).name == "viser-cr-s-rgbn-l3"
    assert select_model(["red", "green", "blue"], num_frames=3).name == "viser-cr-s-rgb-l3"
    assert select_model(["red", "green", "blue", "nir"], num_frames=12).name == "viser-cr-s-rgbn-l3"


def test_bundled_stack_model_takes_what_a_clear_date_sees_under_the_references_cloud(fixtures_dir):
    """A real Sentinel-2 reference crop under a synthetic thick cloud, stacked with a clear date of the
    same place and a cloudy one: under the cloud the output must come back close to the clear date
    (not a flat field, not the mono model's guess)."""
    import rasterio

    with rasterio.open(fixtures_dir / "ts_s2_ImgNo_9_2018-04-26_64.tif") as src:
        clear = torch.from_numpy(src.read([4, 3, 2, 8]).astype("float32") / 10000)
    with rasterio.open(fixtures_dir / "ts_s2_ImgNo_7_2018-04-01_64.tif") as src:
        cloudy_date = torch.from_numpy(src.read([4, 3, 2, 8]).astype("float32") / 10000)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    alpha = ((1.0 - (((yy - 30) / 20) ** 2 + ((xx - 34) / 24) ** 2)) * 4).clamp(0, 1)  # soft-edged blob
    reference = clear * (1 - alpha) + 0.55 * alpha
    under = alpha > 0.99
    assert 0.2 < float(under.float().mean()) < 0.6
    model, card = load_model(select_model(["red", "green", "blue", "nir"], num_frames=3))
    with torch.inference_mode():
        image, score = model(torch.stack([reference, clear, cloudy_date])[None])
    _assert_clear_date_taken(image, score, clear, under)
    # the RGB stack model, on the same dates' red, green and blue
    model, card = load_model(select_model(["red", "green", "blue"], num_frames=3))
    with torch.inference_mode():
        image, score = model(torch.stack([reference, clear, cloudy_date])[None, :, :3])
    _assert_clear_date_taken(image, score, clear[:3], under)


def _assert_clear_date_taken(image, score, clear, under):
    error = (image[0].clamp(0, 1) - clear)[:, under]
    psnr_cloudy = 10 * math.log10(1.0 / float((error**2).mean()))
    assert float(score[0, 0][under].mean()) > 0.5, "the reference's cloud must be scored as cloud"
    # a spatial fill of this homogeneous patch reaches 28 dB, flat; the clear date is there to be taken
    assert psnr_cloudy >= 30.0, f"under the cloud the output is {psnr_cloudy:.1f} dB from the clear date"
    assert float(image[0][:, under].std(dim=1).mean()) > 0.5 * float(clear[:, under].std(dim=1).mean())  # not flat


@pytest.mark.parametrize("card", BUNDLED, ids=lambda card: card.name)
def test_a_tile_opaque_from_edge_to_edge_comes_back_as_ground_not_as_the_cloud(card, fixtures_dir):
    """A real Sentinel-2 crop under one thick cloud that covers every pixel (and, for a stack, every date):
    nothing in the tile sees the ground, so the fill falls back on the card's typical clear ground and the
    learned correction fades. Before the ground prior the output was the cloud's own colour, darkened by a
    guess of the correction (a grey veil about 0.4 reflectance)."""
    import rasterio

    with rasterio.open(fixtures_dir / "s2l1c_clear_96.tif") as src:
        clear = torch.from_numpy(src.read([4, 3, 2, 8]).astype("float32") * 1e-4)[: len(card.bands)]
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    cloud = 0.6 + 0.05 * torch.sin(yy / 7.0) * torch.cos(xx / 5.0)  # an opaque cloud with some texture
    x = (0.1 * clear + 0.9 * cloud)[None]
    if card.num_frames > 1:
        x = x[:, None].expand(1, card.num_frames, *x.shape[1:])
    model, _ = load_model(card)
    with torch.inference_mode():
        image, score = model(x)
    assert float(score.min()) > 0.5  # all of it is cloud to the model
    ground = torch.tensor(card.architecture["ground_prior"]).view(-1, 1, 1)
    assert float((image[0] - ground).abs().max()) < 0.02  # the typical ground, flat: nothing else is known
    reference = x[0, 0] if card.num_frames > 1 else x[0]
    assert float((image[0] - clear).abs().mean()) < 0.25 * float((reference - clear).abs().mean())


def test_8bit_imagery_gets_the_bundled_models_display_gate(fixtures_dir, tmp_path):
    """The mono and stack cards carry a stricter cloud gate and the saturation test for 8-bit display imagery;
    a run on an 8-bit raster uses them and says so, a run on reflectance names its own gate and test."""
    from viser_cr.core.pipeline import CloudRemovalRequest, remove_clouds

    for card in BUNDLED:
        assert card.architecture["display_fill_threshold"] > card.architecture["fill_threshold"], card.name
        assert card.architecture.get("display_saturation") is True, card.name  # saturated 8-bit pixels are filled
        assert card.architecture.get("reflectance_saturation") is True, card.name  # and clipped white reflectance
    eight_bit = remove_clouds(CloudRemovalRequest([fixtures_dir / "landsat7_rgb8_collar_96.tif"], tmp_path / "a.tif"))
    assert any("8-bit display imagery" in line and "saturated" in line for line in eight_bit.messages)
    reflectance = remove_clouds(CloudRemovalRequest([fixtures_dir / "s2l1c_cloudy_96.tif"], tmp_path / "b.tif"))
    assert not any("8-bit display imagery" in line for line in reflectance.messages)
    # a reflectance run names its own gate and the clipped-white test instead
    assert any("Reflectance input" in line and "clipped level" in line for line in reflectance.messages)
    assert not any("Reflectance input" in line for line in eight_bit.messages)


def test_the_users_cloud_threshold_moves_the_fill_and_the_run_reports_what_it_called_cloud(fixtures_dir, tmp_path):
    """An analyst's threshold replaces the display gate: a low one fills every pixel scored above it, a high one
    leaves them; the score itself does not move, and each run says what share of the raster it called cloud."""
    import re

    import numpy as np
    import rasterio

    from viser_cr.core.errors import InputError
    from viser_cr.core.pipeline import CloudRemovalRequest, remove_clouds

    source = fixtures_dir / "landsat7_rgb8_collar_96.tif"
    runs = {}
    for threshold in (0.2, 0.95):
        result = remove_clouds(CloudRemovalRequest([source], tmp_path / f"{threshold}.tif", cloud_threshold=threshold,
                                                   score_output=tmp_path / f"{threshold}-score.tif"))
        assert any(f"Cloud threshold {threshold:g} (yours; this model's for this imagery: 0.6)" in line
                   for line in result.messages)
        shares = [re.search(r"the score calls ([\d.]+) % of the valid pixels cloud(?: or cloud shadow)? \(score above ([\d.]+)\)", line)
                  for line in result.messages]
        share, above = next(match.groups() for match in shares if match)
        assert float(above) == threshold
        with rasterio.open(tmp_path / f"{threshold}.tif") as out, rasterio.open(tmp_path / f"{threshold}-score.tif") as sc:
            runs[threshold] = (float(share), out.read().astype(float), sc.read(1))
    (low_share, low, score), (high_share, high, high_score) = runs[0.2], runs[0.95]
    np.testing.assert_array_equal(np.isnan(score), np.isnan(high_score))
    valid = ~np.isnan(score)
    np.testing.assert_allclose(score[valid], high_score[valid], atol=1e-6)  # the score is the threshold's input
    assert low_share == pytest.approx(100 * float((score[valid] > 0.2).mean()), abs=0.1) and low_share > 1.0
    assert high_share == pytest.approx(100 * float((score[valid] > 0.95).mean()), abs=0.1)
    changed = np.abs(low - high).max(axis=0)
    assert changed[valid & (score > 0.3)].mean() > 2.0, "a pixel scored 0.3 is filled at 0.2, kept at 0.95"
    assert changed[valid & (score < 0.15)].mean() < 0.5 * changed[valid & (score > 0.3)].mean()
    for wrong in (0.0, 1.0, 1.5, "high"):
        with pytest.raises(InputError, match="cloud threshold must be a number between 0 and 1"):
            remove_clouds(CloudRemovalRequest([source], tmp_path / "never.tif", cloud_threshold=wrong))
    assert not (tmp_path / "never.tif").exists()


def test_the_models_own_display_gate_as_a_threshold_changes_nothing_where_the_clouds_set_the_stretch(
        fixtures_dir, tmp_path):
    """A threshold moves the gate only: on an 8-bit export whose stretch a bright cloud set (the ground pushed
    dark, where the score's dark-ground raises apply), the model's own display gate given as a threshold gives
    the default output and score, pixel for pixel (until 2026-12-03 it turned the raises off: a quarter of
    this raster's pixels changed, by up to 24 levels)."""
    import numpy as np
    import rasterio

    from viser_cr.core.pipeline import CloudRemovalRequest, remove_clouds

    with rasterio.open(fixtures_dir / "s2l1c_cloudy_96.tif") as src:
        red_green_blue = src.read([4, 3, 2]).astype(float)
        profile = src.profile
    profile.update(count=3, dtype="uint8", nodata=None)
    export = tmp_path / "dark_export.tif"  # stretched 400-6400 DN: a scene's bright cloud set it, the ground is dark
    with rasterio.open(export, "w", **profile) as dst:
        dst.write(np.clip((red_green_blue - 400) / 6000 * 255, 0, 255).round().astype("uint8"))
    for name, threshold in (("default", None), ("own", 0.6)):
        remove_clouds(CloudRemovalRequest([export], tmp_path / f"{name}.tif", cloud_threshold=threshold,
                                          score_output=tmp_path / f"{name}-score.tif"))
    for name in ("{}.tif", "{}-score.tif"):
        with rasterio.open(tmp_path / name.format("default")) as a, rasterio.open(tmp_path / name.format("own")) as b:
            np.testing.assert_array_equal(a.read(), b.read())
