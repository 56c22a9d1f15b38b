"""``viser-cr batch`` on Dask distributed: a real LocalCluster of 2 workers over generated GeoTIFFs with
a real CRS (one of them not a raster), resume after an interrupted batch, the manifest, scene planning
and the worker plan. Scenes are 64 x 64 and the model is the tiny RGBN one of ``tests/conftest.py``."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasters import write_raster

from viser_cr.core import batch
from viser_cr.core.batch import (
    Manifest,
    Scene,
    dask_client,
    expand_inputs,
    is_complete,
    make_jobs,
    plan_scenes,
    plan_workers,
    product_paths,
    request_tags,
    run_batch,
    summary_table,
    visible_gpus,
)
from viser_cr.core.cli import main
from viser_cr.core.errors import DependencyError, InputError
from viser_cr.core.pipeline import CloudRemovalRequest

pytest.importorskip("distributed")

SIZE = 64


def write_scene(path, seed: int):
    """A 4-band uint16 Sentinel-2-like raster (reflectance x 10^4) in UTM 33N with a bright cloud."""
    rng = np.random.default_rng(seed)
    data = rng.integers(500, 3000, size=(4, SIZE, SIZE), dtype=np.uint16)
    data[:, 10:30, 20:40] = 9000
    return write_raster(path, data, transform=from_origin(500000 + 1000 * seed, 5000000, 10, 10))


@pytest.fixture
def scenes_dir(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for seed, name in enumerate(("a_T31TBG", "b_T31TBG", "c_T32ULC")):
        write_scene(folder / f"{name}.tif", seed)
    (folder / "d_broken.tif").write_bytes(b"not a raster at all")
    return folder


def scene_request(tiny_models_dir, out_dir, **extra):
    options = {**dict(model="tiny-rgbn", models_dir=tiny_models_dir, sensor="s2-l2a", tile_size=32, overlap=8,
                      device="cpu", threads=1), **extra}

    def build(scene: Scene) -> CloudRemovalRequest:
        return CloudRemovalRequest(scene.inputs, out_dir / f"{scene.name}.tif", **options)
    return build


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 in-process workers with one thread each (shared by the tests here)."""
    plans = plan_workers(2, cores=2, gpus=[])
    with dask_client(plans=plans, processes=False) as client:
        yield client


def run(scenes_dir, out_dir, tiny_models_dir, client, **kwargs):
    scenes = plan_scenes(expand_inputs([str(scenes_dir / "*.tif")]))
    jobs = make_jobs(scenes, scene_request(tiny_models_dir, out_dir))
    return run_batch(jobs, client, Manifest(out_dir / "manifest.json", {"test": True}), **kwargs)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------ the batch


def test_two_workers_one_bad_scene_and_the_manifest(scenes_dir, tmp_path, tiny_models_dir, client, one_torch_thread):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    seen = []
    report = run(scenes_dir, out_dir, tiny_models_dir, client, progress=lambda f, m: seen.append((f, m)))

    assert report.workers == 2 and not report.ok
    statuses = {r.scene: r.status for r in report.results}
    assert statuses == {"a_T31TBG": "done", "b_T31TBG": "done", "c_T32ULC": "done", "d_broken": "failed"}
    broken = next(r for r in report.results if r.scene == "d_broken")
    assert "not a raster GDAL can read" in broken.message
    for name in ("a_T31TBG", "b_T31TBG", "c_T32ULC"):
        with rasterio.open(scenes_dir / f"{name}.tif") as src, rasterio.open(out_dir / f"{name}.tif") as dst:
            assert (dst.crs, dst.transform, dst.shape, dst.count) == (src.crs, src.transform, src.shape, 4)
            assert dst.tags()["VISER_CR_MODEL"] == "tiny-rgbn"
            record = json.loads(dst.tags()[batch.REQUEST_TAG])
            assert record["tile_size"] == 32 and record["inputs"][0]["path"] == str(scenes_dir / f"{name}.tif")
    assert not (out_dir / "d_broken.tif").exists() and leftovers(out_dir) == []
    assert seen and seen[-1][0] == 1.0 and seen[-1][1] == "4/4 scenes"

    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["test"] and manifest["finished"]
    assert manifest["counts"] == {"done": 3, "skipped": 0, "failed": 1, "cancelled": 0}
    rows = {row["scene"]: row for row in manifest["scenes"]}
    assert list(rows) == ["a_T31TBG", "b_T31TBG", "c_T32ULC", "d_broken"]
    for row in rows.values():
        assert {"scene", "status", "seconds", "model", "device", "message"} <= set(row)
    assert rows["a_T31TBG"]["model"] == "tiny-rgbn" and rows["a_T31TBG"]["device"] == "cpu"
    assert rows["a_T31TBG"]["seconds"] > 0 and "tiles/s" in rows["a_T31TBG"]["message"]
    assert rows["d_broken"]["status"] == "failed" and rows["d_broken"]["message"] == broken.message

    table = summary_table(report.results)
    assert table.splitlines()[0].split() == ["scene", "status", "seconds", "model", "device", "message"]
    assert "d_broken" in table and "failed" in table


