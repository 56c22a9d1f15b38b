"""remove_clouds end to end: exact grid, band mapping and scaling round trips, products, stacks, COG.

Round-trip tests swap the network for an identity (image = input, score = 0): then the output must
equal the input's model bands exactly, which proves the band mapping, the (inverse) scaling, the
georeferencing and seamless blending (no seams, no darkened borders). The other tests run the real
tiny VISER-CR models of ``tests/conftest.py``.
"""

import hashlib
import shutil

import numpy as np
import pytest
import rasterio
import torch
from rasterio.warp import calculate_default_transform, reproject
from rasters import write_raster

from viser_cr.core import pipeline, weights
from viser_cr.core.errors import ViserError
from viser_cr.core.messages import to_callback
from viser_cr.core.pipeline import CloudRemovalRequest, Predictor, describe_input, plan, remove_clouds

S2_STACK = ["ts_s2_ImgNo_5_2018-03-07_64.tif", "ts_s2_ImgNo_7_2018-04-01_64.tif", "ts_s2_ImgNo_9_2018-04-26_64.tif"]


def sha256(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


class FakeModel(torch.nn.Module):
    """image = input reference bands (times ``gain``, plus ``shift``); score from ``score_fn``."""

    def __init__(self, out_bands, gain=1.0, shift=0.0, score_fn=None, ramp=0.0):
        super().__init__()
        self.out_bands, self.gain, self.shift, self.score_fn, self.ramp = out_bands, gain, shift, score_fn, ramp
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        ref = x if x.dim() == 4 else x[:, 0]
        score = self.score_fn(ref) if self.score_fn else torch.zeros_like(ref[:, :1])
        image = ref[:, : self.out_bands] * self.gain + self.shift
        if self.ramp:  # not flip-equivariant: test-time augmentation sees a spread
            image = image + self.ramp * torch.linspace(0, 1, ref.shape[-1])
        return image, score


@pytest.fixture
def fake_model(monkeypatch):
    """Patch load_model so that the pipeline runs a FakeModel with the real card; returns a setter."""
    state = {}

    def use(**kwargs):
        state.update(kwargs)
        return state

    def load(card_or_name, device="cpu", models_dir=None):
        card = weights.find_model(card_or_name, models_dir)
        model = FakeModel(len(card.bands), **state)
        state["model"] = model
        return model, card

    monkeypatch.setattr(weights, "load_model", load)
    return use


@pytest.fixture
def s2_path(fixtures_dir, tmp_path):
    return shutil.copy(fixtures_dir / "s2l1c_cloudy_96.tif", tmp_path / "s2.tif")


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src


# ----------------------------------------------------------------------------------------- round trips


def test_identity_round_trip_is_exact_on_sentinel2(fake_model, tiny_models_dir, s2_path, tmp_path):
    fake_model()
    before = sha256(s2_path)
    out = tmp_path / "out.tif"
    result = remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, tile_size=32,
                                               overlap=8))
    assert result.bands == [4, 3, 2, 8] and result.sensor == "s2-l1c" and result.model == "tiny-rgbn"
    assert result.tiles == 16 and result.device == "cpu"
    with rasterio.open(s2_path) as src, rasterio.open(out) as dst:
        np.testing.assert_array_equal(dst.read(), src.read([4, 3, 2, 8]))
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        assert dst.dtypes == ("uint16",) * 4
        assert dst.descriptions == ("red", "green", "blue", "nir")
        assert dst.profile["tiled"] and dst.compression.name == "deflate"
        assert dst.tags()["VISER_CR_MODEL"] == "tiny-rgbn"
    assert sha256(s2_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "s2.tif"]


def test_identity_on_blue_first_landsat(fake_model, tiny_models_dir, fixtures_dir, tmp_path):
    fake_model()
    src_path = fixtures_dir / "landsat8_bgr_160x128.tif"
    out = tmp_path / "out.tif"
    result = remove_clouds(CloudRemovalRequest([src_path], out, models_dir=tiny_models_dir,
                                               sensor="landsat-c2l2", tile_size=48, overlap=12))
    assert result.model == "tiny-rgb" and result.bands == [3, 2, 1]
    assert "blue first" in result.sensor_reason
    with rasterio.open(src_path) as src, rasterio.open(out) as dst:
        np.testing.assert_array_equal(dst.read(), src.read([3, 2, 1]))


def test_float32_reflectance_output(fake_model, tiny_models_dir, s2_path, tmp_path):
    fake_model()
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, output_dtype="float32",
                                      sensor="s2-l2a", offset=-0.1))
    with rasterio.open(s2_path) as src, rasterio.open(out) as dst:
        assert dst.dtypes[0] == "float32"
        expected = src.read([4, 3, 2, 8]).astype(np.float32) * np.float32(1e-4) - np.float32(0.1)
        np.testing.assert_allclose(dst.read(), expected, atol=1e-6)


def test_inverse_scaling_clips_to_the_data_type(fake_model, tiny_models_dir, fixtures_dir, tmp_path):
    fake_model(gain=3.0)
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest([fixtures_dir / "rgbn8_96.tif"], out, models_dir=tiny_models_dir,
                                      keep_clear=False))  # the model's own output everywhere
    with rasterio.open(fixtures_dir / "rgbn8_96.tif") as src, rasterio.open(out) as dst:
        expected = np.clip(src.read().astype(np.float64) * 3, 0, 255)
        np.testing.assert_allclose(dst.read(), expected, atol=1)
        assert dst.read().max() == 255


def test_nodata_stays_nodata(fake_model, tiny_models_dir, fixtures_dir, tmp_path):
    fake_model(shift=-1.0)  # would write 0 (the nodata value) everywhere if not kept apart
    src_path = fixtures_dir / "landsat7_rgb8_collar_96.tif"
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest([src_path], out, models_dir=tiny_models_dir, tile_size=32, overlap=8,
                                      keep_clear=False))
    with rasterio.open(src_path) as src, rasterio.open(out) as dst:
        assert dst.nodata == 0
        nodata = (src.read() == 0).any(axis=0)
        assert nodata.any() and (~nodata).any()
        data = dst.read()
        assert (data[:, nodata] == 0).all()
        assert (data[:, ~nodata] == 1).all()  # clipped to 1 so that valid pixels never read as nodata


# ------------------------------------------------------------------------------------------ real model


def test_real_tiny_model_with_score(tiny_models_dir, s2_path, tmp_path):
    out, score = tmp_path / "out.tif", tmp_path / "score.tif"
    fractions = []
    result = remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, score_output=score),
                           progress=lambda f, m: fractions.append(f))
    assert result.score_output == score
    with rasterio.open(out) as dst, rasterio.open(score) as sc, rasterio.open(s2_path) as src:
        assert dst.count == 4 and dst.dtypes[0] == "uint16" and dst.transform == src.transform
        assert sc.count == 1 and sc.dtypes[0] == "float32" and sc.crs == src.crs
        values = sc.read(1)
        assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_cloud_score_alone(tiny_models_dir, s2_path, tmp_path):
    score = tmp_path / "score.tif"
    result = remove_clouds(CloudRemovalRequest([s2_path], None, models_dir=tiny_models_dir, score_output=score))
    assert result.output is None and score.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s2.tif", "score.tif"]


