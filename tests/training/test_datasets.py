"""Dataset loaders on generated files in the official layouts."""

import numpy as np
import pytest
import torch

pytest.importorskip("rasterio")

from datagen import make_clear_sources, make_cuhk, make_sen2mtc, make_sen12mscr, make_series

from viser_cr.core.errors import InputError
from viser_cr.training.datasets import (
    CUHKCR,
    MixDataset,
    PairsDataset,
    Sen2MTC,
    SeriesDataset,
    build_dataset,
    load_clear_images,
)
from viser_cr.training.datasets.common import LAYOUTS, apply_geometry, read_reflectance


def _keys_ok(s, stack, c=4):
    assert s["input"].dtype == torch.float32
    assert s["target"].shape[0] == c
    assert s["input"].dim() == (4 if stack else 3)
    assert s["mask"].shape == (1, *s["target"].shape[1:])
    assert s["date_masks"].dim() == 4


def test_cuhk_layout(tmp_path):
    root = make_cuhk(tmp_path, version=1)
    ds = CUHKCR(root, version=1, split="train", resize=32)
    assert len(ds) == 3 and ds.band_names == ("red", "green", "blue", "nir")
    s = ds[0]
    _keys_ok(s, False)
    assert s["input"].shape == (4, 32, 32)
    assert 0 <= float(s["input"].min()) and float(s["input"].max()) <= 1
    # NIR comes from channel 0 of the grey PNG of the parallel nir tree
    assert torch.equal(s["input"][3], s["input"][0])  # generated NIR = the grey of the red channel
    test = CUHKCR(root, version=1, split="test", resize=None)
    assert len(test) == 2 and test[1]["input"].shape == (4, 64, 64)
    assert not test.train
    rgb = CUHKCR(root, version=1, split="test", nir=False, resize=None)
    assert rgb.band_names == ("red", "green", "blue") and rgb[0]["input"].shape[0] == 3


def test_cuhk_errors(tmp_path):
    root = make_cuhk(tmp_path, version=2)
    with pytest.raises(InputError, match="CUHK-CR1 folder missing"):
        CUHKCR(root, version=1)
    (root / "nir" / "CUHK-CR2" / "train" / "label" / "1.png").unlink()
    with pytest.raises(InputError, match="lack their partner.*1.png"):
        CUHKCR(root, version=2, split="train")
    (root / "CUHK-CR2" / "test" / "label" / "0.png").unlink()
    with pytest.raises(InputError, match="partner"):
        CUHKCR(root, version=2, split="test", nir=False)


def test_sen2mtc_layout_and_splits(tmp_path):
    root = make_sen2mtc(tmp_path)
    tr = Sen2MTC(root, "train")
    assert len(tr) == 4 and tr.num_frames == 3
    s = tr[0]
    _keys_ok(s, True)
    assert s["input"].shape == (3, 4, 32, 32) and s["date_masks"].shape == (3, 1, 32, 32)
    assert Sen2MTC(root, "test").tiles == ["T41VMJ_R006"]
    mono = Sen2MTC(root, "val", mono_temporal=1, bands=("red", "green", "blue"))
    assert mono.num_frames is None and mono[0]["input"].shape == (3, 32, 32)
    # without split files: the published tile lists
    (root / "test.txt").unlink()
    (root / "train.txt").unlink()
    with pytest.raises(InputError, match="folder missing"):
        Sen2MTC(root, "test")  # T31TBG_R051 etc. are not there
    assert set(Sen2MTC(root, "train").tiles) == {"T10ABC_R001", "T11ABC_R002"}


def test_sen2mtc_errors(tmp_path):
    with pytest.raises(InputError, match="Sen2_MTC_New folder missing"):
        Sen2MTC(tmp_path, "train")
    root = make_sen2mtc(tmp_path)
    (root / "Sen2_MTC" / "T10ABC_R001" / "cloud" / "T10ABC_R001_1_2.tif").unlink()
    with pytest.raises(InputError, match="T10ABC_R001_1_2.tif"):
        Sen2MTC(root, "train")