def test_resume_after_an_interrupted_batch(scenes_dir, tmp_path, tiny_models_dir, client, one_torch_thread):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    interrupted = []

    def interrupt(result):
        if result.status == "done" and not interrupted:
            interrupted.append(result.scene)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(scenes_dir, out_dir, tiny_models_dir, client, on_result=interrupt)
    first = json.loads((out_dir / "manifest.json").read_text())
    assert not first["finished"]
    done_first = {row["scene"] for row in first["scenes"] if row["status"] == "done"}
    assert interrupted[0] in done_first
    assert {row["status"] for row in first["scenes"]} <= {"done", "failed", "cancelled"}
    assert leftovers(out_dir) == []  # cancelled scenes left no temporary file
    stamps = {name: os.stat(out_dir / f"{name}.tif").st_mtime_ns for name in done_first}

    report = run(scenes_dir, out_dir, tiny_models_dir, client)
    statuses = {r.scene: r.status for r in report.results}
    assert {name for name, status in statuses.items() if status == "skipped"} == done_first
    assert statuses["d_broken"] == "failed"
    assert all(statuses[n] == "done" for n in ("a_T31TBG", "b_T31TBG", "c_T32ULC") if n not in done_first)
    assert {name: os.stat(out_dir / f"{name}.tif").st_mtime_ns for name in done_first} == stamps
    assert json.loads((out_dir / "manifest.json").read_text())["finished"]


def test_resume_redoes_truncated_outputs_and_changed_requests(scenes_dir, tmp_path, tiny_models_dir, client,
                                                              one_torch_thread):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    run(scenes_dir, out_dir, tiny_models_dir, client)
    target = out_dir / "a_T31TBG.tif"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])   # e.g. copied by hand, cut short
    (out_dir / ".b_T31TBG.0123456789.viser-tmp.tif").write_bytes(b"left by a killed run")

    report = run(scenes_dir, out_dir, tiny_models_dir, client)
    statuses = {r.scene: r.status for r in report.results}
    assert statuses == {"a_T31TBG": "done", "b_T31TBG": "skipped", "c_T32ULC": "skipped", "d_broken": "failed"}
    with rasterio.open(target) as dst:
        assert dst.read().shape == (4, SIZE, SIZE)

    jobs = make_jobs(plan_scenes([scenes_dir / "c_T32ULC.tif"]),
                     scene_request(tiny_models_dir, out_dir, keep_clear=False))
    report = run_batch(jobs, client)
    assert [r.status for r in report.results] == ["done"]  # another request: processed again


def test_stacks_of_dates_by_tile(tmp_path, tiny_models_dir, client, one_torch_thread):
    folder, out_dir = tmp_path / "series", tmp_path / "out"
    folder.mkdir()
    out_dir.mkdir()
    for tile, seed in (("T31TBG", 0), ("T32ULC", 5)):
        for day in (1, 2, 3):
            write_scene(folder / f"S2A_2020050{day}_{tile}.tif", seed)   # the dates of a tile share a grid
    scenes = plan_scenes(expand_inputs([str(folder / "*.tif")]), "tile")
    jobs = make_jobs(scenes, scene_request(tiny_models_dir, out_dir, model="tiny-rgbn-l3"))
    report = run_batch(jobs, client)
    assert [(r.scene, r.status, r.model) for r in report.results] == [("T31TBG", "done", "tiny-rgbn-l3"),
                                                                     ("T32ULC", "done", "tiny-rgbn-l3")]
    with rasterio.open(out_dir / "T31TBG.tif") as dst:
        record = json.loads(dst.tags()[batch.REQUEST_TAG])
        assert [Path(i["path"]).name for i in record["inputs"]] == [f"S2A_2020050{d}_T31TBG.tif" for d in (1, 2, 3)]


