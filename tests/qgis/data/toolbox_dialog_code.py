"""Run inside the QGIS desktop by tests/qgis/screenshot.py (qgis --code): open the Processing Toolbox
dialog of viser:removeclouds on a loaded layer, press Run with "Open output file after running
algorithm" as QGIS sets it by default, wait for the end, report the project's layers, grab, quit."""

import os

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QDialogButtonBox
from qgis.utils import iface

OUTPUT = os.environ["VISER_SCREENSHOT"]
REPORT = os.environ.get("VISER_SCREENSHOT_REPORT")
facts = {}
keep = []


def prepare():
    import processing

    layer = QgsRasterLayer(os.environ["VISER_SCREENSHOT_LAYER"], "cloudy")
    QgsProject.instance().addMapLayer(layer)
    params = {"INPUT": layer.id(), "OUTPUT": os.path.join(os.path.dirname(OUTPUT), "toolbox-clear.tif")}
    if os.environ.get("VISER_SCREENSHOT_MODEL"):
        params["MODEL_FILE"] = os.environ["VISER_SCREENSHOT_MODEL"]
    dialog = processing.createAlgorithmDialog("viser:removeclouds", params)
    facts["dialog"] = dialog is not None
    keep.append(dialog)
    dialog.algorithmFinished.connect(lambda ok, results: QTimer.singleShot(1000, lambda: finished(ok)))
    dialog.show()
    dialog.buttonBox().button(QDialogButtonBox.Ok).click()


def finished(ok):
    facts["run_ok"] = ok
    facts["platform"] = QgsApplication.instance().platform()
    facts["layers"] = "|".join(sorted(layer.name() for layer in QgsProject.instance().mapLayers().values()))
    facts["styled"] = "|".join(str(layer.customProperty("viser_cr/style", ""))
                               for layer in QgsProject.instance().mapLayers().values())
    grab()


def grab():
    pixmap = iface.mainWindow().grab()
    facts["saved"] = pixmap.save(OUTPUT, "PNG")
    if REPORT:
        with open(REPORT, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{k}={v}\n" for k, v in facts.items()))
    QTimer.singleShot(200, QgsApplication.instance().quit)


QTimer.singleShot(1500, prepare)
