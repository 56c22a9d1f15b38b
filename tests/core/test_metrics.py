"""core.metrics: PSNR / SSIM / MAE against scikit-image and hand-computed values; protocols; rasters."""

import math

import numpy as np
import pytest
from rasters import write_raster

from viser_cr.core import metrics as M
from viser_cr.core.errors import InputError

skm = pytest.importorskip("skimage.metrics")


@pytest.fixture
def pair():
    rng = np.random.default_rng(1)
    a = rng.random((4, 48, 40))
    b = np.clip(a + 0.08 * rng.standard_normal(a.shape), 0, 1)
    return a, b


def test_psnr_matches_skimage(pair):
    a, b = pair
    assert M.psnr(b, a) == pytest.approx(skm.peak_signal_noise_ratio(a, b, data_range=1.0), rel=1e-12)
    a8, b8 = np.round(a * 255), np.round(b * 255)
    assert M.psnr(b8, a8, 255) == pytest.approx(skm.peak_signal_noise_ratio(a8, b8, data_range=255), rel=1e-12)


def test_ssim_gaussian_matches_skimage(pair):
    a, b = pair
    ref = np.mean([skm.structural_similarity(a[i], b[i], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False) for i in range(4)])
    assert M.ssim(a, b, 1.0, "gaussian") == pytest.approx(ref, abs=1e-12)


def test_ssim_uniform7_matches_skimage(pair):
    a, b = pair
    a8, b8 = np.round(a * 255), np.round(b * 255)
    ref = skm.structural_similarity(a8, b8, data_range=255, channel_axis=0)
    assert M.ssim(a8, b8, 255.0, "uniform", 7) == pytest.approx(ref, abs=1e-12)


def test_hand_computed_values():
    ref = np.zeros((3, 16, 16))
    pred = ref + 0.1
    assert M.mae(pred, ref) == pytest.approx(0.1)
    assert M.psnr(pred, ref) == pytest.approx(20.0)  # MSE 0.01 -> 10 log10(1 / 0.01)
    assert M.psnr(ref, ref) == math.inf
    assert M.ssim(ref + 0.3, ref + 0.3) == pytest.approx(1.0)
    # half the pixels off by 0.2: masked PSNR sees only them
    p = ref.copy()
    p[:, :, :8] = 0.2
    mask = np.zeros((16, 16), bool)
    mask[:, :8] = True
    assert M.psnr(p, ref, mask=mask) == pytest.approx(10 * math.log10(1 / 0.04))
    assert M.psnr(p, ref, mask=~mask) == math.inf
    assert M.mae(p, ref, mask=mask) == pytest.approx(0.2)
    assert math.isnan(M.psnr(p, ref, mask=np.zeros((16, 16), bool)))
    # constant images: SSIM luminance term (2*mx*my + c1) / (mx^2 + my^2 + c1)
    c1 = 0.01**2
    assert M.ssim(np.full((12, 12), 0.5), np.full((12, 12), 0.3)) == pytest.approx((2 * 0.15 + c1) / (0.34 + c1))


def test_torch_tensors_accepted(pair):
    torch = pytest.importorskip("torch")
    a, b = pair
    assert M.psnr(torch.from_numpy(b), torch.from_numpy(a)) == pytest.approx(M.psnr(b, a))


def test_protocols():
    rng = np.random.default_rng(0)
    t = rng.random((4, 32, 32)) * 0.18
    p = t + 0.01
    m = M.protocol_metrics(p, t, "emrdm-cuhk")
    q = lambda a: np.clip(np.round(a * 255), 0, 255)  # noqa: E731
    assert m["psnr"] == pytest.approx(skm.peak_signal_noise_ratio(q(t), q(p), data_range=255))
    assert m["ssim"] == pytest.approx(skm.structural_similarity(q(t), q(p), data_range=255, channel_axis=0))
    # sen2mtc: RGB, clip to 2000 DN, min-max per image -> a gain/offset change of the prediction is invisible
    s = M.protocol_metrics(t * 0.5 + 0.01, t, "emrdm-sen2mtc")
    assert s["psnr"] > 100
    assert s["ssim"] == pytest.approx(1.0)
    c = M.protocol_metrics(p, t, "clean", mask=np.ones((32, 32)))
    assert c["psnr"] == pytest.approx(40.0)
    assert math.isnan(c["psnr_clear"]) and c["psnr_cloudy"] == pytest.approx(40.0)
    with pytest.raises(ValueError):
        M.protocol_metrics(p, t, "nope")


