"""VISER-CR network: shapes for every switch, temporal inputs, gradients, padding, determinism."""

import itertools
import json

import pytest
import torch

from viser_cr.core.errors import InputError
from viser_cr.core.model import CONFIGS, ViserCR, config, score_loss, score_targets
from viser_cr.core.model.adaptive_mask import AdaptiveMask
from viser_cr.core.model.temporal import SpyNet, flow_warp

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = dict(
    in_bands=4, out_bands=4, width=8, blocks=[1, 1, 1], heads=[1, 2, 4], refine_blocks=1, sr_iterations=1
)


def tiny(**overrides):
    torch.manual_seed(0)
    return ViserCR(**dict(TINY, **overrides))


@pytest.mark.parametrize("use_mask,use_pse,use_sr", list(itertools.product([False, True], repeat=3)))
def test_shapes_for_every_switch_combination(use_mask, use_pse, use_sr):
    model = tiny(use_mask=use_mask, use_pse=use_pse, use_sr=use_sr)
    x = torch.rand(2, 4, 16, 24)
    for mode in (model.train, model.eval):
        mode()
        image, score = model(x)
        assert image.shape == (2, 4, 16, 24)
        assert score.shape == (2, 1, 16, 24)
        assert torch.isfinite(image).all()
        assert 0.0 <= float(score.detach().min()) and float(score.detach().max()) <= 1.0


def nonzero_output(model):
    """The output conv starts at zero (the untrained network is the identity through the global
    residual), which hides the trunk from the output and blocks gradients at step 0: perturb it."""
    torch.nn.init.normal_(model.output.weight, std=0.01)
    return model


def test_untrained_model_is_the_identity():
    model = tiny().eval()
    x = torch.rand(1, 4, 16, 20)
    with torch.no_grad():
        assert torch.equal(model(x)[0], x)


@pytest.mark.parametrize("dates", [1, 2, 3])
def test_temporal_model_accepts_any_number_of_dates(dates):
    model = tiny(num_frames=3).eval()
    image, score = model(torch.rand(1, dates, 4, 16, 20))
    assert image.shape == (1, 4, 16, 20) and score.shape == (1, 1, 16, 20)


def test_temporal_model_accepts_4d_input_and_equals_one_date():
    model = tiny(num_frames=3).eval()
    x = torch.rand(1, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x)[0], model(x[:, None])[0])


@pytest.mark.parametrize("use_flow", [True, False])
def test_temporal_model_trains_with_three_dates(use_flow):
    model = tiny(num_frames=3, use_flow=use_flow, flow_downsample=2).train()
    nonzero_output(model)
    image, score = model(torch.rand(1, 3, 4, 16, 16))
    image.mean().backward()
    assert model.fusion.confidence_fc1.weight.grad is not None
    assert model.fusion.confidence_fc1.weight.grad.abs().sum() > 0


def test_mono_model_given_5d_single_date_works_and_more_dates_fail():
    model = tiny().eval()
    assert model(torch.rand(1, 1, 4, 16, 16))[0].shape == (1, 4, 16, 16)
    with pytest.raises(InputError, match="1 to 1 date"):
        model(torch.rand(1, 2, 4, 16, 16))


def test_wrong_band_count_is_an_input_error():
    with pytest.raises(InputError, match="expects 4 bands"):
        tiny()(torch.rand(1, 3, 16, 16))


def test_gradients_reach_score_network_and_tokens_at_every_scale():
    model = nonzero_output(tiny().train())
    image, score = model(torch.rand(2, 4, 16, 16))
    (image - 0.5).abs().mean().backward()
    for am in model.mask:
        assert am.tokens.grad is not None and am.tokens.grad.abs().sum() > 0
        assert am.score.fc1.weight.grad is not None and am.score.fc1.weight.grad.abs().sum() > 0


def test_score_loss_trains_the_score_and_masking_off_still_gives_it_gradient():
    model = tiny(use_mask=False).train()
    x, y = torch.rand(2, 4, 16, 16), torch.rand(2, 4, 16, 16)
    image, score = model(x)
    targets = score_targets(x, y)
    assert targets.shape == (2, 1, 16, 16) and 0 <= targets.min() and targets.max() <= 1
    loss = (image - y).abs().mean() + 0.1 * score_loss(score, targets) + sum(model.aux_losses().values())
    loss.backward()
    assert model.mask[0].score.fc1.weight.grad.abs().sum() > 0


def test_adaptive_mask_replaces_exactly_top_k_patches():
    am = AdaptiveMask(dim=4, patch=4, ratio=0.25).train()
    with torch.no_grad():
        am.tokens.fill_(7.0)
    x = torch.zeros(1, 16, 16, 4)  # 16 patches -> 4 replaced
    out, score = am(x)
    replaced = (out.view(1, 4, 4, 4, 4, 4) == 7.0).all(dim=(2, 4, 5))
    assert int(replaced.sum()) == 4
    assert torch.equal(am.eval()(x)[0], x)  # eval: nothing masked


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (7, 3), (64, 64)])
def test_padding_round_trips(size):
    model = tiny().eval()
    with torch.no_grad():
        model.output.weight.zero_()  # output = global residual only
    x = torch.rand(1, 4, *size)
    with torch.no_grad():
        image, score = model(x)
    assert image.shape == x.shape and score.shape == (1, 1, *size)
    assert torch.equal(image, x)


