"""``viser-cr``: cloud removal from the command line (the same engine as the QGIS plugin).

    viser-cr remove-clouds INPUT [INPUT ...] -o OUTPUT [options]
    viser-cr cloud-score INPUT [INPUT ...] -o OUTPUT [options]
    viser-cr models [--models-dir DIR] [--json]
    viser-cr info INPUT [--sensor S] [--bands 4,3,2,8] [--json]
    viser-cr batch INPUT [INPUT ...] -o OUT_DIR [--stack-by KEY] [--scheduler ADDRESS] [--workers N] [options]

Errors are one line on stderr and the exit code says what kind of problem it was (2 input or usage,
3 weights, 4 device, 5 output, 6 missing dependency, 130 cancelled by Ctrl-C, 143 by SIGTERM, 129 by
SIGHUP); ``--debug`` adds the traceback. A cancelled run removes its temporary files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
import traceback
from pathlib import Path

from . import mask_codes, s2cloudless
from .errors import Cancelled, ViserError
from .messages import to_callback
from .sensors import SENSOR_CHOICES, parse_bands


class Terminated(BaseException):
    """SIGTERM or SIGHUP: unwinds the run like Ctrl-C (a BaseException, so no handler swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _termination_signals():
    """SIGTERM and SIGHUP raise Terminated while the command runs (main thread only)."""
    names = ("SIGTERM", "SIGHUP")
    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
        for name in names:
            number = getattr(signal, name, None)
            if number is not None:
                previous[number] = signal.signal(number, _terminate)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error: what was wrong, the valid values, where to look."""

    def error(self, message: str):
        self.exit(2, f"viser-cr: error: {message} (see {self.prog} --help).\n")


def _say(text: str) -> None:
    """A line on stderr; the terminal may be gone (SIGHUP)."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr)


@contextlib.contextmanager
def _messages(args, bar: ProgressBar):
    """The engine's messages on stderr, each on a line of its own below the progress bar; none with --quiet."""
    if args.quiet:
        yield
        return

    def show(text: str) -> None:
        bar.close()
        _say(text)

    with to_callback(show):
        yield


def _band_list(text: str) -> list[int]:
    try:
        bands = parse_bands(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not bands:
        raise argparse.ArgumentTypeError("give at least one band number")
    return bands


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _engine_options(parser: argparse.ArgumentParser, output_help: str = "output GeoTIFF (.tif)",
                    inputs_help: str = "raster file(s); several = a temporal stack (the first is the reference)"
                    ) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help=inputs_help)
    parser.add_argument("-o", "--output", required=True, help=output_help)
    parser.add_argument("--model", help="bundled model name, model card (.json) or .safetensors file")
    parser.add_argument("--models-dir", type=Path, help="folder of models (default: the bundled ones)")
    parser.add_argument("--sensor", default="auto", choices=SENSOR_CHOICES, help="sensor preset (default: auto)")
    parser.add_argument("--bands", type=_band_list,
                        help="1-based band numbers in the model's order, e.g. 4,3,2,8 for R,G,B,NIR")
    parser.add_argument("--scale", type=float, help="reflectance = DN x SCALE + OFFSET")
    parser.add_argument("--offset", type=float, help="e.g. -0.1 for Sentinel-2 baseline 04.00 or later")
    parser.add_argument("--tile", type=int, help="tile size in pixels (default: the model card's)")
    parser.add_argument("--overlap", type=int, help="tile overlap in pixels (default: the model card's)")
    parser.add_argument("--batch", type=int, help="tiles per batch (default: 4 on the CPU, from free memory on a GPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16", "auto"),
                        help="autocast on CUDA GPUs (auto: bf16 where supported); the CPU runs fp32")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--reference", type=int, default=1,
                        help="which INPUT (1-based) is the reference date and output grid (default: 1)")
    parser.add_argument("--resampling", default="bilinear", help="for aligning other dates (default: bilinear)")
    parser.add_argument("--cog", action="store_true", help="write a cloud-optimised GeoTIFF")


def add_cloud_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cloud-threshold", type=float, metavar="T",
                        help="fill the pixels whose cloud score is above T, between 0 and 1 (default: the model's, "
                             "0.6 on 8-bit imagery, 0.35 on reflectance): higher keeps more bright ground, lower "
                             "takes more thin cloud")
    parser.add_argument("--cloud-source", default="auto", choices=list(s2cloudless.CLOUD_SOURCES),
                        help="model: the network's cloud score alone; l1c-classifier: the mask of the bundled L1C "
                             "cloud classifier (distilled from s2cloudless) is added to it (13-band Sentinel-2 L1C); "
                             "s2cloudless: the s2cloudless package's mask instead (where it is installed); auto "
                             "(default): l1c-classifier where the raster is 13-band L1C and no --cloud-mask is given")
    parser.add_argument("--no-cirrus-correction", dest="cirrus_correction", action="store_false",
                        help="Sentinel-2 L1C with band 10: do not remove thin cirrus with the cirrus band first")
    parser.add_argument("--no-cloud-shadows", dest="cloud_shadows", action="store_false",
                        help="leave cloud shadows as they are (models with the shadow test fill them by default)")


