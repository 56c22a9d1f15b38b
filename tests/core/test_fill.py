"""Prior-guided completion: the push-pull fill, the residual base it gives the network, bilinear
up-sampling without a sub-pixel grid."""

import pytest
import torch

from viser_cr.core.model import ViserCR
from viser_cr.core.model.fill import push_pull_fill

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(in_bands=4, out_bands=4, width=8, blocks=[1, 1, 1], heads=[1, 2, 4], refine_blocks=1, sr_iterations=1)


def _hole(h=64, w=80, box=(20, 44, 25, 60)):
    clear = torch.ones(1, 1, h, w)
    r0, r1, c0, c1 = box
    clear[..., r0:r1, c0:c1] = 0
    return clear


def test_fill_keeps_clear_pixels_and_fills_a_constant_hole_exactly():
    x = torch.full((1, 3, 64, 80), 0.3)
    x[:, 1] = 0.6
    clear = _hole()
    cloudy = x.clone()
    cloudy[..., 20:44, 25:60] = 0.9  # a bright cloud
    out = push_pull_fill(cloudy, clear)
    assert torch.equal(out * clear, cloudy * clear)
    assert torch.allclose(out, x, atol=1e-5)  # nothing of the cloud leaks into the fill


def test_fill_of_a_ramp_stays_between_its_neighbours_and_is_smooth():
    ramp = torch.linspace(0, 1, 80).view(1, 1, 1, 80).expand(1, 2, 64, 80).contiguous()
    out = push_pull_fill(ramp, _hole())
    inside = out[..., 20:44, 25:60]
    assert float(inside.min()) >= float(ramp[..., 25].min()) - 0.05
    assert float(inside.max()) <= float(ramp[..., 59].max()) + 0.05
    assert float((out - ramp).abs().mean()) < 0.02


def test_fill_with_nothing_clear_is_the_mean_and_odd_sizes_work():
    x = torch.rand(2, 4, 37, 51)
    out = push_pull_fill(x, torch.zeros(2, 1, 37, 51))
    assert out.shape == x.shape
    assert torch.allclose(out, x.mean(dim=(-2, -1), keepdim=True).expand_as(x), atol=1e-5)


def test_fill_is_differentiable_in_image_and_weights():
    x = torch.rand(1, 4, 32, 32, requires_grad=True)
    clear = torch.rand(1, 1, 32, 32, requires_grad=True)
    push_pull_fill(x, clear).sum().backward()
    assert x.grad.abs().sum() > 0 and clear.grad.abs().sum() > 0


def test_untrained_fill_network_is_the_classical_completion_over_its_score():
    torch.manual_seed(0)
    model = ViserCR(**TINY, residual_base="fill", upsample="bilinear").eval()
    x = torch.rand(1, 4, 32, 48)
    with torch.no_grad():
        image, score = model(x)
        base, base_score = model.completion_base(x)
    assert torch.equal(score, base_score)
    assert torch.allclose(image, base, atol=1e-6)
    assert not torch.allclose(image, x)  # the score is never exactly 0, so the base is not the input


def test_input_base_is_still_the_default_and_round_trips_through_arch():
    model = ViserCR(**TINY)
    assert model.arch["residual_base"] == "input" and model.arch["upsample"] == "shuffle"
    again = ViserCR(**ViserCR(**TINY, residual_base="fill", upsample="bilinear").arch)
    assert again.residual_base == "fill" and type(again.up[0]).__name__ == "BilinearUpsample"
    with pytest.raises(ValueError, match="residual_base"):
        ViserCR(**TINY, residual_base="median")
    with pytest.raises(ValueError, match="upsample"):
        ViserCR(**TINY, upsample="nearest")


def test_bilinear_upsampling_of_a_flat_map_has_no_sub_pixel_grid():
    """Pixel-shuffle gives each of the 4 sub-pixels its own filter: a flat input comes out as a 2 px
    pattern unless the filters agree. Bilinear up-sampling of a flat map stays flat."""
    torch.manual_seed(0)
    shuffle = ViserCR(**TINY).up[0]
    bilinear = ViserCR(**TINY, upsample="bilinear").up[0]
    flat = torch.ones(1, 8, 8, 16)  # (B, H, W, C) tokens at scale 2
    with torch.no_grad():
        s, b = shuffle(flat)[0, 2:-2, 2:-2], bilinear(flat)[0, 2:-2, 2:-2]
    assert float(s.std(dim=(0, 1)).max()) > 1e-3
    assert float(b.std(dim=(0, 1)).max()) < 1e-6


def test_a_users_cloud_mask_replaces_the_score_in_the_fill_base():
    torch.manual_seed(0)
    model = ViserCR(**TINY, residual_base="fill", upsample="bilinear").eval()
    x = torch.full((1, 4, 32, 32), 0.2)
    x[..., 8:20, 8:20] = 0.9  # a bright square: the user says it is cloud
    cloud = torch.zeros(1, 1, 32, 32)
    cloud[..., 8:20, 8:20] = 1
    with torch.no_grad():
        image, score = model(x, cloud)
        _, own_score = model(x)
    assert torch.allclose(image, torch.full_like(image, 0.2), atol=1e-5)  # cloud filled, clear kept
    assert torch.equal(score, own_score)  # the score product stays the network's own


def test_a_wide_view_prior_fills_a_tile_with_no_clear_pixel():
    """``prior`` (the pipeline's overview of the whole raster): a weak source under the clouds where the tile
    sees little of its own ground. A tile that is cloud everywhere is filled with the prior instead of its
    own (cloudy) mean; beside the tile's clear pixels the fill stays their ground."""
    torch.manual_seed(0)
    model = ViserCR(**TINY, residual_base="fill", upsample="bilinear").eval()
    x = torch.full((1, 4, 32, 128), 0.9)
    prior = torch.full((1, 4, 32, 128), 0.25)
    everywhere = torch.ones(1, 1, 32, 128)
    with torch.no_grad():
        alone, _ = model.completion_base(x, everywhere)
        with_prior, _ = model.completion_base(x, everywhere, prior=prior)
        x[..., :, :4] = 0.2  # a clear strip: the tile's own ground
        part = everywhere.clone()
        part[..., :, :4] = 0
        near, _ = model.completion_base(x, part, prior=prior)
        without, _ = model.completion_base(x, part)
    assert torch.allclose(alone, torch.full_like(alone, 0.9))  # no clear pixel, no prior: the tile's mean
    assert torch.allclose(with_prior, prior, atol=1e-5)
    assert torch.allclose(without, torch.full_like(without, 0.2), atol=1e-5)  # without a prior: the strip's ground
    assert float((near[..., :, :8] - 0.2).abs().max()) < 0.01  # beside the strip, with one: its ground still
    assert torch.allclose(near[..., :, 40:], prior[..., :, 40:], atol=1e-3)  # beyond what the tile sees: the prior


