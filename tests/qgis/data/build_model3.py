"""Writes viser_removeclouds_clip.model3: viser:removeclouds chained into gdal:cliprasterbyextent and
native:rasterlayerstatistics (the committed model the tests run; re-run this after changing it).

    QT_QPA_PLATFORM=offscreen .venv/bin/python tests/qgis/data/build_model3.py
"""

import sys
from pathlib import Path

sys.path.append("/usr/share/qgis/python/plugins")

from qgis.core import (
    QgsApplication,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtCore import QPointF

HERE = Path(__file__).resolve().parent
TARGET = HERE / "viser_removeclouds_clip.model3"


def build() -> QgsProcessingModelAlgorithm:
    model = QgsProcessingModelAlgorithm("Remove clouds and clip", "VISER-CR examples", "viserexamples")
    model.setHelpContent({
        "ALG_DESC": "Removes the clouds of a raster with VISER-CR, clips the result to an extent and "
                    "reports its statistics: an example of chaining viser:removeclouds in the modeler.",
    })
    inputs = [
        ("cloudy", QgsProcessingParameterRasterLayer("cloudy", "Cloudy raster"), QPointF(120, 60)),
        ("model_file", QgsProcessingParameterFile("model_file", "Model file (optional)", optional=True,
                                                   fileFilter="VISER-CR models (*.safetensors *.json)"),
         QPointF(340, 60)),
        ("extent", QgsProcessingParameterExtent("extent", "Area of interest"), QPointF(560, 60)),
    ]
    for name, definition, position in inputs:
        component = QgsProcessingModelParameter(name)
        component.setPosition(position)
        model.addModelParameter(definition, component)

    remove = QgsProcessingModelChildAlgorithm("viser:removeclouds")
    remove.setChildId("viser_removeclouds_1")
    remove.setDescription("Remove clouds")
    remove.setPosition(QPointF(230, 180))
    remove.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("cloudy")])
    remove.addParameterSources("MODEL_FILE", [QgsProcessingModelChildParameterSource.fromModelParameter("model_file")])
    remove.addParameterSources("SENSOR", [QgsProcessingModelChildParameterSource.fromStaticValue("auto")])
    remove.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromStaticValue("auto")])
    remove.addParameterSources("KEEP_CLEAR", [QgsProcessingModelChildParameterSource.fromStaticValue(False)])
    remove.addParameterSources("DEVICE", [QgsProcessingModelChildParameterSource.fromStaticValue("auto")])
    remove.addParameterSources("TTA", [QgsProcessingModelChildParameterSource.fromStaticValue(False)])
    remove.addParameterSources("COG", [QgsProcessingModelChildParameterSource.fromStaticValue(False)])
    cloud_free = QgsProcessingModelOutput("cloud_free", "Cloud-free raster")
    cloud_free.setChildId("viser_removeclouds_1")
    cloud_free.setChildOutputName("OUTPUT")
    cloud_free.setPosition(QPointF(230, 260))
    remove.setModelOutputs({"cloud_free": cloud_free})
    model.addChildAlgorithm(remove)

    clip = QgsProcessingModelChildAlgorithm("gdal:cliprasterbyextent")
    clip.setChildId("gdal_cliprasterbyextent_1")
    clip.setDescription("Clip to the area of interest")
    clip.setPosition(QPointF(450, 320))
    clip.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput(
        "viser_removeclouds_1", "OUTPUT")])
    clip.addParameterSources("PROJWIN", [QgsProcessingModelChildParameterSource.fromModelParameter("extent")])
    clip.addParameterSources("OVERCRS", [QgsProcessingModelChildParameterSource.fromStaticValue(False)])
    clip.addParameterSources("NODATA", [QgsProcessingModelChildParameterSource.fromStaticValue(None)])
    clip.addParameterSources("OPTIONS", [QgsProcessingModelChildParameterSource.fromStaticValue("")])
    clip.addParameterSources("DATA_TYPE", [QgsProcessingModelChildParameterSource.fromStaticValue(0)])
    clipped = QgsProcessingModelOutput("clipped", "Cloud-free raster, clipped")
    clipped.setChildId("gdal_cliprasterbyextent_1")
    clipped.setChildOutputName("OUTPUT")
    clipped.setPosition(QPointF(450, 400))
    clip.setModelOutputs({"clipped": clipped})
    model.addChildAlgorithm(clip)

    stats = QgsProcessingModelChildAlgorithm("native:rasterlayerstatistics")
    stats.setChildId("native_rasterlayerstatistics_1")
    stats.setDescription("Statistics of the red band")
    stats.setPosition(QPointF(200, 400))
    stats.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput(
        "viser_removeclouds_1", "OUTPUT")])
    stats.addParameterSources("BAND", [QgsProcessingModelChildParameterSource.fromStaticValue(1)])
    report = QgsProcessingModelOutput("statistics", "Statistics report")
    report.setChildId("native_rasterlayerstatistics_1")
    report.setChildOutputName("OUTPUT_HTML_FILE")
    report.setPosition(QPointF(200, 480))
    report.setMandatory(False)
    stats.setModelOutputs({"statistics": report})
    model.addChildAlgorithm(stats)
    model.updateDestinationParameters()
    return model


if __name__ == "__main__":
    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from viser_cr import classFactory  # the venv's editable install maps viser_cr to the checkout

    plugin = classFactory(None)
    plugin.initProcessing()
    model = build()
    ok, errors = model.validate()
    assert ok, errors
    assert model.toFile(str(TARGET)), TARGET
    print("wrote", TARGET, [p.name() for p in model.parameterDefinitions()])
