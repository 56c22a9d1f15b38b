"""The one path from raster(s) to raster: ``remove_clouds(request)``.

The CLI, every QGIS Processing algorithm, the dock widget and the evaluation call it. Steps, each
handing the next a small object it builds once (``remove_clouds`` reads top to bottom):

1. check the output paths (folder exists and is writable, no output is an input): ``_OutputPaths``;
2. open the inputs, detect sensor / scaling / bands (``core.sensors``) and choose the model:
   ``_Inputs`` (the card and every date with its resolution and band indexes);
3. align every date onto the reference grid (``WarpedVRT``): ``_Sources``; lay a tile grid with
   overlap over it: ``_TilePlan``; with the output encoding and tags that makes the ``_Job``; load the
   model behind a ``Predictor``;
4. stream, panel by panel (vertical stripes of at most ``raster.PANEL`` columns): read a strip of
   tile rows of the panel, run batches of tiles through the model (optionally with test-time
   augmentation and keep-clear blending), add each tile times its normalised blend weight into
   blocks of output rows, and write a block as soon as its last tile is in. Memory holds a few tile
   rows of one panel, whatever the raster's height and width;
5. write everything to temporary files in the output folder (``_OutputFiles``), check every write (a
   full disk fails the run), read the finished files back, and rename them only at the end; a cancel,
   a signal or an error removes them. Out of memory with one tile per batch, the attempt starts again
   with smaller tiles (``_TilePlan.halved``), then on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import mask_codes, raster, s2cloudless
from .cirrus import correct_cirrus
from .device import (
    CPU_BATCH_SIZE,
    autocast_dtype,
    batch_size_for_memory,
    check_threads,
    describe_device,
    free_memory,
    is_out_of_memory,
    resolve_device,
    torch_threads,
)
from .errors import Cancelled, DependencyError, InputError, ViserError
from .sensors import (
    CANONICAL_BANDS,
    BandFacts,
    SensorResolution,
    acquisition_date,
    formula,
    offered_bands,
    resolve,
)
from .tiling import MIN_TILE, Panel, Tile, TileGrid

SCORE_THRESHOLD = 0.5          # a score above this is cloud, for models without a fill gate of their own
SOURCE_DATES_NODATA = 65535    # source-date raster: outside the input's valid pixels
FEATHER_RADIUS = 6             # keep-clear: width in pixels of the seam between input and model output
MIN_MODEL_SIDE = 16            # tiles smaller than this are padded (edge-replicated) before the model
MIN_RETRY_TILE = 64            # out of memory: halve tiles down to this size before falling back to CPU
GDAL_CACHE_BYTES = 64 * 2**20  # GDAL's block cache during a run: keeps memory independent of raster size
OUTPUT_DTYPES = ("input", "float32")
COLOUR_OF_BAND = {"red": "red", "green": "green", "blue": "blue"}

ProgressFn = Callable[[float, str], None]
_LOG = logging.getLogger(__name__)  # the run's messages (core.messages says where they go)


@dataclass
class CloudRemovalRequest:
    inputs: list[str | Path]            # one raster, or several dates (a temporal stack)
    output: str | Path | None           # None only when just score_output is wanted (cloud score alone)
    model: str | Path | None = None     # bundled name, card or safetensors path; None = select_model()
    models_dir: Path | None = None      # where bundled models live (tests point at tiny ones)
    sensor: str = "auto"                # auto | s2-l1c | s2-l2a | landsat-c2l2 | rgb8 | rgbn8
    bands: list[int] | None = None      # 1-based band indexes in the model's band order
    scale: float | None = None          # reflectance = DN * scale + offset (overrides the preset)
    offset: float | None = None
    tile_size: int | None = None        # default: the model card's
    overlap: int | None = None
    batch_size: int | None = None       # tiles per batch; None: 4 on the CPU, from free memory on a GPU
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    precision: str = "fp32"             # fp32 | bf16 | fp16 | auto: autocast on CUDA (the CPU runs fp32)
    overlap_io: bool | None = None      # read / write in their own threads; None: on a GPU only
    threads: int | None = None          # torch CPU threads
    keep_clear: bool = True             # keep input pixels where clear (score or cloud_mask); level on validation,
                                        # and a model that repaints unfamiliar clear ground cannot touch it
    cloud_mask: str | Path | None = None  # raster whose first band marks the clouds (see cloud_mask_type)
    cloud_mask_type: str = mask_codes.DEFAULT_ENCODING  # which values are cloud: core.mask_codes.ENCODINGS
    cloud_mask_buffer: int = 0          # pixels the mask's clouds are grown by (their thin rims)
    cloud_masks: list[str | Path] | None = None  # stacks: one mask per input, in input order (not with cloud_mask)
    cloud_mask_mode: str = "replace"    # replace: the mask alone decides; add: the model's own clouds too
    cloud_source: str = "auto"          # model | l1c-classifier | s2cloudless (a classifier's mask added to the
                                        # score: 13-band L1C) | auto: l1c-classifier where it applies, no mask given
    score_output: str | Path | None = None
    uncertainty_output: str | Path | None = None   # implies test-time augmentation
    source_dates_output: str | Path | None = None  # stacks: per pixel, the input number of the date used most
    tta: bool = False
    output_dtype: str = "input"         # input | float32 (reflectance)
    cog: bool = False
    creation_options: dict | None = None
    reference: int = 0                  # index in inputs of the reference date (output grid)
    resampling: str = "bilinear"        # for aligning the other dates
    bounds: tuple[float, float, float, float] | None = None  # sub-window in the reference CRS
    tags: dict[str, str] | None = None  # extra metadata tags on every output (e.g. the batch's request)
    wide_view: bool = True              # rasters larger than a tile: the overview's prior under large clouds
    cloud_threshold: float | None = None  # score above which the fill replaces a pixel; None: the model's
    cirrus_correction: bool = True      # Sentinel-2 L1C with B10: remove thin cirrus first (core.cirrus)
    cloud_shadows: bool = True          # models with the shadow test: fill the shadows of the clouds too


@dataclass
class CloudRemovalResult:
    output: Path | None
    score_output: Path | None
    uncertainty_output: Path | None
    device: str
    model: str
    sensor: str
    sensor_reason: str
    bands: list[int]
    tiles: int
    seconds: float
    messages: list[str] = field(default_factory=list)
    precision: str = "fp32"             # what ran: fp32, bf16 or fp16
    source_dates_output: Path | None = None
    batch_size: int = 0                 # tiles per batch at the end of the run

    @property
    def tiles_per_second(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0


# ------------------------------------------------------------------------------------------ requests


def _validate_request(request: CloudRemovalRequest) -> None:
    if not request.inputs:
        raise InputError("no input raster given.")
    if request.output is None and request.score_output is None:
        raise InputError("nothing to write: give an output path (or a score output for the cloud score alone).")
    if request.output_dtype not in OUTPUT_DTYPES:
        raise InputError(f"output_dtype must be one of {', '.join(OUTPUT_DTYPES)}, got {request.output_dtype!r}.")
    if not 0 <= int(request.reference) < len(request.inputs):
        raise InputError(f"reference must index one of the {len(request.inputs)} inputs (0 to "
                         f"{len(request.inputs) - 1}), got {request.reference}.")
    if request.batch_size is not None and _whole_number(request.batch_size, "batch size") < 1:
        raise InputError(f"batch size must be at least 1, got {request.batch_size}.")
    if request.source_dates_output is not None and request.output is None:
        raise InputError("the source-date raster comes with a cloud-free output: give an output path too.")
    if (request.cloud_mask is not None or request.cloud_masks) and not request.keep_clear:
        raise InputError("a cloud mask is used by keep-clear mode: leave keep-clear on (drop --no-keep-clear), or drop the mask.")
    if request.cloud_masks is not None:
        _check_date_masks(request)
    _check_cloud_source(request)
    mask_codes.encoding(request.cloud_mask_type)
    if request.cloud_mask_mode not in mask_codes.MASK_MODES:
        raise InputError(f"the cloud mask mode must be one of {', '.join(mask_codes.MASK_MODES)}, got "
                         f"{request.cloud_mask_mode!r}: replace fills what the mask calls cloud, add also what the "
                         "model finds.")
    buffer = mask_codes.check_buffer(request.cloud_mask_buffer)
    for option, given in (("--cloud-mask-type", request.cloud_mask_type != mask_codes.DEFAULT_ENCODING),
                          ("--cloud-mask-buffer", buffer > 0),
                          ("--cloud-mask-mode", request.cloud_mask_mode != mask_codes.MASK_MODES[0])):
        if given and request.cloud_mask is None and not request.cloud_masks:
            raise InputError(f"{option} says how to read a cloud mask, but no mask was given: add --cloud-mask "
                             f"(with --keep-clear), or drop {option}.")
    if request.cloud_threshold is not None and not 0.0 < _number(request.cloud_threshold) < 1.0:
        threshold = request.cloud_threshold
        raise InputError(f"the cloud threshold must be a number between 0 and 1 (exclusive), got {threshold!r}: "
                         "pixels whose cloud score is above it are filled; raise it (e.g. 0.7) to keep more bright "
                         "ground, lower it (e.g. 0.45) to take more thin cloud.")


def _check_cloud_source(request: CloudRemovalRequest) -> None:
    if request.cloud_source not in s2cloudless.CLOUD_SOURCES:
        raise InputError(f"the cloud source must be one of {', '.join(s2cloudless.CLOUD_SOURCES)}, got "
                         f"{request.cloud_source!r}: model takes the network's cloud score alone, l1c-classifier adds "
                         "the bundled L1C cloud classifier's mask to it (13-band Sentinel-2 L1C), s2cloudless the "
                         "s2cloudless package's, auto the bundled classifier's where it can.")
    if request.cloud_source in _CLASSIFIER_OF and (request.cloud_mask is not None or request.cloud_masks):
        raise InputError(f"give a cloud mask or --cloud-source {request.cloud_source}, not both: the mask says what is cloud; "
                         "drop --cloud-source, or drop the mask (with --cloud-mask-mode add, the mask adds to the "
                         "model's own clouds).")


def _check_date_masks(request: CloudRemovalRequest) -> None:
    inputs, masks = len(request.inputs), len(request.cloud_masks)
    if request.cloud_mask is not None:
        raise InputError("give the reference's cloud mask or one mask per date, not both (the reference's is the one "
                         "at its position among the dates' masks).")
    if inputs < 2 or masks != inputs:
        raise InputError(f"{masks} cloud mask(s) for {inputs} input(s): give one mask (the reference date's) or one "
                         "per input, in the inputs' order.")


@dataclass(frozen=True)
class _OutputPaths:
    """The checked paths of the products a run writes (None: not asked for)."""

    output: Path | None
    score: Path | None
    uncertainty: Path | None
    source_dates: Path | None


def _output_paths(request: CloudRemovalRequest) -> _OutputPaths:
    """Checked output paths; none may be an input, the cloud mask or another output."""
    protected = [*request.inputs] + ([request.cloud_mask] if request.cloud_mask else []) + list(request.cloud_masks or [])
    checked: list[Path | None] = []
    for value, what in ((request.output, "output"), (request.score_output, "score output"),
                        (request.uncertainty_output, "uncertainty output"),
                        (request.source_dates_output, "source-date output")):
        others = [*protected, *[path for path in checked if path]]
        checked.append(raster.check_output_path(value, others, what) if value is not None else None)
    return _OutputPaths(*checked)


# -------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Opened:
    """An input raster, open read-only, and what it says about itself."""

    label: str
    path: Path
    dataset: object
    facts: BandFacts
    number: int                         # 1-based position in the request's inputs


@dataclass(frozen=True)
class _Input:
    """A date of the run: the open raster, its sensor and scaling, and the model's bands in it."""

    label: str
    path: Path
    dataset: object
    facts: BandFacts
    number: int                         # 1-based position in the request's inputs
    resolution: SensorResolution
    indexes: list[int]                  # 1-based band numbers, in the model's band order
    cirrus: int | None = None           # 1-based number of the cirrus band (B10) that corrects thin cirrus

    @property
    def read_indexes(self) -> list[int]:
        """The bands read for each tile: the model's, then the cirrus band where it corrects them."""
        return self.indexes + ([self.cirrus] if self.cirrus is not None else [])


