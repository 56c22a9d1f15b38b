"""The ``viser-cr`` command line: commands, output, exit codes, one-line errors, progress bar."""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

from viser_cr.core import pipeline
from viser_cr.core.cli import ProgressBar, main


@pytest.fixture
def s2(fixtures_dir, tmp_path):
    return str(shutil.copy(fixtures_dir / "s2l1c_cloudy_96.tif", tmp_path / "s2.tif"))


def test_remove_clouds(s2, tmp_path, tiny_models_dir, capsys):
    out = tmp_path / "out.tif"
    code = main(["remove-clouds", s2, "-o", str(out), "--models-dir", str(tiny_models_dir), "--tile", "48",
                 "--overlap", "8", "--batch", "2", "--device", "cpu", "--threads", "2", "--score-out",
                 str(tmp_path / "score.tif")])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.startswith(f"Wrote {out}, {tmp_path / 'score.tif'} (model tiny-rgbn on cpu, 9 tile(s)")
    assert "Detected s2-l1c" in captured.err
    assert "Thin cirrus: the cirrus band (B10, band 11) corrected 0 of 9 tiles" in captured.err  # a clear sky
    assert "Cloud source: the bundled L1C cloud classifier's mask (viser-l1c-cloud" in captured.err  # 13-band L1C
    with rasterio.open(out) as dst:
        assert dst.count == 4 and dst.dtypes[0] == "uint16"
    assert main(["remove-clouds", s2, "-o", str(out), "--models-dir", str(tiny_models_dir), "--no-cirrus-correction"]) == 0
    assert "Thin cirrus" not in capsys.readouterr().err


def test_keep_clear_is_the_default(s2, tmp_path, tiny_models_dir, monkeypatch):
    """Keep-clear is on unless --no-keep-clear (level on validation; unfamiliar clear ground stays as it is)."""
    requests = []
    monkeypatch.setattr(pipeline, "remove_clouds", lambda request, progress=None: requests.append(request))
    args = ["remove-clouds", s2, "-o", str(tmp_path / "out.tif"), "--models-dir", str(tiny_models_dir), "-q"]
    main(args)
    main([*args, "--no-keep-clear"])
    main([*args, "--keep-clear"])
    assert [r.keep_clear for r in requests] == [True, False, True]


def test_cloud_source_reaches_the_run(s2, tmp_path, tiny_models_dir, monkeypatch, capsys):
    """--cloud-source auto (the default), model, s2cloudless or l1c-classifier; anything else is a usage error
    listing them."""
    requests = []
    monkeypatch.setattr(pipeline, "remove_clouds", lambda request, progress=None: requests.append(request))
    args = ["remove-clouds", s2, "-o", str(tmp_path / "out.tif"), "--models-dir", str(tiny_models_dir), "-q"]
    main(args)
    main([*args, "--cloud-source", "model"])
    main([*args, "--cloud-source", "s2cloudless"])
    main([*args, "--cloud-source", "l1c-classifier"])
    assert [r.cloud_source for r in requests] == ["auto", "model", "s2cloudless", "l1c-classifier"]
    with pytest.raises(SystemExit):
        main([*args, "--cloud-source", "fmask"])
    assert "invalid choice: 'fmask' (choose from 'auto', 'model', 's2cloudless', 'l1c-classifier')" in capsys.readouterr().err


def test_cloud_mask_type_reaches_the_run(s2, tmp_path, tiny_models_dir, capsys):
    """--cloud-mask-type reads the mask as a product's quality band: a QA_PIXEL band given as an SCL band is
    refused naming both; an unknown type is a usage error listing the types."""
    import numpy as np
    from rasters import write_raster

    with rasterio.open(s2) as src:
        qa = write_raster(tmp_path / "qa.tif", np.full((1, 96, 96), 21824, np.uint16), crs=src.crs,
                          transform=src.transform)
    args = ["remove-clouds", s2, "-o", str(tmp_path / "out.tif"), "--models-dir", str(tiny_models_dir),
            "--keep-clear", "--cloud-mask", str(qa), "-q"]
    assert main([*args, "--cloud-mask-type", "landsat-qa-pixel"]) == 0
    assert main([*args, "--cloud-mask-type", "sentinel2-scl"]) == 2
    assert "qa.tif has values (21824)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--cloud-mask-type", "scl"])
    assert "invalid choice: 'scl' (choose from 'nonzero', 'landsat-qa-pixel'" in capsys.readouterr().err


