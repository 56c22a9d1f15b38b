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


def grab():
    pixmap = iface.mainWindow().grab()
    facts["saved"] = pixmap.save(OUTPUT, "PNG")
    facts["size"] = f"{pixmap.width()}x{pixmap.height()}"
    if REPORT:
        with open(REPORT, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{k}={v}\n" for k, v in facts.items()))
    QTimer.singleShot(200, QgsApplication.instance().quit)


QTimer.singleShot(1500, prepare)
