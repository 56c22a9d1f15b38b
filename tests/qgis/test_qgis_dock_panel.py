"""The dock as an analyst meets it (issue 9, point 2): its width, the Advanced section, the input
summary, band overrides per kind of raster, the stack list, results on top and the input's style."""

from __future__ import annotations

import time

import pytest
from qgis.core import (
    QgsApplication,
    QgsMultiBandColorRenderer,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsRectangle,
)
from qgis.gui import QgsCollapsibleGroupBox
from qgis.PyQt.QtWidgets import QPushButton, QWidget
from qgis_testlib import message_log, wait_for

from viser_cr.viser_qgis.dock import ViserDockWidget

DEFAULT_DOCK_WIDTH = 298  # what QGIS 3.22 gave the dock at 1600 x 1000 (issue 9)



def add(path, name: str) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name)
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.fixture()
def one_band(tmp_path):
    from osgeo import gdal

    path = tmp_path / "one_band.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), 16, 16, 1, gdal.GDT_UInt16)
    dataset.SetGeoTransform((500000, 10, 0, 6100000, 0, -10))
    dataset.GetRasterBand(1).Fill(1000)
    dataset = None
    return path


def summary(dock) -> str:
    from qgis.PyQt.QtGui import QTextDocument

    document = QTextDocument()
    document.setHtml(dock.input_info.text())
    return document.toPlainText()


# ------------------------------------------------------------------------------------------- width
@pytest.mark.parametrize("stack", [False, True], ids=["one date", "a stack with a cloud mask per date"])
def test_dock_fits_the_default_dock_width(dock, fixtures_dir, stack):
    dock.layer_combo.setLayer(add(fixtures_dir / "s2l1c_cloudy_96.tif", "Sentinel-2 L1C, cloudy"))
    if stack:  # the per-date mask rows name each date: a long product name must not widen the dock
        dates = [add(fixtures_dir / "ts_s2_ImgNo_7_2018-04-01_64.tif", "S2B_MSIL1C_20180401T103619_N0509_R008_"
                     "T32UMU_20180401T124040"), add(fixtures_dir / "ts_s2_ImgNo_5_2018-03-07_64.tif", "march")]
        dock.stack_check.setChecked(True)
        dock.set_stack_layers(dates)
        dock.keep_clear_check.setChecked(True)
        assert len(dock.date_mask_combos) == 2
    advanced = dock.findChild(QgsCollapsibleGroupBox, "viserAdvanced")
    advanced.setCollapsed(False)  # the Advanced fields must fit as well
    dock.resize(DEFAULT_DOCK_WIDTH, 1000)
    dock.show()
    for _ in range(5):  # let the posted layout requests settle, as the running GUI does
        QgsApplication.processEvents()
        time.sleep(0.02)
    scroll = dock.widget()
    viewport = scroll.viewport().width()
    too_wide = [(type(w).__name__, w.objectName(), getattr(w, "text", lambda: "")()[:40], w.minimumSizeHint().width())
                for w in scroll.widget().findChildren(QWidget)
                if w.isVisible() and w.minimumSizeHint().width() > viewport - 20]
    assert scroll.widget().minimumSizeHint().width() <= viewport, too_wide
    assert scroll.widget().width() <= viewport, too_wide
    for button in dock.findChildren(QPushButton):
        if button.isVisible():
            assert button.width() >= button.sizeHint().width(), (button.text(), button.width())
    dock.hide()


# ---------------------------------------------------------------------------------------- advanced
def test_advanced_fields_reach_the_parameters_and_results_land_on_top(dock, fixtures_dir, tiny_rgbn, tmp_path):
    layer = add(fixtures_dir / "s2l1c_cloudy_96.tif", "cloudy")
    dock.layer_combo.setLayer(layer)
    dock.model_file.setFilePath(tiny_rgbn)
    dock.scale_edit.setText("0.0001")
    dock.offset_edit.setText("-0,05")  # a decimal comma is read too
    dock.score_check.setChecked(True)
    dock.uncertainty_check.setChecked(True)
    extent = layer.extent()
    part = QgsRectangle(extent.xMinimum(), extent.yMinimum(), extent.center().x(), extent.center().y())
    dock.extent_widget.setOutputExtentFromUser(part, layer.crs())
    dock.output_file.setFilePath(str(tmp_path / "clear.tif"))
    _, params, name = dock.parameters()
    assert params["SCALE"] == 0.0001 and params["OFFSET"] == -0.05
    assert params["SCORE"] == str(tmp_path / "clear_score.tif")
    assert params["UNCERTAINTY"] == str(tmp_path / "clear_uncertainty.tif")
    assert params["EXTENT"].endswith(f"[{layer.crs().authid()}]")
    # Select the input: the results still go on top of the layer tree, the cloud-free one first.
    QgsProject.instance().layerTreeRoot().findLayer(layer.id()).setItemVisibilityChecked(True)
    finished = []
    dock.run_finished.connect(finished.append)
    assert dock.run()
    wait_for(lambda: dock.current is None)
    assert finished == [True], dock.status_label.text()
    order = [node.name() for node in QgsProject.instance().layerTreeRoot().children()]
    assert order == [name, f"{name} cloud score", f"{name} uncertainty", "cloudy"], order
    result = QgsProject.instance().mapLayersByName(name)[0]
    assert result.width() < layer.width()  # only the extent chosen in Advanced


