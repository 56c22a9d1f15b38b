"""Properties of the synthetic cloud generator and the synthetic-cloud dataset."""

import numpy as np
import pytest
import torch

from viser_cr.training.datasets.clouds import CloudConfig, CloudGenerator, fractal_field, load_cloud_shapes
from viser_cr.training.datasets.common import RGBN, S2_13
from viser_cr.training.datasets.synthetic import ClearImage, SyntheticCloudDataset


def _ground(seed=0, c=4, h=64, w=64):
    rng = np.random.default_rng(seed)
    return (0.05 + 0.1 * rng.random((c, h, w))).astype(np.float32)


@pytest.fixture
def shapes(tmp_path):
    """A fake CLP.npy: (T, H, W, 1) probabilities, some partly cloudy."""
    rng = np.random.default_rng(0)
    maps = np.stack([fractal_field(rng, 40, 40, 3.0) for _ in range(5)])[..., None].astype(np.float32)
    maps[0] = 1.0  # fully cloudy date: dropped
    path = tmp_path / "CLP.npy"
    np.save(path, maps)
    return load_cloud_shapes(path)


def test_clouds_change_only_masked_pixels_and_not_the_input(shapes):
    gen = CloudGenerator(shapes=shapes)
    for seed in range(12):
        img = _ground(seed)
        before = img.copy()
        res = gen.generate(np.random.default_rng(seed), img, RGBN)
        assert np.array_equal(img, before)  # the clear image (the target) is untouched
        changed = (res["cloudy"] != img).any(0)
        assert not changed[~res["mask"]].any()
        assert res["mask"].any() and changed.mean() > 0.5 * res["mask"].mean()
        assert res["cloudy"].dtype == np.float32 and np.all(res["cloudy"] >= 0)


def test_clouds_brighten_and_shadows_darken():
    cfg = CloudConfig(p_thick=1.0, p_thin=0.0, p_shadow=1.0, thick_coverage=(0.3, 0.3))
    gen = CloudGenerator(cfg)
    img = _ground(1)
    brighter = darker = 0
    for seed in range(8):
        res = gen.generate(np.random.default_rng(seed), img, RGBN)
        cloud = res["cloud"] > 0.5
        shadow = (res["shadow"] > 0.2) & (res["cloud"] == 0)
        assert (res["cloudy"][:, cloud] > img[:, cloud]).mean() > 0.95
        if shadow.any():
            assert (res["cloudy"][:, shadow] < img[:, shadow]).all()
            darker += 1
        brighter += int(cloud.any())
    assert brighter == 8 and darker >= 4


def test_spectral_plausibility():
    """Thin haze scatters more in blue than NIR; thick clouds are dimmer in SWIR than in the visible."""
    gen = CloudGenerator(CloudConfig(p_thick=0.0, p_thin=1.0, thin_coverage=(1.0, 1.0), thin_opacity=(0.5, 0.5)))
    img = np.full((13, 32, 32), 0.1, np.float32)
    res = gen.generate(np.random.default_rng(3), img, S2_13)
    d = res["cloudy"] - img
    assert d[S2_13.index("blue")].mean() > d[S2_13.index("nir")].mean() > 0
    gen = CloudGenerator(CloudConfig(p_thick=1.0, p_thin=0.0, p_shadow=0.0, thick_coverage=(0.9, 0.9)))
    res = gen.generate(np.random.default_rng(4), img, S2_13)
    cloud = res["cloud"] > 0.9
    c = res["cloudy"][:, cloud].mean(1)
    assert c[S2_13.index("swir2")] < c[S2_13.index("swir1")] < c[S2_13.index("red")]


def test_display_radiometry_is_clipped_and_quantised():
    gen = CloudGenerator()
    img = (np.round(_ground(2) * 2 * 255) / 255).astype(np.float32)
    res = gen.generate(np.random.default_rng(0), img, RGBN, radiometry="display", quantum=1 / 255)
    out = res["cloudy"]
    assert out.max() <= 1.0 and np.allclose(out * 255, np.round(out * 255), atol=1e-3)


def test_deterministic_with_a_seed(shapes):
    gen = CloudGenerator(shapes=shapes)
    img = _ground()
    a = gen.generate(np.random.default_rng(42), img, RGBN)
    b = gen.generate(np.random.default_rng(42), img, RGBN)
    c = gen.generate(np.random.default_rng(43), img, RGBN)
    assert np.array_equal(a["cloudy"], b["cloudy"]) and np.array_equal(a["mask"], b["mask"])
    assert not np.array_equal(a["cloudy"], c["cloudy"])


def test_p_clear_and_valid_mask():
    gen = CloudGenerator()
    img = _ground()
    res = gen.generate(np.random.default_rng(0), img, RGBN, p_clear=1.0)
    assert not res["mask"].any() and np.array_equal(res["cloudy"], img)
    valid = np.zeros((64, 64), bool)
    valid[:, 32:] = True
    res = gen.generate(np.random.default_rng(1), img, RGBN, valid=valid)
    assert np.array_equal(res["cloudy"][:, :, :32], img[:, :, :32])


def test_dataset_stack_independent_dates_target_untouched():
    img = _ground(5, h=80, w=80)
    clear = ClearImage(img.copy(), np.ones((80, 80), bool), "x_p1", "x", "reflectance", None)
    ds = SyntheticCloudDataset([clear], RGBN, num_frames=3, length=6, patch_size=48, seed=7, p_clear_other=0.0)
    s = ds[0]
    assert s["input"].shape == (3, 4, 48, 48) and s["date_masks"].shape == (3, 1, 48, 48)
    assert np.array_equal(clear.data, img)  # the source is never modified
    ref_changed = (s["input"][0] != s["target"]).any(0)
    assert not ref_changed[s["mask"][0] == 0].any()
    dm = s["date_masks"][:, 0]
    assert not torch.equal(dm[0], dm[1]) and not torch.equal(dm[1], dm[2])  # independent clouds per date
    assert torch.equal(s["input"], ds[0]["input"])
    # the target is a crop of the clear image (rotated / flipped): same multiset of values
    vals = np.sort(s["target"].numpy().ravel())
    assert np.isin(vals, img.ravel()).all()
    mono = SyntheticCloudDataset([clear], RGBN, length=4, patch_size=32, seed=0)
    m = mono[1]
    assert m["input"].shape == (4, 32, 32) and float(m["mask_weight"]) == 1.0
