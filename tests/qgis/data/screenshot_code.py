"""Run inside the QGIS desktop by tests/qgis/screenshot.py (qgis --code): load a layer, open the
VISER-CR dock, grab the main window, quit. With VISER_SCREENSHOT_STACK_MASKS the dock shows stack mode
instead: three real dates of the test fixtures ticked, Keep clear pixels, and a Sentinel-2 SCL band per
date in its cloud mask rows."""

import os
import tempfile

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

OUTPUT = os.environ["VISER_SCREENSHOT"]
REPORT = os.environ.get("VISER_SCREENSHOT_REPORT")
facts = {}


def prepare():
    window = iface.mainWindow()
    window.resize(1400, 860)
    window.showMaximized()
    layer = QgsRasterLayer(os.environ["VISER_SCREENSHOT_LAYER"], "Sentinel-2 L1C, cloudy")
    QgsProject.instance().addMapLayer(layer)
    plugin = plugins.get("viser_cr")
    facts["plugin"] = plugin is not None
    if plugin is not None:
        dock = plugin.show_dock(True)
        dock.layer_combo.setLayer(layer)
        if os.environ.get("VISER_SCREENSHOT_MODEL"):
            dock.model_file.setFilePath(os.environ["VISER_SCREENSHOT_MODEL"])
        dock.style_input()  # the dock's "Input in true colour": bands 4, 3, 2 of a Sentinel-2 file
        dock.widget().verticalScrollBar().setValue(0)  # the dock keeps the width QGIS gives it
        if os.environ.get("VISER_SCREENSHOT_STACK_MASKS"):  # the dates instead of the one layer, on their grid
            QgsProject.instance().removeMapLayer(layer.id())
            layer = stack_with_masks(dock, os.path.dirname(os.environ["VISER_SCREENSHOT_LAYER"]))
            iface.mapCanvas().setDestinationCrs(layer.crs())
        dock.status_label.setText("Ready: Run processes the layer, Preview map extent what the map shows.")
        dock.update_summary()
        facts["dock_visible"] = dock.isVisible()
        facts["dock_width"] = dock.width()
        if os.environ.get("VISER_SCREENSHOT_RUN"):  # press Run and grab when the task has finished
            dock.run_finished.connect(lambda ok: (facts.update(run_ok=ok, status=dock.status_label.text(),
                                                               platform=QgsApplication.instance().platform(),
                                                               layers=len(QgsProject.instance().mapLayers())),
                                                  QTimer.singleShot(1500, grab)))
            facts["run_started"] = dock.run()
            iface.mapCanvas().setExtent(layer.extent())
            return
    iface.mapCanvas().setExtent(layer.extent())
    iface.mapCanvas().refresh()
    QTimer.singleShot(4000, grab)


def stack_with_masks(dock, fixtures):
    """Tick three real dates in stack mode with Keep clear pixels and give each an SCL band (class 4
    everywhere, class 9 over a block) as its cloud mask; scroll the dock to the mask rows. Returns the
    reference date, shown in true colour (the masks hidden on the map)."""
    import numpy as np
    from osgeo import gdal

    folder = tempfile.mkdtemp(prefix="viser-masks-")
    dates, masks = [], []
    for name in ("ts_s2_ImgNo_7_2018-04-01_64.tif", "ts_s2_ImgNo_5_2018-03-07_64.tif",
                 "ts_s2_ImgNo_9_2018-04-26_64.tif"):
        source = gdal.Open(os.path.join(fixtures, name))
        scl = np.full((source.RasterYSize, source.RasterXSize), 4, np.uint8)
        scl[8:24, 8:24] = 9
        path = os.path.join(folder, name.replace("_64.tif", "_SCL.tif"))
        target = gdal.GetDriverByName("GTiff").Create(path, source.RasterXSize, source.RasterYSize, 1, gdal.GDT_Byte)
        target.SetGeoTransform(source.GetGeoTransform())
        target.SetProjection(source.GetProjection())
        target.GetRasterBand(1).WriteArray(scl)
        target = None
        dates.append(QgsRasterLayer(os.path.join(fixtures, name), name.replace("_64.tif", "")))
        masks.append(QgsRasterLayer(path, os.path.basename(path)[:-4]))
    QgsProject.instance().addMapLayers(dates + masks)
    dock.stack_check.setChecked(True)
    dock.set_stack_layers(dates)
    dock.keep_clear_check.setChecked(True)
    dock.set_date_masks(dict(zip(dates, masks, strict=True)))
    dock.mask_type_combo.setCurrentIndex(dock.mask_type_combo.findText("sentinel2-scl"))
    dock.widget().ensureWidgetVisible(dock.mask_add_check)
    facts["date_mask_rows"] = len(dock.date_mask_combos)
    facts["cloud_masks"] = len(dock.parameters()[1].get("CLOUD_MASKS", []))
    dock.style_input()
    tree = QgsProject.instance().layerTreeRoot()
    for layer in masks + dates[1:]:
        tree.findLayer(layer.id()).setItemVisibilityChecked(False)
        tree.findLayer(layer.id()).setExpanded(False)
    return dates[0]


def grab():
    pixmap = iface.mainWindow().grab()
    facts["saved"] = pixmap.save(OUTPUT, "PNG")
    facts["size"] = f"{pixmap.width()}x{pixmap.height()}"
    if REPORT:
        with open(REPORT, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{k}={v}\n" for k, v in facts.items()))
    QTimer.singleShot(200, QgsApplication.instance().quit)


QTimer.singleShot(1500, prepare)
