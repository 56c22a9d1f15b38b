"""Python dependencies of the engine as QGIS's Python sees them, and the pip install that adds them.

Nothing here imports torch at module import time. ``check()`` imports each dependency on demand (the
dock's dependency panel and every algorithm call it); ``pip_install_command()`` builds the pip call
that installs PyTorch into the QGIS profile's ``python`` folder with a ``numpy<2`` constraint, and
``run_pip()`` runs it (the dock runs it in a background task).
"""

from __future__ import annotations

import importlib
import os
import subprocess  # nosec B404
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# What the engine needs at run time (module name, pip requirement, why).
REQUIRED = (
    ("torch", "torch>=2.1", "runs the VISER-CR network"),
    ("safetensors", "safetensors>=0.4", "reads the model weights"),
    ("numpy", "numpy<2", "array maths (QGIS's GDAL needs numpy 1.x)"),
    ("rasterio", "rasterio", "reads and writes the rasters"),
)
# What the dock's "Install PyTorch" button installs (numpy and rasterio come with QGIS).
INSTALL_PACKAGES = ("torch>=2.1", "safetensors>=0.4")
CONSTRAINTS_FILE = Path(__file__).resolve().parent / "pip-constraints.txt"
CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"


@dataclass
class Dependency:
    module: str
    requirement: str
    purpose: str
    version: str | None = None
    error: str | None = None

    @property
    def found(self) -> bool:
        return self.version is not None


@dataclass
class Report:
    dependencies: list[Dependency] = field(default_factory=list)
    torch_device: str = ""  # "CPU" or "CUDA: <GPU name>" (empty when torch is missing)
    cuda_devices: list[tuple[str, str]] = field(default_factory=list)  # ("cuda:0", "NVIDIA ...")
    gdal_version: str = ""

    def dependency(self, module: str) -> Dependency:
        return next(dep for dep in self.dependencies if dep.module == module)

    @property
    def missing(self) -> list[Dependency]:
        return [d for d in self.dependencies if not d.found]

    def as_rows(self) -> list[tuple[str, str]]:
        rows = []
        for dep in self.dependencies:
            rows.append((dep.module, dep.version if dep.found else f"missing ({dep.purpose})"))
        if self.torch_device:
            rows.append(("compute", self.torch_device))
        if self.gdal_version:
            rows.append(("GDAL", self.gdal_version))
        return rows