def test_is_complete_checks_the_recorded_request(scenes_dir, tmp_path, tiny_models_dir, client, one_torch_thread):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    scene = Scene("a", [scenes_dir / "a_T31TBG.tif"])
    request = scene_request(tiny_models_dir, out_dir)(scene)
    tags = request_tags(request)
    assert not is_complete(out_dir / "a.tif", tags[batch.REQUEST_HASH_TAG])
    run_batch(make_jobs([scene], scene_request(tiny_models_dir, out_dir)), client)
    assert is_complete(out_dir / "a.tif", tags[batch.REQUEST_HASH_TAG])
    # compute settings do not change the pixels, so they do not change the record; the model's tiling does
    same = scene_request(tiny_models_dir, out_dir)(scene)
    same.batch_size, same.threads, same.device = 1, 2, "auto"
    assert request_tags(same) == tags
    other = scene_request(tiny_models_dir, out_dir, overlap=4)(scene)
    assert request_tags(other)[batch.REQUEST_HASH_TAG] != tags[batch.REQUEST_HASH_TAG]
    # a replaced input is processed again
    write_scene(scenes_dir / "a_T31TBG.tif", seed=7)
    os.utime(scenes_dir / "a_T31TBG.tif", ns=(1, 1))
    assert request_tags(scene_request(tiny_models_dir, out_dir)(scene)) != tags


# ------------------------------------------------------------------------------------------ the CLI


def test_cli_batch_on_a_local_cluster(scenes_dir, tmp_path, tiny_models_dir, capsys):
    out_dir = tmp_path / "out"
    listing = tmp_path / "scenes.txt"
    listing.write_text("# two good scenes and a bad one\nscenes/a_T31TBG.tif\nscenes/c_T32ULC.tif\n"
                       "scenes/d_broken.tif\n")
    args = ["batch", str(listing), "-o", str(out_dir), "--models-dir", str(tiny_models_dir), "--model", "tiny-rgbn",
            "--sensor", "s2-l2a", "--tile", "32", "--overlap", "8", "--workers", "2", "--device", "cpu",
            "--score"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "d_broken: " in captured.err and "1 of 3 scene(s) failed" in captured.err
    assert "Local Dask cluster: 2 worker(s), cpu-0 (1 thread), cpu-1 (1 thread)" in captured.err
    assert "3 scene(s)" in captured.out and "2 done, 1 failed" in captured.out
    assert {p.name for p in out_dir.iterdir()} == {"a_T31TBG.tif", "a_T31TBG_score.tif", "c_T32ULC.tif",
                                                   "c_T32ULC_score.tif", "manifest.json"}
    (scenes_dir / "d_broken.tif").unlink()
    listing.write_text("scenes/a_T31TBG.tif\nscenes/c_T32ULC.tif\n")
    assert main([*args, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert [row["status"] for row in manifest["scenes"]] == ["skipped", "skipped"]


def test_cli_batch_reads_each_scenes_quality_band_as_its_cloud_mask(scenes_dir, tmp_path, tiny_models_dir, capsys):
    """--cloud-mask-pattern gives every scene its own mask ({dir}, {stem}), read with --cloud-mask-type; the scene
    whose mask is missing fails with the mask named, the others are done, and each manifest row records its mask."""
    import numpy as np
    import rasterio
    from rasters import write_raster

    for name in ("a_T31TBG", "b_T31TBG"):
        with rasterio.open(scenes_dir / f"{name}.tif") as src:
            scl = np.full((1, src.height, src.width), 4, np.uint8)
            scl[0, :8] = 9
            write_raster(scenes_dir / f"{name}_SCL.tif", scl, crs=src.crs, transform=src.transform)
    out_dir = tmp_path / "out"
    args = ["batch", *(str(scenes_dir / f"{n}.tif") for n in ("a_T31TBG", "b_T31TBG", "c_T32ULC")), "-o", str(out_dir),
            "--models-dir", str(tiny_models_dir), "--model", "tiny-rgbn", "--sensor", "s2-l2a", "--tile", "32",
            "--overlap", "8", "--workers", "1", "--device", "cpu", "--keep-clear",
            "--cloud-mask-pattern", "{dir}/{stem}_SCL.tif", "--cloud-mask-type", "sentinel2-scl",
            "--cloud-mask-buffer", "2"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "c_T32ULC: cloud mask not found" in captured.err and "c_T32ULC_SCL.tif" in captured.err
    assert {p.name for p in out_dir.iterdir()} == {"a_T31TBG.tif", "b_T31TBG.tif", "manifest.json"}
    with rasterio.open(scenes_dir / "a_T31TBG.tif") as src, rasterio.open(out_dir / "a_T31TBG.tif") as out:
        assert json.loads(out.tags()["VISER_CR_REQUEST"])["cloud_mask"]["path"].endswith("a_T31TBG_SCL.tif")
        assert json.loads(out.tags()["VISER_CR_REQUEST"])["cloud_mask_type"] == "sentinel2-scl"
    assert main(["--no-keep-clear" if a == "--keep-clear" else a for a in args]) == 2
    assert "drop --no-keep-clear" in capsys.readouterr().err
    assert main([*args[:-6], "--cloud-mask-pattern", "{folder}/{stem}.tif"]) == 2
    assert "use {dir} and {stem} only" in capsys.readouterr().err


def test_every_date_of_a_stack_gets_its_own_mask_from_the_pattern(tmp_path):
    import argparse

    args = argparse.Namespace(cloud_mask_pattern="{dir}/{stem}_SCL.tif", score=False, uncertainty=False,
                              source_dates=False)
    dates = [tmp_path / f"S2A_2020050{day}_T31TBG.tif" for day in (1, 2, 3)]
    scene_args = batch._scene_args(args, Scene("T31TBG", dates), tmp_path / "out")
    assert scene_args.cloud_mask == [str(tmp_path / f"S2A_2020050{day}_T31TBG_SCL.tif") for day in (1, 2, 3)]
    assert batch._scene_args(argparse.Namespace(**{**vars(args), "cloud_mask_pattern": None}),
                             Scene("T31TBG", dates), tmp_path / "out").cloud_mask is None


def test_cli_batch_errors_are_one_line(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "none-*.tif"), "-o", str(tmp_path / "out")]) == 2
    assert "no file matches" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "x.tif"), "-o", str(tmp_path / "out.tif")]) == 5
    assert "-o is the output folder of a batch" in capsys.readouterr().err


