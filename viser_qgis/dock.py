"""The VISER-CR dock widget: run the Processing algorithms on project layers as background tasks.

The dock builds the same parameters a Toolbox user would give ``viser:removeclouds`` (or
``viser:removecloudsstack`` for several dates) and runs the algorithm through
``QgsProcessingAlgRunnerTask``, so QGIS stays responsive; the result is added to the project with a
true-colour style. Its dependency panel shows what QGIS's Python has and installs PyTorch with pip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from html import escape
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayerProxyModel,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
    QgsTask,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsExtentWidget, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QDoubleValidator
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core import mask_codes, sensors
from . import deps, engine, naming, style
from .algorithm_base import AUTO_MODEL, dropped_bands_text
from .i18n import tr

SETTINGS_PREFIX = "viser_cr/dock/"
_ORPHANS: list = []  # runs cancelled by unload, kept alive until their task has ended
TEMPORARY_OUTPUT = "TEMPORARY_OUTPUT"
DATE_NAME_WIDTH = 240  # px: a date's name above its cloud mask, elided to fit the default dock width


class DockFeedback(QgsProcessingFeedback):
    """Processing feedback that keeps the error messages for the dock's status line."""

    text_changed = pyqtSignal(str)  # emitted from the worker thread, delivered queued to the dock

    def __init__(self):
        super().__init__()
        self.errors: list[str] = []
        self.infos: list[str] = []

    def reportError(self, error, fatalError=False):  # noqa: N802, N803
        """Keep the error for the status line. Not passed on: QgsProcessingFeedback would log it to the
        Processing log, where the task that reports it (QgsProcessingAlgRunnerTask) logs it already."""
        self.errors.append(str(error))

    def setProgressText(self, text):  # noqa: N802
        super().setProgressText(text)
        self.text_changed.emit(str(text))

    def pushInfo(self, info):  # noqa: N802
        self.infos.append(str(info))
        super().pushInfo(info)


@dataclass
class Run:
    """Everything a running task needs kept alive (PyQGIS does not hold these references)."""

    algorithm_id: str
    parameters: dict
    context: QgsProcessingContext
    feedback: DockFeedback
    task: QgsProcessingAlgRunnerTask
    layer_name: str
    preview: bool
    algorithm: object = None
    slots: tuple = ()


class PipInstallTask(QgsTask):
    """Runs pip in a background task, streaming its output to the dock."""

    line = pyqtSignal(str)

    def __init__(self, command: list[str]):
        super().__init__(tr("Installing PyTorch for VISER-CR"), QgsTask.CanCancel)
        self.command = command
        self.returncode: int | None = None
        self.error = ""
        self.lines: list[str] = []

    def _log(self, line: str):
        self.lines.append(line)
        self.line.emit(line)

    def run(self):
        try:
            self.returncode = deps.run_pip(self.command, log=self._log, is_cancelled=self.isCanceled)
        except Exception as exc:  # noqa: BLE001 - reported in the dock
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        if self.returncode != 0:
            # pip's own reason (a constraint conflict, no matching version, no network) says what to fix.
            self.error = deps.pip_error_line(self.lines)
        return self.returncode == 0


