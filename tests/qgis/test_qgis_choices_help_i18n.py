"""Choices by number or name, help that reads in the dialog and the terminal, COG creation options,
translation through Qt, the Raster menu and the metadata's changelog (issue 9, points 3 and 4)."""

from __future__ import annotations

import configparser
import re

import pytest
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QCoreApplication, QTranslator
from qgis_testlib import REPO, RecordingIface, message_log

ALGORITHMS = ("viser:removeclouds", "viser:removecloudsstack", "viser:cloudscore", "viser:evaluate")


def algorithm(algorithm_id: str):
    alg = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    assert alg is not None, algorithm_id
    return alg


def run(algorithm_id: str, params: dict) -> dict:
    import processing

    return processing.run(algorithm_id, params, feedback=QgsProcessingFeedback())


# ------------------------------------------------------------------------------------------ choices
@pytest.mark.parametrize("algorithm_id", ALGORITHMS)
def test_every_choice_takes_its_number_or_its_name(provider, algorithm_id):
    alg, context = algorithm(algorithm_id), QgsProcessingContext()
    choices = alg.choice_definitions()
    assert choices, "each algorithm has at least one choice list"
    for definition in choices:
        for index, option in enumerate(definition.options()):
            for value in (index, str(index), option):
                assert alg.choice({definition.name(): value}, definition.name(), context) == option
                named = alg.with_choice_names({definition.name(): value})
                assert definition.checkValueIsAcceptable(named[definition.name()], context)


def test_choice_numbers_checked_with_a_clear_message(provider, fixtures_dir, tiny_rgbn, tmp_path):
    alg = algorithm("viser:removeclouds")
    params = {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"), "MODEL_FILE": tiny_rgbn,
              "OUTPUT": str(tmp_path / "o.tif")}
    context = QgsProcessingContext()
    assert alg.checkParameterValues({**params, "SENSOR": "1", "MODEL": 0}, context)[0]
    ok, message = alg.checkParameterValues({**params, "SENSOR": "9"}, context)
    assert not ok and "SENSOR" in message and "s2-l1c" in message and "0 to 5" in message


def test_sensor_by_number_runs(provider, fixtures_dir, tiny_rgbn, tmp_path):
    results = run("viser:removeclouds", {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"), "SENSOR": 2,
                                         "MODEL_FILE": tiny_rgbn, "OUTPUT": str(tmp_path / "o.tif")})
    assert results["USED_SENSOR"] == "s2-l2a"


@pytest.mark.qgis_process
def test_qgis_process_choices_by_number_and_help(qgis_process, fixtures_dir, tiny_stack, tmp_path):
    dates = [str(fixtures_dir / f"ts_s2_ImgNo_{n}_64.tif") for n in ("5_2018-03-07", "7_2018-04-01")]
    result, _ = qgis_process.run_json("viser:removecloudsstack", INPUTS=dates, SENSOR=1, RESAMPLING=1,
                                      MODEL=0, MODEL_FILE=tiny_stack, OUTPUT=tmp_path / "o.tif")
    assert result["results"]["USED_SENSOR"] == "s2-l1c"
    result, _ = qgis_process.run_json("viser:removecloudsstack", INPUTS=dates, SENSOR="s2-l1c",
                                      RESAMPLING="nearest", MODEL_FILE=tiny_stack, OUTPUT=tmp_path / "p.tif")
    assert result["results"]["USED_SENSOR"] == "s2-l1c"
    text = qgis_process("help", "viser:removeclouds").stdout
    assert not re.search(r"</?(b|br|p)\s*/?>", text), text
    assert "BANDS=4 BANDS=3 BANDS=2 BANDS=8" in text
    assert "SENSOR=1" in text  # choices by number are documented


# ------------------------------------------------------------------------------------------- help
@pytest.mark.parametrize("algorithm_id", ALGORITHMS)
def test_help_is_plain_text(provider, algorithm_id):
    text = algorithm(algorithm_id).shortHelpString()
    assert "<" not in text and "&" not in text, text  # the dialog does not escape, the terminal shows tags
    assert "\n\n" in text  # paragraphs: <p> in the dialog, blank lines in the terminal
    if algorithm(algorithm_id).parameterDefinition("BANDS") is not None:
        assert "repeat" in text and "BANDS=" in text


# ------------------------------------------------------------------------------ creation options
@pytest.mark.parametrize("compress", ["LZW", "ZSTD"])
def test_cog_honours_creation_options(provider, fixtures_dir, tiny_rgbn, tmp_path, compress):
    from osgeo import gdal

    out = tmp_path / "cog.tif"
    run("viser:removeclouds", {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"), "MODEL_FILE": tiny_rgbn,
                               "COG": True, "CREATION_OPTIONS": f"COMPRESS={compress}", "OUTPUT": str(out)})
    dataset = gdal.Open(str(out))
    structure = dataset.GetMetadata("IMAGE_STRUCTURE")
    assert structure.get("LAYOUT") == "COG" and structure.get("COMPRESSION") == compress, structure