def test_an_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(InputError, match=r"cannot reach the Dask scheduler at tcp://127.0.0.1:9 \(.*\): check the address"):
        with dask_client("tcp://127.0.0.1:9", timeout="1s"):
            pass


def test_gpu_workers_run_their_own_gpu_and_cpu_workers_their_cores():
    scene = Scene("a", [Path("a.tif")])
    gpu_jobs = make_jobs([scene], lambda s: CloudRemovalRequest(s.inputs, "a.tif", device="cuda:1"))
    batch._fit_requests_to_workers(gpu_jobs, plan_workers(None, 16, ["0", "1"], "cuda:1"), None)
    assert gpu_jobs[0].request.device == "cuda"       # CUDA_VISIBLE_DEVICES=1 shows it as cuda:0
    cpu_jobs = make_jobs([scene], lambda s: CloudRemovalRequest(s.inputs, "a.tif", device="cpu"))
    batch._fit_requests_to_workers(cpu_jobs, plan_workers(2, 8, []), None)
    assert cpu_jobs[0].request.threads == 4


def test_missing_dask_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(DependencyError, match=r"pip install 'viser-cr\[batch\]'"):
        with dask_client(plans=plan_workers(1, 1, [])):
            pass


# ------------------------------------------------------------------------------------- planning


def test_expand_inputs_globs_lists_and_order(scenes_dir, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{scenes_dir}/c_T32ULC.tif\n\n# comment\nscenes/a_*.tif  # relative to the list\n")
    paths = expand_inputs([str(listing), str(scenes_dir / "*_T31TBG.tif")])
    assert [p.name for p in paths] == ["c_T32ULC.tif", "a_T31TBG.tif", "b_T31TBG.tif"]
    assert expand_inputs([str(tmp_path / "missing.tif")]) == [(tmp_path / "missing.tif").resolve()]
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.jp2")])
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InputError, match="names no raster"):
        expand_inputs([str(tmp_path / "empty.txt")])


def test_plan_scenes_stacks_by_tile_or_pattern(tmp_path):
    paths = [tmp_path / n for n in ("S2B_20200602_T31TBG.tif", "S2A_20200518_T31TBG.tif",
                                    "LC08_L2SP_224078_20200518_02_T1.tif", "S2A_20200518_T32ULC.tif")]
    scenes = plan_scenes(paths, "tile")
    assert [(s.name, [p.name for p in s.inputs]) for s in scenes] == [
        ("T31TBG", ["S2A_20200518_T31TBG.tif", "S2B_20200602_T31TBG.tif"]),
        ("224078", ["LC08_L2SP_224078_20200518_02_T1.tif"]),
        ("T32ULC", ["S2A_20200518_T32ULC.tif"]),
    ]
    assert [s.name for s in plan_scenes(paths, r"_(\d{8})_")] == ["20200602", "20200518"]
    assert [s.name for s in plan_scenes(paths)] == [p.stem for p in paths]
    with pytest.raises(InputError, match="has no .* key in its name"):
        plan_scenes(paths, r"T\d{2}X")
    with pytest.raises(InputError, match="not a regular expression"):
        plan_scenes(paths, "(")
    with pytest.raises(InputError, match="two scenes would write a.tif"):
        plan_scenes([tmp_path / "x" / "a.tif", tmp_path / "y" / "a.tif"])


