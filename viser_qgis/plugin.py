"""The QGIS plugin: registers the Processing provider and, in the desktop GUI, the dock widget.

The dock's action sits in the Raster menu (Raster > VISER-CR > Cloud removal panel) and on the
Raster toolbar, as the plugin's category (Raster) says.

qgis_process calls ``classFactory(None)`` and then only ``initProcessing()``; the desktop calls
``initGui()``. ``unload()`` removes everything both added, so a plugin reload leaves nothing behind.
"""

from __future__ import annotations

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from . import i18n
from .algorithm_base import ICON_PATH
from .i18n import tr
from .provider import ViserProvider

MENU = "&VISER-CR"  # the submenu of the Raster menu


class ViserCrPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider: ViserProvider | None = None
        self.action: QAction | None = None
        self.dock = None
        self.translator = i18n.install_translator()

    # ------------------------------------------------------------------------------- Processing
    def initProcessing(self):  # noqa: N802
        if self.provider is None:
            provider = ViserProvider()
            # False when another instance already registered "viser" (the registry then owns and
            # discards this one): never touch it again.
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider

    # ------------------------------------------------------------------------------------- GUI
    def initGui(self):  # noqa: N802
        self.initProcessing()
        if self.iface is None:
            return
        self.action = QAction(QIcon(str(ICON_PATH)), tr("Cloud removal panel"), self.iface.mainWindow())
        self.action.setObjectName("viserCrDockAction")
        self.action.setCheckable(True)
        self.action.setToolTip(tr("Show the VISER-CR cloud removal panel"))
        self.action.toggled.connect(self.show_dock)
        self.iface.addPluginToRasterMenu(MENU, self.action)
        self.iface.addRasterToolBarIcon(self.action)

    def show_dock(self, visible: bool = True):
        if self.iface is None:
            return None
        if self.dock is None:
            if not visible:
                return None
            from .dock import ViserDockWidget

            self.dock = ViserDockWidget(self.iface, self.iface.mainWindow())
            self.dock.setObjectName("ViserCrDock")
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            self.dock.visibilityChanged.connect(self._dock_visibility_changed)
        self.dock.setVisible(visible)
        if visible:
            self.dock.raise_()
        return self.dock

    def _dock_visibility_changed(self, visible: bool):
        if self.action is not None and self.action.isChecked() != visible:
            self.action.blockSignals(True)
            self.action.setChecked(visible)
            self.action.blockSignals(False)

    # ---------------------------------------------------------------------------------- unload
    def unload(self):
        if self.dock is not None:
            try:
                self.dock.visibilityChanged.disconnect(self._dock_visibility_changed)
            except TypeError:
                pass
            self.dock.shutdown()
            remove = getattr(self.iface, "removeDockWidget", None)
            if remove is not None:
                remove(self.dock)
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None
        if self.action is not None:
            try:
                self.action.toggled.disconnect(self.show_dock)
            except TypeError:
                pass
            self.iface.removePluginRasterMenu(MENU, self.action)
            self.iface.removeRasterToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        i18n.remove_translator(self.translator)
        self.translator = None