def test_with_a_ground_prior_a_tile_that_sees_no_ground_is_filled_with_that_ground():
    """A soft cloud weight never reaches 1: a tile all cloud "trusts" its pixels by a hair, and the plain fill
    then is the cloud itself. The ground prior takes over there and changes nothing where ground is seen."""
    x = torch.full((1, 4, 64, 80), 0.9)
    ground = torch.tensor([[0.08, 0.1, 0.12, 0.2]])
    hair = torch.full((1, 1, 64, 80), 1e-5)
    assert torch.allclose(push_pull_fill(x, hair), x)  # without: the cloud
    filled = push_pull_fill(x, hair, ground=ground)
    assert torch.allclose(filled, ground.view(1, 4, 1, 1).expand_as(x), atol=5e-3)
    x[..., 20:44, 25:60] = 0.3  # now the tile sees ground: a sixth of it, in the middle
    clear = 1.0 - _hole()
    with_ground, without = push_pull_fill(x, clear, ground=ground), push_pull_fill(x, clear)
    assert torch.equal(with_ground * clear, x * clear)
    assert torch.allclose(without, torch.full_like(x, 0.3), atol=1e-5)
    assert float((with_ground[..., 16:48, 21:64] - 0.3).abs().max()) < 0.03  # beside the ground: that ground
    far = with_ground[..., 0, -1]  # far from it the typical ground counts a little (0.03 against 1/6 clear)
    assert (far < 0.3).all() and (0.3 - far < 0.25 * (0.3 - ground[0])).all()


def test_a_ground_prior_per_radiometry_fills_and_fades_the_correction():
    """``ground_prior`` / ``display_ground_prior``: the fill's last resort, by each sample's radiometry, and the
    learned correction fades where the tile sees little of its own ground (it learned to darken the old, cloudy
    fallback). Recorded in the architecture only when set; the state dict is the same."""
    priors = dict(ground_prior=[0.08, 0.1, 0.12, 0.2], display_ground_prior=[0.3, 0.35, 0.3, 0.45])
    torch.manual_seed(0)
    model = ViserCR(**TINY, residual_base="fill", upsample="bilinear", **priors).eval()
    plain = ViserCR(**TINY, residual_base="fill", upsample="bilinear").eval()
    plain.load_state_dict(model.state_dict(), strict=True)
    assert model.arch["ground_prior"] == priors["ground_prior"] and "ground_prior" not in plain.arch
    torch.nn.init.normal_(model.output.weight, std=0.05)  # a trained correction
    plain.output.weight.data.copy_(model.output.weight.data)
    x = torch.full((2, 4, 32, 48), 0.9)
    everywhere = torch.ones(2, 1, 32, 48)
    model.use_radiometry(torch.tensor([False, True]))
    with torch.no_grad():
        image, _ = model(x, everywhere)
        plain_image, _ = plain(x, everywhere)
    for i, name in enumerate(priors):
        expected = torch.tensor(priors[name]).view(4, 1, 1).expand(4, 32, 48)
        assert torch.allclose(image[i], expected, atol=2e-3)  # the ground, the correction faded out
    assert float((plain_image - 0.9).abs().max()) > 0.01  # without: the cloud's own mean, corrected
    x[..., :, :24] = 0.2  # half the tile clear: the correction stays where the tile sees its ground
    cloud = torch.zeros(2, 1, 32, 48)
    cloud[..., :, 24:] = 1
    with torch.no_grad():
        image, _ = model(x, cloud)
        plain_image, _ = plain(x, cloud)
    assert torch.allclose(image[..., :, :20], plain_image[..., :, :20], atol=1e-4)
    with pytest.raises(ValueError, match="ground_prior needs 4 values"):
        ViserCR(**TINY, residual_base="fill", ground_prior=[0.1] * 3, display_ground_prior=[0.3] * 4)
    with pytest.raises(ValueError, match="together"):
        ViserCR(**TINY, residual_base="fill", ground_prior=[0.1] * 4)


def test_composite_takes_the_reference_where_clear_then_the_context():
    from viser_cr.core.model.fill import push_pull_composite

    ref = torch.full((1, 2, 32, 32), 0.9)  # cloud over the middle
    ref[..., :, :8] = 0.2
    context = torch.full((1, 2, 32, 32), 0.3)  # a clear date of the same place (slightly different)
    cloud = torch.ones(1, 1, 32, 32)
    cloud[..., :, :8] = 0
    weights = torch.stack([1 - cloud, cloud * 1.0], dim=1)
    out = push_pull_composite(torch.stack([ref, context], dim=1), weights)
    assert torch.allclose(out[..., :8], ref[..., :8])  # the reference's clear pixels first
    assert torch.allclose(out[..., 8:], context[..., 8:])  # under its cloud: the clear date
    # a context date that is itself cloudy (weight 0) leaves the spatial fill from the reference
    out = push_pull_composite(torch.stack([ref, context], dim=1), torch.stack([1 - cloud, cloud * 0], dim=1))
    assert torch.allclose(out[..., 8:], torch.full_like(out[..., 8:], 0.2), atol=1e-5)


def test_untrained_stack_model_completes_the_reference_from_a_clear_date():
    """The temporal prior: with a fill base, the untrained stack network takes what the clear context
    date sees under the reference's cloud (co-registered dates, zero flow)."""
    torch.manual_seed(0)
    model = ViserCR(**TINY, num_frames=3, residual_base="fill", upsample="bilinear", use_flow=False).eval()
    ground = torch.rand(1, 4, 32, 32) * 0.2
    cloudy = ground.clone()
    cloudy[..., 4:28, 4:28] = 0.9
    cloud = torch.zeros(1, 1, 32, 32)
    cloud[..., 4:28, 4:28] = 1
    # make the dates' scores say "clear" (trained heads learn this); the reference's cloud is the mask
    for head in model.mask:
        torch.nn.init.constant_(head.score.fc2.bias, -20.0)
    with torch.no_grad():
        with_clear, _ = model(torch.stack([cloudy, ground], dim=1), cloud)
        mono, _ = model(cloudy[:, None], cloud)
        base, _ = model.completion_base(torch.stack([cloudy, ground, ground], dim=1), cloud)
    # the steep gate calls a score of 0 clear (a weight of 2e-9 goes to the spatial fill)
    assert torch.allclose(with_clear, ground, atol=5e-3)
    assert torch.allclose(base, ground, atol=5e-3)
    assert not torch.allclose(mono, ground, atol=1e-2)  # alone, the reference can only be filled spatially