def test_sen12mscr_pairs_scene_split(tmp_path):
    root = make_sen12mscr(tmp_path)
    train = PairsDataset(root, include=["^ROIs1970_fall_136_"], patch_size=32, seed=3)
    assert len(train) == 2 and all("ROIs1970_fall_136" in p[0].name for p in train.pairs)
    rest = PairsDataset(root, exclude=["^ROIs1970_fall_136_"], patch_size=None, train=False)
    assert {p[0].stem.rsplit("_p", 1)[0] for p in rest.pairs} == {"ROIs1868_summer_135"}
    s = train[0]
    _keys_ok(s, False)
    assert s["input"].shape == (4, 32, 32) and 0 < float(s["mask_weight"]) < 1
    full = rest[0]
    assert full["input"].shape == (4, 64, 64)
    assert full["mask"].sum() > 0  # the generated "cloud" is found by the pseudo mask
    (root / "clear" / "ROIs1868_summer_135_p101.tif").unlink()
    with pytest.raises(InputError, match="no clear partner.*p101"):
        PairsDataset(root)
    with pytest.raises(InputError, match="folder missing"):
        PairsDataset(tmp_path / "nowhere")


def test_identical_geometry_for_all_dates_and_target(tmp_path):
    root = make_sen2mtc(tmp_path)
    ds = Sen2MTC(root, "train", patch_size=16, seed=5)
    raw = Sen2MTC(root, "train", patch_size=None, train=False)
    for i in range(4):
        s, r = ds[i], raw[i]
        # the sample is the same crop + geometry of every array: find it on the target, check the dates
        found = False
        for k in range(4):
            for f in (False, True):
                tt = apply_geometry(r["target"].numpy(), (k, f))
                xx = apply_geometry(r["input"].numpy(), (k, f))
                for r0 in range(tt.shape[-2] - 15):
                    for c0 in range(tt.shape[-1] - 15):
                        if np.array_equal(tt[:, r0 : r0 + 16, c0 : c0 + 16], s["target"].numpy()):
                            assert np.array_equal(xx[..., r0 : r0 + 16, c0 : c0 + 16], s["input"].numpy())
                            found = True
        assert found


def test_series_real_and_synthetic(tmp_path):
    root = make_series(tmp_path)
    real = SeriesDataset(root, num_frames=3, mode="real", patch_size=32, window=3, train=False)
    assert real.cloud_fraction[1] > 0.2 and real.cloud_fraction[0] < 0.05
    for t, inputs, _ in real.samples:
        assert real.cloud_fraction[t] <= 0.05 and t not in inputs
        assert real.cloud_fraction[inputs[0]] >= 0.05 and len(inputs) == 3
    s = real[0]
    _keys_ok(s, True)
    syn = SeriesDataset(root, num_frames=3, mode="synthetic", patch_size=32, dates=[0, 1, 2, 3, 4], seed=1)
    assert set(syn.imgno) == {0, 1, 2, 3, 4}
    s = syn[0]
    assert float(s["mask_weight"]) == 1.0
    changed = (s["input"][0] != s["target"]).any(0)
    assert not changed[s["mask"][0] == 0].any()  # reference date: clouds only inside the mask
    with pytest.raises(InputError, match="none of the dates"):
        SeriesDataset(root, dates=[99])


def test_clear_sources_and_layouts(tmp_path):
    root = make_clear_sources(tmp_path)
    imgs = load_clear_images([{"files": "s2/*.tif", "layout": "s2-13"},
                              {"files": "rgbn.tif", "layout": "rgbn8", "window": [0, 0, 0.5, 1]}],
                             ("red", "green", "blue", "nir"), root)
    assert len(imgs) == 4 and imgs[-1].data.shape == (4, 96, 48) and imgs[-1].radiometry == "display"
    with pytest.raises(InputError, match="lacks band"):
        load_clear_images([{"files": "landsat8.tif", "layout": "landsat8-bgr"}], ("red", "green", "blue", "nir"), root)
    rgb = load_clear_images([{"files": "landsat8.tif", "layout": "landsat8-bgr"}], ("red", "green", "blue"), root)
    assert not rgb[0].valid[:, :10].any() and rgb[0].valid[:, 10:].all()
    import rasterio

    refl, valid = read_reflectance(root / "landsat8.tif", LAYOUTS["landsat8-bgr"], ("red", "blue"))
    with rasterio.open(root / "landsat8.tif") as src:
        dn = src.read().astype(np.float64)
    assert np.allclose(refl[0][valid], (2e-5 * dn[2] - 0.1)[valid], atol=1e-6)  # red is band 3 (blue first)
    assert np.allclose(refl[1][valid], (2e-5 * dn[0] - 0.1)[valid], atol=1e-6)
    assert not valid[:, :10].any()
    with pytest.raises(InputError, match="no file matches"):
        load_clear_images([{"files": "none/*.tif"}], ("red",), root)


