"""The VISER-CR dock widget: run the Processing algorithms on project layers as background tasks.

The dock builds the same parameters a Toolbox user would give ``viser:removeclouds`` (or
``viser:removecloudsstack`` for several dates) and runs the algorithm through
``QgsProcessingAlgRunnerTask``, so QGIS stays responsive; the result is added to the project with a
true-colour style. Its dependency panel shows what QGIS's Python has and installs PyTorch with pip.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayerProxyModel,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
    QgsTask,
)
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
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

from . import deps, engine, style
from .algorithm_base import AUTO_MODEL, SENSORS

SETTINGS_PREFIX = "viser_cr/dock/"
_ORPHANS: list = []  # runs cancelled by unload, kept alive until their task has ended
TEMPORARY_OUTPUT = "TEMPORARY_OUTPUT"


class DockFeedback(QgsProcessingFeedback):
    """Processing feedback that keeps the error messages for the dock's status line."""

    text_changed = pyqtSignal(str)  # emitted from the worker thread, delivered queued to the dock

    def __init__(self):
        super().__init__()
        self.errors: list[str] = []
        self.infos: list[str] = []

    def reportError(self, error, fatalError=False):  # noqa: N802, N803
        self.errors.append(str(error))
        super().reportError(error, fatalError)

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
        super().__init__("Installing PyTorch for VISER-CR", QgsTask.CanCancel)
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
        super().__init__("VISER-CR cloud removal", parent)
        self.iface = iface
        self.settings = QgsSettings()
        self.current: Run | None = None
        self.last_result: dict = {}
        self.last_layer: QgsRasterLayer | None = None
        self.install_task: PipInstallTask | None = None
        self.report: deps.Report | None = None
        self._build_ui()
        self._restore_settings()
        project = QgsProject.instance()
        project.layersAdded.connect(self._refresh_stack_list)
        project.layersRemoved.connect(self._refresh_stack_list)
        self._refresh_stack_list()
        self.refresh_dependencies()

    # ---------------------------------------------------------------------------------------- UI
    def _build_ui(self):
        body = QWidget(self)
        layout = QVBoxLayout(body)

        # Input
        input_box = QGroupBox("Input", body)
        input_form = QFormLayout(input_box)
        self.stack_check = QCheckBox("Several dates (multi-temporal stack)", input_box)
        self.stack_check.toggled.connect(self._mode_changed)
        input_form.addRow(self.stack_check)
        self.layer_combo = QgsMapLayerComboBox(input_box)
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.layer_combo.layerChanged.connect(self._layer_changed)
        self.layer_label = QLabel("Layer", input_box)
        input_form.addRow(self.layer_label, self.layer_combo)
        self.stack_list = QListWidget(input_box)
        self.stack_list.setDragDropMode(QAbstractItemView.InternalMove)
        self.stack_list.setToolTip("Tick the dates to use and drag them into order: the first ticked one is "
                                   "the reference (the date cleared, and the output grid).")
        self.stack_list.setMinimumHeight(90)
        self.stack_label = QLabel("Dates\n(first = reference)", input_box)
        input_form.addRow(self.stack_label, self.stack_list)
        self.input_info = QLabel("", input_box)
        self.input_info.setWordWrap(True)
        self.input_info.setStyleSheet("color: #555;")
        input_form.addRow(self.input_info)
        layout.addWidget(input_box)

        # Model and device
        model_box = QGroupBox("Model", body)
        form = QFormLayout(model_box)
        self.sensor_combo = QComboBox(model_box)
        self.sensor_combo.addItems(SENSORS)
        self.sensor_combo.currentTextChanged.connect(lambda _: self._layer_changed())
        form.addRow("Sensor", self.sensor_combo)
        self.bands_edit = QLineEdit(model_box)
        self.bands_edit.setPlaceholderText("from the sensor preset (e.g. 4,3,2,8)")
        form.addRow("Bands", self.bands_edit)
        self.model_combo = QComboBox(model_box)
        self.model_combo.addItems([AUTO_MODEL, *engine.bundled_model_names()])
        form.addRow("Model", self.model_combo)
        self.model_file = QgsFileWidget(model_box)
        self.model_file.setFilter("VISER-CR models (*.safetensors *.json)")
        self.model_file.setToolTip("A model of your own (overrides Model)")
        form.addRow("Model file", self.model_file)
        self.device_combo = QComboBox(model_box)
        self.device_combo.addItem("auto", "auto")
        self.device_combo.addItem("cpu", "cpu")
        form.addRow("Device", self.device_combo)
        self.device_label = QLabel("", model_box)
        form.addRow("", self.device_label)
        self.tile_spin = QSpinBox(model_box)
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setSpecialValueText("model default")
        form.addRow("Tile size", self.tile_spin)
        self.keep_clear_check = QCheckBox("Keep clear pixels (fill only the clouds)", model_box)
        form.addRow(self.keep_clear_check)
        layout.addWidget(model_box)

        # Output and run
        run_box = QGroupBox("Run", body)
        run_layout = QVBoxLayout(run_box)
        out_row = QHBoxLayout()
        out_row.addWidget(QLabel("Output", run_box))
        self.output_file = QgsFileWidget(run_box)
        self.output_file.setStorageMode(QgsFileWidget.SaveFile)
        self.output_file.setFilter("GeoTIFF (*.tif)")
        self.output_file.lineEdit().setPlaceholderText("[temporary file]")
        out_row.addWidget(self.output_file)
        run_layout.addLayout(out_row)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run", run_box)
        self.run_button.setObjectName("viserRunButton")
        self.run_button.clicked.connect(lambda: self.run(preview=False))
        self.preview_button = QPushButton("Preview map extent", run_box)
        self.preview_button.setToolTip("Process only what the map shows, into a temporary layer")
        self.preview_button.clicked.connect(lambda: self.run(preview=True))
        self.cancel_button = QPushButton("Cancel", run_box)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        for button in (self.run_button, self.preview_button, self.cancel_button):
            buttons.addWidget(button)
        run_layout.addLayout(buttons)
        self.progress_bar = QProgressBar(run_box)
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        run_layout.addWidget(self.progress_bar)
        self.status_label = QLabel("Ready.", run_box)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        run_layout.addWidget(self.status_label)
        layout.addWidget(run_box)

        # Dependencies
        self.deps_box = QGroupBox("Dependencies", body)
        deps_layout = QVBoxLayout(self.deps_box)
        self.deps_label = QLabel("", self.deps_box)
        self.deps_label.setTextFormat(Qt.RichText)
        self.deps_label.setWordWrap(True)
        deps_layout.addWidget(self.deps_label)
        deps_buttons = QHBoxLayout()
        self.check_button = QPushButton("Check again", self.deps_box)
        self.check_button.clicked.connect(self.refresh_dependencies)
        self.install_button = QPushButton("Install PyTorch", self.deps_box)
        self.install_button.clicked.connect(self.install_torch)
        self.cpu_only_check = QCheckBox("CPU build (smaller download)", self.deps_box)
        self.cpu_only_check.setChecked(True)
        for widget in (self.check_button, self.install_button, self.cpu_only_check):
            deps_buttons.addWidget(widget)
        deps_layout.addLayout(deps_buttons)
        self.deps_log = QPlainTextEdit(self.deps_box)
        self.deps_log.setReadOnly(True)
        self.deps_log.setMaximumHeight(120)
        self.deps_log.setVisible(False)
        deps_layout.addWidget(self.deps_log)
        layout.addWidget(self.deps_box)
        layout.addStretch(1)

        body.setMinimumWidth(340)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        scroll.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)
        self.setWidget(scroll)
        self._mode_changed(False)

    def _mode_changed(self, stack: bool):
        for widget in (self.layer_combo, self.layer_label):
            widget.setVisible(not stack)
        for widget in (self.stack_list, self.stack_label):
            widget.setVisible(stack)
        self.keep_clear_check.setEnabled(True)

    def _refresh_stack_list(self, *args):
        checked = {item.data(Qt.UserRole) for item in self._stack_items() if item.checkState() == Qt.Checked}
        order = [item.data(Qt.UserRole) for item in self._stack_items()]
        layers = [layer for layer in QgsProject.instance().mapLayers().values() if isinstance(layer, QgsRasterLayer)]
        layers.sort(key=lambda layer: (order.index(layer.id()) if layer.id() in order else len(order), layer.name()))
        self.stack_list.clear()
        for layer in layers:
            item = QListWidgetItem(layer.name())
            item.setData(Qt.UserRole, layer.id())
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable | Qt.ItemIsDragEnabled)
            item.setFlags(item.flags() & ~Qt.ItemIsDropEnabled)
            item.setCheckState(Qt.Checked if layer.id() in checked else Qt.Unchecked)
            self.stack_list.addItem(item)

    def _stack_items(self) -> list[QListWidgetItem]:
        return [self.stack_list.item(i) for i in range(self.stack_list.count())]

    def set_stack_layers(self, layers: list[QgsRasterLayer]) -> None:
        """Tick ``layers`` in this order (first = reference); for scripts and tests."""
        self._refresh_stack_list()
        ids = [layer.id() for layer in layers]
        items = {item.data(Qt.UserRole): item for item in self._stack_items()}
        for layer_id in reversed(ids):
            item = items[layer_id]
            row = self.stack_list.row(item)
            self.stack_list.takeItem(row)
            self.stack_list.insertItem(0, item)
        for item in self._stack_items():
            item.setCheckState(Qt.Checked if item.data(Qt.UserRole) in ids else Qt.Unchecked)

    def stack_layers(self) -> list[QgsRasterLayer]:
        project = QgsProject.instance()
        layers = []
        for item in self._stack_items():
            if item.checkState() == Qt.Checked:
                layer = project.mapLayer(item.data(Qt.UserRole))
                if layer is not None:
                    layers.append(layer)
        return layers

    def _layer_changed(self, *args):
        """Say what the engine makes of the selected raster (sensor, bands), when it can."""
        layer = self.layer_combo.currentLayer() if not self.stack_check.isChecked() else None
        if layer is None or self.report is None or self.report.missing:
            self.input_info.setText("")
            self.input_info.setToolTip("")
            return
        try:
            pipeline = engine.core_module("pipeline")
            info = pipeline.describe_input(layer.source().split("|")[0], sensor=self.sensor_combo.currentText())
        except Exception as exc:  # noqa: BLE001 - informative only
            self.input_info.setText(f"<span style='color:#a33'>{exc}</span>")
            return
        self.input_info.setText(describe_text(info))
        self.input_info.setToolTip(engine.processing_message(str(info.get("reason") or "")))

    # -------------------------------------------------------------------------------- settings
    def _restore_settings(self):
        s = self.settings
        self._set_combo(self.sensor_combo, s.value(SETTINGS_PREFIX + "sensor", "auto"))
        self._set_combo(self.model_combo, s.value(SETTINGS_PREFIX + "model", AUTO_MODEL))
        self.model_file.setFilePath(s.value(SETTINGS_PREFIX + "model_file", "") or "")
        self.bands_edit.setText(s.value(SETTINGS_PREFIX + "bands", "") or "")
        self.tile_spin.setValue(int(s.value(SETTINGS_PREFIX + "tile_size", 0) or 0))
        self.keep_clear_check.setChecked(str(s.value(SETTINGS_PREFIX + "keep_clear", "false")).lower() == "true")
        self._saved_device = s.value(SETTINGS_PREFIX + "device", "auto") or "auto"

    def save_settings(self):
        s = self.settings
        s.setValue(SETTINGS_PREFIX + "sensor", self.sensor_combo.currentText())
        s.setValue(SETTINGS_PREFIX + "model", self.model_combo.currentText())
        s.setValue(SETTINGS_PREFIX + "model_file", self.model_file.filePath())
        s.setValue(SETTINGS_PREFIX + "bands", self.bands_edit.text())
        s.setValue(SETTINGS_PREFIX + "tile_size", self.tile_spin.value())
        s.setValue(SETTINGS_PREFIX + "keep_clear", "true" if self.keep_clear_check.isChecked() else "false")
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
        if self.model_file.filePath():
            params["MODEL_FILE"] = self.model_file.filePath()
        if self.tile_spin.value() > 0:
            params["TILE_SIZE"] = self.tile_spin.value()
        output = self.output_file.filePath().strip()
        params["OUTPUT"] = TEMPORARY_OUTPUT if (preview or not output) else output
        if self.stack_check.isChecked():
            layers = self.stack_layers()
            if not layers:
                raise ValueError("Tick the dates of the stack (the first ticked one is the reference).")
            params["INPUTS"] = [layer.id() for layer in layers]
            name = f"{layers[0].name()} cloud-free ({len(layers)} dates)"
            algorithm_id = "viser:removecloudsstack"
        else:
            layer = self.layer_combo.currentLayer()
            if layer is None:
                raise ValueError("Choose a raster layer.")
            params["INPUT"] = layer.id()
            name = f"{layer.name()} cloud-free"
            algorithm_id = "viser:removeclouds"
        if preview:
            canvas = self.iface.mapCanvas() if self.iface is not None else None
            if canvas is None:
                raise ValueError("There is no map canvas to take the extent from.")
            extent = canvas.extent()
            crs = canvas.mapSettings().destinationCrs()
            params["EXTENT"] = (
                f"{extent.xMinimum()},{extent.xMaximum()},{extent.yMinimum()},{extent.yMaximum()} [{crs.authid()}]"
            )
            name += " (preview)"
        return algorithm_id, params, name

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
            self._status(f"The Processing algorithm {algorithm_id} is not registered (is the plugin loaded?).",
                         error=True)
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
        self._status("Running…" if not preview else "Running on the map extent…")
        QgsApplication.taskManager().addTask(task)
        return True

    def cancel(self):
        if self.current is None:
            return
        self._status("Cancelling…")
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
                self._status("Cancelled: nothing was written.")
            else:
                message = run.feedback.errors[-1] if run.feedback.errors else "The run failed (see the log)."
                self._status(message, error=True)
            self.progress_bar.setValue(0)
            self.run_finished.emit(False)
            return
        layer = QgsRasterLayer(str(results.get("OUTPUT")), run.layer_name)
        if not layer.isValid():
            self._status(f"The output {results.get('OUTPUT')} cannot be opened.", error=True)
            self.run_finished.emit(False)
            return
        style.apply_true_colour(layer)
        QgsProject.instance().addMapLayer(layer)
        self.last_layer = layer
        done = f"Done: {run.layer_name}"
        if results.get("USED_MODEL"):
            done += f" (model {results.get('USED_MODEL')} on {results.get('USED_DEVICE')})"
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
        if error and self.iface is not None and self.iface.messageBar() is not None:
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
                "<p style='color:#a33'>Missing: " + ", ".join(d.module for d in missing) + ". "
                "<b>Install PyTorch</b> runs pip into this QGIS profile's Python folder "
                f"({deps.profile_python_dir()}); restart QGIS afterwards.</p>"
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
            self.device_label.setText("PyTorch is missing (see Dependencies)")
        else:
            self.device_label.setText(self.report.torch_device or "CPU")
        self._layer_changed()
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
            self.deps_log.appendPlainText("PyTorch installed. Restart QGIS if the algorithms still miss it.")
        else:
            error = task.error if task is not None else ""
            self.deps_log.appendPlainText(f"pip failed (exit {getattr(task, 'returncode', None)}). {error}")
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
    """'4, 3 2;8' -> [4, 3, 2, 8]; raises ValueError on anything else."""
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    try:
        bands = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"Bands: '{text}' is not a list of band numbers (e.g. 4,3,2,8).") from None
    if any(b < 1 for b in bands):
        raise ValueError("Bands: band numbers start at 1.")
    return bands


def describe_text(info: dict) -> str:
    """A short summary of ``core.pipeline.describe_input``'s dictionary (the reason goes in a tooltip)."""
    if not isinstance(info, dict):
        return str(info)
    size = f"{info.get('width')}x{info.get('height')} px, {info.get('count')} bands {info.get('dtype') or ''}".strip()
    if info.get("error"):
        return f"{size}. {engine.processing_message(str(info['error']))}"
    parts = [size]
    if info.get("sensor"):
        parts.append(f"sensor {info['sensor']}")
    bands = info.get("bands")
    if isinstance(bands, dict) and bands:
        shown = {k: bands[k] for k in ("red", "green", "blue", "nir") if k in bands} or bands
        parts.append(", ".join(f"{name}={index}" for name, index in shown.items()))
    if info.get("model"):
        parts.append(f"model {info['model']}")
    return " · ".join(parts)
