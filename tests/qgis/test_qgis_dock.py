"""The dock widget with pytest-qgis's iface: run as a background task, preview, cancel, settings."""

from __future__ import annotations

import pytest
from qgis.core import QgsMultiBandColorRenderer, QgsProject, QgsRasterLayer
from qgis_testlib import wait_for

from viser_cr.viser_qgis.dock import ViserDockWidget, parse_bands


@pytest.fixture()
def cloudy_layer(fixtures_dir):
    layer = QgsRasterLayer(str(fixtures_dir / "s2l1c_cloudy_96.tif"), "cloudy")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def press_run(dock, out):
    """Press the dock's Run button with ``out`` as the output, wait for the task; the run must succeed."""
    dock.output_file.setFilePath(str(out))
    finished = []
    dock.run_finished.connect(finished.append)
    dock.run_button.click()
    wait_for(lambda: dock.current is None)
    assert finished == [True], dock.status_label.text()
    return out


def test_dock_runs_algorithm_in_background(dock, cloudy_layer, tiny_rgbn, tmp_path):
    dock.layer_combo.setLayer(cloudy_layer)
    dock.model_file.setFilePath(tiny_rgbn)
    dock.tile_spin.setValue(64)
    out = tmp_path / "clear.tif"
    dock.output_file.setFilePath(str(out))
    algorithm_id, params, name = dock.parameters()
    assert algorithm_id == "viser:removeclouds" and params["INPUT"] == cloudy_layer.id()
    assert params["TILE_SIZE"] == 64 and params["MODEL_FILE"] == tiny_rgbn and params["OUTPUT"] == str(out)
    assert "CLOUD_THRESHOLD" not in params  # the model's own unless the analyst sets one
    dock.cloud_threshold_spin.setValue(0.45)
    assert dock.parameters()[1]["CLOUD_THRESHOLD"] == pytest.approx(0.45)
    assert "CLOUD_SHADOWS" not in params and "CIRRUS_CORRECTION" not in params  # on unless unticked
    dock.shadows_check.setChecked(False)
    dock.cirrus_check.setChecked(False)
    unticked = dock.parameters()[1]
    assert unticked["CLOUD_SHADOWS"] is False and unticked["CIRRUS_CORRECTION"] is False
    dock.shadows_check.setChecked(True)
    dock.cirrus_check.setChecked(True)
    assert "CLOUD_SOURCE" not in params  # auto unless the analyst chooses
    dock.cloud_source_combo.setCurrentIndex(dock.cloud_source_combo.findData("model"))
    assert dock.parameters()[1]["CLOUD_SOURCE"] == "model"
    dock.cloud_source_combo.setCurrentIndex(0)
    finished = []
    dock.run_finished.connect(finished.append)
    assert dock.run()
    assert dock.current is not None and not dock.run_button.isEnabled() and dock.cancel_button.isEnabled()
    wait_for(lambda: dock.current is None)
    assert finished == [True], dock.status_label.text()
    assert out.exists() and dock.last_result["OUTPUT"] == str(out)
    layers = QgsProject.instance().mapLayersByName("cloudy cloud-free")
    assert len(layers) == 1 and layers[0].source() == str(out)
    renderer = layers[0].renderer()
    assert layers[0].customProperty("viser_cr/style") == "true-colour"
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (1, 2, 3)
    assert renderer.redContrastEnhancement().maximumValue() > renderer.redContrastEnhancement().minimumValue()
    assert dock.progress_bar.value() == 100 and "Done" in dock.status_label.text()
    assert dock.run_button.isEnabled() and not dock.cancel_button.isEnabled()
    # Settings are remembered by a new dock.
    again = ViserDockWidget(dock.iface)
    assert again.model_file.filePath() == tiny_rgbn and again.tile_spin.value() == 64
    again.shutdown()
    again.deleteLater()


