"""training/score_check.py: a model's cloud score against cloud labels, on generated ukis-csmask files."""

import json

import numpy as np
import pytest
import torch

from viser_cr.training.datasets.labels import UKIS_BANDS
from viser_cr.training.metrics import ground_kinds
from viser_cr.training.score_check import agreement, check, main, markdown, score_map, score_of


def test_agreement_counts_by_hand():
    labels = np.array([[4, 4, 3, 3], [0, 0, 1, 3]])
    score = np.array([[0.9, 0.2, 0.7, 0.1], [0.8, 0.1, 0.0, 0.0]])
    r = agreement(score, labels, threshold=0.5)
    assert r["cloud_fraction"] == pytest.approx(2 / 8)
    assert r["cloud_recall"] == pytest.approx(1 / 2)           # one of two cloud pixels called cloud
    assert r["false_cloud_on_clear"] == pytest.approx(1 / 4)   # one of four clear pixels called cloud
    assert r["shadow_called_cloud"] == pytest.approx(1 / 2)
    assert r["iou"] == pytest.approx(1 / 3)                    # called {cloud, clear}, cloud {2}: 1 / 3
    assert r["accuracy"] == pytest.approx(4 / 6)               # shadow left out
    assert "false_cloud_on_water" not in r                     # no ground kinds given


def test_agreement_false_cloud_on_water_and_bright_ground():
    """The false-cloud rate on each ground kind counts the kind's clear pixels only (not its cloud or shadow)."""
    labels = np.array([[4, 3, 3, 3], [0, 3, 3, 1]])
    score = np.array([[0.9, 0.9, 0.1, 0.1], [0.9, 0.9, 0.9, 0.0]])
    water = np.array([[1, 0, 0, 0], [1, 0, 0, 1]], bool)    # one clear water pixel (the others cloud, shadow)
    bright = np.array([[0, 1, 1, 1], [0, 1, 0, 0]], bool)   # four clear bright pixels, two called cloud
    r = agreement(score, labels, threshold=0.5, kinds={"water": water, "bright": bright})
    assert r["false_cloud_on_water"] == 0.0 and r["water_pixels"] == 1  # under cloud or shadow it is not clear water
    assert r["false_cloud_on_bright"] == pytest.approx(2 / 4) and r["bright_pixels"] == 4
    none = agreement(score, labels, kinds={"water": np.zeros_like(water)})
    assert none["false_cloud_on_water"] is None and none["water_pixels"] == 0
    table = markdown({"model": "m", "threshold": 0.5, "columns": [0, 1], "files": {"f": r}})
    assert "| 0.0 % (1 px) | 50.0 % (4 px) |" in table


def test_check_runs_a_model_on_every_file(tmp_path, tiny_models_dir):
    rng = np.random.default_rng(0)
    for name in ("sentinel2", "landsat7"):
        img = rng.uniform(0, 0.4, (40, 48, 6)).astype(np.float32)
        msk = np.full((40, 48, 1), 3, np.uint8)
        msk[:10, :, 0] = 4
        img[:10] = 0.9
        np.savez(tmp_path / f"{name}.npz", img=img, msk=msk)
    result = check("tiny-rgbn", tmp_path, models_dir=tiny_models_dir)
    assert result["model"] == "tiny-rgbn" and set(result["files"]) == {"sentinel2", "landsat7"}
    assert result["files"]["sentinel2"]["cloud_fraction"] == pytest.approx(10 / 40)
    assert "| sentinel2 |" in markdown(result)
    from viser_cr.core.weights import load_model

    model, card = load_model("tiny-rgbn", models_dir=tiny_models_dir)
    with np.load(tmp_path / "landsat7.npz") as npz:
        score = score_map(model, card.bands, npz["img"])
    assert score.shape == (40, 48) and np.all((score >= 0) & (score <= 1))
    with np.load(tmp_path / "landsat7.npz") as npz:
        # the reflectance's water and bright ground, 3 px or more from labelled cloud
        kinds = ground_kinds(np.moveaxis(npz["img"], -1, 0), UKIS_BANDS, cloud=npz["msk"][..., 0] == 4)
        assert kinds["water"][10:13].sum() == 0 and kinds["water"][13:].any()
        assert result["files"]["landsat7"] == agreement(score, npz["msk"][..., 0], kinds=kinds)
        assert result["files"]["landsat7"]["water_pixels"] == (kinds["water"] & (npz["msk"][..., 0] == 3)).sum() > 0
    # the east half only (held out of labels parts that train on the west half): its cloud is a third
    east = check("tiny-rgbn", tmp_path, models_dir=tiny_models_dir, columns=(0.5, 1.0), threshold=0.3)
    assert east["columns"] == [0.5, 1.0] and east["threshold"] == 0.3
    with np.load(tmp_path / "landsat7.npz") as npz:
        east_score = score_map(model, card.bands, npz["img"][:, 24:])
        east_kinds = {k: v[:, 24:] for k, v in kinds.items()}  # the cloud spans every column
        assert east["files"]["landsat7"] == agreement(east_score, npz["msk"][:, 24:, 0], 0.3, east_kinds)
    # the same files as 8-bit exports (2-98 % of each image), run as 8-bit imagery
    from viser_cr.training.datasets.common import stretch_to_8bit

    exported = check("tiny-rgbn", tmp_path, models_dir=tiny_models_dir, stretch=(2, 98))
    assert exported["stretch"] == [2, 98] and "8-bit export" in markdown(exported)
    with np.load(tmp_path / "landsat7.npz") as npz:
        picked = np.stack([npz["img"][..., i] for i in (2, 1, 0, 3)])
        x = stretch_to_8bit(picked, np.ones(picked.shape[1:], dtype=bool), (2, 98))
        model.use_radiometry(True)
        with torch.inference_mode():
            own = model(torch.from_numpy(x)[None])[1][0, 0].numpy()
        assert exported["files"]["landsat7"] == agreement(own, npz["msk"][..., 0], kinds=kinds)  # the ground's own kinds


