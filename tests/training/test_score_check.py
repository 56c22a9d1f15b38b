"""training/score_check.py: a model's cloud score against cloud labels, on generated ukis-csmask files."""

import numpy as np
import pytest
import torch

from viser_cr.training.score_check import agreement, check, markdown, score_map


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
    assert result["files"]["landsat7"] == agreement(score, np.load(tmp_path / "landsat7.npz")["msk"][..., 0])
    # the east half only (held out of labels parts that train on the west half): its cloud is a third
    east = check("tiny-rgbn", tmp_path, models_dir=tiny_models_dir, columns=(0.5, 1.0), threshold=0.3)
    assert east["columns"] == [0.5, 1.0] and east["threshold"] == 0.3
    with np.load(tmp_path / "landsat7.npz") as npz:
        east_score = score_map(model, card.bands, npz["img"][:, 24:])
        assert east["files"]["landsat7"] == agreement(east_score, npz["msk"][:, 24:, 0], 0.3)
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
        assert exported["files"]["landsat7"] == agreement(own, npz["msk"][..., 0])