def test_a_stack_takes_one_cloud_mask_per_date(fixtures_dir, tmp_path, tiny_models_dir, capsys):
    import numpy as np
    from rasters import write_raster

    dates = [str(fixtures_dir / n) for n in ("ts_s2_ImgNo_5_2018-03-07_64.tif", "ts_s2_ImgNo_7_2018-04-01_64.tif",
                                            "ts_s2_ImgNo_9_2018-04-26_64.tif")]
    masks = []
    for i, date in enumerate(dates):
        with rasterio.open(date) as src:
            scl = np.full((1, src.height, src.width), 4, np.uint8)
            masks.append(str(write_raster(tmp_path / f"scl{i}.tif", scl, crs=src.crs, transform=src.transform)))
    args = ["remove-clouds", *dates, "-o", str(tmp_path / "out.tif"), "--models-dir", str(tiny_models_dir),
            "--keep-clear", "--cloud-mask-type", "sentinel2-scl", "-q", "--cloud-mask"]
    assert main([*args, *masks]) == 0
    assert main([*args, *masks[:2]]) == 2
    assert "2 cloud mask(s) for 3 input(s): give one mask (the reference date's) or one per input" in \
        capsys.readouterr().err


def test_quiet_float32_cog_and_bands(s2, tmp_path, tiny_models_dir, capsys):
    out = tmp_path / "out.tif"
    code = main(["remove-clouds", s2, "-o", str(out), "--models-dir", str(tiny_models_dir), "--bands", "4,3,2",
                 "--float32", "--cog", "--quiet"])
    assert code == 0 and capsys.readouterr() == ("", "")
    with rasterio.open(out) as dst:
        assert dst.count == 3 and dst.dtypes[0] == "float32"
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_stack_with_reference(fixtures_dir, tmp_path, tiny_models_dir, capsys):
    names = ["ts_s2_ImgNo_5_2018-03-07_64.tif", "ts_s2_ImgNo_7_2018-04-01_64.tif", "ts_s2_ImgNo_9_2018-04-26_64.tif"]
    out = tmp_path / "out.tif"
    code = main(["remove-clouds", *[str(fixtures_dir / n) for n in names], "-o", str(out), "--models-dir",
                 str(tiny_models_dir), "--reference", "3", "--keep-clear", "--quiet"])
    assert code == 0 and out.exists()


def test_any_number_of_dates_and_the_source_date_raster(fixtures_dir, tmp_path, tiny_models_dir, capsys):
    names = ["ts_s2_ImgNo_5_2018-03-07_64.tif", "ts_s2_ImgNo_7_2018-04-01_64.tif", "ts_s2_ImgNo_9_2018-04-26_64.tif"]
    dates = [str(fixtures_dir / n) for n in names] * 2  # six dates for a three-date model
    out, sources = tmp_path / "out.tif", tmp_path / "sources.tif"
    code = main(["remove-clouds", *dates, "-o", str(out), "--models-dir", str(tiny_models_dir),
                 "--source-dates-out", str(sources), "--tile", "32", "--overlap", "8"])
    assert code == 0 and out.exists()
    err = capsys.readouterr().err
    assert "6 dates, model tiny-rgbn-l3 takes 3" in err and "Dates used (tiles of 9): input 1" in err  # 3 x 3 tiles
    with rasterio.open(sources) as src:
        assert src.dtypes[0] == "uint16" and src.read(1).max() <= 6


def test_cloud_score(s2, tmp_path, tiny_models_dir):
    out = tmp_path / "score.tif"
    assert main(["cloud-score", s2, "-o", str(out), "--models-dir", str(tiny_models_dir), "-q"]) == 0
    with rasterio.open(out) as dst:
        assert dst.count == 1 and dst.dtypes[0] == "float32"


def test_info(fixtures_dir, capsys):
    assert main(["info", str(fixtures_dir / "landsat8_bgr_160x128.tif"), "--sensor", "landsat-c2l2"]) == 0
    text = capsys.readouterr().out
    assert "160 x 128, 3 band(s) uint16, CRS EPSG:32621" in text
    assert "Sensor: landsat-c2l2" in text and "red=3" in text and "blue first" in text


