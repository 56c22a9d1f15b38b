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

from .algorithm_base import (
    ADVANCED_HELP,
    BANDS_HELP,
    MODEL_HELP,
    REQUIREMENTS_HELP,
    RESAMPLING,
    ViserAlgorithm,
)


class RemoveCloudsStackAlgorithm(ViserAlgorithm):
    OUTPUT_FIELDS = {"output": "OUTPUT", "score_output": "SCORE", "uncertainty_output": "UNCERTAINTY"}

    def name(self):
        return "removecloudsstack"

    def displayName(self):  # noqa: N802
        return "Remove clouds (multi-temporal stack)"

    def shortDescription(self):  # noqa: N802
        return "Removes the clouds of one date with the help of other dates of the same place."

    def shortHelpString(self):  # noqa: N802
        return (
            "Removes clouds from one date of a time series with the multi-temporal VISER-CR network, "
            "which borrows what is hidden under the clouds from the other dates (aligned to the "
            "reference by optical flow inside the network).<br><br>"
            "<b>Inputs</b>: INPUTS, two or more rasters of the same place and sensor at different dates "
            "(one also works), in any order; REFERENCE, the date to clear and the grid (CRS, extent, "
            "pixel size) of the output, which must be one of INPUTS (default: the first). The other "
            "dates are resampled onto the reference grid with RESAMPLING; they must overlap it.<br>"
            + BANDS_HELP.replace("BANDS overrides", "BANDS (numbers of the reference's bands, the same for "
                                 "every date) overrides") + MODEL_HELP +
            "<b>Keep clear pixels</b>: copy the reference where it is clear and only fill the clouds.<br>"
            + ADVANCED_HELP +
            "<b>Outputs</b>: OUTPUT, the cloud-free reference date on its own grid; optionally SCORE "
            "(cloud score of the reference date) and UNCERTAINTY.<br>" + REQUIREMENTS_HELP
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                "INPUTS", "Raster layers of the same place (the dates)", QgsProcessing.TypeRaster
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                "REFERENCE", "Reference date / output grid (one of the inputs; default the first)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                "RESAMPLING", "Resampling of the other dates onto the reference grid",
                options=RESAMPLING, allowMultiple=False, defaultValue="bilinear", usesStaticStrings=True,
            )
        )
        self.add_sensor_parameters("REFERENCE")
        self.add_model_parameters()
        self.addParameter(
            QgsProcessingParameterBoolean("KEEP_CLEAR", "Keep clear pixels (fill only the clouds)", False)
        )
        self.add_run_parameters()
        self.add_output_options()
        self.addParameter(self.raster_destination("OUTPUT", "Cloud-free reference date"))
        self.addParameter(self.raster_destination("SCORE", "Cloud score of the reference date", optional=True))
        self.addParameter(
            self.raster_destination("UNCERTAINTY", "Uncertainty (implies test-time augmentation)", optional=True)
        )
        self.add_run_outputs()

    def build_request_fields(self, parameters, context, feedback) -> dict:
        layers = self.parameterAsLayerList(parameters, "INPUTS", context) or []
        if not layers:
            raise QgsProcessingException(
                "INPUTS is empty: give the rasters of the stack (the dates of the same place)."
            )
        paths = [self.layer_path(layer, "INPUTS") for layer in layers]
        reference = 0
        reference_layer = layers[0]
        ref = self.parameterAsRasterLayer(parameters, "REFERENCE", context)
        if ref is not None:
            ref_path = os.path.realpath(self.layer_path(ref, "REFERENCE"))
            matches = [i for i, path in enumerate(paths) if os.path.realpath(path) == ref_path]
            if not matches:
                raise QgsProcessingException(
                    f"REFERENCE '{ref.name()}' is not one of INPUTS: the reference is the date to clear "
                    "and must be in the stack. Add it to INPUTS or leave REFERENCE empty (= the first)."
                )
            reference, reference_layer = matches[0], layers[matches[0]]
        fields = dict(
            inputs=paths,
            reference=reference,
            resampling=self.parameterAsEnumString(parameters, "RESAMPLING", context) or "bilinear",
            keep_clear=self.parameterAsBoolean(parameters, "KEEP_CLEAR", context),
        )
        fields.update(self.common_request_fields(parameters, context, reference_layer))
        self.extra["name"] = f"{reference_layer.name()} cloud-free ({len(paths)} dates)"
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