def test_tta_uncertainty(fake_model, tiny_models_dir, fixtures_dir, tmp_path):
    fake_model(ramp=0.1)
    out, unc = tmp_path / "out.tif", tmp_path / "unc.tif"
    src_path = fixtures_dir / "landsat7_rgb8_collar_96.tif"
    remove_clouds(CloudRemovalRequest([src_path], out, models_dir=tiny_models_dir, uncertainty_output=unc))
    with rasterio.open(unc) as u, rasterio.open(src_path) as src:
        values = u.read(1)
        valid = (src.read() != 0).all(axis=0)
        assert u.dtypes[0] == "float32" and u.descriptions[0].startswith("uncertainty")
        assert np.isfinite(values[valid]).all() and values[valid].min() >= 0 and values[valid].max() > 0
        assert np.isnan(values[~valid]).all()
        assert values[valid].max() <= 0.1


def test_tta_with_the_real_tiny_model(tiny_models_dir, s2_path, tmp_path):
    unc = tmp_path / "unc.tif"
    remove_clouds(CloudRemovalRequest([s2_path], tmp_path / "out.tif", models_dir=tiny_models_dir,
                                      uncertainty_output=unc, tile_size=48, overlap=16))
    with rasterio.open(unc) as u:
        values = u.read(1)
        assert np.isfinite(values).all() and values.min() >= 0


def test_tta_of_identity_is_identity_with_zero_spread(fake_model, tiny_models_dir, s2_path, tmp_path):
    fake_model()
    out, unc = tmp_path / "out.tif", tmp_path / "unc.tif"
    remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, uncertainty_output=unc,
                                      tile_size=48, overlap=16))
    with rasterio.open(s2_path) as src, rasterio.open(out) as dst, rasterio.open(unc) as u:
        np.testing.assert_array_equal(dst.read(), src.read([4, 3, 2, 8]))
        assert np.abs(u.read(1)).max() < 1e-6


def test_keep_clear_with_cloud_mask(fake_model, tiny_models_dir, s2_path, tmp_path):
    fake_model(gain=0.0, shift=0.5)  # "model output" = 5000 DN everywhere
    mask = np.zeros((1, 96, 96), dtype=np.uint8)
    mask[0, 30:60, 30:60] = 1
    with rasterio.open(s2_path) as src:
        mask_path = write_raster(tmp_path / "mask.tif", mask, crs=src.crs, transform=src.transform)
        original = src.read([4, 3, 2, 8])
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, keep_clear=True,
                                      cloud_mask=mask_path))
    data = read(out)[0]
    assert (data[:, 30:60, 30:60] == 5000).all()                      # cloud: the model
    far = np.ones((96, 96), dtype=bool)
    far[16:74, 16:74] = False                                         # feather: up to 2 x 6 pixels
    np.testing.assert_array_equal(data[:, far], original[:, far])     # far from clouds: the input
    seam = data[:, 28, 40].astype(float)                               # just outside: a mix
    assert all(min(a, 5000) <= s <= max(a, 5000) for a, s in zip(original[:, 28, 40], seam, strict=True))
    assert (seam != original[:, 28, 40]).any()


@pytest.mark.parametrize(("mask_type", "dtype", "clear", "cloud"), [
    ("landsat-qa-pixel", np.uint16, [21824, 21952, 13600], [22280, 21826, 23888, 54596]),  # clear/water/snow
    ("sentinel2-scl", np.uint8, [4, 5, 6, 11], [3, 8, 9, 10]),                              # vegetation .. snow
    ("fmask", np.uint8, [0, 1, 3], [2, 4]),
])
def test_keep_clear_fills_what_a_product_quality_band_calls_cloud(fake_model, tiny_models_dir, s2_path, tmp_path,
                                                                  mask_type, dtype, clear, cloud):
    """A QA_PIXEL / SCL / Fmask band as the cloud mask: its cloud values are filled, its clear, water and
    snow values keep the input."""
    fake_model(gain=0.0, shift=0.5)  # "model output" = 5000 DN everywhere
    mask = np.full((1, 96, 96), clear[0], dtype=dtype)
    mask[0, :, 48:] = np.resize(clear, 96 * 48).reshape(96, 48)   # every clear value, right half
    mask[0, 30:60, 30:60] = np.resize(cloud, 900).reshape(30, 30)  # every cloud value, one square
    with rasterio.open(s2_path) as src:
        mask_path = write_raster(tmp_path / "qa.tif", mask, crs=src.crs, transform=src.transform)
        original = src.read([4, 3, 2, 8])
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, keep_clear=True, tile_size=48,
                                      overlap=16, cloud_mask=mask_path, cloud_mask_type=mask_type))
    data = read(out)[0]
    assert (data[:, 30:60, 30:60] == 5000).all()
    far = np.ones((96, 96), dtype=bool)
    far[16:74, 16:74] = False
    np.testing.assert_array_equal(data[:, far], original[:, far])


def test_the_overview_of_a_coded_mask_decodes_values_not_their_average(tmp_path):
    """The wide view reads the mask reduced to an overview; bit-coded values must not be averaged: a cell of
    one cloud column (22280) and three clear ones (21824) averages to 21938, whose bits read dilated cloud
    and cloud shadow. Each cell takes its most frequent value instead."""
    mask = np.full((1, 64, 64), 21824, np.uint16)  # clear
    mask[0, :, :29] = 22280                        # cloud: overview columns 0-6, and a quarter of column 7
    mask[0, 32:36, 40:44] = 22280                  # a small cloud in the clear part: one overview cell
    path = write_raster(tmp_path / "qa.tif", mask)
    with rasterio.open(path) as dataset:
        grid = pipeline.raster.reference_grid(dataset)
        cloud_mask = pipeline._CloudMask(pipeline.raster.AlignedSource(dataset, grid, direct=True),
                                         pipeline.mask_codes.encoding("landsat-qa-pixel"))
        overview = cloud_mask.read_overview(16, 16)
        strip = cloud_mask.read(0, 64, 0, 64)
    small = np.zeros((16, 9), dtype=bool)
    small[8, 3] = True
    assert overview[:, :7].all()
    np.testing.assert_array_equal(overview[:, 7:], small)
    np.testing.assert_array_equal(strip, mask[0] == 22280)


