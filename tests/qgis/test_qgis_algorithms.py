"""Each algorithm through processing.run on the committed real crops, with the tiny models."""

from __future__ import annotations

import math
import shutil

import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback
from qgis_testlib import assert_same_grid, raster_facts

pytestmark = pytest.mark.usefixtures("provider")


class RecordingFeedback(QgsProcessingFeedback):
    """A Processing feedback that keeps every info line of the run (``logged``)."""

    def __init__(self):
        super().__init__()
        self.logged: list[str] = []

    def pushInfo(self, info):  # noqa: N802
        self.logged.append(info)
        super().pushInfo(info)


def run(algorithm: str, params: dict, feedback=None, context=None) -> dict:
    import processing

    return processing.run(algorithm, params, feedback=feedback or QgsProcessingFeedback(), context=context)


def test_removeclouds_sentinel2(fixtures_dir, tiny_rgbn, tmp_path):
    source = fixtures_dir / "s2l1c_cloudy_96.tif"
    out, score = tmp_path / "clear.tif", tmp_path / "score.tif"
    results = run("viser:removeclouds", {"INPUT": str(source), "MODEL_FILE": tiny_rgbn, "OUTPUT": str(out),
                                         "SCORE": str(score)})
    assert results["OUTPUT"] == str(out) and results["SCORE"] == str(score)
    assert results["UNCERTAINTY"] is None
    assert results["USED_MODEL"] == "tiny-rgbn" and results["USED_SENSOR"] == "s2-l1c"
    assert results["USED_DEVICE"] == "cpu" and results["TILES"] >= 1
    facts = assert_same_grid(out, source)
    assert facts["count"] == 4 and facts["descriptions"] == ["red", "green", "blue", "nir"]
    assert facts["dtype"] == raster_facts(source)["dtype"]
    score_facts = assert_same_grid(score, source)
    assert score_facts["count"] == 1 and score_facts["descriptions"][0]


def test_removeclouds_rgbn8_keep_clear_uncertainty_cog(fixtures_dir, tiny_rgbn, tmp_path):
    source = fixtures_dir / "rgbn8_96.tif"
    out, unc = tmp_path / "clear.tif", tmp_path / "unc.tif"
    results = run("viser:removeclouds", {
        "INPUT": str(source), "MODEL_FILE": tiny_rgbn, "KEEP_CLEAR": True, "SENSOR": "rgbn8", "BANDS": [1, 2, 3, 4],
        "TILE_SIZE": 96, "OVERLAP": 0, "COG": True, "CREATION_OPTIONS": "COMPRESS=DEFLATE",
        "OUTPUT": str(out), "UNCERTAINTY": str(unc),
    })
    assert results["USED_SENSOR"] == "rgbn8"
    facts = assert_same_grid(out, source)
    assert facts["dtype"] == "Byte" and facts["descriptions"] == ["red", "green", "blue", "nir"]
    assert assert_same_grid(unc, source)["count"] >= 1
    from osgeo import gdal

    ds = gdal.Open(str(out))
    assert ds.GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"


