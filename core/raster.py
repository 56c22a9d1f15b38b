"""Raster input and output with rasterio: opening with clear errors, the output grid, dates aligned
onto it with ``WarpedVRT``, windowed reads with a validity mask, and outputs written to temporary
files in the output folder that are renamed only when every product is complete.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import re
import stat
import threading
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio._err import CPLE_BaseError
from rasterio.control import GroundControlPoint
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.rpc import RPC
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from .errors import InputError, OutputError
from .sensors import BandFacts

OUTPUT_SUFFIXES = (".tif", ".tiff")
TEMP_SUFFIX = ".viser-tmp.tif"
SIDECAR_ROOM = len(".aux.xml")   # GDAL may add a sidecar to a temporary file: its name must fit too
BLOCK = 256
PANEL = 16 * BLOCK    # columns of one panel: buffers are bounded in width too
GDAL_ERRORS = (RasterioError, RasterioIOError, CPLE_BaseError)
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".png", ".jpg", ".jpeg", ".nc", ".hdf", ".xml")


@contextlib.contextmanager
def quiet_georeferencing() -> Iterator[None]:
    """Rasters without a CRS are allowed: silence rasterio's warning about them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def is_gdal_connection(text: str) -> bool:
    """A GDAL virtual path (``/vsizip/...``) or a driver connection string (``NETCDF:"f.nc":var``)."""
    return text.startswith("/vsi") or re.match(r"^[A-Z][A-Z0-9_]+:", text) is not None


def open_raster(path: str | Path, what: str = "input raster"):
    """Open a raster read-only, or raise InputError saying what is wrong with the path and what to do.

    Anything but a regular file (a folder, a FIFO, a device) is refused before GDAL opens it: GDAL
    would block forever on a FIFO. GDAL connection strings go to GDAL as they are.
    """
    text = str(path)
    connection = is_gdal_connection(text) and not Path(text).exists()
    if not connection:
        check_raster_file(Path(text), what)
    try:
        with quiet_georeferencing():
            dataset = rasterio.open(text, "r")
    except GDAL_ERRORS as error:
        raise InputError(_unreadable_message(text, what, error)) from None
    if dataset.count < 1:
        dataset.close()
        raise InputError(f"{text} has no raster bands: give a raster with image bands "
                         f"(check it with `viser-cr info {text}`).")
    return dataset


def check_raster_file(path: Path, what: str = "input raster") -> None:
    """InputError unless ``path`` is a non-empty regular file (symbolic links are followed)."""
    try:
        status = path.stat()
    except FileNotFoundError:
        where = "" if path.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        raise InputError(f"{what} not found: {path}{where}. Check the path and the file name.") from None
    except OSError as error:
        raise InputError(f"cannot read the {what} {path}: {error.strerror}. Check the path and its "
                         "permissions.") from None
    if stat.S_ISDIR(status.st_mode):
        raise InputError(_folder_message(path, what))
    if not stat.S_ISREG(status.st_mode):
        raise InputError(f"the {what} {path} is not a regular file but a {_file_kind(status.st_mode)}: it is "
                         "not read (it could block forever). Save the raster to a file and give that file.")
    if status.st_size == 0:
        raise InputError(f"the {what} {path} is empty (0 bytes), perhaps from an interrupted download or copy: "
                         "fetch or copy it again.")


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def _folder_message(path: Path, what: str) -> str:
    if path.suffix.upper() == ".SAFE":
        return (f"the {what} {path} is a Sentinel-2 .SAFE folder: give its metadata file "
                f"({path}/MTD_MSIL1C.xml or MTD_MSIL2A.xml) or one of its band files.")
    try:
        rasters = sorted(p.name for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)[:3]
    except OSError:
        rasters = []
    examples = f" (for example {', '.join(rasters)})" if rasters else ""
    return f"the {what} {path} is a folder, not a raster file: give a raster file inside it{examples}."


def _unreadable_message(text: str, what: str, error: Exception) -> str:
    hint = ""
    if text.lower().endswith(".zip"):
        hint = f" For a raster inside a zip archive, give /vsizip/{text}/<path of the raster in the archive>."
    elif text.lower().endswith((".gz", ".tar", ".7z")):
        hint = " Extract the archive and give the raster file inside it."
    return (f"{text} is not a raster GDAL can read ({_first_line(error)}). Give a GeoTIFF or another raster "
            f"format GDAL reads (`gdalinfo --formats` lists them).{hint} "
            f"`viser-cr info FILE` checks whether a file can be used.")