def test_a_20_m_scene_classification_band_masks_10_m_bands(fake_model, tiny_models_dir, s2_path, tmp_path):
    """Sentinel-2 L2A ships SCL at 20 m beside 10 m bands: the mask is warped onto the output grid with
    nearest-neighbour, so each 20 m class covers its 2 x 2 output pixels, no class is blended with another."""
    fake_model(gain=0.0, shift=0.5)  # "model output" = 5000 DN everywhere
    with rasterio.open(s2_path) as src:
        original = src.read([4, 3, 2, 8])
        transform = src.transform * src.transform.scale(2, 2)  # same origin, pixels twice as large
        crs = src.crs
    scl = np.full((1, 48, 48), 4, np.uint8)
    scl[0, 15:30, 15:30] = 8                            # output rows and columns 30-59
    scl[0, 35:45, 35:45] = 11                           # snow, output 70-89: kept
    mask = write_raster(tmp_path / "scl_20m.tif", scl, crs=crs, transform=transform)
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, keep_clear=True, tile_size=48,
                                      overlap=16, cloud_mask=mask, cloud_mask_type="sentinel2-scl"))
    data = read(out)[0]
    assert (data[:, 30:60, 30:60] == 5000).all()
    np.testing.assert_array_equal(data[:, 74:90, 74:90], original[:, 74:90, 74:90])


def test_a_mask_buffer_grows_clouds_across_window_edges(tmp_path):
    """The buffer reads around the window: a cloud just above a strip grows into it as it would in one piece."""
    mask = np.zeros((1, 64, 64), np.uint8)
    mask[0, 28:32, 10:20] = 1                     # a cloud ending 1 px above the window's first row
    path = write_raster(tmp_path / "mask.tif", mask)
    with rasterio.open(path) as dataset:
        grid = pipeline.raster.reference_grid(dataset)
        source = pipeline.raster.AlignedSource(dataset, grid, direct=True)
        strip = pipeline._CloudMask(source, pipeline.mask_codes.encoding("nonzero"), buffer=3).read(32, 32, 0, 64)
        whole = pipeline._CloudMask(source, pipeline.mask_codes.encoding("nonzero"), buffer=3).read(0, 64, 0, 64)
    np.testing.assert_array_equal(strip, whole[32:])
    assert strip[:3, 12:18].all() and not strip[3:].any()


def test_a_mask_buffer_fills_the_rim_around_the_masks_clouds(fake_model, tiny_models_dir, s2_path, tmp_path):
    with rasterio.open(s2_path) as src:
        scl = np.full((1, 96, 96), 4, np.uint8)
        scl[0, 30:60, 30:60] = 9
        mask = write_raster(tmp_path / "scl.tif", scl, crs=src.crs, transform=src.transform)
    outputs = {}
    for buffer in (0, 4):
        fake_model(gain=0.0, shift=0.5).pop("model", None)  # "model output" = 5000 DN everywhere, a new one per run
        out = tmp_path / f"out{buffer}.tif"
        remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, keep_clear=True, tile_size=48,
                                          overlap=16, cloud_mask=mask, cloud_mask_type="sentinel2-scl",
                                          cloud_mask_buffer=buffer))
        outputs[buffer] = read(out)[0]
    assert (outputs[4][:, 26:64, 30:60] == 5000).all() and (outputs[4][:, 30:60, 26:64] == 5000).all()
    assert (outputs[0][:, 26:30, 30:60] != 5000).any()


def test_a_product_mask_of_the_wrong_kind_is_refused_before_any_output(fake_model, tiny_models_dir, s2_path,
                                                                       tmp_path):
    fake_model()
    with rasterio.open(s2_path) as src:
        qa = write_raster(tmp_path / "qa.tif", np.full((1, 96, 96), 21824, np.uint16), crs=src.crs,
                          transform=src.transform)
        probability = write_raster(tmp_path / "p.tif", np.full((1, 96, 96), 0.3, np.float32), crs=src.crs,
                                   transform=src.transform)
    out = tmp_path / "out.tif"
    with pytest.raises(ViserError, match=r"qa.tif has values \(21824\).*scene classification"):
        remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, keep_clear=True,
                                          cloud_mask=qa, cloud_mask_type="sentinel2-scl"))
    with pytest.raises(ViserError, match=r"qa.tif, read as nonzero .* calls 100% of its pixels cloud .*"
                                         r"--cloud-mask-type landsat-qa-pixel"):  # QA_PIXEL given without its type
        remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, keep_clear=True, cloud_mask=qa))
    with pytest.raises(ViserError, match="p.tif is float32, but a Fmask layer is an integer band"):
        remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, keep_clear=True,
                                          cloud_mask=probability, cloud_mask_type="fmask"))
    with pytest.raises(ViserError, match="no mask was given: add --cloud-mask"):
        remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, cloud_mask_type="fmask"))
    with pytest.raises(ViserError, match="--cloud-mask-buffer says how to read a cloud mask, but no mask"):
        remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, cloud_mask_buffer=3))
    with pytest.raises(ViserError, match="--cloud-mask-mode says how to read a cloud mask, but no mask"):
        remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, cloud_mask_mode="add"))
    with pytest.raises(ViserError, match="mode must be one of replace, add, got 'union'"):
        remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, keep_clear=True,
                                          cloud_mask=qa, cloud_mask_mode="union"))
    with pytest.raises(ViserError, match="whole number of pixels from 0 to 100, got -2"):
        remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, keep_clear=True,
                                          cloud_mask=qa, cloud_mask_buffer=-2))
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["p.tif", "qa.tif", "s2.tif"]


def test_keep_clear_with_score(fake_model, tiny_models_dir, tmp_path):
    """Bright pixels score as cloud: replaced by the model; the rest keeps the input."""
    fake_model(gain=0.0, shift=0.5, score_fn=lambda ref: (ref[:, :1] > 0.9).float())
    data = np.random.default_rng(0).integers(10, 200, (4, 96, 96), dtype=np.uint8)
    data[:, :, :48] = 250
    src_path = write_raster(tmp_path / "rgbn.tif", data)
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest([src_path], out, models_dir=tiny_models_dir, keep_clear=True))
    result = read(out)[0].astype(int)
    assert (np.abs(result[:, :, :48] - 128) <= 1).all()
    np.testing.assert_array_equal(result[:, :, 61:], data[:, :, 61:])


def _use_fake_fill_model(monkeypatch, score_columns):
    """Runs load a FakeFillModel whose image is 0.5 everywhere and whose score is ``score_columns`` ``[(from
    column, score), ...]`` (0.1 before the first) across each tile."""
    def score(ref):
        columns = torch.full_like(ref[:, :1], 0.1)
        for start, value in score_columns:
            columns[..., start:] = value
        return columns

    def load(card_or_name, device="cpu", models_dir=None):
        card = weights.find_model(card_or_name, models_dir)
        return FakeFillModel(len(card.bands), gain=0.0, shift=0.5, score_fn=score), card

    monkeypatch.setattr(weights, "load_model", load)


