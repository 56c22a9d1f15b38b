"""Distilling the L1C cloud classifier from s2cloudless (training.distill_l1c_cloud) on real L1C fixture crops."""

import json

import numpy as np
import pytest
import rasterio

from viser_cr.core import l1c_cloud, s2cloudless
from viser_cr.core.errors import InputError
from viser_cr.training.distill_l1c_cloud import distill, load_distill_config, main


def _config(fixtures_dir, tmp_path, steps=300):
    path = tmp_path / "l1c-cloud.yaml"
    path.write_text(json.dumps({  # JSON is YAML
        "data": {"root": str(fixtures_dir),
                 "train": [{"files": "ts_s2_ImgNo_[79]_*_64.tif"}, {"files": "s2l1c_cloudy_96.tif"}],
                 "held_out": [{"label": "the partly cloudy series date", "files": "ts_s2_ImgNo_5_*_64.tif"}]},
        "cells": [1, 4], "network": {"hidden": 8},
        "train": {"steps": steps, "batch_size": 512, "threads": 1}}))
    return path


def _mean_probability(classifier, path):
    with rasterio.open(path) as ds:
        l1c = ds.read().astype(np.float32) * 1e-4
    pixels = np.moveaxis(l1c[[s2cloudless.S2_13.index(b) for b in s2cloudless.MODEL_BANDS]], 0, -1).reshape(-1, 10)
    return float(classifier.predict(pixels).mean())


def test_distils_a_classifier_that_loads_with_its_card(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "cloud"
    assert main(["--config", str(_config(fixtures_dir, tmp_path)), "--out", str(out), "--set", "train.seed=1"]) == 0
    assert f"written: {out / 'viser-l1c-cloud.json'}" in capsys.readouterr().out
    card = json.loads((out / "viser-l1c-cloud.json").read_text())
    assert card["sha256"].startswith("sha256:") and card["config"]["train"]["seed"] == 1
    check = card["held_out_agreement"]["the partly cloudy series date"]
    assert check["images"] == 1 and 0 < check["s2cloudless_cloud_share"] < 1 and check["iou"] is not None
    classifier = l1c_cloud.load(out)  # its sha256 checked
    # it learned the teacher: the cloudy date (84 % cloud) scores far above the clear one
    cloudy = _mean_probability(classifier, fixtures_dir / "ts_s2_ImgNo_7_2018-04-01_64.tif")
    clear = _mean_probability(classifier, fixtures_dir / "ts_s2_ImgNo_9_2018-04-26_64.tif")
    assert cloudy > 0.6 and clear < 0.3, (cloudy, clear)


def test_refuses_without_the_teacher_or_the_images(fixtures_dir, tmp_path, monkeypatch):
    cfg = load_distill_config(_config(fixtures_dir, tmp_path, steps=1))
    cfg["data"]["train"].append({"files": "no-such-*.tif"})
    with pytest.raises(InputError, match="no file matches no-such-"):
        distill(cfg, tmp_path / "out")
    monkeypatch.setattr(s2cloudless, "available", lambda: False)
    with pytest.raises(InputError, match="the teacher is s2cloudless, which is not installed here"):
        distill(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
