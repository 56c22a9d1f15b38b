"""Many scenes on Dask distributed: ``viser-cr batch`` (needs the ``batch`` extra: dask, distributed).

Each scene (one raster, or a stack of dates grouped by a key such as the tile id) is one Dask task that
calls the one engine path, ``pipeline.remove_clouds``, with its own request; the task catches every
error of its scene, so one bad scene never stops the batch. The client:

1. expands the inputs (files, globs, text files listing them) and groups them into scenes;
2. skips a scene whose outputs already exist, are complete readable rasters and record the same
   request in their tags (``VISER_CR_REQUEST``), so a rerun resumes an interrupted batch;
3. submits the rest to a cluster: a local one by default (one worker per GPU, pinned with
   ``CUDA_VISIBLE_DEVICES``, or CPU workers sharing the cores), or an existing scheduler;
4. rewrites a JSON manifest after every scene and prints a summary table at the end.

Dask is imported only inside the functions that need it: this module is imported by the CLI, never
by the QGIS plugin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Cancelled, DependencyError, InputError, OutputError, ViserError

LIST_SUFFIXES = (".txt", ".lst", ".list")
STACK_KEYS = {
    # Sentinel-2 MGRS tile id (T31TBG) or Landsat WRS-2 path/row (224078) between separators
    "tile": r"(?<![0-9A-Za-z])(T\d{2}[A-Z]{3}|\d{6})(?![0-9A-Za-z])",
}
REQUEST_TAG = "VISER_CR_REQUEST"
REQUEST_HASH_TAG = "VISER_CR_REQUEST_SHA256"
# fields of a request that do not change the pixels written (or are the scene's own outputs)
UNRECORDED_FIELDS = ("output", "score_output", "uncertainty_output", "source_dates_output", "device", "batch_size",
                     "threads", "tags", "overlap_io")
PRODUCT_SUFFIXES = {"output": "", "score": "_score", "uncertainty": "_uncertainty", "source_dates": "_source_dates"}
STATUSES = ("done", "skipped", "failed", "cancelled")
EVENT_SECONDS = 1.0        # at most one progress event per scene and second
CANCEL_POLL_SECONDS = 1.0  # how often a worker asks whether the batch was cancelled
MANIFEST = "manifest.json"
_LOG = logging.getLogger(__name__)
INSTALL_HINT = "install the batch extra: pip install 'viser-cr[batch]' (dask and distributed)"


# ------------------------------------------------------------------------------------------- scenes


@dataclass
class Scene:
    """One output: a raster, or a stack of dates (reference first unless the request says otherwise)."""

    name: str
    inputs: list[Path]


@dataclass
class SceneResult:
    scene: str
    status: str                        # done | skipped | failed | cancelled
    seconds: float = 0.0
    model: str = ""
    device: str = ""
    message: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    tiles: int = 0


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files, glob patterns and text files listing them (one per line, ``#`` comments, paths relative
    to the list's folder), in order, without duplicates. A pattern that matches nothing is an error;
    a missing plain file is kept (its scene fails with a clear message, the others go on)."""
    paths: list[Path] = []
    for item in items:
        text = str(item)
        if glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise InputError(f"no file matches {text!r}: check the pattern (quote it so the shell "
                                 "passes it on).")
            paths.extend(Path(m) for m in matches)
        elif Path(text).suffix.lower() in LIST_SUFFIXES and Path(text).is_file():
            paths.extend(_read_list(Path(text)))
        else:
            paths.append(Path(text))
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    if not unique:
        raise InputError("no input scenes: give raster files, glob patterns or a .txt file listing them.")
    return unique


def _read_list(path: Path) -> list[Path]:
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.extend(expand_inputs([path.parent / line]) if not Path(line).is_absolute()
                           else expand_inputs([line]))
    if not entries:
        raise InputError(f"the list {path} names no raster: one path per line.")
    return entries


def stack_pattern(key: str) -> re.Pattern:
    """``tile`` (Sentinel-2 tile id or Landsat path/row) or a regular expression on the file name
    (its first group, else the whole match, is the key)."""
    try:
        return re.compile(STACK_KEYS.get(key, key))
    except re.error as error:
        raise InputError(f"--stack-by {key!r} is not a regular expression ({error}): give 'tile' or a "
                         r"pattern such as '(T\d{2}[A-Z]{3})'.") from None