def test_progress_ignores_events_that_arrive_after_the_result():
    seen = []
    tracker = batch._Progress(2, lambda fraction, message: seen.append((fraction, message)))
    tracker.scene_progress("a", 0.5)
    tracker.scene_finished("a")
    tracker.scene_progress("a", 1.0)      # late
    tracker.scene_progress("b", 0.5)
    assert seen == [(0.25, "0/2 scenes, 1 running"), (0.5, "1/2 scenes"), (0.75, "1/2 scenes, 1 running")]


def test_product_paths(tmp_path):
    paths = product_paths(tmp_path, "T31TBG", score=True)
    assert paths == {"output": tmp_path / "T31TBG.tif", "score": tmp_path / "T31TBG_score.tif",
                     "uncertainty": None, "source_dates": None}
    assert product_paths(tmp_path, "T31TBG", source_dates=True)["source_dates"] == tmp_path / "T31TBG_source_dates.tif"


def test_worker_plan_splits_cores_and_pins_gpus():
    cpu = plan_workers(None, cores=16, gpus=[])
    assert [(w.name, w.threads, w.gpu) for w in cpu] == [(f"cpu-{i}", 2, None) for i in range(8)]
    assert cpu[0].env["OMP_NUM_THREADS"] == "2" and cpu[0].env["CUDA_VISIBLE_DEVICES"] == ""
    assert [w.threads for w in plan_workers(2, cores=2, gpus=[])] == [1, 1]
    assert [w.threads for w in plan_workers(None, cores=2, gpus=[])] == [2]
    assert [w.threads for w in plan_workers(3, cores=2, gpus=[])] == [1, 1, 1]

    gpus = plan_workers(None, cores=16, gpus=["2", "3"])
    assert [(w.gpu, w.env["CUDA_VISIBLE_DEVICES"], w.threads) for w in gpus] == [("2", "2", 8), ("3", "3", 8)]
    assert [w.gpu for w in plan_workers(1, cores=16, gpus=["2", "3"])] == ["2"]
    assert [w.gpu for w in plan_workers(None, cores=16, gpus=["2", "3"], device="cuda:1")] == ["3"]
    assert [w.gpu for w in plan_workers(2, cores=16, gpus=["2", "3"], device="cpu")] == [None, None]
    with pytest.raises(InputError, match="--workers must be at least 1"):
        plan_workers(0, cores=2, gpus=[])
    with pytest.raises(InputError, match="1 GPU"):
        plan_workers(None, cores=2, gpus=["0"], device="cuda:1")


def test_visible_gpus_follow_cuda_visible_devices():
    assert visible_gpus({}, count=2) == ["0", "1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "3,5"}, count=2) == ["3", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, count=0) == []
    assert visible_gpus({}, count=0) == []


def test_cli_batch_stacks_with_source_dates(tmp_path, tiny_models_dir, capsys):
    folder, out_dir = tmp_path / "series", tmp_path / "out"
    folder.mkdir()
    for day in (1, 2, 3, 4):  # four dates of one tile for a three-date model
        write_scene(folder / f"S2A_2020050{day}_T31TBG.tif", 0)  # one grid (the seed moves it)
    args = ["batch", str(folder / "*.tif"), "-o", str(out_dir), "--stack-by", "tile", "--models-dir",
            str(tiny_models_dir), "--model", "tiny-rgbn-l3", "--sensor", "s2-l2a", "--tile", "32", "--overlap", "8",
            "--workers", "1", "--device", "cpu", "--source-dates"]
    assert main(args) == 0, capsys.readouterr().err
    assert {p.name for p in out_dir.iterdir()} == {"T31TBG.tif", "T31TBG_source_dates.tif", "manifest.json"}
    with rasterio.open(out_dir / "T31TBG_source_dates.tif") as src:
        assert src.dtypes[0] == "uint16" and set(np.unique(src.read(1)).tolist()) <= {0, 1, 2, 3, 4}
        assert "source_dates" in json.loads(src.tags()[batch.REQUEST_TAG])["products"]
    assert main([*args, "--quiet"]) == 0  # complete: both products skipped, not redone
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert [row["status"] for row in manifest["scenes"]] == ["skipped"]