def test_dock_keeps_clear_pixels_by_a_quality_band(dock, cloudy_layer, tiny_rgbn, tmp_path):
    """The Cloud mask and Mask values fields: shown with Keep clear pixels, passed as
    CLOUD_MASK / CLOUD_MASK_TYPE, and the run (Run pressed) keeps what the SCL band calls snow exactly."""
    import numpy as np
    import rasterio
    from rasters import write_raster

    with rasterio.open(cloudy_layer.source()) as src:
        scl = np.full((1, 96, 96), 4, np.uint8)
        scl[0, 20:50, 20:50], scl[0, 60:80, 60:80] = 9, 11  # cloud high probability, snow
        mask_path = write_raster(tmp_path / "scl.tif", scl, crs=src.crs, transform=src.transform)
        original = src.read([4, 3, 2, 8])
    mask_layer = QgsRasterLayer(str(mask_path), "T32UMU_20180401_SCL_20m")
    QgsProject.instance().addMapLayer(mask_layer)
    dock.layer_combo.setLayer(cloudy_layer)
    dock.model_file.setFilePath(tiny_rgbn)
    assert dock.mask_type_combo.currentText() == "nonzero"
    dock.mask_combo.setLayer(mask_layer)  # its product name sets Mask values
    assert dock.mask_type_combo.currentText() == "sentinel2-scl"
    assert dock.keep_clear_check.isChecked() and not dock.mask_panel.isHidden()  # keep-clear on by default
    dock.keep_clear_check.setChecked(False)
    assert dock.mask_panel.isHidden() and "CLOUD_MASK" not in dock.parameters()[1]  # keep-clear off: no mask
    dock.keep_clear_check.setChecked(True)
    assert not dock.mask_panel.isHidden()
    params = dock.parameters()[1]
    assert params["CLOUD_MASK"] == mask_layer.id() and params["CLOUD_MASK_TYPE"] == "sentinel2-scl"
    assert "CLOUD_MASK_BUFFER" not in params
    dock.mask_buffer_spin.setValue(2)
    assert dock.parameters()[1]["CLOUD_MASK_BUFFER"] == 2 and "CLOUD_MASK_MODE" not in dock.parameters()[1]
    dock.mask_add_check.setChecked(True)
    assert dock.parameters()[1]["CLOUD_MASK_MODE"] == "add"
    out = press_run(dock, tmp_path / "clear.tif")
    with rasterio.open(out) as dst:
        np.testing.assert_array_equal(dst.read()[:, 64:76, 64:76], original[:, 64:76, 64:76])
    dock.stack_check.setChecked(True)  # a stack takes one mask per date instead
    assert dock.mask_combo.isHidden() and not dock.date_masks_panel.isHidden()
    dock.save_settings()
    again = ViserDockWidget(dock.iface)
    assert again.mask_type_combo.currentText() == "sentinel2-scl" and again.mask_buffer_spin.value() == 2
    assert again.mask_add_check.isChecked()
    again.shutdown()
    again.deleteLater()


def test_dock_preview_map_extent(dock, cloudy_layer, tiny_rgbn, qgis_iface):
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(cloudy_layer.crs())
    extent = cloudy_layer.extent()
    canvas.setExtent(extent.buffered(-extent.width() / 4))
    canvas.refresh()
    dock.layer_combo.setLayer(cloudy_layer)
    dock.model_file.setFilePath(tiny_rgbn)
    dock.tile_spin.setValue(0)
    assert dock.run(preview=True)
    wait_for(lambda: dock.current is None)
    layers = QgsProject.instance().mapLayersByName("cloudy cloud-free (preview)")
    assert len(layers) == 1, dock.status_label.text()
    expected = canvas.extent().intersect(extent)  # what the map shows of the raster
    got = layers[0].extent()
    assert layers[0].width() * layers[0].height() < cloudy_layer.width() * cloudy_layer.height()
    pixel = cloudy_layer.rasterUnitsPerPixelX()
    for a, b in ((got.xMinimum(), expected.xMinimum()), (got.xMaximum(), expected.xMaximum()),
                 (got.yMinimum(), expected.yMinimum()), (got.yMaximum(), expected.yMaximum())):
        assert abs(a - b) <= pixel


@pytest.mark.parametrize("when", ["queued", "running"])
def test_dock_cancel(dock, cloudy_layer, tiny_rgbn, tmp_path, when):
    dock.layer_combo.setLayer(cloudy_layer)
    dock.model_file.setFilePath(tiny_rgbn)
    dock.tile_spin.setValue(32)  # many small tiles: time to cancel in the middle
    out = tmp_path / "cancelled.tif"
    dock.output_file.setFilePath(str(out))
    finished = []
    dock.run_finished.connect(finished.append)
    before = set(QgsProject.instance().mapLayers())
    assert dock.run()
    if when == "queued":
        dock.cancel_button.click()
    else:  # as soon as the first tiles are done (in the worker thread, so it cannot finish first)
        feedback = dock.current.feedback
        feedback.progressChanged.connect(lambda value: feedback.cancel() if value > 0 else None)
    wait_for(lambda: dock.current is None)
    assert finished == [False]
    assert "Cancel" in dock.status_label.text()
    assert not out.exists()
    assert set(QgsProject.instance().mapLayers()) == before
    assert dock.run_button.isEnabled()