def test_removeclouds_temporary_output_and_extent(fixtures_dir, tiny_rgb, tmp_path):
    """EXTENT in another CRS (what the dock's preview sends) gives a sub-window on the input grid."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsRasterLayer

    source = fixtures_dir / "landsat7_rgb8_collar_96.tif"
    layer = QgsRasterLayer(str(source), "l7")
    full = layer.extent()
    sub = full.buffered(-full.width() / 4)
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    rect = QgsCoordinateTransform(layer.crs(), wgs84, QgsProject.instance()).transformBoundingBox(sub)
    extent = f"{rect.xMinimum()},{rect.xMaximum()},{rect.yMinimum()},{rect.yMaximum()} [EPSG:4326]"
    results = run("viser:removeclouds", {"INPUT": str(source), "MODEL_FILE": tiny_rgb, "EXTENT": extent,
                                         "OUTPUT": "TEMPORARY_OUTPUT"})
    facts = raster_facts(results["OUTPUT"])
    assert results["OUTPUT"].endswith(".tif")
    assert facts["count"] == 3 and facts["descriptions"] == ["red", "green", "blue"]
    assert 16 <= facts["size"][0] < 96 and 16 <= facts["size"][1] < 96
    # Same pixel size and pixel-aligned with the input.
    gt, ref = facts["transform"], raster_facts(source)["transform"]
    assert gt[1] == pytest.approx(ref[1]) and gt[5] == pytest.approx(ref[5])
    assert ((gt[0] - ref[0]) / ref[1]) == pytest.approx(round((gt[0] - ref[0]) / ref[1]), abs=1e-6)


def test_removecloudsstack(fixtures_dir, tiny_stack, tmp_path):
    dates = [fixtures_dir / n for n in ("ts_s2_ImgNo_5_2018-03-07_64.tif", "ts_s2_ImgNo_7_2018-04-01_64.tif",
                                       "ts_s2_ImgNo_9_2018-04-26_64.tif")]
    out = tmp_path / "stack.tif"
    results = run("viser:removecloudsstack", {
        "INPUTS": [str(d) for d in dates], "REFERENCE": str(dates[1]), "RESAMPLING": "nearest",
        "MODEL_FILE": tiny_stack, "OUTPUT": str(out),
    })
    assert results["USED_MODEL"] == "tiny-rgbn-l3"
    facts = assert_same_grid(out, dates[1])
    assert facts["descriptions"] == ["red", "green", "blue", "nir"]


def test_removecloudsstack_takes_one_quality_band_per_date(fixtures_dir, tiny_stack, tmp_path):
    """CLOUD_MASKS: one Fmask raster per date in the order of INPUTS (the reference second here), read with
    CLOUD_MASK_TYPE; the reference's clear pixels are kept exactly; a count that fits neither one mask nor one
    per date, or masks without KEEP_CLEAR, are refused."""
    import numpy as np
    import rasterio
    from rasters import write_raster

    dates = [fixtures_dir / n for n in ("ts_s2_ImgNo_5_2018-03-07_64.tif", "ts_s2_ImgNo_7_2018-04-01_64.tif",
                                       "ts_s2_ImgNo_9_2018-04-26_64.tif")]
    masks = []
    for i, date in enumerate(dates):
        with rasterio.open(date) as src:
            fmask = np.zeros((1, src.height, src.width), np.uint8)
            fmask[0, 10:30, 10:30] = 4 if i != 2 else 0  # cloud on the first two dates
            masks.append(str(write_raster(tmp_path / f"fmask{i}.tif", fmask, crs=src.crs, transform=src.transform)))
            if i == 1:
                reference = src.read([4, 3, 2, 8])
    out = tmp_path / "stack.tif"
    params = {"INPUTS": [str(d) for d in dates], "REFERENCE": str(dates[1]), "MODEL_FILE": tiny_stack,
              "KEEP_CLEAR": True, "CLOUD_MASKS": masks, "CLOUD_MASK_TYPE": "fmask", "OUTPUT": str(out)}
    run("viser:removecloudsstack", params)
    with rasterio.open(out) as dst:
        np.testing.assert_array_equal(dst.read()[:, 44:, 44:], reference[:, 44:, 44:])
    _bad("viser:removecloudsstack", {**params, "CLOUD_MASKS": masks[:2]}, r"2 cloud mask\(s\) for 3 input\(s\)")
    _bad("viser:removecloudsstack", {**params, "KEEP_CLEAR": False}, "KEEP_CLEAR")


def test_cloudscore(fixtures_dir, tiny_rgbn, tmp_path):
    source = fixtures_dir / "s2l1c_cloudy_96.tif"
    out = tmp_path / "score.tif"
    results = run("viser:cloudscore", {"INPUT": str(source), "MODEL_FILE": tiny_rgbn, "OUTPUT": str(out)})
    assert results["OUTPUT"] == str(out)
    facts = assert_same_grid(out, source)
    assert facts["count"] == 1 and facts["dtype"] == "Float32" and facts["descriptions"][0]
    from osgeo import gdal

    dataset = gdal.Open(str(out))  # keep the dataset alive while its band is used
    values = dataset.GetRasterBand(1).ComputeRasterMinMax(False)
    assert 0.0 <= values[0] <= values[1] <= 1.0


def test_evaluate(fixtures_dir, tiny_rgbn, tmp_path):
    prediction = tmp_path / "clear.tif"
    run("viser:removeclouds", {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"), "MODEL_FILE": tiny_rgbn,
                               "OUTPUT": str(prediction)})
    report = tmp_path / "report.html"
    results = run("viser:evaluate", {
        "PREDICTION": str(prediction), "REFERENCE": str(fixtures_dir / "s2l1c_clear_96.tif"),
        "REFERENCE_BANDS": [4, 3, 2, 8], "SENSOR": "s2-l1c", "OUTPUT_HTML": str(report),
    })
    for key in ("PSNR", "SSIM", "MAE"):
        assert isinstance(results[key], float) and math.isfinite(results[key]), key
    assert 0 < results["PSNR"] < 100 and -1 <= results["SSIM"] <= 1 and results["MAE"] >= 0
    assert results["PIXELS"] == 96 * 96 and results["USED_PROTOCOL"] == "clean"
    text = report.read_text(encoding="utf-8")
    assert "PSNR" in text and f"{results['PSNR']:.2f}" in text and "clean" in text
    # A perfect prediction: the reference against itself.
    same = run("viser:evaluate", {"PREDICTION": str(fixtures_dir / "s2l1c_clear_96.tif"),
                                  "REFERENCE": str(fixtures_dir / "s2l1c_clear_96.tif")})
    assert same["MAE"] == 0 and same["SSIM"] == pytest.approx(1.0)


@pytest.mark.parametrize("when", ["before", "during"])
def test_cancel_leaves_no_file(fixtures_dir, tiny_rgbn, tmp_path, when):
    feedback = QgsProcessingFeedback()
    if when == "before":
        feedback.cancel()
    else:
        feedback.progressChanged.connect(lambda value: feedback.cancel() if value > 0 else None)
    out, score = tmp_path / "clear.tif", tmp_path / "score.tif"
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        run("viser:removeclouds", {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"), "MODEL_FILE": tiny_rgbn,
                                   "TILE_SIZE": 32, "OVERLAP": 8, "OUTPUT": str(out), "SCORE": str(score)},
            feedback=feedback)
    assert not out.exists() and not score.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------- bad input
def _bad(algorithm, params, match):
    with pytest.raises(QgsProcessingException, match=match) as info:
        run(algorithm, params)
    message = str(info.value)
    assert "There were errors" not in message and len(message) > 30
    return message


def test_wrong_band_count(fixtures_dir, tiny_rgbn, tmp_path):
    out = tmp_path / "o.tif"
    message = _bad("viser:removeclouds", {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"),
                                          "MODEL_FILE": tiny_rgbn, "BANDS": [1, 2], "OUTPUT": str(out)},
                   r"needs 4")
    assert "red, green, blue, nir" in message
    message = _bad("viser:removeclouds", {"INPUT": str(fixtures_dir / "landsat8_bgr_160x128.tif"),
                                          "SENSOR": "landsat-c2l2", "MODEL_FILE": tiny_rgbn, "OUTPUT": str(out)},
                   r"3 band")
    assert "--" not in message  # the engine's command-line advice names Processing parameters here
    assert not out.exists()


def test_unknown_sensor_advice_names_parameters(fixtures_dir, tiny_rgb, tmp_path):
    message = _bad("viser:removeclouds", {"INPUT": str(fixtures_dir / "landsat8_bgr_160x128.tif"),
                                          "MODEL_FILE": tiny_rgb, "OUTPUT": str(tmp_path / "o.tif")}, "SENSOR")
    assert "--sensor" not in message


def test_empty_stack(tiny_stack, tmp_path):
    _bad("viser:removecloudsstack", {"INPUTS": [], "MODEL_FILE": tiny_stack, "OUTPUT": str(tmp_path / "o.tif")},
         "INPUTS is empty")


def test_stack_without_overlap(fixtures_dir, tiny_stack, tmp_path):
    out = tmp_path / "o.tif"
    _bad("viser:removecloudsstack", {
        "INPUTS": [str(fixtures_dir / "s2l1c_cloudy_96.tif"), str(fixtures_dir / "ts_s2_ImgNo_5_2018-03-07_64.tif")],
        "MODEL_FILE": tiny_stack, "OUTPUT": str(out)}, "overlap")
    assert not out.exists()


def test_stack_reference_not_in_inputs(fixtures_dir, tiny_stack, tmp_path):
    _bad("viser:removecloudsstack", {
        "INPUTS": [str(fixtures_dir / "ts_s2_ImgNo_5_2018-03-07_64.tif")],
        "REFERENCE": str(fixtures_dir / "ts_s2_ImgNo_9_2018-04-26_64.tif"),
        "MODEL_FILE": tiny_stack, "OUTPUT": str(tmp_path / "o.tif")}, "not one of INPUTS")


def test_missing_weights_file(fixtures_dir, tiny_rgbn, tmp_path):
    card = tmp_path / "lonely.json"
    shutil.copy(tiny_rgbn, card)  # the card without its .safetensors
    out = tmp_path / "o.tif"
    _bad("viser:removeclouds", {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"), "MODEL_FILE": str(card),
                                "OUTPUT": str(out)}, r"weights file .* missing")
    _bad("viser:removeclouds", {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"),
                                "MODEL_FILE": str(tmp_path / "nothere.safetensors"), "OUTPUT": str(out)},
         "MODEL_FILE: .* does not exist")
    assert not out.exists()


def test_bad_device_and_options(fixtures_dir, tiny_rgbn, tmp_path):
    source = str(fixtures_dir / "s2l1c_cloudy_96.tif")
    out = str(tmp_path / "o.tif")
    _bad("viser:removeclouds", {"INPUT": source, "MODEL_FILE": tiny_rgbn, "DEVICE": "cuda:3", "OUTPUT": out},
         "DEVICE")
    _bad("viser:removeclouds", {"INPUT": source, "MODEL_FILE": tiny_rgbn, "CREATION_OPTIONS": "DEFLATE",
                                "OUTPUT": out}, "KEY=VALUE")
    _bad("viser:removeclouds", {"INPUT": source, "MODEL_FILE": tiny_rgbn, "CLOUD_MASK": source, "KEEP_CLEAR": False,
                                "OUTPUT": out}, "KEEP_CLEAR")


def test_evaluate_grid_mismatch(fixtures_dir):
    _bad("viser:evaluate", {"PREDICTION": str(fixtures_dir / "s2l1c_clear_96.tif"),
                            "REFERENCE": str(fixtures_dir / "landsat8_bgr_160x128.tif")}, "same grid")


def test_toolbox_run_loads_a_true_colour_layer(fixtures_dir, tiny_rgbn, tmp_path, qgis_new_project):
    """As the Toolbox dialog runs it: the output is loaded into the project, named and styled."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import (
        QgsApplication,
        QgsMultiBandColorRenderer,
        QgsProcessingContext,
        QgsProcessingOutputLayerDefinition,
        QgsProject,
    )

    project = QgsProject.instance()
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = QgsProcessingFeedback()
    alg = QgsApplication.processingRegistry().createAlgorithmById("viser:removeclouds")
    out = tmp_path / "clear.tif"
    params = {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"), "MODEL_FILE": tiny_rgbn,
              "OUTPUT": QgsProcessingOutputLayerDefinition(str(out), project)}
    results, ok = alg.run(params, context, feedback)
    assert ok and results["OUTPUT"] == str(out)
    assert handleAlgorithmResults(alg, context, feedback)
    layers = project.mapLayersByName("s2l1c_cloudy_96 cloud-free")
    assert len(layers) == 1, [layer.name() for layer in project.mapLayers().values()]
    assert layers[0].customProperty("viser_cr/style") == "true-colour"  # our post-processor ran
    renderer = layers[0].renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (1, 2, 3)
    stretch = renderer.redContrastEnhancement()
    assert stretch is not None and stretch.maximumValue() > stretch.minimumValue()