def test_a_context_date_is_scored_as_the_reference_would_be():
    """Each date's score runs the same encoder, score heads *and* saliency encoding as the reference's:
    the reference scored as a context date gives the reference's own score (fusion merge at zero, as a
    warm-started stack model starts). Without the saliency encoding between scales, trained score heads
    called opaque context dates clear."""
    torch.manual_seed(0)
    model = ViserCR(**TINY, num_frames=3, residual_base="fill", upsample="bilinear", use_flow=False).eval()
    torch.nn.init.zeros_(model.fusion.merge.weight)
    for name, param in model.named_parameters():  # trained-looking: no zero-initialised tensor left
        if "pse" in name or "embedding" in name:
            torch.nn.init.normal_(param, std=0.5)
    ref = torch.rand(1, 4, 32, 32)
    with torch.no_grad():
        _, score = model(ref[:, None])
        as_context = model._date_score(model._embed(ref))
    assert torch.allclose(as_context, score, atol=1e-5)


def test_context_dates_are_chosen_to_cover_the_references_clouds():
    from viser_cr.core.model.fill import choose_context_dates

    cloud = torch.zeros(1, 5, 1, 32, 32)
    cloud[:, 0, :, :, :16] = 1  # reference: cloudy on the left half
    cloud[:, 1] = 1  # date 1: cloudy everywhere
    cloud[:, 2] = 1
    cloud[:, 2, :, :16, :16] = 0  # date 2: sees the top of the left half
    cloud[:, 3, :, :, 16:] = 1  # date 3: sees the whole left half
    cloud[:, 4, :, 16:, :] = 1  # date 4: sees the top half
    assert choose_context_dates(cloud, 1).tolist() == [[3]]
    # after date 3 nothing is left to cover: the clearest of the rest (date 4 sees half the tile)
    assert choose_context_dates(cloud, 2).tolist() == [[3, 4]]
    # without date 3, date 2 and date 4 cover the same part; then the other one completes nothing more
    picks = choose_context_dates(cloud[:, [0, 1, 2, 4]], 2).tolist()[0]
    assert sorted(picks) == [2, 3]
    # per tile: a batch of two stacks chooses independently
    swapped = torch.cat([cloud, cloud[:, [0, 1, 2, 4, 3]]])
    assert choose_context_dates(swapped, 1).tolist() == [[3], [4]]
    with pytest.raises(ValueError, match="1 to 4"):
        choose_context_dates(cloud, 5)


def test_display_imagery_has_its_own_gate_per_sample_and_per_date():
    model = ViserCR(**TINY, residual_base="fill", upsample="bilinear", fill_threshold=0.35,
                    display_fill_threshold=0.6).eval()
    assert model.arch["display_fill_threshold"] == 0.6
    assert "display_fill_threshold" not in ViserCR(**TINY, residual_base="fill").arch  # old cards still match
    score = torch.full((2, 1, 4, 4), 0.5)
    assert (model.cloud_weight(score) > 0.95).all()  # reflectance: 0.5 is cloud
    model.use_radiometry(True)
    assert (model.cloud_weight(score) < 0.05).all()  # 8-bit display imagery: 0.5 is not yet
    model.use_radiometry(torch.tensor([True, False]))  # a training batch mixing both
    weight = model.cloud_weight(score)
    assert (weight[0] < 0.05).all() and (weight[1] > 0.95).all()
    dates = model.cloud_weight(torch.full((6, 1, 4, 4), 0.5))  # 2 stacks x 3 dates, each its sample's gate
    assert (dates[:3] < 0.05).all() and (dates[3:] > 0.95).all()
    with pytest.raises(ValueError, match="display_fill_threshold"):
        ViserCR(**TINY, residual_base="fill", display_fill_threshold=1.5)


def _with_and_without(**argument):
    """A tiny fill model with ``argument`` and the same weights without it (both in eval mode)."""
    kwargs = dict(TINY, residual_base="fill", upsample="bilinear")
    model = ViserCR(**kwargs, **argument).eval()
    plain = ViserCR(**kwargs).eval()
    plain.load_state_dict(model.state_dict())
    return model, plain


def test_saturated_display_pixels_are_cloud_for_every_date():
    """``display_saturation``: on 8-bit display imagery a pixel at 254-255 in R, G and B scores 1 (the fill
    replaces it, no context date lends it); reflectance input and a pixel saturated in two bands only are
    scored as before."""
    torch.manual_seed(0)
    model, plain = _with_and_without(display_saturation=True)
    assert model.arch["display_saturation"] is True and "display_saturation" not in plain.arch
    x = torch.rand(1, 4, 32, 32) * 0.5
    x[:, :3, 4:12, 4:12] = 1.0           # saturated in R, G, B
    x[:, :3, 20:28, 20:28] = 254 / 255
    x[:, :2, 4:12, 20:28] = 1.0           # red and green only: a coloured bright roof, not saturated white
    for radiometry in (True, False):
        model.use_radiometry(radiometry)
        plain.use_radiometry(radiometry)
        with torch.no_grad():
            (out, score), (_, own) = model(x), plain(x)
        if radiometry:
            assert torch.all(score[..., 4:12, 4:12] == 1) and torch.all(score[..., 20:28, 20:28] == 1)
            assert torch.equal(score[..., 4:12, 20:28], own[..., 4:12, 20:28])
            assert torch.all(score >= own)
            assert float(out[:, :3, 6:10, 6:10].max()) < 0.9  # filled from the ground around it
        else:
            assert torch.equal(score, own)
    model.use_radiometry(True)
    stack = ViserCR(**TINY, num_frames=3, residual_base="fill", upsample="bilinear", use_flow=False,
                    display_saturation=True).eval()
    stack.use_radiometry(True)
    with torch.no_grad():
        weights = stack.date_cloud_weights(torch.stack([x, torch.rand(1, 4, 32, 32) * 0.5, x], dim=1))
    assert torch.all(weights[:, 2, :, 4:12, 4:12] > 0.99)  # a context date's saturated pixels are no ground


