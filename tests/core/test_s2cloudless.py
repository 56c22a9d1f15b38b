"""The optional s2cloudless cloud source (core.s2cloudless) on real Sentinel-2 L1C crops.

`make setup` installs s2cloudless and lightgbm into the test venv (--no-deps), so these run in CI."""

import numpy as np
import pytest
import rasterio

from viser_cr.core import s2cloudless
from viser_cr.core.errors import InputError
from viser_cr.core.sensors import S2_13


def _l1c(path):
    with rasterio.open(path) as ds:
        return ds.read().astype(np.float32) * 1e-4


def test_installed_by_setup():
    assert s2cloudless.available(), s2cloudless.HOW_TO_GET


def test_clear_and_cloudy_dates_of_a_real_series(fixtures_dir):
    # SEN12MS-CR-TS dates of one patch: date 9 clear, date 7 about 84 % cloud
    clear = s2cloudless.cloud_mask(s2cloudless.cloud_probability(_l1c(fixtures_dir / "ts_s2_ImgNo_9_2018-04-26_64.tif")))
    cloudy = s2cloudless.cloud_mask(s2cloudless.cloud_probability(_l1c(fixtures_dir / "ts_s2_ImgNo_7_2018-04-01_64.tif")))
    assert clear.shape == cloudy.shape == (64, 64)
    assert clear.mean() < 0.05 and cloudy.mean() > 0.9


def test_bands_by_name_and_missing_bands(fixtures_dir):
    l1c = _l1c(fixtures_dir / "ts_s2_ImgNo_5_2018-03-07_64.tif")
    order = np.random.default_rng(0).permutation(13)
    shuffled = s2cloudless.cloud_probability(l1c[order], [S2_13[i] for i in order])
    np.testing.assert_allclose(shuffled, s2cloudless.cloud_probability(l1c), atol=1e-6)
    with pytest.raises(InputError, match="cirrus"):
        s2cloudless.cloud_probability(l1c[:4], ("red", "green", "blue", "nir"))


def test_post_processing_averages_then_dilates():
    prob = np.zeros((32, 32), np.float32)
    prob[5, 5] = 1.0                      # one speck: averaged over a disk of radius 4, it falls below 0.4
    prob[16:24, 16:24] = 1.0              # a cloud: kept, and grown by the 2 px dilation
    mask = s2cloudless.cloud_mask(prob)
    assert not mask[:12, :12].any()
    assert mask[16:24, 16:24].all() and mask[20, 15] and mask[20, 25] and not mask[20, 28]


def test_cells_are_interpolated_back_to_every_pixel(fixtures_dir):
    """``step`` runs the classifier on cell means: the same size out, any size in, and after the averaging and
    the dilation nearly the mask of every pixel's probability (cloud edges move)."""
    l1c = _l1c(fixtures_dir / "s2l1c_cloudy_96.tif")
    full = s2cloudless.cloud_probability(l1c)
    for step, size in ((4, 96), (4, 90), (2, 67)):
        coarse = s2cloudless.cloud_probability(l1c[:, :size, :size], step=step)
        assert coarse.shape == (size, size)
        disagree = (s2cloudless.cloud_mask(coarse) != s2cloudless.cloud_mask(full[:size, :size])).mean()
        assert disagree < 0.05, (step, size, disagree)  # 0.07 with the cells shifted by half a cell
    assert not np.array_equal(s2cloudless.cloud_probability(l1c, step=4), full)  # cells, not pixels


@pytest.mark.parametrize("classifier", s2cloudless.CLASSIFIERS)
def test_a_runs_windows_have_the_whole_rasters_mask(fixtures_dir, tiny_models_dir, tmp_path, classifier):
    """A run reads a classifier's mask window by window (``_L1CCloudMask``): each window, read with its margin
    from the raster's cells, is the whole raster's mask there, so tiles and strips meet without a seam."""
    import contextlib

    from viser_cr.core import pipeline

    path = fixtures_dir / "s2l1c_cloudy_96.tif"
    request = pipeline.CloudRemovalRequest([path], tmp_path / "out.tif", models_dir=tiny_models_dir)
    whole = s2cloudless.window_cloud(_l1c(path), S2_13, classifier=classifier)
    assert 0.1 < whole.mean() < 0.6  # cloud and clear in the crop
    with contextlib.ExitStack() as stack:
        inputs = pipeline._resolve_inputs(request, stack)
        mask = pipeline._align_sources(request, inputs, stack, pipeline._Callbacks(None, None),
                                           classifier).masks[0]
        for y, h, x, w in ((0, 96, 0, 96), (13, 40, 29, 50), (37, 59, 5, 91), (50, 30, 66, 30)):
            np.testing.assert_array_equal(mask.read(y, h, x, w), whole[y:y + h, x:x + w])
        overview = mask.read_overview(24, 24)
    assert overview.shape == (24, 24) and abs(overview.mean() - whole.mean()) < 0.15


def test_no_data_is_not_cloud(fixtures_dir):
    """Pixels outside the swath (not valid, whatever their values: here bright) get no cloud probability."""
    l1c = _l1c(fixtures_dir / "ts_s2_ImgNo_9_2018-04-26_64.tif")  # clear
    valid = np.ones(l1c.shape[1:], bool)
    valid[:, :24] = False
    l1c[:, ~valid] = 0.9
    assert s2cloudless.window_cloud(l1c, S2_13)[:, :20].all()  # as values, cloud
    assert not s2cloudless.window_cloud(l1c, S2_13, valid).any()