# ----------------------------------------------------------------------------------------- summary
def test_summary_says_whether_and_how_the_layer_runs(dock, fixtures_dir, tiny_rgb, tiny_rgbn, one_band):
    s2 = add(fixtures_dir / "s2l1c_cloudy_96.tif", "s2")
    flat = add(one_band, "one band")
    dock.layer_combo.setLayer(flat)
    assert summary(dock).startswith("Cannot run yet") and "band" in summary(dock)
    assert not dock.style_input_button.isEnabled()
    dock.layer_combo.setLayer(s2)
    text = summary(dock)
    assert text.startswith("Ready to run") and "bands 4, 3, 2, 8 (red, green, blue, nir)" in text, text
    assert "13 bands" in text and "1, 5, 6, 7, 9, 10, 11, 12, 13 are left out" in text, text
    assert "Band 11 (cirrus, B10) is read to remove thin cirrus first." in text, text
    classifier = "reads ten of the L1C bands for a cloud mask that is added to the model's cloud score."
    assert f"The bundled L1C cloud classifier {classifier}" in text, text
    dock.cloud_source_combo.setCurrentIndex(dock.cloud_source_combo.findData("model"))  # every change updates it: the cloud source ...
    assert classifier not in summary(dock)
    dock.cloud_source_combo.setCurrentIndex(dock.cloud_source_combo.findData("s2cloudless"))
    assert f"s2cloudless {classifier}" in summary(dock)  # the test venv has the optional package
    dock.cloud_source_combo.setCurrentIndex(0)
    dock.model_file.setFilePath(tiny_rgb)  # ... the model ...
    text = summary(dock)
    assert "model tiny-rgb" in text and "bands 4, 3, 2 (red, green, blue)" in text, text
    dock.model_file.setFilePath(tiny_rgbn)
    dock.bands_edit.setText("4,3,2")  # ... the bands ...
    assert summary(dock).startswith("Cannot run yet") and "4" in summary(dock)
    dock.bands_edit.setText("4,3,2,8")
    dock.sensor_combo.setCurrentText("rgb8")  # ... and the sensor
    assert "sensor rgb8" in summary(dock) or summary(dock).startswith("Cannot run yet"), summary(dock)


def test_dropped_bands_are_said_in_the_log_before_the_run(provider, fixtures_dir, tiny_rgbn, tmp_path):
    import processing

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def pushInfo(self, info):  # noqa: N802
            self.lines.append(("info", info))

        def pushWarning(self, warning):  # noqa: N802
            self.lines.append(("warning", warning))

        def setProgressText(self, text):  # noqa: N802
            self.lines.append(("progress", text))

    feedback = Feedback()
    processing.run("viser:removeclouds", {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"),
                                          "MODEL_FILE": tiny_rgbn, "OUTPUT": str(tmp_path / "o.tif")},
                   feedback=feedback)
    warnings = [i for i, (kind, text) in enumerate(feedback.lines) if kind == "warning" and "left out" in text]
    assert warnings, feedback.lines
    done = [i for i, (kind, text) in enumerate(feedback.lines) if "VISER-CR done" in text]
    assert warnings[0] < done[0]
    assert "13 bands" in feedback.lines[warnings[0]][1]


