"""VISER-CR cloud removal: QGIS plugin entry point.

The repository root is the plugin folder, installed into QGIS as ``viser_cr``. Nothing heavy is
imported here: qgis_process imports every enabled plugin on each call.
"""


def classFactory(iface):  # noqa: N802 (QGIS's required name)
    from .viser_qgis.plugin import ViserCrPlugin

    return ViserCrPlugin(iface)
