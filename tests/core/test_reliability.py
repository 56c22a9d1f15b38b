"""Reliability (issue 12): failed writes fail the run and lose nothing, signals clean up, damaged and odd
inputs are refused with a message that says what to do, numeric parameters are validated once in the
engine, metadata is kept. Every case is listed in docs/reliability.md.

Full disks are simulated without root: the child process gets a file-size limit (RLIMIT_FSIZE) with
SIGXFSZ ignored, so that write() fails with EFBIG as it fails with ENOSPC on a full disk.
"""

import hashlib
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasters import CRS, TRANSFORM, write_raster

from viser_cr.core.errors import InputError, OutputError
from viser_cr.core.pipeline import CloudRemovalRequest, remove_clouds

ROOT = Path(__file__).resolve().parents[2]


def noise_raster(path, size=256, seed=0):
    """A 4-band uint16 raster of noise (reflectance x 10000): its outputs barely compress."""
    data = np.random.default_rng(seed).integers(200, 4000, (4, size, size), dtype=np.uint16)
    return write_raster(path, data)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli_command() -> list[str]:
    script = Path(sys.executable).parent / "viser-cr"
    return [str(script)] if script.exists() else [sys.executable, "-m", "viser_cr.core.cli"]


def child_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")


def file_size_limit(limit: int):
    """preexec_fn: files of the child may not grow past ``limit`` bytes; write() then fails with EFBIG."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    return apply


# ---------------------------------------------------------------------------------------- full disk


def test_full_disk_fails_the_cli_run_and_keeps_the_old_output(tmp_path, tiny_models_dir):
    source = noise_raster(tmp_path / "in.tif")
    out = tmp_path / "full"
    out.mkdir()
    old = write_raster(out / "o.tif", np.full((4, 8, 8), 7, dtype=np.float32))
    before = digest(old)
    done = subprocess.run(
        [*cli_command(), "remove-clouds", str(source), "-o", str(out / "o.tif"), "--float32", "--score-out",
         str(out / "s.tif"), "--models-dir", str(tiny_models_dir), "--sensor", "s2-l2a", "--device", "cpu",
         "--threads", "1", "--quiet"],
        capture_output=True, text=True, timeout=300, env=child_env(), preexec_fn=file_size_limit(200_000))
    assert done.returncode == 5, done.stderr
    assert "could not write" in done.stderr and str(out) in done.stderr and "disk" in done.stderr
    assert "Free space" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["o.tif"]      # no temporary file, no s.tif
    assert digest(old) == before


SHARED_WRITE = """
import sys
import threading
import time
from pathlib import Path
import numpy as np, rasterio
from rasterio.transform import from_origin

from viser_cr.core.errors import InputError, OutputError
from viser_cr.core.pipeline import CloudRemovalRequest, remove_clouds
from viser_cr.core import raster as rio
from viser_cr.core.errors import OutputError

folder, cog = Path(sys.argv[1]), sys.argv[2] == "cog"
grid = rio.Grid("EPSG:32633", from_origin(500000, 5000000, 10, 10), 512, 512)
outputs = rio.OutputSet()
with rasterio.Env():
    try:
        for name in ("a.tif", "b.tif"):
            profile = rio.output_profile(grid, 3, "float32", float("nan"))
            outputs.add(rio.OutputFile(folder / name, profile, cog=cog, failures=outputs.failures))
        rng = np.random.default_rng(0)
        for output in outputs.files:
            for top in range(0, 512, 256):
                output.write(rng.random((3, 256, 512), dtype=np.float32), top)
        outputs.commit()
    except OutputError as error:
        outputs.discard()
        print(error)
        sys.exit(5)