class FakeFillModel(FakeModel):
    """A fill model's interface (gates 0.35 on reflectance, 0.6 on 8-bit) over FakeModel's image and score."""

    residual_base = "fill"

    def __init__(self, out_bands, **kwargs):
        super().__init__(out_bands, **kwargs)
        self.fill_threshold, self.display_fill_threshold = 0.35, 0.6

    def use_radiometry(self, display):
        self.display = display

    def forward(self, x, cloud=None, **options):
        return super().forward(x)


@pytest.mark.parametrize(("dtype", "scale", "middle_kept"), [(np.uint16, 1e-4, False), (np.uint8, None, True)])
def test_keep_clear_keeps_by_the_models_own_gate(monkeypatch, tiny_models_dir, tmp_path, dtype, scale, middle_kept):
    """Keep-clear keeps the input where the score is below the gate the fill used (0.35 on reflectance, 0.6 on
    8-bit imagery), not a fixed 0.5: a band of score 0.42 is the model's on reflectance, the input on 8-bit."""
    _use_fake_fill_model(monkeypatch, [(32, 0.42), (64, 0.9)])
    data = np.random.default_rng(0).integers(10, 200, (4, 96, 96)).astype(dtype)
    source = write_raster(tmp_path / "in.tif", data)
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest([source], out, models_dir=tiny_models_dir, keep_clear=True, scale=scale,
                                      sensor="rgbn8" if dtype == np.uint8 else "auto", bands=[1, 2, 3, 4],
                                      tile_size=96, overlap=0))  # one tile: the score columns are the raster's
    result = read(out)[0]
    np.testing.assert_array_equal(result[:, :, :20], data[:, :, :20])   # clear: the input
    model = 5000 if dtype == np.uint16 else 128
    assert (np.abs(result[:, :, 76:].astype(int) - model) <= 1).all()    # cloud: the model
    middle = result[:, :, 44:52]
    if middle_kept:
        np.testing.assert_array_equal(middle, data[:, :, 44:52])
    else:
        assert (np.abs(middle.astype(int) - model) <= 1).all()


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_keep_clear_with_a_mask_that_adds_to_the_models_clouds(monkeypatch, tiny_models_dir, tmp_path, mode):
    """--cloud-mask-mode add: keep-clear takes the model's output where the mask or the score says cloud."""
    _use_fake_fill_model(monkeypatch, [(64, 0.9)])
    data = np.random.default_rng(0).integers(10, 200, (4, 96, 96)).astype(np.uint16)
    mask = np.zeros((1, 96, 96), np.uint8)
    mask[0, :, :20] = 1
    source, mask_path = write_raster(tmp_path / "in.tif", data), write_raster(tmp_path / "mask.tif", mask)
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest([source], out, models_dir=tiny_models_dir, keep_clear=True, scale=1e-4,
                                      bands=[1, 2, 3, 4], tile_size=96, overlap=0, cloud_mask=mask_path,
                                      cloud_mask_mode=mode))
    result = read(out)[0]
    assert (result[:, :, :20] == 5000).all()                              # the mask's cloud: the model
    np.testing.assert_array_equal(result[:, :, 34:50], data[:, :, 34:50])  # clear by both: the input
    model_right = (result[:, :, 78:] == 5000).all()
    assert model_right == (mode == "add")                                # the score's cloud: only when added


@pytest.mark.parametrize("source, classifier", [("auto", "viser-l1c-cloud"), ("s2cloudless", "s2cloudless"),
                                                ("model", None)])
def test_l1c_classifier_adds_its_clouds_on_l1c(monkeypatch, tiny_models_dir, s2_path, tmp_path, source, classifier):
    """On 13-band L1C the default cloud source adds the bundled L1C classifier's mask to the model's score
    (--cloud-source s2cloudless, the s2cloudless package's): keep-clear takes the model where the classifier calls
    cloud though the score (0.1) calls nothing, and where the score calls cloud (columns 84 on), and the score raster
    shows the classifier's clouds; --cloud-source model takes the score alone."""
    from scipy import ndimage

    from viser_cr.core import s2cloudless
    from viser_cr.core.sensors import S2_13

    _use_fake_fill_model(monkeypatch, [(84, 0.9)])
    with rasterio.open(s2_path) as src:
        data = src.read()
    l1c = data.astype(np.float32) * np.float32(1e-4)
    cloud = s2cloudless.window_cloud(l1c, S2_13, classifier=classifier or "viser-l1c-cloud")
    # the feathered seam reaches 2 x FEATHER_RADIUS px (square windows) from a cloud
    far = ~ndimage.binary_dilation(cloud, np.ones((3, 3), bool), iterations=2 * pipeline.FEATHER_RADIUS + 1)
    far[:, 84 - 2 * pipeline.FEATHER_RADIUS - 1:] = False
    assert cloud.mean() > 0.1 and far.mean() > 0.2
    model_bands = data[[3, 2, 1, 7]]  # red, green, blue, NIR of the L1C layout
    out, score_out = tmp_path / f"{source}.tif", tmp_path / f"{source}-score.tif"
    result = remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, cloud_source=source,
                                               score_output=score_out, cirrus_correction=False, tile_size=96,
                                               overlap=0))  # the score's columns
    output = read(out)[0]
    np.testing.assert_array_equal(output[:, far], model_bands[:, far])  # clear by both: the input
    assert (output[:, :, 84:] == 5000).all()                            # the score's cloud: the model
    classifier_only = cloud.copy()  # away from the score's columns and their seam
    classifier_only[:, 84 - 2 * pipeline.FEATHER_RADIUS - 1:] = False
    kept = output[:, classifier_only] == model_bands[:, classifier_only]
    assert (output[:, classifier_only] == 5000).all() if classifier else kept.all()
    said = [line for line in result.messages if line.startswith("Cloud source: ")]
    what = {"viser-l1c-cloud": "the bundled L1C cloud classifier's mask (viser-l1c-cloud, distilled from s2cloudless; ",
            "s2cloudless": "s2cloudless's cloud mask ("}
    assert said == ([f"Cloud source: {what[classifier]}probability above 0.6, averaged over 4 px, grown by 2 px) is "
                     "added to the model's cloud score: the fill takes both (--cloud-source model takes the score "
                     "alone)."] if classifier else []), said
    # the score raster shows what the run filled: the classifier's clouds at 1 over the model's 0.1
    score = read(score_out)[0][0]
    np.testing.assert_allclose(score[classifier_only], 1.0 if classifier else 0.1, atol=1e-6)
    np.testing.assert_allclose(score[far], 0.1, atol=1e-6)
    # what the score took is said either way (the classifier adds to it)
    said = "Clouds: the score with the added cloud mask calls" if classifier else "Clouds: the score calls"
    assert any(line.startswith(said) for line in result.messages), result.messages