def test_clipped_white_reflectance_is_cloud():
    """``reflectance_saturation``: a flat core at a visible band's clipped level (many pixels of the tile at the band's
    maximum, as Landsat TM's blue saturates over thick clouds) and no darker in R, G and B scores 1 on reflectance
    input. A lone brightest pixel (no plateau), a clipped band on coloured ground (darker in another band), a dim
    plateau (below 0.2) and 8-bit display imagery are scored as before."""
    torch.manual_seed(0)
    model, plain = _with_and_without(reflectance_saturation=True)
    assert model.arch["reflectance_saturation"] is True and "reflectance_saturation" not in plain.arch
    x = torch.rand(1, 4, 64, 64) * 0.2
    x[:, 0, 4:12, 4:12], x[:, 1:3, 4:12, 4:12] = 0.393, 0.55  # blue clipped (the lowest level), green and red above it
    x[:, 0, 40:48, 4:12], x[:, 1:3, 40:48, 4:12] = 0.393, 0.25  # blue clipped but darker in red and green: coloured

    def scores(images, radiometry):
        model.use_radiometry(radiometry)
        plain.use_radiometry(radiometry)
        with torch.no_grad():
            return model(images)[1], plain(images)[1]

    score, own = scores(x, False)
    assert torch.all(score[..., 4:12, 4:12] == 1)
    keep = torch.ones_like(score, dtype=torch.bool)
    keep[..., 4:12, 4:12] = False
    assert torch.equal(score[keep], own[keep])  # the coloured clipped patch is left alone
    assert torch.equal(*scores(x, True))  # 8-bit display imagery: the display saturation test's business
    dim = x * 0.4  # the same plateau at 0.157: below CLIPPED_MIN_REFLECTANCE
    assert torch.equal(*scores(dim, False))
    lone = torch.rand(1, 4, 64, 64) * 0.2
    lone[:, :3, 30, 30] = 0.9  # one bright white pixel: each band's maximum, but no plateau
    assert torch.equal(*scores(lone, False))
    stack = ViserCR(**TINY, num_frames=3, residual_base="fill", upsample="bilinear", use_flow=False,
                    reflectance_saturation=True).eval()
    with torch.no_grad():
        weights = stack.date_cloud_weights(torch.stack([lone, lone, x], dim=1))
    assert torch.all(weights[:, 2, :, 4:12, 4:12] > 0.99)  # a context date's clipped core is no ground


def _dark_ground_tile(ground: float, cloud_score: float = 0.45):
    """An 8-bit tile of flat ground with a mid-grey cloud patch, and a score: 0.05 on the ground, ``cloud_score``
    on the patch (a cloud's thinner part, between the reflectance gate 0.35 and the display gate 0.6)."""
    x = torch.full((1, 4, 32, 32), ground)
    x[..., 8:24, 8:24] = 0.5
    score = torch.full((1, 1, 32, 32), 0.05)
    score[..., 8:24, 8:24] = cloud_score
    return x, score


def test_on_display_imagery_with_dark_ground_the_display_gate_takes_what_the_reflectance_gate_would():
    """``display_dark_ground``: where a tile's clear ground is dark (the clouds set the 8-bit stretch), a
    cloud's mid-grey part scoring between the two gates is raised above the display gate; bright ground
    (the stretch set by the ground), reflectance input and a tile with too little clear ground to tell are
    left as they are; clear ground keeps its score. A user's threshold (one gate for both) gates the same raised
    score: the card's display gate given as a threshold changes nothing."""
    model = ViserCR(**TINY, residual_base="fill", upsample="bilinear", fill_threshold=0.35,
                    display_fill_threshold=0.6, display_dark_ground=(0.15, 0.10)).eval()
    assert model.arch["display_dark_ground"] == [0.15, 0.10]
    assert "display_dark_ground" not in ViserCR(**TINY, residual_base="fill").arch  # old cards still match
    model.use_radiometry(True)
    x, score = _dark_ground_tile(ground=0.03)
    raised = model._display_score(x, score)
    assert torch.allclose(raised[..., 8:24, 8:24], torch.tensor(0.70))  # 0.45 + (0.6 - 0.35)
    assert torch.equal(raised[..., :8, :], score[..., :8, :])  # the ground's score is untouched
    assert (model.cloud_weight(raised)[..., 12:20, 12:20] > 0.95).all()
    assert (model.cloud_weight(score)[..., 12:20, 12:20] < 0.05).all()  # without the test: kept as ground
    dim_x = x.clone()
    dim_x[..., 8:24, 8:24] = 0.05  # dark ground the score calls half cloud: not brighter than the ground, not raised
    assert torch.equal(model._display_score(dim_x, score), score)
    half = model._display_score(*_dark_ground_tile(ground=0.125))  # half way from start to full
    assert torch.allclose(half[..., 8:24, 8:24], torch.tensor(0.575))
    bright = _dark_ground_tile(ground=0.3)
    assert torch.equal(model._display_score(*bright), bright[1])
    collar = torch.zeros(1, 4, 32, 32)  # nodata reaches the network as 0: a black collar is no dark ground
    collar[..., 28:] = 0.3  # the ground beside it is bright...
    collar[..., 8:24, 28:30] = 0.5  # ... with a bright roof the score calls half cloud
    collar_score = torch.full((1, 1, 32, 32), 0.05)
    collar_score[..., 8:24, 28:30] = 0.45
    assert torch.equal(model._display_score(collar, collar_score), collar_score)
    hardly_any_ground = torch.full_like(score, 0.45)
    hardly_any_ground[..., :2, :2] = 0.05  # 4 clear pixels of 1024: too few to tell the ground's brightness
    assert torch.equal(model._display_score(x, hardly_any_ground), hardly_any_ground)
    batch = torch.cat([_dark_ground_tile(0.03)[0], _dark_ground_tile(0.3)[0]])
    scores = torch.cat([_dark_ground_tile(0.03)[1], _dark_ground_tile(0.3)[1]])
    model.use_radiometry(torch.tensor([True, True]))
    per_tile = model._display_score(batch, scores)
    assert float(per_tile[0, 0, 16, 16]) > 0.6 and float(per_tile[1, 0, 16, 16]) == pytest.approx(0.45)
    model.use_radiometry(False)
    assert torch.equal(model._display_score(x, score), score)
    model.use_radiometry(True)
    model.use_fill_threshold(0.6)  # a user's threshold equal to the display gate: the same raise
    assert torch.equal(model._display_score(x, score), raised)
    model.use_fill_threshold(0.5)  # a lower one gates the same raised score
    assert torch.equal(model._display_score(x, score), raised)
    assert torch.equal(model._display_score(*bright), bright[1])
    with pytest.raises(ValueError, match="display_dark_ground"):
        ViserCR(**TINY, residual_base="fill", display_fill_threshold=0.6, display_dark_ground=(0.10, 0.15))
    with pytest.raises(ValueError, match="display_fill_threshold"):
        ViserCR(**TINY, residual_base="fill", display_dark_ground=(0.15, 0.10))


