"""Real cloud labels without a clear target (training.datasets.labels): samples that train the score only."""

import numpy as np
import pytest
import torch

pytest.importorskip("rasterio")

from rasters import write_raster

from viser_cr.core.errors import InputError
from viser_cr.training.datasets import build_dataset
from viser_cr.training.losses import CloudRemovalLoss


def _ukis(path, seed=0, size=64):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0.02, 0.3, (size, size, 6)).astype(np.float32)
    msk = np.full((size, size, 1), 3, np.uint8)  # clear land
    msk[:, size // 2 :][:, :, 0][:20] = 4  # a labelled cloud in the east half only
    img[msk[..., 0] == 4] = 0.8
    msk[40:50, :10] = 0  # shadow
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, img=img, msk=msk)
    return img, msk


def _data(tmp_path):
    root = tmp_path / "shared"
    _ukis(root / "ukis" / "sentinel2.npz")
    dn = np.full((4, 48, 48), 9000, np.uint16)
    gt = np.zeros((48, 48), np.uint8)
    gt[10:30, 10:30] = 1
    dn[:, gt == 1] = 40000
    write_raster(root / "l8" / "patch.tif", dn, crs=None)
    write_raster(root / "l8" / "patch_gt.tif", gt, crs=None)
    return root


def _cfg(root, sources, **part):
    return {"root": str(root), "bands": ["red", "green", "blue", "nir"], "patch_size": 32,
            "train": [{"type": "labels", "length": 8, "sources": sources, **part}],
            "test": [{"type": "labels", "sources": sources, "patch_size": None}]}  # whole images


def test_a_labelled_sample_has_its_cloud_as_mask_and_no_target(tmp_path):
    root = _data(tmp_path)
    sources = [{"files": "l8/*.tif", "layout": "landsat8-rgbn-dn", "labels": "{stem}_gt.tif", "cloud": [1]}]
    test = build_dataset(_cfg(root, sources), "test")
    assert len(test) == 1  # the label raster beside the image is not an image
    s = test[0]
    assert float(s["target_weight"]) == 0.0 and float(s["mask_weight"]) == 1.0
    assert torch.equal(s["target"], s["input"])
    # labelled cloud <-> bright pixels (2e-5 * 40000 - 0.1 = 0.7 reflectance), clear ground 0.08
    assert torch.equal(s["mask"][0] > 0, s["input"][0] > 0.5)
    assert torch.allclose(s["input"][:, s["mask"][0] == 0], torch.tensor(0.08))
    train = build_dataset(_cfg(root, sources), "train")
    assert len(train) == 8 and train[3]["input"].shape == (4, 32, 32)


def test_labelled_clouds_as_an_8bit_export(tmp_path):
    """``stretch``: the labelled image as a GIS renders a cloudy layer (its own percentiles to 0..255),
    flagged display imagery; the labels are unchanged."""
    root = _data(tmp_path)
    sources = [{"files": "l8/*.tif", "layout": "landsat8-rgbn-dn", "labels": "{stem}_gt.tif", "cloud": [1]}]
    plain = build_dataset(_cfg(root, sources), "test")[0]
    s = build_dataset(_cfg(root, [dict(sources[0], stretch=[2, 98])]), "test")[0]
    assert bool(s["display"]) and not bool(plain["display"])
    assert torch.equal(s["mask"], plain["mask"]) and float(s["target_weight"]) == 0.0
    x = s["input"]
    assert torch.allclose(x * 255, torch.round(x * 255), atol=1e-4)
    assert torch.all(x[:, s["mask"][0] > 0] == 1) and torch.all(x[:, s["mask"][0] == 0] == 0)  # two levels: 0 / 255


def test_ukis_scenes_give_the_half_their_window_keeps(tmp_path):
    root = _data(tmp_path)
    west = build_dataset(_cfg(root, [{"files": "ukis/*.npz", "format": "ukis", "window": [0, 0, 0.5, 1]}]), "test")
    east = build_dataset(_cfg(root, [{"files": "ukis/*.npz", "format": "ukis", "window": [0.5, 0, 1, 1]}]), "test")
    assert float(west[0]["mask"].sum()) == 0 and float(east[0]["mask"].sum()) == 20 * 32
    # the model's bands picked from blue, green, red, NIR, SWIR1, SWIR2 (shadow is not cloud)
    img = np.load(root / "ukis" / "sentinel2.npz")["img"]
    assert np.allclose(west[0]["input"].numpy(), np.moveaxis(img[:, :32][..., [2, 1, 0, 3]], -1, 0))


