"""Display styles: a true-colour composite stretched on QGIS's 2-98 % cumulative count cut, for the
outputs and, on request, for the input (so that before and after compare by toggling one layer); a
paletted style for a stack's source-date raster (one colour per input date, grey for the spatial fill).

Main thread only (it touches layers that are in, or about to be in, the project).
"""

from __future__ import annotations

from qgis.core import (
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsSingleBandGrayRenderer,
)
from qgis.PyQt.QtGui import QColor

from .i18n import tr

SAMPLE = 250_000  # pixels read for the cumulative cut
# Qualitative palette (Tableau 10): neighbouring dates stay tellable apart
DATE_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                "#9c755f", "#bab0ac")
SPATIAL_FILL_COLOUR = "#6f6f6f"


def band_descriptions(layer: QgsRasterLayer) -> list[str]:
    names = []
    try:
        from osgeo import gdal

        dataset = gdal.Open(layer.source().split("|")[0])
        if dataset is not None:
            names = [(dataset.GetRasterBand(i + 1).GetDescription() or "") for i in range(dataset.RasterCount)]
    except Exception:  # noqa: BLE001 - styling must never fail a run
        names = []
    if len(names) != layer.bandCount():
        names = [""] * layer.bandCount()
    return [name.strip().lower() for name in names]


def true_colour_bands(layer: QgsRasterLayer) -> tuple[int, int, int] | None:
    """1-based (red, green, blue) band numbers from the band descriptions, else bands 1, 2, 3."""
    count = layer.bandCount()
    if count < 3:
        return None
    names = band_descriptions(layer)
    found = {}
    for index, name in enumerate(names, start=1):
        for colour in ("red", "green", "blue"):
            if colour not in found and (name == colour or name.startswith(colour + " ") or name.endswith(" " + colour)):
                found[colour] = index
    if len(found) == 3:
        return found["red"], found["green"], found["blue"]
    return 1, 2, 3


def apply_true_colour(layer: QgsRasterLayer, bands: tuple[int, int, int] | None = None) -> None:
    """A true-colour composite (a grey one for a single band), stretched on QGIS's cumulative count cut
    (2-98 %, QGIS's default), as the layer style panel would set it. ``bands``: the red, green and blue
    band numbers (default: from the band descriptions, else 1, 2, 3)."""
    if layer is None or not layer.isValid():
        return
    provider = layer.dataProvider()
    bands = bands or true_colour_bands(layer)
    if bands is None:
        layer.setRenderer(QgsSingleBandGrayRenderer(provider, 1))
    else:
        layer.setRenderer(QgsMultiBandColorRenderer(provider, *bands))
    layer.setContrastEnhancement(QgsContrastEnhancement.StretchToMinimumMaximum,
                                 QgsRasterMinMaxOrigin.CumulativeCut, layer.extent(), SAMPLE)
    layer.setCustomProperty("viser_cr/style", "true-colour" if bands else "grey")
    layer.triggerRepaint()


def apply_source_dates(layer: QgsRasterLayer, labels: list[str]) -> None:
    """One class per input date (``labels`` in input order, value = input number), 0 = spatial fill."""
    classes = [QgsPalettedRasterRenderer.Class(0, QColor(SPATIAL_FILL_COLOUR), tr("no date (spatial fill)"))]
    for number, label in enumerate(labels, start=1):
        colour = QColor(DATE_COLOURS[(number - 1) % len(DATE_COLOURS)])
        classes.append(QgsPalettedRasterRenderer.Class(number, colour, f"{number}: {label}"))
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    layer.setCustomProperty("viser_cr/style", "source-dates")
    layer.triggerRepaint()


def mark_result(layer: QgsRasterLayer) -> None:
    """Flag a layer the plugin wrote: the dock does not offer it as an input date."""
    layer.setCustomProperty("viser_cr/result", True)


def is_result(layer: QgsRasterLayer) -> bool:
    return str(layer.customProperty("viser_cr/result", False)).lower() == "true"


class TrueColourPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles an output when the Processing GUI loads it into the project (main thread)."""

    def __init__(self, name: str | None = None, date_labels: list[str] | None = None):
        super().__init__()
        self.name = name
        self.date_labels = date_labels

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        if isinstance(layer, QgsRasterLayer):
            if self.name:
                layer.setName(self.name)
            if self.date_labels is not None:
                apply_source_dates(layer, self.date_labels)
            else:
                apply_true_colour(layer)
            mark_result(layer)


# PyQGIS does not keep Python post-processors alive: hold them here.
_POST_PROCESSORS: list[TrueColourPostProcessor] = []


def style_on_load(context, path: str | None, name: str | None = None, date_labels: list[str] | None = None) -> None:
    """When the run loads ``path`` into the project (Toolbox runs), style it in true colour (with
    ``date_labels``: as a source-date raster)."""
    if not path or not context.willLoadLayerOnCompletion(path):
        return
    processor = TrueColourPostProcessor(name, date_labels)
    del _POST_PROCESSORS[:-16]  # keep the last few; older runs have finished
    _POST_PROCESSORS.append(processor)
    details = context.layerToLoadOnCompletionDetails(path)
    if name:
        details.name = name
    details.setPostProcessor(processor)
