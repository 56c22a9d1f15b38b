"""Shared parameters and plumbing of the VISER-CR Processing algorithms.

Every algorithm resolves its input parameters in ``prepareAlgorithm`` (main thread: layers are read
from the context there) into plain values, resolves its output destinations and runs the engine in
``processAlgorithm`` (a worker thread in the GUI: no iface, no widgets, no project writes) and
converts engine errors into ``QgsProcessingException``; ``postProcessAlgorithm`` (main thread again)
attaches the display style to the outputs that the run loads into the project.

Why the destinations are resolved in ``processAlgorithm``: resolving one registers it "to load on
completion" in the context it is resolved with. The Toolbox dialog runs ``processAlgorithm`` with a
temporary worker-thread context and then replaces the dialog context's list of layers to load with
that one (``QgsProcessingContext::takeResultsFrom`` in QGIS 3.22): a destination registered in
``prepareAlgorithm`` is lost and the result never reaches the map. QGIS's own algorithms resolve
their outputs in ``processAlgorithm`` for the same reason.
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

from ..core.device import check_device_name
from ..core.errors import ViserError
from ..core.mask_codes import DEFAULT_ENCODING, ENCODINGS, MASK_MODES, MAX_BUFFER
from ..core.s2cloudless import CLOUD_SOURCES
from ..core.sensors import SENSOR_CHOICES
from . import engine, gdal_options, style
from .i18n import tr

ICON_PATH = engine.PLUGIN_ROOT / "resources" / "icons" / "viser.svg"

RESAMPLING_METHODS = ["bilinear", "nearest", "cubic", "cubic_spline", "lanczos", "average"]
AUTO_MODEL = "auto"
GDAL_RASTER_OPTIONS_WIDGET = {
    "widget_wrapper": {"class": "processing.algs.gdal.ui.RasterOptionsWidget.RasterOptionsWidgetWrapper"}
}

# Help texts: plain paragraphs separated by a blank line. The Processing dialog shows each line as a
# paragraph and qgis_process prints the text as it is, so no HTML (and no "<" or "&") goes in them.
def help_text(*paragraphs: str) -> str:
    return "\n\n".join(paragraph for paragraph in paragraphs if paragraph)


def bands_help(stack: bool = False) -> str:
    which = tr("the numbers of the reference's bands, the same for every date") if stack else tr(
        "the 1-based band numbers of the input")
    return tr(
        "Bands: by default the sensor preset picks the bands the model needs (for Sentinel-2 B4, B3, B2, "
        "B8 = red, green, blue, near infrared; for 3-band models red, green, blue) and scales them to "
        "reflectance. BANDS overrides the selection: {which}, in the model's band order, e.g. 4, 3, 2, 8 "
        "for a 13-band Sentinel-2 L1C file and an RGBN model. Give several bands by ticking them in the "
        "dialog; with qgis_process repeat the parameter once per band, in order: BANDS=4 BANDS=3 BANDS=2 "
        "BANDS=8 (in Python, a list: 'BANDS': [4, 3, 2, 8])."
    ).format(which=which)


def model_help() -> str:
    return tr(
        "Model: 'auto' takes the bundled model that fits the input's bands and number of dates; MODEL_FILE "
        "takes a model of your own (a .safetensors file with its .json model card beside it, or the card "
        "itself) and overrides MODEL."
    )


def mask_help(masks: str) -> str:
    return tr(
        "CLOUD_MASK_TYPE says which values of {masks} are cloud: nonzero (0 = clear, anything else cloud), "
        "landsat-qa-pixel (the QA_PIXEL band of Landsat Collection 2: its cloud, dilated cloud, cirrus and "
        "cloud-shadow bits), sentinel2-scl (the SCL band of Sentinel-2 L2A: cloud shadows, cloud medium and high "
        "probability, thin cirrus) or fmask (Fmask's cloud and cloud-shadow classes). The product's own quality band "
        "then needs no raster calculator first. CLOUD_MASK_BUFFER (pixels, default 0) grows the mask's clouds: "
        "2-4 px takes the thin rims a tight mask (SCL, a hand-drawn mask) leaves outside, which the fill would "
        "otherwise take brightness from (4-8 px for s2cloudless-like masks). CLOUD_MASK_MODE: replace (default), "
        "the mask alone says what is cloud; add, the mask's clouds are added to those the model finds."
    ).format(masks=masks)


def choices_help() -> str:
    return tr(
        "Choices (SENSOR, MODEL and the other lists) take the option's name or its number, as qgis_process "
        "help lists them: SENSOR=s2-l1c and SENSOR=1 are the same."
    )


def advanced_help(tta: bool = True, outputs: bool = True, cloud_threshold: bool = True) -> str:
    parts = [tr(
        "Advanced: SCALE and OFFSET override the preset's conversion of digital numbers to reflectance "
        "(reflectance = DN x SCALE + OFFSET; Sentinel-2 products of processing baseline 04.00 or later need "
        "OFFSET -0.1 when their metadata does not say so); TILE_SIZE and OVERLAP (pixels, default the model "
        "card's) control the tiling of large rasters; DEVICE is auto (a CUDA GPU when PyTorch sees one, else "
        "the CPU), cpu, cuda or cuda:N; EXTENT processes only part of the raster (in any CRS; it is "
        "reprojected to the raster's).")]
    if cloud_threshold:
        parts.append(tr(
            "CLOUD_THRESHOLD (0-1, default the model's: 0.6 on 8-bit imagery, 0.35 on reflectance): the fill "
            "replaces the pixels whose cloud score is above it. On 8-bit exports bright clear ground (cities, "
            "sand, salt flats) can score as cloud: look at the SCORE output and raise it (e.g. 0.7) if ground was "
            "taken for cloud, lower it (e.g. 0.45) if cloud was left. CIRRUS_CORRECTION (on by default): on "
            "Sentinel-2 L1C rasters with band 10 (1.375 µm), thin cirrus is first removed from the model's bands "
            "where the cirrus band explains it (thick cloud is left to the network). CLOUD_SOURCE: auto (default) "
            "adds the cloud mask of the bundled L1C cloud classifier (a small network distilled from s2cloudless, "
            "which sees the SWIR and cirrus bands) to the model's score on 13-band Sentinel-2 L1C where no cloud "
            "mask is given; model, the score alone; l1c-classifier, insist on it; s2cloudless, the s2cloudless "
            "package's mask instead (where it is installed in QGIS's Python). CLOUD_SHADOWS (on by default): "
            "with a model that has the shadow test (every bundled model), the shadows the clouds cast on darker "
            "ground are filled too."))
    if tta:
        parts.append(tr("TTA averages flipped and rotated passes (slower, slightly better)."))
    if outputs:
        parts.append(tr(
            "CREATION_OPTIONS are GDAL creation options, KEY=VALUE separated by | (e.g. COMPRESS=ZSTD|"
            "PREDICTOR=2); COG=true writes a Cloud Optimized GeoTIFF through GDAL's COG driver, which takes "
            "its own options (e.g. COMPRESS=LZW or ZSTD, LEVEL, PREDICTOR=YES, BLOCKSIZE): options a driver "
            "does not know are refused with the list of those it accepts."))
    return " ".join(parts)


def requirements_help() -> str:
    return tr(
        "Requirements: PyTorch in QGIS's Python. When it is missing the algorithm says so and how to install "
        "it; the VISER-CR panel (Raster menu, VISER-CR) installs it."
    )


def dropped_bands_text(plan: dict) -> str:
    """'The input has 13 bands; the result has the model's 4 (...): bands 1, 5, ... are left out.'"""
    text = tr("The input has {count} bands; the result has the model's {used} ({names}): input band(s) "
              "{dropped} are left out.").format(count=plan["count"], used=len(plan["model_bands"]),
                                                 names=", ".join(plan["model_bands"]),
                                                 dropped=", ".join(map(str, plan["dropped"])))
    if plan.get("cirrus_band"):
        text += " " + tr("Band {band} (cirrus, B10) is read to remove thin cirrus first.").format(
            band=plan["cirrus_band"])
    if plan.get("cloud_classifier"):
        text += " " + tr("{classifier} reads ten of the L1C bands for a cloud mask that is added to the model's cloud "
                         "score.").format(classifier="s2cloudless" if plan["cloud_classifier"] == "s2cloudless"
                                          else tr("The bundled L1C cloud classifier"))
    return text


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
    """Base class: icon, groups, choices given by name or number, values resolved before the run."""

    GROUP = "Cloud removal"  # translated by group()
    GROUP_ID = "cloudremoval"
    REQUIRES_TORCH = True

    # Parameter names shared by the algorithms (qgis_process, processing.run and the dock use them).
    INPUT = "INPUT"
    SENSOR = "SENSOR"
    BANDS = "BANDS"
    SCALE = "SCALE"
    OFFSET = "OFFSET"
    OUTPUT = "OUTPUT"

    def __init__(self):
        super().__init__()
        self.request_fields: dict = {}
        self.prepare_error: QgsProcessingException | None = None

    # ----------------------------------------------------------------------------------- identity
    def createInstance(self):  # noqa: N802
        return type(self)()

    def group(self):
        return tr(self.GROUP)

    def groupId(self):  # noqa: N802
        return self.GROUP_ID

    def icon(self):
        return QIcon(str(ICON_PATH))

    def helpUrl(self):  # noqa: N802
        return "https://github.com/viser-cr/viser-cr-qgis#readme"

    def flags(self):
        return super().flags() | QgsProcessingAlgorithm.FlagCanCancel

    # ------------------------------------------------------------------------------ value helpers
    def raster_path(self, parameters, name: str, context, optional: bool = False) -> str | None:
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            if optional:
                return None
            raise QgsProcessingException(tr("{name}: no raster layer given, or it cannot be opened.").format(
                name=name))
        return self.layer_path(layer, name)

    @staticmethod
    def layer_path(layer: QgsRasterLayer, name: str) -> str:
        if not layer.isValid():
            raise QgsProcessingException(tr("{name}: the raster layer '{layer}' is not valid.").format(
                name=name, layer=layer.name()))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(tr(
                "{name}: the layer '{layer}' comes from the '{provider}' provider; VISER-CR reads raster files "
                "(GeoTIFF and other GDAL formats). Save it as a GeoTIFF first."
            ).format(name=name, layer=layer.name(), provider=layer.providerType()))
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

    # ------------------------------------------------------------------------------------ choices
    def choice_definitions(self) -> list[QgsProcessingParameterEnum]:
        """The single-choice lists whose values are the option names (usesStaticStrings)."""
        return [d for d in self.parameterDefinitions()
                if isinstance(d, QgsProcessingParameterEnum) and d.usesStaticStrings() and not d.allowMultiple()]

    def with_choice_names(self, parameters: dict) -> dict:
        """``parameters`` with each choice given by number (1 or "1", as qgis_process help shows them)
        replaced by the option's name; names, and numbers out of range, are left as they are."""
        named = dict(parameters)
        for definition in self.choice_definitions():
            value, options = named.get(definition.name()), definition.options()
            if isinstance(value, str) and value.strip().isdigit() and value.strip() not in options:
                value = int(value.strip())
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(options):
                named[definition.name()] = options[value]
        return named

    def choice(self, parameters, name: str, context) -> str:
        """The option name of a choice given by name or number."""
        return self.parameterAsEnumString(self.with_choice_names(parameters), name, context)

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """Accept a choice's number as well as its name (QGIS 3.22 takes only names for these lists), and
        refuse what a run would stop at before reading pixels (see ``early_problem``)."""
        named = self.with_choice_names(parameters)
        for definition in self.choice_definitions():
            value = named.get(definition.name())
            if value not in (None, "") and not definition.checkValueIsAcceptable(value, context):
                options = definition.options()
                return False, tr(
                    "{name}: '{value}' is not one of the options. Give the option's name ({names}) or its number "
                    "(0 to {last})."
                ).format(name=definition.name(), value=value, names=", ".join(options), last=len(options) - 1)
        ok, message = super().checkParameterValues(named, context)
        if not ok:
            return ok, message
        problem = self.early_problem(named, context)
        return (False, problem) if problem else (True, "")

    def early_problem(self, parameters, context) -> str | None:
        """What a run would stop at before reading pixels (``check_before_run``). Found here, before the
        run, QGIS says it once (the dialog in a message box, qgis_process on one line); raised from a
        run, QGIS 3.22 logs and prints it two or three times."""
        try:
            self.check_before_run(parameters, context)
        except QgsProcessingException as exc:
            return str(exc)
        return None

    def check_before_run(self, parameters, context) -> dict:
        """Missing PyTorch and bad parameters; returns the request fields."""
        if self.REQUIRES_TORCH:
            engine.require_dependencies()
        return self.build_request_fields(parameters, context, None)

    # ---------------------------------------------------------------------------------- execution
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
        if self.prepare_error is not None:
            raise self.prepare_error

    def build_request_fields(self, parameters, context, feedback) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


