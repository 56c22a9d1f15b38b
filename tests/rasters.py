"""The tests' one raster writer: they generate the rasters they need, as torchgeo's tests do.

Imported by name (``from rasters import write_raster``): pytest puts ``tests/`` on ``sys.path`` for its
conftest. Every generated raster sits in UTM 33N at 10 m unless a test says otherwise.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000, 5000000, 10, 10)


def write_raster(path, data, dtype=None, crs=CRS, transform=None, nodata=None, driver="GTiff", **profile) -> Path:
    """``data`` ``(bands, H, W)`` (or ``(H, W)``: one band) written to ``path``, its folder made; ``dtype``
    defaults to the array's; ``crs=None`` writes no georeferencing; ``profile`` goes to rasterio as it is
    (``tiled=True, blockxsize=64``, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    dtype = str(np.dtype(dtype or data.dtype))
    options = dict(driver=driver, width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=dtype,
                   nodata=nodata, **profile)
    if crs is not None:
        options.update(crs=crs, transform=transform or TRANSFORM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **options) as dst:
            dst.write(data.astype(dtype, copy=False))
    return path
