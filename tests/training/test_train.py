"""Training loop: loss goes down, exact resume, DDP with 2 CPU processes, evaluate, export -> load."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("rasterio")

from datagen import make_clear_sources, make_sen12mscr

from viser_cr.core.errors import ViserError
from viser_cr.training.checkpoint import load_checkpoint
from viser_cr.training.config import load_config
from viser_cr.training.train import train

TINY_MODEL = dict(width=8, blocks=[1, 1, 1], heads=[1, 2, 4], refine_blocks=1,
                  sr_iterations=1, use_mask=True, use_pse=True, use_sr=True)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_clear_sources(root / "clear")
    make_sen12mscr(root / "pairs", per_scene=2)
    return root


def tiny_config(root, out, steps=20, **train_over):
    cfg = {
        "name": "tiny-test",
        "seed": 0,
        "output_dir": str(out),
        "model": dict(TINY_MODEL),
        "data": {
            "root": str(root),
            "bands": ["red", "green", "blue", "nir"],
            "patch_size": 32,
            "eval_patch_size": 32,
            "train": [{"type": "synthetic", "length": 24,
                       "sources": [{"files": "clear/s2/*.tif", "layout": "s2-13"},
                                   {"files": "clear/rgbn.tif", "layout": "rgbn8"}]}],
            "val": [{"type": "pairs", "root": "pairs", "include": ["^ROIs1868_summer_135_"]}],
        },
        "loss": {"perceptual": 0.0, "score": 0.1},
        "optim": {"lr": 2e-3, "lr_min": 1e-3},
        "train": dict({"steps": steps, "batch_size": 2, "num_workers": 0, "threads": 1, "log_every": 1,
                       "val_every": 10, "ckpt_every": 10, "progress": False}, **train_over),
        "eval": {"max_images": 2, "sheet_images": 2},
    }
    path = Path(out).parent / f"{Path(out).name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _losses(run):
    with open(Path(run) / "train_log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_twenty_steps_decrease_loss_and_write_outputs(data_root, tmp_path):
    cfg = load_config(tiny_config(data_root, tmp_path / "run"))
    summary = train(cfg)
    run = tmp_path / "run"
    losses = _losses(run)
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    for f in ("config.yaml", "curves.png", "summary.json", "val_log.csv", "sheets/step_0000010.png",
              "sheets/step_0000020.png", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / f).exists(), f
    with open(run / "val_log.csv") as f:
        val = list(csv.DictReader(f))
    assert [int(r["step"]) for r in val] == [10, 20] and float(val[0]["input_psnr"]) > 0
    assert summary["steps"] == 20


@pytest.mark.slow
def test_resume_is_bit_identical(data_root, tmp_path):
    """Stop after step 7 (the checkpoint an interrupted run leaves), resume in a fresh process state,
    finish at 14: weights, optimizer and logged losses equal those of the uninterrupted run."""
    full = load_config(tiny_config(data_root, tmp_path / "full", steps=14, ckpt_every=7, val_every=100))
    train(full)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    ck7 = tmp_path / "full" / "checkpoints" / "step_0000007.pt"
    assert load_checkpoint(ck7)["step"] == 7
    torch.manual_seed(1234)  # scramble the global RNG: the checkpoint must restore it
    part = load_config(tiny_config(data_root, tmp_path / "part", steps=14, ckpt_every=7, val_every=100))
    train(part, resume=str(ck7))
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 14
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert _losses(tmp_path / "full")[7:] == _losses(tmp_path / "part")


@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_sync(data_root, tmp_path):
    cfg_path = tiny_config(data_root, tmp_path / "ddp", steps=3, ckpt_every=3, val_every=100)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "viser_cr.training.train", "--config", str(cfg_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = json.loads((tmp_path / "ddp" / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["in_sync"] and len(set(ranks["digests"])) == 1
    ck = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["step"] == 3


@pytest.mark.slow
def test_evaluate_and_export_round_trip(data_root, tmp_path):
    from viser_cr.core.weights import load_model
    from viser_cr.training.evaluate import evaluate
    from viser_cr.training.export import export

    cfg = load_config(tiny_config(data_root, tmp_path / "run", steps=2, val_every=100, ckpt_every=100))
    train(cfg)
    ckpt_path = tmp_path / "run" / "checkpoints" / "last.pt"
    cfg["data"]["test"] = cfg["data"]["val"] + [
        {"type": "synthetic", "length": 1, "label": "rgbn synthetic",
         "sources": [{"files": "clear/rgbn.tif", "layout": "rgbn8"}]}]
    res = evaluate(cfg, checkpoint=ckpt_path, split="test", keep_clear=True, output_dir=tmp_path / "ev")
    assert set(res["table"]) >= {"tiny-test@2", "cloudy input"}
    # one table per entry of the split, the images split between them
    assert list(res["by_part"]) == ["pairs: pairs [ROIs1868_summer_135]", "rgbn synthetic"]
    assert res["by_part"]["rgbn synthetic"]["cloudy input"]["images"] == 1
    # the s2cloudless baseline where the sample is 13-band L1C (the pairs), not on 8-bit RGBN
    assert res["by_part"]["pairs: pairs [ROIs1868_summer_135]"]["s2cloudless + fill"]["images"] == 2
    assert "s2cloudless + fill" not in res["by_part"]["rgbn synthetic"]
    # and the model as a run gives it there by default (keep-clear with the bundled L1C classifier's mask added),
    # and with s2cloudless's mask instead
    for row in ("tiny-test@2 + keep-clear + L1C classifier", "tiny-test@2 + keep-clear + s2cloudless"):
        assert res["by_part"]["pairs: pairs [ROIs1868_summer_135]"][row]["images"] == 2
        assert row not in res["by_part"]["rgbn synthetic"]
    assert sum(part["cloudy input"]["images"] for part in res["by_part"].values()) == res["images"]
    assert "#### By part of the split" in (tmp_path / "ev" / "eval_test_clean.md").read_text()
    # the score's false cloud on water and bright ground: no water on 8-bit imagery (a stretch hides it from NIR)
    assert "| on water | on bright ground |" in (tmp_path / "ev" / "eval_test_clean.md").read_text()
    assert "false_cloud" in res["score"]["rgbn synthetic"] and "false_cloud_water" not in res["score"]["rgbn synthetic"]
    # and again at the model's own gates, per radiometry (what the fill and keep-clear take)
    from viser_cr.core.pipeline import own_cloud_threshold
    from viser_cr.training.evaluate import load_trained

    net = load_trained(ckpt_path)[0]
    gates = f"score > {own_cloud_threshold(net, False):g} on reflectance, score > {own_cloud_threshold(net, True):g} on 8-bit"
    assert f"#### Cloud score at the model's gates ({gates} imagery:" in (tmp_path / "ev" / "eval_test_clean.md").read_text()
    assert set(res["score_at_gates"]) == set(res["score"])
    for ext in ("md", "csv", "json"):
        assert (tmp_path / "ev" / f"eval_test_clean.{ext}").exists()
    models = tmp_path / "models"
    models.mkdir()
    ckpt = load_checkpoint(ckpt_path)
    (tmp_path / "notes.yaml").write_text("limitations: trained for two steps\nevaluation: {command: viser-cr-evaluate}\n")
    card = export(ckpt_path, name="tiny-export", models_dir=models, half=False,
                  metrics_files=[tmp_path / "ev" / "eval_test_clean.json"],
                  notes=tmp_path / "notes.yaml")
    assert card.bands == ["red", "green", "blue", "nir"] and card.metrics
    assert card.extra["limitations"] == "trained for two steps" and card.extra["evaluation"]["command"]
    (metrics,) = card.metrics.values()
    assert set(metrics["by_part"]) == set(res["by_part"])
    (tmp_path / "bad.yaml").write_text("sha256: forged\n")
    with pytest.raises(ViserError, match="sha256 are card fields"):
        export(ckpt_path, name="tiny-bad", models_dir=models, notes=tmp_path / "bad.yaml")
    net, card2 = load_model(models / "tiny-export.json")
    for k, v in net.state_dict().items():
        assert torch.equal(v, ckpt["model"][k]), k
    card16 = export(ckpt_path, name="tiny-export16", models_dir=models, half=True)
    net16, _ = load_model(models / "tiny-export16.json")
    assert card16.dtype == "float16"
    for k, v in net16.state_dict().items():
        ref = ckpt["model"][k]
        assert torch.equal(v, ref.half().to(v.dtype) if ref.is_floating_point() else ref), k
    with pytest.raises(ViserError, match="over the"):
        export(ckpt_path, name="too-big", models_dir=models, max_mb=0.001)
    assert not (models / "too-big.safetensors").exists() and not (models / "too-big.json").exists()


def test_config_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("trian: {steps: 3}\n")
    with pytest.raises(ViserError, match="unknown config"):
        load_config(p)
    p.write_text("train: {stepz: 3}\n")
    with pytest.raises(ViserError, match="train.stepz"):
        load_config(p)
    p.write_text("model: {use_sr: false, mask_ratio: 0.5}\n")
    cfg = load_config(p, ["train.steps=7", "model.use_pse=false"])
    assert cfg["train"]["steps"] == 7 and cfg["model"] == {"use_sr": False, "mask_ratio": 0.5, "use_pse": False}
    from viser_cr.training.config import model_arch

    arch = model_arch(cfg)
    assert arch["in_bands"] == 4 and arch["use_sr"] is False and arch["num_frames"] == 1


def test_config_base_chain(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nseed: 3\ntrain: {steps: 5, batch_size: 2}\ndata: {bands: [red, green, blue]}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("base: ../a.yaml\nname: b\ntrain: {steps: 9}\n")
    cfg = load_config(tmp_path / "sub" / "b.yaml", ["train.batch_size=4"])
    assert cfg["name"] == "b" and cfg["seed"] == 3 and cfg["data"]["bands"] == ["red", "green", "blue"]
    assert cfg["train"]["steps"] == 9 and cfg["train"]["batch_size"] == 4
    (tmp_path / "a.yaml").write_text("base: sub/b.yaml\n")
    with pytest.raises(ViserError, match="loops back"):
        load_config(tmp_path / "sub" / "b.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ViserError, match="not found"):
        load_config(tmp_path / "c.yaml")


def test_bundled_and_benchmark_configs_load():
    root = Path(__file__).resolve().parents[2] / "training" / "configs"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert len(names) >= 4
    from viser_cr.core.model import ViserCR
    from viser_cr.training.config import model_arch
    from viser_cr.training.distill_l1c_cloud import load_distill_config

    for p in root.glob("*.yaml"):
        if p.name == "l1c-cloud.yaml":  # the bundled L1C cloud classifier's, not a network's
            assert load_distill_config(p)["network"]["hidden"] == 128
            continue
        cfg = load_config(p)
        arch = model_arch(cfg)
        assert arch["in_bands"] == len(cfg["data"]["bands"])
        with torch.device("meta"):
            ViserCR(**arch)  # the architecture builds


@pytest.mark.slow
def test_stack_training_and_evaluation_with_composite_baselines(data_root, tmp_path, tiny_models_dir):
    from datagen import make_series

    from viser_cr.training.evaluate import evaluate

    make_series(tmp_path / "series", n=8, cloudy=(1, 4, 6), size=48)
    path = tiny_config(data_root, tmp_path / "stack", steps=2, val_every=2, ckpt_every=2)
    cfg = yaml.safe_load(path.read_text())
    cfg["model"]["num_frames"] = 3
    cfg["data"].update(num_frames=3, root=str(tmp_path), eval_patch_size=None)
    cfg["data"]["train"] = [{"type": "series", "root": "series", "mode": "synthetic", "window": 3}]
    cfg["data"]["val"] = [{"type": "series", "root": "series", "mode": "real", "window": 3}]
    cfg["data"]["test"] = cfg["data"]["val"]
    path.write_text(yaml.safe_dump(cfg))
    cfg = load_config(path)
    train(cfg)
    res = evaluate(cfg, checkpoint=tmp_path / "stack" / "checkpoints" / "last.pt", output_dir=tmp_path / "ev")
    from viser_cr.training.evaluate import BEST_DATE, MASKED_MEDIAN

    assert {"cloudy input", "median", "least-cloudy", MASKED_MEDIAN, BEST_DATE} <= set(res["table"])
    # the oracle date is at least as close to the target as any composite that takes a whole date
    assert res["table"][BEST_DATE]["psnr"] >= res["table"]["least-cloudy"]["psnr"] - 1e-6
    assert (tmp_path / "ev" / "eval_test_clean_sheet.png").exists()
    (context,) = res["context"].values()  # the context-sensitivity check of the one test part
    assert context["stacks"] >= 1 and 0 < context["clear_context_psnr"] <= 100 and 0 < context["between_psnr"] <= 100
    assert "Context sensitivity" in (tmp_path / "ev" / "eval_test_clean.md").read_text()
    # a one-date model on the same stacks sees their reference only, beside the same composites
    mono = evaluate(cfg, model="tiny-rgbn", models_dir=tiny_models_dir, output_dir=tmp_path / "mono")
    assert {"tiny-rgbn", "least-cloudy", MASKED_MEDIAN} <= set(mono["table"]) and not mono["context"]


@pytest.mark.slow
def test_time_limit_stops_cleanly_and_resume_auto_finishes(data_root, tmp_path):
    cfg = load_config(tiny_config(data_root, tmp_path / "run", steps=4, val_every=100, ckpt_every=100,
                                  max_minutes=1e-6))
    first = train(cfg)
    assert first["steps"] == 1 and first["last_validation_step"] == 1
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 1
    cfg["train"]["max_minutes"] = None
    second = train(cfg, resume="auto")
    assert second["steps"] == 4 and len(_losses(tmp_path / "run")) == 4


def test_frozen_parameters_keep_their_values(data_root, tmp_path):
    """``train.freeze``: the named prefixes keep their warm-started values; the rest trains."""
    first = load_config(tiny_config(data_root, tmp_path / "first", steps=2, val_every=100, ckpt_every=2))
    train(first)
    start = tmp_path / "first" / "checkpoints" / "last.pt"
    cfg = load_config(tiny_config(data_root, tmp_path / "frozen", steps=3, val_every=100, ckpt_every=3,
                                  init_from=str(start), freeze=["embed.", "encoder.", "mask."]))
    train(cfg)
    before, after = load_checkpoint(start)["model"], load_checkpoint(tmp_path / "frozen" / "checkpoints" / "last.pt")["model"]
    frozen = [k for k in before if k.startswith(("embed.", "encoder.", "mask."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    cfg["train"]["freeze"] = [""]  # every name starts with ""
    with pytest.raises(ViserError, match="leaves no parameter to train"):
        train(cfg)


def test_zero_steps_write_the_warm_start_as_it_is(data_root, tmp_path):
    """``train.steps: 0``: no optimisation, the warm-started network as checkpoint step 0 (to export it)."""
    first = load_config(tiny_config(data_root, tmp_path / "first", steps=2, val_every=100, ckpt_every=2))
    train(first)
    start = tmp_path / "first" / "checkpoints" / "last.pt"
    cfg = load_config(tiny_config(data_root, tmp_path / "zero", steps=0, init_from=str(start)))
    assert train(cfg)["steps"] == 0
    written = load_checkpoint(tmp_path / "zero" / "checkpoints" / "last.pt")
    assert written["step"] == 0
    source = load_checkpoint(start)["model"]
    assert all(torch.equal(source[k], written["model"][k]) for k in source)
    with pytest.raises(Exception, match="train.steps must be 0"):
        load_config(tiny_config(data_root, tmp_path / "neg", steps=-1))


def test_gate_sweep_reports_each_threshold_per_part(data_root, tmp_path):
    """``gate_sweep``: a PSNR and a worse-than-input share per threshold and part, and the threshold
    matters (a gate at 0 fills every pixel, one at 1 none). The model trains two steps with a display
    gate first: a batch mixing 8-bit RGBN and reflectance samples, each with its own gate."""
    from viser_cr.training.gate_sweep import markdown, sweep

    cfg = load_config(tiny_config(data_root, tmp_path / "run", steps=2, val_every=100, ckpt_every=100))
    cfg["model"] = dict(cfg["model"], residual_base="fill", display_fill_threshold=0.6)
    train(cfg)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["arch"]["display_fill_threshold"] == 0.6
    cfg["data"]["test"] = cfg["data"]["val"]
    thresholds = [0.0, 0.5, 1.0]
    result = sweep(cfg, thresholds, checkpoint=tmp_path / "run" / "checkpoints" / "last.pt")
    ((label, row),) = result.items()
    assert row["images"] == 2 and len(row["psnr"]) == len(row["worse"]) == 3
    assert all(0.0 <= w <= 1.0 for w in row["worse"]) and all(np.isfinite(row["psnr"]))
    assert row["psnr"][0] != row["psnr"][2]
    table = markdown(result, thresholds)
    assert label in table and "| 0 | 0.5 | 1 |" in table


def test_ground_prior_is_the_clear_ground_under_the_training_clouds_per_radiometry(data_root, tmp_path, capsys):
    """``ground_prior``: per radiometry, the mean clear target under the training samples' clouds, in the
    config's band order; the cloudy input's brightness does not enter, and the same draw gives the same values."""
    from viser_cr.training.ground_prior import ground_under_clouds, main

    cfg = load_config(tiny_config(data_root, tmp_path / "run"))
    result = ground_under_clouds(cfg, samples=24)
    assert result["bands"] == ["red", "green", "blue", "nir"]
    assert result["samples"]["reflectance"] > 0 and result["samples"]["display"] > 0
    reflectance, display = np.array(result["reflectance"]), np.array(result["display"])
    assert reflectance.shape == display.shape == (4,)
    assert (reflectance > 0).all() and (reflectance < 0.4).all()  # ground, not the (near-white) synthetic clouds
    assert display.mean() > reflectance.mean()  # an 8-bit stretch makes the same ground brighter
    assert ground_under_clouds(cfg, samples=24) == result
    assert main(["--config", str(tmp_path / "run.yaml"), "--samples", "24"]) == 0
    assert '"display"' in capsys.readouterr().out


def test_context_lows_replace_the_references_low_frequencies_where_both_see_the_ground():
    """``stack_gap.with_context_lows``: a smooth veil on the reference is taken away where it and a context
    date see clear, its fine detail stays, the bands left out and the context dates are untouched."""
    from viser_cr.training.stack_gap import with_context_lows

    generator = torch.Generator().manual_seed(0)
    ground = torch.rand(1, 4, 96, 96, generator=generator) * 0.3
    detail = (torch.rand(1, 4, 96, 96, generator=generator) - 0.5) * 0.04  # fine, zero-mean texture
    rows = torch.linspace(0, 1, 96)[None, None, :, None]
    veil = 0.05 + 0.05 * rows  # low frequencies only
    stack = torch.stack([ground + veil + detail, ground, ground], dim=1)  # reference, two context dates
    clouds = torch.zeros(1, 3, 1, 96, 96)
    out = with_context_lows(stack, clouds, clouds[:, 0], bands=3, radius=8)
    inner = (slice(None), slice(None), slice(16, 80), slice(16, 80))
    residue = (out[:, 0, :3] - ground[:, :3] - detail[:, :3])[inner]
    assert residue.abs().mean() < 0.005 < veil.mean()  # the veil is gone, the reference's detail kept
    assert torch.equal(out[:, 0, 3], stack[:, 0, 3]) and torch.equal(out[:, 1:], stack[:, 1:])
    clouds[:, 0] = 1.0  # where the reference sees no ground there is nothing to compare: left as it is
    assert torch.equal(with_context_lows(stack, clouds, clouds[:, 0], bands=3, radius=8), stack)


def test_stack_gap_splits_the_reference_into_its_clear_and_cloudy_pixels(tmp_path, tiny_models_dir,
                                                                          tiny_fill_models_dir):
    """``stack_gap``: per part, model and least-cloudy overall, on the reference's clear and cloudy pixels, and
    the model with the context's low frequencies; a mono model is refused."""
    from datagen import make_series

    from viser_cr.training.stack_gap import COLUMNS, gap, markdown

    make_series(tmp_path / "series", n=8, cloudy=(1, 4, 6), size=48)
    cfg = {"data": {"root": str(tmp_path), "bands": ["red", "green", "blue", "nir"], "num_frames": 3,
                    "test": [{"type": "series", "root": "series", "mode": "real", "window": 3, "label": "series"}]}}
    result = gap(cfg, model="tiny-fill-l3", models_dir=tiny_fill_models_dir, max_images=1)
    assert list(result) == ["series"] and result["series"]["images"] >= 1
    columns = result["series"]["columns"]
    assert len(columns) == len(COLUMNS) and all(np.isfinite(v) or np.isnan(v) for v in columns)
    assert np.isfinite(columns[0]) and np.isfinite(columns[1])
    assert "| series |" in markdown(result)
    with pytest.raises(ViserError, match="stack fill model"):
        gap(cfg, model="tiny-rgbn", models_dir=tiny_models_dir)


