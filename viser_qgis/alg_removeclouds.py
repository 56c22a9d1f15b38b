"""viser:removeclouds — remove the clouds of one raster layer."""

from __future__ import annotations

from qgis.core import QgsProcessingException, QgsProcessingParameterBoolean, QgsProcessingParameterRasterLayer

from .algorithm_base import ADVANCED_HELP, BANDS_HELP, MODEL_HELP, REQUIREMENTS_HELP, ViserAlgorithm


class RemoveCloudsAlgorithm(ViserAlgorithm):
    OUTPUT_FIELDS = {"output": "OUTPUT", "score_output": "SCORE", "uncertainty_output": "UNCERTAINTY"}

    def name(self):
        return "removeclouds"

    def displayName(self):  # noqa: N802
        return "Remove clouds"

    def shortDescription(self):  # noqa: N802
        return "Fills the cloudy parts of a satellite image with the VISER-CR network."

    def shortHelpString(self):  # noqa: N802
        return (
            "Removes clouds (and thin haze) from one optical satellite raster with the VISER-CR deep "
            "network and writes a georeferenced, cloud-filled raster on the same grid (CRS, extent, "
            "pixel size) as the input.<br><br>"
            "<b>Input</b>: a Sentinel-2 L1C/L2A, Landsat Collection 2 Level-2, or 8-bit RGB/RGBN raster "
            "file. SENSOR 'auto' recognises the sensor from the band count, data type and metadata "
            "and says which preset it took; pick the preset yourself when it cannot tell.<br>"
            + BANDS_HELP + MODEL_HELP +
            "<b>Keep clear pixels</b>: copy the input where it is clear (by the model's cloud score, or "
            "by CLOUD_MASK where given: non-zero = cloud) and only fill the clouds.<br>"
            + ADVANCED_HELP +
            "<b>Outputs</b>: OUTPUT, the cloud-free raster with the model's bands (band descriptions "
            "name them), in the input's data type and scale; optionally SCORE, the cloud score "
            "(0 = clear, 1 = occluded) and UNCERTAINTY, the per-pixel spread of test-time "
            "augmentation passes.<br>" + REQUIREMENTS_HELP
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Cloudy raster layer"))
        self.add_sensor_parameters("INPUT")
        self.add_model_parameters()
        self.addParameter(
            QgsProcessingParameterBoolean("KEEP_CLEAR", "Keep clear pixels (fill only the clouds)", False)
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                "CLOUD_MASK", "Cloud mask (non-zero = cloud; optional, used by 'Keep clear pixels')",
                optional=True,
            )
        )
        self.add_run_parameters()
        self.add_output_options()
        self.addParameter(self.raster_destination("OUTPUT", "Cloud-free raster"))
        self.addParameter(self.raster_destination("SCORE", "Cloud score (0 clear .. 1 cloud)", optional=True))
        self.addParameter(
            self.raster_destination("UNCERTAINTY", "Uncertainty (implies test-time augmentation)", optional=True)
        )
        self.add_run_outputs()

    def build_request_fields(self, parameters, context, feedback) -> dict:
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if layer is None:
            raise QgsProcessingException("INPUT: no raster layer given, or it cannot be opened.")
        fields = dict(
            inputs=[self.layer_path(layer, "INPUT")],
            keep_clear=self.parameterAsBoolean(parameters, "KEEP_CLEAR", context),
            cloud_mask=self.raster_path(parameters, "CLOUD_MASK", context, optional=True),
        )
        if fields["cloud_mask"] and not fields["keep_clear"]:
            raise QgsProcessingException(
                "CLOUD_MASK is used only when keeping clear pixels: tick 'Keep clear pixels' (KEEP_CLEAR) "
                "or leave CLOUD_MASK empty."
            )
        fields.update(self.common_request_fields(parameters, context, layer))
        self.extra["name"] = f"{layer.name()} cloud-free"
        return fields

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        result = self.run_removal(parameters, context, feedback)
        outputs = {
            "OUTPUT": self.as_str(result.output),
            "SCORE": self.as_str(result.score_output),
            "UNCERTAINTY": self.as_str(result.uncertainty_output),
        }
        self.remember_raster_outputs(outputs)
        outputs.update(self.run_outputs(result))
        return outputs