def test_dock_stack_and_errors(dock, fixtures_dir, tiny_stack, tmp_path):
    names = ("ts_s2_ImgNo_7_2018-04-01_64.tif", "ts_s2_ImgNo_5_2018-03-07_64.tif", "ts_s2_ImgNo_9_2018-04-26_64.tif")
    layers = [QgsRasterLayer(str(fixtures_dir / n), n[:13]) for n in names]
    QgsProject.instance().addMapLayers(layers)
    dock.stack_check.setChecked(True)
    dock.set_stack_layers(layers)
    dock.model_file.setFilePath(tiny_stack)
    algorithm_id, params, name = dock.parameters()
    assert algorithm_id == "viser:removecloudsstack"
    assert params["INPUTS"] == [layer.id() for layer in layers]
    assert not dock.sources_check.isHidden()  # stacks only
    dock.sources_check.setChecked(True)
    dock.output_file.setFilePath(str(tmp_path / "stack.tif"))
    assert dock.run()
    wait_for(lambda: dock.current is None)
    assert QgsProject.instance().mapLayersByName(name), dock.status_label.text()
    (sources,) = QgsProject.instance().mapLayersByName(f"{name} source dates")
    assert sources.source() == str(tmp_path / "stack_source_dates.tif")
    assert [c.label for c in sources.renderer().classes()][1:] == [f"{k}: {layer.name()}" for k, layer in
                                                                  enumerate(layers, start=1)]
    dock.sources_check.setChecked(False)
    # A bad band list is reported in the dock, not raised.
    dock.bands_edit.setText("4,x")
    assert not dock.run() and "Bands" in dock.status_label.text()
    # An engine error comes back through the task's feedback.
    dock.bands_edit.setText("1,2")
    assert dock.run()
    wait_for(lambda: dock.current is None)
    assert "needs 4" in dock.status_label.text()


def test_dock_stack_takes_one_cloud_mask_per_date(dock, fixtures_dir, tiny_stack, tmp_path):
    """Stack mode with Keep clear pixels: one Cloud mask row per ticked date, which follows its date when the
    dates are reordered; all masks or the reference's alone are passed as CLOUD_MASKS, a partial set is refused
    in the dock; the run (Run pressed) fills the reference's masked cloud from the date whose mask says clear."""
    import numpy as np
    import rasterio
    from rasters import write_raster

    names = ("ts_s2_ImgNo_7_2018-04-01_64.tif", "ts_s2_ImgNo_5_2018-03-07_64.tif", "ts_s2_ImgNo_9_2018-04-26_64.tif")
    dates = [QgsRasterLayer(str(fixtures_dir / n), n[:13]) for n in names]
    masks = []
    for i, name in enumerate(names):
        with rasterio.open(fixtures_dir / name) as src:
            fmask = np.zeros((1, src.height, src.width), np.uint8)
            fmask[0, 10:30, 10:30] = 4 if i != 2 else 0  # cloud on the reference and the second date
            path = write_raster(tmp_path / f"fmask{i}.tif", fmask, crs=src.crs, transform=src.transform)
            if i == 0:
                reference = src.read([4, 3, 2, 8])
        masks.append(QgsRasterLayer(str(path), f"fmask {i}"))
    QgsProject.instance().addMapLayers(dates + masks)
    dock.stack_check.setChecked(True)
    dock.set_stack_layers(dates)
    dock.model_file.setFilePath(tiny_stack)
    dock.keep_clear_check.setChecked(False)
    assert dock.mask_panel.isHidden()  # keep-clear off
    dock.keep_clear_check.setChecked(True)
    assert not dock.mask_panel.isHidden() and dock.mask_combo.isHidden() and not dock.date_masks_panel.isHidden()
    assert list(dock.date_mask_combos) == [date.id() for date in dates]
    assert "CLOUD_MASKS" not in dock.parameters()[1]  # no mask chosen: the model's own score
    dock.set_date_masks({dates[1]: masks[1]})
    assert dock.mask_type_combo.currentText() == "fmask"  # set by the mask's name
    assert not dock.run() and dates[0].name() in dock.status_label.text()  # a partial set is refused, naming
    dock.set_date_masks({dates[1]: None, dates[0]: masks[0]})            # the dates without a mask
    assert dock.parameters()[1]["CLOUD_MASKS"] == [masks[0].id()]  # the reference's alone
    dock.set_date_masks({dates[1]: masks[1], dates[2]: masks[2]})
    params = dock.parameters()[1]
    assert params["CLOUD_MASKS"] == [mask.id() for mask in masks] and params["CLOUD_MASK_TYPE"] == "fmask"
    dock.set_stack_layers([dates[2], dates[0], dates[1]])  # the masks follow their dates
    assert dock.parameters()[1]["CLOUD_MASKS"] == [masks[2].id(), masks[0].id(), masks[1].id()]
    assert [dock.date_mask_combos[d.id()].currentLayer() for d in dates] == masks
    dock.set_stack_layers(dates)
    dock.sources_check.setChecked(True)
    out = press_run(dock, tmp_path / "stack.tif")
    with rasterio.open(out) as dst:
        np.testing.assert_array_equal(dst.read()[:, 40:, 40:], reference[:, 40:, 40:])  # clear: kept
    with rasterio.open(tmp_path / "stack_source_dates.tif") as src:
        assert (src.read(1)[14:26, 14:26] == 3).all()  # the only date whose mask says clear there
    dock.stack_check.setChecked(False)
    assert not dock.mask_combo.isHidden() and dock.date_masks_panel.isHidden()