def profile_python_dir() -> Path:
    """The ``python`` folder of the active QGIS profile (QGIS puts it on ``sys.path``)."""
    try:
        from qgis.core import QgsApplication

        base = QgsApplication.qgisSettingsDirPath()
    except Exception:  # noqa: BLE001 - outside QGIS (plain Python): fall back to the user folder
        base = ""
    if not base:
        base = str(Path.home() / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default")
    return Path(base) / "python"


def ensure_profile_python_on_path() -> Path:
    """Make packages installed into the profile's python folder importable (GUI and qgis_process)."""
    folder = profile_python_dir()
    if folder.is_dir() and str(folder) not in sys.path:
        sys.path.append(str(folder))
        importlib.invalidate_caches()
    return folder


def _module_version(name: str) -> str:
    module = importlib.import_module(name)
    return str(getattr(module, "__version__", "installed"))


def check(probe_devices: bool = True) -> Report:
    """Import each dependency and report its version, the compute device and GDAL."""
    ensure_profile_python_on_path()
    report = Report()
    for module, requirement, purpose in REQUIRED:
        dep = Dependency(module, requirement, purpose)
        try:
            dep.version = _module_version(module)
        except Exception as exc:  # noqa: BLE001 - a broken install must not break the plugin
            dep.error = f"{type(exc).__name__}: {exc}"
        report.dependencies.append(dep)
    numpy_dep = report.dependency("numpy")
    if numpy_dep.found and not numpy_dep.version.startswith(("0.", "1.")):
        numpy_dep.error = f"numpy {numpy_dep.version} is installed; QGIS's GDAL needs numpy<2"
    torch_dep = report.dependency("torch")
    if torch_dep.found and probe_devices:
        report.torch_device, report.cuda_devices = _torch_devices()
    try:
        from osgeo import gdal

        report.gdal_version = gdal.__version__
    except Exception:  # noqa: BLE001
        report.gdal_version = ""
    return report


def _torch_devices() -> tuple[str, list[tuple[str, str]]]:
    try:
        import torch

        if torch.cuda.is_available():
            devices = [(f"cuda:{i}", torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]
            return f"CUDA: {devices[0][1]}", devices
    except Exception as exc:  # noqa: BLE001 - a broken CUDA set-up still leaves the CPU
        return f"CPU (CUDA check failed: {exc})", []
    return "CPU", []


def missing_modules() -> list[Dependency]:
    """The required dependencies that cannot be imported (numpy>=2 counts as missing)."""
    report = check(probe_devices=False)
    bad = report.missing
    bad += [d for d in report.dependencies if d.found and d.error]
    return bad


def python_executable() -> str:
    """The interpreter of QGIS's own Python (pip must run with it, not with whatever is on PATH).

    Inside QGIS ``sys.executable`` is the QGIS binary or the first ``python3`` on PATH (e.g. a pyenv
    shim), so the interpreter is looked up in ``sys.exec_prefix`` first.
    """
    prefix = Path(sys.exec_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        prefix / "bin" / f"python{version}",
        prefix / "bin" / "python3",
        prefix / "python.exe",  # Windows (OSGeo4W, standalone installer)
        prefix / "python3.exe",
    ]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    exe = Path(sys.executable)
    if exe.name.lower().startswith("python") and exe.exists():
        return str(exe)
    return "python3"


def constraints_file() -> Path:
    """The pip constraints file (``numpy<2``); recreated in the temp folder if the plugin lacks it."""
    if CONSTRAINTS_FILE.exists():
        return CONSTRAINTS_FILE
    import tempfile

    fallback = Path(tempfile.gettempdir()) / "viser-cr-pip-constraints.txt"
    fallback.write_text("numpy<2\n", encoding="utf-8")
    return fallback


def pip_install_command(
    target: str | os.PathLike | None = None,
    packages: Sequence[str] = INSTALL_PACKAGES,
    cpu_only: bool = False,
    find_links: str | os.PathLike | None = None,
    no_index: bool = False,
    no_deps: bool = False,
    python: str | None = None,
) -> list[str]:
    """The pip command (an argument list, no shell) that installs ``packages`` into ``target``."""
    target = Path(target) if target is not None else profile_python_dir()
    cmd = [
        python or python_executable(),
        "-m",
        "pip",
        "install",
        "--upgrade",
        "--no-input",
        "--disable-pip-version-check",
        "--target",
        str(target),
        "-c",
        str(constraints_file()),
    ]
    if no_index:
        cmd.append("--no-index")
    if find_links:
        cmd += ["--find-links", str(find_links)]
    if cpu_only and not no_index:
        # The CPU build of torch is ~200 MB instead of several GB of CUDA libraries.
        cmd += ["--index-url", CPU_INDEX_URL, "--extra-index-url", "https://pypi.org/simple"]
    if no_deps:
        cmd.append("--no-deps")
    cmd += list(packages)
    return cmd


def install_hint() -> str:
    """A copy-pasteable command line that installs the missing packages."""
    cmd = pip_install_command(cpu_only=sys.platform.startswith("linux"))
    return " ".join(f'"{part}"' if (" " in part or "<" in part or ">" in part) else part for part in cmd)


def missing_message(missing: Sequence[Dependency]) -> str:
    from .i18n import tr

    names = ", ".join(f"{d.module} ({d.error or tr('not installed')})" for d in missing)
    return tr(
        "VISER-CR cannot run: a Python package it needs is missing or unusable in QGIS's Python: {names}. "
        "Install PyTorch from the VISER-CR panel (Raster > VISER-CR > Cloud removal panel > Dependencies > "
        "Install PyTorch), or run this command and restart QGIS:\n{command}"
    ).format(names=names, command=install_hint())


def pip_error_line(lines: Sequence[str]) -> str:
    """pip's own reason for a refusal, in one line: its first ``ERROR:`` line, with the requirements
    that conflict when pip lists them (a constraint file in the user's pip configuration, say); or ''."""
    stripped = [line.strip() for line in lines]
    errors = [i for i, line in enumerate(stripped) if line.startswith("ERROR:")]
    if not errors:
        return ""
    message = stripped[errors[0]]
    if "The conflict is caused by:" in stripped:
        causes = []
        for line in stripped[stripped.index("The conflict is caused by:") + 1:]:
            if not line:
                break
            causes.append(line)
        if causes:
            message += f" ({'; '.join(causes)})"
    return message


def run_pip(
    cmd: Sequence[str],
    log: Callable[[str], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    timeout: float | None = None,
) -> int:
    """Run a pip command, streaming its output lines to ``log``; returns pip's exit status.

    pip runs with the user's environment and pip configuration (an index mirror, a proxy or a
    constraint file the user set up is honoured); only the version check and user site are off.
    """
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    # fixed argument list built by pip_install_command
    with subprocess.Popen(  # nosec B603
        list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as proc:
        try:
            for line in proc.stdout:
                if log:
                    log(line.rstrip())
                if is_cancelled and is_cancelled():
                    proc.terminate()
                    break
            return proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            importlib.invalidate_caches()