def test_info_json_and_undetected(fixtures_dir, capsys):
    assert main(["info", str(fixtures_dir / "landsat8_bgr_160x128.tif"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sensor"] is None and "--sensor landsat-c2l2" in info["error"]


def test_models(tiny_models_dir, capsys):
    assert main(["models", "--models-dir", str(tiny_models_dir)]) == 0
    text = capsys.readouterr().out
    assert "tiny-rgbn: bands red,green,blue,nir, 1 date(s), tile 64 overlap 16" in text
    assert "tiny-rgbn-l3" in text
    assert main(["models", "--models-dir", str(tiny_models_dir), "--json"]) == 0
    assert {c["name"] for c in json.loads(capsys.readouterr().out)} == {"tiny-rgbn", "tiny-rgb", "tiny-rgbn-l3"}


def test_models_says_a_stack_model_takes_any_number_of_dates(tiny_all_dates_models_dir, capsys):
    assert main(["models", "--models-dir", str(tiny_all_dates_models_dir)]) == 0
    assert "tiny-all-l3: bands red,green,blue,nir, any number of dates, tile 64" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, code, message",
    [(["remove-clouds", "missing.tif", "-o", "{tmp}/o.tif"], 2, "input raster not found"),
     (["remove-clouds", "{s2}", "-o", "{tmp}/o.tif", "--device", "tpu"], 4, "unknown device 'tpu'"),
     (["remove-clouds", "{s2}", "-o", "{s2}"], 5, "is also an input"),
     (["remove-clouds", "{s2}", "-o", "{tmp}/o.tif", "--model", "nope"], 3, "no model named 'nope'"),
     (["remove-clouds", "{s2}", "-o", "{tmp}/o.tif", "--reference", "2"], 2, "--reference must be between 1 and 1"),
     (["remove-clouds", "{s2}", "-o", "{tmp}/o.tif", "--cloud-threshold", "1.2"], 2,
      "the cloud threshold must be a number between 0 and 1 (exclusive), got 1.2")],
)
def test_errors_are_one_line_with_exit_codes(s2, tmp_path, tiny_models_dir, capsys, args, code, message):
    args = [a.format(tmp=tmp_path, s2=s2) for a in args] + ["--models-dir", str(tiny_models_dir)]
    assert main(args) == code
    err = capsys.readouterr().err
    assert err.startswith("viser-cr: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err  # nothing logged before a fail-fast error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s2.tif"]


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["remove-clouds", "missing.tif", "-o", str(tmp_path / "o.tif"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "input raster not found: missing.tif" in err.splitlines()[-1]


def test_ctrl_c_is_a_cancel(s2, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "remove_clouds", interrupted)
    assert main(["remove-clouds", s2, "-o", str(tmp_path / "o.tif")]) == 130
    assert "cancelled" in capsys.readouterr().err


def test_bad_band_list_is_a_usage_error(s2, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["remove-clouds", s2, "-o", str(tmp_path / "o.tif"), "--bands", "red,green"])
    assert exit_info.value.code == 2 and "comma-separated band numbers" in capsys.readouterr().err


def test_unknown_sensor_is_a_usage_error(s2, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["remove-clouds", s2, "-o", str(tmp_path / "o.tif"), "--sensor", "sentinel-9"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_progress_bar_draws_on_a_terminal_only():
    stream = io.StringIO()
    bar = ProgressBar(stream, enabled=True, width=10)
    bar(0.5, "2/4 tiles")
    bar(1.0, "4/4 tiles")
    bar.close()
    text = stream.getvalue()
    assert "\r[#####-----]  50.0% 2/4 tiles" in text and "\r[##########] 100.0% 4/4 tiles" in text
    assert text.endswith("\n")
    silent = io.StringIO()
    ProgressBar(silent)(0.5, "x")  # StringIO is not a terminal
    assert silent.getvalue() == ""


def test_console_script(tiny_models_dir):
    script = Path(sys.executable).parent / "viser-cr"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "viser_cr.core.cli"]
    done = subprocess.run([*command, "models", "--models-dir", str(tiny_models_dir)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0 and "tiny-rgb:" in done.stdout