def add_keep_clear_option(parser: argparse.ArgumentParser) -> None:
    """remove-clouds' and batch's --keep-clear / --no-keep-clear (on by default)."""
    parser.add_argument("--keep-clear", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the input where it is clear (score below the gate the fill used, or by the "
                             "cloud mask), the model's output where cloudy (default; --no-keep-clear lets the "
                             "model's correction change clear pixels too)")


def add_mask_value_options(parser: argparse.ArgumentParser) -> None:
    """How the user's cloud masks are read (remove-clouds' --cloud-mask, batch's --cloud-mask-pattern)."""
    parser.add_argument("--cloud-mask-type", default=mask_codes.DEFAULT_ENCODING, choices=list(mask_codes.ENCODINGS),
                        help="which values of the cloud masks are cloud: nonzero (default), landsat-qa-pixel "
                             "(Collection 2 QA_PIXEL: cloud, dilated cloud, cirrus, shadow bits), sentinel2-scl (L2A "
                             "SCL classes 3, 8, 9, 10), fmask (classes 2 and 4)")
    parser.add_argument("--cloud-mask-buffer", type=int, default=0, metavar="PX",
                        help="grow the masks' clouds by PX output pixels (0-100, default 0): 2-4 takes the thin rims "
                             "a tight mask (SCL, hand-drawn) leaves, which the fill would take brightness from")
    parser.add_argument("--cloud-mask-mode", default=mask_codes.MASK_MODES[0], choices=list(mask_codes.MASK_MODES),
                        help="replace (default): the masks alone say what is cloud; add: the masks' clouds are added "
                             "to those the model finds (each date's too)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="viser-cr", description="VISER-CR cloud removal for satellite rasters.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    remove = commands.add_parser("remove-clouds", help="fill clouds in a raster (or a stack of dates)")
    _engine_options(remove)
    add_keep_clear_option(remove)
    remove.add_argument("--cloud-mask", nargs="+", metavar="PATH",
                        help="raster marking clouds for keep-clear (non-zero = cloud, or see --cloud-mask-type); "
                             "for a stack, the reference's mask, or one per INPUT in the same order (each date's "
                             "mask then decides which of its pixels the fill may take)")
    add_mask_value_options(remove)
    add_cloud_options(remove)
    remove.add_argument("--score-out", help="also write the cloud score (float32, 0 clear .. 1 cloud)")
    remove.add_argument("--uncertainty-out", help="also write the per-pixel uncertainty (implies --tta)")
    remove.add_argument("--source-dates-out", help="stacks: also write, per pixel, the INPUT number (1-based) of the "
                                                   "date the fill took most from (0: no date sees it, spatial fill)")
    remove.add_argument("--tta", action="store_true", help="average 8 flips/rotations (8x slower)")
    remove.add_argument("--float32", action="store_true", help="write float32 reflectance, not the input's type")
    _common(remove)

    score = commands.add_parser("cloud-score", help="write the cloud score raster only")
    _engine_options(score)
    _common(score)

    models = commands.add_parser("models", help="list the bundled models and their cards")
    models.add_argument("--models-dir", type=Path, help="folder of models (default: the bundled ones)")
    models.add_argument("--json", action="store_true", help="print the cards as JSON")
    _common(models)

    info = commands.add_parser("info", help="describe a raster: sensor, scaling and bands detected, and why")
    info.add_argument("input", metavar="INPUT")
    info.add_argument("--sensor", default="auto", choices=SENSOR_CHOICES)
    info.add_argument("--bands", type=_band_list)
    info.add_argument("--json", action="store_true", help="print as JSON")
    _common(info)

    from .batch import add_arguments as add_batch_arguments  # no Dask import: that waits for the command

    batch = commands.add_parser("batch", help="remove clouds from many scenes on Dask (the batch extra)")
    _engine_options(batch, output_help="output folder: one <scene>.tif per scene, and manifest.json",
                    inputs_help="raster files, glob patterns or .txt files listing them; one scene each "
                                "(or stacks with --stack-by)")
    add_batch_arguments(batch)
    add_keep_clear_option(batch)
    add_cloud_options(batch)
    add_mask_value_options(batch)
    _common(batch)
    return parser


# ------------------------------------------------------------------------------------------ progress


class ProgressBar:
    """A one-line progress bar on a terminal (stderr); silent when stderr is not a terminal."""

    def __init__(self, stream=None, enabled: bool | None = None, width: int = 30):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self.drawn = False
        self.started = time.perf_counter()

    def __call__(self, fraction: float, message: str = "") -> None:
        if not self.enabled:
            return
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(round(self.width * fraction))
        elapsed = time.perf_counter() - self.started
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {100 * fraction:5.1f}% {message} ({elapsed:.0f} s)\033[K")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


# ------------------------------------------------------------------------------------------ commands


def _request(args, score_only: bool):
    from .pipeline import CloudRemovalRequest

    if not 1 <= args.reference <= len(args.inputs):
        from .errors import InputError

        raise InputError(f"--reference must be between 1 and {len(args.inputs)}, got {args.reference}.")
    common = dict(
        inputs=list(args.inputs), model=args.model, models_dir=args.models_dir, sensor=args.sensor,
        bands=args.bands, scale=args.scale, offset=args.offset, tile_size=args.tile, overlap=args.overlap,
        batch_size=args.batch, device=args.device, precision=args.precision, threads=args.threads, cog=args.cog,
        reference=args.reference - 1, resampling=args.resampling,
    )
    if score_only:
        return CloudRemovalRequest(output=None, score_output=args.output, **common)
    masks = list(args.cloud_mask or [])
    return CloudRemovalRequest(
        output=args.output, keep_clear=args.keep_clear,
        cloud_mask=masks[0] if len(masks) == 1 else None, cloud_masks=masks if len(masks) > 1 else None,
        cloud_mask_type=args.cloud_mask_type, cloud_mask_buffer=args.cloud_mask_buffer,
        cloud_mask_mode=args.cloud_mask_mode, score_output=args.score_out,
        cloud_source=args.cloud_source,
        cloud_threshold=args.cloud_threshold, cirrus_correction=args.cirrus_correction,
        cloud_shadows=args.cloud_shadows,
        uncertainty_output=args.uncertainty_out, source_dates_output=args.source_dates_out, tta=args.tta,
        output_dtype="float32" if args.float32 else "input", **common,
    )


def _run(args, score_only: bool) -> int:
    from .model.perf import tune_cpu_allocator
    from .pipeline import remove_clouds

    request = _request(args, score_only)
    # The CLI owns its process, so it can keep freed activation memory for the next tile (2-3x faster
    # on CPU); QGIS is a shared process and keeps glibc's defaults.
    tune_cpu_allocator()
    bar = ProgressBar(enabled=False if args.quiet else None)
    try:
        with _messages(args, bar):
            result = remove_clouds(request, progress=bar)
    finally:
        bar.close()
    if not args.quiet:
        written = [str(p) for p in (result.output, result.score_output, result.uncertainty_output,
                                    result.source_dates_output) if p]
        print(f"Wrote {', '.join(written)} (model {result.model} on {result.device}, "
              f"{result.tiles} tile(s), {result.seconds:.1f} s).")
    return 0


def _models(args) -> int:
    from .weights import list_models

    cards = list_models(args.models_dir)
    if args.json:
        print(json.dumps([card.to_dict() for card in cards], indent=2, default=str))
        return 0
    if not cards:
        print("No models found" + (f" in {args.models_dir}" if args.models_dir else "") + ".")
        return 0
    for card in cards:
        dates = "any number of dates" if card.dates_per_tile is None else f"{card.num_frames} date(s)"
        print(f"{card.name}: bands {','.join(card.bands)}, {dates}, tile {card.tile_size} overlap {card.overlap}")
        if card.description:
            print(f"    {card.description}")
        if card.metrics:
            print(f"    metrics: {json.dumps(card.metrics, default=str)}")
    return 0


def _info(args) -> int:
    from .pipeline import describe_input

    info = describe_input(args.input, sensor=args.sensor, bands=args.bands)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['path']}: {info['driver']}, {info['width']} x {info['height']}, {info['count']} band(s) "
          f"{info['dtype']}, CRS {info['crs'] or 'none'}")
    if any(info["descriptions"]):
        print("Band descriptions: " + ", ".join(f"{i}={d}" for i, d in enumerate(info["descriptions"], 1) if d))
    if info["error"]:
        print(f"Sensor: not detected. {info['error']}")
        return 0
    from .sensors import formula

    print(f"Sensor: {info['sensor']}, {formula(info['scale'], info['offset'])}")
    print("Bands: " + ", ".join(f"{name}={index}" for name, index in info["bands"].items()))
    print(f"Why: {info['reason']}")
    if info.get("model"):
        print(f"Default model: {info['model']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        with _termination_signals():
            return _command(args)
    except KeyboardInterrupt:
        _say("viser-cr: cancelled: nothing was written.")
        return Cancelled.exit_code
    except Terminated as stop:
        _say(f"viser-cr: cancelled by {stop}: nothing was written.")
        return 128 + stop.signum
    except ViserError as error:
        if args.debug:
            traceback.print_exc()
        _say(f"viser-cr: error: {error}")
        return error.exit_code
    except Exception as error:  # noqa: BLE001 - one clear line instead of a traceback
        if args.debug:
            traceback.print_exc()
        _say(f"viser-cr: internal error: {type(error).__name__}: {error} (run with --debug for details)")
        return 1


def _command(args) -> int:
    if args.command == "remove-clouds":
        return _run(args, score_only=False)
    if args.command == "cloud-score":
        return _run(args, score_only=True)
    if args.command == "models":
        return _models(args)
    if args.command == "batch":
        from .batch import command as batch_command

        bar = ProgressBar(enabled=False if args.quiet else None)
        with _messages(args, bar):
            return batch_command(args, lambda scene_args: _request(scene_args, score_only=False), bar)
    return _info(args)


if __name__ == "__main__":
    sys.exit(main())