def test_on_display_imagery_with_black_ground_the_fill_falls_back_on_the_reflectance_ground_prior():
    """``display_black_ground``: where a display tile's clear ground is black (the clouds set the export's
    stretch so far that its values behave like reflectance), the fill's last resort is the reflectance ground
    prior, not the display one's mid-grey, and the learned correction (never trained on such exports) fades.
    The score is not touched; bright ground and reflectance input are left as they are."""
    priors = dict(ground_prior=[0.08, 0.1, 0.12, 0.2], display_ground_prior=[0.3, 0.35, 0.3, 0.45])
    gates = dict(residual_base="fill", upsample="bilinear", fill_threshold=0.35, display_fill_threshold=0.6,
                 display_dark_ground=(0.15, 0.10), **priors)
    model = ViserCR(**TINY, **gates, display_black_ground=(0.09, 0.07)).eval()
    dark_only = ViserCR(**TINY, **gates).eval()
    torch.nn.init.normal_(model.output.weight, std=0.05)  # a trained correction
    dark_only.load_state_dict(model.state_dict(), strict=True)  # an argument of the architecture, no weights
    assert model.arch["display_black_ground"] == [0.09, 0.07] and "display_black_ground" not in dark_only.arch
    for net in (model, dark_only):
        net.use_radiometry(True)
    x, score = _dark_ground_tile(ground=0.03)
    assert torch.equal(model._display_score(x, score), dark_only._display_score(x, score))
    assert float(model._black_ground(x, score)) == 1.0
    assert float(model._black_ground(*_dark_ground_tile(ground=0.08))) == pytest.approx(0.5)
    assert float(model._black_ground(*_dark_ground_tile(ground=0.3))) == 0.0
    assert torch.allclose(model._ground(1, model._black_ground(x, score)), torch.tensor([priors["ground_prior"]]))

    cloudy = torch.full((1, 4, 32, 32), 0.9)  # all cloud but a strip of black ground: 3 % of the tile
    cloudy[..., :1, :] = 0.03
    own = torch.full((1, 1, 32, 32), 0.95)
    own[..., :1, :] = 0.05
    for net in (model, dark_only):
        net._score_map = lambda scores, size: own  # the score this test needs, whatever the tiny network says
    with torch.no_grad():
        black_base, black_score = model.completion_base(cloudy)
        dark_base, dark_score = dark_only.completion_base(cloudy)
    assert torch.equal(black_score, dark_score)
    cloudy[..., 1:2, :] = 0.03  # a second row of ground: the correction acts where the tile sees it...
    own[..., 1:2, :] = 0.05
    with torch.no_grad():
        (black_out, _), (black_base2, _) = model(cloudy), model.completion_base(cloudy)
        (dark_out, _), (dark_base2, _) = dark_only(cloudy), dark_only.completion_base(cloudy)
    assert float((dark_out - dark_base2)[..., :4, :].abs().max()) > 1e-3
    assert torch.allclose(black_out, black_base2, atol=1e-6)  # ...but not on black ground
    far = (slice(None), slice(None), slice(24, None), slice(None))  # far from the strip the prior counts most
    assert (black_base[far] < dark_base[far]).all()  # not the display prior's mid-grey...
    assert float((black_base[far] - 0.03).abs().mean()) < 0.5 * float((dark_base[far] - 0.03).abs().mean())  # ...nearer
    model.use_radiometry(False)
    assert model._black_ground(x, score) is None
    with pytest.raises(ValueError, match="display_black_ground needs"):
        ViserCR(**TINY, **gates, display_black_ground=(0.07, 0.09))
    with pytest.raises(ValueError, match="give ground_prior"):
        ViserCR(**TINY, residual_base="fill", display_black_ground=(0.09, 0.07))


def _black_ground_tile(ground: float, inner: float = 0.5, inner_score: float = 0.25):
    """An 8-bit tile of flat ground with a small bright patch (6 % of it: a cloud's inner part) that the score
    calls hardly cloud (``inner_score``, below both gates), so the patch is not enough of the tile's clear ground
    to set its brightness."""
    x = torch.full((1, 4, 32, 32), ground)
    x[..., 12:20, 12:20] = inner
    score = torch.full((1, 1, 32, 32), 0.05)
    score[..., 12:20, 12:20] = inner_score
    return x, score


def test_on_black_ground_a_pixel_far_brighter_than_the_ground_is_cloud_from_a_low_score():
    """``display_black_cloud``: on a display tile whose clear ground is black (the clouds set the stretch), a
    cloud's inner part that the score calls hardly cloud (0.25, below both gates) but that is far brighter than
    the ground is raised above the display gate, so it is filled instead of feeding the fill as ground. Dark
    ground a little brighter than the rest, bright ground (a tile whose stretch the ground set) and reflectance
    input keep their scores."""
    priors = dict(ground_prior=[0.08, 0.1, 0.12, 0.2], display_ground_prior=[0.3, 0.35, 0.3, 0.45])
    gates = dict(residual_base="fill", upsample="bilinear", fill_threshold=0.35, display_fill_threshold=0.6,
                 display_dark_ground=(0.15, 0.10), display_black_ground=(0.09, 0.07), **priors)
    model = ViserCR(**TINY, **gates, display_black_cloud=(0.10, 0.20)).eval()
    black_only = ViserCR(**TINY, **gates).eval()
    assert model.arch["display_black_cloud"] == [0.10, 0.20] and "display_black_cloud" not in black_only.arch
    for net in (model, black_only):
        net.use_radiometry(True)
    x, score = _black_ground_tile(ground=0.03)  # the patch is 0.47 brighter than the ground
    raised = model._display_score(x, score)
    patch = (..., slice(12, 20), slice(12, 20))
    assert torch.allclose(black_only._display_score(x, score)[patch], torch.tensor(0.50))  # the dark-ground raise
    assert torch.allclose(raised[patch], torch.tensor(0.75))  # 0.25 + 0.25 + 0.25: above the display gate
    assert torch.equal(raised[..., :8, :], score[..., :8, :])  # the clear ground keeps its score
    assert bool((model.cloud_weight(raised)[patch] > 0.98).all())
    dim = _black_ground_tile(ground=0.03, inner=0.03 + 0.09)  # hardly brighter than the ground: dark-ground raise only
    assert torch.equal(model._display_score(*dim), black_only._display_score(*dim))
    bright = _black_ground_tile(ground=0.3, inner=0.9)  # ground that set the stretch: not black
    assert torch.equal(model._display_score(*bright), bright[1])
    model.use_radiometry(False)
    assert torch.equal(model._display_score(x, score), score)
    with pytest.raises(ValueError, match="display_black_cloud needs"):
        ViserCR(**TINY, **gates, display_black_cloud=(0.2, 0.1))
    no_black = {k: v for k, v in gates.items() if k != "display_black_ground"}
    with pytest.raises(ValueError, match="give display_black_ground"):
        ViserCR(**TINY, **no_black, display_black_cloud=(0.10, 0.20))


