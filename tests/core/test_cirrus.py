"""Thin-cirrus correction with Sentinel-2's cirrus band (core.cirrus) and its place in the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasters import write_raster

from viser_cr.core.cirrus import MAX_SLOPE, cirrus_slopes, correct_cirrus
from viser_cr.core.metrics import psnr

BANDS = [3, 2, 1, 7]  # red, green, blue, NIR of a 13-band L1C stack (0-based)
CIRRUS = 10           # B10
GAINS = np.array([2.0, 1.8, 1.6, 2.4], dtype=np.float32)  # thin cirrus: VNIR reflectance of about 1-3 x B10's


def _ground(fixtures_dir) -> np.ndarray:
    """The real clear L1C crop (13 bands, reflectance) with its cirrus band set to a clear sky's."""
    with rasterio.open(fixtures_dir / "s2l1c_clear_96.tif") as src:
        ground = src.read().astype(np.float32) * 1e-4
    ground[CIRRUS] = 0.001
    return ground


def _veil(shape) -> np.ndarray:
    """A thin cirrus veil: B10 reflectance rising smoothly from 0 to 0.03 across the crop, with a wave."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return 0.03 * (cols / shape[1]) * (0.75 + 0.25 * np.sin(rows / 9.0))


def _under_cirrus(ground: np.ndarray, veil: np.ndarray, gains=GAINS) -> np.ndarray:
    hazy = ground.copy()
    hazy[BANDS] += gains[:, None, None] * veil[None]
    hazy[CIRRUS] += veil
    return hazy


def test_thin_cirrus_is_taken_out_of_the_bands_it_brightens(fixtures_dir):
    ground = _ground(fixtures_dir)
    hazy = _under_cirrus(ground, _veil(ground.shape[1:]))
    slopes = cirrus_slopes(hazy[BANDS], hazy[CIRRUS])
    # the dark envelope of a small crop whose ground changes with the veil: the right size, not exact
    assert slopes is not None and np.all((slopes > 0.4 * GAINS) & (slopes < 1.6 * GAINS)), slopes
    bands = hazy[BANDS].copy()
    assert correct_cirrus(bands, hazy[CIRRUS])
    before, after = psnr(hazy[BANDS], ground[BANDS]), psnr(bands, ground[BANDS])
    assert after > before + 6.0, (before, after)


@pytest.mark.parametrize("case", ["thick cloud", "no cirrus", "a uniform veil", "ground seen in B10"])
def test_what_is_not_thin_cirrus_is_left_as_it_is(fixtures_dir, case):
    ground = _ground(fixtures_dir)
    veil = _veil(ground.shape[1:])
    if case == "thick cloud":  # visible reflectance rising far more steeply than B10
        hazy = _under_cirrus(ground, veil, np.full(4, 3 * MAX_SLOPE, dtype=np.float32))
    elif case == "no cirrus":
        hazy = ground
    elif case == "a uniform veil":  # no spread of B10 to regress on
        hazy = _under_cirrus(ground, np.full(ground.shape[1:], 0.02, dtype=np.float32))
    else:  # B10 following the ground (dry, high terrain): no dark envelope rising with it
        hazy = ground.copy()
        hazy[CIRRUS] = 0.006 + 0.2 * (ground[7].max() - ground[7])
    bands = hazy[BANDS].copy()
    assert not correct_cirrus(bands, hazy[CIRRUS])
    np.testing.assert_array_equal(bands, hazy[BANDS])


def test_the_pipeline_clears_thin_cirrus_on_l1c_input_unless_told_not_to(fixtures_dir, tmp_path):
    """A real clear L1C crop under a synthetic thin cirrus veil, through the bundled RGBN model: with the
    correction (the default) the output is much closer to the ground and the run says what it did."""
    from viser_cr.core.pipeline import CloudRemovalRequest, remove_clouds

    ground = _ground(fixtures_dir)
    hazy = _under_cirrus(ground, _veil(ground.shape[1:]))
    source = write_raster(tmp_path / "cirrus.tif", np.round(hazy * 1e4), dtype="uint16")
    truth = ground[BANDS]
    results = {}
    for correct in (True, False):
        out = tmp_path / f"out-{correct}.tif"
        result = remove_clouds(CloudRemovalRequest([source], out, sensor="s2-l1c", cirrus_correction=correct))
        said = [line for line in result.messages if line.startswith("Thin cirrus")]
        assert said == (["Thin cirrus: the cirrus band (B10, band 11) corrected 1 of 1 tiles before the model (where "
                         "thin-cirrus physics holds; --no-cirrus-correction leaves the bands as they are)."]
                        if correct else [])
        with rasterio.open(out) as dst:
            results[correct] = psnr(np.clip(dst.read().astype(np.float32) * 1e-4, 0, 1), truth)
    assert results[True] > results[False] + 5.0, results