class ViserDockWidget(QDockWidget):
    run_finished = pyqtSignal(bool)  # tests and scripts wait on it

    def __init__(self, iface, parent=None):
        super().__init__(tr("VISER-CR cloud removal"), parent)
        self.iface = iface
        self.settings = QgsSettings()
        self.current: Run | None = None
        self.last_result: dict = {}
        self.last_layer: QgsRasterLayer | None = None
        self.last_plan: dict | None = None
        self.install_task: PipInstallTask | None = None
        self.report: deps.Report | None = None
        self._bands_kind: str | None = None  # the kind of raster the Bands field was typed for
        self._dropped: list[str] = []  # ticked dates left out of the last run
        self._date_labels: list[str] = []  # the last stack run's dates, in order (source-date classes)
        self._build_ui()
        self._restore_settings()
        project = QgsProject.instance()
        project.layersAdded.connect(self._refresh_stack_list)
        project.layersRemoved.connect(self._refresh_stack_list)
        self._refresh_stack_list()
        self._connect_summary()
        self.refresh_dependencies()

    # ---------------------------------------------------------------------------------------- UI
    def _build_ui(self):
        body = QWidget(self)
        layout = QVBoxLayout(body)
        layout.addWidget(self._build_input_box(body))
        layout.addWidget(self._build_model_box(body))
        layout.addWidget(self._build_advanced_box(body))
        layout.addWidget(self._build_run_box(body))
        layout.addWidget(self._build_deps_box(body))
        layout.addStretch(1)
        # Fit the width QGIS gives a dock (about 300 px): no horizontal scrolling, rows wrap instead.
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidget(body)
        scroll.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)
        self.setWidget(scroll)
        self._mode_changed(False)

    @staticmethod
    def _form(parent) -> QFormLayout:
        form = QFormLayout(parent)
        form.setRowWrapPolicy(QFormLayout.WrapLongRows)
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        return form

    @staticmethod
    def _narrow(combo: QComboBox) -> QComboBox:
        """A combo box whose longest item does not set the dock's width."""
        combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
        return combo

    def _build_input_box(self, body) -> QGroupBox:
        box = QGroupBox(tr("Input"), body)
        form = self._form(box)
        self.stack_check = QCheckBox(tr("Several dates (stack)"), box)
        self.stack_check.setToolTip(tr("Remove the clouds of one date with the help of other dates of the same "
                                       "place (multi-temporal model)."))
        self.stack_check.toggled.connect(self._mode_changed)
        form.addRow(self.stack_check)
        self.layer_combo = self._narrow(QgsMapLayerComboBox(box))
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.layer_label = QLabel(tr("Layer"), box)
        form.addRow(self.layer_label, self.layer_combo)
        self.stack_list = QListWidget(box)
        self.stack_list.setDragDropMode(QAbstractItemView.InternalMove)
        self.stack_list.setToolTip(tr("Tick the dates to use and drag them into order: the first ticked one is the "
                                      "reference (the date cleared, and the output grid). Only rasters that can "
                                      "be processed are listed (valid raster files with 3 bands or more, not "
                                      "earlier results)."))
        self.stack_list.setMinimumHeight(90)
        self.stack_label = QLabel(tr("Dates (first = reference)"), box)
        self.stack_label.setWordWrap(True)
        form.addRow(self.stack_label)
        form.addRow(self.stack_list)
        self.input_info = QLabel("", box)
        self.input_info.setWordWrap(True)
        self.input_info.setTextFormat(Qt.RichText)
        self.input_info.setObjectName("viserInputSummary")
        form.addRow(self.input_info)
        self.style_input_button = QPushButton(tr("Input in true colour"), box)
        self.style_input_button.setToolTip(tr("Show the input with the bands the model takes as red, green and "
                                              "blue, stretched like the result (2-98 % cumulative cut), so that "
                                              "before and after compare by toggling one layer."))
        self.style_input_button.clicked.connect(self.style_input)
        form.addRow(self.style_input_button)
        return box

    def _build_model_box(self, body) -> QGroupBox:
        box = QGroupBox(tr("Model"), body)
        form = self._form(box)
        self.sensor_combo = self._narrow(QComboBox(box))
        self.sensor_combo.addItems(list(sensors.SENSOR_CHOICES))
        form.addRow(tr("Sensor"), self.sensor_combo)
        self.bands_edit = QLineEdit(box)
        self.bands_edit.setPlaceholderText(tr("from the sensor preset"))
        self.bands_edit.setToolTip(tr("Band numbers in the model's order, e.g. 4,3,2,8 (red, green, blue, NIR). "
                                      "Remembered per kind of raster (band count and data type)."))
        form.addRow(tr("Bands"), self.bands_edit)
        self.model_combo = self._narrow(QComboBox(box))
        self.model_combo.addItems([AUTO_MODEL, *engine.bundled_model_names()])
        form.addRow(tr("Model"), self.model_combo)
        self.model_file = QgsFileWidget(box)
        self.model_file.setFilter(tr("VISER-CR models (*.safetensors *.json)"))
        self.model_file.setToolTip(tr("A model of your own (overrides Model)"))
        form.addRow(tr("Model file"), self.model_file)
        self.keep_clear_check = QCheckBox(tr("Keep clear pixels"), box)
        self.keep_clear_check.setToolTip(tr("Copy the input where it is clear and fill only the clouds."))
        form.addRow(self.keep_clear_check)
        # the cloud mask rows, in a panel of their own so that hiding it leaves no gap in the form
        self.mask_panel = QWidget(box)
        mask_form = self._form(self.mask_panel)
        mask_form.setContentsMargins(0, 0, 0, 0)
        self.mask_combo = self._narrow(QgsMapLayerComboBox(self.mask_panel))
        self.mask_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.mask_combo.setAllowEmptyLayer(True)
        self.mask_combo.setLayer(None)
        self.mask_combo.setToolTip(tr("Keep clear pixels by this raster instead of the model's cloud score: your "
                                      "own mask, or the quality band the image came with (see Mask values)."))
        self.mask_label = QLabel(tr("Cloud mask"), self.mask_panel)
        mask_form.addRow(self.mask_label, self.mask_combo)
        # stacks: one mask per ticked date, rebuilt as dates are ticked and reordered (_refresh_date_masks)
        self.date_masks_panel = QWidget(self.mask_panel)
        self.date_masks_layout = QVBoxLayout(self.date_masks_panel)
        self.date_masks_layout.setContentsMargins(0, 0, 0, 0)
        self.date_mask_combos: dict[str, QgsMapLayerComboBox] = {}  # date layer id -> its mask's combo
        self._date_masks: dict[str, str] = {}  # date layer id -> mask layer id, kept across rebuilds
        mask_form.addRow(self.date_masks_panel)
        self.mask_type_combo = self._narrow(QComboBox(self.mask_panel))
        for name, encoding in mask_codes.ENCODINGS.items():
            self.mask_type_combo.addItem(name, name)
            self.mask_type_combo.setItemData(self.mask_type_combo.count() - 1, encoding.title, Qt.ToolTipRole)
        self.mask_type_combo.setToolTip(tr(
            "Which values of the cloud mask are cloud: nonzero (0 clear), landsat-qa-pixel (Landsat Collection 2 "
            "QA_PIXEL: cloud, dilated cloud, cirrus and shadow bits), sentinel2-scl (Sentinel-2 L2A SCL: classes "
            "3, 8, 9, 10), fmask (classes 2 and 4)."))
        self.mask_type_label = QLabel(tr("Mask values"), self.mask_panel)
        mask_form.addRow(self.mask_type_label, self.mask_type_combo)
        self.mask_buffer_spin = QSpinBox(self.mask_panel)
        self.mask_buffer_spin.setRange(0, mask_codes.MAX_BUFFER)
        self.mask_buffer_spin.setSuffix(" px")
        self.mask_buffer_spin.setToolTip(tr("Grow the mask's clouds by this many pixels: 2-4 takes the thin rims a "
                                            "tight mask (SCL, a hand-drawn mask) leaves outside its clouds."))
        self.mask_buffer_label = QLabel(tr("Mask buffer"), self.mask_panel)
        mask_form.addRow(self.mask_buffer_label, self.mask_buffer_spin)
        self.mask_add_check = QCheckBox(tr("Add the model's clouds"), self.mask_panel)
        self.mask_add_check.setToolTip(tr("Fill what the mask or the model's cloud score calls cloud (the mask's "
                                          "clouds are added to the model's), instead of the mask alone."))
        mask_form.addRow(self.mask_add_check)
        form.addRow(self.mask_panel)
        self._align_labels([form, mask_form])
        self.keep_clear_check.toggled.connect(self._mask_enabled)
        self.mask_combo.layerChanged.connect(self._mask_values_from_name)
        self._mask_enabled()
        return box

    def _mask_values_from_name(self, layer) -> None:
        """A quality band named as its product names it (…_QA_PIXEL, …_SCL_20m, …_Fmask) sets Mask values."""
        if layer is None:
            return
        name = mask_codes.encoding_from_name(f"{layer.name()} {Path(layer.source().split('|')[0]).name}")
        if name is not None:
            self.mask_type_combo.setCurrentIndex(self.mask_type_combo.findData(name))

    @staticmethod
    def _align_labels(forms: list[QFormLayout]) -> None:
        """One label width for nested forms, so that their fields start in one column."""
        labels = [form.itemAt(row, QFormLayout.LabelRole).widget() for form in forms for row in range(form.rowCount())
                  if form.itemAt(row, QFormLayout.LabelRole) is not None]
        width = max((label.sizeHint().width() for label in labels), default=0)
        for label in labels:
            label.setMinimumWidth(width)

    def _mask_enabled(self, *args):
        """A cloud mask is what keep-clear keeps by: the mask rows are shown with keep-clear only (hidden
        otherwise, which keeps the panel short); one mask for one date, one per ticked date for a stack."""
        stack = self.stack_check.isChecked()
        self.mask_panel.setHidden(not self.keep_clear_check.isChecked())
        for widget in (self.mask_label, self.mask_combo):
            widget.setHidden(stack)
        self.date_masks_panel.setHidden(not stack)

    def _refresh_date_masks(self, *args):
        """One cloud mask row per ticked date, in the stack's order, each keeping the mask chosen for its date."""
        self._remember_date_masks()
        while self.date_masks_layout.count():
            widget = self.date_masks_layout.takeAt(0).widget()
            widget.setParent(None)
            widget.deleteLater()
        self.date_mask_combos = {}
        dates = self.stack_layers()
        if not dates:
            return
        title = QLabel(tr("Cloud mask of each date"), self.date_masks_panel)
        title.setToolTip(tr("Choose a mask for every date, or for the reference (the first) only. Each date's "
                            "mask replaces its cloud score: it decides which dates fill the reference's clouds."))
        self.date_masks_layout.addWidget(title)
        project = QgsProject.instance()
        for number, date in enumerate(dates, start=1):
            # the date's name, shortened in the middle: a long product name must not widen the dock
            name = QLabel(self.date_masks_panel)
            name.setText(name.fontMetrics().elidedText(f"{number}. {date.name()}", Qt.ElideMiddle, DATE_NAME_WIDTH))
            name.setToolTip(date.name())
            combo = self._narrow(QgsMapLayerComboBox(self.date_masks_panel))
            combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
            combo.setExceptedLayerList(dates)  # a date is not a mask
            combo.setAllowEmptyLayer(True)
            combo.setLayer(project.mapLayer(self._date_masks.get(date.id(), "")))
            combo.setToolTip(tr("The cloud mask (or quality band) of {name}").format(name=date.name()))
            combo.layerChanged.connect(self._mask_values_from_name)
            self.date_masks_layout.addWidget(name)
            self.date_masks_layout.addWidget(combo)
            self.date_mask_combos[date.id()] = combo

    def _remember_date_masks(self) -> None:
        """Read the rows' choices when needed (a closure connected to each row's layerChanged outlived the dock
        in QGIS 3.22 and crashed a later removal of layers; only bound methods of the dock are connected)."""
        for date_id, combo in self.date_mask_combos.items():
            mask = combo.currentLayer()
            if mask is None:
                self._date_masks.pop(date_id, None)
            else:
                self._date_masks[date_id] = mask.id()

    def set_date_masks(self, masks: dict[QgsRasterLayer, QgsRasterLayer | None]) -> None:
        """Choose the cloud mask of ticked dates (date layer -> mask layer or None); for scripts and tests."""
        for date, mask in masks.items():
            self.date_mask_combos[date.id()].setLayer(mask)

    def date_mask_ids(self, dates: list[QgsRasterLayer]) -> list[str]:
        """CLOUD_MASKS for these dates: one mask per date, the reference's alone, or none."""
        self._remember_date_masks()
        project = QgsProject.instance()
        masks = [project.mapLayer(self._date_masks.get(date.id(), "")) for date in dates]
        if all(mask is None for mask in masks):
            return []
        if all(mask is not None for mask in masks):
            return [mask.id() for mask in masks]
        if masks[0] is not None and all(mask is None for mask in masks[1:]):
            return [masks[0].id()]
        missing = ", ".join(date.name() for date, mask in zip(dates, masks, strict=True) if mask is None)
        raise ValueError(tr("Choose a cloud mask for every ticked date, or for the reference (the first) only: "
                            "none for {names}.").format(names=missing))

    def _build_advanced_box(self, body) -> QgsCollapsibleGroupBox:
        box = QgsCollapsibleGroupBox(tr("Advanced"), body)
        box.setObjectName("viserAdvanced")
        box.setCollapsed(True)
        form = self._form(box)
        self.scale_edit, self.offset_edit = QLineEdit(box), QLineEdit(box)
        for edit, label, tip in (
            (self.scale_edit, tr("Scale"), tr("reflectance = DN x Scale + Offset (e.g. 0.0000275 for Landsat C2 L2)")),
            (self.offset_edit, tr("Offset"), tr("e.g. -0.1 for Sentinel-2 processing baseline 04.00 and later")),
        ):
            edit.setValidator(QDoubleValidator(edit))
            edit.setPlaceholderText(tr("from the sensor preset"))
            edit.setToolTip(tip)
            form.addRow(label, edit)
        self.tile_spin = QSpinBox(box)
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setSpecialValueText(tr("model default"))
        form.addRow(tr("Tile size"), self.tile_spin)
        self.cloud_threshold_spin = QDoubleSpinBox(box)
        self.cloud_threshold_spin.setRange(0.0, 0.95)
        self.cloud_threshold_spin.setSingleStep(0.05)
        self.cloud_threshold_spin.setDecimals(2)
        self.cloud_threshold_spin.setSpecialValueText(tr("model default"))
        self.cloud_threshold_spin.setToolTip(tr(
            "The fill replaces the pixels whose cloud score is above this (the model's default: 0.6 on 8-bit "
            "imagery, 0.35 on reflectance). Raise it if bright clear ground was taken for cloud, lower it if "
            "cloud was left: the cloud score layer shows which."))
        form.addRow(tr("Cloud threshold"), self.cloud_threshold_spin)
        self.shadows_check = QCheckBox(tr("Fill cloud shadows"), box)
        self.shadows_check.setChecked(True)
        self.shadows_check.setToolTip(tr(
            "Models with the shadow test (every bundled model) also fill the shadows the clouds cast "
            "on darker ground. Untick to keep the shadows as they are."))
        self.cirrus_check = QCheckBox(tr("Remove thin cirrus first"), box)
        self.cirrus_check.setChecked(True)
        self.cirrus_check.setToolTip(tr(
            "Sentinel-2 L1C rasters with band 10 (1.375 µm): thin cirrus is removed from the model's bands where "
            "the cirrus band explains it, before the network. Untick to leave the bands as they are."))
        for check in (self.shadows_check, self.cirrus_check):
            form.addRow(check)
        self.cloud_source_combo = self._narrow(QComboBox(box))
        for label, source in ((tr("auto"), "auto"), (tr("model's score alone"), "model"),
                              (tr("s2cloudless (required)"), "s2cloudless"),
                              (tr("bundled L1C classifier (required)"), "l1c-classifier")):
            self.cloud_source_combo.addItem(label, source)
        self.cloud_source_combo.setToolTip(tr(
            "On 13-band Sentinel-2 L1C rasters, a cloud classifier that sees the SWIR and cirrus bands adds its mask "
            "to the model's cloud score: auto takes the bundled one (distilled from s2cloudless) where no cloud mask "
            "is given; s2cloudless takes the optional s2cloudless package where it is installed in QGIS's Python."))
        form.addRow(tr("Cloud source"), self.cloud_source_combo)
        self.device_combo = self._narrow(QComboBox(box))
        self.device_combo.addItem("auto", "auto")
        self.device_combo.addItem("cpu", "cpu")
        form.addRow(tr("Device"), self.device_combo)
        self.device_label = QLabel("", box)
        self.device_label.setWordWrap(True)
        form.addRow(self.device_label)
        self.extent_widget = QgsExtentWidget(box, QgsExtentWidget.CondensedStyle)
        self.extent_widget.setNullValueAllowed(True, tr("Whole layer"))
        self.extent_widget.clear()
        self.extent_widget.setToolTip(tr("Process only this extent: the map canvas, a layer's extent or a "
                                         "rectangle drawn on the map (the button beside it)."))
        canvas = self.iface.mapCanvas() if self.iface is not None else None
        if canvas is not None:
            self.extent_widget.setMapCanvas(canvas)
        form.addRow(tr("Extent"), self.extent_widget)
        self.score_check = QCheckBox(tr("Add the cloud score"), box)
        self.score_check.setToolTip(tr("A second layer: the cloud score, 0 = clear .. 1 = cloud."))
        self.uncertainty_check = QCheckBox(tr("Add the uncertainty"), box)
        self.uncertainty_check.setToolTip(tr("A third layer: the per-pixel spread of test-time augmentation "
                                             "passes (implies them: slower)."))
        self.sources_check = QCheckBox(tr("Add the source dates"), box)
        self.sources_check.setToolTip(tr("Stacks: a layer with one colour per date, showing which date the fill "
                                         "took each pixel from (grey: no date sees it, filled from around it)."))
        self.sources_check.setVisible(False)  # stacks only
        self.tta_check = QCheckBox(tr("Test-time augmentation"), box)
        self.tta_check.setToolTip(tr("Average flipped and rotated passes: slower, slightly better."))
        for check in (self.score_check, self.uncertainty_check, self.sources_check, self.tta_check):
            form.addRow(check)
        return box

    def _build_run_box(self, body) -> QGroupBox:
        box = QGroupBox(tr("Run"), body)
        form = self._form(box)
        self.output_file = QgsFileWidget(box)
        self.output_file.setStorageMode(QgsFileWidget.SaveFile)
        self.output_file.setFilter("GeoTIFF (*.tif)")
        self.output_file.lineEdit().setPlaceholderText(tr("[temporary file]"))
        form.addRow(tr("Output"), self.output_file)
        buttons = QGridLayout()
        self.run_button = QPushButton(tr("Run"), box)
        self.run_button.setObjectName("viserRunButton")
        self.run_button.clicked.connect(lambda: self.run(preview=False))
        self.cancel_button = QPushButton(tr("Cancel"), box)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.preview_button = QPushButton(tr("Preview map extent"), box)
        self.preview_button.setToolTip(tr("Process only what the map shows, into a temporary layer"))
        self.preview_button.clicked.connect(lambda: self.run(preview=True))
        buttons.addWidget(self.run_button, 0, 0)
        buttons.addWidget(self.cancel_button, 0, 1)
        buttons.addWidget(self.preview_button, 1, 0, 1, 2)
        form.addRow(buttons)
        self.progress_bar = QProgressBar(box)
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        form.addRow(self.progress_bar)
        self.status_label = QLabel(tr("Ready."), box)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        form.addRow(self.status_label)
        return box

    def _build_deps_box(self, body) -> QGroupBox:
        self.deps_box = QGroupBox(tr("Dependencies"), body)
        deps_layout = QVBoxLayout(self.deps_box)
        self.deps_label = QLabel("", self.deps_box)
        self.deps_label.setTextFormat(Qt.RichText)
        self.deps_label.setWordWrap(True)
        deps_layout.addWidget(self.deps_label)
        deps_buttons = QGridLayout()
        self.check_button = QPushButton(tr("Check again"), self.deps_box)
        self.check_button.clicked.connect(self.refresh_dependencies)
        self.install_button = QPushButton(tr("Install PyTorch"), self.deps_box)
        self.install_button.clicked.connect(self.install_torch)
        self.cpu_only_check = QCheckBox(tr("CPU build (smaller download)"), self.deps_box)
        self.cpu_only_check.setChecked(True)
        deps_buttons.addWidget(self.check_button, 0, 0)
        deps_buttons.addWidget(self.install_button, 0, 1)
        deps_buttons.addWidget(self.cpu_only_check, 1, 0, 1, 2)
        deps_layout.addLayout(deps_buttons)
        self.deps_log = QPlainTextEdit(self.deps_box)
        self.deps_log.setReadOnly(True)
        self.deps_log.setMaximumHeight(120)
        self.deps_log.setVisible(False)
        deps_layout.addWidget(self.deps_log)
        return self.deps_box

    def _mode_changed(self, stack: bool):
        for widget in (self.layer_combo, self.layer_label):
            widget.setVisible(not stack)
        for widget in (self.stack_list, self.stack_label, self.sources_check):
            widget.setVisible(stack)
        self._mask_enabled()

    # ------------------------------------------------------------------------------ stack list
    def _refresh_stack_list(self, *args):
        """List the rasters that can be dates (see ``usable_date``), keeping ticks and order."""
        checked = {item.data(Qt.UserRole) for item in self._stack_items() if item.checkState() == Qt.Checked}
        order = [item.data(Qt.UserRole) for item in self._stack_items()]
        layers = [layer for layer in QgsProject.instance().mapLayers().values() if usable_date(layer)]
        layers.sort(key=lambda layer: (order.index(layer.id()) if layer.id() in order else len(order), layer.name()))
        self.stack_list.blockSignals(True)
        self.stack_list.clear()
        for layer in layers:
            item = QListWidgetItem(layer.name())
            item.setData(Qt.UserRole, layer.id())
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable | Qt.ItemIsDragEnabled)
            item.setFlags(item.flags() & ~Qt.ItemIsDropEnabled)
            item.setCheckState(Qt.Checked if layer.id() in checked else Qt.Unchecked)
            self.stack_list.addItem(item)
        self.stack_list.blockSignals(False)
        self._refresh_date_masks()
        self.update_summary()

    def _stack_items(self) -> list[QListWidgetItem]:
        return [self.stack_list.item(i) for i in range(self.stack_list.count())]

    def set_stack_layers(self, layers: list[QgsRasterLayer]) -> None:
        """Tick ``layers`` in this order (first = reference); for scripts and tests."""
        self._refresh_stack_list()
        ids = [layer.id() for layer in layers]
        items = {item.data(Qt.UserRole): item for item in self._stack_items()}
        self.stack_list.blockSignals(True)
        for layer_id in reversed(ids):
            item = items[layer_id]
            row = self.stack_list.row(item)
            self.stack_list.takeItem(row)
            self.stack_list.insertItem(0, item)
        for item in self._stack_items():
            item.setCheckState(Qt.Checked if item.data(Qt.UserRole) in ids else Qt.Unchecked)
        self.stack_list.blockSignals(False)
        self._refresh_date_masks()
        self.update_summary()

    def ticked_stack(self) -> tuple[list[QgsRasterLayer], list[str]]:
        """(the ticked dates that can be used, in order; the names of ticked ones that cannot and why)."""
        project = QgsProject.instance()
        layers, dropped = [], []
        for item in self._stack_items():
            if item.checkState() != Qt.Checked:
                continue
            layer = project.mapLayer(item.data(Qt.UserRole))
            if layer is None:
                dropped.append(tr("{name} (no longer in the project)").format(name=item.text()))
            elif not usable_date(layer):
                dropped.append(tr("{name} (not a valid raster file)").format(name=layer.name()))
            else:
                layers.append(layer)
        return layers, dropped

    def stack_layers(self) -> list[QgsRasterLayer]:
        return self.ticked_stack()[0]

    # ----------------------------------------------------------------------------- the summary
    def _connect_summary(self):
        """The input summary follows every change that alters what a run would do."""
        for signal in (self.layer_combo.layerChanged, self.sensor_combo.currentTextChanged,
                       self.model_combo.currentTextChanged, self.model_file.fileChanged,
                       self.bands_edit.textChanged, self.scale_edit.textChanged, self.offset_edit.textChanged,
                       self.stack_check.toggled, self.stack_list.itemChanged,
                       self.cloud_source_combo.currentIndexChanged):
            signal.connect(self.update_summary)
        self.stack_list.model().rowsMoved.connect(self.update_summary)
        self.layer_combo.layerChanged.connect(self._layer_kind_changed)
        self.stack_list.itemChanged.connect(self._layer_kind_changed)
        self.stack_list.model().rowsMoved.connect(self._layer_kind_changed)
        self.stack_list.itemChanged.connect(self._refresh_date_masks)
        self.stack_list.model().rowsMoved.connect(self._refresh_date_masks)
        self._layer_kind_changed()

    def input_layers(self) -> list[QgsRasterLayer]:
        if self.stack_check.isChecked():
            return self.stack_layers()
        layer = self.layer_combo.currentLayer()
        return [layer] if layer is not None else []

    def _layer_kind_changed(self, *args):
        """Keep a Bands override with the kind of raster it was typed for (band count and data type):
        it comes back for a raster of the same kind, and a raster of another kind starts empty."""
        layers = self.input_layers()
        kind = layer_kind(layers[0]) if layers else None
        if kind == self._bands_kind:
            return
        if self._bands_kind is not None:
            self.settings.setValue(bands_key(self._bands_kind), self.bands_edit.text())
        self._bands_kind = kind
        self.bands_edit.setText(self.settings.value(bands_key(kind), "") or "" if kind else "")

    def update_summary(self, *args) -> dict | None:
        """Say whether the input can be processed, and with which model and bands (``core.pipeline.plan``)."""
        self.last_plan = None
        layers = self.input_layers()
        if self.stack_check.isChecked():
            dropped = self.ticked_stack()[1]
            if not layers:
                return self._summary(False, tr("Tick the dates of the stack (the first ticked one is the "
                                               "reference)."), dropped)
        else:
            dropped = []
            if not layers:
                return self._summary(False, tr("Choose a raster layer."))
        problem = next((why for layer in layers if (why := layer_problem(layer))), None)
        if problem:
            return self._summary(False, problem, dropped)
        try:
            request = self.plan_request(layers)
            plan = engine.run_engine(engine.core_module("pipeline").plan, request)
        except (ValueError, QgsProcessingException) as exc:
            return self._summary(False, dock_message(str(exc)), dropped)
        self.last_plan = plan
        return self._summary(True, plan_text(plan), dropped)

    def plan_request(self, layers: list[QgsRasterLayer]):
        pipeline = engine.core_module("pipeline")
        return pipeline.CloudRemovalRequest(
            inputs=[layer.source().split("|")[0] for layer in layers], output=None,
            model=self.model_file.filePath() or (None if self.model_combo.currentText() == AUTO_MODEL
                                                 else self.model_combo.currentText()),
            sensor=self.sensor_combo.currentText(), bands=parse_bands(self.bands_edit.text()) or None,
            scale=parse_number(self.scale_edit.text(), tr("Scale")),
            offset=parse_number(self.offset_edit.text(), tr("Offset")),
            cloud_source=self.cloud_source_combo.currentData(),
        )

    def _summary(self, ok: bool, text: str, dropped: list[str] | None = None) -> dict | None:
        head = tr("Ready to run") if ok else tr("Cannot run yet")
        colour = "#2a7a2a" if ok else "#a33"
        html = f"<b style='color:{colour}'>{escape(head)}</b>: {escape(text)}"
        if dropped:
            html += "<br><span style='color:#a60'>" + escape(
                tr("Left out of the stack: {names}.").format(names=", ".join(dropped))) + "</span>"
        self.input_info.setText(html)
        self.style_input_button.setEnabled(ok)
        return self.last_plan

    def style_input(self) -> bool:
        """Give the input (the reference date) the result's true-colour style, with the model's bands."""
        layers = self.input_layers()
        plan = self.last_plan or self.update_summary()
        if not layers or not plan:
            return False
        names = plan["model_bands"]
        rgb = tuple(plan["bands"][names.index(colour)] for colour in ("red", "green", "blue") if colour in names)
        style.apply_true_colour(layers[0], rgb if len(rgb) == 3 else None)
        return True

    # -------------------------------------------------------------------------------- settings
    def _restore_settings(self):
        s = self.settings
        self._set_combo(self.sensor_combo, s.value(SETTINGS_PREFIX + "sensor", "auto"))
        self._set_combo(self.model_combo, s.value(SETTINGS_PREFIX + "model", AUTO_MODEL))
        self.model_file.setFilePath(s.value(SETTINGS_PREFIX + "model_file", "") or "")
        self.tile_spin.setValue(int(s.value(SETTINGS_PREFIX + "tile_size", 0) or 0))
        self.keep_clear_check.setChecked(str(s.value(SETTINGS_PREFIX + "keep_clear", "true")).lower() == "true")
        self._set_combo(self.mask_type_combo, s.value(SETTINGS_PREFIX + "cloud_mask_type", mask_codes.DEFAULT_ENCODING))
        self.mask_buffer_spin.setValue(int(s.value(SETTINGS_PREFIX + "cloud_mask_buffer", 0) or 0))
        self.mask_add_check.setChecked(str(s.value(SETTINGS_PREFIX + "cloud_mask_add", "false")).lower() == "true")
        self._saved_device = s.value(SETTINGS_PREFIX + "device", "auto") or "auto"

    def save_settings(self):
        s = self.settings
        s.setValue(SETTINGS_PREFIX + "sensor", self.sensor_combo.currentText())
        s.setValue(SETTINGS_PREFIX + "model", self.model_combo.currentText())
        s.setValue(SETTINGS_PREFIX + "model_file", self.model_file.filePath())
        if self._bands_kind is not None:
            s.setValue(bands_key(self._bands_kind), self.bands_edit.text())
        s.setValue(SETTINGS_PREFIX + "tile_size", self.tile_spin.value())
        s.setValue(SETTINGS_PREFIX + "keep_clear", "true" if self.keep_clear_check.isChecked() else "false")
        s.setValue(SETTINGS_PREFIX + "cloud_mask_type", self.mask_type_combo.currentText())
        s.setValue(SETTINGS_PREFIX + "cloud_mask_buffer", self.mask_buffer_spin.value())
        s.setValue(SETTINGS_PREFIX + "cloud_mask_add", "true" if self.mask_add_check.isChecked() else "false")
        s.setValue(SETTINGS_PREFIX + "device", self.device_combo.currentData() or "auto")

    @staticmethod
    def _set_combo(combo: QComboBox, text: str):
        index = combo.findText(str(text))
        if index >= 0:
            combo.setCurrentIndex(index)

    # ------------------------------------------------------------------------------------- run
    def parameters(self, preview: bool = False) -> tuple[str, dict, str]:
        """(algorithm id, Processing parameters, output layer name) from the widgets."""
        params: dict = {
            "SENSOR": self.sensor_combo.currentText(),
            "MODEL": self.model_combo.currentText(),
            "DEVICE": self.device_combo.currentData() or "auto",
            "KEEP_CLEAR": self.keep_clear_check.isChecked(),
        }
        bands = parse_bands(self.bands_edit.text())
        if bands:
            params["BANDS"] = bands
        for key, edit, label in (("SCALE", self.scale_edit, tr("Scale")), ("OFFSET", self.offset_edit, tr("Offset"))):
            value = parse_number(edit.text(), label)
            if value is not None:
                params[key] = value
        if self.model_file.filePath():
            params["MODEL_FILE"] = self.model_file.filePath()
        if self.tile_spin.value() > 0:
            params["TILE_SIZE"] = self.tile_spin.value()
        if self.cloud_threshold_spin.value() > 0:
            params["CLOUD_THRESHOLD"] = self.cloud_threshold_spin.value()
        for key, check in (("CLOUD_SHADOWS", self.shadows_check), ("CIRRUS_CORRECTION", self.cirrus_check)):
            if not check.isChecked():  # on by default: only a change is passed
                params[key] = False
        if self.cloud_source_combo.currentData() != "auto":
            params["CLOUD_SOURCE"] = self.cloud_source_combo.currentData()
        if self.tta_check.isChecked():
            params["TTA"] = True
        output = self.output_file.filePath().strip()
        params["OUTPUT"] = TEMPORARY_OUTPUT if (preview or not output) else output
        for key, check, suffix in (("SCORE", self.score_check, "score"),
                                   ("UNCERTAINTY", self.uncertainty_check, "uncertainty")):
            if check.isChecked():
                params[key] = sibling_path(params["OUTPUT"], suffix)
        if self.stack_check.isChecked():
            layers, dropped = self.ticked_stack()
            if not layers:
                raise ValueError(tr("Tick the dates of the stack (the first ticked one is the reference)."))
            params["INPUTS"] = [layer.id() for layer in layers]
            masks = self.date_mask_ids(layers) if self.keep_clear_check.isChecked() else []
            if masks:
                params["CLOUD_MASKS"] = masks
                self._mask_value_parameters(params)
            if self.sources_check.isChecked():
                params["SOURCE_DATES"] = sibling_path(params["OUTPUT"], "source_dates")
            self._date_labels = [layer.name() for layer in layers]
            name = naming.stack_result_name([layer.name() for layer in layers])
            algorithm_id = "viser:removecloudsstack"
            self._dropped = dropped
        else:
            layer = self.layer_combo.currentLayer()
            if layer is None:
                raise ValueError(tr("Choose a raster layer."))
            params["INPUT"] = layer.id()
            mask = self.mask_combo.currentLayer()
            if mask is not None and self.keep_clear_check.isChecked():
                params["CLOUD_MASK"] = mask.id()
                self._mask_value_parameters(params)
            name = naming.result_name(layer.name())
            algorithm_id = "viser:removeclouds"
            self._dropped = []
        extent = self.extent_parameter(preview)
        if extent:
            params["EXTENT"] = extent
        if preview:
            name += tr(" (preview)")
        return algorithm_id, params, name

    def _mask_value_parameters(self, params: dict) -> None:
        """How the cloud masks are read: their values, buffer and mode."""
        params["CLOUD_MASK_TYPE"] = self.mask_type_combo.currentData()
        if self.mask_buffer_spin.value():
            params["CLOUD_MASK_BUFFER"] = self.mask_buffer_spin.value()
        if self.mask_add_check.isChecked():
            params["CLOUD_MASK_MODE"] = "add"

    def extent_parameter(self, preview: bool) -> str | None:
        """The EXTENT value: the map canvas for a preview, else the Advanced extent (none = whole layer)."""
        if preview:
            canvas = self.iface.mapCanvas() if self.iface is not None else None
            if canvas is None:
                raise ValueError(tr("There is no map canvas to take the extent from."))
            return extent_text(canvas.extent(), canvas.mapSettings().destinationCrs())
        if self.extent_widget.isValid() and not self.extent_widget.outputExtent().isNull():
            return extent_text(self.extent_widget.outputExtent(), self.extent_widget.outputCrs())
        return None

    def run(self, preview: bool = False) -> bool:
        if self.current is not None:
            return False
        try:
            algorithm_id, params, name = self.parameters(preview)
        except ValueError as exc:
            self._status(str(exc), error=True)
            return False
        algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
        if algorithm is None:
            self._status(tr("The Processing algorithm {id} is not registered (is the plugin loaded?).").format(
                id=algorithm_id), error=True)
            return False
        self.save_settings()
        context = QgsProcessingContext()
        context.setProject(QgsProject.instance())
        feedback = DockFeedback()
        feedback.progressChanged.connect(self._on_progress)
        feedback.text_changed.connect(self._on_progress_text)
        task = QgsProcessingAlgRunnerTask(algorithm, params, context, feedback)
        task.setDescription(f"VISER-CR: {name}")
        on_executed = partial(self._on_executed, task)
        on_terminated = partial(self._on_executed, task, False, {})
        self.current = Run(algorithm_id, params, context, feedback, task, name, preview, algorithm,
                           (on_executed, on_terminated))
        task.executed.connect(on_executed)
        # A task cancelled before it started ends without "executed": finish it from taskTerminated.
        task.taskTerminated.connect(on_terminated)
        self._set_running(True)
        status = tr("Running…") if not preview else tr("Running on the map extent…")
        if self._dropped:
            status += " " + tr("Left out of the stack: {names}.").format(names=", ".join(self._dropped))
            self._warn(status)
        self._status(status)
        QgsApplication.taskManager().addTask(task)
        return True

    def cancel(self):
        if self.current is None:
            return
        self._status(tr("Cancelling…"))
        self.current.feedback.cancel()
        self.current.task.cancel()

    def _on_progress(self, value: float):
        self.progress_bar.setValue(int(value))

    def _on_progress_text(self, text: str):
        self._status(text)

    def _on_executed(self, task, successful: bool, results: dict):
        if self.current is None or self.current.task is not task:
            return  # already handled (executed, then taskTerminated) or a stale task
        run, self.current = self.current, None
        self._finished_run = run  # keep context and feedback alive until the task object is gone
        self._set_running(False)
        self.last_result = dict(results or {})
        if not successful or run.feedback.isCanceled():
            if run.feedback.isCanceled():
                self._status(tr("Cancelled: nothing was written."))
            else:
                message = run.feedback.errors[-1] if run.feedback.errors else tr("The run failed (see the log).")
                self._status(message, error=True)
            self.progress_bar.setValue(0)
            self.run_finished.emit(False)
            return
        layers = []
        for key, name in (("SOURCE_DATES", tr("{name} source dates")), ("UNCERTAINTY", tr("{name} uncertainty")),
                          ("SCORE", tr("{name} cloud score")), ("OUTPUT", "{name}")):
            if results.get(key):
                layer = QgsRasterLayer(str(results[key]), name.format(name=run.layer_name))
                if not layer.isValid():
                    self._status(tr("The output {path} cannot be opened.").format(path=results[key]), error=True)
                    self.run_finished.emit(False)
                    return
                layers.append(layer)
        for layer in layers:  # the cloud-free result ends on top
            if layer.source() == str(results.get("SOURCE_DATES")):
                style.apply_source_dates(layer, self._date_labels)
            else:
                style.apply_true_colour(layer)
            add_on_top(layer)
        self.last_layer = layers[-1]
        self._refresh_stack_list()
        done = tr("Done: {name}").format(name=run.layer_name)
        if results.get("USED_MODEL"):
            done += " " + tr("(model {model} on {device})").format(model=results.get("USED_MODEL"),
                                                                   device=results.get("USED_DEVICE"))
        self._status(done + ".")
        self.progress_bar.setValue(100)
        self.run_finished.emit(True)

    def _set_running(self, running: bool):
        self.run_button.setEnabled(not running)
        self.preview_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self.progress_bar.setValue(0)

    def _status(self, text: str, error: bool = False):
        self.status_label.setText(text)
        self.status_label.setStyleSheet("color: #a33;" if error else "")
        if error:
            self._warn(text)

    def _warn(self, text: str):
        if self.iface is not None and self.iface.messageBar() is not None:
            self.iface.messageBar().pushMessage("VISER-CR", text, Qgis.Warning, 8)

    # ---------------------------------------------------------------------------- dependencies
    def refresh_dependencies(self):
        self.report = deps.check(probe_devices=True)
        rows = "".join(
            f"<tr><td><b>{name}</b></td><td>{value}</td></tr>" for name, value in self.report.as_rows()
        )
        missing = self.report.missing
        note = ""
        if missing:
            note = (
                "<p style='color:#a33'>" + escape(tr(
                    "Missing: {names}. Install PyTorch runs pip into this QGIS profile's Python folder ({folder}); "
                    "restart QGIS afterwards.").format(names=", ".join(d.module for d in missing),
                                                       folder=deps.profile_python_dir())) + "</p>"
            )
        self.deps_label.setText(f"<table>{rows}</table>{note}")
        self.install_button.setVisible(bool(missing))
        self.cpu_only_check.setVisible(bool(missing))
        # Devices
        current = self.device_combo.currentData() or getattr(self, "_saved_device", "auto")
        self.device_combo.clear()
        self.device_combo.addItem("auto", "auto")
        self.device_combo.addItem("cpu", "cpu")
        for device, gpu in self.report.cuda_devices:
            self.device_combo.addItem(f"{device} ({gpu})", device)
        index = self.device_combo.findData(current)
        self.device_combo.setCurrentIndex(max(index, 0))
        if not self.report.dependencies[0].found:
            self.device_label.setText(tr("PyTorch is missing (see Dependencies)"))
        else:
            self.device_label.setText(self.report.torch_device or "CPU")
        self.update_summary()
        return self.report

    def install_command(self) -> list[str]:
        return deps.pip_install_command(cpu_only=self.cpu_only_check.isChecked())

    def install_torch(self, command: list[str] | None = None) -> PipInstallTask | None:
        if self.install_task is not None:
            return None
        command = command or self.install_command()
        self.deps_log.setVisible(True)
        self.deps_log.appendPlainText("$ " + " ".join(command))
        task = PipInstallTask(command)
        task.line.connect(self.deps_log.appendPlainText)
        task.taskCompleted.connect(lambda: self._install_finished(True))
        task.taskTerminated.connect(lambda: self._install_finished(False))
        self.install_task = task
        self.install_button.setEnabled(False)
        QgsApplication.taskManager().addTask(task)
        return task

    def _install_finished(self, ok: bool):
        task, self.install_task = self.install_task, None
        self.install_button.setEnabled(True)
        if ok:
            self.deps_log.appendPlainText(tr("PyTorch installed. Restart QGIS if the algorithms still miss it."))
        else:
            error = task.error if task is not None else ""
            self.deps_log.appendPlainText(tr("pip failed (exit {code}). {error}").format(
                code=getattr(task, "returncode", None), error=error))
        self.refresh_dependencies()

    # -------------------------------------------------------------------------------- shutdown
    def shutdown(self):
        """Cancel what runs and disconnect from the task and the project (plugin unload)."""
        if self.current is not None:
            run = self.current
            for signal, slot in zip((run.task.executed, run.task.taskTerminated), run.slots, strict=True):
                try:
                    signal.disconnect(slot)
                except (TypeError, RuntimeError):
                    pass  # already finished and deleted by the task manager
            run.feedback.cancel()
            run.task.cancel()
            _ORPHANS.append(run)  # the task still runs its last batch: keep its context alive
        if self.install_task is not None:
            self.install_task.cancel()
        project = QgsProject.instance()
        for signal in (project.layersAdded, project.layersRemoved):
            try:
                signal.disconnect(self._refresh_stack_list)
            except TypeError:
                pass