def test_a_users_threshold_equal_to_the_display_gate_gives_the_default_output_on_8bit_imagery():
    """A user's cloud threshold sets one gate for both radiometries; on 8-bit display imagery the dark-ground and
    black-cloud raises keep their lift, so the card's own display gate given as a threshold changes nothing
    (before, it switched the raises off: the same number gave another output), while a lower one fills more."""
    priors = dict(ground_prior=[0.08, 0.1, 0.12, 0.2], display_ground_prior=[0.3, 0.35, 0.3, 0.45])
    model = ViserCR(**TINY, residual_base="fill", upsample="bilinear", fill_threshold=0.35,
                    display_fill_threshold=0.6, display_dark_ground=(0.15, 0.10), display_black_ground=(0.09, 0.07),
                    display_black_cloud=(0.10, 0.20), **priors).eval()
    model.use_radiometry(True)
    x, score = _black_ground_tile(ground=0.03)
    with torch.no_grad():
        default_out, _ = model(x)
        default_score = model._display_score(x, score)
        model.use_fill_threshold(0.6)
        users_out, _ = model(x)
        assert torch.equal(users_out, default_out)
        assert torch.equal(model._display_score(x, score), default_score)
        default_weight = model.cloud_weight(default_score)
        model.use_fill_threshold(0.3)
        assert torch.equal(model._display_score(x, score), default_score)  # the score does not follow the gate
        lower_weight = model.cloud_weight(default_score)
    assert bool((lower_weight >= default_weight).all()) and float(lower_weight.sum()) > float(default_weight.sum())


def test_every_dates_cloud_weight_is_its_own_score_through_the_gate():
    torch.manual_seed(0)
    dates = torch.rand(2, 5, 4, 32, 40)
    weights = {}
    for step in (1, 2):
        torch.manual_seed(0)
        model = ViserCR(**TINY, num_frames=3, residual_base="fill", upsample="bilinear", use_flow=False,
                        date_score_downsample=step).eval()
        with torch.no_grad():
            weights[step] = model.date_cloud_weights(dates)
            own = model.cloud_weight(model._date_score(model._embed(dates[1:2, 3])))
    assert weights[1].shape == weights[2].shape == (2, 5, 1, 32, 40)
    assert torch.allclose(weights[1][1, 3], own[0], atol=1e-5)  # full resolution: the score itself
    assert model.arch["date_score_downsample"] == 2


def test_the_source_date_is_the_date_the_completion_takes_most():
    from viser_cr.core.pipeline import _dominant_dates

    cloud = torch.zeros(1, 4, 1, 8, 8)
    cloud[:, 0, :, :, 4:] = 1  # reference cloudy on the right
    cloud[:, 1] = 1  # date 1 cloudy everywhere
    cloud[:, 2, :, 4:, :] = 1  # date 2 clear on the top rows only
    cloud[:, 3, :, :4, :] = 0.9
    cloud[:, 3, :, 4:, :] = 0.2  # date 3 mostly clear on the bottom rows
    dates = _dominant_dates(cloud)[0]
    assert (dates[:, :4] == 1).all()  # the reference where it is clear
    assert (dates[:4, 4:] == 3).all()  # top right: date 2 (position 2 -> 3)
    assert (dates[4:, 4:] == 4).all()  # bottom right: date 3
    cloud[:, 3] = 1  # nothing sees the bottom right: the spatial fill
    assert (_dominant_dates(cloud)[0][4:, 4:] == 0).all()
    # chosen dates of a longer stack: positions map back to the stack
    order = torch.tensor([[0, 2]])
    assert (_dominant_dates(cloud, order)[0][:4, 4:] == 3).all()


def test_among_dates_that_see_as_much_the_nearest_in_time_is_chosen():
    from viser_cr.core.model.fill import choose_context_dates

    cloud = torch.zeros(1, 4, 1, 64, 64)
    cloud[:, 0] = 1  # an opaque reference; dates 1-3 clear: a tie on coverage (within 0.1 % of the tile)
    cloud[:, 2, :, :1, :1] = 0.5  # date 2 a little less clear than date 3
    days = torch.tensor([100.0, 400.0, 90.0, 30.0])
    assert choose_context_dates(cloud, 1).tolist() == [[1]]  # no dates known: the clearest, then the earliest
    assert choose_context_dates(cloud, 1, days).tolist() == [[2]]  # ten days before the reference
    assert choose_context_dates(cloud, 2, days).tolist() == [[2, 3]]
    unknown = torch.tensor([100.0, float("nan"), float("nan"), 95.0])
    assert choose_context_dates(cloud, 1, unknown).tolist() == [[3]]  # a known near date beats unknown ones
    cloud[:, 3, :, :32] = 1  # date 3 now covers half: coverage comes before nearness
    assert choose_context_dates(cloud, 1, unknown).tolist() == [[1]]


def test_dates_scored_by_the_caller_are_not_scored_again_and_give_the_same_output():
    torch.manual_seed(0)
    model = ViserCR(**TINY, num_frames=3, residual_base="fill", upsample="bilinear", use_flow=False).eval()
    x = torch.rand(2, 3, 4, 32, 40)
    with torch.no_grad():
        plain = model(x)
        clouds = model.date_cloud_weights(x)
        given = model(x, date_clouds=clouds)
        # what the caller gives is what the composite uses: all-clear contexts take over under the cloud
        forced = model(x, date_clouds=torch.cat([clouds[:, :1], torch.zeros_like(clouds[:, 1:])], dim=1))
    assert torch.allclose(plain[0], given[0], atol=1e-5) and torch.equal(plain[1], given[1])  # batched vs per date
    assert not torch.equal(plain[0], forced[0])