class RemovalAlgorithm(ViserAlgorithm):
    """The algorithms that run ``core.pipeline.remove_clouds``: their parameter blocks, the engine call,
    the outputs and their style."""

    MODEL = "MODEL"
    MODEL_FILE = "MODEL_FILE"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    DEVICE = "DEVICE"
    TTA = "TTA"
    CLOUD_THRESHOLD = "CLOUD_THRESHOLD"
    CIRRUS_CORRECTION = "CIRRUS_CORRECTION"
    CLOUD_SHADOWS = "CLOUD_SHADOWS"
    CLOUD_SOURCE = "CLOUD_SOURCE"
    CLOUD_MASK_TYPE = "CLOUD_MASK_TYPE"
    CLOUD_MASK_BUFFER = "CLOUD_MASK_BUFFER"
    CLOUD_MASK_MODE = "CLOUD_MASK_MODE"
    EXTENT = "EXTENT"
    CREATION_OPTIONS = "CREATION_OPTIONS"
    COG = "COG"
    SCORE = "SCORE"
    UNCERTAINTY = "UNCERTAINTY"
    SOURCE_DATES = "SOURCE_DATES"
    USED_MODEL = "USED_MODEL"
    USED_DEVICE = "USED_DEVICE"
    USED_SENSOR = "USED_SENSOR"
    TILES = "TILES"

    # Which optional blocks the algorithm has (its initAlgorithm adds them, its request reads them).
    HAS_TTA = True
    HAS_CLOUD_THRESHOLD = True
    HAS_OUTPUT_OPTIONS = True
    # The raster destinations: {request field (also the result's attribute): destination parameter}.
    OUTPUT_FIELDS: dict[str, str] = {}

    def __init__(self):
        super().__init__()
        self.result_name: str | None = None  # the cloud-free layer's name in the project
        self.date_labels: list[str] = []  # stack inputs' layer names, in input order (source-date classes)
        self.raster_outputs: dict[str, str | None] = {}

    # ---------------------------------------------------------------------------- parameter blocks
    def add_sensor_parameters(self, band_parent: str) -> None:
        self.addParameter(
            QgsProcessingParameterEnum(
                self.SENSOR,
                tr("Sensor preset (band selection and scaling to reflectance)"),
                options=list(SENSOR_CHOICES),
                allowMultiple=False,
                defaultValue="auto",
                usesStaticStrings=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterBand(
                self.BANDS,
                tr("Band override (1-based band numbers, in the model's band order)"),
                None,
                band_parent,
                True,
                True,
            )
        )
        for name, description in (
            (self.SCALE, tr("Scale to reflectance: reflectance = DN x SCALE + OFFSET (default: the sensor preset's)")),
            (self.OFFSET, tr("Offset to reflectance (e.g. -0.1 for Sentinel-2 processing baseline 04.00 and later)")),
        ):
            self.addParameter(
                _optional(
                    QgsProcessingParameterNumber(name, description, QgsProcessingParameterNumber.Double, None, True),
                    advanced=True,
                )
            )

    def add_mask_value_parameters(self) -> None:
        """CLOUD_MASK_TYPE and CLOUD_MASK_BUFFER: how the user's cloud masks are read."""
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
        self.addParameter(
            QgsProcessingParameterEnum(
                self.CLOUD_MASK_MODE,
                tr("Cloud mask mode (replace: the mask alone says what is cloud; add: the model's clouds too)"),
                options=list(MASK_MODES), allowMultiple=False, defaultValue=MASK_MODES[0], usesStaticStrings=True,
                optional=True,
            )
        )

    def mask_value_fields(self, parameters, context) -> dict:
        return dict(cloud_mask_type=self.choice(parameters, self.CLOUD_MASK_TYPE, context) or DEFAULT_ENCODING,
                    cloud_mask_buffer=self.optional_int(parameters, self.CLOUD_MASK_BUFFER, context) or 0,
                    cloud_mask_mode=self.choice(parameters, self.CLOUD_MASK_MODE, context) or MASK_MODES[0])

    def add_model_parameters(self) -> None:
        self.addParameter(
            QgsProcessingParameterEnum(
                self.MODEL,
                tr("Model"),
                options=[AUTO_MODEL, *engine.bundled_model_names()],
                allowMultiple=False,
                defaultValue=AUTO_MODEL,
                usesStaticStrings=True,
            )
        )
        model_file = QgsProcessingParameterFile(
            self.MODEL_FILE,
            tr("Model file (.safetensors with its .json card beside it, or the .json card; overrides Model)"),
            behavior=QgsProcessingParameterFile.File,
            fileFilter=tr("VISER-CR models (*.safetensors *.json);;All files (*.*)"),
            optional=True,
        )
        self.addParameter(model_file)

    def add_run_parameters(self) -> None:
        for name, label, lowest, highest in (
            (self.TILE_SIZE, tr("Tile size in pixels (default: the model card's)"), 16, 8192),
            (self.OVERLAP, tr("Tile overlap in pixels (default: the model card's)"), 0, 4096),
        ):
            number = QgsProcessingParameterNumber(
                name, label, QgsProcessingParameterNumber.Integer, None, True, lowest, highest
            )
            self.addParameter(_optional(number, advanced=True))
        self.addParameter(
            _advanced(QgsProcessingParameterString(self.DEVICE, tr("Device (auto, cpu, cuda or cuda:N)"), "auto"))
        )
        if self.HAS_CLOUD_THRESHOLD:
            threshold = QgsProcessingParameterNumber(
                self.CLOUD_THRESHOLD,
                tr("Cloud threshold: fill the pixels whose cloud score is above it (default: the model's)"),
                QgsProcessingParameterNumber.Double, None, True, 0.01, 0.99,
            )
            self.addParameter(_optional(threshold, advanced=True))
            # optional: models saved before it existed run with its default
            self.addParameter(_optional(QgsProcessingParameterBoolean(
                self.CIRRUS_CORRECTION, tr("Remove thin cirrus with the cirrus band first (Sentinel-2 L1C with band 10)"),
                True), advanced=True))
            self.addParameter(_optional(QgsProcessingParameterBoolean(
                self.CLOUD_SHADOWS, tr("Fill cloud shadows too (models with the shadow test)"), True), advanced=True))
            self.addParameter(_optional(QgsProcessingParameterEnum(
                self.CLOUD_SOURCE,
                tr("Cloud source (auto: the bundled L1C cloud classifier's mask added on 13-band Sentinel-2 L1C; "
                   "model: the score alone)"),
                options=list(CLOUD_SOURCES), allowMultiple=False, defaultValue=CLOUD_SOURCES[0],
                usesStaticStrings=True), advanced=True))
        if self.HAS_TTA:
            self.addParameter(
                _advanced(QgsProcessingParameterBoolean(self.TTA, tr("Test-time augmentation (slower)"), False))
            )
        self.addParameter(
            _optional(QgsProcessingParameterExtent(self.EXTENT, tr("Process only this extent")), advanced=True)
        )

    def add_output_options(self) -> None:
        options = _optional(
            QgsProcessingParameterString(self.CREATION_OPTIONS, tr("Creation options (GDAL KEY=VALUE, separated by |)"),
                                         "", False, True),
            advanced=True,
        )
        options.setMetadata(GDAL_RASTER_OPTIONS_WIDGET)
        self.addParameter(options)
        self.addParameter(_advanced(QgsProcessingParameterBoolean(self.COG, tr("Write a Cloud Optimized GeoTIFF"),
                                                                  False)))

    def add_run_outputs(self) -> None:
        self.addOutput(QgsProcessingOutputString(self.USED_MODEL, tr("Model used")))
        self.addOutput(QgsProcessingOutputString(self.USED_DEVICE, tr("Device used")))
        self.addOutput(QgsProcessingOutputString(self.USED_SENSOR, tr("Sensor preset used")))
        self.addOutput(QgsProcessingOutputNumber(self.TILES, tr("Tiles processed")))

    @staticmethod
    def raster_destination(name: str, description: str, optional: bool = False):
        return QgsProcessingParameterRasterDestination(
            name, description, None, optional, not optional
        )

    # ------------------------------------------------------------------------------ request values
    def check_before_run(self, parameters, context) -> dict:
        """Also the model, sensor and bands a run would take (``core.pipeline.plan``)."""
        fields = super().check_before_run(parameters, context)
        pipeline = engine.core_module("pipeline")
        request = engine.run_engine(pipeline.CloudRemovalRequest, **{**fields, "output": None})
        engine.run_engine(pipeline.plan, request)
        return fields

    def model_choice(self, parameters, context) -> str | None:
        model_file = self.parameterAsFile(parameters, self.MODEL_FILE, context)
        if model_file:
            if not Path(model_file).is_file():
                raise QgsProcessingException(tr(
                    "MODEL_FILE: {path} does not exist. Give a .safetensors weights file with its .json model "
                    "card beside it, or the .json card."
                ).format(path=model_file))
            return model_file
        model = self.choice(parameters, self.MODEL, context)
        return None if not model or model == AUTO_MODEL else model

    def device_choice(self, parameters, context) -> str:
        """The DEVICE text, checked against the engine's device names (no torch needed)."""
        text = self.parameterAsString(parameters, self.DEVICE, context)
        try:
            return check_device_name(text)
        except ViserError as exc:
            raise QgsProcessingException(tr("DEVICE: {problem}").format(problem=exc)) from exc

    def destination(self, parameters, name: str, context) -> str | None:
        if name not in parameters or parameters.get(name) in (None, ""):
            definition = self.parameterDefinition(name)
            if definition.flags() & QgsProcessingParameterDefinition.FlagOptional:
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
                raise QgsProcessingException(tr(
                    "CREATION_OPTIONS: '{item}' is not KEY=VALUE (separate options with |, e.g. "
                    "COMPRESS=DEFLATE|PREDICTOR=2)."
                ).format(item=item))
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

    def common_request_fields(self, parameters, context, reference_layer: QgsRasterLayer) -> dict:
        """The request fields of the shared parameter blocks (sensor, model, run and output options)."""
        fields = dict(
            model=self.model_choice(parameters, context),
            tile_size=self.optional_int(parameters, self.TILE_SIZE, context),
            overlap=self.optional_int(parameters, self.OVERLAP, context),
            device=self.device_choice(parameters, context),
            threads=self.threads(),
            sensor=self.choice(parameters, self.SENSOR, context) or "auto",
            bands=list(self.parameterAsInts(parameters, self.BANDS, context)) or None,
            scale=self.optional_float(parameters, self.SCALE, context),
            offset=self.optional_float(parameters, self.OFFSET, context),
        )
        if self.HAS_TTA:
            fields["tta"] = self.parameterAsBoolean(parameters, self.TTA, context)
        if self.HAS_CLOUD_THRESHOLD:
            fields["cloud_threshold"] = self.optional_float(parameters, self.CLOUD_THRESHOLD, context)
            fields["cirrus_correction"] = self.parameterAsBoolean(parameters, self.CIRRUS_CORRECTION, context)
            fields["cloud_shadows"] = self.parameterAsBoolean(parameters, self.CLOUD_SHADOWS, context)
            fields["cloud_source"] = self.choice(parameters, self.CLOUD_SOURCE, context) or CLOUD_SOURCES[0]
        if parameters.get(self.EXTENT) not in (None, ""):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, reference_layer.crs())
            if rect.isNull() or rect.isEmpty():
                raise QgsProcessingException(tr("EXTENT is empty: draw or type an extent with an area, or "
                                                "leave EXTENT empty for the whole raster."))
            fields["bounds"] = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        if self.HAS_OUTPUT_OPTIONS:
            options = self.creation_options(self.parameterAsString(parameters, self.CREATION_OPTIONS, context))
            cog = self.parameterAsBoolean(parameters, self.COG, context)
            problem = gdal_options.creation_option_problem(options or {}, "COG" if cog else "GTiff")
            if problem:
                raise QgsProcessingException(tr("CREATION_OPTIONS: {problem}").format(problem=problem))
            fields["creation_options"] = options
            fields["cog"] = cog
        return fields

    def output_fields(self, parameters, context) -> dict:
        """Resolve the raster destinations in the context the algorithm runs with (see the module doc)."""
        return {field: self.destination(parameters, name, context) for field, name in self.OUTPUT_FIELDS.items()}

    # ---------------------------------------------------------------------------------- execution
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        result = self.run_removal(parameters, context, feedback)
        self.raster_outputs = {name: self.as_str(getattr(result, field)) for field, name in self.OUTPUT_FIELDS.items()}
        return {**self.raster_outputs, **self.run_outputs(result)}

    def run_removal(self, parameters, context, feedback) -> object:
        """Run ``core.pipeline.remove_clouds`` on the prepared request (worker thread)."""
        self.raise_prepare_error()
        fields = dict(self.request_fields, **self.output_fields(parameters, context))
        pipeline = engine.core_module("pipeline")
        callbacks = engine.FeedbackCallbacks(feedback)
        try:
            request = engine.run_engine(pipeline.CloudRemovalRequest, feedback=feedback, **fields)
            self.report_plan(pipeline, request, feedback)
            feedback.pushInfo(f"VISER-CR: {len(request.inputs)} input(s) -> {request.output or request.score_output}")
            with engine.messages_to_feedback(feedback):
                result = engine.run_engine(
                    pipeline.remove_clouds,
                    request,
                    progress=callbacks.progress,
                    is_cancelled=callbacks.is_cancelled,
                    feedback=feedback,
                )
        except QgsProcessingException:
            raise
        except Exception as exc:  # no traceback reaches the Processing layer
            raise QgsProcessingException(
                f"VISER-CR failed unexpectedly ({type(exc).__name__}: {exc}). Nothing was written. Check the "
                "input with `viser-cr info`, and report this message if the input is fine."
            ) from exc
        if feedback.isCanceled():
            raise QgsProcessingException(tr(engine.CANCELLED_MESSAGE))
        feedback.pushInfo(
            f"VISER-CR done: model {result.model} on {result.device}, sensor {result.sensor}, input bands "
            f"{result.bands}, {result.tiles} tile(s) in {result.seconds:.1f} s."
        )
        return result

    @staticmethod
    def report_plan(pipeline, request, feedback) -> None:
        """Before the run, say which model and bands it takes, and which input bands the result drops."""
        try:
            plan = pipeline.plan(request)
        except Exception:  # noqa: BLE001 - the run itself reports the problem, with its advice
            return
        feedback.pushInfo(tr("VISER-CR will use model {model} (bands {names}) with sensor preset {sensor}: input "
                             "bands {bands}.").format(model=plan["model"], names=", ".join(plan["model_bands"]),
                                                      sensor=plan["sensor"],
                                                      bands=", ".join(map(str, plan["bands"]))))
        if plan["dropped"]:
            feedback.pushWarning(dropped_bands_text(plan))

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802
        """Main thread, with the context that loads the outputs: style (and name) what it loads."""
        for name, path in self.raster_outputs.items():
            style.style_on_load(context, path, self.result_name if name == self.OUTPUT else None,
                                self.date_labels if name == self.SOURCE_DATES else None)
        return {}

    def run_outputs(self, result) -> dict:
        return {
            self.USED_MODEL: str(result.model),
            self.USED_DEVICE: str(result.device),
            self.USED_SENSOR: str(result.sensor),
            self.TILES: int(result.tiles),
        }

    @staticmethod
    def as_str(path) -> str | None:
        return None if path is None else str(path)