def parse_bands(text: str) -> list[int]:
    """'4, 3 2;8' -> [4, 3, 2, 8] (the CLI's parser, ``core.sensors.parse_bands``); ValueError naming the field."""
    try:
        return sensors.parse_bands(text)
    except ValueError as exc:
        raise ValueError(tr("Bands: {problem}.").format(problem=exc)) from None


def dock_field_names() -> dict[str, str]:
    return {"SENSOR": tr("Sensor"), "BANDS": tr("Bands"), "SCALE": tr("Scale (Advanced)"),
            "OFFSET": tr("Offset (Advanced)"), "MODEL_FILE": tr("Model file"), "TILE_SIZE": tr("Tile size (Advanced)"),
            "KEEP_CLEAR": tr("Keep clear pixels"), "DEVICE": tr("Device (Advanced)"),
            "CLOUD_THRESHOLD": tr("Cloud threshold (Advanced)"), "CLOUD_MASK": tr("Cloud mask"),
            "CLOUD_MASK_TYPE": tr("Mask values"), "CLOUD_MASK_BUFFER": tr("Mask buffer"),
            "CLOUD_MASK_MODE": tr("Add the model's clouds")}


def dock_message(text: str) -> str:
    """Engine advice in the dock's words: 'SENSOR landsat-c2l2 ... SCALE S OFFSET O' names the dock's fields."""
    names = dock_field_names()
    return re.sub(r"\b(" + "|".join(names) + r")\b", lambda match: names[match.group(1)], text)


