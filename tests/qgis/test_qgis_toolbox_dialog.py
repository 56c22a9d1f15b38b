"""The Processing Toolbox dialog as analysts use it: Run with "Open output file after running algorithm".

The dialog runs the algorithm in a worker thread (QgsProcessingAlgRunnerTask) and then loads the
outputs registered in its context; processing.run alone does not exercise that path.
"""

from __future__ import annotations

import pytest
from qgis.core import QgsApplication, QgsMultiBandColorRenderer, QgsProject, QgsRasterLayer
from qgis_testlib import wait_for as wait_for_task

pytestmark = pytest.mark.usefixtures("provider")


def wait_for(condition) -> None:
    wait_for_task(condition, timeout=120.0, what="the dialog's run")



def run_dialog(algorithm_id: str, parameters: dict) -> dict:
    """Open the Toolbox dialog of ``algorithm_id`` with ``parameters``, press Run, wait for the end."""
    import processing
    from qgis.PyQt.QtWidgets import QDialogButtonBox

    dialog = processing.createAlgorithmDialog(algorithm_id, parameters)
    assert dialog is not None
    finished = []
    dialog.algorithmFinished.connect(lambda ok, results: finished.append((ok, results)))
    dialog.show()
    dialog.buttonBox().button(QDialogButtonBox.Ok).click()  # the dialog's "Run" button
    wait_for(lambda: finished)
    QgsApplication.processEvents()
    ok, results = finished[0]
    log = dialog.textLog.toPlainText() if hasattr(dialog, "textLog") else ""
    dialog.close()
    dialog.deleteLater()
    assert ok, log
    return results


@pytest.fixture()
def toolbox_iface(qgis_iface, monkeypatch):
    """pytest-qgis's iface, completed with the browser model the Processing dialog asks for."""
    from qgis.gui import QgsBrowserGuiModel

    model = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: model, raising=False)
    yield qgis_iface


def raster_layers() -> list[QgsRasterLayer]:
    return [layer for layer in QgsProject.instance().mapLayers().values() if isinstance(layer, QgsRasterLayer)]


def test_toolbox_dialog_loads_removeclouds_output(fixtures_dir, tiny_rgbn, tmp_path, toolbox_iface,
                                                  qgis_new_project):
    source = QgsRasterLayer(str(fixtures_dir / "s2l1c_cloudy_96.tif"), "cloudy")
    QgsProject.instance().addMapLayer(source)
    out = tmp_path / "clear.tif"
    score = tmp_path / "score.tif"
    run_dialog("viser:removeclouds", {"INPUT": source.id(), "MODEL_FILE": tiny_rgbn, "OUTPUT": str(out),
                                      "SCORE": str(score)})
    loaded = [layer for layer in raster_layers() if layer.source() == str(out)]
    assert len(loaded) == 1, [(layer.name(), layer.source()) for layer in raster_layers()]
    assert loaded[0].name() == "cloudy cloud-free"
    assert loaded[0].customProperty("viser_cr/style") == "true-colour"
    assert isinstance(loaded[0].renderer(), QgsMultiBandColorRenderer)
    scores = [layer for layer in raster_layers() if layer.source() == str(score)]
    assert len(scores) == 1 and scores[0].customProperty("viser_cr/style") == "grey"


def test_toolbox_dialog_loads_cloudscore_output(fixtures_dir, tiny_rgbn, tmp_path, toolbox_iface, qgis_new_project):
    source = QgsRasterLayer(str(fixtures_dir / "s2l1c_cloudy_96.tif"), "cloudy")
    QgsProject.instance().addMapLayer(source)
    out = tmp_path / "score.tif"
    run_dialog("viser:cloudscore", {"INPUT": source.id(), "MODEL_FILE": tiny_rgbn, "OUTPUT": str(out)})
    loaded = [layer for layer in raster_layers() if layer.source() == str(out)]
    assert len(loaded) == 1, [(layer.name(), layer.source()) for layer in raster_layers()]
    assert loaded[0].customProperty("viser_cr/style") == "grey"


def test_toolbox_dialog_loads_stack_temporary_output(fixtures_dir, tiny_stack, toolbox_iface, qgis_new_project):
    dates = []
    for name in ("ts_s2_ImgNo_5_2018-03-07_64", "ts_s2_ImgNo_7_2018-04-01_64", "ts_s2_ImgNo_9_2018-04-26_64"):
        dates.append(QgsRasterLayer(str(fixtures_dir / f"{name}.tif"), name))
        QgsProject.instance().addMapLayer(dates[-1])
    results = run_dialog("viser:removecloudsstack", {"INPUTS": [layer.id() for layer in dates],
                                                     "MODEL_FILE": tiny_stack, "OUTPUT": "TEMPORARY_OUTPUT"})
    loaded = [layer for layer in raster_layers() if layer.source() == results["OUTPUT"]]
    assert len(loaded) == 1, [(layer.name(), layer.source()) for layer in raster_layers()]
    assert loaded[0].name().startswith("ts_s2_ImgNo_5_2018-03-07_64 cloud-free")