def test_a_context_date_is_brought_to_the_references_radiometry_over_what_both_see():
    """Relative radiometric normalisation: a date that differs from the reference by a gain and an
    offset per band (sun angle, processing, another year's mosaic) comes back as the reference would
    have seen it, also under the reference's cloud; a tile with nothing seen clear in both keeps it."""
    from viser_cr.core.model.fill import harmonise_date

    torch.manual_seed(0)
    ground = torch.rand(1, 3, 48, 48) * 0.3
    gain, offset = torch.tensor([1.4, 0.8, 1.1]), torch.tensor([0.05, -0.02, 0.1])
    other_date = ground * gain[None, :, None, None] + offset[None, :, None, None]
    ref_clear = torch.zeros(1, 1, 48, 48)
    ref_clear[..., :, :16] = 1  # the reference is cloudy over two thirds of the tile
    date_clear = torch.ones(1, 1, 48, 48)
    date_clear[..., :8, :] = 0  # and the date has its own cloud, left out of the regression
    other_date[..., :8, :] = 0.9
    out = harmonise_date(ground, ref_clear, other_date, date_clear)
    assert torch.allclose(out[..., 8:, :], ground[..., 8:, :], atol=1e-5)
    assert not torch.allclose(other_date[..., 8:, :], ground[..., 8:, :], atol=1e-2)
    # a fully cloudy reference has nothing to regress on: the date is left as it is
    assert torch.equal(harmonise_date(ground, torch.zeros_like(ref_clear), other_date, date_clear), other_date)


def _reference_under_cloud_and_a_brighter_date():
    """``(ground, cloudy reference, its cloud mask, another date)``: the reference opaque below row 8, the
    other date the same ground seen with a gain and an offset (another radiometry)."""
    ground = torch.rand(1, 4, 32, 32) * 0.2
    cloudy = ground.clone()
    cloudy[..., 8:, :] = 0.9
    cloud = torch.zeros(1, 1, 32, 32)
    cloud[..., 8:, :] = 1
    return ground, cloudy, cloud, ground * 1.3 + 0.05


def test_harmonised_stack_model_fills_with_the_context_in_the_references_radiometry():
    torch.manual_seed(0)
    kwargs = dict(TINY, num_frames=2, residual_base="fill", upsample="bilinear", use_flow=False)
    model = ViserCR(**kwargs, harmonise_dates=True).eval()
    plain = ViserCR(**kwargs).eval()
    plain.load_state_dict(model.state_dict())
    for net in (model, plain):
        for head in net.mask:  # every date's own score says clear; the reference's cloud is the mask
            torch.nn.init.constant_(head.score.fc2.bias, -20.0)
    ground, cloudy, cloud, brighter_date = _reference_under_cloud_and_a_brighter_date()
    with torch.no_grad():
        base, _ = model.completion_base(torch.stack([cloudy, brighter_date], dim=1), cloud)
        plain_base, _ = plain.completion_base(torch.stack([cloudy, brighter_date], dim=1), cloud)
    assert torch.allclose(base, ground, atol=5e-3)
    assert torch.allclose(plain_base[..., 8:, :], brighter_date[..., 8:, :], atol=5e-3)
    assert model.arch["harmonise_dates"] is True and "harmonise_dates" not in plain.arch


def test_harmonising_only_display_imagery():
    """``harmonise_dates="display"``: 8-bit exports of other dates are brought to the reference's
    stretch, calibrated reflectance is left as it is (a hazy reference would pull it towards the haze)."""
    torch.manual_seed(0)
    model = ViserCR(**TINY, num_frames=2, residual_base="fill", upsample="bilinear", use_flow=False,
                    harmonise_dates="display").eval()
    for head in model.mask:
        torch.nn.init.constant_(head.score.fc2.bias, -20.0)
    ground, cloudy, cloud, brighter_date = _reference_under_cloud_and_a_brighter_date()
    stack = torch.stack([cloudy, brighter_date], dim=1)
    with torch.no_grad():
        reflectance, _ = model.completion_base(stack, cloud)
        model.use_radiometry(True)
        display, _ = model.completion_base(stack, cloud)
        model.use_radiometry(torch.tensor([False, True]))  # per sample
        both, _ = model.completion_base(torch.cat([stack, stack]), torch.cat([cloud, cloud]))
    assert torch.allclose(reflectance[..., 8:, :], brighter_date[..., 8:, :], atol=5e-3)
    assert torch.allclose(display, ground, atol=5e-3)
    assert torch.allclose(both[0], reflectance[0], atol=1e-6) and torch.allclose(both[1], display[0], atol=1e-6)
    assert model.arch["harmonise_dates"] == "display"
    with pytest.raises(ValueError, match="harmonise_dates"):
        ViserCR(**TINY, harmonise_dates="always")


def test_temporal_haze_test_finds_what_brightens_every_visible_band():
    """Haze brightens R, G and B (blue most) over what a clear date sees: counted as cloud. A change of
    the ground that brightens red but darkens blue is not; nor is anything where no date is clear."""
    from viser_cr.core.model.fill import temporal_haze

    torch.manual_seed(0)
    ground = 0.05 + torch.rand(1, 4, 40, 40) * 0.1
    ref = ground.clone()
    ref[..., 4:16, 4:16] += torch.tensor([0.03, 0.04, 0.06, 0.02])[:, None, None]  # haze
    ref[..., 24:36, 4:16] += torch.tensor([0.08, 0.03, -0.02, -0.05])[:, None, None]  # a field harvested
    cloud = torch.zeros(1, 1, 40, 40)
    clear = torch.ones(1, 1, 40, 40)
    out = temporal_haze(ref, cloud, [(ground, clear)])
    assert float(out[..., 6:14, 6:14].min()) > 0.99  # the haze, inside the 5 px smoothing
    assert float(out[..., 26:34, 6:14].max()) == 0.0  # the harvested field stays the reference's
    assert float(out[..., 20:, 20:].max()) == 0.0  # clear, unchanged ground
    assert float(temporal_haze(ref, cloud, [(ground, torch.zeros_like(clear))]).max()) == 0.0  # no clear date
    assert torch.equal(temporal_haze(ref, torch.ones_like(cloud), [(ground, clear)]), torch.ones_like(cloud))


def _haze_test_model_and_a_hazy_stack():
    """``(model, ground, hazy reference, stack [hazy, ground])``: a stack model with the haze test whose
    score calls everything clear; the reference hazy over its right half, the other date the clear ground."""
    torch.manual_seed(0)
    model = ViserCR(**TINY, num_frames=2, residual_base="fill", upsample="bilinear", use_flow=False,
                    haze_test=True).eval()
    for head in model.mask:  # the score calls everything clear
        torch.nn.init.constant_(head.score.fc2.bias, -20.0)
    ground = 0.05 + torch.rand(1, 4, 32, 32) * 0.1
    hazy = ground.clone()
    hazy[..., :, 16:] += torch.tensor([0.05, 0.06, 0.08, 0.03])[:, None, None]
    return model, ground, hazy, torch.stack([hazy, ground], dim=1)