def plan_scenes(paths: list[Path], stack_by: str | None = None) -> list[Scene]:
    """One scene per file, or (``stack_by``) one per key with its dates sorted by file name."""
    if stack_by is None:
        scenes = [Scene(p.stem, [p]) for p in paths]
    else:
        pattern = stack_pattern(stack_by)
        groups: dict[str, list[Path]] = {}
        for path in paths:
            match = pattern.search(path.name)
            if match is None:
                raise InputError(f"{path.name} has no {stack_by!r} key in its name: remove it from the "
                                 "inputs or give another --stack-by pattern.")
            groups.setdefault(match.group(1) if match.groups() else match.group(0), []).append(path)
        scenes = [Scene(key, sorted(group, key=lambda p: p.name)) for key, group in groups.items()]
    _check_unique_names(scenes)
    return scenes


def _check_unique_names(scenes: list[Scene]) -> None:
    seen: dict[str, Scene] = {}
    for scene in scenes:
        if scene.name in seen:
            raise InputError(f"two scenes would write {scene.name}.tif ({seen[scene.name].inputs[0]} and "
                             f"{scene.inputs[0]}): give inputs with distinct file names or use --stack-by.")
        seen[scene.name] = scene


def product_paths(out_dir: Path, name: str, score: bool = False, uncertainty: bool = False,
                  source_dates: bool = False) -> dict:
    """``<name>.tif`` and, when asked, ``<name>_score.tif`` / ``_uncertainty.tif`` / ``_source_dates.tif``."""
    wanted = {"output": True, "score": score, "uncertainty": uncertainty, "source_dates": source_dates}
    return {key: out_dir / f"{name}{suffix}.tif" if wanted[key] else None
            for key, suffix in PRODUCT_SUFFIXES.items()}


# ---------------------------------------------------------------------------------- request record


def _file_identity(path) -> dict:
    path = Path(path)
    try:
        stat = path.stat()
        return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    except OSError:
        return {"path": str(path.resolve()), "size": None, "mtime_ns": None}


def request_record(request) -> dict:
    """What determines a scene's pixels: the request less its outputs and compute settings, with the
    size and modification time of every input (a replaced input is processed again)."""
    record = {}
    for item in dataclasses.fields(request):
        if item.name in UNRECORDED_FIELDS:
            continue
        value = getattr(request, item.name)
        if item.name == "inputs":
            value = [_file_identity(p) for p in value]
        elif item.name == "cloud_mask" and value is not None:
            value = _file_identity(value)
        elif item.name == "cloud_masks" and value is not None:
            value = [_file_identity(p) for p in value]
        elif isinstance(value, Path):
            value = str(value.resolve())
        elif isinstance(value, tuple):
            value = list(value)
        record[item.name] = value
    record["products"] = sorted(key for key, value in (("score", request.score_output),
                                                        ("uncertainty", request.uncertainty_output),
                                                        ("source_dates", request.source_dates_output)) if value)
    return record


def request_tags(request) -> dict[str, str]:
    text = json.dumps(request_record(request), sort_keys=True, separators=(",", ":"), default=str)
    return {REQUEST_TAG: text, REQUEST_HASH_TAG: hashlib.sha256(text.encode()).hexdigest()}


