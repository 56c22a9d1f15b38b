"""Raster input and output with rasterio: opening with clear errors, the output grid, dates aligned
onto it with ``WarpedVRT``, windowed reads with a validity mask, and outputs written to temporary
files in the output folder that are renamed only when every product is complete.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from .errors import InputError, OutputError
from .sensors import BandFacts

OUTPUT_SUFFIXES = (".tif", ".tiff")
TEMP_SUFFIX = ".viser-tmp.tif"
BLOCK = 256


@contextlib.contextmanager
def quiet_georeferencing() -> Iterator[None]:
    """Rasters without a CRS are allowed: silence rasterio's warning about them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def open_raster(path: str | Path):
    """Open a raster read-only, or raise InputError saying what is wrong with the path."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input raster not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a folder, not a raster file: {path}")
    try:
        with quiet_georeferencing():
            dataset = rasterio.open(path, "r")
    except (RasterioError, RasterioIOError) as error:
        raise InputError(f"{path} is not a raster GDAL can read ({_first_line(error)}).") from None
    if dataset.count < 1:
        dataset.close()
        raise InputError(f"{path} has no raster bands.")
    return dataset


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def mapped_array(shape, dtype) -> np.ndarray:
    """A zero-filled array in its own anonymous memory map (for buffers of a megabyte or more).

    Such buffers go back to the system as soon as they are freed and never fragment the heap that
    torch allocates its temporaries from, which keeps peak memory flat on very large rasters.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes < 1 << 20:
        return np.zeros(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).reshape(shape)


# ------------------------------------------------------------------------------------------ metadata