def test_check_a_labelled_raster_leaves_its_unknown_values_out(tmp_path, tiny_models_dir):
    """``labelled_raster``: a cloudy raster and its label raster (a Landsat 8 QA band's cloud confidence), read as
    a training labels part reads it; the unknown class counts neither as cloud nor as clear."""
    from rasters import write_raster

    from viser_cr.core.weights import load_model

    rng = np.random.default_rng(1)
    dn = rng.integers(8000, 12000, (10, 32, 40)).astype(np.uint16)
    confidence = np.ones((2, 32, 40), np.uint8)
    confidence[0, :8] = 3
    confidence[0, 8:16] = 2
    dn[:, :8] = 50000
    write_raster(tmp_path / "cloudy_30m.tif", dn)
    write_raster(tmp_path / "confidence.tif", confidence)
    source = {"files": str(tmp_path / "cloudy_30m.tif"), "layout": "landsat8-l1-10", "labels": "confidence.tif",
              "cloud": [3], "unknown": [2]}
    model, card = load_model("tiny-rgbn", models_dir=tiny_models_dir)
    picked = np.stack([dn[i] * 2e-5 - 0.1 for i in (3, 2, 1, 4)]).astype(np.float32)  # red, green, blue, NIR
    score = score_of(model, picked)
    threshold = float(np.median(score[8:16]))  # half the unknown rows called cloud: counting them would show
    result = check("tiny-rgbn", models_dir=tiny_models_dir, labelled_raster=source, threshold=threshold)
    classes = np.ones((32, 40), np.uint8)
    classes[:8] = 4
    by_hand = agreement(score[16:], classes[16:], threshold)  # unknown rows 8-15 left out
    by_hand_cloud = agreement(score[:8], classes[:8], threshold)
    as_if_clear = agreement(score[8:], classes[8:], threshold)
    got = result["files"]["cloudy_30m"]
    assert got["cloud_recall"] == pytest.approx(by_hand_cloud["cloud_recall"])
    assert got["false_cloud_on_clear"] == pytest.approx(by_hand["false_cloud_on_clear"])
    assert got["false_cloud_on_clear"] != pytest.approx(as_if_clear["false_cloud_on_clear"])
    assert result["labels"] == "confidence.tif" and "confidence.tif labels" in markdown(result)
    # the north half only, from the command line
    out = tmp_path / "north.json"
    assert main(["--model", "tiny-rgbn", "--models-dir", str(tiny_models_dir), "--raster", str(tmp_path / "cloudy_30m.tif"),
                 "--labels", str(tmp_path / "confidence.tif"), "--layout", "landsat8-l1-10", "--cloud", "3",
                 "--unknown", "2", "--rows", "0", "0.5", "--threshold", "0.4", "--json", str(out)]) == 0
    north = json.loads(out.read_text())
    assert north["rows"] == [0.0, 0.5]
    assert north["files"]["cloudy_30m"]["cloud_fraction"] == pytest.approx(8 / 16)
    with pytest.raises(SystemExit):
        main(["--model", "tiny-rgbn", "--raster", str(tmp_path / "cloudy_30m.tif")])  # --labels etc. missing
