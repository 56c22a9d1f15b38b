"""Sensor presets, auto-detection and its explanations, on real fixtures and on metadata alone."""

import pytest

from viser_cr.core import raster as rio
from viser_cr.core.errors import InputError
from viser_cr.core.sensors import PRESETS, BandFacts, band_name_from_description, parse_bands, resolve


def facts_of(path):
    with rio.open_raster(path) as dataset:
        return rio.band_facts(dataset, path)


def make_facts(count=4, dtype="uint16", path="x.tif", descriptions=None, colorinterp=None, tags=None,
               band_tags=None, scales=None, offsets=None, alpha=None):
    return BandFacts(
        path=path, count=count, dtype=dtype, descriptions=descriptions or [None] * count,
        colorinterp=colorinterp or ["gray"] + ["undefined"] * (count - 1), tags=tags or {},
        band_tags=band_tags or [{} for _ in range(count)], scales=scales or [1.0] * count,
        offsets=offsets or [0.0] * count, alpha_band_is_data=alpha,
    )


def test_presets_are_the_documented_ones():
    assert set(PRESETS) == {"s2-l1c", "s2-l2a", "landsat-c2l2", "rgb8", "rgbn8"}


def test_radiometry_follows_the_preset_or_the_data_type():
    """8-bit imagery is display imagery (the model's stricter cloud gate), reflectance products are not."""
    assert resolve(make_facts(4, dtype="uint8"), sensor="rgbn8").radiometry == "display"
    assert resolve(make_facts(4, dtype="uint16"), sensor="s2-l2a").radiometry == "reflectance"
    assert resolve(make_facts(3, dtype="uint8"), scale=1 / 255).radiometry == "display"  # custom scaling
    assert resolve(make_facts(3, dtype="float32"), scale=1.0).radiometry == "reflectance"


def test_sentinel2_13_bands_fixture(fixtures_dir):
    res = resolve(facts_of(fixtures_dir / "s2l1c_cloudy_96.tif"))
    assert res.sensor == "s2-l1c" and res.radiometry == "reflectance"
    assert (res.scale, res.offset) == (1e-4, 0.0)
    assert res.indexes_for(["red", "green", "blue", "nir"]) == [4, 3, 2, 8]
    assert "13 bands" in res.reason and "--offset -0.1" in res.reason


def test_rgbn8_fixture_with_nir_flagged_alpha(fixtures_dir):
    res = resolve(facts_of(fixtures_dir / "rgbn8_96.tif"))
    assert res.sensor == "rgbn8"
    assert res.indexes_for(["red", "green", "blue", "nir"]) == [1, 2, 3, 4]
    assert "alpha" in res.reason and res.scale == pytest.approx(1 / 255)


def test_landsat7_rgb8_fixture(fixtures_dir):
    res = resolve(facts_of(fixtures_dir / "landsat7_rgb8_collar_96.tif"))
    assert res.sensor == "rgb8" and res.radiometry == "display"
    assert res.indexes_for(["red", "green", "blue"]) == [1, 2, 3]
    assert "colour interpretation" in res.reason


def test_uint16_without_metadata_says_which_flags(fixtures_dir):
    with pytest.raises(InputError) as error:
        resolve(facts_of(fixtures_dir / "landsat8_bgr_160x128.tif"))
    message = str(error.value)
    assert "--sensor landsat-c2l2" in message and "--scale" in message and "--bands" in message


def test_landsat_preset_on_blue_first_fixture(fixtures_dir):
    res = resolve(facts_of(fixtures_dir / "landsat8_bgr_160x128.tif"), sensor="landsat-c2l2")
    assert res.indexes_for(["red", "green", "blue"]) == [3, 2, 1]
    assert (res.scale, res.offset) == (2.75e-5, -0.2)
    assert "blue first" in res.reason and "--bands" in res.reason


def test_landsat_level1_file_name_hint():
    with pytest.raises(InputError, match="--scale 0.00002 --offset -0.1"):
        resolve(make_facts(3, path="LC08_L1TP_224078_20200518_20200518_01_RT.TIF"))


@pytest.mark.parametrize(
    "tags, band_tags, path, offset",
    [({"BOA_ADD_OFFSET_B4": "-1000"}, None, "x.tif", -0.1),
     ({}, [{"RADIO_ADD_OFFSET": "-1000"}] * 4, "x.tif", -0.1),
     ({"PROCESSING_BASELINE": "05.09"}, None, "x.tif", -0.1),
     ({"PROCESSING_BASELINE": "02.14"}, None, "x.tif", 0.0),
     ({}, None, "S2A_MSIL2A_20230101T101411_N0509_R022_T32TQM_20230101T120000.tif", -0.1),
     ({}, None, "S2B_MSIL1C_20200101T101411_N0208_R022_T32TQM_20200101T120000.tif", 0.0)],
)
def test_sentinel2_processing_baseline_offset(tags, band_tags, path, offset):
    res = resolve(make_facts(4, path=path, tags=tags, band_tags=band_tags), sensor="s2-l2a")
    assert res.offset == pytest.approx(offset)
    assert ("-1000" in res.reason) == (offset != 0)


def test_user_offset_overrides_and_is_explained():
    res = resolve(make_facts(4), sensor="s2-l2a", offset=-0.1)
    assert (res.scale, res.offset) == (1e-4, -0.1)
    assert "User scaling" in res.reason


