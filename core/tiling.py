"""Tile grid with overlap and blending weights that sum to one at every pixel.

Tiles are laid out on each axis at a stride of ``tile - overlap``; the last tile is moved back to end
on the raster's edge, so every tile has the full size (a raster smaller than a tile gets one tile of
the raster's size). Each tile's weight is separable, ``wy(y) * wx(x)``: flat in the middle, a Hann
(sin^2) ramp across the part it shares with a neighbour, and no ramp on the raster's outer edges (so
borders are not darkened). The per-axis weights are divided by their sum over all tiles, so the
blend of identical tiles is the identity to float precision: no seams.

Output rows are grouped in blocks of ``block`` rows (the GeoTIFF block height); ``tiles_per_block``
says how many tiles touch each block, so a block can be written and freed once its last tile is in.

A wide raster is cut into panels: vertical stripes of whole GeoTIFF blocks, processed one after the
other, so that buffers are bounded in width as well as in height. A panel computes every tile that
touches its columns (tiles across a panel edge are computed by both panels, each keeping its own
columns), so the blend is the same as without panels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError

MIN_TILE = 16


@dataclass(frozen=True)
class Panel:
    """Output columns ``x0..x1`` and the tile columns that touch them (read columns ``read_x0..read_x1``)."""

    x0: int
    x1: int
    cols: tuple[int, ...]
    read_x0: int
    read_x1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0


@dataclass(frozen=True)
class Tile:
    index: int
    row: int        # tile-row number
    col: int        # tile-column number
    y: int          # top pixel row in the output grid
    x: int          # left pixel column
    height: int
    width: int


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start positions on one axis; the last one is clamped to end on the edge."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return sorted(set(starts))


def hann_ramp(n: int) -> np.ndarray:
    """A rising half Hann window of n samples, strictly between 0 and 1; ramp + ramp[::-1] == 1."""
    k = np.arange(n, dtype=np.float64)
    return np.sin(0.5 * math.pi * (k + 0.5) / n) ** 2


def axis_weights(length: int, size: int, starts: list[int]) -> list[np.ndarray]:
    """Per-tile weights along one axis, normalised so that they sum to one at every position."""
    raw = []
    for i, start in enumerate(starts):
        weight = np.ones(size, dtype=np.float64)
        if i > 0:
            shared = starts[i - 1] + size - start
            if shared > 0:
                weight[:shared] = np.minimum(weight[:shared], hann_ramp(shared))
        if i + 1 < len(starts):
            shared = start + size - starts[i + 1]
            if shared > 0:
                weight[size - shared:] = np.minimum(weight[size - shared:], hann_ramp(shared)[::-1])
        raw.append(weight)
    total = np.zeros(length, dtype=np.float64)
    for start, weight in zip(starts, raw, strict=True):
        total[start:start + size] += weight
    return [(weight / total[start:start + size]).astype(np.float32) for start, weight in zip(starts, raw, strict=True)]


def validate_tiling(tile: int, overlap: int) -> None:
    if int(tile) != tile or tile < MIN_TILE:
        raise InputError(f"tile size must be an integer of at least {MIN_TILE} pixels, got {tile}.")
    if int(overlap) != overlap or overlap < 0 or overlap >= tile:
        raise InputError(f"overlap must be between 0 and tile size - 1 ({tile - 1}), got {overlap}.")


class TileGrid:
    """Tiles covering a ``height`` x ``width`` grid, their blend weights and per-block tile counts."""

    def __init__(self, height: int, width: int, tile: int, overlap: int, block: int = 256):
        validate_tiling(tile, overlap)
        self.height, self.width = height, width
        self.tile_height, self.tile_width = min(tile, height), min(tile, width)
        self.ys = axis_starts(height, tile, overlap)
        self.xs = axis_starts(width, tile, overlap)
        self.wy = axis_weights(height, self.tile_height, self.ys)
        self.wx = axis_weights(width, self.tile_width, self.xs)
        self.block = block
        self.tiles = [
            Tile(r * len(self.xs) + c, r, c, y, x, self.tile_height, self.tile_width)
            for r, y in enumerate(self.ys) for c, x in enumerate(self.xs)
        ]

    def __len__(self) -> int:
        return len(self.tiles)

    def weight(self, tile: Tile) -> np.ndarray:
        """The normalised blend weight of a tile, ``(height, width)`` float32."""
        return self.wy[tile.row][:, None] * self.wx[tile.col][None, :]

    @property
    def num_blocks(self) -> int:
        return -(-self.height // self.block)

    def block_rows(self, block: int) -> tuple[int, int]:
        return block * self.block, min(self.height, (block + 1) * self.block)

    def blocks_of(self, tile: Tile) -> range:
        """The output row blocks a tile touches."""
        return range(tile.y // self.block, (tile.y + tile.height - 1) // self.block + 1)

    def tiles_per_block(self, panel: Panel | None = None) -> list[int]:
        """How many tiles (of ``panel``, default all) touch each block of output rows."""
        columns = len(self.xs) if panel is None else len(panel.cols)
        counts = [0] * self.num_blocks
        for y in self.ys:
            for block in range(y // self.block, (y + self.tile_height - 1) // self.block + 1):
                counts[block] += columns
        return counts

    def panels(self, width: int) -> list[Panel]:
        """Vertical stripes of about ``width`` columns (whole blocks, at least two tiles wide)."""
        step = max(width, 2 * self.tile_width)
        step = -(-step // self.block) * self.block
        panels = []
        for x0 in range(0, self.width, step):
            x1 = min(self.width, x0 + step)
            cols = tuple(c for c, x in enumerate(self.xs) if x < x1 and x + self.tile_width > x0)
            panels.append(Panel(x0, x1, cols, self.xs[cols[0]], self.xs[cols[-1]] + self.tile_width))
        return panels

    def panel_tiles(self, panel: Panel) -> list[Tile]:
        """The tiles a panel computes, row by row."""
        return [self.tiles[r * len(self.xs) + c] for r in range(len(self.ys)) for c in panel.cols]
