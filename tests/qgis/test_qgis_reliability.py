"""Issue 12 through Processing: a full disk fails the algorithm and keeps an existing output, a damaged
input is a clear QgsProcessingException, and no exception reaches Processing as a traceback."""

from __future__ import annotations

import hashlib
import resource
import signal

import numpy as np
import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback
from rasters import write_raster

pytestmark = pytest.mark.usefixtures("provider")


def run(algorithm: str, params: dict) -> dict:
    import processing

    return processing.run(algorithm, params, feedback=QgsProcessingFeedback())


def noise_raster(path, size=256, dtype="uint16"):
    data = np.random.default_rng(0).integers(200, 4000, (4, size, size)).astype(dtype)
    return write_raster(path, data, tiled=True, blockxsize=64, blockysize=64)


def test_full_disk_fails_the_algorithm_and_keeps_the_old_output(tmp_path, tiny_rgbn):
    source = noise_raster(tmp_path / "in.tif")
    out = tmp_path / "full"
    out.mkdir()
    old = noise_raster(out / "o.tif", size=16, dtype="uint8")
    before = hashlib.sha256(old.read_bytes()).hexdigest()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))   # as if the disk filled up at 200 kB
    try:
        with pytest.raises(QgsProcessingException, match=r"could not write .*o.tif: .*disk .*Nothing was written"):
            run("viser:removeclouds", {"INPUT": str(source), "MODEL_FILE": tiny_rgbn, "SENSOR": "s2-l2a",
                                       "CREATION_OPTIONS": "COMPRESS=NONE", "OUTPUT": str(out / "o.tif")})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".aux.xml")) == ["o.tif"]
    assert hashlib.sha256(old.read_bytes()).hexdigest() == before


def test_truncated_input_is_a_clear_processing_error(tmp_path, tiny_rgbn):
    source = noise_raster(tmp_path / "cut.tif")
    with open(source, "r+b") as handle:
        handle.truncate(source.stat().st_size // 2)
    with pytest.raises(QgsProcessingException, match=r"cannot read .*cut.tif, band\(s\) .*gdalinfo -checksum"):
        run("viser:removeclouds", {"INPUT": str(source), "MODEL_FILE": tiny_rgbn, "SENSOR": "s2-l2a",
                                   "OUTPUT": str(tmp_path / "o.tif")})
    assert not (tmp_path / "o.tif").exists()


def test_unexpected_exceptions_become_processing_exceptions(fixtures_dir, tiny_rgbn, tmp_path, monkeypatch):
    from viser_cr.core import pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(pipeline, "remove_clouds", broken)
    with pytest.raises(QgsProcessingException, match=r"failed unexpectedly \(RuntimeError: something nobody"):
        run("viser:removeclouds", {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"), "MODEL_FILE": tiny_rgbn,
                                   "OUTPUT": str(tmp_path / "o.tif")})