def test_dock_dependency_panel(dock):
    report = dock.refresh_dependencies()
    assert not report.missing
    text = dock.deps_label.text()
    assert "torch" in text and "numpy" in text and "rasterio" in text and "GDAL" in text
    assert dock.device_label.text() == "CPU"
    assert [dock.device_combo.itemData(i) for i in range(dock.device_combo.count())] == ["auto", "cpu"]
    assert dock.install_button.isHidden()
    cmd = dock.install_command()
    assert "--target" in cmd and "-c" in cmd


def test_dock_install_task(dock, tmp_path):
    """The Install button's background task, run offline against a tiny local wheel."""
    from qgis_testlib import make_wheel

    from viser_cr.viser_qgis import deps

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "torch", "99.0")
    target = tmp_path / "python"
    cmd = deps.pip_install_command(target=target, packages=["torch==99.0"], find_links=wheels, no_index=True)
    task = dock.install_torch(cmd)
    assert task is not None
    wait_for(lambda: dock.install_task is None, timeout=120)
    assert (target / "torch" / "__init__.py").exists()
    assert "PyTorch installed" in dock.deps_log.toPlainText()


def test_dock_install_shows_pip_refusal(dock, tmp_path, monkeypatch):
    """The installer honours the user's pip configuration, and shows pip's own reason when pip refuses."""
    from qgis_testlib import make_wheel

    from viser_cr.viser_qgis import deps

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "torch", "99.0")
    user_constraints = tmp_path / "user-constraints.txt"
    user_constraints.write_text("torch<=2.14.1\n")
    user_config = tmp_path / "pip.conf"
    user_config.write_text(f"[global]\nconstraint = {user_constraints}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(user_config))
    target = tmp_path / "python"
    cmd = deps.pip_install_command(target=target, packages=["torch==99.0"], find_links=wheels, no_index=True)
    dock.deps_log.clear()
    assert dock.install_torch(cmd) is not None
    wait_for(lambda: dock.install_task is None, timeout=120)
    assert not (target / "torch").exists()
    failure = dock.deps_log.toPlainText().strip().splitlines()[-1]
    assert failure.startswith("pip failed (exit 1). ERROR: Cannot install torch==99.0"), failure
    assert "(constraint) torch<=2.14.1" in failure


def test_pip_error_line():
    from viser_cr.viser_qgis import deps

    lines = ["Looking in links: /w", "ERROR: Cannot install torch==99.0 because of conflicts.", "",
             "The conflict is caused by:", "    The user requested torch==99.0",
             "    The user requested (constraint) torch<=2.14.1", "", "ERROR: ResolutionImpossible: see ..."]
    assert deps.pip_error_line(lines) == ("ERROR: Cannot install torch==99.0 because of conflicts. (The user "
                                          "requested torch==99.0; The user requested (constraint) torch<=2.14.1)")
    assert deps.pip_error_line(["ERROR: No matching distribution found for torch"]).endswith("for torch")
    assert deps.pip_error_line(["Successfully installed torch-99.0"]) == ""


def test_parse_bands():
    assert parse_bands("4, 3 2;8") == [4, 3, 2, 8]
    assert parse_bands("") == []
    with pytest.raises(ValueError):
        parse_bands("0,1")
