"""The reflectance saturation test on real imagery: a Landsat 5 crop whose thick cumulus saturate the blue band
(ukis-csmask, labelled clouds; tests/fixtures/ATTRIBUTION.md)."""

from __future__ import annotations

import numpy as np
import torch

from viser_cr.core.weights import find_model, load_model

CROP = "ukis_l5_saturated_128.npz"  # red, green, blue, NIR reflectance x 10^4; labels 4 cloud, 0 cloud shadow


def _saturated_cores(image: np.ndarray) -> np.ndarray:
    """The crop's pixels at the blue band's clipped level (its maximum, shared by 12 % of the crop)."""
    return image[2] == image[2].max()


def test_the_bundled_rgbn_model_fills_the_saturated_cores_of_real_landsat5_clouds(fixtures_dir, one_torch_thread):
    """The bundled model calls the flat saturated cores cloud and fills them with ground; the same weights without
    the test leave much of them as cloud-white (so the test can fail), and clear ground keeps its score."""
    data = np.load(fixtures_dir / CROP)
    image = torch.from_numpy(data["img"].astype(np.float32) * 1e-4)[None]
    cloud, clear = data["msk"] == 4, (data["msk"] != 4) & (data["msk"] != 0)
    cores = _saturated_cores(data["img"])
    card = find_model("viser-cr-s-rgbn")
    assert card.architecture.get("reflectance_saturation") is True
    model, _ = load_model(card)
    with torch.no_grad():
        output, score = model(image)
        model.reflectance_saturation = False
        plain_output, plain_score = model(image)
    called, plain_called = score[0, 0].numpy() > 0.5, plain_score[0, 0].numpy() > 0.5
    assert called[cores].mean() > 0.99 and plain_called[cores].mean() < 0.3  # 0.999 and 0.12 when written
    assert called[cloud].mean() > 0.85 and plain_called[cloud].mean() < 0.6  # 0.90 and 0.54
    assert abs(called[clear].mean() - plain_called[clear].mean()) < 0.01  # 0.092 and 0.091
    blue_core = image[0, 2].numpy()[cores].mean()  # 0.393, the clipped level
    assert output[0, 2].numpy()[cores].mean() < 0.5 * blue_core < plain_output[0, 2].numpy()[cores].mean()  # 0.16, 0.37


def test_the_command_line_fills_saturated_landsat5_cores(fixtures_dir, tmp_path, capsys):
    """The real crop as a georeferenced raster through ``viser-cr remove-clouds`` and the bundled model (tiled as
    the product runs): the score raster calls the saturated cores cloud and the output there is ground."""
    import rasterio
    from rasters import write_raster

    from viser_cr.core.cli import main

    data = np.load(fixtures_dir / CROP)
    source = write_raster(tmp_path / "landsat5.tif", data["img"])
    out, score = tmp_path / "out.tif", tmp_path / "score.tif"
    assert main(["remove-clouds", str(source), "-o", str(out), "--score-out", str(score), "--bands", "1,2,3,4",
                 "--scale", "0.0001", "--offset", "0", "--threads", "1", "--tile", "64", "--overlap", "16"]) == 0
    capsys.readouterr()
    cores = _saturated_cores(data["img"])
    with rasterio.open(out) as image, rasterio.open(score) as scored:
        blue, called = image.read(3).astype(np.float32) * 1e-4, scored.read(1) > 0.35
    assert called[cores].mean() > 0.99
    assert np.median(blue[cores]) < 0.2  # ground (0.39 in the input, the clipped level)
