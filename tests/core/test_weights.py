"""Model cards, registry, selection, and safe loading of weights (every failure a WeightsError)."""

import json

import pytest
import torch

from viser_cr.core.errors import WeightsError
from viser_cr.core.model import ViserCR
from viser_cr.core.weights import (
    ModelCard,
    file_sha256,
    find_model,
    list_models,
    load_model,
    save_model,
    select_model,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = dict(
    in_bands=4, out_bands=4, width=8, blocks=[1, 1, 1], heads=[1, 2, 4], refine_blocks=1, sr_iterations=1
)


def _save(directory, name="m", half=False, **arch):
    torch.manual_seed(0)
    model = ViserCR(**dict(TINY, **arch)).eval()
    card = save_model(model, directory / name, half=half, bands=["red", "green", "blue", "nir"], tile_size=64)
    return model, card


def test_conftest_fixtures_work(tiny_models_dir, tiny_model_card):
    names = [c.name for c in list_models(tiny_models_dir)]
    assert names == ["tiny-rgb", "tiny-rgbn", "tiny-rgbn-l3"]
    assert tiny_model_card.name == "tiny-rgbn" and tiny_model_card.bands == ["red", "green", "blue", "nir"]
    model, card = load_model(tiny_model_card)
    assert not model.training and card.tile_size == 64 and card.overlap == 16
    image, score = model(torch.rand(1, 4, 24, 24))
    assert image.shape == (1, 4, 24, 24) and score.shape == (1, 1, 24, 24)


def test_round_trip_is_bit_exact(tmp_path):
    model, card = _save(tmp_path)
    assert (tmp_path / "m.safetensors").exists() and (tmp_path / "m.json").exists()
    assert card.sha256 == "sha256:" + file_sha256(tmp_path / "m.safetensors")
    loaded, loaded_card = load_model(tmp_path / "m.json")
    assert loaded_card == card
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.rand(1, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])


