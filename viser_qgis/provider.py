"""The Processing provider ``viser``: loads even when torch is missing (algorithms then say how to fix)."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithm_base import ICON_PATH
from .i18n import tr

PROVIDER_ID = "viser"
PROVIDER_NAME = "VISER-CR cloud removal"  # translated by name()


class ViserProvider(QgsProcessingProvider):
    def id(self):
        return PROVIDER_ID

    def name(self):
        return tr(PROVIDER_NAME)

    def longName(self):  # noqa: N802
        return f"{self.name()} ({_plugin_version()})"

    def icon(self):
        return QIcon(str(ICON_PATH))

    def svgIconPath(self):  # noqa: N802
        return str(ICON_PATH)

    def versionInfo(self):  # noqa: N802
        return _plugin_version()

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802
        return ["tif"]

    def defaultRasterFileExtension(self):  # noqa: N802
        return "tif"

    def loadAlgorithms(self):  # noqa: N802
        from .alg_cloudscore import CloudScoreAlgorithm
        from .alg_evaluate import EvaluateAlgorithm
        from .alg_removeclouds import RemoveCloudsAlgorithm
        from .alg_removecloudsstack import RemoveCloudsStackAlgorithm

        for algorithm in (RemoveCloudsAlgorithm(), RemoveCloudsStackAlgorithm(), CloudScoreAlgorithm(),
                          EvaluateAlgorithm()):
            self.addAlgorithm(algorithm)


def _plugin_version() -> str:
    from .algorithm_base import engine

    try:
        for line in (engine.PLUGIN_ROOT / "metadata.txt").read_text(encoding="utf-8").splitlines():
            if line.startswith("version="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return ""