def test_sentinel2_detected_from_file_name():
    res = resolve(make_facts(4, path="S2A_MSIL2A_20230101T101411_N0509_R022_T32TQM_x.tif"))
    assert res.sensor == "s2-l2a" and res.offset == pytest.approx(-0.1)
    assert res.indexes_for(["red", "green", "blue", "nir"]) == [1, 2, 3, 4]


def test_band_descriptions_win_over_layout():
    facts = make_facts(4, descriptions=["B02", "B03", "B04", "B08"], tags={"PRODUCT_TYPE": "S2MSI2A"})
    res = resolve(facts)
    assert res.sensor == "s2-l2a"
    assert res.indexes_for(["red", "green", "blue", "nir"]) == [3, 2, 1, 4]
    assert "descriptions" in res.reason


def test_landsat_c2l2_from_band_descriptions():
    facts = make_facts(4, descriptions=["SR_B2", "SR_B3", "SR_B4", "SR_B5"])
    res = resolve(facts)
    assert res.sensor == "landsat-c2l2"
    assert res.indexes_for(["red", "green", "blue", "nir"]) == [3, 2, 1, 4]


def test_generic_names_in_descriptions():
    facts = make_facts(4, dtype="float32", descriptions=["NIR", "Red", "Green", "Blue"])
    res = resolve(facts)
    assert res.sensor == "reflectance" and res.scale == 1.0
    assert res.indexes_for(["red", "green", "blue", "nir"]) == [2, 3, 4, 1]


@pytest.mark.parametrize("text, name", [("B04", "red"), ("B8A", "nir08"), ("Red edge 1", None),
                                        ("near infrared", "nir"), ("Band 4", None), ("SR_B4", "red"), (None, None)])
def test_band_name_from_description(text, name):
    assert band_name_from_description(text, PRESETS["s2-l2a"].band_codes) == name


def test_gdal_scale_offset_metadata_is_used():
    res = resolve(make_facts(3, scales=[2.75e-5] * 3, offsets=[-0.2] * 3))
    assert res.sensor == "custom" and (res.scale, res.offset) == (2.75e-5, -0.2)
    assert "scale" in res.reason


def test_rgba_with_real_alpha_is_rgb():
    facts = make_facts(4, dtype="uint8", colorinterp=["red", "green", "blue", "alpha"], alpha=False)
    res = resolve(facts)
    assert res.sensor == "rgb8" and "nir" not in res.band_names


def test_explicit_bands_and_scaling():
    res = resolve(make_facts(6), bands=[6, 5, 4], scale=0.001, offset=0.0, wanted=["red", "green", "blue"])
    assert res.sensor == "custom"
    assert res.indexes_for(["red", "green", "blue"]) == [6, 5, 4]


def test_explicit_band_out_of_range():
    with pytest.raises(InputError, match="out of range.*6 band"):
        resolve(make_facts(6), sensor="s2-l2a", bands=[4, 3, 2, 9])


def test_explicit_bands_of_wrong_length():
    with pytest.raises(InputError, match="model needs 4"):
        resolve(make_facts(6), sensor="s2-l2a", bands=[4, 3, 2], wanted=["red", "green", "blue", "nir"])


def test_unknown_sensor_name():
    with pytest.raises(InputError, match="unknown sensor 'sentinel-9'.*s2-l1c"):
        resolve(make_facts(4), sensor="sentinel-9")


def test_missing_band_names_the_flags():
    res = resolve(make_facts(3, dtype="uint8"))
    with pytest.raises(InputError, match="nir.*--bands"):
        res.indexes_for(["red", "green", "blue", "nir"])


def test_band_lists_take_commas_spaces_or_semicolons():
    """One parser for the CLI's --bands and the dock's Bands field."""
    assert parse_bands("4,3,2,8") == parse_bands("4 3 2 8") == parse_bands(" 4; 3, 2 8 ") == [4, 3, 2, 8]
    assert parse_bands("") == []
    with pytest.raises(ValueError, match="comma-separated band numbers"):
        parse_bands("red,green")
    with pytest.raises(ValueError, match="start at 1"):
        parse_bands("0,1")


@pytest.mark.parametrize(("name", "tags", "date"), [
    ("S2A_MSIL1C_20170105T013442_N0204_R031_T53NMJ_20170105T013443.tif", {}, "2017-01-05"),
    ("LC08_L1TP_224078_20200518_20200527_01_T1.TIF", {}, "2020-05-18"),  # acquisition, not processing
    ("m_4709963_se_14_1_20090818.tif", {}, "2009-08-18"),
    ("s2_ROIs2017_146_ImgNo_27_2018-11-27_patch_0.tif", {}, "2018-11-27"),
    ("scene.tif", {"DATE_ACQUIRED": "2019-07-27"}, "2019-07-27"),
    ("scene_20200101.tif", {"ACQUISITION_DATE": "2021-03-04T10:00:00"}, "2021-03-04"),  # metadata first
    ("T31TBG_x.tif", {"TIFFTAG_DATETIME": "2022:01:01 10:00:00"}, None),  # a processing time, not used
    ("x_20211302.tif", {}, None),  # no 13th month
])
def test_acquisition_date_from_metadata_or_file_name(name, tags, date):
    from viser_cr.core.sensors import BandFacts, acquisition_date

    facts = BandFacts(name, 1, "uint16", [None], ["gray"], tags, [{}], [1.0], [0.0])
    found = acquisition_date(facts)
    assert (None if found is None else found.isoformat()) == date
