"""Screenshot of real QGIS (the desktop application, under Xvfb) with the VISER-CR dock open.

    .venv/bin/python tests/qgis/screenshot.py docs/screenshot-dock.png     (make screenshot)

Starts /usr/bin/qgis in a throw-away profile with the checkout linked as the viser_cr plugin and
enabled, the venv on QGIS's Python path (torch), a real cloudy Sentinel-2 crop loaded and the
dock opened by data/screenshot_code.py, which grabs the main window and quits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CODE = HERE / "data" / "screenshot_code.py"
SIZE = (1400, 860)


def take(output: Path, layer: Path | None = None, model_file: str | None = None, timeout: float = 150,
         keep: bool = False, run: bool = False, code: Path = CODE, stack_masks: bool = False) -> dict:
    """Write the screenshot to ``output``; returns what the in-QGIS script reported.

    ``run``: press the dock's Run (with ``model_file``) and grab once the background task is done.
    ``code``: the script QGIS runs (default data/screenshot_code.py; data/toolbox_dialog_code.py runs
    the Processing Toolbox dialog instead). ``stack_masks``: the dock in stack mode with a cloud mask per date.
    """
    if shutil.which("xvfb-run") is None or not Path("/usr/bin/qgis").exists():
        raise RuntimeError("needs xvfb-run and /usr/bin/qgis (make apt)")
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="viser-screenshot-"))
    try:
        plugins = root / "plugins"
        plugins.mkdir()
        (plugins / "viser_cr").symlink_to(REPO, target_is_directory=True)
        profile = root / "profiles" / "viser"  # QGIS looks in <profiles-path>/profiles/<name>
        (profile / "QGIS").mkdir(parents=True)
        (profile / "QGIS" / "QGIS3.ini").write_text(
            "[PythonPlugins]\nviser_cr=true\n\n"
            "[qgis]\nshowTips322=false\ncheckVersion=false\nallowVersionCheck=false\n"
            "[core]\nNewsFeed\\httpsfeedqgisorg\\disabled=true\n",
            encoding="utf-8",
        )
        report = root / "report.txt"
        env = dict(os.environ)
        env.pop("QT_QPA_PLATFORM", None)  # a real X server (Xvfb) this time
        env.pop("QGIS_CUSTOM_CONFIG_PATH", None)
        env.update(
            QGIS_PLUGINPATH=str(plugins),
            PYTHONPATH=sysconfig.get_paths()["purelib"],
            VISER_SCREENSHOT=str(output),
            VISER_SCREENSHOT_REPORT=str(report),
            VISER_SCREENSHOT_LAYER=str(layer or REPO / "tests" / "fixtures" / "s2l1c_cloudy_96.tif"),
            VISER_SCREENSHOT_MODEL=model_file or "",
            VISER_SCREENSHOT_RUN="1" if run else "",
            VISER_SCREENSHOT_STACK_MASKS="1" if stack_masks else "",
            XDG_RUNTIME_DIR=str(root),
            HOME=str(root),
        )
        cmd = [
            "xvfb-run", "-a", "-s", f"-screen 0 {SIZE[0]}x{SIZE[1]}x24",
            "/usr/bin/qgis", "--profiles-path", str(root), "--profile", "viser",
            "--nologo", "--noversioncheck", "--code", str(code),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=root)
        if not output.exists():
            raise RuntimeError(f"QGIS wrote no screenshot (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                               f"{proc.stderr[-3000:]}")
        facts = {}
        if report.exists():
            for line in report.read_text(encoding="utf-8").splitlines():
                key, _, value = line.partition("=")
                facts[key] = value
        return facts
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    # screenshot.py [OUTPUT] [--stack-masks]
    arguments = [a for a in sys.argv[1:] if a != "--stack-masks"]
    target = Path(arguments[0] if arguments else REPO / "docs" / "screenshot-dock.png")
    print(take(target, stack_masks="--stack-masks" in sys.argv[1:]))
    print("wrote", target)
