"""viser:cloudscore — the visibility / cloud-score map of a raster, without the cloud removal output."""

from __future__ import annotations

from qgis.core import QgsProcessingException, QgsProcessingParameterRasterLayer

from .algorithm_base import (
    RemovalAlgorithm,
    advanced_help,
    bands_help,
    choices_help,
    help_text,
    model_help,
    requirements_help,
)
from .i18n import tr


class CloudScoreAlgorithm(RemovalAlgorithm):
    HAS_TTA = False
    HAS_CLOUD_THRESHOLD = False  # the score itself, before any threshold
    HAS_OUTPUT_OPTIONS = False
    OUTPUT_FIELDS = {"score_output": RemovalAlgorithm.OUTPUT}

    def name(self):
        return "cloudscore"

    def displayName(self):  # noqa: N802
        return tr("Cloud score (visibility map)")

    def shortDescription(self):  # noqa: N802
        return tr("Maps where a raster is occluded by clouds, as the VISER-CR network sees it.")

    def shortHelpString(self):  # noqa: N802
        return help_text(
            tr("Writes the cloud score that the VISER-CR network's Adaptive Mask computes: one band, float32, "
               "0 = clear ground, 1 = fully occluded, on the input's grid. Use it to inspect a scene, to choose "
               "dates, or as a cloud mask (threshold it with the Raster calculator)."),
            tr("Input: a Sentinel-2, Landsat C2 L2 or 8-bit RGB/RGBN raster (see SENSOR)."),
            bands_help(), model_help(), advanced_help(tta=False, outputs=False, cloud_threshold=False), choices_help(),
            tr("Output: OUTPUT, the cloud score raster."),
            requirements_help(),
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Raster layer")))
        self.add_sensor_parameters(self.INPUT)
        self.add_model_parameters()
        self.add_run_parameters()
        self.addParameter(self.raster_destination(self.OUTPUT, tr("Cloud score (0 clear .. 1 cloud)")))
        self.add_run_outputs()

    def build_request_fields(self, parameters, context, feedback) -> dict:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(tr("INPUT: no raster layer given, or it cannot be opened."))
        fields = dict(
            inputs=[self.layer_path(layer, self.INPUT)],
            output=None,
        )
        fields.update(self.common_request_fields(parameters, context, layer))
        return fields
