"""The models shipped in resources/models/: each card matches its weights and the weights run.

These are the real bundled files (not the tiny test models): a wrong sha256 in a card, weights that no
longer fit the architecture code, or a selection rule that picks the wrong model for a sensor would
break the plugin for every user, so they are checked here on CPU (a 64x64 input, a fraction of a second).
"""

from __future__ import annotations

import math

import pytest
import torch

from viser_cr.core.weights import list_models, load_model, select_model

BUNDLED = list_models()


def test_the_three_bundled_models_are_there():
    assert {card.name for card in BUNDLED} == {"viser-cr-s-rgbn", "viser-cr-s-rgb", "viser-cr-s-rgbn-l3"}


@pytest.mark.parametrize("card", BUNDLED, ids=lambda card: card.name)
def test_bundled_model_loads_and_restores_a_tile(card):
    model, loaded = load_model(card)  # checks the sha256 and the architecture
    assert loaded.name == card.name and card.sha256.startswith("sha256:")
    frames = card.num_frames
    torch.manual_seed(0)
    x = torch.rand(1, frames, len(card.bands), 64, 64) * 0.3 if frames > 1 else torch.rand(1, len(card.bands), 64, 64) * 0.3
    with torch.inference_mode():
        image, score = model(x)
    assert image.shape == (1, len(card.bands), 64, 64) and score.shape == (1, 1, 64, 64)
    assert torch.isfinite(image).all() and 0.0 <= float(score.min()) <= float(score.max()) <= 1.0
    # trained weights, not the identity an untrained network starts as (zero output conv)
    assert float((image - (x[:, 0] if frames > 1 else x)).abs().mean()) > 1e-4


@pytest.mark.parametrize("card", BUNDLED, ids=lambda card: card.name)
def test_bundled_card_reports_its_evaluation(card):
    assert card.metrics, f"{card.name}: the card carries no measured metrics"
    assert card.tile_size >= 64 and 0 <= card.overlap < card.tile_size
    assert math.isclose(card.input_scaling["scale"], 1.0) and card.input_scaling["unit"] == "reflectance"


def test_sensor_presets_pick_the_right_bundled_model():
    assert select_model(["red", "green", "blue", "nir"]).name == "viser-cr-s-rgbn"
    assert select_model(["red", "green", "blue"]).name == "viser-cr-s-rgb"
    assert select_model(["red", "green", "blue", "nir"], num_frames=3).name == "viser-cr-s-rgbn-l3"
    assert select_model(["red", "green", "blue", "nir"], num_frames=2).name == "viser-cr-s-rgbn-l3"
