"""Fixtures of the QGIS tests: Processing with the viser provider, tiny model files, qgis_process.

Real QGIS 3.22 (pytest-qgis 2.1.0, offscreen), the committed real crops under tests/fixtures and
the untrained tiny models that tests/conftest.py builds. Nothing here reads ../shared or the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
PROCESSING_PLUGINS = "/usr/share/qgis/python/plugins"
if PROCESSING_PLUGINS not in sys.path:
    sys.path.append(PROCESSING_PLUGINS)

REPO = Path(__file__).resolve().parents[2]
QGIS_PROCESS = "/usr/bin/qgis_process.bin"  # the Debian wrapper passes --noversioncheck, which 3.22 rejects
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    """A copy of tests/fixtures: QGIS writes statistics sidecars (.aux.xml) beside the layers it loads."""
    copy = tmp_path_factory.mktemp("fixtures")
    for source in (REPO / "tests" / "fixtures").glob("*.tif"):
        shutil.copy2(source, copy / source.name)
    return copy


@pytest.fixture(scope="session")
def viser_plugin(qgis_app, qgis_processing):
    """The plugin as qgis_process loads it: classFactory(None) + initProcessing()."""
    from viser_cr import classFactory

    plugin = classFactory(None)
    plugin.initProcessing()
    yield plugin
    plugin.unload()


@pytest.fixture()
def provider(viser_plugin):
    """The registered viser provider (function scope: the load/unload test replaces it)."""
    if viser_plugin.provider is None:
        viser_plugin.initProcessing()
    return viser_plugin.provider


@pytest.fixture(scope="session")
def tiny_rgbn(tiny_models_dir) -> str:
    """Card (.json) of the tiny untrained R, G, B, NIR model."""
    return str(tiny_models_dir / "tiny-rgbn.json")


@pytest.fixture(scope="session")
def tiny_rgb(tiny_models_dir) -> str:
    return str(tiny_models_dir / "tiny-rgb.json")


@pytest.fixture(scope="session")
def tiny_stack(tiny_models_dir) -> str:
    """The tiny 3-date R, G, B, NIR model, given by its weights file (card beside it)."""
    return str(tiny_models_dir / "tiny-rgbn-l3.safetensors")


# ------------------------------------------------------------------------------------- qgis_process
def venv_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


class QgisProcess:
    """Runs /usr/bin/qgis_process.bin in a temporary profile with the checkout linked as viser_cr."""

    def __init__(self, root: Path, pythonpath: str | None):
        self.root = root
        self.plugins = root / "plugins"
        self.plugins.mkdir(parents=True, exist_ok=True)
        link = self.plugins / "viser_cr"
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        self.profile = root / "profile"
        self.profile.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QGIS_CUSTOM_CONFIG_PATH")}
        env.update(
            QT_QPA_PLATFORM="offscreen",
            QGIS_CUSTOM_CONFIG_PATH=str(self.profile),
            QGIS_PLUGINPATH=str(self.plugins),
            XDG_RUNTIME_DIR=str(root),
        )
        if pythonpath:
            env["PYTHONPATH"] = pythonpath  # QGIS's Python must see torch (the venv)
        self.env = env

    def __call__(self, *args, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [QGIS_PROCESS, *map(str, args)], env=self.env, capture_output=True, text=True, timeout=timeout,
            cwd=self.root,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"qgis_process {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def run_json(self, algorithm: str, timeout: float = 180, check: bool = True, **params) -> tuple[dict, object]:
        args = ["--json", "run", algorithm, "--"]
        for key, value in params.items():
            for item in value if isinstance(value, (list, tuple)) else [value]:
                args.append(f"{key}={item}")
        proc = self(*args, timeout=timeout, check=check)
        text = proc.stdout[proc.stdout.find("{"):] if "{" in proc.stdout else ""
        return (json.loads(text) if text else {}), proc


def _enabled(qp: QgisProcess) -> QgisProcess:
    if not Path(QGIS_PROCESS).exists():
        pytest.skip("qgis_process.bin is not installed")
    qp("plugins", "enable", "viser_cr")
    return qp


@pytest.fixture(scope="session")
def qgis_process(tmp_path_factory) -> QgisProcess:
    """qgis_process with the plugin enabled and the venv (torch) on QGIS's Python path."""
    return _enabled(QgisProcess(tmp_path_factory.mktemp("qgis_process"), venv_site_packages()))


@pytest.fixture(scope="session")
def qgis_process_without_torch(tmp_path_factory) -> QgisProcess:
    """qgis_process with Debian's Python only: no torch, no safetensors."""
    return _enabled(QgisProcess(tmp_path_factory.mktemp("qgis_process_bare"), None))


@pytest.fixture()
def dock(qgis_iface, provider, qgis_new_project):
    """The VISER-CR dock on a fresh project, with no settings left by another test."""
    from qgis.core import QgsSettings
    from qgis_testlib import wait_for

    from viser_cr.viser_qgis.dock import ViserDockWidget

    QgsSettings().remove("viser_cr/dock")  # no band override left by another test
    widget = ViserDockWidget(qgis_iface)
    yield widget
    if widget.current is not None:
        widget.cancel()
        wait_for(lambda: widget.current is None)
    widget.shutdown()
    widget.deleteLater()