@dataclass(frozen=True)
class _Inputs:
    """The request's inputs, resolved once: the model card, every date with its sensor, scaling and the
    model's bands (the reference first), and how a stack longer than the model takes is cut down."""

    card: object
    dates: list[_Input]
    date_choice: str | None             # the line that says so, for such a stack
    days: list[float] | None            # and each date's acquisition day (NaN: unknown), for its ties

    @property
    def reference(self) -> _Input:
        return self.dates[0]


def _resolve_inputs(request: CloudRemovalRequest, stack: contextlib.ExitStack) -> _Inputs:
    """Open the inputs, choose the model and bind every date's sensor and bands to it."""
    opened = _open_inputs(request, stack)
    card, reference_resolution = _choose_model(request, opened[0])
    date_choice = _check_frames(opened, card)
    picks_dates = date_choice is not None and card.dates_per_tile is not None
    days = _acquisition_days(opened) if picks_dates else None
    dates = [_bind_bands(item, request, card, reference_resolution if position == 0 else None)
             for position, item in enumerate(opened)]
    if picks_dates:
        date_choice += " " + _ties_line(days)
    return _Inputs(card, dates, date_choice, days)


def _open_inputs(request: CloudRemovalRequest, stack: contextlib.ExitStack) -> list[_Opened]:
    """Open every input read-only; the reference comes first (the model wants it at index 0)."""
    order = [request.reference] + [i for i in range(len(request.inputs)) if i != request.reference]
    opened = []
    for position in order:
        source = request.inputs[position]
        path = Path(source)
        dataset = stack.enter_context(raster.open_raster(source))
        label = f"input {position + 1} ({path.name})" if len(request.inputs) > 1 else path.name
        opened.append(_Opened(label, path, dataset, raster.band_facts(dataset, path), position + 1))
    return opened


def _too_few_bands(item: _Opened, needed: int, names) -> InputError:
    return InputError(
        f"{item.label} has {item.facts.count} band(s) but the model needs {needed} ({', '.join(names)}): "
        "give a raster with those bands, pass --bands, or choose a model with fewer bands."
    )


def _resolve_sensor(item: _Opened, request: CloudRemovalRequest, wanted) -> SensorResolution:
    return resolve(item.facts, sensor=request.sensor, bands=request.bands, scale=request.scale,
                   offset=request.offset, wanted=wanted)


def _choose_model(request: CloudRemovalRequest, reference: _Opened) -> tuple[object, SensorResolution | None]:
    """The model card: the one asked for, or the default for the bands this raster offers. With the
    default, also the reference's sensor resolution when it holds for the model: band numbers the user
    gave are named in the model's band order, so only without them."""
    from .weights import find_model, select_model

    if request.model is not None:
        return find_model(request.model, models_dir=request.models_dir), None
    if request.bands is None and reference.facts.count < 3:
        raise _too_few_bands(reference, 3, CANONICAL_BANDS[:3])
    probe = _resolve_sensor(reference, request, None)
    names = offered_bands(probe)
    if len(names) < 3:
        raise InputError(
            f"{reference.label}: could not identify red, green and blue bands (identified: "
            f"{', '.join(names) or 'none'}). {probe.reason} Pass --bands R,G,B[,NIR]."
        )
    card = select_model(names, len(request.inputs), models_dir=request.models_dir)
    return card, probe if request.bands is None else None


def _bind_bands(item: _Opened, request: CloudRemovalRequest, card,
                resolution: SensorResolution | None = None) -> _Input:
    """The date with its sensor, scaling and the model's band indexes (``resolution``: already known)."""
    wanted = list(card.bands)
    if request.bands is None and item.facts.count < len(wanted):
        raise _too_few_bands(item, len(wanted), wanted)
    resolution = resolution or _resolve_sensor(item, request, wanted)
    cirrus = resolution.band_names.get("cirrus")
    takes_cirrus = (request.cirrus_correction and resolution.sensor == "s2-l1c" and cirrus is not None
                    and "cirrus" not in wanted)
    return _Input(item.label, item.path, item.dataset, item.facts, item.number, resolution,
                  resolution.indexes_for(wanted), cirrus if takes_cirrus else None)


def _check_frames(items: list[_Opened], card) -> str | None:
    """Refuse several dates for a one-date model; for a stack longer than a stack model takes, the
    line that says how its dates are chosen (per tile, ``Predictor._choose_dates``)."""
    frames = int(card.num_frames)
    if len(items) > 1 and frames == 1:
        raise InputError(f"model {card.name} takes one date, but {len(items)} inputs were given: "
                         "choose a multi-temporal model or give one date.")
    if len(items) <= frames:
        return None
    if card.dates_per_tile is None:
        return (f"{len(items)} dates, model {card.name} takes them all in each tile: under the reference's clouds, "
                "every date where its own cloud score (or its cloud mask) sees clear ground.")
    return (f"{len(items)} dates, model {card.name} takes {frames}: for each tile, the reference and the "
            f"{frames - 1} date(s) that see most of what it cannot (each date's own cloud score);")


def _ties_line(days: list[float]) -> str:
    known = sum(day == day for day in days)  # NaN != NaN
    if known > 1:
        return ("among dates that see as much, the nearest in time to the reference "
                f"(acquisition dates from the metadata or file names of {known} of {len(days)}).")
    return "among dates that see as much, the clearest (no acquisition dates in the metadata or file names)."


def _acquisition_days(items) -> list[float]:
    """Each date's acquisition day (proleptic ordinal), NaN where neither metadata nor file name says."""
    days = []
    for item in items:
        date = acquisition_date(item.facts)
        days.append(float("nan") if date is None else float(date.toordinal()))
    return days


def _date_use_line(items: list[_Input], date_use) -> str:
    """Which dates a long stack used: tiles per date, most used first (the reference uses them all)."""
    order = sorted(range(len(items)), key=lambda k: (-int(date_use[k]), k))
    parts = [f"{items[k].label} {int(date_use[k])}" for k in order]
    return f"Dates used (tiles of {int(date_use[0])}): " + ", ".join(parts) + "."