def test_stretch_emulates_an_8bit_true_colour_export(tmp_path):
    root = make_clear_sources(tmp_path)
    entry = {"files": "landsat8.tif", "layout": "landsat8-bgr", "stretch": [2, 98]}
    (image,) = load_clear_images([entry], ("red", "green", "blue"), root)
    refl, valid = read_reflectance(root / "landsat8.tif", LAYOUTS["landsat8-bgr"], ("red", "green", "blue"))
    assert image.radiometry == "display" and image.quantum == pytest.approx(1 / 255)
    values = image.data[:, image.valid]
    assert np.allclose(values * 255, np.round(values * 255), atol=1e-4)  # 8-bit levels
    for band in range(3):  # 2 % of the valid pixels at or below 0, 2 % at or above 255
        assert np.mean(values[band] == 0) == pytest.approx(0.02, abs=0.01)
        assert np.mean(values[band] == 1) == pytest.approx(0.02, abs=0.01)
        # a monotonic map of the reflectance
        order = np.argsort(refl[band][valid])
        assert np.all(np.diff(values[band][order]) >= 0)
    assert not image.data[:, ~image.valid].any()
    with pytest.raises(InputError, match="two percentiles"):
        load_clear_images([dict(entry, stretch=[98, 2])], ("red", "green", "blue"), root)


def test_export_stretches_input_and_target_alike_after_the_clouds(tmp_path):
    """``export``: clouds made in reflectance, then input and target exported as one 8-bit image (the clear
    crop's or the cloudy crop's percentiles), so they differ only under the clouds, which saturate."""
    from viser_cr.training.datasets import CloudConfig, CloudGenerator, SyntheticCloudDataset

    root = make_clear_sources(tmp_path)
    bands = ("red", "green", "blue")
    clouds = CloudGenerator(CloudConfig(p_thick=1.0, p_thin=0.0, p_shadow=0.0, thick_coverage=(0.3, 0.4)))
    for source in ("clear", "cloudy"):
        entry = {"files": "landsat8.tif", "layout": "landsat8-bgr", "export": [2, 98], "export_from": source}
        images = load_clear_images([entry], bands, root)
        assert images[0].radiometry == "reflectance" and images[0].export == (2.0, 98.0)
        sample = SyntheticCloudDataset(images, bands, clouds, patch_size=48, length=1, seed=2)[0]
        x, target, mask = sample["input"].numpy(), sample["target"].numpy(), sample["mask"][0].numpy()
        assert bool(sample["display"]) and mask.mean() > 0.1
        assert np.allclose(x * 255, np.round(x * 255), atol=1e-4) and 0 <= x.min() and x.max() <= 1
        assert np.array_equal(x[:, mask == 0], target[:, mask == 0])  # one stretch for both
        assert x[:, mask > 0.99].mean() > target[:, mask > 0.99].mean() + 0.2  # bright clouds
        if source == "clear":  # the clear crop's 98th percentile: opaque cloud saturates
            assert (x[:, mask > 0.99] == 1).mean() > 0.5
            assert np.mean(target == 1) == pytest.approx(0.02, abs=0.015)
        else:  # the cloudy crop sets the stretch: the clear ground is pushed down
            assert np.mean(target == 1) < 0.01
    with pytest.raises(InputError, match="export_from"):
        load_clear_images([dict(entry, export_from="target")], bands, root)
    with pytest.raises(InputError, match="8-bit already"):
        load_clear_images([{"files": "landsat8.tif", "layout": "landsat8-bgr", "stretch": [2, 98], "export": [2, 98]}],
                          bands, root)


def test_pairs_as_one_8bit_export(tmp_path):
    """Real pairs with ``stretch``: both dates exported with the clear date's percentiles (display input)."""
    root = make_sen12mscr(tmp_path)
    raw = PairsDataset(root, patch_size=None, train=False)[0]
    ds = PairsDataset(root, patch_size=None, train=False, stretch=[2, 98])
    s = ds[0]
    x, target = s["input"].numpy(), s["target"].numpy()
    assert bool(s["display"]) and not bool(raw["display"])
    assert np.allclose(x * 255, np.round(x * 255), atol=1e-4)
    assert torch.equal(s["mask"], raw["mask"])  # the mask comes from the reflectance
    for band in range(x.shape[0]):
        assert np.mean(target[band] == 1) == pytest.approx(0.02, abs=0.015)
    assert x[:, s["mask"][0].numpy() > 0].mean() > target[:, s["mask"][0].numpy() > 0].mean()