def test_long_stack_with_a_source_date_layer(fixtures_dir, tiny_stack, tmp_path, qgis_new_project):
    """Five dates for a three-date model, as the Toolbox runs it: the log says how the dates were chosen
    and which were used; the source-date raster loads with one colour per input date."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import (
        QgsApplication,
        QgsPalettedRasterRenderer,
        QgsProcessingContext,
        QgsProcessingOutputLayerDefinition,
        QgsProject,
    )

    names = ("ts_s2_ImgNo_5_2018-03-07_64.tif", "ts_s2_ImgNo_7_2018-04-01_64.tif", "ts_s2_ImgNo_9_2018-04-26_64.tif")
    dates = [str(fixtures_dir / n) for n in names]
    for k in (1, 2):
        dates.append(str(shutil.copy(dates[k], tmp_path / f"extra{k}.tif")))
    project = QgsProject.instance()
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = RecordingFeedback()
    logged = feedback.logged
    alg = QgsApplication.processingRegistry().createAlgorithmById("viser:removecloudsstack")
    out, sources = tmp_path / "clear.tif", tmp_path / "sources.tif"
    params = {"INPUTS": dates, "MODEL_FILE": tiny_stack, "TILE_SIZE": 32, "OVERLAP": 8,
              "OUTPUT": str(out), "SOURCE_DATES": QgsProcessingOutputLayerDefinition(str(sources), project)}
    results, ok = alg.run(params, context, feedback)
    assert ok and results["SOURCE_DATES"] == str(sources)
    assert any("5 dates, model tiny-rgbn-l3 takes 3" in line for line in logged), logged
    assert any(line.startswith("Dates used") for line in logged), logged
    assert handleAlgorithmResults(alg, context, feedback)
    (layer,) = [layer for layer in project.mapLayers().values() if layer.source() == str(sources)]
    assert layer.customProperty("viser_cr/style") == "source-dates"
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    labels = [c.label for c in renderer.classes()]
    assert labels[0] == "no date (spatial fill)" and labels[1] == "1: ts_s2_ImgNo_5_2018-03-07_64"
    assert len(labels) == 6 and labels[5] == "5: extra2"


def test_removeclouds_takes_the_users_cloud_threshold_and_says_what_it_called_cloud(fixtures_dir, tiny_rgbn,
                                                                                     tmp_path):
    """CLOUD_THRESHOLD reaches the engine; the run's log names the share it called cloud and, on 8-bit imagery,
    which parameters to move (the Processing names, not the command line's)."""
    feedback = RecordingFeedback()
    logged = feedback.logged
    out = tmp_path / "clear.tif"
    params = {"INPUT": str(fixtures_dir / "rgbn8_96.tif"), "MODEL_FILE": tiny_rgbn, "SENSOR": "rgbn8",
              "CLOUD_THRESHOLD": 0.3, "OUTPUT": str(out)}
    run("viser:removeclouds", params, feedback=feedback)
    assert out.exists()
    assert any(line.startswith("Cloud threshold 0.3 (yours") for line in logged), logged
    (share,) = [line for line in logged if line.startswith("Clouds: the score calls")]
    assert "(score above 0.3)" in share and "look at the score (SCORE) and raise CLOUD_THRESHOLD (e.g. 0.4)" in share
    with pytest.raises(QgsProcessingException):
        run("viser:removeclouds", dict(params, CLOUD_THRESHOLD=1.5, OUTPUT=str(tmp_path / "never.tif")))
    assert not (tmp_path / "never.tif").exists()


@pytest.mark.parametrize("algorithm_id", ["viser:removeclouds", "viser:removecloudsstack"])
def test_keep_clear_is_on_by_default(provider, algorithm_id):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    assert alg.parameterDefinition("KEEP_CLEAR").defaultValue() is True
    assert "on by default" in alg.shortHelpString()


@pytest.mark.parametrize("fill", [True, False, None])
def test_removeclouds_cloud_shadows_parameter(tmp_path, fill):
    """The bundled RGBN model fills cloud shadows and says so (in Processing's names), unless CLOUD_SHADOWS is
    false; left out (a model saved before the parameter existed), it is on."""
    from pathlib import Path

    import numpy as np
    from rasters import write_raster

    crop = Path(__file__).resolve().parents[1] / "fixtures" / "ukis_s2_shadows_128.npz"  # not a layer: not copied
    source = write_raster(tmp_path / "ukis.tif", np.load(crop)["img"])
    feedback = RecordingFeedback()
    params = {"INPUT": str(source), "BANDS": [1, 2, 3, 4], "SCALE": 0.0001, "OFFSET": 0.0,
              "OUTPUT": str(tmp_path / "clear.tif")}
    if fill is not None:
        params["CLOUD_SHADOWS"] = fill
    run("viser:removeclouds", params, feedback=feedback)
    said = [line for line in feedback.logged if line.startswith("Cloud shadows")]
    assert said == (["Cloud shadows: shadows cast in one direction by the clouds the score finds, on ground darker "
                     "than the rest, count as cloud and are filled too (CLOUD_SHADOWS=false leaves them)."]
                    if fill is not False else []), feedback.logged


def test_removeclouds_reads_a_product_quality_band_as_the_cloud_mask(fixtures_dir, tiny_rgbn, tmp_path):
    """CLOUD_MASK_TYPE by name or number, CLOUD_MASK_BUFFER given or left out: an SCL band as the mask keeps its
    snow (tiny model: its cloud changes little); a QA_PIXEL band said to be SCL is refused in Processing's names."""
    import numpy as np
    import rasterio
    from rasters import write_raster

    source = str(fixtures_dir / "s2l1c_cloudy_96.tif")
    with rasterio.open(source) as src:
        scl = np.full((1, 96, 96), 4, np.uint8)
        scl[0, 20:50, 20:50], scl[0, 60:80, 60:80] = 9, 11  # cloud high probability, snow
        mask = write_raster(tmp_path / "scl.tif", scl, crs=src.crs, transform=src.transform)
        qa = write_raster(tmp_path / "qa.tif", np.full((1, 96, 96), 21824, np.uint16), crs=src.crs,
                          transform=src.transform)
        original = src.read([4, 3, 2, 8])
    for choice, buffer in (("sentinel2-scl", None), (2, 3)):
        out = tmp_path / f"clear_{choice}.tif"
        params = {"INPUT": source, "MODEL_FILE": tiny_rgbn, "KEEP_CLEAR": True, "CLOUD_MASK": str(mask),
                  "CLOUD_MASK_TYPE": choice, "OUTPUT": str(out)}
        if buffer is not None:
            params["CLOUD_MASK_BUFFER"] = buffer
        run("viser:removeclouds", params)
        with rasterio.open(out) as dst:
            np.testing.assert_array_equal(dst.read()[:, 64:76, 64:76], original[:, 64:76, 64:76])
    _bad("viser:removeclouds", {"INPUT": source, "MODEL_FILE": tiny_rgbn, "KEEP_CLEAR": True, "CLOUD_MASK": str(qa),
                                "CLOUD_MASK_TYPE": "sentinel2-scl", "OUTPUT": str(tmp_path / "o.tif")},
         r"qa.tif has values \(21824\).*CLOUD_MASK_TYPE")


def _l1c_run_said(fixtures_dir, tiny_rgbn, tmp_path, name: str, value, prefix: str) -> tuple[list[str], list[str]]:
    """Run removeclouds on the 13-band L1C fixture with ``name=value`` (left out when None): the logged lines
    that start with ``prefix``, and the whole log."""
    feedback = RecordingFeedback()
    params = {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"), "MODEL_FILE": tiny_rgbn,
              "OUTPUT": str(tmp_path / "clear.tif")}
    if value is not None:
        params[name] = value
    run("viser:removeclouds", params, feedback=feedback)
    return [line for line in feedback.logged if line.startswith(prefix)], feedback.logged


@pytest.mark.parametrize("source", [None, "model", 2, "l1c-classifier"])
def test_removeclouds_cloud_source_parameter(fixtures_dir, tiny_rgbn, tmp_path, source):
    """On 13-band L1C a run adds the bundled L1C cloud classifier's mask to the score (no optional package needed)
    and says so in Processing's names; CLOUD_SOURCE model takes the score alone, 2 the s2cloudless package's mask
    (the test venv has it), l1c-classifier insists on the bundled one."""
    said, logged = _l1c_run_said(fixtures_dir, tiny_rgbn, tmp_path, "CLOUD_SOURCE", source, "Cloud source")
    what = ("s2cloudless's cloud mask (" if source == 2 else
            "the bundled L1C cloud classifier's mask (viser-l1c-cloud, distilled from s2cloudless; ")
    assert said == ([f"Cloud source: {what}probability above 0.6, averaged over 4 px, grown by 2 px) is added to "
                     "the model's cloud score: the fill takes both (CLOUD_SOURCE=model takes the score alone)."]
                    if source != "model" else []), logged


@pytest.mark.parametrize("correct", [True, False, None])
def test_removeclouds_cirrus_correction_parameter(fixtures_dir, tiny_rgbn, tmp_path, correct):
    """On 13-band L1C the run says what the cirrus band corrected (in Processing's names), unless told not to;
    left out (a model saved before the parameter existed), it is on."""
    said, logged = _l1c_run_said(fixtures_dir, tiny_rgbn, tmp_path, "CIRRUS_CORRECTION", correct, "Thin cirrus")
    assert said == (["Thin cirrus: the cirrus band (B10, band 11) corrected 0 of 4 tiles before the model (where "
                     "thin-cirrus physics holds; CIRRUS_CORRECTION=false leaves the bands as they are)."]
                    if correct is not False else []), logged