def parse_number(text: str, label: str) -> float | None:
    """'' -> None (the sensor preset's value); '0,5' or '0.5' -> 0.5; else ValueError naming the field."""
    text = (text or "").strip().replace(",", ".")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(tr("{label}: '{text}' is not a number.").format(label=label, text=text)) from None


def layer_kind(layer: QgsRasterLayer) -> str:
    """What a band override depends on: the band count and the data type ('13xUInt16')."""
    provider = layer.dataProvider() if layer.isValid() else None
    dtype = provider.dataType(1) if provider is not None and layer.bandCount() else 0
    return f"{layer.bandCount()}x{int(dtype)}"


def bands_key(kind: str) -> str:
    return f"{SETTINGS_PREFIX}bands/{kind}"


def layer_problem(layer: QgsRasterLayer) -> str | None:
    """Why the dock cannot process ``layer`` at all, or None."""
    if not layer.isValid():
        return tr("the layer '{name}' is not valid (its file cannot be read).").format(name=layer.name())
    if layer.providerType() != "gdal":
        return tr("the layer '{name}' comes from the '{provider}' provider; VISER-CR reads raster files. Save it "
                  "as a GeoTIFF first.").format(name=layer.name(), provider=layer.providerType())
    return None


def usable_date(layer) -> bool:
    """A raster the stack can take: a valid raster file with 3 bands or more that the plugin did not write."""
    return (isinstance(layer, QgsRasterLayer) and layer_problem(layer) is None and layer.bandCount() >= 3
            and not style.is_result(layer))


