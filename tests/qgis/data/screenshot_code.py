"""Run inside the QGIS desktop by tests/qgis/screenshot.py (qgis --code): load a layer, open the
VISER-CR dock, grab the main window, quit."""

import os

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
    if layer.bandCount() >= 4:  # a 13-band Sentinel-2 file: show B4, B3, B2 (true colour)
        from qgis.core import QgsContrastEnhancement, QgsMultiBandColorRenderer

        renderer = QgsMultiBandColorRenderer(layer.dataProvider(), 4, 3, 2)
        for band, setter in ((4, renderer.setRedContrastEnhancement), (3, renderer.setGreenContrastEnhancement),
                             (2, renderer.setBlueContrastEnhancement)):
            enhancement = QgsContrastEnhancement(layer.dataProvider().dataType(band))
            low, high = layer.dataProvider().cumulativeCut(band, 0.02, 0.98, layer.extent(), 100000)
            enhancement.setMinimumValue(low)
            enhancement.setMaximumValue(high)
            enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
            setter(enhancement)
        layer.setRenderer(renderer)
    QgsProject.instance().addMapLayer(layer)
    plugin = plugins.get("viser_cr")
    facts["plugin"] = plugin is not None
    if plugin is not None:
        dock = plugin.show_dock(True)
        dock.layer_combo.setLayer(layer)
        if os.environ.get("VISER_SCREENSHOT_MODEL"):
            dock.model_file.setFilePath(os.environ["VISER_SCREENSHOT_MODEL"])
        from qgis.PyQt.QtCore import Qt

        window.resizeDocks([dock], [440], Qt.Horizontal)
        dock.widget().verticalScrollBar().setValue(0)
        dock.status_label.setText("Ready: Run processes the layer, Preview map extent what the map shows.")
        dock._layer_changed()
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


def grab():
    pixmap = iface.mainWindow().grab()
    facts["saved"] = pixmap.save(OUTPUT, "PNG")
    facts["size"] = f"{pixmap.width()}x{pixmap.height()}"
    if REPORT:
        with open(REPORT, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{k}={v}\n" for k, v in facts.items()))
    QTimer.singleShot(200, QgsApplication.instance().quit)


QTimer.singleShot(1500, prepare)