@pytest.mark.parametrize("options, cog, words", [
    ("COMPRESS=LZW|TILED=YES", True, ("TILED", "COG", "Untick COG")),
    ("PREDICTOR=2", True, ("PREDICTOR=2", "FLOATING_POINT")),
    ("COMPRESS=SNAPPY", False, ("COMPRESS=SNAPPY", "GTiff", "ZSTD")),
    ("LEVEL=9", False, ("LEVEL", "GTiff")),
])
def test_creation_options_a_driver_refuses(provider, fixtures_dir, tiny_rgbn, tmp_path, options, cog, words):
    out = tmp_path / "o.tif"
    with pytest.raises(QgsProcessingException) as error:
        run("viser:removeclouds", {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"), "MODEL_FILE": tiny_rgbn,
                                   "COG": cog, "CREATION_OPTIONS": options, "OUTPUT": str(out)})
    assert "CREATION_OPTIONS" in str(error.value) and all(w in str(error.value) for w in words), str(error.value)
    assert not out.exists()


# -------------------------------------------------------------------------------------- i18n
class ShoutingTranslator(QTranslator):
    """Translates the plugin's context to upper case: shows which strings go through Qt's translate."""

    def translate(self, context, text, disambiguation=None, n=-1):
        if context != "ViserCr":
            return None
        return "".join(part if part.startswith("{") else part.upper() for part in re.split(r"(\{\w*\})", text))

    def isEmpty(self):  # noqa: N802
        return False


def test_user_visible_strings_go_through_tr(provider):
    translator = ShoutingTranslator()
    QCoreApplication.installTranslator(translator)
    try:
        alg = algorithm("viser:removeclouds")
        assert alg.displayName() == "REMOVE CLOUDS"
        assert alg.group() == "CLOUD REMOVAL"
        assert alg.shortHelpString().startswith("REMOVES CLOUDS")
        alg.initAlgorithm()
        assert alg.parameterDefinition("INPUT").description() == "CLOUDY RASTER LAYER"
        assert provider.name() == "VISER-CR CLOUD REMOVAL"
        with pytest.raises(QgsProcessingException, match="INPUT: THE RASTER LAYER 'nothing' IS NOT VALID"):
            alg.layer_path(QgsRasterLayer("/nonexistent/none.tif", "nothing"), "INPUT")
    finally:
        QCoreApplication.removeTranslator(translator)
    assert algorithm("viser:removeclouds").displayName() == "Remove clouds"


def test_translation_scaffolding():
    from viser_cr.viser_qgis import i18n

    project = (REPO / "i18n" / "viser_cr.pro").read_text(encoding="utf-8")
    for source in re.findall(r"\.\./(viser_qgis/\w+\.py)", project):
        assert (REPO / source).is_file(), source
    assert "../viser_qgis/dock.py" in project
    assert i18n.install_translator("xx") is None  # no translation shipped for it: English stays


# ------------------------------------------------------------------------------ menu, metadata
def test_dock_action_in_the_raster_menu(viser_plugin, qgis_iface):
    from viser_cr import classFactory

    viser_plugin.unload()
    try:
        iface = RecordingIface(qgis_iface)
        plugin = classFactory(iface)
        plugin.initGui()
        action = plugin.action
        assert ("addPluginToRasterMenu", "&VISER-CR", action) in iface.calls
        assert ("addRasterToolBarIcon", action) in iface.calls
        assert action.text() == "Cloud removal panel"  # not the submenu's name again
        assert not [call for call in iface.calls if call[0] in ("addPluginToMenu", "addToolBarIcon")]
        plugin.unload()
        assert ("removePluginRasterMenu", "&VISER-CR", action) in iface.calls
        assert ("removeRasterToolBarIcon", action) in iface.calls
    finally:
        viser_plugin.initProcessing()


def test_metadata_changelog():
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt", encoding="utf-8")
    general = metadata["general"]
    assert general["category"] == "Raster"
    changelog = general.get("changelog", "")
    assert general["version"] in changelog and len(changelog.splitlines()) >= 3


# --------------------------------------------------------------------------------- errors once
@pytest.mark.qgis_process
def test_qgis_process_prints_a_plugin_error_once(qgis_process, fixtures_dir, tiny_rgbn, tmp_path):
    out = tmp_path / "o.tif"
    _, proc = qgis_process.run_json("viser:removeclouds", check=False, INPUT=fixtures_dir / "s2l1c_cloudy_96.tif",
                                    MODEL_FILE=tiny_rgbn, BANDS=[1, 2], OUTPUT=out)
    assert proc.returncode != 0 and not out.exists()
    text = proc.stdout + proc.stderr
    assert text.count("needs 4") == 1, text


def test_a_plugin_error_is_logged_once(provider, fixtures_dir, tiny_rgbn, tmp_path):
    with message_log() as messages:
        with pytest.raises(QgsProcessingException, match="CLOUD_MASK"):
            run("viser:removeclouds", {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"), "MODEL_FILE": tiny_rgbn,
                                       "CLOUD_MASK": str(fixtures_dir / "s2l1c_cloudy_96.tif"), "KEEP_CLEAR": False,
                                       "OUTPUT": str(tmp_path / "o.tif")})
    assert len([m for m in messages if m[1] == 2 and "CLOUD_MASK" in m[2]]) == 1, messages