def _first_line(error: Exception) -> str:
    text = re.sub(r"^Read or write failed\.\s*", "", str(error).strip()).splitlines()
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


_LIBC = None


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Model batches, GDAL's block cache and tile-sized numpy temporaries interleave on the heap; the
    holes they leave stay resident and grow with the number of tiles. Called once per row of tiles,
    this keeps peak memory flat on large rasters for a page-fault cost of a few percent.
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


# ------------------------------------------------------------------------------------------ metadata


def _alpha_band_holds_data(dataset) -> bool | None:
    """For a 4-band 8-bit raster whose band 4 is flagged alpha: does it hold more than 0/255?

    Reads a decimated preview (at most 256 x 256 pixels), so it is cheap on any raster size.
    """
    if dataset.count != 4 or dataset.colorinterp[3] != ColorInterp.alpha:
        return None
    scale = max(1, max(dataset.width, dataset.height) // 256)
    shape = (max(1, dataset.height // scale), max(1, dataset.width // scale))
    try:
        preview = dataset.read(4, out_shape=shape, resampling=Resampling.nearest)
    except GDAL_ERRORS as error:
        raise unreadable_data(dataset.name, [4], Window(0, 0, dataset.width, dataset.height), error) from None
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
    gcps: tuple | None = None     # (ground control points, their CRS) of a raster georeferenced by GCPs only
    rpcs: object | None = None    # rational polynomial coefficients, carried over with the pixels

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        west, south, east, north = rasterio.transform.array_bounds(self.height, self.width, self.transform)
        return west, south, east, north


def reference_grid(dataset, bounds: Sequence[float] | None = None) -> Grid:
    """The reference raster's own grid, or the window of it covering ``bounds`` (in its CRS)."""
    if bounds is None:
        return Grid(dataset.crs, dataset.transform, dataset.width, dataset.height,
                    gcps=_shifted_gcps(dataset, 0, 0), rpcs=_shifted_rpcs(dataset, 0, 0))
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
    return Grid(dataset.crs, dataset.window_transform(Window(col, row, width, height)), width, height, col, row,
                gcps=_shifted_gcps(dataset, col, row), rpcs=_shifted_rpcs(dataset, col, row))


def _shifted_gcps(dataset, col: int, row: int) -> tuple | None:
    """The raster's GCPs moved to a window starting at (col, row), when GCPs are its only georeferencing."""
    points, crs = dataset.gcps
    if not points or dataset.crs is not None or not dataset.transform.is_identity:
        return None
    return [GroundControlPoint(p.row - row, p.col - col, p.x, p.y, p.z, p.id, p.info) for p in points], crs


def _shifted_rpcs(dataset, col: int, row: int):
    """The raster's RPCs for a window starting at (col, row) (their line/sample offsets move with it)."""
    rpcs = getattr(dataset, "rpcs", None)
    if rpcs is None:
        return None
    values = rpcs.to_dict()
    values["line_off"] -= row
    values["samp_off"] -= col
    return RPC(**values)


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

    def read(self, indexes: Sequence[int], row: int, height: int, col: int = 0,
             width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw values and validity of rows ``row..row+height`` and columns ``col..col+width`` of the grid."""
        width = self.grid.width - col if width is None else width
        window = Window(self.col_off + col, self.row_off + row, width, height)
        data = mapped_array((len(indexes), height, width), self.reader.dtypes[indexes[0] - 1])
        try:
            with quiet_georeferencing():
                self.reader.read(list(indexes), window=window, out=data)
                return data, self._validity(indexes, data, window)
        except GDAL_ERRORS as error:
            raise unreadable_data(self.dataset.name, indexes, window, error) from None

    def read_overview(self, indexes: Sequence[int], height: int, width: int,
                      resampling: str = "average") -> tuple[np.ndarray, np.ndarray]:
        """The whole grid reduced to ``height`` x ``width`` pixels (GDAL's ``resampling``, average by default,
        from the file's overviews where it has them): raw values as float32 and a validity mask, False where
        the dataset mask says nothing in the cell is valid or a value is not finite."""
        window = Window(self.col_off, self.row_off, self.grid.width, self.grid.height)
        try:
            with quiet_georeferencing():
                data = self.reader.read(list(indexes), window=window, out_shape=(len(indexes), height, width),
                                        resampling=Resampling[resampling], out_dtype="float32")
                valid = self.reader.dataset_mask(window=window, out_shape=(height, width),
                                                 resampling=Resampling.average) > 0
        except GDAL_ERRORS as error:
            raise unreadable_data(self.dataset.name, indexes, window, error) from None
        return data, valid & np.isfinite(data).all(axis=0)

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


def unreadable_data(name: str, indexes: Sequence[int], window: Window, error: Exception) -> InputError:
    """InputError for pixels GDAL cannot read: a truncated file, a damaged block, a missing VRT source."""
    bands = ", ".join(map(str, indexes))
    rows = f"{int(window.row_off)}..{int(window.row_off + window.height) - 1}"
    cols = f"{int(window.col_off)}..{int(window.col_off + window.width) - 1}"
    return InputError(
        f"cannot read {name}, band(s) {bands}, rows {rows}, columns {cols}: {_first_line(error)}. The file is "
        "damaged or incomplete (an interrupted download or copy?) or, for a VRT, one of its source files is "
        f"missing. Check it with `gdalinfo -checksum {name}`, then fetch or copy it again (or fix the VRT's "
        "sources)."
    )


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
    folder = path.parent if str(path.parent) else Path(".")
    limit = name_max(folder)
    if len(os.fsencode(path.name)) > limit:
        raise OutputError(f"the {what} file name is {len(os.fsencode(path.name))} bytes long but the file system "
                          f"of {folder} allows at most {limit}: choose a shorter name.")
    if path.is_dir():
        raise OutputError(f"the {what} path {path} is a folder: give a file name inside it, "
                          f"e.g. {path / 'cloud-free.tif'}.")
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise OutputError(f"the {what} is written as GeoTIFF: give it a .tif name, not {path.name!r}.")
    _check_output_folder(folder, what)
    resolved = path.resolve()
    for source in inputs:
        source = Path(source)
        if resolved == source.resolve() or (path.exists() and source.exists() and os.path.samefile(path, source)):
            raise OutputError(f"the {what} {path} is also an input: choose another file name "
                              "(inputs are never overwritten).")
    return path


def _check_output_folder(folder: Path, what: str) -> None:
    blocking = next((p for p in [folder, *folder.parents] if p.exists() or p.is_symlink()), None)
    if blocking is not None and not blocking.is_dir():
        where = f"the {what} folder {folder}" if blocking == folder else f"{blocking}, above the {what} folder,"
        raise OutputError(f"{where} is a file, not a folder: choose a path inside an existing folder.")
    if not folder.exists():
        raise OutputError(f"the {what} folder does not exist: {folder}. Create it first (mkdir -p {folder}) "
                          "or choose an existing folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"the {what} folder is not writable: {folder}. Choose a folder you can write to.")


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system of ``folder`` allows."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


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
    if grid.gcps is not None:
        points, gcp_crs = grid.gcps
        profile.update(gcps=points, crs=gcp_crs)
        profile.pop("transform")
    if grid.rpcs is not None:
        profile["rpcs"] = grid.rpcs
    if compress_threads:
        profile["num_threads"] = compress_threads
    if creation_options:
        profile.update({str(k).lower(): v for k, v in creation_options.items()})
    return profile


def _options_text(options: dict) -> str:
    return "|".join(f"{key}={value}" for key, value in options.items()) or "(none)"


def temporary_path(final: Path, tag: str = "") -> Path:
    """A hidden, unused file name beside ``final`` (GDAL creates the file, with the usual permissions).

    The name stays within the file system's limit, sidecars included: a long final name is shortened.
    """
    room = name_max(final.parent) - SIDECAR_ROOM
    while True:
        ending = f"{tag}.{uuid.uuid4().hex[:10]}{TEMP_SUFFIX}"
        stem = _fit_bytes(final.stem, room - 1 - len(os.fsencode(ending)))
        path = final.parent / f".{stem}{ending}"
        if not path.exists():
            return path


def _fit_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes in the file-system encoding, never inside a character."""
    limit = max(0, limit)
    while len(os.fsencode(text)) > limit:
        text = text[:-1]
    return text


# ------------------------------------------------------------------------------------- write failures


class GdalFailures(logging.Handler):
    """GDAL failures signalled in this thread while active.

    GDAL writes blocks when its cache is full and when a file is closed; a failure there (a full disk)
    is not raised by rasterio but only logged (logger ``rasterio._env``). This handler collects the
    messages that concern writing, for the current thread only, so that a run can fail on them.
    """

    LOGGER = "rasterio._env"
    WRITE_WORDS = re.compile(r"write|no space|file too large|quota|disk full|flush", re.IGNORECASE)
    _lock = threading.Lock()
    _users = 0
    _saved_level = logging.NOTSET

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.thread = threading.get_ident()
        self.messages: list[str] = []
        self.active = False

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        message = str(record.args[-1]) if isinstance(record.args, tuple) and record.args else record.getMessage()
        if self.WRITE_WORDS.search(message):
            self.messages.append(message)

    def start(self) -> GdalFailures:
        logger = logging.getLogger(self.LOGGER)
        with GdalFailures._lock:
            if GdalFailures._users == 0:
                GdalFailures._saved_level = logger.level
                if not logger.isEnabledFor(logging.INFO):
                    logger.setLevel(logging.INFO)
            GdalFailures._users += 1
        logger.addHandler(self)
        self.active = True
        return self

    def stop(self) -> None:
        if not self.active:
            return
        logger = logging.getLogger(self.LOGGER)
        logger.removeHandler(self)
        self.active = False
        with GdalFailures._lock:
            GdalFailures._users -= 1
            if GdalFailures._users == 0:
                logger.setLevel(GdalFailures._saved_level)

    def check(self, final: Path) -> None:
        """OutputError when a write failure was signalled since the last check."""
        if self.messages:
            detail = "; ".join(dict.fromkeys(self.messages))
            self.messages.clear()
            raise write_failure(final, detail)


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _free_mib(folder: Path) -> float | None:
    try:
        info = os.statvfs(folder)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize / 2**20


def write_failure(final: Path, detail: str, code: int | None = None) -> OutputError:
    """The OutputError for a failed write of ``final``: which disk, why, and what to do."""
    folder = final.parent if str(final.parent) else Path(".")
    disk = _mount_point(folder)
    free = _free_mib(folder)
    free_text = f"{free:.1f} MiB free" if free is not None else "free space unknown"
    text = detail.lower()
    if code == errno.ENOSPC or "no space" in text:
        reason = f"the disk {disk} is full ({free_text})"
    elif code == errno.EFBIG or "file too large" in text:
        reason = (f"the file reached the largest size allowed on the disk {disk} ({free_text}): a limit of the "
                  "file system or of the process (ulimit -f)")
    elif code == errno.EDQUOT or "quota" in text:
        reason = f"the disk quota on {disk} is exhausted ({free_text})"
    else:
        reason = f"writing to the disk {disk} failed ({free_text})"
    return OutputError(
        f"could not write {final}: {reason} (GDAL: {detail}). Nothing was written: the temporary files are "
        f"removed and an existing {final.name} is left as it was. Free space on {disk} or choose an output "
        "folder on another disk."
    )


def verify_complete(path: Path, final: Path, profile: dict) -> None:
    """OutputError unless ``path`` opens as the raster that was written and every block reads back."""
    try:
        with quiet_georeferencing(), rasterio.open(path) as dataset:
            shape = (dataset.count, dataset.height, dataset.width)
            expected = (profile["count"], profile["height"], profile["width"])
            if shape != expected:
                raise OutputError(f"could not write {final}: the finished file holds {shape} instead of {expected}.")
            for row in range(0, dataset.height, BLOCK):
                for col in range(0, dataset.width, PANEL):
                    window = Window(col, row, min(PANEL, dataset.width - col), min(BLOCK, dataset.height - row))
                    dataset.read(window=window)
    except GDAL_ERRORS as error:
        raise write_failure(final, f"the finished file does not read back: {_first_line(error)}") from None


class OutputFile:
    """A GeoTIFF written to a hidden temporary file beside its final path; ``commit`` renames it.

    Every GDAL write failure (raised, or only signalled while the block cache is flushed or the file
    closed) becomes an OutputError, and the finished file is read back before it may be renamed.
    """

    def __init__(self, final: Path, profile: dict, descriptions: Sequence[str] | None = None,
                 tags: dict | None = None, cog: bool = False, cog_options: dict | None = None,
                 failures: GdalFailures | None = None):
        self.final = Path(final)
        self.cog = cog
        self.cog_options = {str(k).upper(): v for k, v in (cog_options or {}).items()}
        self.profile = profile
        self.own_failures = failures is None
        self.failures = GdalFailures().start() if failures is None else failures
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
        except BaseException as error:
            self.discard()
            if isinstance(error, GDAL_ERRORS):
                raise write_failure(self.final, f"cannot create the file: {_first_line(error)}") from None
            if isinstance(error, OSError):
                raise write_failure(self.final, error.strerror or str(error), error.errno) from None
            raise

    def set_colorinterp(self, interps: Sequence[ColorInterp]) -> None:
        self.dataset.colorinterp = list(interps)

    def set_scaling(self, scale: float, offset: float) -> None:
        """Band scale and offset: what decodes the written values (reflectance = value x scale + offset)."""
        self.dataset.scales = [float(scale)] * self.dataset.count
        self.dataset.offsets = [float(offset)] * self.dataset.count

    def write(self, array: np.ndarray, row: int, col: int = 0) -> None:
        window = Window(col, row, array.shape[-1], array.shape[-2])
        with self.checked():
            self.dataset.write(array, window=window)

    def write_mask(self, mask: np.ndarray, row: int, col: int = 0) -> None:
        window = Window(col, row, mask.shape[-1], mask.shape[-2])
        with self.checked():
            self.dataset.write_mask(mask, window=window)

    @contextlib.contextmanager
    def checked(self) -> Iterator[None]:
        """Run GDAL calls on this file: any failure, raised or signalled, becomes an OutputError."""
        try:
            with quiet_georeferencing():
                yield
        except GDAL_ERRORS as error:
            raise write_failure(self.final, _first_line(error)) from None
        except OSError as error:
            raise write_failure(self.final, error.strerror or str(error), error.errno) from None
        self.failures.check(self.final)

    def finish(self) -> None:
        """Close the temporary file (for COG, convert it, still under a temporary name) and read it back."""
        with self.checked():
            self.dataset.close()
        if self.cog:
            self._convert_to_cog()
        verify_complete(self.temp, self.final, self.profile)

    def _convert_to_cog(self) -> None:
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
        except GDAL_ERRORS as error:
            detail = _first_line(error)
            if GdalFailures.WRITE_WORDS.search(detail):  # the disk, not the options
                raise write_failure(self.final, detail) from None
            raise OutputError(f"cannot write the cloud-optimised GeoTIFF {self.final} with the options "
                              f"{_options_text(self.cog_options)}: {detail}") from None
        except OSError as error:
            raise write_failure(self.final, error.strerror or str(error), error.errno) from None
        self.failures.check(self.final)
        self.temp.unlink()
        self.extra.remove(cog_path)
        self.temp = cog_path

    def commit(self) -> Path:
        if self.own_failures:
            self.failures.stop()
        try:
            os.replace(self.temp, self.final)
        except OSError as error:
            raise write_failure(self.final, f"cannot rename the finished file: {error.strerror}", error.errno) \
                from None
        return self.final

    def discard(self) -> None:
        if getattr(self, "own_failures", False):
            self.failures.stop()
        dataset = getattr(self, "dataset", None)
        if dataset is not None and not dataset.closed:
            with contextlib.suppress(Exception):
                dataset.close()
        for path in [self.temp, *self.extra]:
            for leftover in (path, Path(f"{path}.aux.xml"), Path(f"{path}.msk"), Path(f"{path}.ovr")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()


class OutputSet:
    """Several outputs that appear together or not at all.

    While the set is open, GDAL write failures of this thread are collected (``failures``); the
    renames at the end run with termination signals held back, so a signal never leaves half a set.
    """

    def __init__(self) -> None:
        self.files: list[OutputFile] = []
        self.failures = GdalFailures().start()

    def add(self, output: OutputFile) -> OutputFile:
        self.files.append(output)
        return output

    def commit(self) -> None:
        try:
            for output in self.files:
                output.finish()
            with _signals_held():
                for output in self.files:
                    output.commit()
        finally:
            self.failures.stop()

    def discard(self) -> None:
        self.failures.stop()
        for output in self.files:
            output.discard()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back SIGINT / SIGTERM / SIGHUP (delivered afterwards) while a few renames run."""
    import signal

    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