# ------------------------------------------------------------------------------- band override
def test_band_override_stays_with_its_kind_of_raster(dock, fixtures_dir):
    s2 = add(fixtures_dir / "s2l1c_cloudy_96.tif", "s2")
    rgbn = add(fixtures_dir / "rgbn8_96.tif", "rgbn")
    other_s2 = add(fixtures_dir / "s2l1c_clear_96.tif", "s2 clear")
    dock.layer_combo.setLayer(s2)
    dock.bands_edit.setText("4,3,2")
    dock.layer_combo.setLayer(rgbn)
    assert dock.bands_edit.text() == ""  # not carried to a 4-band 8-bit raster
    assert "bands 1, 2, 3, 4" in summary(dock)
    dock.layer_combo.setLayer(other_s2)
    assert dock.bands_edit.text() == "4,3,2"  # the same kind of raster gets it back
    dock.save_settings()
    again = ViserDockWidget(dock.iface)
    try:
        again.layer_combo.setLayer(rgbn)
        assert again.bands_edit.text() == ""
        again.layer_combo.setLayer(s2)
        assert again.bands_edit.text() == "4,3,2"
    finally:
        again.shutdown()
        again.deleteLater()


# ----------------------------------------------------------------------------------------- stack
def test_stack_lists_usable_rasters_and_names_the_dates_used(dock, fixtures_dir, one_band, tmp_path):
    import shutil

    names = ("ts_s2_ImgNo_7_2018-04-01_64", "ts_s2_ImgNo_5_2018-03-07_64", "ts_s2_ImgNo_9_2018-04-26_64")
    dates = [add(fixtures_dir / f"{n}.tif", n) for n in names]
    add(one_band, "one band")
    broken = QgsRasterLayer(str(tmp_path / "missing.tif"), "missing")
    QgsProject.instance().addMapLayer(broken)
    earlier = add(shutil.copy(fixtures_dir / "rgbn8_96.tif", tmp_path / "earlier.tif"), "an earlier result")
    from viser_cr.viser_qgis import style

    style.mark_result(earlier)
    dock.stack_check.setChecked(True)
    dock._refresh_stack_list()
    listed = [dock.stack_list.item(i).text() for i in range(dock.stack_list.count())]
    assert sorted(listed) == sorted(names), listed
    spare = add(shutil.copy(fixtures_dir / "ts_s2_ImgNo_9_2018-04-26_64.tif", tmp_path / "spare.tif"), "spare")
    dock.set_stack_layers([*dates, spare])
    spare.setDataSource(str(tmp_path / "gone.tif"), "spare", "gdal")  # its file disappears after ticking
    assert not spare.isValid()
    _, params, name = dock.parameters()
    assert params["INPUTS"] == [layer.id() for layer in dates]
    assert name == "ts_s2_ImgNo_7_2018-04-01_64 cloud-free (dates: 2018-04-01, 2018-03-07, 2018-04-26)"
    dock.update_summary()
    assert "Left out of the stack: spare" in summary(dock)


# ------------------------------------------------------------------------------------ input style
def test_true_colour_style_for_the_input(dock, fixtures_dir):
    s2 = add(fixtures_dir / "s2l1c_cloudy_96.tif", "s2")
    dock.layer_combo.setLayer(s2)
    assert dock.style_input_button.isEnabled()
    dock.style_input_button.click()
    renderer = s2.renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (4, 3, 2)
    assert renderer.minMaxOrigin().limits() == QgsRasterMinMaxOrigin.CumulativeCut  # QGIS's own stretch
    enhancement = renderer.redContrastEnhancement()
    assert enhancement.maximumValue() > enhancement.minimumValue()


def test_a_failed_dock_run_is_logged_once(dock, fixtures_dir, tiny_rgbn):
    with message_log() as messages:
        dock.layer_combo.setLayer(add(fixtures_dir / "s2l1c_cloudy_96.tif", "s2"))
        dock.model_file.setFilePath(tiny_rgbn)
        dock.bands_edit.setText("1,2")  # the model needs 4 bands
        assert dock.run()
        wait_for(lambda: dock.current is None)
    errors = [m for m in messages if m[1] == 2 and "needs 4" in m[2]]  # 2 = Qgis.Critical
    assert len(errors) == 1, messages
    assert "needs 4" in dock.status_label.text()


def test_the_landsat_dead_end_is_gone(dock, fixtures_dir):
    """A 3-band uint16 Landsat file: the summary names the dock's own fields, and they make it runnable."""
    dock.layer_combo.setLayer(add(fixtures_dir / "landsat8_bgr_160x128.tif", "landsat"))
    text = summary(dock)
    assert text.startswith("Cannot run yet") and "Scale (Advanced)" in text and "Offset (Advanced)" in text, text
    assert "SCALE" not in text and "--scale" not in text
    dock.scale_edit.setText("0.0000275")
    dock.offset_edit.setText("-0.2")
    dock.bands_edit.setText("3,2,1")  # the file holds blue, green, red
    assert summary(dock).startswith("Ready to run") and "bands 3, 2, 1 (red, green, blue)" in summary(dock)

