"""Tile grid and blend weights: full coverage, weights summing to one, no darkened borders."""

import numpy as np
import pytest

from viser_cr.core.errors import InputError
from viser_cr.core.tiling import TileGrid, axis_starts, hann_ramp


def blend(grid: TileGrid, image: np.ndarray) -> np.ndarray:
    """Cut ``image`` into the grid's tiles and blend them back with the weights."""
    out = np.zeros_like(image, dtype=np.float64)
    for tile in grid.tiles:
        rows, cols = slice(tile.y, tile.y + tile.height), slice(tile.x, tile.x + tile.width)
        out[rows, cols] += image[rows, cols] * grid.weight(tile)
    return out


@pytest.mark.parametrize(
    "height, width, tile, overlap",
    [(2041, 1860, 256, 32), (96, 96, 64, 16), (160, 128, 64, 16), (7, 3, 64, 16), (1, 1, 64, 16),
     (300, 500, 64, 48), (257, 256, 256, 0), (1000, 70, 64, 63)],
)
def test_weights_sum_to_one_everywhere(height, width, tile, overlap):
    grid = TileGrid(height, width, tile, overlap)
    total = blend(grid, np.ones((height, width)))
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_blending_a_smooth_image_is_seamless():
    rng = np.random.default_rng(0)
    image = rng.random((300, 410))
    grid = TileGrid(300, 410, 64, 16)
    np.testing.assert_allclose(blend(grid, image), image, atol=1e-5)


def test_tiles_have_full_size_and_stay_inside():
    grid = TileGrid(150, 100, 64, 16)
    assert {(t.height, t.width) for t in grid.tiles} == {(64, 64)}
    assert max(t.y + t.height for t in grid.tiles) == 150
    assert max(t.x + t.width for t in grid.tiles) == 100
    assert min(t.y for t in grid.tiles) == 0


def test_small_raster_is_one_tile_of_its_size():
    grid = TileGrid(7, 3, 64, 16)
    assert len(grid) == 1
    assert (grid.tiles[0].height, grid.tiles[0].width) == (7, 3)
    np.testing.assert_allclose(grid.weight(grid.tiles[0]), 1.0)


def test_borders_are_not_tapered():
    """A corner tile keeps full weight on the raster's outer edges (no darkened borders)."""
    grid = TileGrid(200, 200, 64, 16)
    corner = grid.weight(grid.tiles[0])
    assert corner[0, 0] == pytest.approx(1.0)
    assert corner[:40, :40].min() == pytest.approx(1.0)
    assert (corner > 0).all()


def test_hann_ramp_is_complementary():
    ramp = hann_ramp(16)
    np.testing.assert_allclose(ramp + ramp[::-1], 1.0, atol=1e-12)
    assert 0 < ramp.min() and ramp.max() < 1


def test_axis_starts_clamp_last_tile():
    assert axis_starts(100, 64, 16) == [0, 36]
    assert axis_starts(64, 64, 16) == [0]
    assert axis_starts(10, 64, 16) == [0]
    assert axis_starts(200, 64, 0) == [0, 64, 128, 136]


def test_block_counts_match_tiles():
    grid = TileGrid(700, 300, 64, 16, block=256)
    counts = grid.tiles_per_block()
    assert len(counts) == grid.num_blocks == 3
    seen = [0] * grid.num_blocks
    for tile in grid.tiles:
        for block in grid.blocks_of(tile):
            seen[block] += 1
    assert seen == counts


@pytest.mark.parametrize("tile, overlap", [(8, 2), (64, 64), (64, -1), (64, 70)])
def test_bad_tiling_is_refused(tile, overlap):
    with pytest.raises(InputError, match="tile size|overlap"):
        TileGrid(100, 100, tile, overlap)
