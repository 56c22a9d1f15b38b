"""The bundled L1C cloud classifier (core.l1c_cloud, resources/cloud/) on real Sentinel-2 L1C crops: it must call
clouds where s2cloudless does, load only with its card's sha256, and score spectra beyond its training range like
the nearest trained ones."""

import shutil

import numpy as np
import pytest
import rasterio

from viser_cr.core import l1c_cloud, s2cloudless
from viser_cr.core.errors import WeightsError
from viser_cr.core.sensors import S2_13


def _l1c(path):
    with rasterio.open(path) as ds:
        return ds.read().astype(np.float32) * 1e-4


def _masks(l1c):
    return {classifier: s2cloudless.window_cloud(l1c, S2_13, classifier=classifier)
            for classifier in s2cloudless.CLASSIFIERS}


def test_it_calls_cloud_where_s2cloudless_does(fixtures_dir):
    """Real L1C crops the classifier never saw in training (ATTRIBUTION.md): a clear and a cloudy series date, the
    partly cloudy SEN12MS-CR crop and its clear date. Masks with few clouds agree less (IoU 0.70-0.96 on the card's
    held-out images; 0.81 on the partly cloudy crop)."""
    clear = _masks(_l1c(fixtures_dir / "ts_s2_ImgNo_9_2018-04-26_64.tif"))
    cloudy = _masks(_l1c(fixtures_dir / "ts_s2_ImgNo_7_2018-04-01_64.tif"))
    assert clear["viser-l1c-cloud"].mean() < 0.05 and cloudy["viser-l1c-cloud"].mean() > 0.9
    for name in ("ts_s2_ImgNo_5_2018-03-07_64.tif", "s2l1c_cloudy_96.tif", "s2l1c_clear_96.tif"):
        masks = _masks(_l1c(fixtures_dir / name))
        union = (masks["s2cloudless"] | masks["viser-l1c-cloud"]).sum()
        agree = (masks["s2cloudless"] & masks["viser-l1c-cloud"]).sum() / union if union else 1.0
        assert agree > 0.75, (name, agree, {k: m.mean() for k, m in masks.items()})


def test_a_changed_weights_file_is_refused(tmp_path):
    folder = tmp_path / "cloud"
    shutil.copytree(l1c_cloud.CLASSIFIER_DIR, folder)
    assert l1c_cloud.load(folder).predict(np.full((1, 10), 0.1, np.float32)).shape == (1,)
    weights = folder / f"{l1c_cloud.NAME}.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="do not match its card's sha256.*re-install the plugin"):
        l1c_cloud.load(folder)
    (folder / f"{l1c_cloud.NAME}.json").unlink()
    with pytest.raises(WeightsError, match="cannot be read"):
        l1c_cloud.load(folder)


def test_spectra_beyond_the_trained_range_score_like_its_edge():
    """An out-of-range pixel (a sensor fault, a wrong scale) is scored as the nearest trained spectrum: the
    features are clipped, so the network never extrapolates."""
    classifier = l1c_cloud.bundled()
    low, high = classifier.tensors["feature_low"][:10], classifier.tensors["feature_high"][:10]
    edges = np.stack([high, low, np.zeros(10, np.float32)])
    beyond = np.stack([high * 50, np.zeros(10, np.float32), np.full(10, -1, np.float32)])
    np.testing.assert_allclose(classifier.predict(beyond), classifier.predict(edges), atol=1e-6)
    probability = classifier.predict(np.random.default_rng(0).uniform(0, 2, (1000, 10)).astype(np.float32))
    assert np.isfinite(probability).all() and (probability >= 0).all() and (probability <= 1).all()
