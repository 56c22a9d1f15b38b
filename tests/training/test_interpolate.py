"""training/interpolate.py: WiSE-FT weight interpolation of two training checkpoints."""

import pytest
import torch

from viser_cr.core.errors import ViserError
from viser_cr.training.checkpoint import load_checkpoint
from viser_cr.training.interpolate import interpolate


def _checkpoint(path, weight, arch=None, step=1):
    state = {"w": torch.full((2, 3), float(weight)), "count": torch.tensor([7])}
    torch.save({"format": "viser-cr-train", "arch": arch or {"width": 8}, "model": state, "step": step,
                "config": {"name": f"run{step}"}, "band_names": ["red", "green", "blue"],
                "optimizer": {"state": {}}}, path)
    return path


def test_interpolate_is_a_per_weight_lerp_keeping_the_finetuned_metadata(tmp_path):
    a = _checkpoint(tmp_path / "a.pt", 1.0, step=100)
    b = _checkpoint(tmp_path / "b.pt", 3.0, step=900)
    interpolate(a, b, 0.25, tmp_path / "out" / "c.pt")
    c = load_checkpoint(tmp_path / "out" / "c.pt")
    assert torch.allclose(c["model"]["w"], torch.full((2, 3), 1.5))
    assert torch.equal(c["model"]["count"], torch.tensor([7]))  # integer buffers are not interpolated
    assert c["step"] == 900 and c["config"]["name"] == "run900" and "optimizer" not in c
    assert c["interpolation"]["alpha"] == 0.25
    interpolate(a, b, 1.0, tmp_path / "d.pt")
    assert torch.equal(load_checkpoint(tmp_path / "d.pt")["model"]["w"], torch.full((2, 3), 3.0))


def test_interpolate_refuses_other_architectures_and_bad_alpha(tmp_path):
    a = _checkpoint(tmp_path / "a.pt", 1.0)
    b = _checkpoint(tmp_path / "b.pt", 3.0, arch={"width": 16})
    with pytest.raises(ViserError, match="different architectures"):
        interpolate(a, b, 0.5, tmp_path / "c.pt")
    with pytest.raises(ViserError, match="alpha"):
        interpolate(a, a, 1.5, tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()