def test_build_dataset_mix_and_epochs(tmp_path):
    make_clear_sources(tmp_path / "clear")
    make_sen12mscr(tmp_path / "pairs")
    cfg = {"root": str(tmp_path), "bands": ["red", "green", "blue", "nir"], "patch_size": 32,
           "train": [{"type": "synthetic", "length": 5, "sources": [{"files": "clear/s2/*.tif"}]},
                     {"type": "pairs", "root": "pairs", "repeat": 2}]}
    ds = build_dataset(cfg, "train", seed=0)
    assert isinstance(ds, MixDataset) and len(ds) == 5 + 8
    assert not ds[0]["display"] and not ds[7]["display"]  # reflectance sources and pairs
    cfg_8bit = dict(cfg, train=[{"type": "synthetic", "length": 2,
                                 "sources": [{"files": "clear/s2/*.tif", "stretch": [2, 98]}]}])
    assert build_dataset(cfg_8bit, "train", seed=0)[0]["display"]  # an 8-bit export: the display gate
    a = ds[7]["input"].clone()
    assert torch.equal(a, ds[7]["input"])          # deterministic
    assert not torch.equal(ds[5]["input"], ds[9]["input"])  # a repeat of the same pair draws another crop
    ds.set_epoch(1)
    assert not torch.equal(a, ds[7]["input"])      # a new epoch draws new crops
    with pytest.raises(InputError, match="unknown dataset type"):
        build_dataset({"train": [{"type": "imagenet"}]}, "train")
    with pytest.raises(InputError, match="no data.val"):
        build_dataset(cfg, "val")


def test_dates_of_one_place_are_coregistered_and_used_as_context(tmp_path):
    """``dates: true``: files of one place on grids a pixel apart are read onto the first file's grid, and
    a stack's context dates show another date's ground (real change), not a copy of the target's."""
    from affine import Affine
    from datagen import smooth_field
    from rasters import write_raster

    from viser_cr.training.datasets import SyntheticCloudDataset
    from viser_cr.training.datasets.clouds import CloudGenerator

    rng = np.random.default_rng(3)
    ground = (smooth_field(rng, 4 * 66, 66) * 200 + 20).reshape(4, 66, 66)
    for day, level in ((1, 0), (2, 30)):
        # date 2 is one pixel (5 m) east: its grid starts one column later
        shift = day - 1
        data = np.clip(ground[:, :64, shift : shift + 64] + level, 1, 255)
        write_raster(tmp_path / f"place_2020010{day}.tif", data, dtype="uint8", nodata=0,
                  transform=Affine(5, 0, 500000 + 5 * shift, 0, -5, 5200000))
    images = load_clear_images([{"files": "place_*.tif", "layout": "naip-rgbn8", "dates": True}],
                               ("red", "green", "blue", "nir"), tmp_path)
    assert len(images) == 2 and all(im.dates == images for im in images)
    first, second = images
    both = first.valid & second.valid
    assert np.array_equal(first.valid, second.valid) and both[:, 5:60].all()
    # on the first date's grid the second date is the same ground, 30 levels brighter
    diff = (second.data - first.data)[:, both]
    assert np.allclose(diff, 30 / 255, atol=2 / 255)

    ds = SyntheticCloudDataset(images, generator=CloudGenerator(), num_frames=3, patch_size=32, length=8,
                               jitter=0.0, p_clear_other=1.0, train=True, flips=False, rotations=False)
    s = ds[0]
    target, context = s["target"].numpy(), s["input"][1:].numpy()
    # clear context dates are the other date: 30 levels brighter or darker everywhere
    assert np.allclose(np.abs(context - target[None]), 30 / 255, atol=3 / 255)
    with pytest.raises(InputError, match="at least two dates"):
        load_clear_images([{"files": "place_20200101.tif", "layout": "naip-rgbn8", "dates": True}],
                          ("red", "green", "blue", "nir"), tmp_path)


def test_misregistered_context_dates():
    from viser_cr.training.datasets.synthetic import shifted

    image = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    moved = shifted(image, 1, -2)
    assert np.array_equal(moved[:, 1:, :-2], image[:, :-1, 2:])  # content moved down 1, left 2
    assert np.array_equal(moved[:, 0], moved[:, 1]) and shifted(image, 0, 0) is image
