"""The committed .model3 (viser:removeclouds -> gdal:cliprasterbyextent + native:rasterlayerstatistics)
through processing.run and qgis_process.bin; headless end to end with qgis_process.bin in a temporary
profile (plugins enable viser_cr, run --json), with and without torch in QGIS's Python."""

from __future__ import annotations

import pytest
from qgis_testlib import DATA, assert_same_grid, raster_facts

MODEL3 = "viser_removeclouds_clip.model3"
CLIPPED = "gdal_cliprasterbyextent_1:clipped"
CLOUD_FREE = "viser_removeclouds_1:cloud_free"
STATS = "native_rasterlayerstatistics_1:statistics"
# A 60 x 60 pixel window (10 m pixels) inside s2l1c_cloudy_96.tif (EPSG:32639).
EXTENT = "581000,581600,6101300,6101900 [EPSG:32639]"


@pytest.fixture(scope="module")
def model_path():
    return DATA / MODEL3


def test_model3_is_valid(provider, model_path):
    from qgis.core import QgsProcessingModelAlgorithm

    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(model_path))
    ok, errors = model.validate()
    assert ok, errors
    children = {c.algorithmId() for c in model.childAlgorithms().values()}
    assert children == {"viser:removeclouds", "gdal:cliprasterbyextent", "native:rasterlayerstatistics"}
    names = {p.name() for p in model.parameterDefinitions()}
    assert {"cloudy", "model_file", "extent", CLIPPED, CLOUD_FREE} <= names
    assert "/tmp" not in model_path.read_text() and "/work" not in model_path.read_text()


def test_model3_through_processing_run(provider, model_path, fixtures_dir, tiny_rgbn, tmp_path):
    import processing
    from qgis.core import QgsProcessingFeedback, QgsProcessingModelAlgorithm

    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(model_path))
    source = fixtures_dir / "s2l1c_cloudy_96.tif"
    clipped, cloud_free, stats = tmp_path / "clipped.tif", tmp_path / "cloud_free.tif", tmp_path / "stats.html"
    results = processing.run(model, {
        "cloudy": str(source), "model_file": tiny_rgbn, "extent": EXTENT,
        CLIPPED: str(clipped), CLOUD_FREE: str(cloud_free), STATS: str(stats),
    }, feedback=QgsProcessingFeedback())
    assert results[CLIPPED] == str(clipped)
    assert_same_grid(cloud_free, source)
    facts = raster_facts(clipped)
    assert facts["size"] == (60, 60) and facts["descriptions"] == ["red", "green", "blue", "nir"]
    assert "Mean" in stats.read_text(encoding="utf-8") or "mean" in stats.read_text(encoding="utf-8").lower()


@pytest.mark.qgis_process
def test_model3_through_qgis_process(qgis_process, model_path, fixtures_dir, tiny_rgbn, tmp_path):
    clipped = tmp_path / "clipped.tif"
    data, proc = qgis_process.run_json(
        str(model_path), cloudy=fixtures_dir / "s2l1c_cloudy_96.tif", model_file=tiny_rgbn, extent=EXTENT,
        **{CLIPPED: clipped, CLOUD_FREE: "TEMPORARY_OUTPUT"},
    )
    assert data["results"][CLIPPED] == str(clipped), proc.stdout[-3000:]
    facts = raster_facts(clipped)
    assert facts["size"] == (60, 60) and facts["count"] == 4


@pytest.mark.qgis_process
def test_headless_removeclouds(qgis_process, fixtures_dir, tiny_rgbn, tmp_path):
    listing = qgis_process("list").stdout
    for algorithm in ("viser:removeclouds", "viser:removecloudsstack", "viser:cloudscore", "viser:evaluate"):
        assert algorithm in listing
    help_text = qgis_process("help", "viser:removeclouds").stdout
    for name in ("INPUT", "SENSOR", "BANDS", "MODEL_FILE", "KEEP_CLEAR", "TILE_SIZE", "DEVICE", "OUTPUT", "SCORE"):
        assert name in help_text
    source = fixtures_dir / "s2l1c_cloudy_96.tif"
    out, score = tmp_path / "clear.tif", tmp_path / "score.tif"
    data, proc = qgis_process.run_json(
        "viser:removeclouds", INPUT=source, MODEL_FILE=tiny_rgbn, BANDS=[4, 3, 2, 8], TILE_SIZE=64,
        OUTPUT=out, SCORE=score,
    )
    results = data["results"]
    assert data["algorithm_details"]["id"] == "viser:removeclouds"
    assert data["provider_details"]["name"] == "VISER-CR cloud removal"
    assert data["inputs"]["INPUT"] == str(source)
    assert results["OUTPUT"] == str(out) and results["SCORE"] == str(score)
    assert results["USED_MODEL"] == "tiny-rgbn" and results["USED_SENSOR"] == "s2-l1c"
    assert results["USED_DEVICE"] == "cpu"
    facts = assert_same_grid(out, source)
    assert facts["descriptions"] == ["red", "green", "blue", "nir"] and facts["dtype"] == "UInt16"
    assert_same_grid(score, source)


@pytest.mark.qgis_process
def test_headless_bad_input_and_stack(qgis_process, fixtures_dir, tiny_rgbn, tiny_stack, tmp_path):
    out = tmp_path / "o.tif"
    _, proc = qgis_process.run_json("viser:removeclouds", check=False, INPUT=fixtures_dir / "s2l1c_cloudy_96.tif",
                                    MODEL_FILE=tiny_rgbn, BANDS=[1, 2], OUTPUT=out)
    assert proc.returncode != 0 and "needs 4" in proc.stdout + proc.stderr
    assert not out.exists()
    dates = [fixtures_dir / f"ts_s2_ImgNo_{n}_64.tif" for n in ("5_2018-03-07", "7_2018-04-01", "9_2018-04-26")]
    data, _ = qgis_process.run_json("viser:removecloudsstack", INPUTS=dates, MODEL_FILE=tiny_stack, OUTPUT=out)
    assert data["results"]["USED_MODEL"] == "tiny-rgbn-l3"
    assert_same_grid(out, dates[0])


@pytest.mark.qgis_process
def test_headless_without_torch(qgis_process_without_torch, fixtures_dir, tmp_path):
    """Debian's Python alone (no torch, no safetensors): the provider loads, the run explains."""
    qp = qgis_process_without_torch
    assert "viser:removeclouds" in qp("list").stdout
    out = tmp_path / "o.tif"
    proc = qp("run", "viser:removeclouds", "--", f"INPUT={fixtures_dir / 's2l1c_cloudy_96.tif'}", f"OUTPUT={out}",
              check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "torch" in text and "pip install" in text and "Install PyTorch" in text
    assert str(qp.profile) in text  # installs into this profile's python folder
    assert "pyenv" not in text  # QGIS's own interpreter, not the first python3 on PATH
    assert not out.exists()
