"""viser:evaluate — image-quality metrics of a cloud-free result against a clear reference."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ..core.metrics import PROTOCOLS
from ..core.sensors import SENSOR_CHOICES
from . import engine, report
from .algorithm_base import ViserAlgorithm, _optional, choices_help, help_text
from .i18n import tr

METRICS = (
    ("PSNR", "psnr", "PSNR (dB, higher is better)"),
    ("SSIM", "ssim", "SSIM (0..1, higher is better)"),
    ("MAE", "mae", "MAE (reflectance, lower is better)"),
    ("LPIPS", "lpips", "LPIPS (lower is better; when available)"),
)


class EvaluateAlgorithm(ViserAlgorithm):
    GROUP = "Evaluation"  # translated by group()
    GROUP_ID = "evaluation"
    REQUIRES_TORCH = False  # core.metrics is numpy + rasterio

    PREDICTION = "PREDICTION"
    REFERENCE = "REFERENCE"
    REFERENCE_BANDS = "REFERENCE_BANDS"
    PROTOCOL = "PROTOCOL"
    MASK = "MASK"
    CLOUDY = "CLOUDY"
    CLOUDY_BANDS = "CLOUDY_BANDS"
    OUTPUT_HTML = "OUTPUT_HTML"
    PIXELS = "PIXELS"
    USED_PROTOCOL = "USED_PROTOCOL"

    def __init__(self):
        super().__init__()
        self.metric_options: dict = {}  # core.metrics.evaluate_rasters's options, the same for the baseline

    def name(self):
        return "evaluate"

    def displayName(self):  # noqa: N802
        return tr("Evaluate cloud removal (PSNR, SSIM, MAE)")

    def shortDescription(self):  # noqa: N802
        return tr("Compares a cloud-free result with a clear reference image of the same place.")

    def shortHelpString(self):  # noqa: N802
        return help_text(
            tr("Computes image-quality metrics of a cloud-removal result against a clear (cloud-free) reference "
               "acquisition of the same place: PSNR, SSIM and MAE, and LPIPS when its network is available. The "
               "rasters must share the grid (CRS, extent, size) and bands; values are compared as reflectance "
               "(see the engine's metrics protocol)."),
            tr("Inputs: PREDICTION, the output of Remove clouds; REFERENCE, the clear image. BANDS: the "
               "prediction's bands to compare (default all); REFERENCE_BANDS: the matching bands of the "
               "reference when it has another layout (e.g. 4, 3, 2, 8 of a 13-band Sentinel-2 file against a "
               "red, green, blue, NIR prediction); with qgis_process repeat BANDS= and REFERENCE_BANDS= once per "
               "band. SENSOR decides how digital numbers become reflectance (or give SCALE and OFFSET). MASK "
               "(optional, non-zero = cloud) adds cloudy-pixel and clear-pixel figures."),
            tr("Protocol: clean = reflectance clipped to [0, 1], all bands; emrdm-cuhk and emrdm-sen2mtc "
               "reproduce the published CUHK-CR and Sen2_MTC_New comparisons. The report names the protocol."),
            choices_help(),
            tr("Baseline: CLOUDY, the cloudy input the result was made from, is compared with the reference in "
               "the same way, so that the figures say how much the cloud removal gained (CLOUDY_BANDS: its "
               "bands, by default REFERENCE_BANDS when it has the reference's layout, else BANDS)."),
            tr("Outputs: the metrics as numbers (usable by the next algorithm of a model), those of the cloudy "
               "input (CLOUDY_PSNR, CLOUDY_SSIM, CLOUDY_MAE), the number of pixels compared and OUTPUT_HTML, a "
               "report with a table per region (all pixels; with MASK also cloudy and clear pixels)."),
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.PREDICTION, tr("Cloud-free result")))
        self.addParameter(QgsProcessingParameterRasterLayer(self.REFERENCE, tr("Clear reference raster")))
        self.addParameter(QgsProcessingParameterBand(self.BANDS, tr("Bands of the prediction (default all)"), None,
                                                     self.PREDICTION, True, True))
        self.addParameter(QgsProcessingParameterBand(self.REFERENCE_BANDS, tr("Matching bands of the reference"),
                                                     None, self.REFERENCE, True, True))
        self.addParameter(QgsProcessingParameterEnum(self.SENSOR, tr("Sensor (scaling to reflectance)"),
                                                     list(SENSOR_CHOICES), False, "auto", usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterEnum(self.PROTOCOL, tr("Metric protocol"), list(PROTOCOLS), False, "clean",
                                                     usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.MASK, tr("Cloud mask (non-zero = cloud)"),
                                                            optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.CLOUDY, tr("Cloudy input (the baseline the result is compared with)"), optional=True))
        self.addParameter(_optional(QgsProcessingParameterBand(
            self.CLOUDY_BANDS, tr("Matching bands of the cloudy input"), None, self.CLOUDY, True, True), advanced=True))
        for name, description in ((self.SCALE, tr("Scale: reflectance = DN x scale + offset")), (self.OFFSET, tr("Offset"))):
            self.addParameter(_optional(QgsProcessingParameterNumber(
                name, description, QgsProcessingParameterNumber.Double, None, True), advanced=True))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_HTML, tr("Report"), tr("HTML files (*.html)"), None, True, True
            )
        )
        for key, _, description in METRICS:
            self.addOutput(QgsProcessingOutputNumber(key, tr(description)))
        self.addOutput(QgsProcessingOutputNumber(self.PIXELS, tr("Pixels compared")))
        for key, _, description in METRICS[:3]:
            self.addOutput(QgsProcessingOutputNumber(f"CLOUDY_{key}", tr("Cloudy input: {metric}").format(
                metric=tr(description))))
        self.addOutput(QgsProcessingOutputString(self.USED_PROTOCOL, tr("Protocol")))

    def build_request_fields(self, parameters, context, feedback) -> dict:
        fields = dict(
            prediction=self.raster_path(parameters, self.PREDICTION, context),
            reference=self.raster_path(parameters, self.REFERENCE, context),
            cloudy=self.raster_path(parameters, self.CLOUDY, context, optional=True),
            html=self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context) or None,
        )
        self.metric_options = dict(
            bands=list(self.parameterAsInts(parameters, self.BANDS, context)) or None,
            reference_bands=list(self.parameterAsInts(parameters, self.REFERENCE_BANDS, context)) or None,
            sensor=self.choice(parameters, self.SENSOR, context) or "auto",
            protocol=self.choice(parameters, self.PROTOCOL, context) or "clean",
            mask=self.raster_path(parameters, self.MASK, context, optional=True),
            scale=self.optional_float(parameters, self.SCALE, context),
            offset=self.optional_float(parameters, self.OFFSET, context),
        )
        fields["cloudy_bands"] = self.cloudy_bands(parameters, context)
        return fields

    def cloudy_bands(self, parameters, context) -> list[int] | None:
        """The cloudy input's bands to compare: CLOUDY_BANDS, else REFERENCE_BANDS when it has the reference's
        layout (the usual case: both are raw files of the same sensor), else BANDS."""
        given = list(self.parameterAsInts(parameters, self.CLOUDY_BANDS, context))
        if given:
            return given
        cloudy = self.parameterAsRasterLayer(parameters, self.CLOUDY, context)
        reference = self.parameterAsRasterLayer(parameters, self.REFERENCE, context)
        if cloudy is not None and reference is not None and cloudy.bandCount() == reference.bandCount():
            return self.metric_options["reference_bands"] or self.metric_options["bands"]
        return self.metric_options["bands"]

    @staticmethod
    def metric_outputs(values: dict, prefix: str, feedback, metrics=METRICS) -> dict:
        outputs = {}
        for key, name, _ in metrics:
            value = values.get(name, values.get(key))
            outputs[prefix + key] = None if value is None else float(value)
            if value is not None:
                feedback.pushInfo(f"{prefix}{key}: {float(value):.4f}")
        return outputs

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self.raise_prepare_error()
        metrics_module = engine.core_module("metrics")
        fields = self.request_fields
        feedback.setProgressText(tr("Computing metrics"))
        values = engine.run_engine(
            metrics_module.evaluate_rasters, fields["prediction"], fields["reference"], feedback=feedback,
            **self.metric_options,
        )
        baseline = None
        if fields["cloudy"]:
            feedback.setProgressText(tr("Computing the cloudy input's metrics (baseline)"))
            feedback.setProgress(50)
            baseline = engine.run_engine(
                metrics_module.evaluate_rasters, fields["cloudy"], fields["reference"], feedback=feedback,
                **dict(self.metric_options, bands=fields["cloudy_bands"]),
            )
        if feedback.isCanceled():
            raise QgsProcessingException(tr(engine.CANCELLED_MESSAGE))
        outputs = self.metric_outputs(values, "", feedback)
        outputs.update(self.metric_outputs(baseline or {}, "CLOUDY_", feedback, METRICS[:3]))
        outputs[self.PIXELS] = int(values.get("pixels", 0))
        outputs[self.USED_PROTOCOL] = str(values.get("protocol", self.metric_options["protocol"]))
        if fields["html"]:
            files = dict(prediction=fields["prediction"], reference=fields["reference"], cloudy=fields["cloudy"],
                         mask=self.metric_options["mask"])
            report.write_report(fields["html"], files, values, baseline)
            outputs[self.OUTPUT_HTML] = fields["html"]
        feedback.setProgress(100)
        return outputs
