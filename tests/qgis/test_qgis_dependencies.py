"""The dependency check, the pip command the dock runs, and the plugin without torch.

The pip install is tested offline: (1) tiny wheels built here (a fake ``torch`` that depends on
``numpy``, offered as numpy 1.99 and 2.1) prove the command installs into the target folder and that
the ``numpy<2`` constraint holds; (2) the real local torch CPU wheel is installed into a temporary
target (``--no-deps``: its dependencies are not on this offline machine) and imported from there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from qgis.core import QgsProcessingException
from qgis_testlib import make_wheel

from viser_cr.viser_qgis import deps

TORCH_WHEEL_DIR = Path("/opt/wheels")


def test_pip_command_construction(tmp_path):
    target = tmp_path / "profile" / "python"
    cmd = deps.pip_install_command(target=target, cpu_only=True, python="/usr/bin/python3")
    assert cmd[:4] == ["/usr/bin/python3", "-m", "pip", "install"]
    assert cmd[cmd.index("--target") + 1] == str(target)
    constraints = Path(cmd[cmd.index("-c") + 1])
    assert constraints.read_text().split() == ["numpy<2"]
    assert cmd[cmd.index("--index-url") + 1] == deps.CPU_INDEX_URL
    assert any(part.startswith("torch") for part in cmd) and any(part.startswith("safetensors") for part in cmd)
    assert "--no-index" not in cmd and "--no-deps" not in cmd
    offline = deps.pip_install_command(target=target, packages=["torch==2.13.0"], find_links="/opt/wheels",
                                       no_index=True, no_deps=True)
    assert "--index-url" not in offline and offline[-1] == "torch==2.13.0"
    assert offline[offline.index("--find-links") + 1] == "/opt/wheels"
    assert Path(offline[0]).exists() and Path(offline[0]).name.startswith("python")
    # The default target is the QGIS profile's python folder.
    assert deps.pip_install_command()[deps.pip_install_command().index("--target") + 1] == str(
        deps.profile_python_dir()
    )
    assert str(deps.profile_python_dir()).endswith("python")


def test_pip_install_tiny_wheels_with_numpy_constraint(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "torch", "99.0", requires=("numpy",))
    make_wheel(wheels, "numpy", "1.99.0")
    make_wheel(wheels, "numpy", "2.1.0")
    target = tmp_path / "target"
    cmd = deps.pip_install_command(target=target, packages=["torch==99.0"], find_links=wheels, no_index=True)
    lines: list[str] = []
    assert deps.run_pip(cmd, log=lines.append, timeout=120) == 0, "\n".join(lines)
    assert (target / "torch" / "__init__.py").exists()
    assert 'version__ = "1.99.0"' in (target / "numpy" / "__init__.py").read_text()  # numpy<2 held
    # Without the constraint pip would have taken numpy 2.1.0.
    assert any("Successfully installed" in line for line in lines)


@pytest.mark.slow
def test_pip_install_real_torch_wheel_offline(tmp_path):
    wheel = sorted(TORCH_WHEEL_DIR.glob("torch-*.whl"))
    if not wheel:
        pytest.skip("no local torch wheel in /opt/wheels")
    version = wheel[0].name.split("-")[1]
    target = tmp_path / "python"
    cmd = deps.pip_install_command(target=target, packages=[f"torch=={version}"], find_links=TORCH_WHEEL_DIR,
                                   no_index=True, no_deps=True)
    lines: list[str] = []
    assert deps.run_pip(cmd, log=lines.append, timeout=300) == 0, "\n".join(lines[-30:])
    assert (target / "torch" / "__init__.py").exists()
    # Import it from the target (its own dependencies come from the venv here).
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import torch; "
            "assert torch.__file__.startswith(sys.argv[1]), torch.__file__; print(torch.__version__)")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == version


def test_dependency_report():
    report = deps.check()
    names = [d.module for d in report.dependencies]
    assert names == ["torch", "safetensors", "numpy", "rasterio"]
    assert not report.missing
    assert report.torch_device == "CPU"  # no GPU on these machines
    rows = dict(report.as_rows())
    assert rows["torch"].startswith("2.") and rows["numpy"].startswith("1.") and rows["GDAL"]


def test_missing_torch_is_explained(monkeypatch, provider, fixtures_dir, tiny_rgbn, tmp_path):
    """With torch unimportable the provider is there and the algorithm says what to install, and how."""
    import processing

    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now raises ImportError
    report = deps.check()
    assert [d.module for d in report.missing] == ["torch"]
    out = tmp_path / "o.tif"
    with pytest.raises(QgsProcessingException) as info:
        processing.run("viser:removeclouds", {"INPUT": str(fixtures_dir / "s2l1c_cloudy_96.tif"),
                                              "MODEL_FILE": tiny_rgbn, "OUTPUT": str(out)})
    message = str(info.value)
    assert "torch" in message and "pip install" in message and "--target" in message
    assert "Install PyTorch" in message  # the dock's button
    assert str(deps.profile_python_dir()) in message
    assert not out.exists()


def test_plugin_loads_without_torch(tmp_path, fixtures_dir, tiny_rgbn):
    """A fresh QGIS where torch cannot be imported: the plugin, provider and algorithms load."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['safetensors'] = None\n"
        "sys.path.append('/usr/share/qgis/python/plugins')\n"
        "from qgis.core import QgsApplication, QgsProcessingException\n"
        "app = QgsApplication([], False); app.initQgis()\n"
        "from processing.core.Processing import Processing; Processing.initialize()\n"
        "import processing\n"
        "from viser_cr import classFactory\n"
        "plugin = classFactory(None); plugin.initProcessing()\n"
        "print('ALGS', sorted(a.id() for a in plugin.provider.algorithms()))\n"
        "try:\n"
        "    processing.run('viser:cloudscore', {'INPUT': sys.argv[1], 'MODEL_FILE': sys.argv[2], "
        "'OUTPUT': 'TEMPORARY_OUTPUT'})\n"
        "except QgsProcessingException as e:\n"
        "    print('MESSAGE', e)\n"
        "plugin.unload()\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code, str(fixtures_dir / "s2l1c_cloudy_96.tif"), tiny_rgbn],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ALGS ['viser:cloudscore', 'viser:evaluate', 'viser:removeclouds', 'viser:removecloudsstack']" in proc.stdout
    # Found by checkParameterValues, before the run: processing.run says "Unable to execute algorithm" first.
    assert "MESSAGE " in proc.stdout and "VISER-CR cannot run" in proc.stdout
    assert "torch" in proc.stdout and "safetensors" in proc.stdout