def test_saving_the_same_tensors_gives_the_same_file(tmp_path):
    """safetensors writes its metadata from a hash map, in another order each save: the header is sorted, so a
    re-export of the same weights keeps its sha256 (and the card its line), and the file still loads."""
    folders = [tmp_path / str(i) for i in range(5)]
    for folder in folders:
        folder.mkdir()
    cards = [_save(folder)[1] for folder in folders]  # the name is in the metadata: one name, five folders
    assert len({card.sha256 for card in cards}) == 1
    data = (folders[0] / "m.safetensors").read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = data[8:8 + size].decode()
    assert list(json.loads(header)) == sorted(json.loads(header)) and size % 8 == 0
    assert json.loads(header)["__metadata__"]["format"] == "viser-cr"
    loaded, _ = load_model(folders[0] / "m.json")
    for a, b in zip(loaded.state_dict().values(), _save(tmp_path)[0].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_half_storage_loads_as_float32(tmp_path):
    model, card = _save(tmp_path, half=True)
    assert card.dtype == "float16"
    loaded, _ = load_model(tmp_path / "m.safetensors")
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert b.dtype == torch.float32 and torch.allclose(a, b, atol=1e-3, rtol=1e-3)


def test_find_model_by_name_card_and_weights_path(tiny_models_dir):
    by_name = find_model("tiny-rgb", models_dir=tiny_models_dir)
    assert find_model(tiny_models_dir / "tiny-rgb.json") == by_name
    assert find_model(str(tiny_models_dir / "tiny-rgb.safetensors")) == by_name
    with pytest.raises(WeightsError, match="no model named 'nope'.*tiny-rgbn"):
        find_model("nope", models_dir=tiny_models_dir)


def test_select_model_prefers_covered_bands_and_matching_dates(tiny_models_dir):
    rgbn = ["red", "green", "blue", "nir"]
    assert select_model(rgbn, 1, models_dir=tiny_models_dir).name == "tiny-rgbn"
    assert select_model(["Blue", "Green", "Red"], 1, models_dir=tiny_models_dir).name == "tiny-rgb"
    assert select_model(rgbn, 3, models_dir=tiny_models_dir).name == "tiny-rgbn-l3"
    assert select_model(rgbn, 2, models_dir=tiny_models_dir).name == "tiny-rgbn-l3"
    assert select_model(rgbn + ["swir1"], 4, models_dir=tiny_models_dir).name == "tiny-rgbn-l3"
    with pytest.raises(WeightsError, match="no model .* fits an input with bands red, green"):
        select_model(["red", "green"], 1, models_dir=tiny_models_dir)


def test_card_json_round_trip_keeps_unknown_fields():
    card = ModelCard(
        name="x", weights="x.safetensors", sha256="0" * 64, architecture={"width": 8}, bands=["red"]
    )
    data = card.to_dict()
    data["future_field"] = {"a": 1}
    again = ModelCard.from_json(json.dumps(data))
    assert again.extra == {"future_field": {"a": 1}} and again.to_dict() == data
    assert ModelCard.from_json(card.to_json()) == card


def _rewrite_card(tmp_path, **changes):
    path = tmp_path / "m.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_corrupt_weights_raise(tmp_path):
    _save(tmp_path)
    path = tmp_path / "m.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="m.safetensors.*sha256"):
        load_model(tmp_path / "m.json")


def test_truncated_weights_raise(tmp_path):
    _save(tmp_path)
    path = tmp_path / "m.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="m.safetensors"):
        load_model(tmp_path / "m.json")
    # even with a card that agrees with the truncated file, it is not a readable safetensors file
    _rewrite_card(tmp_path, sha256=file_sha256(path))
    with pytest.raises(WeightsError, match="m.safetensors is not a readable safetensors file"):
        load_model(tmp_path / "m.json")


def test_wrong_sha_raises(tmp_path):
    _save(tmp_path)
    _rewrite_card(tmp_path, sha256="f" * 64)
    with pytest.raises(WeightsError, match="m.safetensors does not match its card's sha256"):
        load_model(tmp_path / "m.json")


def test_other_architecture_raises(tmp_path):
    _save(tmp_path)
    # the card claims a wider network than the file holds
    _rewrite_card(
        tmp_path, architecture=dict(json.loads((tmp_path / "m.json").read_text())["architecture"], width=16)
    )
    with pytest.raises(WeightsError, match="m.safetensors was saved for another architecture"):
        load_model(tmp_path / "m.json")


def test_other_architecture_without_metadata_raises(tmp_path):
    from safetensors.torch import save_file

    _, card = _save(tmp_path)
    other = ViserCR(**dict(TINY, use_pse=False))
    save_file(other.state_dict(), str(tmp_path / "m.safetensors"))  # no metadata
    _rewrite_card(tmp_path, sha256=file_sha256(tmp_path / "m.safetensors"))
    with pytest.raises(WeightsError, match="m.safetensors does not fit the architecture in its card"):
        load_model(tmp_path / "m.json")


def test_unbuildable_architecture_raises(tmp_path):
    _save(tmp_path)
    _rewrite_card(tmp_path, architecture={"no_such_argument": 1})
    with pytest.raises(WeightsError, match="m.json"):
        load_model(tmp_path / "m.json")


def test_missing_files_raise(tmp_path):
    _save(tmp_path)
    (tmp_path / "m.safetensors").unlink()
    with pytest.raises(WeightsError, match="m.safetensors.*missing"):
        load_model(tmp_path / "m.json")
    with pytest.raises(WeightsError, match="gone.json does not exist"):
        load_model(tmp_path / "gone.json")
    _save(tmp_path, name="w")
    (tmp_path / "w.json").unlink()
    with pytest.raises(WeightsError, match="w.safetensors has no model card w.json"):
        find_model(tmp_path / "w.safetensors")


def test_broken_card_is_a_weights_error_and_skipped_in_listing(tmp_path):
    _save(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(WeightsError, match="bad.json"):
        find_model(tmp_path / "bad.json")
    with pytest.warns(UserWarning, match="bad.json"):
        assert [c.name for c in list_models(tmp_path)] == ["m"]


def test_weights_are_not_pickle(tmp_path):
    _save(tmp_path)
    data = (tmp_path / "m.safetensors").read_bytes()
    # safetensors: an 8-byte little-endian header length, then a JSON header (a pickle or a torch zip
    # would start with 0x80 / "PK"; the first byte of the length may be 0x80 by chance, so parse it)
    header_len = int.from_bytes(data[:8], "little")
    assert 2 <= header_len < len(data)
    assert "__metadata__" in json.loads(data[8:8 + header_len])
    assert not data.startswith(b"PK")
