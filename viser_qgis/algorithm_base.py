"""Shared parameters and plumbing of the VISER-CR Processing algorithms.

Every algorithm resolves its parameters in ``prepareAlgorithm`` (main thread: layers are read from
the context there) into plain values, runs the engine in ``processAlgorithm`` (a worker thread in
the GUI: no iface, no widgets, no project writes) and converts engine errors into
``QgsProcessingException``.
"""

from __future__ import annotations

import os
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QIcon

from . import engine

ICON_PATH = engine.PLUGIN_ROOT / "resources" / "icons" / "viser.svg"

# The engine's sensor presets (core.sensors.PRESETS); kept here so that loading the provider never
# imports the engine. tests/qgis checks that both lists agree.
SENSORS = ["auto", "s2-l1c", "s2-l2a", "landsat-c2l2", "rgb8", "rgbn8"]
RESAMPLING = ["bilinear", "nearest", "cubic", "cubic_spline", "lanczos", "average"]
AUTO_MODEL = "auto"
GDAL_RASTER_OPTIONS_WIDGET = {
    "widget_wrapper": {"class": "processing.algs.gdal.ui.RasterOptionsWidget.RasterOptionsWidgetWrapper"}
}

BANDS_HELP = (
    "<b>Bands</b>: by default the sensor preset picks the bands the model needs (for Sentinel-2 "
    "B4, B3, B2, B8 = red, green, blue, near infrared; for 3-band models red, green, blue) and "
    "scales them to reflectance. BANDS overrides the selection: the 1-based band numbers of the "
    "input in the model's band order (e.g. 4, 3, 2, 8 for a 13-band Sentinel-2 L1C file and an "
    "RGBN model).<br>"
)
MODEL_HELP = (
    "<b>Model</b>: 'auto' takes the bundled model that fits the input's bands and number of dates; "
    "MODEL_FILE takes a model of your own (a .safetensors file with its .json model card beside "
    "it, or the card itself) and overrides MODEL.<br>"
)
ADVANCED_HELP = (
    "<b>Advanced</b>: SCALE and OFFSET override the preset's conversion of digital numbers to "
    "reflectance (reflectance = DN x SCALE + OFFSET; Sentinel-2 products of processing baseline 04.00 "
    "or later need OFFSET -0.1 when their metadata does not say so); TILE_SIZE and OVERLAP (pixels, "
    "default the model card's) control the tiling "
    "of large rasters; DEVICE is auto (a CUDA GPU when PyTorch sees one, else the CPU), cpu, cuda "
    "or cuda:N; TTA averages flipped and rotated passes (slower, slightly better); EXTENT processes "
    "only part of the raster (in any CRS; it is reprojected to the raster's); CREATION_OPTIONS are "
    "GDAL GeoTIFF options (KEY=VALUE separated by |) and COG writes a Cloud Optimized GeoTIFF.<br>"
)
REQUIREMENTS_HELP = (
    "<b>Requirements</b>: PyTorch in QGIS's Python. When it is missing the algorithm says so and "
    "how to install it; the VISER-CR dock (Plugins menu) installs it."
)


def _optional(parameter: QgsProcessingParameterDefinition, advanced: bool = False):
    flags = parameter.flags() | QgsProcessingParameterDefinition.FlagOptional
    if advanced:
        flags |= QgsProcessingParameterDefinition.FlagAdvanced
    parameter.setFlags(flags)
    return parameter


def _advanced(parameter: QgsProcessingParameterDefinition):
    parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return parameter