def test_labelled_sources_say_what_is_missing(tmp_path):
    root = _data(tmp_path)
    with pytest.raises(InputError, match="give 'labels'.*'cloud'"):
        build_dataset(_cfg(root, [{"files": "l8/patch.tif", "layout": "landsat8-rgbn-dn"}]), "test")
    cfg = _cfg(root, [{"files": "ukis/*.npz", "format": "ukis"}])
    cfg["bands"] = ["red", "green", "blue", "cirrus"]
    with pytest.raises(InputError, match=r"no band\(s\) \['cirrus'\]"):
        build_dataset(cfg, "test")


def test_samples_without_a_target_train_the_score_only():
    torch.manual_seed(0)
    loss = CloudRemovalLoss(["red", "green", "blue"], perceptual=0.0, score=1.0)
    pred = torch.rand(3, 3, 16, 16, requires_grad=True)
    target = torch.rand(3, 3, 16, 16)
    score = torch.rand(3, 1, 16, 16, requires_grad=True)
    mask = (torch.rand(3, 1, 16, 16) > 0.5).float()
    weight = torch.tensor([1.0, 1.0, 0.0])
    total, parts = loss(pred, target, score, mask, torch.ones(3), target_weight=weight)
    alone, alone_parts = loss(pred[:2], target[:2], score[:2], mask[:2], torch.ones(2))
    assert parts["l1"] == pytest.approx(alone_parts["l1"]) and parts["fft"] == pytest.approx(alone_parts["fft"])
    assert parts["score"] != pytest.approx(alone_parts["score"])  # the third sample's labels count
    total.backward()
    assert float(pred.grad[2].abs().sum()) == 0.0 and float(score.grad[2].abs().sum()) > 0.0


def test_labelled_scenes_travel_in_a_gpu_pack(tmp_path, monkeypatch):
    import sys

    import yaml

    pytest.importorskip("tifffile")
    from viser_cr.training.pack import pack

    root = _data(tmp_path)
    sources = [{"files": "ukis/*.npz", "format": "ukis", "window": [0, 0, 0.5, 1]},
               {"files": "l8/*.tif", "layout": "landsat8-rgbn-dn", "labels": "{stem}_gt.tif", "cloud": [1]}]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": _cfg(root, sources)}))
    out = tmp_path / ".gpu"
    sizes = pack(config, out)
    assert set(sizes) == {"data/ukis/sentinel2.npz", "data/l8/patch.tif", "data/l8/patch_gt.tif"}
    assert (out / "data/ukis/sentinel2.npz").read_bytes() == (root / "ukis/sentinel2.npz").read_bytes()
    expected = build_dataset(_cfg(root, sources), "train")
    monkeypatch.setitem(sys.modules, "rasterio", None)
    got = build_dataset(_cfg(out / "data", sources), "train")
    for i in range(len(expected)):
        assert torch.equal(expected[i]["input"], got[i]["input"]) and torch.equal(expected[i]["mask"], got[i]["mask"])


def test_labels_trusted_for_cloud_only_leave_the_rest_out_of_the_score_loss(tmp_path):
    from viser_cr.training.losses import score_bce

    root = _data(tmp_path)
    source = {"files": "ukis/*.npz", "format": "ukis", "window": [0.5, 0, 1, 1], "clear_known": False}
    s = build_dataset(_cfg(root, [source]), "test")[0]
    assert torch.equal(s["mask_known"], s["mask"]) and float(s["mask"].sum()) == 20 * 32
    # only the known (cloud) pixels count: a score right there and wrong elsewhere costs almost nothing
    score = torch.ones_like(s["mask"])[None]  # cloud everywhere
    assert float(score_bce(score, s["mask"][None], torch.ones(1), s["mask_known"][None])) < 1e-5
    assert float(score_bce(score, s["mask"][None], torch.ones(1))) > 1.0
    trusted = build_dataset(_cfg(root, [dict(source, clear_known=True)]), "test")[0]
    assert float(trusted["mask_known"].min()) == 1.0