def test_stack_model_fills_the_haze_its_score_missed_from_a_clear_date():
    """``haze_test``: on reflectance input the hazy part of a reference the score calls clear comes from
    the clear date; on 8-bit display imagery, or under a user's cloud mask, the reference stays."""
    model, ground, hazy, stack = _haze_test_model_and_a_hazy_stack()
    with torch.no_grad():
        base, _ = model.completion_base(stack)
        masked, _ = model.completion_base(stack, torch.zeros(1, 1, 32, 32))
        model.use_radiometry(True)
        display, _ = model.completion_base(stack)
    assert torch.allclose(base[..., 20:], ground[..., 20:], atol=1e-4)  # haze replaced by the clear date
    assert torch.allclose(base[..., :12], hazy[..., :12], atol=1e-4)  # clear reference kept
    assert torch.allclose(masked, hazy, atol=1e-4) and torch.allclose(display, hazy, atol=1e-4)
    assert model.arch["haze_test"] is True and "haze_test" not in ViserCR(**TINY).arch


def test_source_date_follows_the_reference_weight_the_fill_base_takes():
    """The source-date raster reads the reference's cloud weight as the base does: the haze its score
    missed comes from the clear date (``haze_test``); a user's cloud mask is taken as it is; 8-bit display
    imagery keeps the reference."""
    from viser_cr.core.pipeline import _dominant_dates

    model, _, _, stack = _haze_test_model_and_a_hazy_stack()
    with torch.no_grad():
        date_clouds = model.date_cloud_weights(stack)
        own = _dominant_dates(date_clouds)[0]
        hazed = _dominant_dates(date_clouds, None, model.reference_cloud_weight(stack, date_clouds))[0]
        user = torch.zeros(1, 1, 32, 32)
        user[..., :8, :] = 1
        masked = _dominant_dates(date_clouds, None, model.reference_cloud_weight(stack, date_clouds, user))[0]
        model.use_radiometry(True)
        display = _dominant_dates(date_clouds, None, model.reference_cloud_weight(stack, date_clouds))[0]
    assert (own == 1).all()  # its own score alone: the reference everywhere
    assert (hazed[:, 20:] == 2).all() and (hazed[:, :12] == 1).all()  # the haze from the clear date
    assert (masked[:8] == 2).all() and (masked[8:] == 1).all() and (display == 1).all()


def test_a_users_mask_replaces_the_score_or_adds_to_it():
    """use_mask_mode: replace, an empty mask fills nothing whatever the score says; add, the network's own
    clouds (here every pixel: its score heads pushed to 1) are filled as well."""
    torch.manual_seed(0)
    model = ViserCR(**TINY, residual_base="fill", upsample="bilinear").eval()
    for head in model.mask:
        torch.nn.init.constant_(head.score.fc2.bias, 20.0)
    x = torch.rand(1, 4, 32, 32) * 0.2
    empty = torch.zeros(1, 1, 32, 32)
    with torch.no_grad():
        replaced, _ = model.completion_base(x, empty)
        model.use_mask_mode(True)
        added, _ = model.completion_base(x, empty)
    assert torch.equal(replaced, x)
    assert torch.allclose(added, x.mean(dim=(2, 3), keepdim=True).expand_as(x), atol=1e-5)  # all cloud: the mean


def test_small_clear_holes_inside_a_cloud_are_filled_and_the_clouds_edges_kept():
    """``fill_holes``: a clear speck of a few px inside a cloud (a parallax fringe, a hazy gap between cumulus)
    becomes cloud; a clear channel reaching open ground, the clear ground itself, a clear gap on the tile's
    edge and the cloud's outer edge stay as they are."""
    from viser_cr.core.model.morphology import close_holes

    cloud = torch.zeros(1, 1, 64, 64)
    cloud[..., 10:50, 10:50] = 1.0
    cloud[..., 20:22, 20:23] = 0.0      # a 2 x 3 px clear speck inside the cloud
    cloud[..., 30:33, 40:50] = 0.0      # a 3 px wide clear channel from open ground 10 px into the cloud
    cloud[..., 0:3, 55:64] = 1.0
    cloud[..., 0:1, 58:60] = 0.0        # a clear gap on the tile's edge: the ground may go on beyond it
    closed = close_holes(cloud, 5)
    assert (closed[..., 20:22, 20:23] == 1).all()
    assert (closed[..., 30:33, 40:50] == 0).all()
    assert (closed[..., 0:1, 58:60] == 0).all()
    changed = (closed != cloud).squeeze()
    assert changed.sum() == 6  # the speck and nothing else: the cloud's edge and the clear ground as they were

    model = ViserCR(**TINY, residual_base="fill", upsample="bilinear", fill_holes=5).eval()
    plain = ViserCR(**TINY, residual_base="fill", upsample="bilinear").eval()
    assert model.arch["fill_holes"] == 5 and "fill_holes" not in plain.arch  # old cards still match
    score = cloud * 0.9 + 0.05
    assert torch.allclose(model.cloud_weight(score), close_holes(plain.cloud_weight(score), 5))
    assert (model.cloud_weight(score)[..., 20:22, 20:23] > 0.99).all()
    assert (plain.cloud_weight(score)[..., 20:22, 20:23] < 0.01).all()
    for width in (2, 4, 1):
        with pytest.raises(ValueError, match="fill_holes"):
            ViserCR(**TINY, residual_base="fill", fill_holes=width)


def test_a_filled_hole_takes_the_ground_around_the_cloud_not_its_own_fringe():
    """The network's fill base with ``fill_holes``: a bright-green fringe pixel inside a cloud (its own score
    low) no longer survives as a speck in the output; the ground outside the cloud is kept exactly. A user's
    cloud mask is taken as it is."""
    torch.manual_seed(0)
    model, plain = _with_and_without(fill_holes=5)
    x = torch.full((1, 4, 64, 64), 0.1)
    cloud = torch.zeros(1, 1, 64, 64)
    cloud[..., 16:48, 16:48] = 1.0
    cloud[..., 30:32, 30:32] = 0.0
    x[:, 1, 30:32, 30:32] = 0.6  # the fringe: green where the cloud's edge moved between bands
    for net in (model, plain):  # the score such a cloud gets, whatever the untrained heads say
        net._score_map = lambda scores, size: cloud * 0.9 + 0.05
    with torch.no_grad():
        (out, _), (kept, _), (as_given, _) = model(x), plain(x), model(x, cloud)
    assert (kept[:, 1, 30:32, 30:32] > 0.5).all()  # without: the speck stays
    assert (as_given[:, 1, 30:32, 30:32] > 0.5).all()
    assert torch.allclose(out[:, 1, 30:32, 30:32], torch.full((1, 2, 2), 0.1), atol=1e-3)
    assert torch.allclose(out[..., :12, :], x[..., :12, :], atol=1e-6)
