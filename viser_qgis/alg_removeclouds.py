"""viser:removeclouds — remove the clouds of one raster layer."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ..core.mask_codes import DEFAULT_ENCODING, ENCODINGS, MAX_BUFFER
from . import naming
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


class RemoveCloudsAlgorithm(RemovalAlgorithm):
    KEEP_CLEAR = "KEEP_CLEAR"
    CLOUD_MASK = "CLOUD_MASK"
    CLOUD_MASK_TYPE = "CLOUD_MASK_TYPE"
    CLOUD_MASK_BUFFER = "CLOUD_MASK_BUFFER"
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
            tr("Keep clear pixels: copy the input where it is clear (where the model's cloud score is below the "
               "gate its fill used: 0.35 on reflectance, 0.6 on 8-bit imagery, or CLOUD_THRESHOLD; or by "
               "CLOUD_MASK where given) and only fill the clouds."),
            tr("CLOUD_MASK_TYPE says which values of CLOUD_MASK are cloud: nonzero (0 = clear, anything else "
               "cloud), landsat-qa-pixel (the QA_PIXEL band of Landsat Collection 2: its cloud, dilated cloud, "
               "cirrus and cloud-shadow bits), sentinel2-scl (the SCL band of Sentinel-2 L2A: cloud shadows, "
               "cloud medium and high probability, thin cirrus) or fmask (Fmask's cloud and cloud-shadow "
               "classes). The product's own quality band then needs no raster calculator first. CLOUD_MASK_BUFFER "
               "(pixels, default 0) grows the mask's clouds: 2-4 px takes the thin rims a tight mask (SCL, a "
               "hand-drawn mask) leaves outside, which the fill would otherwise take brightness from."),
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
            QgsProcessingParameterBoolean(self.KEEP_CLEAR, tr("Keep clear pixels (fill only the clouds)"), False)
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                self.CLOUD_MASK, tr("Cloud mask (optional, used by 'Keep clear pixels')"),
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.CLOUD_MASK_TYPE,
                tr("Cloud mask values (which values of the cloud mask are cloud)"),
                options=list(ENCODINGS),
                allowMultiple=False,
                defaultValue=DEFAULT_ENCODING,
                usesStaticStrings=True,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.CLOUD_MASK_BUFFER, tr("Cloud mask buffer (pixels the mask's clouds grow by)"),
                QgsProcessingParameterNumber.Integer, 0, True, 0, MAX_BUFFER,
            )
        )
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
            cloud_mask_type=self.choice(parameters, self.CLOUD_MASK_TYPE, context) or DEFAULT_ENCODING,
            cloud_mask_buffer=self.optional_int(parameters, self.CLOUD_MASK_BUFFER, context) or 0,
        )
        if fields["cloud_mask"] and not fields["keep_clear"]:
            raise QgsProcessingException(tr(
                "CLOUD_MASK is used only when keeping clear pixels: tick 'Keep clear pixels' (KEEP_CLEAR) "
                "or leave CLOUD_MASK empty."
            ))
        fields.update(self.common_request_fields(parameters, context, layer))
        self.result_name = naming.result_name(layer.name())
        return fields