@dataclass(frozen=True)
class _TilePlan:
    """The tiles over the output grid, with their size and overlap (the TileGrid checks them)."""

    grid: raster.Grid
    tile: int
    overlap: int
    tiles: TileGrid

    @classmethod
    def over(cls, grid: raster.Grid, tile: int, overlap: int) -> _TilePlan:
        return cls(grid, tile, overlap, TileGrid(grid.height, grid.width, tile, overlap, block=raster.BLOCK))

    def halved(self) -> _TilePlan | None:
        """Tiles half the size, for a retry after running out of memory; None when they would be too small."""
        tile = self.tile // 2
        if tile >= max(MIN_RETRY_TILE, MIN_TILE) and min(self.grid.height, self.grid.width) > tile:
            return _TilePlan.over(self.grid, tile, self.overlap // 2)
        return None


def _tiling(request: CloudRemovalRequest, card, grid: raster.Grid) -> _TilePlan:
    """The request's tile size and overlap, else the model card's (the overlap scaled with a given size)."""
    tile = card.tile_size if request.tile_size is None else _whole_number(request.tile_size, "tile size")
    if request.overlap is not None:
        overlap = _whole_number(request.overlap, "overlap")
    elif request.tile_size is not None:
        overlap = int(round(card.overlap * tile / max(1, card.tile_size)))
    else:
        overlap = int(card.overlap)
    return _TilePlan.over(grid, int(tile), int(overlap))


def _number(value) -> float:
    """``value`` as a float; NaN when it is not a number (a range check then fails)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _whole_number(value, name: str) -> int:
    """``value`` as an int, or InputError when it is not a whole number (7.5, NaN, inf, text)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, got {value!r}.") from None
    if not math.isfinite(number) or number != int(number):
        raise InputError(f"{name} must be a whole number, got {value!r}.")
    return int(number)


# ------------------------------------------------------------------------------------------ encoding


@dataclass
class _Encoding:
    """Reflectance -> output values: inverse scaling in the input's dtype, or float32 reflectance."""

    dtype: str
    nodata: float | None
    scale: float = 1.0
    offset: float = 0.0
    write_mask: bool = False
    band_scaling: bool = False   # record scale/offset in the output bands (the input's bands carried them)

    def encode(self, reflectance: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Output values for a block; ``reflectance`` (float32) is overwritten to save memory."""
        kind = np.dtype(self.dtype).kind
        values = reflectance
        if self.offset:
            values -= np.float32(self.offset)
        if self.scale != 1:
            values /= np.float32(self.scale)
        if kind in "iu":
            info = np.iinfo(self.dtype)
            low, high = float(info.min), float(info.max)
            if self.nodata is not None and self.nodata == low:
                low += 1
            if self.nodata is not None and self.nodata == high:
                high -= 1
            np.rint(values, out=values)
            np.clip(values, low, high, out=values)
        if values.dtype != np.dtype(self.dtype):
            cast = raster.mapped_array(values.shape, self.dtype)
            np.copyto(cast, values, casting="unsafe")
            values = cast
        if self.nodata is not None and not valid.all():
            values[:, ~valid] = self.nodata
        return values


def _has_mask(dataset, indexes) -> bool:
    """True when some pixels of these bands may be masked (internal mask or a separate alpha band)."""
    from rasterio.enums import ColorInterp, MaskFlags

    alpha_bands = {i + 1 for i, ci in enumerate(dataset.colorinterp) if ci == ColorInterp.alpha}
    for index in indexes:
        flags = dataset.mask_flag_enums[index - 1]
        if MaskFlags.all_valid in flags or MaskFlags.nodata in flags:
            continue
        if MaskFlags.alpha in flags and alpha_bands & set(indexes):
            continue
        return True
    return False


def _encoding(request: CloudRemovalRequest, reference: _Input) -> _Encoding:
    dataset = reference.dataset
    dtype = str(dataset.dtypes[reference.indexes[0] - 1])
    if request.output_dtype == "float32" or np.dtype(dtype).kind not in "iuf":
        return _Encoding("float32", float("nan"))
    resolution = reference.resolution
    band_scaling = _bands_carry_scaling(reference)
    if np.dtype(dtype).kind == "f":
        return _Encoding(dtype, float("nan"), resolution.scale, resolution.offset, band_scaling=band_scaling)
    nodatas = [dataset.nodatavals[i - 1] for i in reference.indexes if dataset.nodatavals[i - 1] is not None]
    nodata = nodatas[0] if nodatas else None
    write_mask = nodata is None and _has_mask(dataset, reference.indexes)
    return _Encoding(dtype, nodata, resolution.scale, resolution.offset, write_mask, band_scaling)


def _bands_carry_scaling(reference: _Input) -> bool:
    """True when the input's model bands set a scale or offset in their metadata: the output, written in
    the same encoding, must then set the scaling that decodes it (which may be the user's)."""
    facts = reference.facts
    return any((facts.scales[i - 1], facts.offsets[i - 1]) != (1.0, 0.0) for i in reference.indexes)


# ----------------------------------------------------------------------------------------- predictor


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class _NeedSmallerTiles(Exception):
    """Out of memory with a batch of one tile."""


def _dihedral(x, k: int, flip: bool):
    import torch

    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1))


def _undo_dihedral(x, k: int, flip: bool):
    import torch

    x = torch.rot90(x, -k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


class HostStaging:
    """Reused host buffers for the copies between numpy and the device: page-locked (pinned) on a GPU,
    so that host-to-device copies run asynchronously at full bus speed; grown when a batch is larger."""

    def __init__(self, device, pin: bool = True):
        self.device = device
        self.pin = pin
        self.buffers: dict[str, object] = {}

    def _buffer(self, key: str, shape, dtype):
        import torch

        count = int(np.prod(shape))
        buffer = self.buffers.get(key)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < count:
            buffer = torch.empty(count, dtype=dtype, pin_memory=self.pin)
            self.buffers[key] = buffer
        return buffer[:count].view(shape)

    def to_device(self, array: np.ndarray, key: str = "input"):
        import torch

        source = torch.from_numpy(np.ascontiguousarray(array))
        staged = self._buffer(key, source.shape, source.dtype)
        staged.copy_(source)
        return staged.to(self.device, non_blocking=self.pin)

    def to_host(self, tensor, key: str) -> np.ndarray:
        staged = self._buffer(key, tuple(tensor.shape), tensor.dtype)
        staged.copy_(tensor, non_blocking=self.pin)
        if self.pin and self.device.type == "cuda":
            import torch

            torch.cuda.current_stream(self.device).synchronize()
        return staged.numpy().copy()


class Prediction(NamedTuple):
    """One batch through the model, as host arrays (float32; ``sources`` int32)."""

    image: np.ndarray                   # (n, C', h, w) reflectance
    score: np.ndarray                   # (n, h, w) cloud score of the reference date
    spread: np.ndarray | None           # (n, h, w) TTA standard deviation, when asked for
    sources: np.ndarray | None = None   # (n, h, w) date used most: 1 + position in the stack, 0 = spatial fill


class Predictor:
    """Runs batches of tiles through the model on a device, with optional 8-fold test-time
    augmentation (mean = image, spread = uncertainty) and keep-clear blending.

    A stack longer than the model takes: each tile takes the reference and the dates that see most of
    what it cannot (``_choose_dates``). ``source_dates``: also the date each pixel came from, from every
    date's own cloud score (``_dominant_dates``).

    Out of memory: the batch is halved (and kept smaller for the rest of the run); with a batch of
    one tile it raises ``_NeedSmallerTiles`` for the caller to retry with smaller tiles or the CPU.

    On CUDA: ``precision`` bf16 / fp16 runs the model under autocast (a batch whose output is not
    finite is run again in float32, and float32 is kept for the rest of the run), and tiles travel
    through pinned host buffers. On the CPU both are off and nothing changes.
    """

    def __init__(self, model, device, batch_size: int | None, tta: bool = False, keep_clear: bool = False,
                 say: Callable[[str], None] | None = None, precision: str = "fp32",
                 staging: HostStaging | None = None, source_dates: bool = False, date_days=None,
                 cloud_threshold: float = SCORE_THRESHOLD, mask_adds: bool = False):
        self.model = model
        self.mask_adds = mask_adds  # the user's cloud masks add to the model's own clouds (base, keep-clear, dates)
        if hasattr(model, "use_mask_mode"):
            model.use_mask_mode(mask_adds)
        # a score above it is cloud: the fill replaces the pixel, keep-clear does not keep it (the run's cloud share)
        self.cloud_threshold = float(cloud_threshold)
        self.source_dates = source_dates
        # acquisition day of each stack position (NaN: unknown), for choosing dates nearest the reference
        self.date_days = None if date_days is None else np.asarray(date_days, dtype=np.float64)
        self.device = device
        self.batch_size = int(batch_size or CPU_BATCH_SIZE)
        self.tta = tta
        self.keep_clear = keep_clear
        self.say = say or (lambda message: None)
        self.autocast = autocast_dtype(device, precision)
        self.staging = staging if staging is not None else (HostStaging(device) if device.type == "cuda" else None)
        self.date_use: np.ndarray | None = None  # tiles per date of a stack longer than the model takes

    @property
    def precision(self) -> str:
        import torch

        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast]

    def use_device(self, device, batch_size: int | None = None) -> None:
        """Move to another device (the CPU after running out of GPU memory): float32, no staging, and
        ``batch_size`` tiles per batch (None: the CPU's)."""
        self.model = self.model.to(device)
        self.device = device
        self.batch_size = int(batch_size or CPU_BATCH_SIZE)
        if device.type != "cuda":
            self.autocast = None
            self.staging = None

    def tile_memory(self, x: np.ndarray) -> int:
        """Peak device memory (bytes) of one tile through the model, measured (CUDA only; 0 elsewhere)."""
        if self.device.type != "cuda":
            return 0
        import torch

        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._run(x[:1], None)
        return int(torch.cuda.max_memory_allocated(self.device) - before)

    def fit_batch_to_memory(self, x: np.ndarray, tiles: int) -> int:
        """Choose the batch size from the free device memory and one tile's measured peak (CUDA)."""
        free, per_tile = free_memory(self.device), self.tile_memory(x)
        if free is None or per_tile <= 0:
            return self.batch_size
        self.batch_size = batch_size_for_memory(free, per_tile, tiles)
        self.say(f"Batch size {self.batch_size}: {free / 2**30:.1f} GiB free on {describe_device(self.device)}, "
                 f"{per_tile / 2**20:.0f} MiB per {x.shape[-1]}-pixel tile ({self.precision}).")
        return self.batch_size

    def fit_batch_to_tiles(self, frames: int, channels: int, tile: int, tiles: int) -> None:
        """On a GPU, the batch size from its free memory (a probe tile through the model); the CPU keeps
        its own. Out of memory even for the probe: ``_NeedSmallerTiles``."""
        if self.device.type != "cuda":
            return
        try:
            self.fit_batch_to_memory(np.zeros((1, frames, channels, tile, tile), np.float32), tiles)
        except Exception as error:  # only out-of-memory errors are handled
            if not is_out_of_memory(error):
                raise
            self.batch_size = 1
            raise _NeedSmallerTiles() from None

    def predict(self, x: np.ndarray, cloud: np.ndarray | None = None, prior: np.ndarray | None = None) -> Prediction:
        """``x`` ``(n, L, C, h, w)`` reflectance, ``cloud`` ``(n, k, h, w)`` the user's masks (k = 1: the
        reference's; k = L: every date's, which then replace the model's date scores) or None, ``prior``
        ``(n, C, h, w)`` each tile's wide-view prior (``_Overview``) or None."""
        outputs, start = [], 0
        while start < len(x):
            stop = min(len(x), start + self.batch_size)
            try:
                outputs.append(self._run(x[start:stop], None if cloud is None else cloud[start:stop],
                                         None if prior is None else prior[start:stop]))
            except Exception as error:  # only out-of-memory errors are handled
                if not is_out_of_memory(error):
                    raise
                self._release()
                if self.batch_size == 1:
                    raise _NeedSmallerTiles() from None
                self.batch_size = max(1, self.batch_size // 2)
                self.say(f"Out of memory: batch size reduced to {self.batch_size}.")
                continue
            start = stop
        return Prediction(*(None if parts[0] is None else np.concatenate(parts) for parts in zip(*outputs, strict=True)))

    def _release(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # no copy may still read a staging buffer
            torch.cuda.empty_cache()

    def _forward(self, x, cloud=None, date_clouds=None, prior=None):
        # a fill-based model completes from the user's cloud mask instead of its own score, takes the
        # dates' cloud weights when they were computed already (to choose dates or name sources) and the
        # wide-view prior of its fill
        fill = _is_fill_model(self.model)
        inputs = x if x.shape[1] > 1 else x[:, 0]
        arguments = (inputs, cloud) if cloud is not None and fill else (inputs,)
        options = {"date_clouds": date_clouds} if date_clouds is not None and fill and x.shape[1] > 1 else {}
        if prior is not None and fill:
            options["prior"] = prior
        if self.autocast is None:
            image, score = self.model(*arguments, **options)
            return image.float(), score.float()
        import torch

        try:
            with torch.autocast(device_type=self.device.type, dtype=self.autocast):
                image, score = self.model(*arguments, **options)
        except RuntimeError as error:  # an operation without a reduced-precision kernel
            if is_out_of_memory(error):
                raise
            return self._fall_back(x, cloud, date_clouds, prior, f"cannot run in {self.precision} ({_first_line(error)})")
        image, score = image.float(), score.float()
        if bool(torch.isfinite(image).all()) and bool(torch.isfinite(score).all()):
            return image, score
        return self._fall_back(x, cloud, date_clouds, prior, f"overflowed in {self.precision}")

    def _fall_back(self, x, cloud, date_clouds, prior, why: str):
        self.say(f"The model {why}: running float32 from here on.")
        self.autocast = None
        return self._forward(x, cloud, date_clouds, prior)

    def _run(self, x_np: np.ndarray, cloud_np: np.ndarray | None, prior_np: np.ndarray | None = None):
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            x = self._to_device(x_np)
            n, frames, channels, h, w = x.shape
            pad_h, pad_w = max(0, MIN_MODEL_SIDE - h), max(0, MIN_MODEL_SIDE - w)
            if pad_h or pad_w:
                x = F.pad(x.reshape(n, frames * channels, h, w), (0, pad_w, 0, pad_h), mode="replicate")
                x = x.reshape(n, frames, channels, h + pad_h, w + pad_w)
            masks = self._cloud_tensor(cloud_np, x.shape[-2:])  # the user's, on the device once per batch
            cloud = None if masks is None else masks[:, :1]  # the reference's
            dates_masked = masks is not None and masks.shape[1] > 1
            prior = self._prior_tensor(prior_np, x.shape[-2:])
            limit = getattr(self.model, "dates_per_tile", getattr(self.model, "num_frames", frames))
            too_long = limit is not None and frames > limit
            date_clouds = order = None
            if dates_masked:
                date_clouds = masks[:, :, None]  # every date's cloud from its own mask, not the model's score
                if self.mask_adds:
                    date_clouds = torch.maximum(date_clouds, self._date_clouds(x))
            elif self.source_dates or too_long:
                date_clouds = self._date_clouds(x)  # every date scored once per batch
            if too_long:
                x, order = self._choose_dates(x, date_clouds)
            taken = None
            if date_clouds is not None:  # the chosen dates' weights, in the stack's order
                taken = date_clouds if order is None else date_clouds[torch.arange(n, device=x.device)[:, None], order]
            if self.tta:
                image, score, spread = self._tta(x, cloud, prior, taken if dates_masked else None)
                spread = spread[:, :h, :w]
            else:
                image, score = self._forward(x, cloud, taken, prior)
                spread = None
            image, score = image[..., :h, :w], score[:, 0, :h, :w].clamp(0, 1)
            if self.mask_adds and cloud is not None:  # the score a run writes shows what it filled: the mask's too
                score = torch.maximum(score, cloud[:, 0, :h, :w])
            if self.keep_clear:  # an added mask is in the score now; a replacing one decides alone
                image = self._keep_clear(image, x[:, 0, :, :h, :w], score,
                                         None if cloud is None or self.mask_adds else cloud[..., :h, :w])
            sources = None
            if self.source_dates:
                reference = self.model.reference_cloud_weight(x, taken, cloud)
                sources = self._to_host(_dominant_dates(date_clouds, order, reference)[:, :h, :w].contiguous(),
                                        "sources")
            return Prediction(self._to_host(image, "image"), self._to_host(score, "score"),
                              None if spread is None else self._to_host(spread, "spread"), sources)

    def _to_device(self, array: np.ndarray):
        import torch

        if self.staging is None:
            return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        return self.staging.to_device(array)

    def _to_host(self, tensor, key: str) -> np.ndarray:
        if self.staging is None:
            return tensor.cpu().numpy()
        return self.staging.to_host(tensor, key)

    def _tta(self, x, cloud=None, prior=None, date_clouds=None):
        """Mean over the 8 flips / rotations (Welford's update: exact for identical outputs), the
        per-pixel standard deviation averaged over bands as a root mean square. The user's cloud masks and
        the wide-view prior turn with the tile."""
        mean = m2 = score = None
        count = 0
        turn = lambda t, k, flip: None if t is None else _dihedral(t, k, flip)  # noqa: E731
        for k in range(4):
            for flip in (False, True):
                image_t, score_t = self._forward(_dihedral(x, k, flip), turn(cloud, k, flip),
                                                 turn(date_clouds, k, flip), turn(prior, k, flip))
                image_t, score_t = _undo_dihedral(image_t, k, flip), _undo_dihedral(score_t, k, flip)
                count += 1
                if mean is None:
                    mean, m2, score = image_t.clone(), image_t.new_zeros(image_t.shape), score_t
                    continue
                delta = image_t - mean
                mean += delta / count
                m2 += delta * (image_t - mean)
                score = score + score_t
        spread = (m2 / count).clamp_min(0).mean(dim=1).sqrt()
        return mean, score / count, spread

    def _date_clouds(self, x):
        """Every date's cloud weight ``(n, L, 1, H, W)`` (the model's own score of each date)."""
        import torch

        with torch.autocast(device_type=self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            return self.model.date_cloud_weights(x).float()

    def _choose_dates(self, x, date_clouds):
        """A stack longer than the model takes: per tile, the reference and the dates that see most of
        what it cannot (``choose_context_dates``), counted in ``date_use``. Returns the tiles' stacks and
        the chosen positions ``(n, num_frames)``, the reference first."""
        import torch

        from .model.fill import choose_context_dates

        n, frames = x.shape[:2]
        days = None if self.date_days is None else torch.from_numpy(self.date_days)
        picks = choose_context_dates(date_clouds, self.model.num_frames - 1, days)
        if self.date_use is None or len(self.date_use) != frames:
            self.date_use = np.zeros(frames, dtype=np.int64)
        self.date_use[0] += n
        np.add.at(self.date_use, picks.cpu().numpy().ravel(), 1)
        order = torch.cat([picks.new_zeros(n, 1), picks], dim=1)
        return x[torch.arange(n, device=x.device)[:, None], order], order

    def _cloud_tensor(self, cloud_np, size):
        """The user's cloud masks ``(n, k, H, W)`` padded like the tiles (None without a mask)."""
        import torch
        import torch.nn.functional as F

        if cloud_np is None:
            return None
        cloud = torch.from_numpy(np.ascontiguousarray(cloud_np)).to(self.device).float()
        pad_h, pad_w = size[0] - cloud.shape[-2], size[1] - cloud.shape[-1]
        return F.pad(cloud, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else cloud

    def _prior_tensor(self, prior_np, size):
        """Each tile's wide-view prior ``(n, C, H, W)`` padded like the tiles (None without one)."""
        import torch
        import torch.nn.functional as F

        if prior_np is None:
            return None
        prior = torch.from_numpy(np.ascontiguousarray(prior_np)).to(self.device).float()
        pad_h, pad_w = size[0] - prior.shape[-2], size[1] - prior.shape[-1]
        return F.pad(prior, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else prior

    def _keep_clear(self, image, reference, score, cloud):
        """Model output where cloudy (a replacing mask ``(n, 1, h, w)``, else the score above the gate), the
        input where clear, with a feathered seam."""
        import torch
        import torch.nn.functional as F

        if cloud is None:
            cloud = (score > self.cloud_threshold).float()[:, None]
        size = 2 * FEATHER_RADIUS + 1
        grown = F.max_pool2d(cloud, size, stride=1, padding=FEATHER_RADIUS)
        padded = F.pad(grown, (FEATHER_RADIUS,) * 4, mode="replicate")
        alpha = F.avg_pool2d(padded, size, stride=1)
        alpha = torch.maximum(alpha, cloud)
        if reference.shape[1] != image.shape[1]:
            return image
        return alpha * image + (1 - alpha) * reference


def _dominant_dates(date_clouds, order=None, reference=None):
    """Per pixel, the date that contributes most to a stack's completion, as ``1 + position`` in the stack
    (uint16, ``(n, H, W)``); 0 where the dates together cover less than half (the spatial fill).

    The shares of the temporal prior (``ViserCR._completion``): the reference by its clear weight, the
    context dates (``order[:, 1:]``, default all) by how clear each is, within the reference's cloud.
    ``reference`` ``(n, 1, H, W)``: the reference's cloud weight as the fill base takes it (a user's mask,
    the haze test: ``ViserCR.reference_cloud_weight``) instead of its own score."""
    import torch

    n, frames = date_clouds.shape[:2]
    if order is None:
        order = torch.arange(frames, device=date_clouds.device).expand(n, frames)
    cloud = date_clouds[torch.arange(n, device=date_clouds.device)[:, None], order][:, :, 0]  # (n, k, H, W)
    if reference is not None:
        cloud = torch.cat([reference.to(cloud.dtype), cloud[:, 1:]], dim=1)
    clears = 1.0 - cloud[:, 1:]
    shares = clears / clears.sum(dim=1, keepdim=True).clamp_min(1.0)
    weights = torch.cat([1.0 - cloud[:, :1], cloud[:, :1] * shares], dim=1)
    best = weights.argmax(dim=1)
    dates = order.gather(1, best.flatten(1)).view_as(best) + 1
    covered = weights.sum(dim=1) >= 0.5
    return torch.where(covered, dates, torch.zeros_like(dates)).to(torch.int32)


# -------------------------------------------------------------------------------------- accumulation


class _Block:
    """Accumulators for one block of output rows (only the products asked for)."""

    def __init__(self, channels: int, height: int, width: int, image: bool, score: bool, spread: bool,
                 sources: bool = False):
        self.image = raster.mapped_array((channels, height, width), np.float32) if image else None
        self.score = raster.mapped_array((height, width), np.float32) if score else None
        self.spread = raster.mapped_array((height, width), np.float32) if spread else None
        # a category, not blended: the value of the tile that weighs most at each pixel
        self.sources = raster.mapped_array((height, width), np.int32) if sources else None
        self.source_weight = raster.mapped_array((height, width), np.float32) if sources else None
        self.valid = raster.mapped_array((height, width), bool)


class _Writer:
    """Blocks of output rows of one panel: tiles are added with their weights (only their columns inside
    the panel), full blocks encoded and written. ``date_numbers``: the input number (1-based, the
    request's order) of each stack position, for the source-date raster."""

    def __init__(self, grid: TileGrid, panel: Panel, channels: int, encoding: _Encoding, outputs: _OutputFiles,
                 date_numbers=(), cloud_threshold: float = SCORE_THRESHOLD):
        self.grid = grid
        self.date_numbers = np.array([0, *date_numbers], dtype=np.int32)  # 0 stays 0: the spatial fill
        self.panel = panel
        self.channels = channels
        self.encoding = encoding
        self.outputs = outputs
        self.remaining = grid.tiles_per_block(panel)
        self.blocks: dict[int, _Block] = {}
        self.valid_pixels = 0
        self.cloud_threshold = cloud_threshold
        self.cloud_pixels = 0  # valid pixels whose blended score is above cloud_threshold (what the fill took)

    def _block(self, number: int) -> _Block:
        if number not in self.blocks:
            top, bottom = self.grid.block_rows(number)
            self.blocks[number] = self._new_block(bottom - top)
        return self.blocks[number]

    def _new_block(self, height: int) -> _Block:
        outputs = self.outputs
        # the score is blended whether or not it is written: the run reports the share it calls cloud
        return _Block(self.channels, height, self.panel.width, outputs.output is not None,
                      True, outputs.uncertainty is not None, outputs.source_dates is not None)

    def _columns(self, tile: Tile) -> tuple[slice, slice]:
        """The tile's columns inside the panel: (in the tile, in the panel's blocks)."""
        a, b = max(self.panel.x0, tile.x), min(self.panel.x1, tile.x + tile.width)
        return slice(a - tile.x, b - tile.x), slice(a - self.panel.x0, b - self.panel.x0)

    def add(self, tile: Tile, valid: np.ndarray, image=None, score=None, spread=None, sources=None) -> None:
        """Add one tile (image None = a tile with no valid pixel: it only counts as done)."""
        weight = self.grid.weight(tile) if image is not None else None
        tile_cols, cols = self._columns(tile)
        for number in self.grid.blocks_of(tile):
            top, bottom = self.grid.block_rows(number)
            a, b = max(top, tile.y), min(bottom, tile.y + tile.height)
            rows, block_rows = slice(a - tile.y, b - tile.y), slice(a - top, b - top)
            if image is not None:
                block = self._block(number)
                w = weight[rows, tile_cols]
                if block.image is not None:
                    block.image[:, block_rows, cols] += image[:, rows, tile_cols] * w
                if block.score is not None:
                    block.score[block_rows, cols] += score[rows, tile_cols] * w
                if block.spread is not None and spread is not None:
                    block.spread[block_rows, cols] += spread[rows, tile_cols] * w
                if block.sources is not None and sources is not None:
                    heavier = w > block.source_weight[block_rows, cols]
                    block.sources[block_rows, cols][heavier] = sources[rows, tile_cols][heavier]
                    np.maximum(block.source_weight[block_rows, cols], w, out=block.source_weight[block_rows, cols])
                block.valid[block_rows, cols] = valid[rows, tile_cols]
            self.remaining[number] -= 1
            if self.remaining[number] == 0:
                self._flush(number)

    def _flush(self, number: int) -> None:
        top, bottom = self.grid.block_rows(number)
        block = self.blocks.pop(number, None) or self._new_block(bottom - top)
        valid, left = block.valid, self.panel.x0
        self.valid_pixels += int(valid.sum())
        self.cloud_pixels += int(np.count_nonzero((block.score > self.cloud_threshold) & valid))
        invalid = ~valid
        outputs = self.outputs
        if outputs.output is not None:
            outputs.output.write(self.encoding.encode(block.image, valid), top, left)
            if self.encoding.write_mask:
                outputs.output.write_mask(valid.astype(np.uint8) * 255, top, left)
        if outputs.score is not None:
            score = np.clip(block.score, 0, 1, out=block.score)
            score[invalid] = np.nan
            outputs.score.write(score[None], top, left)
        if outputs.uncertainty is not None:
            spread = block.spread
            spread[invalid] = np.nan
            outputs.uncertainty.write(spread[None], top, left)
        if outputs.source_dates is not None:
            dates = self.date_numbers[block.sources]
            dates[invalid] = SOURCE_DATES_NODATA
            outputs.source_dates.write(dates[None].astype(np.uint16), top, left)


# ------------------------------------------------------------------------------------------- stream


class _Strips:
    """Input strips of one panel (one per tile row, raw values), read on first use and dropped when the
    row is done.

    Values stay in the file's data type until a tile is cut out of the strip, which halves the memory
    of 16-bit data; ``tile`` converts to reflectance.
    """

    def __init__(self, items: list[_Input], sources, masks, grid: TileGrid, panel: Panel):
        self.items = items
        self.sources = sources
        self.masks = masks  # the user's cloud masks: the reference's, or one per date (date order)
        self.grid = grid
        self.panel = panel
        self.left = {row: len(panel.cols) for row in range(len(grid.ys))}
        self.cache: dict[int, tuple] = {}
        self.cirrus_tiles = 0  # tiles whose reference date the cirrus correction changed

    def get(self, row: int):
        if row not in self.cache:
            self.cache[row] = self._read(row)
        return self.cache[row]

    def done(self, row: int) -> None:
        self.left[row] -= 1
        if self.left[row] == 0:
            if self.cache.pop(row, None) is not None:
                raster.release_free_memory()

    def _read(self, row: int):
        y, h = self.grid.ys[row], self.grid.tile_height
        x, w = self.panel.read_x0, self.panel.read_x1 - self.panel.read_x0
        dates = [source.read(item.read_indexes, y, h, x, w) for item, source in zip(self.items, self.sources, strict=True)]
        cloud = None
        if self.masks is not None:
            cloud = np.stack([mask.read(y, h, x, w) for mask in self.masks])
        return dates, cloud

    def tile(self, tile: Tile) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Reflectance ``(L, C, h, w)`` of a tile, the reference's validity and the user's cloud masks
        ``(k, h, w)`` (k = 1: the reference's; k = L: every date's)."""
        dates, cloud = self.get(tile.row)
        cols = slice(tile.x - self.panel.read_x0, tile.x - self.panel.read_x0 + tile.width)
        frames, corrected = _corrected_reflectance(self.items, [(raw[:, :, cols], valid[:, cols]) for raw, valid in dates])
        self.cirrus_tiles += int(corrected)
        return frames, dates[0][1][:, cols], None if cloud is None else cloud[:, :, cols]


def _corrected_reflectance(items: list[_Input], dates) -> tuple[np.ndarray, bool]:
    """``_reflectance`` of the model's bands of ``dates`` ``[(raw, valid), ...]`` (read with ``read_indexes``),
    each date with a cirrus band cleared of thin cirrus (``core.cirrus``); and whether the reference was."""
    frames = _reflectance(items, [(raw[: len(item.indexes)], valid) for item, (raw, valid) in zip(items, dates, strict=True)])
    corrected = []
    for position, (item, (raw, valid)) in enumerate(zip(items, dates, strict=True)):
        if item.cirrus is None:
            corrected.append(False)
            continue
        cirrus = _scaled(raw[len(item.indexes)], item.resolution)
        corrected.append(correct_cirrus(frames[position], cirrus, valid if position == 0 else None))
    return frames, corrected[0]


def _scaled(raw: np.ndarray, resolution: SensorResolution) -> np.ndarray:
    """Raw values as float32 reflectance: ``raw x scale + offset`` of the date's sensor resolution."""
    values = raw.astype(np.float32)
    values *= np.float32(resolution.scale)
    values += np.float32(resolution.offset)
    return values


def _reflectance(items: list[_Input], dates) -> np.ndarray:
    """Reflectance ``(L, C, h, w)`` of every date's raw values and validity ``[(raw, valid), ...]``.

    Invalid reference pixels become 0; invalid pixels of other dates take the reference's values.
    """
    frames = []
    for item, (raw, valid) in zip(items, dates, strict=True):
        values = _scaled(raw, item.resolution)
        if not frames:
            values[:, ~valid] = 0.0
        elif not valid.all():
            values = np.where(valid[None], values, frames[0])
        frames.append(values)
    return np.stack(frames)


@dataclass
class _Batch:
    """Tiles read for one model batch: every tile's validity, and the inputs of those with valid pixels."""

    tiles: list[Tile]
    valids: list[np.ndarray]
    active: list[Tile]
    inputs: np.ndarray | None
    clouds: np.ndarray | None
    priors: np.ndarray | None = None    # each active tile's wide-view prior (_Overview)


class _Overview:
    """A cloud-free estimate of the whole raster at coarse resolution: the model run once on the raster
    averaged down to one tile. Each tile takes its window of it, up-sampled, as the prior of its fill
    (``ViserCR.forward(prior=...)``), so a cloud larger than a tile is filled from the ground around it,
    not from the tile's own (cloudy) mean."""

    def __init__(self, image: np.ndarray, height: int, width: int):
        import torch

        self.image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]  # (1, C, h, w)
        self.height, self.width = height, width  # the full grid's size, which the overview covers

    def tile(self, tile: Tile) -> np.ndarray:
        """The overview bilinearly up-sampled over ``tile``'s pixels: ``(C, tile.height, tile.width)``."""
        import torch
        import torch.nn.functional as F

        rows = (torch.arange(tile.y, tile.y + tile.height, dtype=torch.float32) + 0.5) * (2.0 / self.height) - 1.0
        cols = (torch.arange(tile.x, tile.x + tile.width, dtype=torch.float32) + 0.5) * (2.0 / self.width) - 1.0
        grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1)[None]  # (1, h, w, (x, y))
        return F.grid_sample(self.image, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)[0].numpy()


def _overview(job: _Job, tiles: _TilePlan, predictor: Predictor, callbacks: _Callbacks) -> _Overview | None:
    """The wide-view prior of a raster larger than one tile of a fill model (None otherwise): every date and
    the user's mask averaged down so that the longer side is one tile, through the model once."""
    import torch

    from .model.fill import push_pull_fill

    grid = tiles.grid
    if (not job.request.wide_view or max(grid.width, grid.height) <= tiles.tile
            or not _is_fill_model(predictor.model)):
        return None
    factor = max(grid.width, grid.height) / tiles.tile
    height, width = max(1, round(grid.height / factor)), max(1, round(grid.width / factor))
    dates = [source.read_overview(item.read_indexes, height, width)
             for item, source in zip(job.inputs.dates, job.sources.dates, strict=True)]
    if not dates[0][1].any():
        return None
    frames, _ = _corrected_reflectance(job.inputs.dates, dates)
    # nodata of the reference: the ground around it, not zeros (which the model would take for dark ground)
    valid = torch.from_numpy(dates[0][1].astype(np.float32))[None, None]
    frames[0] = push_pull_fill(torch.from_numpy(frames[:1]), valid)[0].numpy()
    cloud = None
    if job.sources.masks is not None:
        cloud = np.stack([mask.read_overview(height, width) for mask in job.sources.masks])[None]
    date_use = None if predictor.date_use is None else predictor.date_use.copy()
    image = predictor.predict(frames[None], cloud).image[0]
    predictor.date_use = date_use  # the per-tile count of the dates a long stack used leaves this pass out
    callbacks.say(f"Large clouds: the fill also draws on a {width} x {height} overview of the whole raster "
                  f"({factor:.1f} times coarser), so a cloud larger than a tile is filled from the ground around it.")
    return _Overview(image, grid.height, grid.width)


class _Progress:
    def __init__(self, total: int, progress: ProgressFn):
        self.total, self.done, self.progress = total, 0, progress

    def advance(self, tiles: int) -> None:
        self.done = min(self.total, self.done + tiles)
        self.progress(self.done / self.total, f"{self.done}/{self.total} tiles")


def _read_batches(strips: _Strips, tiles: list[Tile], batch_tiles: int,
                  overview: _Overview | None = None) -> Iterator[_Batch]:
    for start in range(0, len(tiles), batch_tiles):
        batch = tiles[start:start + batch_tiles]
        inputs, valids, clouds, priors, active = [], [], [], [], []
        for tile in batch:
            values, valid, cloud = strips.tile(tile)
            strips.done(tile.row)  # the tile holds its own copy of the values
            valids.append(valid)
            if valid.any():
                active.append(tile)
                inputs.append(values)
                if cloud is not None:
                    clouds.append(cloud)
                if overview is not None:
                    priors.append(overview.tile(tile))
        yield _Batch(batch, valids, active, np.stack(inputs) if inputs else None,
                     np.stack(clouds) if clouds else None, np.stack(priors) if priors else None)


def _write_batch(writer: _Writer, batch: _Batch, results) -> None:
    position = 0
    for tile, valid in zip(batch.tiles, batch.valids, strict=True):
        if results is not None and position < len(batch.active) and batch.active[position] is tile:
            writer.add(tile, valid, *(r[position] if r is not None else None for r in results))
            position += 1
        else:
            writer.add(tile, valid)


def _gdal_env():
    """GDAL settings of a run, for the reader and writer threads (rasterio's environment is per thread)."""
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES, GDAL_TIFF_INTERNAL_MASK=True)


class _Reader:
    """Reads batches in its own thread, ``depth`` batches ahead of the model."""

    def __init__(self, batches: Iterator[_Batch], depth: int = 2):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(batches,), name="viser-cr-reader", daemon=True)
        self.thread.start()

    def _run(self, batches) -> None:
        try:
            with _gdal_env():
                for batch in batches:
                    if not self._put(("batch", batch)):
                        return
            self._put(("end", None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            self._put(("error", error))

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[_Batch]:
        while True:
            kind, value = self.queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


class _WriterThread:
    """Blends and writes batches in its own thread (``write(item)``), at most ``depth`` batches behind."""

    def __init__(self, write: Callable[[tuple], None], depth: int = 2):
        self.write = write
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="viser-cr-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with _gdal_env():
            while True:
                item = self.queue.get()
                if item is None or self.stop.is_set():
                    return
                try:
                    self.write(item)
                except BaseException as error:  # noqa: BLE001 - raised again in the model's thread
                    self.error = error
                    return

    def put(self, item) -> None:
        while True:
            self._raise()
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
        if not self.thread.is_alive():
            raise RuntimeError("the writer thread stopped unexpectedly")

    def finish(self) -> None:
        """Wait until every batch is written; raise the writer's error if it had one."""
        self.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop without writing what is still queued (after an error or a cancel)."""
        self.stop.set()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self.queue.get_nowait()  # unblock a full queue
            with contextlib.suppress(queue.Full):
                self.queue.put_nowait(None)
            self.thread.join(timeout=0.1)


def _stream(job: _Job, grid: TileGrid, predictor: Predictor, outputs: _OutputFiles, callbacks: _Callbacks,
            overlap_io: bool = False, overview: _Overview | None = None) -> tuple[int, int]:
    """Every tile through the model, panel by panel; returns the numbers of valid output pixels and of
    those the blended score calls cloud (above the run's threshold)."""
    dates, channels = job.inputs.dates, len(job.inputs.card.bands)
    panels = grid.panels(raster.PANEL)
    counter = _Progress(sum(len(panel.cols) * len(grid.ys) for panel in panels), callbacks.progress)
    valid_pixels = cloud_pixels = cirrus_tiles = 0
    for panel in panels:
        strips = _Strips(dates, job.sources.dates, job.sources.masks, grid, panel)
        writer = _Writer(grid, panel, channels, job.encoding, outputs, [date.number for date in dates],
                         predictor.cloud_threshold)
        batches = _read_batches(strips, grid.panel_tiles(panel), max(1, predictor.batch_size), overview)
        _stream_panel(batches, predictor, writer, counter, callbacks.check_cancel, overlap_io)
        valid_pixels += writer.valid_pixels
        cloud_pixels += writer.cloud_pixels
        cirrus_tiles += strips.cirrus_tiles
    if dates[0].cirrus is not None:
        callbacks.say(f"Thin cirrus: the cirrus band (B10, band {dates[0].cirrus}) corrected {cirrus_tiles} of "
                      f"{counter.total} tiles before the model (where thin-cirrus physics holds; "
                      "--no-cirrus-correction leaves the bands as they are).")
    return valid_pixels, cloud_pixels


def _stream_panel(batches: Iterator[_Batch], predictor: Predictor, writer: _Writer, counter: _Progress,
                  check_cancel: Callable[[], None], overlap_io: bool) -> None:
    """Read, predict, blend and write one panel's tiles; with ``overlap_io`` reading and writing run in
    their own threads so that the model never waits for GDAL (same tiles, same order, same output bytes)."""
    if not overlap_io:
        for batch in batches:
            check_cancel()
            results = predictor.predict(batch.inputs, batch.clouds, batch.priors) if batch.active else None
            _write_batch(writer, batch, results)
            counter.advance(len(batch.tiles))
        return
    reader = _Reader(batches)
    writing = _WriterThread(lambda item: _write_batch(writer, *item))
    try:
        for batch in reader:
            check_cancel()
            results = predictor.predict(batch.inputs, batch.clouds, batch.priors) if batch.active else None
            writing.put((batch, results))
            counter.advance(len(batch.tiles))
        writing.finish()
    finally:
        reader.close()
        writing.close()


# ------------------------------------------------------------------------------------------- outputs


@dataclass
class _OutputFiles:
    """The files of one attempt at the run (None: not asked for), and the set that commits them together
    or discards them all."""

    files: raster.OutputSet
    output: raster.OutputFile | None = None
    score: raster.OutputFile | None = None
    uncertainty: raster.OutputFile | None = None
    source_dates: raster.OutputFile | None = None


def _open_outputs(job: _Job, grid: raster.Grid, device) -> _OutputFiles:
    from rasterio.enums import ColorInterp

    request, paths, bands, encoding = job.request, job.paths, list(job.inputs.card.bands), job.encoding
    threads = "ALL_CPUS" if device.type != "cpu" else None  # the CPU is free when a GPU computes
    outputs = _OutputFiles(raster.OutputSet())
    # For a COG the creation options go to the COG driver; the intermediate GeoTIFF keeps the defaults.
    gtiff_options = None if request.cog else request.creation_options
    cog_options = request.creation_options if request.cog else None

    def add(path: Path, count: int, dtype: str, nodata, descriptions: list[str]) -> raster.OutputFile:
        profile = raster.output_profile(grid, count, dtype, nodata, gtiff_options, threads)
        return outputs.files.add(raster.OutputFile(path, profile, descriptions, job.tags, cog=request.cog,
                                                   cog_options=cog_options, failures=outputs.files.failures))

    try:
        if paths.output is not None:
            outputs.output = add(paths.output, len(bands), encoding.dtype, encoding.nodata, bands)
            interps = [getattr(ColorInterp, COLOUR_OF_BAND.get(b, "undefined")) for b in bands]
            if {"red", "green", "blue"} <= set(bands):
                outputs.output.set_colorinterp(interps)
            if encoding.band_scaling:
                outputs.output.set_scaling(encoding.scale, encoding.offset)
        if paths.score is not None:
            outputs.score = add(paths.score, 1, "float32", float("nan"), ["cloud score (0 clear, 1 cloud)"])
        if paths.uncertainty is not None:
            outputs.uncertainty = add(paths.uncertainty, 1, "float32", float("nan"),
                                      ["uncertainty (TTA standard deviation, reflectance)"])
        if paths.source_dates is not None:
            outputs.source_dates = add(paths.source_dates, 1, "uint16", SOURCE_DATES_NODATA,
                                       ["source date (input number; 0 = spatial fill, no date sees it)"])
    except BaseException:
        outputs.files.discard()
        raise
    return outputs


# -------------------------------------------------------------------------------------------- public


class _Callbacks:
    """The caller's progress and cancel callbacks, and the run's messages (kept, and logged)."""

    def __init__(self, progress, is_cancelled):
        self._progress = progress
        self._is_cancelled = is_cancelled
        self.messages: list[str] = []

    def progress(self, fraction: float, message: str) -> None:
        if self._progress is not None:
            self._progress(float(fraction), message)

    def say(self, message: str) -> None:
        self.messages.append(message)
        _LOG.info(message)

    def check_cancel(self) -> None:
        if self._is_cancelled is not None and self._is_cancelled():
            raise Cancelled("cancelled by the user: nothing was written.")


@dataclass(frozen=True)
class _Sources:
    """Where the pixels come from: every date aligned onto the output grid (the reference's, or the
    window of it the bounds cover), and the cloud mask too when one is given."""

    grid: raster.Grid
    dates: list[raster.AlignedSource]
    masks: list[_CloudMask] | None      # the reference's cloud mask, or one per date (date order)


def _align_sources(request: CloudRemovalRequest, inputs: _Inputs, stack: contextlib.ExitStack,
                   callbacks: _Callbacks, classifier: str | None = None) -> _Sources:
    dates = inputs.dates
    grid = raster.reference_grid(inputs.reference.dataset, request.bounds)
    sources, notes = raster.open_sources([d.dataset for d in dates], [d.label for d in dates], 0, grid,
                                         request.resampling)
    for source in sources:
        stack.callback(source.close)
    for note in notes:
        callbacks.say(note)
    masks = [_L1CCloudMask(sources[0], inputs.reference, classifier)] if classifier else \
        _mask_sources(request, grid, stack, inputs)
    return _Sources(grid, sources, masks)


def _mask_sources(request: CloudRemovalRequest, grid, stack: contextlib.ExitStack, inputs: _Inputs):
    """The user's cloud masks on the output grid: the reference's alone, or one per date in the dates'
    order (the reference first), or None."""
    if request.cloud_masks:
        paths = [request.cloud_masks[date.number - 1] for date in inputs.dates]
    elif request.cloud_mask is not None:
        paths = [request.cloud_mask]
    else:
        return None
    return [_mask_source(request, path, grid, stack, inputs.reference.dataset) for path in paths]


def _mask_source(request: CloudRemovalRequest, path, grid, stack: contextlib.ExitStack, reference):
    dataset = stack.enter_context(raster.open_raster(path, "cloud mask"))
    direct = (dataset.crs == reference.crs and dataset.transform == reference.transform
              and (dataset.width, dataset.height) == (reference.width, reference.height))
    if not direct and (dataset.crs is None or reference.crs is None):
        raise InputError("the cloud mask has no CRS (or the reference has none) and a different grid: "
                         "give a mask on the reference raster's grid.")
    if not direct:
        raster.check_overlap(dataset, grid, "the cloud mask")
    source = raster.AlignedSource(dataset, grid, resampling="nearest", direct=direct)
    stack.callback(source.close)
    mask = _CloudMask(source, mask_codes.encoding(request.cloud_mask_type), int(request.cloud_mask_buffer))
    mask.check(dataset.dtypes[0])
    return mask


# a cloud source that adds an L1C classifier's mask: the classifier it takes (core.s2cloudless.CLASSIFIERS)
_CLASSIFIER_OF = {"l1c-classifier": "viser-l1c-cloud", "s2cloudless": "s2cloudless"}


def _uses_cloud_classifier(request: CloudRemovalRequest, reference: _Input, callbacks: _Callbacks) -> str | None:
    """The L1C cloud classifier whose mask of the reference a run adds to the model's score (None: none), said in
    the log. Not for a run that writes the cloud score alone (the model's score, then)."""
    if request.output is None:
        return None
    classifier = _cloud_classifier(request, reference)
    if classifier is None:
        return None
    how = (f"probability above {s2cloudless.INFERENCE_THRESHOLD}, averaged over {s2cloudless.AVERAGE_OVER} px, grown "
           f"by {s2cloudless.DILATION} px")
    what = (f"s2cloudless's cloud mask ({how})" if classifier == "s2cloudless" else
            f"the bundled L1C cloud classifier's mask ({classifier}, distilled from s2cloudless; {how})")
    callbacks.say(f"Cloud source: {what} is added to the model's cloud score: the fill takes both (--cloud-source "
                  "model takes the score alone).")
    return classifier


def _is_l1c(reference: _Input) -> bool:
    """13-band Sentinel-2 L1C: every band the L1C cloud classifiers take."""
    resolution = reference.resolution
    return resolution.sensor == "s2-l1c" and all(band in resolution.band_names for band in s2cloudless.MODEL_BANDS)


def _cloud_classifier(request: CloudRemovalRequest, reference: _Input) -> str | None:
    """The L1C cloud classifier ``request.cloud_source`` takes: asked for by name, it must apply (13-band
    Sentinel-2 L1C; s2cloudless must be installed); auto takes the bundled one where the raster is L1C and the user
    gave no cloud mask of their own; None: the score alone."""
    if request.cloud_source == "model" or request.cloud_mask is not None or request.cloud_masks:
        return None
    explicit = request.cloud_source in _CLASSIFIER_OF
    if not _is_l1c(reference):
        if explicit:
            resolution = reference.resolution
            missing = [band for band in s2cloudless.MODEL_BANDS if band not in resolution.band_names]
            lacks = f"lacks the bands {', '.join(missing)}" if missing else f"is read as {resolution.sensor}"
            raise InputError(f"--cloud-source {request.cloud_source} takes 13-band Sentinel-2 L1C, but "
                             f"{reference.label} {lacks}: give the L1C raster with all its bands (B1..B12 with B8A), "
                             "or drop --cloud-source.")
        return None
    if request.cloud_source == "s2cloudless" and not s2cloudless.available():
        raise DependencyError(f"--cloud-source s2cloudless needs the s2cloudless and lightgbm packages. "
                              f"{s2cloudless.HOW_TO_GET} (--cloud-source auto takes the bundled classifier distilled "
                              "from it, which needs neither)")
    return _CLASSIFIER_OF.get(request.cloud_source, "viser-l1c-cloud")


@dataclass(frozen=True)
class _L1CCloudMask:
    """An L1C cloud classifier's mask of the reference (``classifier``: one of ``s2cloudless.CLASSIFIERS``), read
    like a user's mask, window by window: each window ``s2cloudless.MARGIN`` pixels wider, so that a cloud averages
    and grows across tiles as in one piece."""

    source: raster.AlignedSource
    reference: _Input
    classifier: str

    @property
    def indexes(self) -> list[int]:
        return [self.reference.resolution.band_names[band] for band in s2cloudless.MODEL_BANDS]

    def read(self, y: int, h: int, x: int, w: int) -> np.ndarray:
        grid, margin, step = self.source.grid, s2cloudless.MARGIN, s2cloudless.STEP
        top, left = max(0, y - margin) // step * step, max(0, x - margin) // step * step  # the raster's cells
        bottom, right = min(grid.height, y + h + margin), min(grid.width, x + w + margin)
        raw, valid = self.source.read(self.indexes, top, bottom - top, left, right - left)
        cloud = s2cloudless.window_cloud(_scaled(raw, self.reference.resolution), s2cloudless.MODEL_BANDS, valid,
                                         self.classifier)
        return cloud[y - top: y - top + h, x - left: x - left + w]

    def read_overview(self, height: int, width: int) -> np.ndarray:
        """``(height, width)`` cloud cells: the classifier on the cells' average reflectance, thresholded (a cell
        is wider than the averaging disk)."""
        raw, valid = self.source.read_overview(self.indexes, height, width)
        probability = s2cloudless.cloud_probability(_scaled(raw, self.reference.resolution), s2cloudless.MODEL_BANDS,
                                                    classifier=self.classifier)
        return (probability > s2cloudless.INFERENCE_THRESHOLD) & valid


@dataclass(frozen=True)
class _CloudMask:
    """A user's cloud mask on the output grid, read as cloud (True) or clear through its encoding."""

    source: raster.AlignedSource
    encoding: mask_codes.MaskEncoding
    buffer: int = 0                     # pixels the clouds grow by
    CHECK_SIDE = 512  # the values checked before a run: a sample of the whole mask this many pixels wide

    def read(self, y: int, h: int, x: int, w: int) -> np.ndarray:
        """Cloud (or no data) in the window; a buffer reads that much more around it, so that clouds just
        outside the window grow into it as they would in one piece."""
        grid, b = self.source.grid, self.buffer
        if not b:
            raw, valid = self.source.read([1], y, h, x, w)
            return self.encoding.cloud(raw[0]) | ~valid
        top, left = max(0, y - b), max(0, x - b)
        bottom, right = min(grid.height, y + h + b), min(grid.width, x + w + b)
        raw, valid = self.source.read([1], top, bottom - top, left, right - left)
        cloud = mask_codes.buffer_clouds(self.encoding.cloud(raw[0]), b) | ~valid
        return cloud[y - top: y - top + h, x - left: x - left + w]

    def read_overview(self, height: int, width: int) -> np.ndarray:
        """``(height, width)`` cloud cells. A plain mask: a cell with any cloud is cloud. Coded values
        cannot be averaged, so a coded mask gives each cell its most frequent value."""
        resampling = "mode" if self.encoding.coded else "average"
        raw, valid = self.source.read_overview([1], height, width, resampling)
        cells = round(self.buffer * height / self.source.grid.height)
        return mask_codes.buffer_clouds(self.encoding.cloud(raw[0]), cells) | ~valid

    def check(self, dtype: str) -> None:
        """Refuse a mask that cannot be in the encoding's form, before any tile runs."""
        what = f"the cloud mask {Path(self.source.dataset.name).name}"
        if self.encoding.coded and not np.issubdtype(np.dtype(dtype), np.integer):
            raise InputError(f"{what} is {dtype}, but a {self.encoding.title} layer is an integer band: give that "
                             "band itself, or read the mask as --cloud-mask-type nonzero.")
        grid = self.source.grid
        scale = max(1.0, max(grid.width, grid.height) / self.CHECK_SIDE)
        raw, valid = self.source.read_overview([1], max(1, round(grid.height / scale)),
                                               max(1, round(grid.width / scale)), "nearest")
        if self.encoding.coded:
            self.encoding.check_values(raw[0][valid], what)
        else:  # a product band given without its type would fill the whole image
            mask_codes.check_nonzero(raw[0][valid], what)


@dataclass(frozen=True)
class _Job:
    """What a run reads and writes, settled before the model is loaded."""

    request: CloudRemovalRequest
    paths: _OutputPaths
    inputs: _Inputs
    sources: _Sources
    encoding: _Encoding
    tags: dict[str, str]                # metadata of every output


def _output_tags(request: CloudRemovalRequest, inputs: _Inputs) -> dict[str, str]:
    reference = inputs.reference
    return {"VISER_CR_MODEL": inputs.card.name, "VISER_CR_SENSOR": reference.resolution.sensor,
            "VISER_CR_INPUT_BANDS": ",".join(map(str, reference.indexes)),
            "VISER_CR_SCALING": formula(reference.resolution.scale, reference.resolution.offset),
            **(request.tags or {})}


def remove_clouds(request: CloudRemovalRequest, progress: ProgressFn | None = None,
                  is_cancelled: Callable[[], bool] | None = None) -> CloudRemovalResult:
    """Cloud-free raster (and optional score / uncertainty rasters) from one raster or a stack. What the
    run detects, chooses and does is logged (``core.messages``) and kept in the result's ``messages``."""
    import rasterio

    started = time.perf_counter()
    callbacks = _Callbacks(progress, is_cancelled)
    _validate_request(request)
    paths = _output_paths(request)
    device = resolve_device(request.device)
    check_threads(request.threads)
    callbacks.check_cancel()
    with contextlib.ExitStack() as stack, torch_threads(request.threads), \
            rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES, GDAL_TIFF_INTERNAL_MASK=True):
        inputs = _resolve_inputs(request, stack)
        reference = inputs.reference
        callbacks.say(f"{reference.label}: {reference.resolution.reason}")
        if inputs.date_choice:
            callbacks.say(inputs.date_choice)
        classifier = _uses_cloud_classifier(request, reference, callbacks)
        sources = _align_sources(request, inputs, stack, callbacks, classifier)
        tiles = _tiling(request, inputs.card, sources.grid)
        job = _Job(request, paths, inputs, sources, _encoding(request, reference), _output_tags(request, inputs))
        predictor = _predictor(request, inputs, device, callbacks, classifier is not None)
        tiles = _write_with_retries(job, tiles, predictor, callbacks)
    result = CloudRemovalResult(
        output=paths.output, score_output=paths.score, uncertainty_output=paths.uncertainty,
        source_dates_output=paths.source_dates,
        device=str(predictor.device), model=str(inputs.card.name), sensor=reference.resolution.sensor,
        sensor_reason=reference.resolution.reason, bands=list(reference.indexes), tiles=len(tiles.tiles),
        seconds=time.perf_counter() - started, messages=callbacks.messages, precision=predictor.precision,
        batch_size=predictor.batch_size,
    )
    callbacks.progress(1.0, "done")
    return result


def _predictor(request: CloudRemovalRequest, inputs: _Inputs, device, callbacks: _Callbacks,
               with_classifier: bool = False) -> Predictor:
    """The model, loaded on the device, behind a Predictor with the request's options (an L1C cloud classifier's
    mask, where it is the cloud source, adds to the model's clouds)."""
    from .weights import load_model

    model, card = load_model(inputs.card, device=str(device))
    callbacks.say(f"Model {card.name} on {describe_device(device)}.")
    _use_shadow_test(model, request.cloud_shadows, callbacks)
    threshold = _use_radiometry(model, inputs.reference.resolution.radiometry, callbacks, request.cloud_threshold)
    predictor = Predictor(model, device, request.batch_size,
                          tta=bool(request.tta or request.uncertainty_output is not None),
                          keep_clear=request.keep_clear, say=callbacks.say, precision=request.precision,
                          source_dates=request.source_dates_output is not None,
                          date_days=inputs.days,
                          cloud_threshold=threshold, mask_adds=request.cloud_mask_mode == "add" or with_classifier)
    if request.precision != "fp32" and device.type != "cuda":
        callbacks.say(f"Precision {request.precision} applies to CUDA GPUs: running float32 on the CPU.")
    return predictor


def _use_shadow_test(model, wanted: bool, callbacks: _Callbacks) -> None:
    """A model with the shadow test fills the shadows of the clouds it finds, unless the request says not to."""
    if not getattr(model, "shadow_test", False):
        return
    model.shadow_test = bool(wanted)
    if wanted:
        callbacks.say("Cloud shadows: shadows cast in one direction by the clouds the score finds, on ground darker "
                      "than the rest, count as cloud and are filled too (--no-cloud-shadows leaves them).")


def _is_fill_model(model) -> bool:
    """A fill model (``residual_base="fill"``): its fill takes the pixels whose score passes its gate, and it
    takes a user's cloud mask, the dates' cloud weights and a wide-view prior."""
    return getattr(model, "residual_base", "input") == "fill"


def own_cloud_threshold(model, display: bool) -> float:
    """The score above which ``model`` fills a pixel of this radiometry: its fill gate (8-bit display imagery:
    the display gate where it has one). Keep-clear keeps the input below it, so that what is kept is exactly
    what the fill left. A model without a fill gate: ``SCORE_THRESHOLD``."""
    if not _is_fill_model(model):
        return SCORE_THRESHOLD
    display_threshold = getattr(model, "display_fill_threshold", None)
    return display_threshold if display and display_threshold is not None else model.fill_threshold


def _use_radiometry(model, radiometry: str, callbacks: _Callbacks, cloud_threshold: float | None = None) -> float:
    """Give the model the reference's radiometry: 8-bit display imagery gets the card's stricter cloud
    gate where it has one (stretched bright ground looks like cloud to the score) and, where the card says
    so, the saturation test (a pixel saturated in R, G and B is cloud). ``cloud_threshold``, the user's,
    replaces the gate of both radiometries. Returns the score above which this run fills a pixel (and below
    which keep-clear keeps the input)."""
    display = radiometry == "display"
    if hasattr(model, "use_radiometry"):
        model.use_radiometry(display)
    fills = _is_fill_model(model)
    display_threshold = getattr(model, "display_fill_threshold", None)
    default = own_cloud_threshold(model, display)
    if cloud_threshold is not None:
        cloud_threshold = float(cloud_threshold)
        if fills:
            model.use_fill_threshold(cloud_threshold)
            callbacks.say(f"Cloud threshold {cloud_threshold:g} (yours; this model's for this imagery: {default:g}): "
                          "the fill takes the pixels whose cloud score is above it.")
        else:
            callbacks.say(f"Cloud threshold {cloud_threshold:g} (yours): keep-clear takes the pixels whose cloud "
                          "score is above it as cloud (this model fills no pixel by a threshold of its own).")
        return cloud_threshold
    if display and fills and display_threshold is not None:
        saturated = (" Pixels saturated in red, green and blue (254-255) count as cloud."
                     if getattr(model, "display_saturation", False) else "")
        dark = (f" Where a tile's clear ground is dark (the clouds set the stretch), cloud scores are raised so that "
                f"it takes what {model.fill_threshold:g} would." if getattr(model, "display_dark_ground", None) else "")
        black = (" Where it is black and a tile sees almost no ground, the fill falls back on dark ground, not "
                 "mid-grey." if getattr(model, "display_black_ground", None) else "")
        if getattr(model, "display_black_cloud", None):
            black += " On black ground, what is far brighter than the ground counts as cloud from a low score."
        callbacks.say(f"8-bit display imagery: the fill takes pixels of cloud score above {display_threshold:g} "
                      f"(reflectance input: {model.fill_threshold:g}), so bright clear ground is kept.{saturated}{dark}{black}")
    elif not display and fills and getattr(model, "reflectance_saturation", False):
        callbacks.say(f"Reflectance input: the fill takes pixels of cloud score above {model.fill_threshold:g}. White "
                      "pixels at a visible band's clipped level (a sensor saturated over thick cloud, as Landsat TM / "
                      "ETM+) count as cloud, as do saturated snow and salt flats.")
    return default


def _all_nodata(reference: _Input, request: CloudRemovalRequest) -> InputError:
    nodata = sorted({str(v) for v in reference.dataset.nodatavals if v is not None})
    where = " in the requested bounds" if request.bounds else ""
    told = f" (its nodata value is {', '.join(nodata)})" if nodata else ""
    return InputError(
        f"{reference.label} holds only nodata (or NaN / Inf) pixels{where}{told}: nothing to do. Check that it is the "
        f"raster you meant and that its nodata value is right (`viser-cr info {reference.path}` shows it)"
        + ("; or choose bounds that cover data." if request.bounds else ".")
    )


def _write_with_retries(job: _Job, tiles: _TilePlan, predictor: Predictor, callbacks: _Callbacks) -> _TilePlan:
    """Write the outputs; out of memory with one tile per batch: smaller tiles, then the CPU. Returns the
    tiles that did it."""
    import torch

    while True:
        try:
            _write(job, tiles, predictor, callbacks)
            return tiles
        except _NeedSmallerTiles:
            smaller = tiles.halved()
            if smaller is not None:
                tiles = smaller
                callbacks.say(f"Out of memory with one tile per batch: retrying with {tiles.tile}-pixel tiles.")
            elif predictor.device.type != "cpu":
                predictor.use_device(torch.device("cpu"), job.request.batch_size)
                callbacks.say("Out of memory on the GPU even with small tiles: retrying on the CPU.")
            else:
                raise ViserError("out of memory even with one small tile per batch on the CPU: close other "
                                 "programs or use a smaller model.") from None


def _write(job: _Job, tiles: _TilePlan, predictor: Predictor, callbacks: _Callbacks) -> None:
    """One attempt: every tile through the model into temporary files, committed at the end (discarded on
    any error)."""
    request, dates = job.request, job.inputs.dates
    device = predictor.device
    outputs = _open_outputs(job, tiles.grid, device)
    try:
        if request.batch_size is None:
            predictor.fit_batch_to_tiles(len(dates), len(job.inputs.card.bands), tiles.tile, len(tiles.tiles))
        overlap_io = device.type == "cuda" if request.overlap_io is None else bool(request.overlap_io)
        started = time.perf_counter()
        overview = _overview(job, tiles, predictor, callbacks)
        valid_pixels, cloud_pixels = _stream(job, tiles.tiles, predictor, outputs, callbacks, overlap_io, overview)
        if valid_pixels == 0:
            raise _all_nodata(job.inputs.reference, request)
        callbacks.check_cancel()
        if request.cog:
            callbacks.progress(1.0, "writing cloud-optimised GeoTIFF")
        outputs.files.commit()
    except BaseException:
        outputs.files.discard()
        raise
    callbacks.say(_throughput(len(tiles.tiles), tiles.grid, time.perf_counter() - started, predictor))
    if job.sources.masks is None or predictor.mask_adds:  # the score's clouds are filled (a mask may add more)
        callbacks.say(_cloud_share_line(cloud_pixels / valid_pixels, predictor.cloud_threshold,
                                        job.inputs.reference.resolution.radiometry == "display",
                                        getattr(predictor.model, "shadow_test", False),
                                        mask_added=job.sources.masks is not None))
    if predictor.date_use is not None:
        callbacks.say(_date_use_line(dates, predictor.date_use))


def plan(request: CloudRemovalRequest) -> dict:
    """What ``remove_clouds`` would take from ``request``, without loading a model or torch: the model,
    the reference date's sensor and band numbers, and the input bands left out of the result. Raises
    the ``InputError`` a run would raise for the inputs, the model choice or the bands."""
    with contextlib.ExitStack() as stack:
        inputs = _resolve_inputs(request, stack)
        reference, card = inputs.reference, inputs.card
        used = list(reference.indexes)
        return {
            "model": str(card.name),
            "model_bands": list(card.bands),
            "sensor": reference.resolution.sensor,
            "reason": reference.resolution.reason,
            "bands": used,
            "count": reference.facts.count,
            "dtype": reference.facts.dtype,
            "dropped": [index for index in range(1, reference.facts.count + 1) if index not in used],
            "dates": len(inputs.dates),
            "dates_taken": min(len(inputs.dates), card.dates_per_tile or len(inputs.dates)),
            "date_choice": inputs.date_choice,
            "cirrus_band": reference.cirrus,  # read to remove thin cirrus first (None: not read)
            "cloud_classifier": _cloud_classifier(request, reference),  # its cloud mask added to the score
        }


def _cloud_share_line(share: float, threshold: float, display: bool, shadows: bool = False,
                      mask_added: bool = False) -> str:
    """What the score called cloud (or, for a model with the shadow test, cloud shadow; ``mask_added``: with a
    cloud mask added to it), and on 8-bit display imagery (where stretched bright ground can score as cloud) how
    to move the threshold either way."""
    called = "cloud or cloud shadow" if shadows else "cloud"
    what = "the score with the added cloud mask calls" if mask_added else "the score calls"
    line = f"Clouds: {what} {100 * share:.1f} % of the valid pixels {called} (score above {threshold:g})."
    if display:
        moves = []
        if threshold < 0.9:
            moves.append(f"raise --cloud-threshold (e.g. {threshold + 0.1:.2g}) if ground was taken for cloud")
        if threshold > 0.2:
            moves.append(f"lower it (e.g. {threshold - 0.15:.2g}) if cloud was left")
        line += (" On 8-bit imagery bright clear ground (cities, sand, salt flats) can score as cloud: look at the "
                 "score (--score-out)" + (" and " + ", or ".join(moves) if moves else "") + ".")
    return line


def _throughput(tiles: int, grid, seconds: float, predictor: Predictor) -> str:
    seconds = max(seconds, 1e-9)
    return (f"{tiles} tiles in {seconds:.1f} s: {tiles / seconds:.2f} tiles/s, "
            f"{grid.width * grid.height / seconds / 1e6:.2f} Mpx/s on {describe_device(predictor.device)} "
            f"({predictor.precision}, {predictor.batch_size} tiles per batch).")


def describe_input(path: str | Path, sensor: str = "auto", bands: list[int] | None = None) -> dict:
    """What ``viser-cr info`` and the dock show: the raster, the detected sensor and bands, and why."""
    path = Path(path)
    with raster.open_raster(path) as dataset:
        facts = raster.band_facts(dataset, path)
        info = {
            "path": str(path),
            "driver": dataset.driver,
            "width": dataset.width,
            "height": dataset.height,
            "count": dataset.count,
            "dtype": facts.dtype,
            "crs": dataset.crs.to_string() if dataset.crs else None,
            "transform": list(dataset.transform)[:6],
            "bounds": list(dataset.bounds),
            "nodata": [None if v is None else float(v) for v in dataset.nodatavals],
            "descriptions": facts.descriptions,
            "colorinterp": facts.colorinterp,
        }
    try:
        resolution = resolve(facts, sensor=sensor, bands=bands)
    except InputError as error:
        info.update(sensor=None, scale=None, offset=None, bands={}, reason=str(error), error=str(error),
                    model=None)
        return info
    info.update(sensor=resolution.sensor, scale=resolution.scale, offset=resolution.offset,
                bands=dict(resolution.band_names), reason=resolution.reason, error=None,
                model=_suggested_model(offered_bands(resolution)))
    return info


def _suggested_model(names: list[str]) -> str | None:
    if len(names) < 3:
        return None
    try:
        from .weights import select_model

        return str(select_model(names, 1).name)
    except (ViserError, ImportError):
        return None
