"""Warm start (train.init_from) with band adaptation, and the trainer's batch augmentations."""

import pytest
import torch

from viser_cr.core.model import ViserCR
from viser_cr.training.augment import channel_shuffle, radiometric, random_frames
from viser_cr.training.warmstart import adapt_state, init_from

TINY = dict(width=8, blocks=[1, 1, 1], heads=[1, 2, 4], refine_blocks=1, sr_iterations=1)
RGBN, RGB = ["red", "green", "blue", "nir"], ["red", "green", "blue"]


def _save_ckpt(path, model, bands):
    torch.save({"format": "viser-cr-train", "model": model.state_dict(), "band_names": bands}, path)


def _randomised(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_untrained_model_is_identity():
    torch.manual_seed(0)
    net = ViserCR(in_bands=4, out_bands=4, **TINY).eval()
    x = torch.rand(1, 4, 32, 32)
    with torch.no_grad():
        out, _ = net(x)
    assert torch.equal(out, x)


def test_rgbn_to_rgb_drops_nir(tmp_path):
    src = _randomised(ViserCR(in_bands=4, out_bands=4, **TINY))
    _save_ckpt(tmp_path / "a.pt", src, RGBN)
    dst = ViserCR(in_bands=3, out_bands=3, **TINY)
    report = init_from(dst, tmp_path / "a.pt", RGB)
    assert set(report["adapted"]) >= {"embed.weight", "output.weight"} and not report["skipped"]
    assert torch.equal(dst.embed.weight, src.embed.weight[:, :3])
    assert torch.equal(dst.output.weight, src.output.weight[:3])
    s_state = src.state_dict()
    for k, v in dst.state_dict().items():
        if k not in ("embed.weight", "output.weight", "output.bias"):
            assert torch.equal(v, s_state[k]), k


def test_new_band_gets_zeros():
    src = _randomised(ViserCR(in_bands=3, out_bands=3, **TINY))
    dst = ViserCR(in_bands=4, out_bands=4, **TINY)
    state, report = adapt_state(src.state_dict(), RGB, dst, RGBN)
    assert torch.equal(state["embed.weight"][:, 3], torch.zeros_like(state["embed.weight"][:, 3]))
    assert torch.equal(state["embed.weight"][:, :3], src.embed.weight)
    assert torch.equal(state["output.weight"][3], torch.zeros_like(state["output.weight"][3]))


def test_stack_from_mono_starts_as_mono(tmp_path):
    src = _randomised(ViserCR(in_bands=4, out_bands=4, **TINY)).eval()
    _save_ckpt(tmp_path / "m.pt", src, RGBN)
    dst = ViserCR(in_bands=4, out_bands=4, num_frames=3, flow_downsample=2, **TINY).eval()
    report = init_from(dst, tmp_path / "m.pt", RGBN)
    assert "fusion.merge.weight" in report["new"] and not report["skipped"]
    x = torch.rand(1, 3, 4, 32, 32)
    with torch.no_grad():
        a, _ = src(x[:, 0])
        b, _ = dst(x)
    assert torch.allclose(a, b, atol=1e-5)


def test_radiometric_same_for_input_and_target():
    torch.manual_seed(0)
    y = torch.rand(3, 4, 16, 16) * 0.5
    x = torch.stack([y, y], 1)
    cfg = {"p": 1.0, "gain": [0.5, 2.0], "gamma": [0.6, 1.6], "contrast": [0.7, 1.4]}
    xa, ya = radiometric(x, y, cfg)
    assert xa.shape == x.shape and ya.shape == y.shape
    assert torch.allclose(xa[:, 0], ya) and torch.allclose(xa[:, 1], ya)
    assert ya.min() >= 0 and ya.max() <= 1 and not torch.allclose(ya, y)
    xb, yb = radiometric(x, y, dict(cfg, p=0.0))
    assert torch.equal(yb, y) and torch.equal(xb, x)


def test_channel_shuffle_puts_rgb_of_input_and_target_in_one_order_and_leaves_nir():
    torch.manual_seed(0)
    y = torch.arange(4.0).view(1, 4, 1, 1).expand(64, 4, 2, 2).clone()  # band k holds k
    x = torch.stack([y, y + 10], 1)  # two dates
    xa, ya = channel_shuffle(x, y, {"p": 1.0})
    assert xa.shape == x.shape and ya.shape == y.shape
    assert torch.equal(xa[:, 0], ya) and torch.equal(xa[:, 1], ya + 10)  # one order for every date and the target
    assert torch.equal(ya[:, 3], y[:, 3])  # NIR stays
    assert torch.equal(ya[:, :3].sort(dim=1).values, y[:, :3])  # a permutation of R, G, B
    orders = {tuple(int(v) for v in ya[i, :3, 0, 0]) for i in range(64)}
    assert len(orders) > 3  # the orders vary by sample
    four = x[:, 0]
    xf, _ = channel_shuffle(four, y, {"p": 1.0})
    assert xf.shape == four.shape
    xb, yb = channel_shuffle(x, y, {"p": 0.0})
    assert torch.equal(xb, x) and torch.equal(yb, y)


def test_random_frames_keeps_reference_first():
    torch.manual_seed(0)
    x = torch.arange(3.0).view(1, 3, 1, 1, 1).expand(2, 3, 2, 4, 4)
    seen = set()
    for _ in range(30):
        f = random_frames(x)
        assert f.dim() == 5 and torch.equal(f[:, 0], x[:, 0])
        seen.add(f.shape[1])
    assert seen == {1, 2, 3}
    assert random_frames(x[:, 0]).dim() == 4


def test_init_from_unrelated_fails(tmp_path):
    torch.save({"format": "viser-cr-train", "model": {"foo": torch.zeros(1)}, "band_names": RGBN}, tmp_path / "x.pt")
    with pytest.raises(Exception, match="shares no weights"):
        init_from(ViserCR(in_bands=4, out_bands=4, **TINY), tmp_path / "x.pt", RGBN)
