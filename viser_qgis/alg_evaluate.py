"""viser:evaluate — image-quality metrics of a cloud-free result against a clear reference."""

from __future__ import annotations

import html
import math
from pathlib import Path

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

from . import engine
from .algorithm_base import SENSORS, ViserAlgorithm, _optional, choices_help, help_text
from .i18n import tr

# core.metrics.PROTOCOLS (kept here so that loading the provider imports nothing of the engine).
PROTOCOLS = ["clean", "emrdm-cuhk", "emrdm-sen2mtc"]

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
            tr("Outputs: the metrics as numbers (usable by the next algorithm of a model), the number of pixels "
               "compared and OUTPUT_HTML, a short HTML report."),
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("PREDICTION", tr("Cloud-free result")))
        self.addParameter(QgsProcessingParameterRasterLayer("REFERENCE", tr("Clear reference raster")))
        self.addParameter(QgsProcessingParameterBand("BANDS", tr("Bands of the prediction (default all)"), None,
                                                     "PREDICTION", True, True))
        self.addParameter(QgsProcessingParameterBand("REFERENCE_BANDS", tr("Matching bands of the reference"),
                                                     None, "REFERENCE", True, True))
        self.addParameter(QgsProcessingParameterEnum("SENSOR", tr("Sensor (scaling to reflectance)"), SENSORS,
                                                     False, "auto", usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterEnum("PROTOCOL", tr("Metric protocol"), PROTOCOLS, False, "clean",
                                                     usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterRasterLayer("MASK", tr("Cloud mask (non-zero = cloud)"),
                                                            optional=True))
        for name, description in (("SCALE", tr("Scale: reflectance = DN x scale + offset")), ("OFFSET", tr("Offset"))):
            self.addParameter(_optional(QgsProcessingParameterNumber(
                name, description, QgsProcessingParameterNumber.Double, None, True), advanced=True))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT_HTML", tr("Report"), tr("HTML files (*.html)"), None, True, True
            )
        )
        for key, _, description in METRICS:
            self.addOutput(QgsProcessingOutputNumber(key, tr(description)))
        self.addOutput(QgsProcessingOutputNumber("PIXELS", tr("Pixels compared")))
        self.addOutput(QgsProcessingOutputString("USED_PROTOCOL", tr("Protocol")))

    def build_request_fields(self, parameters, context, feedback) -> dict:
        fields = dict(
            prediction=self.raster_path(parameters, "PREDICTION", context),
            reference=self.raster_path(parameters, "REFERENCE", context),
            html=self.parameterAsFileOutput(parameters, "OUTPUT_HTML", context) or None,
        )
        self.extra = dict(
            bands=list(self.parameterAsInts(parameters, "BANDS", context)) or None,
            reference_bands=list(self.parameterAsInts(parameters, "REFERENCE_BANDS", context)) or None,
            sensor=self.choice(parameters, "SENSOR", context) or "auto",
            protocol=self.choice(parameters, "PROTOCOL", context) or "clean",
            mask=self.raster_path(parameters, "MASK", context, optional=True),
            scale=self.optional_float(parameters, "SCALE", context),
            offset=self.optional_float(parameters, "OFFSET", context),
        )
        return fields

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self.raise_prepare_error()
        metrics_module = engine.core_module("metrics")
        fields = self.request_fields
        feedback.setProgressText("Computing metrics")
        values = engine.run_engine(
            metrics_module.evaluate_rasters, fields["prediction"], fields["reference"], feedback=feedback,
            **self.extra,
        )
        if feedback.isCanceled():
            raise QgsProcessingException(engine.CANCELLED_MESSAGE)
        outputs = {}
        for key, name, _ in METRICS:
            value = values.get(name, values.get(key))
            outputs[key] = None if value is None else float(value)
            if value is not None:
                feedback.pushInfo(f"{key}: {float(value):.4f}")
        outputs["PIXELS"] = int(values.get("pixels", 0))
        outputs["USED_PROTOCOL"] = str(values.get("protocol", self.extra["protocol"]))
        if fields["html"]:
            write_report(fields["html"], fields["prediction"], fields["reference"], values)
            outputs["OUTPUT_HTML"] = fields["html"]
        feedback.setProgress(100)
        return outputs


def _format(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(v) for v in value)
    return html.escape(str(value))


def write_report(path: str, prediction: str, reference: str, values: dict) -> None:
    rows = []
    for key, name, description in METRICS:
        value = values.get(name, values.get(key))
        rows.append(f"<tr><td>{html.escape(description)}</td><td>{_format(value)}</td></tr>")
    known = {name for _, name, _ in METRICS} | {key for key, _, _ in METRICS} | {"per_band"}
    for key, value in values.items():
        if key not in known:
            rows.append(f"<tr><td>{html.escape(str(key))}</td><td>{_format(value)}</td></tr>")
    per_band = values.get("per_band") or []
    band_rows = ""
    if per_band and isinstance(per_band[0], dict):
        columns = list(per_band[0].keys())
        band_rows = (
            "<h3>Per band</h3><table border=\"1\" cellpadding=\"4\"><tr>"
            + "".join(f"<th>{html.escape(str(c))}</th>" for c in columns) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{_format(b.get(c))}</td>" for c in columns) + "</tr>" for b in per_band)
            + "</table>"
        )
    text = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>VISER-CR evaluation</title></head>"
        "<body><h2>VISER-CR evaluation</h2>"
        f"<p>Prediction: {html.escape(str(prediction))}<br>Reference: {html.escape(str(reference))}</p>"
        "<table border=\"1\" cellpadding=\"4\"><tr><th>Metric</th><th>Value</th></tr>"
        + "".join(rows)
        + "</table>" + band_rows + "</body></html>\n"
    )
    Path(path).write_text(text, encoding="utf-8")