def test_cloud_source_errors_and_without_s2cloudless(monkeypatch, tiny_models_dir, s2_path, tmp_path):
    """A cloud source asked for that cannot apply is refused before anything is written; without the s2cloudless
    package the default still adds the bundled classifier's clouds (it needs numpy alone)."""
    from viser_cr.core import s2cloudless
    from viser_cr.core.errors import DependencyError

    out = tmp_path / "out.tif"
    rgbn = write_raster(tmp_path / "rgbn.tif", np.random.default_rng(0).integers(100, 3000, (4, 64, 64), np.uint16))
    with pytest.raises(ViserError, match="cloud source must be one of auto, model, s2cloudless, l1c-classifier, got 'fmask'"):
        remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, cloud_source="fmask"))
    for source in ("s2cloudless", "l1c-classifier"):
        with pytest.raises(ViserError, match=f"--cloud-source {source} takes 13-band Sentinel-2 L1C, but rgbn.tif "
                                             "lacks the bands coastal"):
            remove_clouds(CloudRemovalRequest([rgbn], out, models_dir=tiny_models_dir, scale=1e-4, cloud_source=source))
        with pytest.raises(ViserError, match=f"give a cloud mask or --cloud-source {source}, not both"):
            remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, cloud_source=source,
                                              cloud_mask=tmp_path / "mask.tif"))
    monkeypatch.setattr(s2cloudless, "available", lambda: False)
    with pytest.raises(DependencyError, match="needs the s2cloudless and lightgbm packages.*takes the bundled"):
        remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, cloud_source="s2cloudless"))
    assert not out.exists()
    result = remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir))
    assert any(line.startswith("Cloud source: the bundled L1C cloud classifier's mask") for line in result.messages)
    assert out.exists()
    rgbn_run = remove_clouds(CloudRemovalRequest([rgbn], tmp_path / "rgbn-out.tif", models_dir=tiny_models_dir,
                                                 scale=1e-4))
    assert not any(line.startswith("Cloud source:") for line in rgbn_run.messages)  # auto: only on L1C


# -------------------------------------------------------------------------------------------- stacks


def test_temporal_stack(tiny_models_dir, fixtures_dir, tmp_path):
    inputs = [fixtures_dir / name for name in S2_STACK]
    out = tmp_path / "out.tif"
    result = remove_clouds(CloudRemovalRequest(inputs, out, models_dir=tiny_models_dir))
    assert result.model == "tiny-rgbn-l3"
    with rasterio.open(out) as dst, rasterio.open(inputs[0]) as ref:
        assert (dst.crs, dst.transform, dst.shape, dst.count) == (ref.crs, ref.transform, ref.shape, 4)
        assert np.isfinite(dst.read().astype(float)).all()


def test_a_stack_longer_than_the_model_takes_chooses_dates_per_tile(tiny_models_dir, fixtures_dir, tmp_path):
    """Five dates for a 3-date model: each tile takes the reference and the two dates that see most of
    what it cannot; the run says so and which dates it used."""
    import shutil

    inputs = [fixtures_dir / name for name in S2_STACK]
    for k in (1, 2):  # two more dates (copies under other names)
        inputs.append(shutil.copy(inputs[k], tmp_path / f"extra{k}.tif"))
    out, sources = tmp_path / "out.tif", tmp_path / "sources.tif"
    result = remove_clouds(CloudRemovalRequest(inputs, out, models_dir=tiny_models_dir, tile_size=32, overlap=8,
                                               source_dates_output=sources, reference=1))
    assert result.model == "tiny-rgbn-l3" and result.source_dates_output == sources
    assert any("5 dates, model tiny-rgbn-l3 takes 3: for each tile" in m and
               "nearest in time to the reference (acquisition dates from the metadata or file names of 3 of 5)" in m
               for m in result.messages)  # the copies' names carry no date
    (used,) = [m for m in result.messages if m.startswith("Dates used")]
    tiles = result.tiles
    assert used.startswith(f"Dates used (tiles of {tiles}): input 2 ({inputs[1].name}) {tiles}, ")
    counts = [int(part.rsplit(" ", 1)[1]) for part in used.rstrip(".").split(": ", 1)[1].split(", ")]
    assert sum(counts) == 3 * tiles  # every tile took three dates
    with rasterio.open(out) as dst, rasterio.open(inputs[1]) as ref, rasterio.open(sources) as src:
        assert (dst.crs, dst.transform, dst.shape, dst.count) == (ref.crs, ref.transform, ref.shape, 4)
        assert np.isfinite(dst.read().astype(float)).all()
        assert (src.crs, src.transform, src.shape, src.dtypes[0], src.nodata) == (ref.crs, ref.transform, ref.shape,
                                                                                  "uint16", 65535)
        assert set(np.unique(src.read(1)).tolist()) <= {0, 1, 2, 3, 4, 5}  # input numbers, 0 = spatial fill
    assert plan(CloudRemovalRequest(inputs, out, models_dir=tiny_models_dir))["dates_taken"] == 3


def test_a_model_that_takes_all_dates_fills_from_every_date_of_a_long_stack(tiny_all_dates_models_dir, fixtures_dir,
                                                                           tmp_path):
    """Five dates for a 3-date model with all_dates: no date is left out of any tile, the run says so, and the
    source-date raster may name any of them."""
    import shutil

    inputs = [fixtures_dir / name for name in S2_STACK]
    for k in (1, 2):
        inputs.append(shutil.copy(inputs[k], tmp_path / f"extra{k}.tif"))
    out, sources = tmp_path / "out.tif", tmp_path / "sources.tif"
    result = remove_clouds(CloudRemovalRequest(inputs, out, models_dir=tiny_all_dates_models_dir, tile_size=32,
                                               overlap=8, source_dates_output=sources))
    assert result.model == "tiny-all-l3"
    assert any("5 dates, model tiny-all-l3 takes them all in each tile" in m for m in result.messages)
    assert not any(m.startswith("Dates used") for m in result.messages)  # nothing chosen, nothing to count
    with rasterio.open(out) as dst, rasterio.open(inputs[0]) as ref, rasterio.open(sources) as src:
        assert (dst.crs, dst.transform, dst.shape, dst.count) == (ref.crs, ref.transform, ref.shape, 4)
        assert np.isfinite(dst.read().astype(float)).all()
        assert set(np.unique(src.read(1)).tolist()) <= {0, 1, 2, 3, 4, 5}
    assert plan(CloudRemovalRequest(inputs, out, models_dir=tiny_all_dates_models_dir))["dates_taken"] == 5


