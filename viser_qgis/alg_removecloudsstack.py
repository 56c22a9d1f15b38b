"""viser:removecloudsstack — remove the clouds of one date using several dates of the same place."""

from __future__ import annotations

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterLayer,
)

from . import naming
from .algorithm_base import (
    RESAMPLING,
    ViserAlgorithm,
    advanced_help,
    bands_help,
    choices_help,
    help_text,
    model_help,
    requirements_help,
)
from .i18n import tr


class RemoveCloudsStackAlgorithm(ViserAlgorithm):
    OUTPUT_FIELDS = {"output": "OUTPUT", "score_output": "SCORE", "uncertainty_output": "UNCERTAINTY",
                     "source_dates_output": "SOURCE_DATES"}

    def name(self):
        return "removecloudsstack"

    def displayName(self):  # noqa: N802
        return tr("Remove clouds (multi-temporal stack)")

    def shortDescription(self):  # noqa: N802
        return tr("Removes the clouds of one date with the help of other dates of the same place.")

    def shortHelpString(self):  # noqa: N802
        return help_text(
            tr("Removes clouds from one date of a time series with the multi-temporal VISER-CR network, which "
               "borrows what is hidden under the clouds from the other dates (aligned to the reference by "
               "optical flow inside the network)."),
            tr("Inputs: INPUTS, two or more rasters of the same place and sensor at different dates (one also "
               "works; any number: when there are more than the model takes, each tile uses the reference and "
               "the dates that see most of what it cannot, and the log says which), in any order; REFERENCE, the date to clear and the grid (CRS, extent, pixel size) of "
               "the output, which must be one of INPUTS (default: the first). The other dates are resampled "
               "onto the reference grid with RESAMPLING; they must overlap it. With qgis_process give each "
               "date with its own INPUTS=path."),
            bands_help(stack=True), model_help(),
            tr("Keep clear pixels: copy the reference where it is clear and only fill the clouds."),
            advanced_help(), choices_help(),
            tr("Outputs: OUTPUT, the cloud-free reference date on its own grid; optionally SCORE (cloud score "
               "of the reference date), UNCERTAINTY and SOURCE_DATES (per pixel, the number of the input date the "
               "fill took most from, 1 = the first of INPUTS; 0 where no date sees the ground and the gap was "
               "filled from around it), styled with one colour per date."),
            requirements_help(),
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                "INPUTS", tr("Raster layers of the same place (the dates)"), QgsProcessing.TypeRaster
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                "REFERENCE", tr("Reference date / output grid (one of the inputs; default the first)"), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                "RESAMPLING", tr("Resampling of the other dates onto the reference grid"),
                options=RESAMPLING, allowMultiple=False, defaultValue="bilinear", usesStaticStrings=True,
            )
        )
        self.add_sensor_parameters("REFERENCE")
        self.add_model_parameters()
        self.addParameter(
            QgsProcessingParameterBoolean("KEEP_CLEAR", tr("Keep clear pixels (fill only the clouds)"), False)
        )
        self.add_run_parameters()
        self.add_output_options()
        self.addParameter(self.raster_destination("OUTPUT", tr("Cloud-free reference date")))
        self.addParameter(self.raster_destination("SCORE", tr("Cloud score of the reference date"), optional=True))
        self.addParameter(
            self.raster_destination("UNCERTAINTY", tr("Uncertainty (implies test-time augmentation)"), optional=True)
        )
        self.addParameter(self.raster_destination(
            "SOURCE_DATES", tr("Source date of each pixel (input number; 0 = no date sees it)"), optional=True))
        self.add_run_outputs()

    def build_request_fields(self, parameters, context, feedback) -> dict:
        layers = self.parameterAsLayerList(parameters, "INPUTS", context) or []
        if not layers:
            raise QgsProcessingException(
                tr("INPUTS is empty: give the rasters of the stack (the dates of the same place).")
            )
        paths = [self.layer_path(layer, "INPUTS") for layer in layers]
        reference = 0
        reference_layer = layers[0]
        ref = self.parameterAsRasterLayer(parameters, "REFERENCE", context)
        if ref is not None:
            ref_path = os.path.realpath(self.layer_path(ref, "REFERENCE"))
            matches = [i for i, path in enumerate(paths) if os.path.realpath(path) == ref_path]
            if not matches:
                raise QgsProcessingException(tr(
                    "REFERENCE '{layer}' is not one of INPUTS: the reference is the date to clear and must be "
                    "in the stack. Add it to INPUTS or leave REFERENCE empty (= the first)."
                ).format(layer=ref.name()))
            reference, reference_layer = matches[0], layers[matches[0]]
        fields = dict(
            inputs=paths,
            reference=reference,
            resampling=self.choice(parameters, "RESAMPLING", context) or "bilinear",
            keep_clear=self.parameterAsBoolean(parameters, "KEEP_CLEAR", context),
        )
        fields.update(self.common_request_fields(parameters, context, reference_layer))
        self.date_labels = [layer.name() for layer in layers]
        order = [reference] + [i for i in range(len(layers)) if i != reference]
        self.extra["name"] = naming.stack_result_name([layers[i].name() for i in order])
        return fields

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        result = self.run_removal(parameters, context, feedback)
        outputs = {
            "OUTPUT": self.as_str(result.output),
            "SCORE": self.as_str(result.score_output),
            "UNCERTAINTY": self.as_str(result.uncertainty_output),
            "SOURCE_DATES": self.as_str(result.source_dates_output),
        }
        self.remember_raster_outputs(outputs)
        outputs.update(self.run_outputs(result))
        return outputs
