"""viser:removeclouds — remove the clouds of one raster layer."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterRasterLayer,
)

from . import naming
from .algorithm_base import (
    RemovalAlgorithm,
    advanced_help,
    bands_help,
    choices_help,
    help_text,
    mask_help,
    model_help,
    requirements_help,
)
from .i18n import tr


class RemoveCloudsAlgorithm(RemovalAlgorithm):
    KEEP_CLEAR = "KEEP_CLEAR"
    CLOUD_MASK = "CLOUD_MASK"
    OUTPUT_FIELDS = {"output": RemovalAlgorithm.OUTPUT, "score_output": RemovalAlgorithm.SCORE,
                     "uncertainty_output": RemovalAlgorithm.UNCERTAINTY}

    def name(self):
        return "removeclouds"

    def displayName(self):  # noqa: N802
        return tr("Remove clouds")

    def shortDescription(self):  # noqa: N802
        return tr("Fills the cloudy parts of a satellite image with the VISER-CR network.")

    def shortHelpString(self):  # noqa: N802
        return help_text(
            tr("Removes clouds (and thin haze) from one optical satellite raster with the VISER-CR deep network "
               "and writes a georeferenced, cloud-filled raster on the same grid (CRS, extent, pixel size) as "
               "the input."),
            tr("Input: a Sentinel-2 L1C/L2A, Landsat Collection 2 Level-2, or 8-bit RGB/RGBN raster file. "
               "SENSOR 'auto' recognises the sensor from the band count, data type and metadata and says which "
               "preset it took; pick the preset yourself when it cannot tell."),
            bands_help(), model_help(),
            tr("Keep clear pixels (on by default): copy the input where it is clear (where the model's cloud score "
               "is below the gate its fill used: 0.35 on reflectance, 0.6 on 8-bit imagery, or CLOUD_THRESHOLD; or by "
               "CLOUD_MASK where given) and only fill the clouds."),
            mask_help("CLOUD_MASK"),
            advanced_help(), choices_help(),
            tr("Outputs: OUTPUT, the cloud-free raster with the model's bands (band descriptions name them), "
               "in the input's data type and scale; optionally SCORE, the cloud score (0 = clear, 1 = "
               "occluded) and UNCERTAINTY, the per-pixel spread of test-time augmentation passes."),
            requirements_help(),
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Cloudy raster layer")))
        self.add_sensor_parameters(self.INPUT)
        self.add_model_parameters()
        self.addParameter(
            QgsProcessingParameterBoolean(self.KEEP_CLEAR, tr("Keep clear pixels (fill only the clouds)"), True)
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                self.CLOUD_MASK, tr("Cloud mask (optional, used by 'Keep clear pixels')"),
                optional=True,
            )
        )
        self.add_mask_value_parameters()
        self.add_run_parameters()
        self.add_output_options()
        self.addParameter(self.raster_destination(self.OUTPUT, tr("Cloud-free raster")))
        self.addParameter(self.raster_destination(self.SCORE, tr("Cloud score (0 clear .. 1 cloud)"), optional=True))
        self.addParameter(
            self.raster_destination(self.UNCERTAINTY, tr("Uncertainty (implies test-time augmentation)"), optional=True)
        )
        self.add_run_outputs()

    def build_request_fields(self, parameters, context, feedback) -> dict:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(tr("INPUT: no raster layer given, or it cannot be opened."))
        fields = dict(
            inputs=[self.layer_path(layer, self.INPUT)],
            keep_clear=self.parameterAsBoolean(parameters, self.KEEP_CLEAR, context),
            cloud_mask=self.raster_path(parameters, self.CLOUD_MASK, context, optional=True),
            **self.mask_value_fields(parameters, context),
        )
        if fields["cloud_mask"] and not fields["keep_clear"]:
            raise QgsProcessingException(tr(
                "CLOUD_MASK is used only when keeping clear pixels: tick 'Keep clear pixels' (KEEP_CLEAR) "
                "or leave CLOUD_MASK empty."
            ))
        fields.update(self.common_request_fields(parameters, context, layer))
        self.result_name = naming.result_name(layer.name())
        return fields