def test_oracle_masks_runs_the_fill_base_over_the_samples_mask(data_root, tmp_path):
    """``oracle_masks``: per part, the model as it runs and with its fill base over the mask (its score
    times the mask, the larger of the two, the mask alone); a model without a fill base is refused."""
    from viser_cr.core.errors import ViserError
    from viser_cr.training.oracle_masks import COLUMNS, markdown, oracle

    cfg = load_config(tiny_config(data_root, tmp_path / "run", steps=1, val_every=100, ckpt_every=100))
    cfg["model"] = dict(cfg["model"], residual_base="fill")
    train(cfg)
    cfg["data"]["test"] = cfg["data"]["val"]
    result = oracle(cfg, checkpoint=tmp_path / "run" / "checkpoints" / "last.pt")
    ((label, row),) = result.items()
    assert row["images"] == 2 and len(row["psnr"]) == len(row["worse"]) == len(COLUMNS)
    assert all(np.isfinite(row["psnr"])) and all(0.0 <= w <= 1.0 for w in row["worse"])
    assert row["psnr"][0] != row["psnr"][3]  # the mask fills what the barely trained score does not
    assert label in markdown(result)

    cfg["model"] = dict(cfg["model"], residual_base="input")
    cfg["output_dir"] = str(tmp_path / "input-base")
    train(cfg)
    with pytest.raises(ViserError, match="fill model"):
        oracle(cfg, checkpoint=tmp_path / "input-base" / "checkpoints" / "last.pt")
