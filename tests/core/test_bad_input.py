"""Bad input (issue 2, section 6): each case gives a clear error of the right class, and nothing is
lost: the inputs keep their checksums and no file (temporary or final) is left in the output folder.
"""

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.warp import calculate_default_transform, reproject
from rasters import write_raster

from viser_cr.core.device import resolve_device
from viser_cr.core.errors import Cancelled, DeviceError, InputError, OutputError, WeightsError
from viser_cr.core.pipeline import CloudRemovalRequest, remove_clouds
from viser_cr.core.sensors import BandFacts, resolve

S2_STACK = ["ts_s2_ImgNo_5_2018-03-07_64.tif", "ts_s2_ImgNo_7_2018-04-01_64.tif", "ts_s2_ImgNo_9_2018-04-26_64.tif"]


def snapshot(folder: Path) -> dict:
    """File name -> sha256 of everything in a folder (hidden files included)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def work(tmp_path, fixtures_dir):
    """A folder with copies of the fixtures; ``check()`` asserts that nothing changed in it."""
    for path in fixtures_dir.glob("*.tif"):
        shutil.copy(path, tmp_path / path.name)

    class Work:
        folder = tmp_path
        before = None

        def freeze(self):
            self.before = snapshot(tmp_path)

        def check(self):
            assert snapshot(tmp_path) == self.before

    work = Work()
    work.freeze()
    return work


def run(work, inputs, output="out.tif", **options):
    """remove_clouds on files of the work folder; the error it raises goes to the caller."""
    inputs = [work.folder / name for name in inputs]
    output = work.folder / output if output else None
    return remove_clouds(CloudRemovalRequest(inputs, output, **options))


def expect(work, error, match, inputs, **options):
    with pytest.raises(error, match=match):
        run(work, inputs, **options)
    work.check()


# -------------------------------------------------------------------------------------------- inputs


def test_not_a_raster(work, tiny_models_dir):
    (work.folder / "notes.tif").write_text("this is not an image\n")
    work.freeze()
    expect(work, InputError, "notes.tif is not a raster GDAL can read", ["notes.tif"], models_dir=tiny_models_dir)


def test_missing_file(work, tiny_models_dir):
    expect(work, InputError, "input raster not found: .*nothere.tif", ["nothere.tif"], models_dir=tiny_models_dir)


def test_zero_bands(work, tiny_models_dir):
    (work.folder / "zero.vrt").write_text('<VRTDataset rasterXSize="10" rasterYSize="10"></VRTDataset>\n')
    work.freeze()
    expect(work, InputError, "zero.vrt is not a raster GDAL can read .*bands", ["zero.vrt"],
           models_dir=tiny_models_dir)
    facts = BandFacts("x.tif", 0, "uint8", [], [], {}, [], [], [])
    with pytest.raises(InputError, match="no bands"):
        resolve(facts)


def test_one_band(work, tiny_models_dir):
    write_raster(work.folder / "grey.tif", np.full((1, 32, 32), 100, dtype=np.uint8))
    work.freeze()
    expect(work, InputError, r"grey.tif has 1 band\(s\) but the model needs 3", ["grey.tif"],
           models_dir=tiny_models_dir)


def test_fewer_bands_than_the_model_needs(work, tiny_models_dir):
    expect(work, InputError, r"has 3 band\(s\) but the model needs 4 \(red, green, blue, nir\)",
           ["landsat7_rgb8_collar_96.tif"], models_dir=tiny_models_dir, model="tiny-rgbn")


def test_band_index_out_of_range(work, tiny_models_dir):
    expect(work, InputError, r"band number\(s\) 14 out of range: .* 13 band\(s\)", ["s2l1c_cloudy_96.tif"],
           models_dir=tiny_models_dir, bands=[4, 3, 2, 14])


def test_all_nodata(work, tiny_models_dir):
    write_raster(work.folder / "empty.tif", np.zeros((3, 40, 40), dtype=np.uint8), nodata=0)
    work.freeze()
    expect(work, InputError, "holds only nodata", ["empty.tif"], models_dir=tiny_models_dir)


def test_all_nan(work, tiny_models_dir):
    write_raster(work.folder / "nan.tif", np.full((4, 20, 20), np.nan, dtype=np.float32))
    work.freeze()
    expect(work, InputError, "holds only nodata .*NaN", ["nan.tif"], models_dir=tiny_models_dir)


@pytest.mark.parametrize("height, width", [(1, 1), (7, 3)])
def test_tiny_rasters(work, tiny_models_dir, height, width):
    write_raster(work.folder / "small.tif", np.full((4, height, width), 1234, dtype=np.uint16))
    work.freeze()
    result = run(work, ["small.tif"], models_dir=tiny_models_dir, sensor="s2-l2a", score_output=work.folder / "s.tif")
    with rasterio.open(result.output) as dst:
        assert dst.shape == (height, width) and dst.count == 4
        assert dst.transform == from_origin(500000, 5000000, 10, 10)
    assert snapshot(work.folder)["small.tif"] == work.before["small.tif"]


def test_nan_and_inf_values(work, tiny_models_dir):
    data = np.random.default_rng(0).uniform(0.02, 0.4, (4, 48, 48)).astype(np.float32)
    data[0, 5, 5], data[1, 10, 20], data[2, 30, 30] = np.nan, np.inf, -np.inf
    write_raster(work.folder / "float.tif", data)
    work.freeze()
    result = run(work, ["float.tif"], models_dir=tiny_models_dir)
    assert result.sensor == "reflectance"
    with rasterio.open(result.output) as dst:
        out = dst.read()
        assert dst.dtypes[0] == "float32" and np.isnan(dst.nodata)
    bad = ~np.isfinite(data).all(axis=0)
    assert np.isnan(out[:, bad]).all() and np.isfinite(out[:, ~bad]).all()


def test_uint16_with_unknown_scaling(work, tiny_models_dir):
    expect(work, InputError, "cannot tell how to turn the uint16 values .*--sensor landsat-c2l2.*--scale S --offset O",
           ["landsat8_bgr_160x128.tif"], models_dir=tiny_models_dir)


def test_stack_with_non_overlapping_extents(work, tiny_models_dir):
    with rasterio.open(work.folder / S2_STACK[1]) as src:
        profile = dict(src.profile, transform=src.transform * rasterio.Affine.translation(5000, 0))
        data = src.read()
    with rasterio.open(work.folder / "far.tif", "w", **profile) as dst:
        dst.write(data)
    work.freeze()
    expect(work, InputError, r"input 2 \(far.tif\) does not overlap the reference raster",
           [S2_STACK[0], "far.tif", S2_STACK[2]], models_dir=tiny_models_dir)


def test_stack_with_mixed_crs_works(work, tiny_models_dir):
    with rasterio.open(work.folder / S2_STACK[2]) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height,
                                                               *src.bounds)
        profile = dict(src.profile, crs="EPSG:3857", transform=transform, width=width, height=height)
        with rasterio.open(work.folder / "mercator.tif", "w", **profile) as dst:
            for band in range(1, src.count + 1):
                reproject(rasterio.band(src, band), rasterio.band(dst, band))
    work.freeze()
    result = run(work, [S2_STACK[0], S2_STACK[1], "mercator.tif"], models_dir=tiny_models_dir)
    with rasterio.open(result.output) as dst, rasterio.open(work.folder / S2_STACK[0]) as ref:
        assert (dst.crs, dst.transform, dst.shape) == (ref.crs, ref.transform, ref.shape)


# ------------------------------------------------------------------------------------------- outputs


def test_output_folder_missing(work, tiny_models_dir):
    expect(work, OutputError, "output folder does not exist", ["rgbn8_96.tif"], output="no/such/dir/out.tif",
           models_dir=tiny_models_dir)


def test_output_folder_is_a_file(work, tiny_models_dir):
    expect(work, OutputError, "output folder .*rgbn8_96.tif is a file, not a folder: choose a path inside",
           ["rgbn8_96.tif"], output="rgbn8_96.tif/out.tif", models_dir=tiny_models_dir)
    expect(work, OutputError, "rgbn8_96.tif, above the output folder, is a file", ["rgbn8_96.tif"],
           output="rgbn8_96.tif/sub/out.tif", models_dir=tiny_models_dir)


def test_output_folder_read_only(work, tiny_models_dir):
    locked = work.folder / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable here "
                        "(the path-under-a-file case covers an unwritable folder)")
        expect(work, OutputError, "not writable", ["rgbn8_96.tif"], output="locked/out.tif",
               models_dir=tiny_models_dir)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("output", ["rgbn8_96.tif", "../{folder}/rgbn8_96.tif", "link.tif"])
def test_output_is_the_input(work, tiny_models_dir, output):
    (work.folder / "link.tif").symlink_to(work.folder / "rgbn8_96.tif")
    work.freeze()
    output = output.format(folder=work.folder.name)
    expect(work, OutputError, "is also an input", ["rgbn8_96.tif"], output=output, models_dir=tiny_models_dir)


def test_score_output_same_as_output(work, tiny_models_dir):
    expect(work, OutputError, "score output .*out.tif is also an input", ["rgbn8_96.tif"],
           models_dir=tiny_models_dir, score_output=work.folder / "out.tif")


def test_output_not_geotiff(work, tiny_models_dir):
    expect(work, OutputError, "give it a .tif name", ["rgbn8_96.tif"], output="out.png",
           models_dir=tiny_models_dir)


# ------------------------------------------------------------------------------------------- weights


def copy_model(source_dir: Path, target_dir: Path, name: str) -> Path:
    for suffix in (".json", ".safetensors"):
        shutil.copy(source_dir / f"{name}{suffix}", target_dir / f"{name}{suffix}")
    return target_dir / f"{name}.json"


def test_corrupt_weights(work, tiny_models_dir, tmp_path_factory):
    models = tmp_path_factory.mktemp("corrupt")
    copy_model(tiny_models_dir, models, "tiny-rgbn")
    weights = models / "tiny-rgbn.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    expect(work, WeightsError, "tiny-rgbn.safetensors", ["rgbn8_96.tif"], models_dir=models)


def test_weights_of_another_architecture(work, tiny_models_dir, tmp_path_factory):
    """A card whose weights file was saved for another network."""
    models = tmp_path_factory.mktemp("mismatch")
    card_path = copy_model(tiny_models_dir, models, "tiny-rgbn")
    other = tiny_models_dir / "tiny-rgbn-l3.safetensors"
    shutil.copy(other, models / "tiny-rgbn.safetensors")
    card = json.loads(card_path.read_text())
    card["sha256"] = hashlib.sha256(other.read_bytes()).hexdigest()
    card_path.write_text(json.dumps(card))
    expect(work, WeightsError, "another architecture", ["rgbn8_96.tif"], models_dir=models)


# ----------------------------------------------------------------------------------- cancel, settings


def test_cancel_mid_run(work, tiny_models_dir):
    polls = []

    def is_cancelled():
        polls.append(1)
        return len(polls) >= 3

    with pytest.raises(Cancelled, match="nothing was written"):
        remove_clouds(CloudRemovalRequest([work.folder / "s2l1c_cloudy_96.tif"], work.folder / "out.tif",
                                          models_dir=tiny_models_dir, tile_size=32, overlap=8, batch_size=2,
                                          score_output=work.folder / "score.tif"),
                      is_cancelled=is_cancelled)
    assert len(polls) == 3
    work.check()


def test_unknown_sensor(work, tiny_models_dir):
    expect(work, InputError, "unknown sensor 'sentinel-9'", ["rgbn8_96.tif"], models_dir=tiny_models_dir,
           sensor="sentinel-9")


@pytest.mark.parametrize("device, match", [("tpu", "unknown device 'tpu'"), ("cuda:7", "cuda:7")])
def test_unknown_or_missing_device(work, tiny_models_dir, device, match):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    expect(work, DeviceError, match, ["rgbn8_96.tif"], models_dir=tiny_models_dir, device=device)


def test_bad_tile_size(work, tiny_models_dir):
    expect(work, InputError, "overlap must be between 0 and tile size", ["rgbn8_96.tif"],
           models_dir=tiny_models_dir, tile_size=32, overlap=32)


def test_cloud_mask_without_keep_clear(work, tiny_models_dir):
    expect(work, InputError, "--no-keep-clear", ["rgbn8_96.tif"], models_dir=tiny_models_dir, keep_clear=False,
           cloud_mask=work.folder / "rgbn8_96.tif")


def test_warnings_are_not_raised_for_rasters_without_crs(work, tiny_models_dir):
    data = np.full((3, 20, 20), 90, dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(work.folder / "plain.png", "w", driver="PNG", width=20, height=20, count=3,
                           dtype="uint8") as dst:
            dst.write(data)
    work.freeze()
    with warnings.catch_warnings():
        warnings.simplefilter("error", rasterio.errors.NotGeoreferencedWarning)
        result = run(work, ["plain.png"], models_dir=tiny_models_dir)
    assert result.output.exists()


def test_device_names_and_threads(work, tiny_models_dir):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for name in ("gpu0", "cuda:x", "cuda:-1", "metal"):
        with pytest.raises(DeviceError, match="unknown device"):
            resolve_device(name)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU.*--device cpu"):
            resolve_device("cuda")
    expect(work, DeviceError, "threads must be at least 1", ["rgbn8_96.tif"], models_dir=tiny_models_dir, threads=0)
