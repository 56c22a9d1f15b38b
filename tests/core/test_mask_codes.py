"""Cloud masks as products deliver them (core.mask_codes): which values are cloud, and what is refused."""

import numpy as np
import pytest

from viser_cr.core import mask_codes
from viser_cr.core.errors import InputError

# Landsat Collection 2 QA_PIXEL values as USGS products carry them
QA_CLEAR_LAND = 21824    # bit 6 clear, low confidences
QA_WATER = 21952         # bit 7 water
QA_SNOW = 13600          # bit 5 snow
QA_FILL = 1              # bit 0 fill
QA_CLOUD = 22280         # bit 3 cloud, high cloud confidence
QA_DILATED = 21826       # bit 1 dilated cloud only (the buffer around a cloud)
QA_SHADOW = 23888        # bit 4 cloud shadow
QA_CIRRUS = 54596        # bit 2 cirrus (OLI), high cirrus confidence


def test_landsat_qa_pixel_takes_cloud_dilated_cloud_cirrus_and_shadow_bits_only():
    raw = np.array([QA_CLEAR_LAND, QA_WATER, QA_SNOW, QA_FILL, QA_CLOUD, QA_DILATED, QA_SHADOW, QA_CIRRUS],
                   dtype=np.float32)  # as a raster read returns them
    cloud = mask_codes.encoding("landsat-qa-pixel").cloud(raw)
    assert cloud.tolist() == [False, False, False, False, True, True, True, True]


def test_sentinel2_scl_takes_shadow_cloud_and_cirrus_classes():
    cloud = mask_codes.encoding("sentinel2-scl").cloud(np.arange(12))
    assert np.flatnonzero(cloud).tolist() == [3, 8, 9, 10]


def test_fmask_takes_cloud_and_shadow_not_snow_water_or_no_observation():
    cloud = mask_codes.encoding("fmask").cloud(np.array([0, 1, 2, 3, 4, 255]))
    assert cloud.tolist() == [False, False, True, False, True, False]


def test_nonzero_is_the_plain_mask():
    assert mask_codes.encoding("nonzero").cloud(np.array([0, 1, 255, 0.5])).tolist() == [False, True, True, True]


def test_values_a_layer_never_holds_are_refused_with_the_choices():
    scl = mask_codes.encoding("sentinel2-scl")
    scl.check_values(np.array([0, 4, 8, 11]), "the mask")
    with pytest.raises(InputError, match=r"values \(21824\).*Sentinel-2 L2A scene classification.*landsat-qa-pixel"):
        scl.check_values(np.array([4, 21824]), "the mask")
    with pytest.raises(InputError, match="Fmask"):
        mask_codes.encoding("fmask").check_values(np.array([2, 7]), "the mask")


def test_a_product_band_read_as_nonzero_is_refused_naming_its_encoding():
    """Read as nonzero, a QA_PIXEL or SCL band calls every pixel cloud (its clear land is 21824, its vegetation
    4): refused with the encoding its values fit; a probability, with the advice to threshold it. A plain 0/1
    mask, even one that is all cloud, is taken."""
    qa = np.array([QA_CLEAR_LAND] * 90 + [QA_WATER] * 5 + [QA_CLOUD] * 5, dtype=np.float32)
    with pytest.raises(InputError, match=r"calls 100% of its pixels cloud.*21824.*Landsat Collection 2 "
                                         r"QA_PIXEL: add --cloud-mask-type landsat-qa-pixel"):
        mask_codes.check_nonzero(qa, "the mask")
    scl = np.array([4] * 80 + [5] * 10 + [9] * 10, dtype=np.float32)  # vegetation, bare soil, cloud
    with pytest.raises(InputError, match=r"\(4, 5, 9\).*--cloud-mask-type sentinel2-scl"):
        mask_codes.check_nonzero(scl, "the mask")
    with pytest.raises(InputError, match=r"21824\).*landsat-qa-pixel"):  # a clear crop's QA_PIXEL: one value
        mask_codes.check_nonzero(np.full(100, QA_CLEAR_LAND), "the mask")
    with pytest.raises(InputError, match=r"give a 0/1 mask \(a cloud probability thresholded first"):
        mask_codes.check_nonzero(np.array([0.05, 0.3, 0.8] * 40), "the mask")  # s2cloudless-like probability
    for plain in (np.array([0, 1] * 50), np.full(100, 255), np.ones(100), np.array([0.0] * 5 + [1.0] * 95)):
        mask_codes.check_nonzero(plain, "the mask")  # a 0/1 mask, or one that is all (or nearly all) cloud


def test_product_names_say_their_encoding():
    named = {"LC08_L2SP_044034_20230415_20230420_02_T1_QA_PIXEL.TIF": "landsat-qa-pixel",
             "T32UMU_20230415T103619_SCL_20m.jp2": "sentinel2-scl", "scl.tif": "sentinel2-scl",
             "LC08_044034_20230415_Fmask4.tif": "fmask", "clouds.tif": None, "disclosure.tif": None}
    assert {name: mask_codes.encoding_from_name(name) for name in named} == named


def test_an_unknown_encoding_lists_the_known_ones():
    with pytest.raises(InputError, match="nonzero, landsat-qa-pixel, sentinel2-scl, fmask"):
        mask_codes.encoding("qa")


def test_a_buffer_grows_clouds_by_a_disc_and_zero_leaves_them():
    cloud = np.zeros((11, 11), dtype=bool)
    cloud[5, 5] = True
    grown = mask_codes.buffer_clouds(cloud, 3)
    rows, cols = np.nonzero(grown)
    assert (np.hypot(rows - 5, cols - 5) <= 3).all() and grown[5, 2] and grown[2, 5] and grown[7, 7]
    assert not grown[2, 2]  # a disc, not a square
    assert mask_codes.buffer_clouds(cloud, 0) is cloud


@pytest.mark.parametrize("bad", [-1, 2.5, 101, "two", None])
def test_a_buffer_is_a_whole_number_of_pixels_up_to_100(bad):
    assert mask_codes.check_buffer(4) == 4 and mask_codes.check_buffer("0") == 0
    with pytest.raises(InputError, match="whole number of pixels from 0 to 100"):
        mask_codes.check_buffer(bad)
