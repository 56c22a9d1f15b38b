"""The GPU training pack (training.pack, training/gpu_train.sh): what a config's datasets read, packed
so that a Python without GDAL (a lent GPU machine) trains on exactly the same samples."""

import sys

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("rasterio")
pytest.importorskip("tifffile")

from datagen import make_clear_sources, make_sen12mscr

from viser_cr.core.errors import InputError
from viser_cr.training.config import load_config
from viser_cr.training.datasets import build_dataset
from viser_cr.training.pack import pack

TINY_MODEL = dict(width=8, blocks=[1, 1, 1], heads=[1, 2, 4], refine_blocks=1, sr_iterations=1)


def _config(tmp_path, data_root, **train_extra):
    cfg = {
        "name": "pack-test",
        "model": TINY_MODEL,
        "data": {
            "root": str(data_root),
            "bands": ["red", "green", "blue", "nir"],
            "patch_size": 32,
            "train": [
                {"type": "synthetic", "length": 6, "sources": [
                    {"files": "clear/s2/*.tif", "layout": "s2-13"},
                    {"files": "clear/rgbn.tif", "layout": "rgbn8", "window": [0.0, 0.0, 0.5, 1.0]},
                ]},
                {"type": "pairs", "root": "pairs", "include": ["^ROIs1868_summer_135_"]},
            ],
            "test": [{"type": "pairs", "root": "pairs", "include": ["^ROIs1970_fall_136_"]}],
        },
        "train": {"steps": 1, "batch_size": 2, "num_workers": 0, "threads": 1, "device": "cpu", "log_every": 1,
                  **train_extra},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "shared"
    make_clear_sources(root / "clear")
    make_sen12mscr(root / "pairs")
    return root


def _samples(config_path, count=4):
    ds = build_dataset(load_config(config_path)["data"], "train", 0)
    return [ds[i] for i in range(count)] + [ds[len(ds) - 1]]


def test_a_packed_config_gives_the_same_samples_without_gdal(tmp_path, data_root, monkeypatch):
    config = _config(tmp_path, data_root)
    out = tmp_path / "work" / ".gpu"
    sizes = pack(config, out)
    packed = yaml.safe_load((out / "config.yaml").read_text())
    assert packed["data"]["root"] == str(out / "data") and packed["data"]["test"] == []
    # only the training data: the test pairs' scene is not packed
    assert not any("ROIs1970_fall_136" in name for name in sizes)
    assert "data/pairs/cloudy/ROIs1868_summer_135_p100.tif" in sizes

    import rasterio

    with rasterio.open(out / "data" / "clear" / "s2" / "ROIs2017_winter_s2_84_p0.tif") as ds:
        bands = ds.read()
    # R, G, B, NIR (B4, B3, B2, B8) are kept, the other 9 Sentinel-2 bands are zeros
    assert all(bands[i].any() for i in (1, 2, 3, 7)) and not bands[[0, 4, 5, 6, 8, 9, 10, 11, 12]].any()
    with rasterio.open(out / "data" / "clear" / "rgbn.tif") as ds:
        rgbn = ds.read()
    assert rgbn[:, :, :48].any() and not rgbn[:, :, 48:].any()  # outside the window read: zeros

    expected = _samples(config)
    monkeypatch.setitem(sys.modules, "rasterio", None)  # as on the GPU machine: no GDAL, tifffile reads
    got = _samples(out / "config.yaml")
    for e, g in zip(expected, got, strict=True):
        assert e["name"] == g["name"]
        assert torch.equal(e["input"], g["input"]) and torch.equal(e["target"], g["target"])
        assert torch.equal(e["mask"], g["mask"])


def test_a_packed_config_trains_without_gdal(tmp_path, data_root, monkeypatch, tiny_models_dir):
    from viser_cr.training.train import main as train_main

    out = tmp_path / ".gpu"
    pack(_config(tmp_path, data_root), out)
    monkeypatch.setitem(sys.modules, "rasterio", None)
    run = tmp_path / "run"
    assert train_main(["--config", str(out / "config.yaml"), "--output-dir", str(run)]) == 0
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 1


def test_a_pack_over_budget_fails_and_leaves_the_previous_pack(tmp_path, data_root):
    config = _config(tmp_path, data_root)
    out = tmp_path / ".gpu"
    pack(config, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(InputError, match=r"over the 0\.01 MiB budget; the biggest: data/"):
        pack(config, out, budget_mib=0.01)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not (tmp_path / ".gpu.partial").exists()


def test_dates_read_onto_one_grid_cannot_be_packed(tmp_path, data_root):
    config = _config(tmp_path, data_root)
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["train"] = [{"type": "synthetic", "length": 2, "sources": [
        {"files": "pairs/clear/ROIs1868_summer_135_*.tif", "layout": "s2-13", "dates": True}]}]
    config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(InputError, match="dates: true.*no GDAL"):
        pack(config, tmp_path / ".gpu")


def test_the_tifffile_reader_gives_what_rasterio_gives(tmp_path, monkeypatch):
    from rasters import write_raster

    from viser_cr.training.datasets.common import LAYOUTS, read_reflectance

    rng = np.random.default_rng(0)
    dn = rng.integers(1, 255, (4, 20, 30)).astype(np.uint8)
    dn[:, :3] = 0  # a nodata collar (layout naip-rgbn8: 0 = nodata)
    for interleave in ("pixel", "band"):
        path = write_raster(tmp_path / f"{interleave}.tif", dn, interleave=interleave, compress="deflate", predictor=2)
        expected = read_reflectance(path, LAYOUTS["naip-rgbn8"], ("nir", "red"), window=[0.1, 0.0, 0.9, 1.0])
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, "rasterio", None)
            got = read_reflectance(path, LAYOUTS["naip-rgbn8"], ("nir", "red"), window=[0.1, 0.0, 0.9, 1.0])
        assert np.array_equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
        assert not got[1][:3].any() and got[1][3:].all()