def _alpha_band_holds_data(dataset) -> bool | None:
    """For a 4-band 8-bit raster whose band 4 is flagged alpha: does it hold more than 0/255?

    Reads a decimated preview (at most 256 x 256 pixels), so it is cheap on any raster size.
    """
    if dataset.count != 4 or dataset.colorinterp[3] != ColorInterp.alpha:
        return None
    scale = max(1, max(dataset.width, dataset.height) // 256)
    shape = (max(1, dataset.height // scale), max(1, dataset.width // scale))
    preview = dataset.read(4, out_shape=shape, resampling=Resampling.nearest)
    return bool(np.setdiff1d(np.unique(preview), [0, 255]).size)


def band_facts(dataset, path: str | Path) -> BandFacts:
    """What the raster's metadata says (no pixel data except the alpha check)."""
    return BandFacts(
        path=str(path),
        count=dataset.count,
        dtype=str(dataset.dtypes[0]),
        descriptions=list(dataset.descriptions),
        colorinterp=[ci.name for ci in dataset.colorinterp],
        tags={str(k): str(v) for k, v in dataset.tags().items()},
        band_tags=[{str(k): str(v) for k, v in dataset.tags(i).items()} for i in range(1, dataset.count + 1)],
        scales=[float(s) for s in dataset.scales],
        offsets=[float(o) for o in dataset.offsets],
        alpha_band_is_data=_alpha_band_holds_data(dataset) if dataset.dtypes[0] == "uint8" else None,
    )


# ---------------------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Grid:
    """The output grid: a window of the reference raster (the whole raster unless bounds are given)."""

    crs: object
    transform: object
    width: int
    height: int
    col_off: int = 0
    row_off: int = 0

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        west, south, east, north = rasterio.transform.array_bounds(self.height, self.width, self.transform)
        return west, south, east, north


def reference_grid(dataset, bounds: Sequence[float] | None = None) -> Grid:
    """The reference raster's own grid, or the window of it covering ``bounds`` (in its CRS)."""
    if bounds is None:
        return Grid(dataset.crs, dataset.transform, dataset.width, dataset.height)
    window = from_bounds(*bounds, transform=dataset.transform)
    window = window.round_offsets(op="floor").round_lengths(op="ceil")
    full = Window(0, 0, dataset.width, dataset.height)
    try:
        window = window.intersection(full)
    except (RasterioError, ValueError):
        window = None
    if window is None or window.width < 1 or window.height < 1:
        raise InputError(f"the bounds {tuple(bounds)} do not overlap the reference raster {dataset.name}.")
    col, row = int(window.col_off), int(window.row_off)
    width, height = int(window.width), int(window.height)
    return Grid(dataset.crs, dataset.window_transform(Window(col, row, width, height)), width, height, col, row)


def _intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def check_overlap(dataset, grid: Grid, label: str) -> None:
    """InputError when a date does not overlap the reference grid at all."""
    if grid.crs is None or dataset.crs is None:
        return
    left, bottom, right, top = transform_bounds(dataset.crs, grid.crs, *dataset.bounds, densify_pts=21)
    grid_bounds = grid.bounds
    if not _intersects((left, bottom, right, top), grid_bounds):
        raise InputError(
            f"{label} does not overlap the reference raster: its extent {tuple(round(v, 3) for v in (left, bottom, right, top))} "
            f"and the reference extent {tuple(round(v, 3) for v in grid_bounds)} (in the reference CRS) are disjoint. "
            "All dates of a stack must cover the same area."
        )


# ------------------------------------------------------------------------------------------- sources


class AlignedSource:
    """One raster read on the output grid: the reference directly, any other date through a WarpedVRT.

    ``read(indexes, row, height)`` returns the raw values ``(bands, height, grid.width)`` and a
    validity mask ``(height, grid.width)``: False where a band is nodata, masked, not finite, or
    (for a warped date) outside the source's footprint.
    """

    def __init__(self, dataset, grid: Grid, resampling: str = "bilinear", direct: bool = False):
        self.dataset = dataset
        self.grid = grid
        self.direct = direct
        self.vrt = None
        if direct:
            self.reader = dataset
            self.col_off, self.row_off = grid.col_off, grid.row_off
        else:
            self.vrt = self._warped_vrt(dataset, grid, resampling)
            self.reader = self.vrt
            self.col_off = self.row_off = 0

    @staticmethod
    def _warped_vrt(dataset, grid: Grid, resampling: str):
        try:
            method = Resampling[resampling]
        except KeyError:
            names = ", ".join(r.name for r in (Resampling.nearest, Resampling.bilinear, Resampling.cubic))
            raise InputError(f"unknown resampling {resampling!r}: use one of {names}.") from None
        options = dict(crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                       resampling=method)
        if all(v is None for v in dataset.nodatavals):
            options["add_alpha"] = True
        with quiet_georeferencing():
            return WarpedVRT(dataset, **options)

    def close(self) -> None:
        if self.vrt is not None:
            self.vrt.close()

    def read(self, indexes: Sequence[int], row: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        window = Window(self.col_off, self.row_off + row, self.grid.width, height)
        data = mapped_array((len(indexes), height, self.grid.width), self.reader.dtypes[indexes[0] - 1])
        with quiet_georeferencing():
            self.reader.read(list(indexes), window=window, out=data)
        return data, self._validity(indexes, data, window)

    def _validity(self, indexes: Sequence[int], data: np.ndarray, window: Window) -> np.ndarray:
        reader = self.reader
        valid = np.ones(data.shape[1:], dtype=bool)
        alpha_bands = {i + 1 for i, ci in enumerate(reader.colorinterp) if ci == ColorInterp.alpha}
        dataset_mask_done = False
        for position, index in enumerate(indexes):
            flags = reader.mask_flag_enums[index - 1]
            nodata = reader.nodatavals[index - 1]
            if MaskFlags.nodata in flags and nodata is not None:
                band = data[position]
                valid &= ~np.isnan(band) if np.isnan(nodata) else band != nodata
            elif MaskFlags.all_valid in flags:
                continue
            elif MaskFlags.alpha in flags and alpha_bands & set(indexes):
                continue  # the "alpha" band is one of the data bands (e.g. NIR flagged alpha)
            elif not dataset_mask_done:
                with quiet_georeferencing():
                    valid &= reader.read_masks(index, window=window) > 0
                dataset_mask_done = MaskFlags.per_dataset in flags
        if data.dtype.kind == "f":
            valid &= np.isfinite(data).all(axis=0)
        return valid


def open_sources(datasets: Sequence, labels: Sequence[str], reference: int, grid: Grid,
                 resampling: str) -> tuple[list[AlignedSource], list[str]]:
    """Align every date onto ``grid`` (the reference's). Returns the sources and explanations."""
    notes: list[str] = []
    ref = datasets[reference]
    sources = []
    for i, (dataset, label) in enumerate(zip(datasets, labels, strict=True)):
        if i == reference:
            sources.append(AlignedSource(dataset, grid, direct=True))
            continue
        if ref.crs is None or dataset.crs is None:
            if ref.crs is not None or dataset.crs is not None:
                raise InputError(f"{label} and the reference raster must both have a CRS (or both have none) "
                                 "to be aligned.")
            if (dataset.width, dataset.height) != (ref.width, ref.height):
                raise InputError(f"{label} has no CRS and a different size ({dataset.width}x{dataset.height}) "
                                 f"from the reference ({ref.width}x{ref.height}): cannot align it.")
            notes.append(f"{label}: no CRS, taken as co-registered with the reference (same size).")
            sources.append(AlignedSource(dataset, grid, direct=True))
            continue
        check_overlap(dataset, grid, label)
        same_grid = dataset.crs == ref.crs and dataset.transform == ref.transform \
            and (dataset.width, dataset.height) == (ref.width, ref.height)
        if same_grid:
            sources.append(AlignedSource(dataset, grid, direct=True))
        else:
            notes.append(f"{label}: warped onto the reference grid ({resampling}).")
            sources.append(AlignedSource(dataset, grid, resampling=resampling))
    return sources, notes


# -------------------------------------------------------------------------------------------- output


def check_output_path(path: str | Path, inputs: Sequence[str | Path], what: str = "output") -> Path:
    """The output path, or OutputError when it cannot be written or would overwrite an input."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise OutputError(f"the {what} is written as GeoTIFF: give it a .tif name, not {path.name!r}.")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise OutputError(f"the {what} folder does not exist: {folder}. Create it first.")
    if not folder.is_dir():
        raise OutputError(f"the {what} folder is not a folder: {folder}.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"the {what} folder is not writable: {folder}.")
    if path.is_dir():
        raise OutputError(f"the {what} path is a folder: {path}.")
    resolved = path.resolve()
    for source in inputs:
        source = Path(source)
        if resolved == source.resolve() or (path.exists() and source.exists() and os.path.samefile(path, source)):
            raise OutputError(f"the {what} {path} is also an input: choose another file name "
                              "(inputs are never overwritten).")
    return path


def output_profile(grid: Grid, count: int, dtype: str, nodata, creation_options: dict | None = None,
                   compress_threads: str | None = None) -> dict:
    """A tiled, DEFLATE-compressed GeoTIFF profile on the grid.

    Level 1 DEFLATE costs half the CPU of the default level for about the same size on imagery;
    ``compress_threads`` (e.g. ``"ALL_CPUS"`` when a GPU does the inference) compresses in parallel.
    """
    kind = np.dtype(dtype).kind
    profile = dict(
        driver="GTiff", width=grid.width, height=grid.height, count=count, dtype=dtype,
        crs=grid.crs, transform=grid.transform, nodata=nodata,
        tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate", zlevel=1,
        predictor=3 if kind == "f" else 2, interleave="pixel", bigtiff="if_safer",
    )
    if compress_threads:
        profile["num_threads"] = compress_threads
    if creation_options:
        profile.update({str(k).lower(): v for k, v in creation_options.items()})
    return profile


def _options_text(options: dict) -> str:
    return "|".join(f"{key}={value}" for key, value in options.items()) or "(none)"


def temporary_path(final: Path, tag: str = "") -> Path:
    """A hidden, unused file name beside ``final`` (GDAL creates the file, with the usual permissions)."""
    while True:
        path = final.parent / f".{final.stem}{tag}.{uuid.uuid4().hex[:10]}{TEMP_SUFFIX}"
        if not path.exists():
            return path


class OutputFile:
    """A GeoTIFF written to a hidden temporary file beside its final path; ``commit`` renames it."""

    def __init__(self, final: Path, profile: dict, descriptions: Sequence[str] | None = None,
                 tags: dict | None = None, cog: bool = False, cog_options: dict | None = None):
        self.final = Path(final)
        self.cog = cog
        self.cog_options = {str(k).upper(): v for k, v in (cog_options or {}).items()}
        self.profile = profile
        self.temp = temporary_path(self.final)
        self.extra: list[Path] = []
        try:
            with quiet_georeferencing():
                self.dataset = rasterio.open(self.temp, "w", **profile)
            if descriptions:
                for index, text in enumerate(descriptions, start=1):
                    self.dataset.set_band_description(index, text)
            if tags:
                self.dataset.update_tags(**{k: str(v) for k, v in tags.items()})
        except Exception as error:
            self.discard()
            if isinstance(error, RasterioError | RasterioIOError):
                raise OutputError(f"cannot create {self.final}: {_first_line(error)}") from None
            raise

    def set_colorinterp(self, interps: Sequence[ColorInterp]) -> None:
        self.dataset.colorinterp = list(interps)

    def write(self, array: np.ndarray, row: int) -> None:
        window = Window(0, row, array.shape[-1], array.shape[-2])
        with quiet_georeferencing():
            self.dataset.write(array, window=window)

    def finish(self) -> None:
        """Close the temporary file; for COG, convert it (still under a temporary name)."""
        self.dataset.close()
        if self.cog:
            cog_path = temporary_path(self.final, ".cog")
            self.extra.append(cog_path)
            kind = np.dtype(self.profile["dtype"]).kind
            options = dict(COMPRESS="DEFLATE", LEVEL=6, PREDICTOR="FLOATING_POINT" if kind == "f" else "YES",
                           BIGTIFF="IF_SAFER", BLOCKSIZE=BLOCK)
            if self.profile.get("num_threads"):
                options["NUM_THREADS"] = self.profile["num_threads"]
            if "COMPRESS" in self.cog_options:  # the defaults' level and predictor suit DEFLATE only
                options.pop("LEVEL")
                if str(self.cog_options["COMPRESS"]).upper() not in ("DEFLATE", "LZW", "ZSTD", "LZMA"):
                    options.pop("PREDICTOR")
            options.update(self.cog_options)
            try:
                with quiet_georeferencing():
                    rasterio.shutil.copy(self.temp, cog_path, driver="COG", **options)
            except (RasterioError, RasterioIOError) as error:
                raise OutputError(f"cannot write the cloud-optimised GeoTIFF {self.final} with the options "
                                  f"{_options_text(self.cog_options)}: {_first_line(error)}") from None
            self.temp.unlink()
            self.extra.remove(cog_path)
            self.temp = cog_path

    def commit(self) -> Path:
        os.replace(self.temp, self.final)
        return self.final

    def discard(self) -> None:
        dataset = getattr(self, "dataset", None)
        if dataset is not None and not dataset.closed:
            with contextlib.suppress(Exception):
                dataset.close()
        for path in [self.temp, *self.extra]:
            for leftover in (path, Path(f"{path}.aux.xml"), Path(f"{path}.msk"), Path(f"{path}.ovr")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()


class OutputSet:
    """Several outputs that appear together or not at all."""

    def __init__(self) -> None:
        self.files: list[OutputFile] = []

    def add(self, output: OutputFile) -> OutputFile:
        self.files.append(output)
        return output

    def commit(self) -> None:
        for output in self.files:
            output.finish()
        for output in self.files:
            output.commit()

    def discard(self) -> None:
        for output in self.files:
            output.discard()