def test_stack_with_mixed_crs_and_resolution(fake_model, tiny_models_dir, fixtures_dir, tmp_path):
    """Date 2 reprojected to UTM at another resolution: aligned back onto the reference grid."""
    fake_model()
    inputs = [fixtures_dir / name for name in S2_STACK]
    moved = tmp_path / "date2_utm.tif"
    with rasterio.open(inputs[1]) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:32633", src.width, src.height,
                                                               *src.bounds, resolution=15)
        profile = dict(src.profile, crs="EPSG:32633", transform=transform, width=width, height=height)
        with rasterio.open(moved, "w", **profile) as dst:
            for band in range(1, src.count + 1):
                reproject(rasterio.band(src, band), rasterio.band(dst, band))
    out = tmp_path / "out.tif"
    result = remove_clouds(CloudRemovalRequest([inputs[0], moved, inputs[2]], out, models_dir=tiny_models_dir))
    assert any("warped onto the reference grid" in m for m in result.messages)
    with rasterio.open(out) as dst, rasterio.open(inputs[0]) as ref:
        assert (dst.crs, dst.transform, dst.shape) == (ref.crs, ref.transform, ref.shape)
        np.testing.assert_array_equal(dst.read(), ref.read([4, 3, 2, 8]))


def test_reference_chooses_the_output_grid(fake_model, tiny_models_dir, fixtures_dir, tmp_path):
    fake_model()
    inputs = [fixtures_dir / name for name in S2_STACK]
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest(inputs, out, models_dir=tiny_models_dir, reference=2))
    with rasterio.open(out) as dst, rasterio.open(inputs[2]) as ref:
        np.testing.assert_array_equal(dst.read(), ref.read([4, 3, 2, 8]))


# ------------------------------------------------------------------------------------ formats, options


def test_png_without_crs(fake_model, tiny_models_dir, fixtures_dir, tmp_path):
    fake_model()
    with rasterio.open(fixtures_dir / "landsat7_rgb8_collar_96.tif") as src:
        data = src.read()
    png = write_raster(tmp_path / "in.png", data, crs=None, driver="PNG")
    out = tmp_path / "out.tif"
    result = remove_clouds(CloudRemovalRequest([png], out, models_dir=tiny_models_dir))
    assert result.sensor == "rgb8"
    with rasterio.open(out) as dst:
        assert dst.crs is None
        np.testing.assert_array_equal(dst.read(), data)


def test_vrt_input(fake_model, tiny_models_dir, s2_path, tmp_path):
    fake_model()
    vrt = tmp_path / "in.vrt"
    rasterio.shutil.copy(s2_path, vrt, driver="VRT")
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest([vrt], out, models_dir=tiny_models_dir))
    with rasterio.open(out) as dst, rasterio.open(s2_path) as src:
        np.testing.assert_array_equal(dst.read(), src.read([4, 3, 2, 8]))


def test_cog_output(tiny_models_dir, s2_path, tmp_path):
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, cog=True,
                                      score_output=tmp_path / "score.tif"))
    with rasterio.open(out) as dst:
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dst.descriptions == ("red", "green", "blue", "nir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "s2.tif", "score.tif"]


@pytest.mark.parametrize("compress", ["LZW", "ZSTD"])
def test_cog_output_honours_creation_options(tiny_models_dir, s2_path, tmp_path, compress):
    out, score = tmp_path / "out.tif", tmp_path / "score.tif"
    remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir, cog=True, score_output=score,
                                      creation_options={"compress": compress}))
    for path in (out, score):
        with rasterio.open(path) as dst:
            assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert dst.compression.name.upper() == compress


def test_bounds_sub_window(fake_model, tiny_models_dir, s2_path, tmp_path):
    fake_model()
    with rasterio.open(s2_path) as src:
        left, top = src.transform * (10, 20)
        right, bottom = src.transform * (50, 70)
        expected = src.read([4, 3, 2, 8], window=rasterio.windows.Window(10, 20, 40, 50))
        expected_transform = src.window_transform(rasterio.windows.Window(10, 20, 40, 50))
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest([s2_path], out, models_dir=tiny_models_dir,
                                      bounds=(left, bottom, right, top)))
    with rasterio.open(out) as dst:
        assert dst.shape == (50, 40) and dst.transform == expected_transform
        np.testing.assert_array_equal(dst.read(), expected)


def test_explicit_model_path_bands_and_threads(tiny_models_dir, s2_path, tmp_path):
    out = tmp_path / "out.tif"
    threads = torch.get_num_threads()
    said = []
    with to_callback(said.append):  # the run's messages, as the CLI and QGIS receive them
        result = remove_clouds(CloudRemovalRequest([s2_path], out, model=tiny_models_dir / "tiny-rgb.safetensors",
                                                   bands=[4, 3, 2], threads=1, device="cpu", batch_size=1))
    assert result.model == "tiny-rgb" and result.bands == [4, 3, 2] and result.device == "cpu"
    assert "Model tiny-rgb on cpu (1 thread)." in said and said == result.messages
    assert torch.get_num_threads() == threads  # restored after the run


def test_describe_input(tiny_models_dir, fixtures_dir):
    info = describe_input(fixtures_dir / "landsat8_bgr_160x128.tif", sensor="landsat-c2l2")
    assert info["sensor"] == "landsat-c2l2" and info["bands"] == {"blue": 1, "green": 2, "red": 3}
    assert info["width"] == 160 and info["crs"] == "EPSG:32621" and "blue first" in info["reason"]
    bad = describe_input(fixtures_dir / "landsat8_bgr_160x128.tif")
    assert bad["sensor"] is None and "--sensor" in bad["error"]


# --------------------------------------------------------------------------------------- out of memory


class OomModel(torch.nn.Module):
    """Raises CUDA-style out-of-memory for batches larger than ``max_batch`` or tiles above ``max_side``."""

    def __init__(self, max_batch=1, max_side=10_000):
        super().__init__()
        self.max_batch, self.max_side = max_batch, max_side

    def forward(self, x):
        if x.shape[0] > self.max_batch or x.shape[-1] > self.max_side:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x[:, :3], torch.zeros_like(x[:, :1])


def test_out_of_memory_halves_the_batch():
    said = []
    predictor = Predictor(OomModel(max_batch=2), torch.device("cpu"), batch_size=8, say=said.append)
    image, score, spread, _ = predictor.predict(np.random.rand(5, 1, 3, 16, 16).astype(np.float32))
    assert image.shape == (5, 3, 16, 16) and spread is None
    assert predictor.batch_size == 2
    assert said == ["Out of memory: batch size reduced to 4.", "Out of memory: batch size reduced to 2."]


def test_out_of_memory_then_smaller_tiles(monkeypatch, tiny_models_dir, fixtures_dir, tmp_path):
    def load(card_or_name, device="cpu", models_dir=None):
        card = weights.find_model(card_or_name, models_dir)
        return OomModel(max_batch=1, max_side=64), card

    monkeypatch.setattr(weights, "load_model", load)
    out = tmp_path / "out.tif"
    result = remove_clouds(CloudRemovalRequest([fixtures_dir / "landsat7_rgb8_collar_96.tif"], out,
                                               models_dir=tiny_models_dir, tile_size=128, overlap=16))
    assert "Out of memory: batch size reduced to 2." in result.messages
    assert any("retrying with 64-pixel tiles" in m for m in result.messages)
    assert out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


