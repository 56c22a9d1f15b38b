"""Helpers shared by the QGIS tests (imported by name: tests/qgis is on sys.path)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time
import zipfile
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[2]


def raster_facts(path) -> dict:
    """CRS, extent, size, band count and descriptions of a raster (through GDAL, as QGIS reads it)."""
    from osgeo import gdal

    ds = gdal.Open(str(path))
    assert ds is not None, path
    gt = ds.GetGeoTransform()
    facts = {
        "srs": ds.GetSpatialRef().ExportToWkt() if ds.GetSpatialRef() else "",
        "size": (ds.RasterXSize, ds.RasterYSize),
        "transform": tuple(round(v, 9) for v in gt),
        "count": ds.RasterCount,
        "descriptions": [ds.GetRasterBand(i + 1).GetDescription() for i in range(ds.RasterCount)],
        "dtype": gdal.GetDataTypeName(ds.GetRasterBand(1).DataType),
    }
    ds = None
    return facts


def assert_same_grid(output, reference) -> dict:
    out, ref = raster_facts(output), raster_facts(reference)
    from osgeo import osr

    a, b = osr.SpatialReference(), osr.SpatialReference()
    a.ImportFromWkt(out["srs"])
    b.ImportFromWkt(ref["srs"])
    assert a.IsSame(b), (out["srs"], ref["srs"])
    assert out["size"] == ref["size"]
    assert out["transform"] == pytest.approx(ref["transform"])
    return out


def make_wheel(directory: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel: ``<name>/__init__.py`` with ``__version__``."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}"\n',
        f"{dist}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: viser-cr-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    records = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        records.append(f"{path},sha256={digest},{len(text.encode())}")
    records.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(records) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


class RecordingIface:
    """The parts of QgisInterface that the plugin's GUI uses, recording the menu and toolbar calls."""

    def __init__(self, iface):
        self.iface, self.calls = iface, []

    def __getattr__(self, name):
        if name in ("addPluginToRasterMenu", "removePluginRasterMenu", "addRasterToolBarIcon",
                    "removeRasterToolBarIcon", "addPluginToMenu", "addToolBarIcon", "removePluginMenu",
                    "removeToolBarIcon"):
            return lambda *args: self.calls.append((name, *args))
        return getattr(self.iface, name)


def wait_for(condition, timeout: float = 90.0, what: str = "the task") -> None:
    """Process Qt events until ``condition()`` holds (a task or a dialog's run finishing)."""
    from qgis.core import QgsApplication

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        QgsApplication.processEvents()
        time.sleep(0.01)


@contextlib.contextmanager
def message_log():
    """The (tag, level, message) triples QGIS's message log receives inside the block."""
    from qgis.core import QgsApplication

    messages: list[tuple[str, int, str]] = []

    def collect(message, tag, level):
        messages.append((tag, int(level), message))

    log = QgsApplication.messageLog()
    log.messageReceived.connect(collect)
    try:
        yield messages
        QgsApplication.processEvents()
    finally:
        log.messageReceived.disconnect(collect)