def test_evaluate_rasters(tmp_path):
    pytest.importorskip("rasterio")
    rng = np.random.default_rng(0)
    ref = rng.integers(500, 3000, (3, 40, 40)).astype(np.uint16)
    pred = ref.copy()
    pred[0] += 100  # band 1 off by 0.01 reflectance
    pred[:, :5, :] = 0  # nodata rows
    rp = write_raster(tmp_path / "ref.tif", ref, "uint16")
    pp = write_raster(tmp_path / "pred.tif", pred, "uint16", nodata=0)
    # an unlabelled uint16 file is refused as the pipeline refuses it: the user says what it is
    with pytest.raises(InputError, match="--sensor s2-l1c"):
        M.evaluate_rasters(pp, rp)
    r = M.evaluate_rasters(pp, rp, sensor="s2-l1c")
    assert r["pixels"] == 35 * 40
    assert r["per_band"][0]["psnr"] == pytest.approx(40.0)
    assert r["per_band"][1]["psnr"] == math.inf
    assert r["psnr"] == pytest.approx(10 * math.log10(1 / (1e-4 / 3)))
    assert r["mae"] == pytest.approx(0.01 / 3)
    assert r["scaling"]["prediction"][:2] == [1e-4, 0.0]
    # band subset and explicit scale
    r2 = M.evaluate_rasters(pp, rp, bands=[1], scale=1e-4)
    assert r2["bands"] == [1] and r2["psnr"] == pytest.approx(40.0)
    # a cloud mask splits cloudy / clear pixels
    mk = np.zeros((1, 40, 40), np.uint8)
    mk[:, 20:] = 1
    mp = write_raster(tmp_path / "mask.tif", mk, "uint8")
    r3 = M.evaluate_rasters(pp, rp, mask=mp, sensor="s2-l1c")
    assert r3["pixels_cloudy"] == 20 * 40 and r3["pixels_clear"] == 15 * 40
    assert r3["psnr_cloudy"] == pytest.approx(r3["psnr_clear"])


def test_evaluate_scales_landsat_c2_l2_as_the_pipeline_does(tmp_path):
    """Auto mode detects a Landsat Collection 2 Level-2 file (its name) and uses DN x 2.75e-5 - 0.2,
    the scaling a cloud-removal run uses, not the DN / 10000 of a bare uint16 rule."""
    pytest.importorskip("rasterio")
    rng = np.random.default_rng(1)
    reflectance = rng.uniform(0.02, 0.4, (4, 32, 32))
    dn = np.round((reflectance + 0.2) / 2.75e-5).astype(np.uint16)
    name = "LC09_L2SP_224078_20230518_20230520_02_T1_SR.tif"
    ref = write_raster(tmp_path / name, dn, "uint16", nodata=0)
    pred_dn = dn.copy()
    pred_dn[0] += 364  # 0.01 reflectance in band 1 at 2.75e-5 per DN
    pred = write_raster(tmp_path / ("pred_" + name).replace("pred_LC09", "LC09").replace("_SR", "_SR_pred"), pred_dn,
                  "uint16", nodata=0)
    r = M.evaluate_rasters(pred, ref)
    assert r["scaling"]["reference"][:2] == [2.75e-5, -0.2]
    assert r["scaling"]["prediction"][:2] == [2.75e-5, -0.2]
    assert "landsat-c2l2" in r["scaling"]["reference"][2]
    assert r["per_band"][0]["mae"] == pytest.approx(364 * 2.75e-5, rel=1e-6)


def test_evaluate_rasters_errors(tmp_path):
    pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    a = np.ones((1, 20, 20), np.uint8)
    p1 = write_raster(tmp_path / "a.tif", a, "uint8")
    p2 = write_raster(tmp_path / "b.tif", np.ones((1, 20, 22), np.uint8), "uint8")
    p3 = write_raster(tmp_path / "c.tif", a, "uint8", transform=from_origin(500100, 5000000, 10, 10))
    with pytest.raises(InputError, match="same grid"):
        M.evaluate_rasters(p1, p2)
    with pytest.raises(InputError, match="same grid"):
        M.evaluate_rasters(p1, p3)
    with pytest.raises(InputError, match="not found"):
        M.evaluate_rasters(tmp_path / "missing.tif", p1)
    with pytest.raises(InputError, match="band 2"):
        M.evaluate_rasters(p1, p1, bands=[2])
    assert M.evaluate_rasters(p1, p1)["psnr"] == math.inf
