"""Display styles for the outputs: a true-colour composite stretched on the 2-98 % cumulative cut.

Main thread only (it touches layers that are in, or about to be in, the project).
"""

from __future__ import annotations

from qgis.core import (
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsSingleBandGrayRenderer,
)

CUT = (0.02, 0.98)
SAMPLE = 250_000


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


def _stretch(layer: QgsRasterLayer, band: int) -> QgsContrastEnhancement:
    provider = layer.dataProvider()
    enhancement = QgsContrastEnhancement(provider.dataType(band))
    low, high = provider.cumulativeCut(band, CUT[0], CUT[1], layer.extent(), SAMPLE)
    if not (high > low):
        stats = provider.bandStatistics(band)
        low, high = stats.minimumValue, stats.maximumValue
    enhancement.setMinimumValue(low)
    enhancement.setMaximumValue(high if high > low else low + 1)
    enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
    return enhancement


def apply_true_colour(layer: QgsRasterLayer) -> None:
    """Give a cloud-free raster a true-colour style, a single-band one (score) a grey stretch."""
    if layer is None or not layer.isValid():
        return
    provider = layer.dataProvider()
    bands = true_colour_bands(layer)
    if bands is None:
        renderer = QgsSingleBandGrayRenderer(provider, 1)
        renderer.setContrastEnhancement(_stretch(layer, 1))
    else:
        renderer = QgsMultiBandColorRenderer(provider, *bands)
        renderer.setRedContrastEnhancement(_stretch(layer, bands[0]))
        renderer.setGreenContrastEnhancement(_stretch(layer, bands[1]))
        renderer.setBlueContrastEnhancement(_stretch(layer, bands[2]))
    layer.setRenderer(renderer)
    layer.setCustomProperty("viser_cr/style", "true-colour" if bands else "grey")
    layer.triggerRepaint()


class TrueColourPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles an output when the Processing GUI loads it into the project (main thread)."""

    def __init__(self, name: str | None = None):
        super().__init__()
        self.name = name

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        if isinstance(layer, QgsRasterLayer):
            if self.name:
                layer.setName(self.name)
            apply_true_colour(layer)


# PyQGIS does not keep Python post-processors alive: hold them here.
_POST_PROCESSORS: list[TrueColourPostProcessor] = []


def style_on_load(context, path: str | None, name: str | None = None) -> None:
    """When the run loads ``path`` into the project (Toolbox runs), style it in true colour."""
    if not path or not context.willLoadLayerOnCompletion(path):
        return
    processor = TrueColourPostProcessor(name)
    del _POST_PROCESSORS[:-16]  # keep the last few; older runs have finished
    _POST_PROCESSORS.append(processor)
    details = context.layerToLoadOnCompletionDetails(path)
    if name:
        details.name = name
    details.setPostProcessor(processor)