class ViserAlgorithm(QgsProcessingAlgorithm):
    """Base class: icon, groups, common parameters, engine call and error handling."""

    GROUP = "Cloud removal"
    GROUP_ID = "cloudremoval"

    def __init__(self):
        super().__init__()
        self.request_fields: dict = {}
        self.extra: dict = {}

    # ----------------------------------------------------------------------------------- identity
    def createInstance(self):  # noqa: N802
        return type(self)()

    def group(self):
        return self.GROUP

    def groupId(self):  # noqa: N802
        return self.GROUP_ID

    def icon(self):
        return QIcon(str(ICON_PATH))

    def helpUrl(self):  # noqa: N802
        return "https://github.com/viser-cr/viser-cr-qgis#readme"

    def flags(self):
        return super().flags() | QgsProcessingAlgorithm.FlagCanCancel

    # ---------------------------------------------------------------------------- parameter blocks
    def add_sensor_parameters(self, band_parent: str) -> None:
        self.addParameter(
            QgsProcessingParameterEnum(
                "SENSOR",
                "Sensor preset (band selection and scaling to reflectance)",
                options=SENSORS,
                allowMultiple=False,
                defaultValue="auto",
                usesStaticStrings=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterBand(
                "BANDS",
                "Band override (1-based band numbers, in the model's band order)",
                None,
                band_parent,
                True,
                True,
            )
        )
        for name, description in (
            ("SCALE", "Scale to reflectance: reflectance = DN x SCALE + OFFSET (default: the sensor preset's)"),
            ("OFFSET", "Offset to reflectance (e.g. -0.1 for Sentinel-2 processing baseline 04.00 and later)"),
        ):
            self.addParameter(
                _optional(
                    QgsProcessingParameterNumber(name, description, QgsProcessingParameterNumber.Double, None, True),
                    advanced=True,
                )
            )

    def add_model_parameters(self) -> None:
        self.addParameter(
            QgsProcessingParameterEnum(
                "MODEL",
                "Model",
                options=[AUTO_MODEL, *engine.bundled_model_names()],
                allowMultiple=False,
                defaultValue=AUTO_MODEL,
                usesStaticStrings=True,
            )
        )
        model_file = QgsProcessingParameterFile(
            "MODEL_FILE",
            "Model file (.safetensors with its .json card beside it, or the .json card; overrides Model)",
            behavior=QgsProcessingParameterFile.File,
            fileFilter="VISER-CR models (*.safetensors *.json);;All files (*.*)",
            optional=True,
        )
        self.addParameter(model_file)

    def add_run_parameters(self, tta: bool = True, extent: bool = True) -> None:
        for name, label, lowest, highest in (
            ("TILE_SIZE", "Tile size in pixels (default: the model card's)", 16, 8192),
            ("OVERLAP", "Tile overlap in pixels (default: the model card's)", 0, 4096),
        ):
            number = QgsProcessingParameterNumber(
                name, label, QgsProcessingParameterNumber.Integer, None, True, lowest, highest
            )
            self.addParameter(_optional(number, advanced=True))
        self.addParameter(
            _advanced(QgsProcessingParameterString("DEVICE", "Device (auto, cpu, cuda or cuda:N)", "auto"))
        )
        if tta:
            self.addParameter(
                _advanced(QgsProcessingParameterBoolean("TTA", "Test-time augmentation (slower)", False))
            )
        if extent:
            self.addParameter(
                _optional(QgsProcessingParameterExtent("EXTENT", "Process only this extent"), advanced=True)
            )

    def add_output_options(self) -> None:
        options = _optional(
            QgsProcessingParameterString("CREATION_OPTIONS", "GeoTIFF creation options", "", False, True),
            advanced=True,
        )
        options.setMetadata(GDAL_RASTER_OPTIONS_WIDGET)
        self.addParameter(options)
        self.addParameter(_advanced(QgsProcessingParameterBoolean("COG", "Write a Cloud Optimized GeoTIFF", False)))

    def add_run_outputs(self) -> None:
        self.addOutput(QgsProcessingOutputString("USED_MODEL", "Model used"))
        self.addOutput(QgsProcessingOutputString("USED_DEVICE", "Device used"))
        self.addOutput(QgsProcessingOutputString("USED_SENSOR", "Sensor preset used"))
        self.addOutput(QgsProcessingOutputNumber("TILES", "Tiles processed"))

    @staticmethod
    def raster_destination(name: str, description: str, optional: bool = False):
        return QgsProcessingParameterRasterDestination(
            name, description, None, optional, not optional
        )

    # ------------------------------------------------------------------------------ value helpers
    def raster_path(self, parameters, name: str, context, optional: bool = False) -> str | None:
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            if optional:
                return None
            raise QgsProcessingException(f"{name}: no raster layer given, or it cannot be opened.")
        return self.layer_path(layer, name)

    @staticmethod
    def layer_path(layer: QgsRasterLayer, name: str) -> str:
        if not layer.isValid():
            raise QgsProcessingException(f"{name}: the raster layer '{layer.name()}' is not valid.")
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"{name}: the layer '{layer.name()}' comes from the '{layer.providerType()}' provider; "
                "VISER-CR reads raster files (GeoTIFF and other GDAL formats). Save it as a GeoTIFF first."
            )
        return layer.source().split("|")[0]

    def optional_int(self, parameters, name: str, context) -> int | None:
        value = parameters.get(name)
        if value is None or value == "":
            return None
        return self.parameterAsInt(parameters, name, context)

    def optional_float(self, parameters, name: str, context) -> float | None:
        value = parameters.get(name)
        if value is None or value == "":
            return None
        return self.parameterAsDouble(parameters, name, context)

    def model_choice(self, parameters, context) -> str | None:
        model_file = self.parameterAsFile(parameters, "MODEL_FILE", context)
        if model_file:
            if not Path(model_file).is_file():
                raise QgsProcessingException(
                    f"MODEL_FILE: {model_file} does not exist. Give a .safetensors weights file with its "
                    ".json model card beside it, or the .json card."
                )
            return model_file
        model = self.parameterAsEnumString(parameters, "MODEL", context)
        return None if not model or model == AUTO_MODEL else model

    def destination(self, parameters, name: str, context) -> str | None:
        if name not in parameters or parameters.get(name) in (None, ""):
            definition = self.parameterDefinition(name)
            if definition is not None and definition.flags() & QgsProcessingParameterDefinition.FlagOptional:
                return None
        path = self.parameterAsOutputLayer(parameters, name, context)
        return path or None

    @staticmethod
    def creation_options(text: str) -> dict | None:
        options = {}
        for item in (text or "").replace(",", "|").split("|"):
            item = item.strip()
            if not item:
                continue
            if "=" not in item:
                raise QgsProcessingException(
                    f"CREATION_OPTIONS: '{item}' is not KEY=VALUE (separate options with |, e.g. "
                    "COMPRESS=DEFLATE|PREDICTOR=2)."
                )
            key, value = item.split("=", 1)
            options[key.strip().upper()] = value.strip()
        return options or None

    @staticmethod
    def threads() -> int | None:
        """In the desktop GUI leave one core to QGIS so that it stays responsive."""
        app = QgsApplication.instance()
        if app is not None and app.platform() == "desktop":
            return max(1, (os.cpu_count() or 2) - 1)
        return None

    def common_request_fields(self, parameters, context, reference_layer: QgsRasterLayer | None) -> dict:
        fields = dict(
            model=self.model_choice(parameters, context),
            tile_size=self.optional_int(parameters, "TILE_SIZE", context),
            overlap=self.optional_int(parameters, "OVERLAP", context),
            device=(self.parameterAsString(parameters, "DEVICE", context) or "auto").strip(),
            threads=self.threads(),
        )
        if self.parameterDefinition("SENSOR") is not None:
            fields["sensor"] = self.parameterAsEnumString(parameters, "SENSOR", context) or "auto"
            bands = self.parameterAsInts(parameters, "BANDS", context)
            fields["bands"] = list(bands) or None
            fields["scale"] = self.optional_float(parameters, "SCALE", context)
            fields["offset"] = self.optional_float(parameters, "OFFSET", context)
        if self.parameterDefinition("TTA") is not None:
            fields["tta"] = self.parameterAsBoolean(parameters, "TTA", context)
        if self.parameterDefinition("EXTENT") is not None and parameters.get("EXTENT") not in (None, ""):
            crs = reference_layer.crs() if reference_layer is not None else None
            rect = self.parameterAsExtent(parameters, "EXTENT", context, crs)
            if rect.isNull() or rect.isEmpty():
                raise QgsProcessingException("EXTENT is empty.")
            fields["bounds"] = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        if self.parameterDefinition("CREATION_OPTIONS") is not None:
            fields["creation_options"] = self.creation_options(
                self.parameterAsString(parameters, "CREATION_OPTIONS", context)
            )
            fields["cog"] = self.parameterAsBoolean(parameters, "COG", context)
        return fields

    # ---------------------------------------------------------------------------------- execution
    REQUIRES_TORCH = True

    def prepareAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Resolve layers and values (main thread). A problem is raised from processAlgorithm instead:
        QGIS reduces a failed prepare to "There were errors executing the algorithm" for
        processing.run callers, while an exception from processAlgorithm keeps its message."""
        self.prepare_error = None
        try:
            if self.REQUIRES_TORCH:
                engine.require_dependencies()
            self.request_fields = self.build_request_fields(parameters, context, feedback)
        except QgsProcessingException as exc:
            self.prepare_error = exc
        return True

    def raise_prepare_error(self) -> None:
        if getattr(self, "prepare_error", None) is not None:
            raise self.prepare_error

    def build_request_fields(self, parameters, context, feedback) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def run_removal(self, feedback) -> object:
        """Run ``core.pipeline.remove_clouds`` on the prepared request (worker thread)."""
        self.raise_prepare_error()
        pipeline = engine.core_module("pipeline")
        callbacks = engine.FeedbackCallbacks(feedback)
        try:
            request = engine.run_engine(pipeline.CloudRemovalRequest, feedback=feedback, **self.request_fields)
            feedback.pushInfo(f"VISER-CR: {len(request.inputs)} input(s) -> {request.output or request.score_output}")
            result = engine.run_engine(
                pipeline.remove_clouds,
                request,
                progress=callbacks.progress,
                is_cancelled=callbacks.is_cancelled,
                log=callbacks.log,
                feedback=feedback,
            )
        except QgsProcessingException:
            raise
        except Exception as exc:  # noqa: BLE001 - no traceback reaches the Processing layer
            raise QgsProcessingException(
                f"VISER-CR failed unexpectedly ({type(exc).__name__}: {exc}). Nothing was written. Check the "
                "input with `viser-cr info`, and report this message if the input is fine."
            ) from exc
        if feedback.isCanceled():
            raise QgsProcessingException(engine.CANCELLED_MESSAGE)
        feedback.pushInfo(
            f"VISER-CR done: model {result.model} on {result.device}, sensor {result.sensor}, input bands "
            f"{result.bands}, {result.tiles} tile(s) in {result.seconds:.1f} s."
        )
        return result

    @staticmethod
    def run_outputs(result) -> dict:
        return {
            "USED_MODEL": str(result.model),
            "USED_DEVICE": str(result.device),
            "USED_SENSOR": str(result.sensor),
            "TILES": int(result.tiles),
        }

    @staticmethod
    def as_str(path) -> str | None:
        return None if path is None else str(path)