print("committed")
"""


@pytest.mark.parametrize("cog", ["gtiff", "cog"])
def test_full_disk_through_the_shared_write_path(tmp_path, cog):
    old = write_raster(tmp_path / "a.tif", np.ones((1, 4, 4), dtype=np.uint8))
    before = digest(old)
    done = subprocess.run([sys.executable, "-c", SHARED_WRITE, str(tmp_path), cog], capture_output=True, text=True,
                          timeout=120, env=child_env(), cwd=ROOT.parent, preexec_fn=file_size_limit(300_000))
    assert done.returncode == 5, done.stdout + done.stderr
    assert f"could not write {tmp_path}" in done.stdout and "File too large" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]
    assert digest(old) == before


def test_write_failure_message_names_the_disk(tmp_path):
    from viser_cr.core.raster import write_failure

    message = str(write_failure(tmp_path / "o.tif", "TIFFAppendToStrip:Write error; No space left on device"))
    assert "the disk / is full" in message or "is full" in message
    assert str(tmp_path / "o.tif") in message and "MiB free" in message and "choose an output folder" in message


# ------------------------------------------------------------------------------------------- signals


def wait_for(predicate, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_termination_signals_clean_up(tmp_path, tiny_models_dir, signum, code):
    source = noise_raster(tmp_path / "in.tif", size=1024)
    out = tmp_path / "out"
    out.mkdir()
    child = subprocess.Popen(
        [*cli_command(), "remove-clouds", str(source), "-o", str(out / "o.tif"), "--score-out", str(out / "s.tif"),
         "--models-dir", str(tiny_models_dir), "--sensor", "s2-l2a", "--device", "cpu", "--threads", "1",
         "--tile", "16", "--overlap", "0", "--batch", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        started = wait_for(lambda: len(list(out.iterdir())) == 2 or child.poll() is not None)
        assert started and child.poll() is None, "the run ended before it could be signalled"
        child.send_signal(signum)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == code, err
    assert err.rstrip().splitlines()[-1] == f"viser-cr: cancelled by {signal.Signals(signum).name}: nothing was written."
    assert list(out.iterdir()) == []


def test_usage_errors_are_one_line_with_the_valid_values(tmp_path):
    for args, expected in ((["--sensor", "modis"], "invalid choice: 'modis' (choose from 'auto', 's2-l1c'"),
                           (["--bands", "4.5,3"], "bands must be comma-separated band numbers like 4,3,2,8")):
        done = subprocess.run([*cli_command(), "remove-clouds", "in.tif", "-o", str(tmp_path / "o.tif"), *args],
                              capture_output=True, text=True, timeout=60, env=child_env())
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("viser-cr: error: argument ")
        assert expected in done.stderr and "--help" in done.stderr


# ---------------------------------------------------------------------------------- damaged and odd inputs


def truncated_geotiff(path: Path) -> Path:
    """A tiled GeoTIFF cut in half: the header and tile index are intact, the last tiles are missing."""
    data = np.random.default_rng(1).integers(200, 4000, (4, 256, 256), dtype=np.uint16)
    write_raster(path, data, tiled=True, blockxsize=64, blockysize=64)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    return path


def vrt_with_missing_source(path: Path) -> Path:
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{b}"><SimpleSource><SourceFilename relativeToVRT="1">gone.tif'
        f"</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>" for b in (1, 2, 3, 4))
    path.write_text(f'<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>{CRS}</SRS>'
                    f"<GeoTransform>500000,10,0,5000000,0,-10</GeoTransform>{bands}</VRTDataset>\n")
    return path


def run(inputs, output, models, **options):
    return remove_clouds(CloudRemovalRequest([str(i) for i in inputs], output, models_dir=models, device="cpu",
                                             **options))


def test_truncated_geotiff_is_bad_input(tmp_path, tiny_models_dir):
    source = truncated_geotiff(tmp_path / "cut.tif")
    with pytest.raises(InputError, match=r"cannot read .*cut.tif, band\(s\) 1, 2, 3, 4, rows .*IReadBlock failed at "
                                         r"X offset \d+, Y offset \d+.*damaged or incomplete.*gdalinfo -checksum"):
        run([source], tmp_path / "o.tif", tiny_models_dir, sensor="s2-l2a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif"]


def test_truncated_geotiff_exit_code_through_the_cli(tmp_path, tiny_models_dir, capsys):
    from viser_cr.core.cli import main

    source = truncated_geotiff(tmp_path / "cut.tif")
    code = main(["remove-clouds", str(source), "-o", str(tmp_path / "o.tif"), "--models-dir", str(tiny_models_dir),
                 "--sensor", "s2-l2a", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("viser-cr: error: cannot read ") and "internal error" not in err


def test_vrt_with_a_missing_source_is_bad_input(tmp_path, tiny_models_dir):
    source = vrt_with_missing_source(tmp_path / "stack.vrt")
    with pytest.raises(InputError, match=r"cannot read .*stack.vrt, band\(s\) .*gone.tif: No such file.*VRT"):
        run([source], tmp_path / "o.tif", tiny_models_dir, sensor="s2-l2a")


def test_long_output_names_keep_temporary_names_within_the_limit(tmp_path, tiny_models_dir, fixtures_dir):
    from viser_cr.core.raster import SIDECAR_ROOM, name_max, temporary_path

    limit = name_max(tmp_path)
    final = tmp_path / ("é" * 60 + "x" * (limit - 120 - 4) + ".tif")   # exactly the limit, in bytes
    assert len(os.fsencode(final.name)) == limit
    temp = temporary_path(final, ".cog")
    assert len(os.fsencode(temp.name)) <= limit - SIDECAR_ROOM and temp.name.endswith(".viser-tmp.tif")
    name = "o" * 236 + ".tif"                                           # the 240-character name of the issue
    result = run([fixtures_dir / "rgbn8_96.tif"], tmp_path / name, tiny_models_dir, cog=True,
                 score_output=tmp_path / ("s" * 236 + ".tif"))
    assert result.output.name == name and result.output.exists()
    with pytest.raises(OutputError, match=f"file name is {limit + 1} bytes long .* at most {limit}: choose a shorter"):
        run([fixtures_dir / "rgbn8_96.tif"], tmp_path / ("o" * (limit - 3) + ".tif"), tiny_models_dir)


@pytest.mark.parametrize("what", ["fifo", "device"])
def test_special_files_are_refused_before_gdal_opens_them(tmp_path, tiny_models_dir, what):
    if what == "fifo":
        path = tmp_path / "pipe.tif"
        os.mkfifo(path)
        match = "is not a regular file but a FIFO"
    else:
        path, match = Path("/dev/zero"), "is not a regular file but a character device"
    raised = []

    def attempt():   # in a thread: a regression that opens the FIFO blocks there, not the test run
        try:
            run([path], tmp_path / "o.tif", tiny_models_dir)
        except InputError as error:
            raised.append(str(error))

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "GDAL was given the special file and blocks on it"
    assert raised and re.search(match + r".*could block forever", raised[0])


def test_gdal_connection_strings_are_passed_to_gdal(tmp_path, tiny_models_dir, fixtures_dir):
    import zipfile

    with zipfile.ZipFile(tmp_path / "in.zip", "w") as archive:
        archive.write(fixtures_dir / "rgbn8_96.tif", "inside/rgbn8_96.tif")
    result = run([f"/vsizip/{tmp_path / 'in.zip'}/inside/rgbn8_96.tif"], tmp_path / "o.tif", tiny_models_dir)
    assert result.output.exists()
    with pytest.raises(InputError, match=r"in.zip is not a raster GDAL can read .*give /vsizip/"):
        run([tmp_path / "in.zip"], tmp_path / "o2.tif", tiny_models_dir)


# ------------------------------------------------------------------------------------ numeric parameters


@pytest.mark.parametrize("options, match", [
    (dict(scale=float("inf")), r"scale given must be a positive, finite number, got inf"),
    (dict(scale=-0.0001), r"scale given must be a positive, finite number, got -0.0001"),
    (dict(scale=0.0), r"scale given must be a positive, finite number, got 0"),
    (dict(offset=float("nan")), r"offset given must be a finite reflectance offset between -10 and 10, got nan"),
    (dict(offset=1e30), r"offset given must be a finite reflectance offset .* got 1e\+30"),
    (dict(scale=1.0, offset=-70000.0), r"offset given must be"),
    (dict(scale=1e-4, offset=-7.0), r"every uint16 value becomes a reflectance between -7 and -0.4.*outside 0..1"),
    (dict(tile_size=0), r"tile size must be an integer of at least 16 pixels, got 0"),
    (dict(tile_size=64.5), r"tile size must be a whole number, got 64.5"),
    (dict(tile_size=float("nan")), r"tile size must be a whole number"),
    (dict(overlap=-1), r"overlap must be between 0 and tile size - 1"),
    (dict(batch_size=0), r"batch size must be at least 1"),
])
def test_bad_numbers_are_refused_with_what_to_give(tmp_path, tiny_models_dir, options, match):
    source = noise_raster(tmp_path / "in.tif", size=64)
    with pytest.raises(InputError, match=match):
        run([source], tmp_path / "o.tif", tiny_models_dir, sensor="s2-l2a", **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_bad_scaling_in_the_file_metadata_is_refused(tmp_path, tiny_models_dir):
    source = noise_raster(tmp_path / "in.tif", size=32)
    with rasterio.open(source, "r+") as dst:
        dst.scales, dst.offsets = [-2.75e-5] * 4, [-0.2] * 4
    with pytest.raises(InputError, match=r"scale from the metadata of in.tif must be a positive.*--scale S"):
        run([source], tmp_path / "o.tif", tiny_models_dir)


def test_complex_input_is_refused_even_with_a_scale(tmp_path, tiny_models_dir):
    data = (np.random.default_rng(2).uniform(0.05, 0.3, (4, 32, 32)) * (1 + 1j)).astype(np.complex64)
    source = write_raster(tmp_path / "c.tif", data)
    with pytest.raises(InputError, match=r"c.tif holds complex values \(complex64\), not reflectance.*Convert"):
        run([source], tmp_path / "o.tif", tiny_models_dir, scale=1.0)


def test_bad_numbers_through_the_cli_leak_no_warning(tmp_path, tiny_models_dir):
    source = noise_raster(tmp_path / "in.tif", size=64)
    done = subprocess.run([*cli_command(), "remove-clouds", str(source), "-o", str(tmp_path / "o.tif"), "--offset",
                           "1e30", "--sensor", "s2-l2a", "--models-dir", str(tiny_models_dir), "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, env=child_env())
    assert done.returncode == 2 and "RuntimeWarning" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("viser-cr: error: the offset given must be")


# ---------------------------------------------------------------------------- messages that say what to do


@pytest.mark.parametrize("make, match", [
    (lambda d: (d / "notes.tif").write_text("hello\n") and d / "notes.tif",
     r"notes.tif is not a raster GDAL can read .*`gdalinfo --formats` lists them.*viser-cr info"),
    (lambda d: (d / "empty.tif").write_bytes(b"") or d / "empty.tif",
     r"empty.tif is empty \(0 bytes\).*fetch or copy it again"),
    (lambda d: (d / "scene.SAFE").mkdir() or d / "scene.SAFE", r"Sentinel-2 .SAFE folder: give its metadata file"),
    (lambda d: (d / "tiles").mkdir() or (d / "tiles" / "a.tif").write_bytes(b"x") and d / "tiles",
     r"tiles is a folder, not a raster file: give a raster file inside it \(for example a.tif\)"),
])
def test_unusable_inputs_say_what_to_do(tmp_path, tiny_models_dir, make, match):
    source = make(tmp_path)
    with pytest.raises(InputError, match=match):
        run([source], tmp_path / "o.tif", tiny_models_dir)


def test_missing_cloud_mask_is_named_as_such(tmp_path, tiny_models_dir, fixtures_dir):
    with pytest.raises(InputError, match=r"^cloud mask not found: .*nomask.tif\. Check the path"):
        run([fixtures_dir / "rgbn8_96.tif"], tmp_path / "o.tif", tiny_models_dir, keep_clear=True,
            cloud_mask=tmp_path / "nomask.tif")


def test_all_nodata_says_what_to_check(tmp_path, tiny_models_dir):
    source = write_raster(tmp_path / "empty.tif", np.zeros((3, 40, 40), dtype=np.uint8), nodata=0)
    with pytest.raises(InputError, match=r"holds only nodata .*\(its nodata value is 0.0\).*viser-cr info .*empty.tif"):
        run([source], tmp_path / "o.tif", tiny_models_dir)


def test_output_path_equal_to_a_folder_says_what_to_give(tmp_path, tiny_models_dir, fixtures_dir):
    (tmp_path / "results.tif").mkdir()
    with pytest.raises(OutputError, match=r"output path .*results.tif is a folder: give a file name inside it, e.g. "):
        run([fixtures_dir / "rgbn8_96.tif"], tmp_path / "results.tif", tiny_models_dir)


# -------------------------------------------------------------------------------------------- metadata


def rgbn8(seed=3, size=64):
    return np.random.default_rng(seed).integers(10, 200, (4, size, size), dtype=np.uint8)


def test_gcps_are_carried_to_the_output(tmp_path, tiny_models_dir):
    from rasterio.control import GroundControlPoint

    gcps = [GroundControlPoint(0, 0, 500000, 5000000), GroundControlPoint(0, 64, 500640, 5000010),
            GroundControlPoint(64, 0, 499990, 4999360), GroundControlPoint(64, 64, 500650, 4999370)]
    data = rgbn8()
    with rasterio.open(tmp_path / "gcp.tif", "w", driver="GTiff", width=64, height=64, count=4, dtype="uint8",
                       gcps=gcps, crs=CRS) as dst:
        dst.write(data)
    result = run([tmp_path / "gcp.tif"], tmp_path / "o.tif", tiny_models_dir, cog=True)
    with rasterio.open(result.output) as out:
        points, crs = out.gcps
        assert crs == rasterio.crs.CRS.from_string(CRS)
        assert [(p.row, p.col, p.x, p.y) for p in points] == [(p.row, p.col, p.x, p.y) for p in gcps]


def test_rpcs_are_carried_and_follow_the_window(tmp_path, tiny_models_dir):
    from rasterio.rpc import RPC

    rpcs = RPC(height_off=100, height_scale=500, lat_off=45.1, lat_scale=0.05, line_den_coeff=[1] + [0] * 19,
               line_num_coeff=[0, 0, -1] + [0] * 17, line_off=32, line_scale=32, long_off=15.1, long_scale=0.05,
               samp_den_coeff=[1] + [0] * 19, samp_num_coeff=[0, 1] + [0] * 18, samp_off=32, samp_scale=32)
    with rasterio.open(tmp_path / "rpc.tif", "w", driver="GTiff", width=64, height=64, count=4, dtype="uint8",
                       crs=CRS, transform=TRANSFORM, rpcs=rpcs) as dst:
        dst.write(rgbn8())
    bounds = (500000 + 10 * 16, 5000000 - 10 * 48, 500000 + 10 * 48, 5000000 - 10 * 8)   # cols 16.., rows 8..
    result = run([tmp_path / "rpc.tif"], tmp_path / "o.tif", tiny_models_dir, bounds=bounds)
    with rasterio.open(result.output) as out:
        assert out.rpcs is not None
        assert (out.rpcs.line_off, out.rpcs.samp_off) == (32 - 8, 32 - 16)
        assert out.rpcs.lat_off == pytest.approx(45.1)


@pytest.mark.parametrize("user_scale", [None, 5e-5])
def test_band_scaling_of_the_output_decodes_what_was_written(tmp_path, tiny_models_dir, user_scale):
    data = np.random.default_rng(4).integers(8000, 20000, (4, 64, 64), dtype=np.uint16)
    source = write_raster(tmp_path / "ls.tif", data)
    with rasterio.open(source, "r+") as dst:
        dst.scales, dst.offsets = [2.75e-5] * 4, [-0.2] * 4
    result = run([source], tmp_path / "o.tif", tiny_models_dir, scale=user_scale)
    scale = user_scale or 2.75e-5
    offset = -0.2
    with rasterio.open(result.output) as out:
        assert out.dtypes[0] == "uint16"
        assert out.scales == pytest.approx((scale,) * 4) and out.offsets == pytest.approx((offset,) * 4)
    result = run([source], tmp_path / "f.tif", tiny_models_dir, scale=user_scale, output_dtype="float32")
    with rasterio.open(result.output) as out:   # reflectance itself: no scaling to apply
        assert out.scales == (1.0,) * 4 and out.offsets == (0.0,) * 4


def test_rasters_without_band_scaling_get_none(tmp_path, tiny_models_dir, fixtures_dir):
    result = run([fixtures_dir / "s2l1c_cloudy_96.tif"], tmp_path / "o.tif", tiny_models_dir)
    with rasterio.open(result.output) as out:
        assert out.scales == (1.0,) * 4 and out.offsets == (0.0,) * 4


# ------------------------------------------------------------------------------------ memory in width


def test_panels_cover_every_column_with_whole_blocks():
    from viser_cr.core.tiling import TileGrid

    grid = TileGrid(300, 5000, 64, 16, block=256)
    panels = grid.panels(1024)
    assert [p.x0 for p in panels] == list(range(0, 5000, 1024)) and panels[-1].x1 == 5000
    for panel in panels:
        xs = [grid.xs[c] for c in panel.cols]
        assert xs[0] <= panel.x0 and xs[-1] + grid.tile_width >= panel.x1   # its tiles cover its columns
        assert all(x < panel.x1 and x + 64 > panel.x0 for x in xs)           # and only tiles that touch it
    assert grid.panels(100)[0].width == 256                                   # whole blocks, >= 2 tiles


def test_panels_give_the_same_output_as_one_full_width_pass(tmp_path, tiny_models_dir, monkeypatch):
    from viser_cr.core import raster as rio

    data = np.random.default_rng(5).integers(300, 3000, (4, 80, 700), dtype=np.uint16)
    data[:, 30:50, 100:600] = 0     # nodata across panel edges
    source = write_raster(tmp_path / "wide.tif", data, nodata=0)
    options = dict(sensor="s2-l2a", batch_size=1, output_dtype="float32", tile_size=64, overlap=16)
    whole = run([source], tmp_path / "whole.tif", tiny_models_dir, score_output=tmp_path / "ws.tif", **options)
    monkeypatch.setattr(rio, "PANEL", 256)   # three panels of 256, 256 and 188 columns
    panels = run([source], tmp_path / "panels.tif", tiny_models_dir, score_output=tmp_path / "ps.tif", **options)
    for a, b in ((whole.output, panels.output), (whole.score_output, panels.score_output)):
        with rasterio.open(a) as first, rasterio.open(b) as second:
            np.testing.assert_array_equal(first.read(), second.read())