def is_complete(path: Path | None, request_hash: str) -> bool:
    """The raster exists, records ``request_hash`` and its last block of every band reads (a truncated
    file fails there)."""
    if path is None or not Path(path).is_file():
        return False
    import rasterio

    from . import raster

    try:
        with raster.quiet_georeferencing(), rasterio.open(path) as dataset:
            if dataset.tags().get(REQUEST_HASH_TAG) != request_hash:
                return False
            block_height, block_width = dataset.block_shapes[0]
            last = dataset.block_window(1, -(-dataset.height // block_height) - 1,
                                        -(-dataset.width // block_width) - 1)
            dataset.read(window=last)
    except Exception:  # noqa: BLE001 - any failure to read means: process the scene again
        return False
    return True


def written_products(request_or_result) -> list[str]:
    """The paths of a scene's products (the cloud-free raster and those asked for)."""
    item = request_or_result
    return [str(p) for p in (item.output, item.score_output, item.uncertainty_output, item.source_dates_output)
            if p is not None]


def outputs_complete(request) -> bool:
    tag = (request.tags or {}).get(REQUEST_HASH_TAG)
    paths = written_products(request)
    return bool(tag) and all(is_complete(Path(p), tag) for p in paths)


# ----------------------------------------------------------------------------------------- workers


@dataclass
class WorkerPlan:
    """One local worker: its environment (GPU pinning, thread caps) and torch CPU threads."""

    name: str
    env: dict[str, str]
    threads: int
    gpu: str | None = None


def visible_gpus(environ: dict | None = None, count: int | None = None) -> list[str]:
    """The GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else 0..count-1."""
    environ = os.environ if environ is None else environ
    if count is None:
        count = _cuda_device_count()
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [part.strip() for part in listed.split(",") if part.strip() and part.strip() != "-1"][:count]
    return [str(i) for i in range(count)]


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_workers(workers: int | None, cores: int, gpus: list[str], device: str = "auto") -> list[WorkerPlan]:
    """Local workers, each running one scene at a time.

    GPUs (device auto or cuda): one worker per GPU (``--workers`` takes the first N), each sees only
    its GPU; ``cuda:N`` uses that GPU alone. CPU: ``workers`` processes (default: one per 2 cores, at
    least one) with the cores split between them, so torch threads never oversubscribe the machine.
    Several narrow workers beat one wide one on a CPU (per-core efficiency of the network falls with
    threads, and one scene's GDAL reading and writing overlap another's compute; bench/bench_batch.py),
    while each worker holds a model and a few tile rows in memory: two threads each is the default.
    """
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}.")
    cores = max(1, int(cores))
    text = (device or "auto").strip().lower()
    use_gpus = [] if text == "cpu" else list(gpus)
    match = re.fullmatch(r"cuda:(\d+)", text)
    if match and use_gpus:
        index = int(match.group(1))
        if index >= len(use_gpus):
            raise InputError(f"--device {device} asked for, but {len(use_gpus)} GPU(s) are visible.")
        use_gpus = [use_gpus[index]]
    if use_gpus:
        use_gpus = use_gpus[:workers] if workers else use_gpus
        threads = max(1, cores // len(use_gpus))
        return [WorkerPlan(f"gpu-{gpu}", _thread_env(threads, CUDA_VISIBLE_DEVICES=gpu), threads, gpu)
                for gpu in use_gpus]
    count = workers or max(1, cores // 2)
    threads = max(1, cores // count)
    return [WorkerPlan(f"cpu-{i}", _thread_env(threads, CUDA_VISIBLE_DEVICES=""), threads)
            for i in range(count)]


def _thread_env(threads: int, **extra: str) -> dict[str, str]:
    env = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env.update(extra)
    return env


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise DependencyError(f"viser-cr batch runs on Dask distributed, which is not installed: "
                              f"{INSTALL_HINT}.") from None
    return distributed


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, plans: list[WorkerPlan] | None = None,
                processes: bool = True, timeout: str = "20s") -> Iterator[object]:
    """A client of ``scheduler`` (``tcp://host:port``), or of a local cluster built from ``plans``.

    ``processes=False`` runs the workers as threads of this process (tests; no GPU pinning)."""
    distributed = _import_distributed()
    import logging

    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({error}): check the address "
                             "and that the scheduler is running.") from None
        with client:
            yield client
        return
    worker_cls = distributed.Nanny if processes else distributed.Worker
    memory = int(distributed.system.MEMORY_LIMIT // max(1, len(plans)))
    specs = {}
    for plan in plans:
        options = dict(host="127.0.0.1", nthreads=1, name=plan.name, memory_limit=memory,
                       silence_logs=logging.ERROR)
        if processes:
            options["env"] = plan.env
        specs[plan.name] = {"cls": worker_cls, "options": options}
    scheduler_spec = {"cls": distributed.Scheduler,
                      "options": dict(host="127.0.0.1", port=0, dashboard=False, dashboard_address=":0")}
    with distributed.SpecCluster(workers=specs, scheduler=scheduler_spec, silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


# ------------------------------------------------------------------------------------- the task


class _WorkerLink:
    """From inside a task: progress events to the client and the batch's cancel flag, both throttled.
    Outside a Dask worker (a direct call) both are silent."""

    def __init__(self, scene: str, topic: str | None, cancel_event: str | None):
        self.scene = scene
        self.topic = topic
        self.cancel_event = cancel_event
        self.worker = self._worker()
        self.last_event = 0.0
        self.last_poll = 0.0
        self.cancelled = False

    @staticmethod
    def _worker():
        try:
            from distributed import get_worker

            return get_worker()
        except (ImportError, ValueError):
            return None

    def progress(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if self.worker is None or self.topic is None or (now - self.last_event < EVENT_SECONDS and fraction < 1):
            return
        self.last_event = now
        self.worker.log_event(self.topic, {"scene": self.scene, "fraction": float(fraction)})

    def is_cancelled(self) -> bool:
        now = time.monotonic()
        if self.cancelled or self.worker is None or self.cancel_event is None \
                or now - self.last_poll < CANCEL_POLL_SECONDS:
            return self.cancelled
        self.last_poll = now
        from distributed import Event

        with contextlib.suppress(Exception):
            self.cancelled = Event(self.cancel_event).is_set()
        return self.cancelled


def process_scene(name: str, request, topic: str | None = None, cancel_event: str | None = None,
                  tune_allocator: bool = False) -> SceneResult:
    """Run one scene through ``remove_clouds``; every error becomes a failed result (never raised)."""
    from .pipeline import remove_clouds

    started = time.perf_counter()
    link = _WorkerLink(name, topic, cancel_event)
    base = dict(scene=name, inputs=[str(p) for p in request.inputs],
                model=str(request.model or "auto"), device=str(request.device))
    if tune_allocator:
        from .model.perf import tune_cpu_allocator

        tune_cpu_allocator()
    try:
        result = remove_clouds(request, progress=link.progress, is_cancelled=link.is_cancelled)
    except Cancelled:
        return SceneResult(status="cancelled", seconds=time.perf_counter() - started,
                           message="cancelled: nothing was written", **base)
    except ViserError as error:
        return SceneResult(status="failed", seconds=time.perf_counter() - started, message=str(error), **base)
    except Exception as error:  # noqa: BLE001 - one scene's bug must not stop the batch
        return SceneResult(status="failed", seconds=time.perf_counter() - started,
                           message=f"internal error: {type(error).__name__}: {error}", **base)
    outputs = written_products(result)
    return SceneResult(status="done", seconds=result.seconds, tiles=result.tiles, outputs=outputs,
                       message=f"{result.tiles} tiles, {result.tiles / max(result.seconds, 1e-9):.2f} tiles/s",
                       **{**base, "model": result.model, "device": result.device})


# ------------------------------------------------------------------------------------- the batch


@dataclass
class Job:
    scene: Scene
    request: object | None        # None: the request could not be built (``error`` says why)
    error: str = ""


@dataclass
class BatchReport:
    results: list[SceneResult]
    seconds: float
    workers: int
    manifest: Path | None

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return all(r.status in ("done", "skipped") for r in self.results)


def make_jobs(scenes: list[Scene], build_request: Callable[[Scene], object]) -> list[Job]:
    """A request per scene with its request tags; a scene whose request is invalid fails alone."""
    jobs = []
    for scene in scenes:
        try:
            request = build_request(scene)
        except ViserError as error:
            jobs.append(Job(scene, None, str(error)))
            continue
        request.tags = {**(request.tags or {}), **request_tags(request)}
        jobs.append(Job(scene, request))
    return jobs


class Manifest:
    """The JSON manifest, rewritten atomically after every scene (an interrupted batch leaves a
    readable one)."""

    def __init__(self, path: Path | None, info: dict):
        self.path = path
        self.info = info

    def write(self, results: Iterable[SceneResult], finished: bool = False) -> None:
        if self.path is None:
            return
        results = list(results)
        counts = {status: sum(1 for r in results if r.status == status) for status in STATUSES}
        data = {**self.info, "finished": finished, "counts": counts,
                "scenes": [dataclasses.asdict(r) for r in results]}
        temp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            temp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
            os.replace(temp, self.path)
        except OSError as error:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise OutputError(f"cannot write the manifest {self.path} ({error}): choose a writable "
                              "--manifest path.") from None


class _Progress:
    """Overall fraction: finished scenes plus the running scenes' own tile fractions."""

    def __init__(self, total: int, callback: Callable[[float, str], None] | None):
        self.total = max(1, total)
        self.callback = callback
        self.done: set[str] = set()
        self.running: dict[str, float] = {}
        self.lock = threading.Lock()

    @property
    def finished(self) -> int:
        return len(self.done)

    def scene_progress(self, scene: str, fraction: float) -> None:
        with self.lock:
            if scene in self.done:  # a late event: the result came first
                return
            self.running[scene] = fraction
        self._show()

    def scene_finished(self, scene: str) -> None:
        with self.lock:
            self.running.pop(scene, None)
            self.done.add(scene)
        self._show()

    def _show(self) -> None:
        if self.callback is None:
            return
        with self.lock:  # events arrive on Dask's thread, results on the caller's: one at a time
            fraction = (self.finished + sum(self.running.values())) / self.total
            running = len(self.running)
            self.callback(min(1.0, fraction), f"{self.finished}/{self.total} scenes"
                          + (f", {running} running" if running else ""))


def run_batch(jobs: list[Job], client, manifest: Manifest | None = None,
              progress: Callable[[float, str], None] | None = None, force: bool = False,
              tune_allocator: bool = False, on_result: Callable[[SceneResult], None] | None = None,
              cancel_wait: float = 60.0) -> BatchReport:
    """Process every job on ``client``'s cluster; already complete scenes are skipped (unless ``force``).

    Ctrl-C (KeyboardInterrupt) cancels: queued scenes are dropped, running ones stop at their next
    tile batch and leave nothing behind; the manifest records them as cancelled and the interrupt is
    raised again."""
    distributed = _import_distributed()
    started = time.perf_counter()
    manifest = manifest or Manifest(None, {})
    results: dict[str, SceneResult] = {}
    order = [job.scene.name for job in jobs]
    tracker = _Progress(len(jobs), progress)

    def record(result: SceneResult) -> None:
        results[result.scene] = result
        tracker.scene_finished(result.scene)
        manifest.write(results[name] for name in order if name in results)
        if on_result is not None:
            on_result(result)

    pending = []
    for job in jobs:
        if job.request is None:
            record(SceneResult(job.scene.name, "failed", message=job.error,
                               inputs=[str(p) for p in job.scene.inputs]))
        elif not force and outputs_complete(job.request):
            outputs = written_products(job.request)
            record(SceneResult(job.scene.name, "skipped", inputs=[str(p) for p in job.scene.inputs],
                               outputs=outputs, model=str(job.request.model or "auto"),
                               message="complete output with the same request already there"))
        else:
            pending.append(job)

    token = uuid.uuid4().hex[:12]
    topic, cancel_name = f"viser-cr-progress-{token}", f"viser-cr-cancel-{token}"
    client.subscribe_topic(topic, lambda event: _on_event(event, tracker))
    futures = {client.submit(process_scene, job.scene.name, job.request, topic, cancel_name, tune_allocator,
                             key=f"viser-cr-{job.scene.name}-{token}", pure=False): job for job in pending}
    try:
        for future in distributed.as_completed(list(futures), loop=client.loop):
            record(_collect(future, futures[future]))
    except KeyboardInterrupt:
        _cancel(client, futures, results, cancel_name, record, cancel_wait)
        manifest.write((results[name] for name in order if name in results), finished=False)
        raise
    finally:
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)
    final = [results[name] for name in order]
    manifest.write(final, finished=True)
    return BatchReport(final, time.perf_counter() - started, _worker_count(client), manifest.path)


def _on_event(event, tracker: _Progress) -> None:
    message = event[1] if isinstance(event, tuple) and len(event) == 2 else event
    if isinstance(message, dict) and "scene" in message:
        tracker.scene_progress(str(message["scene"]), float(message.get("fraction", 0.0)))


def _collect(future, job: Job) -> SceneResult:
    """The task's result, or a failed one when the task itself could not run (worker died, package
    missing on a remote worker)."""
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001 - the batch goes on
        text = f"{type(error).__name__}: {error}"
        if isinstance(error, ModuleNotFoundError | ImportError):
            text += f" ({INSTALL_HINT} on every worker)"
        return SceneResult(job.scene.name, "failed", message=f"the task did not run: {text}",
                           inputs=[str(p) for p in job.scene.inputs])


def _cancel(client, futures: dict, results: dict, cancel_name: str, record, wait: float) -> None:
    """Raise the batch's cancel flag and collect every unfinished scene: queued ones stop as soon as they
    start, running ones at their next tile batch (removing their temporary files); whatever has not
    answered within ``wait`` seconds is dropped."""
    distributed = _import_distributed()
    with contextlib.suppress(Exception):
        distributed.Event(cancel_name, client=client).set()
    deadline = time.monotonic() + wait
    for future, job in futures.items():
        if job.scene.name in results:
            continue
        with contextlib.suppress(Exception):
            future.result(timeout=max(0.1, deadline - time.monotonic()))
        if future.status == "finished":
            record(_collect(future, job))
            continue
        with contextlib.suppress(Exception):
            client.cancel([future])
        record(SceneResult(job.scene.name, "cancelled", message="cancelled: no answer from its worker",
                           inputs=[str(p) for p in job.scene.inputs]))


def _worker_count(client) -> int:
    with contextlib.suppress(Exception):
        return len(client.scheduler_info().get("workers", {}))
    return 0


# ------------------------------------------------------------------------------------------ report


def summary_table(results: list[SceneResult]) -> str:
    """A fixed-width table: scene, status, seconds, model, device, message."""
    header = ("scene", "status", "seconds", "model", "device", "message")
    rows = [(r.scene, r.status, f"{r.seconds:.1f}", r.model, r.device, r.message) for r in results]
    widths = [min(48, max(len(str(row[i])) for row in [header, *rows])) for i in range(len(header) - 1)]

    def line(row) -> str:
        cells = [str(cell)[:width].ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        return "  ".join([*cells, str(row[-1])]).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths] + ["-" * 7]), *map(line, rows)])


def summary_line(report: BatchReport) -> str:
    counts = ", ".join(f"{report.count(s)} {s}" for s in STATUSES if report.count(s))
    rate = report.count("done") / max(report.seconds, 1e-9) * 60
    return (f"{len(report.results)} scene(s) in {report.seconds:.1f} s on {report.workers} worker(s): {counts} "
            f"({rate:.2f} scenes/min)" + (f"; manifest {report.manifest}" if report.manifest else ""))


# --------------------------------------------------------------------------------------------- CLI


def add_arguments(parser) -> None:
    """The batch options (the model and tiling options come from the CLI's remove-clouds set)."""
    parser.add_argument("--stack-by", metavar="KEY",
                        help="group inputs into stacks of dates by a key in the file name: 'tile' "
                             "(Sentinel-2 tile id or Landsat path/row) or a regular expression")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="an existing Dask scheduler (tcp://host:8786); default: a local cluster")
    parser.add_argument("--workers", type=int,
                        help="local workers (default: one per GPU, or one per 2 CPU cores)")
    parser.add_argument("--manifest", type=Path, help=f"JSON manifest (default: OUT_DIR/{MANIFEST})")
    parser.add_argument("--force", action="store_true", help="process scenes again even if complete")
    parser.add_argument("--cloud-mask-pattern", metavar="PATTERN",
                        help="each input file's cloud mask for keep-clear: a path made from the file with {dir} "
                             "(its folder) and {stem} (its name without extension), e.g. '{dir}/{stem}_QA_PIXEL.TIF'; "
                             "every date of a stack gets its own; a scene whose mask is missing fails, the others go on")
    parser.add_argument("--score", action="store_true", help="also write <scene>_score.tif")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write <scene>_uncertainty.tif (implies --tta)")
    parser.add_argument("--source-dates", action="store_true",
                        help="stacks: also write <scene>_source_dates.tif (per pixel, the date the fill took most from)")
    parser.add_argument("--tta", action="store_true", help="average 8 flips/rotations (8x slower)")
    parser.add_argument("--float32", action="store_true", help="write float32 reflectance, not the input's type")


def command(args, make_request: Callable, progress_bar=None) -> int:
    """``viser-cr batch``: ``make_request(namespace)`` is the CLI's remove-clouds request builder,
    called per scene with that scene's inputs and outputs. Exit code 0 when every scene is done or
    skipped, 1 when some failed, 130 on Ctrl-C."""
    _import_distributed()
    if args.cloud_mask_pattern and not args.keep_clear:
        raise InputError("--cloud-mask-pattern gives each scene a cloud mask for keep-clear mode: drop "
                         "--no-keep-clear (or drop the pattern).")
    if args.cloud_mask_pattern:
        scene_mask(args.cloud_mask_pattern, Path("scene.tif"))  # a pattern that cannot be filled in stops here
    out_dir = Path(args.output).absolute()
    if out_dir.suffix.lower() in (".tif", ".tiff"):
        raise OutputError(f"-o is the output folder of a batch, not a file: got {out_dir}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    scenes = plan_scenes(expand_inputs(args.inputs), args.stack_by)
    jobs = make_jobs(scenes, lambda scene: make_request(_scene_args(args, scene, out_dir)))
    local = not args.scheduler
    plans = plan_workers(args.workers, os.cpu_count() or 1, visible_gpus() if local else [], args.device) \
        if local else None
    if local:
        _fit_requests_to_workers(jobs, plans, args.threads)
    manifest = Manifest(args.manifest or out_dir / MANIFEST, {
        "command": "viser-cr batch", "argv": sys.argv[1:], "output_dir": str(out_dir.resolve()),
        "scheduler": args.scheduler or "local", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    manifest.write([])  # an unwritable manifest path fails here, before any work
    if local:
        _LOG.info(f"Local Dask cluster: {len(plans)} worker(s), "
                  + ", ".join(f"{p.name} ({p.threads} thread{'s' * (p.threads > 1)})" for p in plans) + ".")
    bar = progress_bar

    def show(result: SceneResult) -> None:
        if result.status == "failed":
            if bar is not None:
                bar.close()
            print(f"viser-cr: {result.scene}: {result.message}", file=sys.stderr)

    try:
        with dask_client(args.scheduler, plans, processes=True) as client:
            report = run_batch(jobs, client, manifest, progress=bar, force=args.force,
                               tune_allocator=local, on_result=show)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(f"viser-cr: batch cancelled: finished scenes are kept, a rerun resumes; see {manifest.path}.",
              file=sys.stderr)
        return Cancelled.exit_code
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        print(summary_table(report.results))
        print(summary_line(report))
    if not report.ok:
        print(f"viser-cr: {report.count('failed') + report.count('cancelled')} of {len(report.results)} "
              f"scene(s) failed: see {manifest.path}.", file=sys.stderr)
    return 0 if report.ok else 1


def _fit_requests_to_workers(jobs: list[Job], plans: list[WorkerPlan], threads: int | None) -> None:
    """Local workers: a GPU worker sees only its own GPU (as cuda:0); a CPU worker uses its share of cores."""
    on_gpus = any(plan.gpu is not None for plan in plans)
    for job in jobs:
        if job.request is None:
            continue
        if on_gpus:
            job.request.device = "cuda"
        elif threads is None:
            job.request.threads = plans[0].threads


def _scene_args(args, scene: Scene, out_dir: Path):
    """The remove-clouds namespace of one scene: its inputs, its output paths and its cloud mask."""
    import argparse

    paths = product_paths(out_dir, scene.name, args.score, args.uncertainty, args.source_dates)
    masks = [scene_mask(args.cloud_mask_pattern, path) for path in scene.inputs] if args.cloud_mask_pattern else None
    return argparse.Namespace(**{**vars(args), "inputs": [str(p) for p in scene.inputs],
                                 "output": str(paths["output"]), "score_out": paths["score"],
                                 "uncertainty_out": paths["uncertainty"], "source_dates_out": paths["source_dates"],
                                 "cloud_mask": masks})


def scene_mask(pattern: str, path: Path) -> str:
    """The cloud mask of an input file from ``--cloud-mask-pattern`` ({dir}, {stem} of the file)."""
    try:
        return pattern.format(dir=path.parent, stem=path.stem)
    except (KeyError, IndexError, ValueError) as error:
        raise InputError(f"--cloud-mask-pattern {pattern!r} cannot be filled in ({error!r}): use {{dir}} and "
                         "{stem} only, e.g. '{dir}/{stem}_QA_PIXEL.TIF'.") from None