def test_eval_is_deterministic_and_train_masks():
    model = nonzero_output(tiny().eval())
    x = torch.rand(2, 4, 32, 32)
    with torch.no_grad():
        a, sa = model(x)
        b, sb = model(x)
        model.train()
        c, _ = model(x)
    assert torch.equal(a, b) and torch.equal(sa, sb)
    assert not torch.equal(a, c)


def test_inference_mode_matches_no_grad():
    model = tiny().eval()
    x = torch.rand(1, 4, 24, 24)
    with torch.no_grad():
        a = model(x)[0]
    with torch.inference_mode():
        b = model(x)[0]
    assert torch.allclose(a, b, atol=1e-6)


def test_arch_round_trips_through_json():
    model = tiny(num_frames=2, use_sr=False, mask_ratio=0.35)
    arch = json.loads(json.dumps(model.arch))
    clone = ViserCR(**arch)
    assert clone.arch == model.arch
    assert {k: v.shape for k, v in clone.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_different_in_and_out_bands():
    model = tiny(in_bands=13, out_bands=4).eval()
    assert model(torch.rand(1, 13, 16, 16))[0].shape == (1, 4, 16, 16)
    model = tiny(in_bands=3, out_bands=4).eval()
    assert model(torch.rand(1, 3, 16, 16))[0].shape == (1, 4, 16, 16)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bundled_configs_build_and_run(name):
    model = ViserCR(**config(name, in_bands=4, out_bands=4)).eval()
    assert model.arch["width"] == CONFIGS[name]["width"]
    assert sum(p.numel() for p in model.parameters()) > 0
    frames = CONFIGS[name]["num_frames"]
    x = torch.rand(1, frames, 4, 24, 40) if frames > 1 else torch.rand(1, 4, 24, 40)
    with torch.inference_mode():
        image, score = model(x)
    assert image.shape == (1, 4, 24, 40) and score.shape == (1, 1, 24, 40)


def test_spynet_starts_at_zero_flow_and_loads_weights(tmp_path):
    net = SpyNet(3)
    assert 1.40e6 < sum(p.numel() for p in net.parameters()) < 1.48e6  # SpyNet's ~1.44 M
    ref, supp = torch.rand(1, 3, 40, 24), torch.rand(1, 3, 40, 24)
    assert torch.count_nonzero(net(ref, supp)) == 0
    x = torch.rand(1, 5, 8, 8)
    assert torch.allclose(flow_warp(x, torch.zeros(1, 2, 8, 8)), x, atol=1e-6)

    from safetensors.torch import save_file

    torch.manual_seed(1)
    other = SpyNet(3)
    for p in other.parameters():
        torch.nn.init.normal_(p, std=0.01)
    save_file(other.state_dict(), str(tmp_path / "spynet.safetensors"))
    torch.save({"params": other.state_dict()}, tmp_path / "spynet.pth")
    for file in ("spynet.safetensors", "spynet.pth"):
        net = SpyNet(3)
        net.load_weights(tmp_path / file)
        assert all(
            torch.equal(a, b)
            for a, b in zip(net.state_dict().values(), other.state_dict().values(), strict=True)
        )


def test_per_scale_block_counts_and_arch():
    model = tiny(blocks=[1, 0, 2], decoder_blocks=[0, 1], refine_blocks=[0, 1, 2], sr_iterations=2).eval()
    assert model.arch["decoder_blocks"] == [0, 1] and model.arch["refine_blocks"] == [0, 1, 2]
    assert model(torch.rand(1, 4, 16, 16))[0].shape == (1, 4, 16, 16)
    with pytest.raises(ValueError, match="decoder_blocks needs 2 values"):
        tiny(decoder_blocks=[1, 1, 1])


def test_fused_cpu_kernels_match_reference_ops(monkeypatch):
    from viser_cr.core.model import fused

    model = tiny(blocks=[1, 1, 1], heads=[1, 2, 2]).eval()
    for batch in (1, 2):  # one image takes the fused attention output GEMM too
        x = torch.rand(batch, 4, 24, 16)
        with torch.no_grad():
            monkeypatch.setattr(fused, "ENABLED", False)
            reference = model(x)
            monkeypatch.setattr(fused, "ENABLED", True)
            fast = model(x)
        assert torch.allclose(reference[0], fast[0], atol=1e-4)
        assert torch.allclose(reference[1], fast[1], atol=1e-5)
    assert not fused._broken, "the oneDNN fused kernels failed and were switched off"


@pytest.mark.parametrize("batch", [1, 2])  # one image takes the fused attention output GEMM too
@pytest.mark.parametrize("bias", [False, True])
def test_fused_blocks_equal_the_plain_restormer_reference(batch, bias):
    """blocks.TransformerBlock (channels-last, Gram-side normalisation, oneDNN kernels) computes what the
    readable reference.TransformerBlock computes, with the same weights."""
    from viser_cr.core.model import blocks, fused, reference

    torch.manual_seed(batch)
    fast = blocks.TransformerBlock(16, heads=2, expansion=2.66, bias=bias).eval()
    plain = reference.TransformerBlock(16, heads=2, expansion=2.66, bias=bias).eval()
    with torch.no_grad():  # random temperatures and biases, so that none of them can hide
        for parameter in fast.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    plain.load_state_dict(fast.state_dict())
    x = torch.rand(batch, 16, 20, 12)
    with torch.no_grad():
        expected = plain(x)
        got = fast(x.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert not fused._broken, "the oneDNN fused kernels failed and were switched off"


def _calls(module: torch.nn.Module) -> list:
    """A list that grows by one at every forward of ``module``."""
    seen = []
    module.register_forward_hook(lambda *_: seen.append(1))
    return seen


def _temporal_prior_only(**overrides):
    """A stack model as the bundled ones are: the date merge, the flow and the output conv exactly zero (the
    temporal prior over the score, no learned correction; a fresh model starts with a random merge)."""
    model = tiny(num_frames=3, residual_base="fill", **overrides).eval()
    torch.nn.init.zeros_(model.fusion.merge.weight)
    return model


def _stack_and_clouds():
    torch.manual_seed(1)
    x = torch.rand(1, 3, 4, 24, 32) * 0.3
    x[:, 0, :, 4:20, 6:26] += 0.6  # a cloud on the reference that the context dates see under
    return x


@pytest.mark.parametrize("use_flow", [True, False])
def test_inference_skips_the_layers_exact_zeros_cancel_and_gives_the_same_output(use_flow):
    # the bundled stack models are the temporal prior with a zero output conv, a zero date merge and zero flow:
    # inference must not pay for alignment and decoder whose results those zeros cancel, and lose nothing
    model = _temporal_prior_only(use_flow=use_flow)
    x = _stack_and_clouds()
    aligned, decoded = _calls(model.align), _calls(model.decoder[0])
    with torch.no_grad():
        fast, fast_score = model(x)
        assert model._skips_alignment() and model._skips_correction()
    assert not aligned and not decoded
    with torch.enable_grad():  # what training runs: every layer
        full, full_score = model(x)
        assert not model._skips_alignment() and not model._skips_correction()
    assert aligned and decoded
    assert torch.allclose(fast, full.detach(), atol=1e-5) and torch.allclose(fast_score, full_score.detach(), atol=1e-6)
    assert not torch.allclose(fast, x[:, 0], atol=1e-2)  # the context dates filled the cloud: not a no-op


@pytest.mark.parametrize("perturbed", ["output", "merge", "flow"])
def test_inference_runs_every_layer_whose_weights_are_not_zero(perturbed):
    model = _temporal_prior_only()
    layer = {"output": model.output, "merge": model.fusion.merge,
             "flow": model.align.spynet.basic_module[-1].basic_module[-1]}[perturbed]
    torch.nn.init.normal_(layer.weight, std=0.01)
    x = _stack_and_clouds()
    aligned, decoded = _calls(model.align), _calls(model.decoder[0])
    with torch.no_grad():
        fast, _ = model(x)
    assert bool(aligned) == (perturbed != "output") and bool(decoded) == (perturbed == "output")
    with torch.enable_grad():
        full, _ = model(x)
    assert torch.allclose(fast, full.detach(), atol=1e-5)


def test_a_stack_model_with_all_dates_takes_any_number_and_each_date_counts():
    model = _temporal_prior_only(all_dates=True)
    assert model.dates_per_tile is None and model.arch["all_dates"] is True
    assert "all_dates" not in tiny(num_frames=3).arch  # cards written before it still match
    torch.manual_seed(2)
    ground = torch.rand(1, 4, 24, 32) * 0.2
    x = ground[:, None].repeat(1, 6, 1, 1, 1)
    x[:, :5, :, :, :16] = 0.9  # the reference's left half is cloud, seen clear only by the sixth date
    clouds = torch.zeros(1, 6, 1, 24, 32)  # every date's cloud weight, as the pipeline passes it
    clouds[:, :5, :, :, :16] = 1.0
    with torch.no_grad():
        six, _ = model(x, clouds[:, 0], date_clouds=clouds)
        three, _ = model(x[:, :3], clouds[:, 0], date_clouds=clouds[:, :3])
    assert torch.allclose(six, ground, atol=5e-3)  # the sixth date filled the cloud
    assert not torch.allclose(three, ground, atol=1e-2)  # the first three dates could only fill it spatially
    with pytest.raises(InputError, match="takes 1 to 3"):
        tiny(num_frames=3)(x)
    with pytest.raises(ValueError, match="stack models"):
        tiny(all_dates=True)