def plan_text(plan: dict) -> str:
    """'sensor s2-l1c · bands 4, 3, 2, 8 (red, green, blue, nir) · model viser-cr-s-rgbn. The input has ...'"""
    text = tr("sensor {sensor} · bands {bands} ({names}) · model {model}").format(
        sensor=plan["sensor"], bands=", ".join(map(str, plan["bands"])), names=", ".join(plan["model_bands"]),
        model=plan["model"])
    if plan.get("dates", 1) > plan.get("dates_taken", plan.get("dates", 1)):
        text = tr("{count} dates, {taken} per tile (those that see most under the reference's clouds) · ").format(
            count=plan["dates"], taken=plan["dates_taken"]) + text
    elif plan.get("dates", 1) > 1:
        text = tr("{count} dates · ").format(count=plan["dates"]) + text
    text += "."
    if plan["dropped"]:
        text += " " + dropped_bands_text(plan)
    return text


def extent_text(extent, crs) -> str:
    return f"{extent.xMinimum()},{extent.xMaximum()},{extent.yMinimum()},{extent.yMaximum()} [{crs.authid()}]"


def sibling_path(output: str, suffix: str) -> str:
    """'out.tif' -> 'out_score.tif'; a temporary output gets temporary siblings."""
    if output == TEMPORARY_OUTPUT:
        return TEMPORARY_OUTPUT
    path = Path(output)
    return str(path.with_name(f"{path.stem}_{suffix}{path.suffix or '.tif'}"))


def add_on_top(layer: QgsRasterLayer) -> None:
    """Add a result to the project at the top of the layer tree (not under the selected layer)."""
    project = QgsProject.instance()
    style.mark_result(layer)
    project.addMapLayer(layer, False)
    project.layerTreeRoot().insertLayer(0, layer)
