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
    RESAMPLING_METHODS,
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


class RemoveCloudsStackAlgorithm(RemovalAlgorithm):
    INPUTS = "INPUTS"
    REFERENCE = "REFERENCE"
    RESAMPLING = "RESAMPLING"
    KEEP_CLEAR = "KEEP_CLEAR"
    CLOUD_MASKS = "CLOUD_MASKS"
    OUTPUT_FIELDS = {"output": RemovalAlgorithm.OUTPUT, "score_output": RemovalAlgorithm.SCORE,
                     "uncertainty_output": RemovalAlgorithm.UNCERTAINTY,
                     "source_dates_output": RemovalAlgorithm.SOURCE_DATES}

    def name(self):
        return "removecloudsstack"

    def displayName(self):  # noqa: N802
        return tr("Remove clouds (multi-temporal stack)")

    def shortDescription(self):  # noqa: N802
        return tr("Removes the clouds of one date with the help of other dates of the same place.")

    def shortHelpString(self):  # noqa: N802
        return help_text(
            tr("Removes clouds from one date of a time series with the multi-temporal VISER-CR network, which "
               "borrows what is hidden under the clouds from the other dates (resampled onto the reference "
               "grid; the bundled models take them as co-registered, a model trained with optical flow aligns "
               "them inside the network)."),
            tr("Inputs: INPUTS, two or more rasters of the same place and sensor at different dates (one also "
               "works; any number: the bundled stack models take them all in each tile; a model that takes fewer "
               "uses in each tile the reference and the dates that see most of what it cannot, and the log says "
               "which), in any order; REFERENCE, the date to clear and the grid (CRS, extent, pixel size) of "
               "the output, which must be one of INPUTS (default: the first). The other dates are resampled "
               "onto the reference grid with RESAMPLING; they must overlap it. With qgis_process give each "
               "date with its own INPUTS=path."),
            bands_help(stack=True), model_help(),
            tr("Keep clear pixels (on by default): copy the reference where it is clear and only fill the clouds. "
               "CLOUD_MASKS (optional, with Keep clear pixels): one cloud mask per date, in the order of INPUTS (each date's "
               "quality band: every date's mask then decides which of its pixels the fill may take, instead of "
               "the model's score of that date), or one mask, the reference's."),
            mask_help("CLOUD_MASKS"),
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
                self.INPUTS, tr("Raster layers of the same place (the dates)"), QgsProcessing.TypeRaster
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                self.REFERENCE, tr("Reference date / output grid (one of the inputs; default the first)"), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.RESAMPLING, tr("Resampling of the other dates onto the reference grid"),
                options=RESAMPLING_METHODS, allowMultiple=False, defaultValue="bilinear", usesStaticStrings=True,
            )
        )
        self.add_sensor_parameters(self.REFERENCE)
        self.add_model_parameters()
        self.addParameter(
            QgsProcessingParameterBoolean(self.KEEP_CLEAR, tr("Keep clear pixels (fill only the clouds)"), True)
        )
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.CLOUD_MASKS, tr("Cloud masks (one per date in the order of the inputs, or the reference's; "
                                     "optional, used by 'Keep clear pixels')"),
                QgsProcessing.TypeRaster, optional=True,
            )
        )
        self.add_mask_value_parameters()
        self.add_run_parameters()
        self.add_output_options()
        self.addParameter(self.raster_destination(self.OUTPUT, tr("Cloud-free reference date")))
        self.addParameter(self.raster_destination(self.SCORE, tr("Cloud score of the reference date"), optional=True))
        self.addParameter(
            self.raster_destination(self.UNCERTAINTY, tr("Uncertainty (implies test-time augmentation)"),
                                    optional=True)
        )
        self.addParameter(self.raster_destination(
            self.SOURCE_DATES, tr("Source date of each pixel (input number; 0 = no date sees it)"), optional=True))
        self.add_run_outputs()

    def build_request_fields(self, parameters, context, feedback) -> dict:
        layers = self.parameterAsLayerList(parameters, self.INPUTS, context) or []
        if not layers:
            raise QgsProcessingException(
                tr("INPUTS is empty: give the rasters of the stack (the dates of the same place).")
            )
        paths = [self.layer_path(layer, self.INPUTS) for layer in layers]
        reference = 0
        reference_layer = layers[0]
        ref = self.parameterAsRasterLayer(parameters, self.REFERENCE, context)
        if ref is not None:
            ref_path = os.path.realpath(self.layer_path(ref, self.REFERENCE))
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
            resampling=self.choice(parameters, self.RESAMPLING, context) or "bilinear",
            keep_clear=self.parameterAsBoolean(parameters, self.KEEP_CLEAR, context),
            **self.mask_value_fields(parameters, context),
        )
        masks = [self.layer_path(layer, self.CLOUD_MASKS)
                 for layer in self.parameterAsLayerList(parameters, self.CLOUD_MASKS, context) or []]
        if len(masks) == 1:
            fields["cloud_mask"] = masks[0]
        elif masks:
            fields["cloud_masks"] = masks
        fields.update(self.common_request_fields(parameters, context, reference_layer))
        self.date_labels = [layer.name() for layer in layers]
        order = [reference] + [i for i in range(len(layers)) if i != reference]
        self.result_name = naming.stack_result_name([layers[i].name() for i in order])
        return fields
