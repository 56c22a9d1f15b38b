"""viser:evaluate's report (issue 9, point 5): a table per region and the cloudy input as a baseline."""

from __future__ import annotations

import math
import re

import pytest
from qgis.core import QgsProcessingFeedback

pytestmark = pytest.mark.usefixtures("provider")


def run(algorithm_id: str, params: dict) -> dict:
    import processing

    return processing.run(algorithm_id, params, feedback=QgsProcessingFeedback())


@pytest.fixture(scope="module")
def prediction(fixtures_dir, tiny_rgbn, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "clear.tif"
    run("viser:removeclouds", {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"), "MODEL_FILE": tiny_rgbn,
                               "OUTPUT": str(out)})
    return out


@pytest.fixture()
def left_half_mask(fixtures_dir, tmp_path):
    """Cloud mask on the fixtures' grid: the left half cloudy (1), the right half clear (0)."""
    from osgeo import gdal

    source = gdal.Open(str(fixtures_dir / "s2l1c_cloudy_96.tif"))
    path = tmp_path / "mask.tif"
    mask = gdal.GetDriverByName("GTiff").Create(str(path), source.RasterXSize, source.RasterYSize, 1, gdal.GDT_Byte)
    mask.SetGeoTransform(source.GetGeoTransform())
    mask.SetProjection(source.GetProjection())
    values = bytearray(source.RasterXSize * source.RasterYSize)
    for row in range(source.RasterYSize):
        for col in range(source.RasterXSize // 2):
            values[row * source.RasterXSize + col] = 1
    mask.GetRasterBand(1).WriteRaster(0, 0, source.RasterXSize, source.RasterYSize, bytes(values))
    mask = None
    return path


def captions(text: str) -> list[str]:
    return re.findall(r"<caption>(.*?)</caption>", text)


def test_report_has_a_table_per_region_with_the_cloudy_baseline(fixtures_dir, prediction, left_half_mask,
                                                                 tmp_path):
    from viser_cr.core.metrics import evaluate_rasters

    report = tmp_path / "report.html"
    cloudy, clear = fixtures_dir / "s2l1c_cloudy_96.tif", fixtures_dir / "s2l1c_clear_96.tif"
    results = run("viser:evaluate", {
        "PREDICTION": str(prediction), "REFERENCE": str(clear), "REFERENCE_BANDS": [4, 3, 2, 8],
        "SENSOR": "s2-l1c", "MASK": str(left_half_mask), "CLOUDY": str(cloudy), "OUTPUT_HTML": str(report),
    })
    # The baseline: the cloudy input's own bands 4, 3, 2, 8 (it has the reference's layout) against the reference.
    expected = evaluate_rasters(cloudy, clear, bands=[4, 3, 2, 8], reference_bands=[4, 3, 2, 8], sensor="s2-l1c",
                                mask=left_half_mask)
    assert results["CLOUDY_PSNR"] == pytest.approx(expected["psnr"])
    assert results["CLOUDY_MAE"] == pytest.approx(expected["mae"])
    assert math.isfinite(results["PSNR"]) and math.isfinite(results["CLOUDY_SSIM"])
    text = report.read_text(encoding="utf-8")
    assert captions(text)[1:4] == ["All pixels", "Cloudy pixels (where the mask is non-zero)", "Clear pixels"]
    # One row in "What was compared" (its file), one in each region's table.
    assert text.count("<td>Cloudy input (baseline)</td>") == 4 and text.count("<td>Gain over the cloudy input</td>") == 3
    assert f"<td>{results['PSNR']:.2f}</td>" in text and f"<td>{results['CLOUDY_PSNR']:.2f}</td>" in text
    assert f"<td>{expected['pixels_cloudy']}</td>" in text and f"<td>{expected['pixels_clear']}</td>" in text
    # Readable: no Python dict or list, no bare internal keys.
    assert "{'" not in text and "['" not in text and "protocol_description" not in text and "per_band" not in text
    assert "reflectance = DN x 0.0001 + 0" in text


def test_report_without_mask_or_baseline_says_how_to_get_them(fixtures_dir, prediction, tmp_path):
    report = tmp_path / "report.html"
    run("viser:evaluate", {"PREDICTION": str(prediction), "REFERENCE": str(fixtures_dir / "s2l1c_clear_96.tif"),
                           "REFERENCE_BANDS": [4, 3, 2, 8], "SENSOR": "s2-l1c", "OUTPUT_HTML": str(report)})
    text = report.read_text(encoding="utf-8")
    assert "All pixels" in captions(text) and "Clear pixels" not in captions(text)
    assert "MASK" in text and "CLOUDY" in text and "Cloudy input (baseline)" not in text