def test_out_of_memory_on_cpu_with_smallest_tiles_is_a_clear_error(monkeypatch, tiny_models_dir, s2_path,
                                                                     tmp_path):
    def load(card_or_name, device="cpu", models_dir=None):
        return OomModel(max_batch=0), weights.find_model(card_or_name, models_dir)

    monkeypatch.setattr(weights, "load_model", load)
    with pytest.raises(ViserError, match="out of memory"):
        remove_clouds(CloudRemovalRequest([s2_path], tmp_path / "out.tif", models_dir=tiny_models_dir))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s2.tif"]


def test_core_never_imports_qgis_or_training():
    import subprocess
    import sys

    code = ("import sys, viser_cr.core.pipeline, viser_cr.core.cli, viser_cr.core.raster, viser_cr.core.tiling; "
            "print([m for m in sys.modules if m.startswith(('qgis', 'viser_cr.training'))])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert pipeline.__name__ == "viser_cr.core.pipeline"


def test_plan_says_model_bands_and_dropped_bands_without_running(tiny_models_dir, s2_path, fixtures_dir):
    info = plan(CloudRemovalRequest([s2_path], None, models_dir=tiny_models_dir))
    assert info["sensor"] == "s2-l1c" and info["bands"] == [4, 3, 2, 8] and info["count"] == 13
    assert info["model_bands"] == ["red", "green", "blue", "nir"] and len(info["dropped"]) == 9
    assert info["cirrus_band"] == 11  # B10, read to remove thin cirrus first
    assert plan(CloudRemovalRequest([s2_path], None, models_dir=tiny_models_dir, cirrus_correction=False))["cirrus_band"] is None
    assert info["cloud_classifier"] == "viser-l1c-cloud"  # 13-band L1C: the bundled classifier's mask adds to the score
    for source, classifier in (("model", None), ("s2cloudless", "s2cloudless")):
        request = CloudRemovalRequest([s2_path], None, models_dir=tiny_models_dir, cloud_source=source)
        assert plan(request)["cloud_classifier"] == classifier
    info = plan(CloudRemovalRequest([s2_path], None, model="tiny-rgb", models_dir=tiny_models_dir))
    assert info["model"] == "tiny-rgb" and info["bands"] == [4, 3, 2]
    with pytest.raises(ViserError, match="band"):
        plan(CloudRemovalRequest([s2_path], None, bands=[1], models_dir=tiny_models_dir))


def _fill_model_without_correction(folder, num_frames: int = 1, all_dates: bool = False):
    """A tiny fill model whose output is its fill base (the learned correction zeroed), saved in ``folder`` as
    ``fill-rgbn`` (one date) or ``fill-rgbn-l3`` (a stack model without flow: its output is its temporal prior);
    ``all_dates``: ``fill-rgbn-l3-all``, its date merge zeroed too, as the bundled stack models."""
    from viser_cr.core.model import ViserCR

    torch.manual_seed(0)
    stack = {"num_frames": num_frames, "use_flow": False, "all_dates": all_dates} if num_frames > 1 else {}
    model = ViserCR(in_bands=4, out_bands=4, width=8, blocks=[1, 1, 1], heads=[1, 2, 4], refine_blocks=1,
                    sr_iterations=1, residual_base="fill", upsample="bilinear", **stack).eval()
    with torch.no_grad():
        model.output.weight.zero_()
        if all_dates:
            model.fusion.merge.weight.zero_()
    folder.mkdir(exist_ok=True)
    name = "fill-rgbn" if num_frames == 1 else f"fill-rgbn-l{num_frames}" + ("-all" if all_dates else "")
    weights.save_model(model, folder / name, name=name, bands=["red", "green", "blue", "nir"],
                       num_frames=num_frames, tile_size=64, overlap=16, description="tiny fill model, no correction")
    return folder


def test_a_landsat_qa_pixel_band_drives_the_fill_over_a_raster_larger_than_a_tile(tmp_path):
    """A fill model with the QA_PIXEL band as the cloud mask on a raster of several tiles (and the wide-view
    overview): the pixels whose bits say cloud, dilated cloud or shadow are filled from the ground around
    them; water and snow, whose bits are set too, keep the input."""
    models = _fill_model_without_correction(tmp_path / "models")
    image = np.full((4, 160, 160), 2000, np.uint16)
    qa = np.full((1, 160, 160), 21824, np.uint16)             # clear land
    image[:, 40:80, 40:80], qa[0, 40:80, 40:80] = 9000, 22280  # a bright cloud
    image[:, 80:84, 40:80], qa[0, 80:84, 40:80] = 9000, 21826  # its dilated rim
    image[:, 100:120, 100:140], qa[0, 100:120, 100:140] = 600, 23888  # its shadow
    image[:, 130:150, 20:60], qa[0, 130:150, 20:60] = 700, 21952      # water
    image[:, 10:30, 110:150], qa[0, 10:30, 110:150] = 8000, 13600     # snow
    source, mask = write_raster(tmp_path / "l8.tif", image), write_raster(tmp_path / "qa.tif", qa)
    out = tmp_path / "out.tif"
    remove_clouds(CloudRemovalRequest([source], out, models_dir=models, model="fill-rgbn", scale=1e-4,
                                      keep_clear=True, cloud_mask=mask, cloud_mask_type="landsat-qa-pixel"))
    data = read(out)[0].astype(float)
    for rows, cols in ((slice(44, 80), slice(44, 76)), (slice(104, 116), slice(104, 136))):
        assert np.abs(data[:, rows, cols] - 2000).max() <= 10  # cloud, rim and shadow: the ground around (9000, 600)
    np.testing.assert_array_equal(data[:, 134:146, 24:56], image[:, 134:146, 24:56])   # water kept
    np.testing.assert_array_equal(data[:, 14:26, 114:146], image[:, 14:26, 114:146])   # snow kept


@pytest.mark.parametrize("tta", [False, True])
def test_each_dates_quality_band_decides_what_the_stack_takes(tmp_path, tta):
    """One mask per date (Fmask classes): under the reference's cloud the stack takes the date whose own mask
    says clear there, and swapping the two context dates' masks swaps what it takes, whatever the
    (untrained) model's own date scores would say; test-time augmentation turns the masks with the tiles."""
    models = _fill_model_without_correction(tmp_path / "models", num_frames=3)
    reference = np.full((4, 64, 64), 2000, np.uint16)
    reference[:, 20:44, 16:40] = 9000
    second, third = reference.copy(), reference.copy()
    second[:, 20:44, 16:40], third[:, 20:44, 16:40] = 3000, 4000
    paths = [write_raster(tmp_path / f"date{i}.tif", d) for i, d in enumerate((reference, second, third))]
    outputs = {}
    for clear_one in (1, 2):
        masks = []
        for i in range(3):
            fmask = np.zeros((1, 64, 64), np.uint8)                 # clear land
            if i != clear_one:
                fmask[0, 20:44, 16:40] = 4                          # cloud
            masks.append(write_raster(tmp_path / f"fmask{clear_one}_{i}.tif", fmask))
        out = tmp_path / f"out{clear_one}.tif"
        remove_clouds(CloudRemovalRequest(paths, out, models_dir=models, model="fill-rgbn-l3", scale=1e-4,
                                          keep_clear=True, cloud_masks=masks, cloud_mask_type="fmask", tta=tta))
        outputs[clear_one] = read(out)[0].astype(float)[:, 24:40, 20:36]
    assert np.abs(outputs[1] - 3000).max() <= 30 and np.abs(outputs[2] - 4000).max() <= 30


def test_a_model_that_takes_all_dates_fills_each_part_of_a_cloud_from_the_date_that_sees_it(tmp_path):
    """Four context dates for a 3-date model with all_dates, each date's quality band saying what it sees: a
    cloud whose thirds three different dates see comes back as those three dates, and the source-date raster
    names each (picking 2 context dates per tile would leave a third to the spatial fill)."""
    models = _fill_model_without_correction(tmp_path / "models", num_frames=3, all_dates=True)
    cloud = (slice(20, 44), slice(8, 56))
    thirds = [slice(8, 24), slice(24, 40), slice(40, 56)]
    rasters, masks = [], []
    for i, value in enumerate((9000, 3000, 4000, 5000, 9000)):  # the reference, three partial views, a cloudy date
        image = np.full((4, 64, 64), 2000, np.uint16)
        image[(slice(None), *cloud)] = 9000
        fmask = np.zeros((1, 64, 64), np.uint8)
        fmask[(0, *cloud)] = 4
        if 1 <= i <= 3:
            image[:, cloud[0], thirds[i - 1]] = value
            fmask[0, cloud[0], thirds[i - 1]] = 0
        rasters.append(write_raster(tmp_path / f"date{i}.tif", image))
        masks.append(write_raster(tmp_path / f"fmask{i}.tif", fmask))
    out, sources = tmp_path / "out.tif", tmp_path / "sources.tif"
    result = remove_clouds(CloudRemovalRequest(rasters, out, models_dir=models, model="fill-rgbn-l3-all", scale=1e-4,
                                               keep_clear=True, cloud_masks=masks, cloud_mask_type="fmask",
                                               source_dates_output=sources))
    assert any("5 dates, model fill-rgbn-l3-all takes them all in each tile" in m for m in result.messages)
    image, source = read(out)[0].astype(float), read(sources)[0][0]
    for k, (third, value) in enumerate(zip(thirds, (3000, 4000, 5000), strict=True)):
        inner = (slice(None), slice(24, 40), slice(third.start + 4, third.stop - 4))
        assert np.abs(image[inner] - value).max() <= 30
        assert (source[inner[1:]] == k + 2).all()  # input numbers: the reference is 1


def test_date_masks_must_be_one_per_input(tmp_path, tiny_models_dir, fixtures_dir):
    dates = [str(fixtures_dir / n) for n in S2_STACK]
    mask = write_raster(tmp_path / "m.tif", np.zeros((1, 64, 64), np.uint8))
    out = tmp_path / "out.tif"
    with pytest.raises(ViserError, match=r"2 cloud mask\(s\) for 3 input\(s\): give one mask"):
        remove_clouds(CloudRemovalRequest(dates, out, models_dir=tiny_models_dir, keep_clear=True,
                                          cloud_masks=[mask, mask]))
    with pytest.raises(ViserError, match="not both"):
        remove_clouds(CloudRemovalRequest(dates, out, models_dir=tiny_models_dir, keep_clear=True, cloud_mask=mask,
                                          cloud_masks=[mask, mask, mask]))
    assert not out.exists()


def test_tta_fills_from_the_users_cloud_mask(tmp_path):
    """With test-time augmentation every flip and rotation completes from the user's mask (turned with the tile),
    as the plain run does, not from the model's own score."""
    models = _fill_model_without_correction(tmp_path / "models")
    cloudy = np.full((4, 64, 64), 2000, np.uint16)
    cloudy[:, 20:44, 16:40] = 9000
    mask = np.zeros((64, 64), np.uint8)
    mask[20:44, 16:40] = 1
    source, mask_path = write_raster(tmp_path / "cloudy.tif", cloudy), write_raster(tmp_path / "mask.tif", mask)
    outputs = []
    for tta in (False, True):
        out = tmp_path / f"tta{tta}.tif"
        remove_clouds(CloudRemovalRequest([source], out, models_dir=models, model="fill-rgbn", scale=1e-4,
                                          cloud_mask=mask_path, keep_clear=True, tta=tta))
        outputs.append(read(out)[0].astype(float))
    plain, turned = outputs
    assert np.abs(plain - 2000).max() <= 2 and np.abs(turned - plain).max() <= 2  # the square filled both ways


def test_a_cloud_larger_than_a_tile_is_filled_from_the_ground_around_it(tmp_path):
    """A raster larger than one tile: the overview pass (the model on the raster averaged down to one tile)
    gives every tile a prior, so the tile inside a large cloud is filled with the ground around the cloud
    (left half dark, right half bright), not with its own cloudy mean."""
    models = _fill_model_without_correction(tmp_path / "models")
    ground = np.full((4, 192, 192), 2000, np.uint16)
    ground[:, :, 96:] = 4000
    cloudy = ground.copy()
    cloudy[:, 36:156, 36:156] = 9000
    mask = np.zeros((192, 192), np.uint8)
    mask[36:156, 36:156] = 1
    source = write_raster(tmp_path / "cloudy.tif", cloudy)
    mask_path = write_raster(tmp_path / "mask.tif", mask)
    outputs = {}
    for name, size in (("whole", 192), ("one tile", 64)):
        out = tmp_path / f"{size}.tif"
        result = remove_clouds(CloudRemovalRequest([source], out, models_dir=models, model="fill-rgbn",
                                                   scale=1e-4, cloud_mask=mask_path, keep_clear=True, tile_size=size))
        outputs[name] = (read(out)[0].astype(float) / 1e4, result.messages)
    data, messages = outputs["one tile"]
    assert any(m.startswith("Large clouds: the fill also draws on a 64 x 64 overview") for m in messages)
    centre = data[:, 64:128, 64:128]  # the tile inside the cloud: nothing of its own is clear
    assert centre.max() < 0.45 and abs(centre.mean() - 0.3) < 0.06  # the ground around, not the cloud (0.9)
    assert data[:, 90:100, 40:50].mean() < data[:, 90:100, 142:152].mean() - 0.05  # dark side left, bright right
    np.testing.assert_allclose(data[:, :30], ground[:, :30] / 1e4, atol=1e-3)  # clear pixels kept
    whole, messages = outputs["whole"]  # one tile for the whole raster: no overview needed
    assert not any(m.startswith("Large clouds") for m in messages)