def test_unknown_label_values_are_left_out_of_the_score_loss(tmp_path):
    """``unknown``: a QA band's medium cloud confidence is neither cloud nor clear (mask_known 0 there), read from
    a pre-collection Landsat 8 L1 stack of ten bands (landsat8-l1-10: blue is its second band, NIR its fifth)."""
    root = tmp_path / "shared"
    dn = np.zeros((10, 40, 40), np.uint16)
    for band, value in enumerate(range(6000, 16000, 1000)):
        dn[band] = value  # each band its own level, so the picked bands can be told apart
    confidence = np.ones((2, 40, 40), np.uint8)  # band 1 cloud confidence 1 low, 2 medium, 3 high
    confidence[0, :10] = 3
    confidence[0, 10:15] = 2
    write_raster(root / "l8" / "cloudy_30m.tif", dn)
    write_raster(root / "l8" / "confidence.tif", confidence)
    source = {"files": "l8/cloudy_30m.tif", "layout": "landsat8-l1-10", "labels": "confidence.tif", "cloud": [3],
              "unknown": [2]}
    s = build_dataset(_cfg(root, [source]), "test")[0]
    # red, green, blue, NIR = bands 4, 3, 2, 5 (DN 9000, 8000, 7000, 10000), reflectance 2e-5 * DN - 0.1
    assert torch.allclose(s["input"][:, 0, 0], torch.tensor([0.08, 0.06, 0.04, 0.10]), atol=1e-6)
    assert float(s["mask"][0, :10].min()) == 1.0 and float(s["mask"][0, 10:].max()) == 0.0
    assert float(s["mask_known"][0, 10:15].max()) == 0.0   # medium: left out
    assert float(s["mask_known"][0, :10].min()) == 1.0 and float(s["mask_known"][0, 15:].min()) == 1.0
    plain = build_dataset(_cfg(root, [{k: v for k, v in source.items() if k != "unknown"}]), "test")[0]
    assert float(plain["mask_known"].min()) == 1.0           # without it every label is trusted


def test_a_teacher_labels_real_l1c_clouds_as_a_run_masks_them(tmp_path, fixtures_dir):
    """``teacher``: real 13-band L1C dates labelled by the bundled L1C classifier as a run computes its mask
    (``core.s2cloudless.window_cloud``); clear only where the classifier is sure and away from its clouds."""
    import shutil

    import rasterio

    from viser_cr.core import s2cloudless

    root = tmp_path / "shared"
    (root / "s2").mkdir(parents=True)
    for name in ("ts_s2_ImgNo_7_2018-04-01_64.tif", "ts_s2_ImgNo_9_2018-04-26_64.tif"):
        shutil.copy(fixtures_dir / name, root / "s2" / name)
    source = {"files": "s2/*.tif", "layout": "s2-13", "teacher": "viser-l1c-cloud"}
    test = build_dataset(_cfg(root, [source]), "test")
    cloudy, clear = test[0], test[1]  # sorted: date 7 (84 % cloud), date 9 (clear)
    with rasterio.open(root / "s2" / "ts_s2_ImgNo_7_2018-04-01_64.tif") as ds:
        l1c = ds.read().astype(np.float32) * 1e-4
    expected = s2cloudless.window_cloud(l1c, s2cloudless.S2_13, classifier="viser-l1c-cloud")
    assert np.array_equal(cloudy["mask"][0].numpy() > 0, expected) and expected.mean() > 0.6
    assert torch.allclose(cloudy["input"][0], torch.from_numpy(l1c[s2cloudless.S2_13.index("red")]))
    # known clear: the probability below 0.2 and no cloud within 4 px; the rest between is left out
    probability = s2cloudless.cloud_probability(l1c, s2cloudless.S2_13, s2cloudless.STEP, "viser-l1c-cloud")
    known_clear = (cloudy["mask_known"][0] > 0) & (cloudy["mask"][0] == 0)
    assert float(probability[known_clear.numpy()].max(initial=0.0)) < 0.2
    assert bool((cloudy["mask_known"][0][cloudy["mask"][0] > 0] == 1).all())
    assert float(clear["mask"].mean()) < 0.05 and float(clear["mask_known"].mean()) > 0.8
    export = build_dataset(_cfg(root, [dict(source, stretch=[2, 98])]), "test")[0]
    assert bool(export["display"]) and torch.equal(export["mask"], cloudy["mask"])
    with pytest.raises(InputError, match="a teacher reads 13-band Sentinel-2 L1C; layout s2-bgrn lacks"):
        build_dataset(_cfg(root, [dict(source, layout="s2-bgrn")]), "test")
