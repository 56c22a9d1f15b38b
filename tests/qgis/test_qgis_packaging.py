"""make install / make package / the screenshot of real QGIS with the dock open."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from qgis_testlib import DATA, REPO

sys.path.insert(0, str(REPO / "viser_qgis" / "tools"))
import package_plugin


def test_make_install_links_the_checkout(tmp_path):
    proc = subprocess.run(["make", "-s", "install", f"QGIS_PROFILES={tmp_path}", "QGIS_PROFILE=p"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    link = tmp_path / "p" / "python" / "plugins" / "viser_cr"
    assert link.is_symlink() and link.resolve() == REPO.resolve()
    assert (link / "metadata.txt").exists()


def test_package_files_and_structure(tmp_path):
    files = {p.as_posix() for p in package_plugin.plugin_files()}
    assert {"__init__.py", "metadata.txt", "LICENSE", "viser_qgis/plugin.py", "core/pipeline.py",
            "resources/icons/viser.svg"} <= files
    assert not any(f.startswith(("tests/", "training/", "bench/", "viser_qgis/tools/", ".")) for f in files)
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    zip_path = package_plugin.build(tmp_path)
    assert zip_path.name == "viser_cr-" + package_plugin.read_metadata(REPO / "metadata.txt")["version"] + ".zip"
    assert package_plugin.check_structure(zip_path) == []
    with zipfile.ZipFile(zip_path) as archive:
        assert {n.split("/")[0] for n in archive.namelist()} == {"viser_cr"}


def test_package_checks_catch_problems(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("other/__init__.py", "")
        archive.writestr("viser_cr/metadata.txt", "[general]\nname=x\n")
        archive.writestr("viser_cr/__pycache__/x.cpython-311.pyc", "")
        archive.writestr("viser_cr/leak.py", 'PASSWORD = "hunter2"\nimport subprocess\n'
                                             'subprocess.call("ls " + PASSWORD, shell=True)\n')
        archive.writestr("viser_cr/card.json", '{"sha256": "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b"}\n')
    problems = package_plugin.check_structure(bad)
    assert any("one top folder" in p for p in problems)
    assert any("LICENSE" in p for p in problems)
    assert any("metadata.txt lacks" in p and "qgisMinimumVersion" in p for p in problems)
    assert any("byte code" in p for p in problems)
    found = package_plugin.scan(bad)
    assert any(p.startswith("bandit B602") for p in found), found  # shell=True
    assert any(p.startswith("bandit B105") for p in found), found  # hard-coded password
    assert any("detect-secrets" in p and "card.json" in p and "sha256:<hex>" in p for p in found), found


@pytest.mark.slow
def test_make_package_passes_the_upload_checks(tmp_path):
    """The real zip: structure, size and no bandit / detect-secrets finding (what make package runs)."""
    code = package_plugin.main(["--output", str(tmp_path)])
    assert code == 0
    zips = list(tmp_path.glob("viser_cr-*.zip"))
    assert len(zips) == 1 and zips[0].stat().st_size < 25 * 2**20


@pytest.mark.slow
def test_real_qgis_desktop_dock_runs(tmp_path, tiny_rgbn):
    """Real QGIS desktop under Xvfb: the plugin loads from a profile, the dock opens, Run finishes as a
    background task and adds the layer (what make screenshot shows, without the run)."""
    import screenshot

    out = tmp_path / "dock.png"
    facts = screenshot.take(out, model_file=tiny_rgbn, run=True)
    assert facts.get("plugin") == "True" and facts.get("dock_visible") == "True", facts
    assert facts.get("run_started") == "True" and facts.get("run_ok") == "True", facts
    assert facts.get("platform") == "desktop" and facts.get("layers") == "2", facts
    from qgis.PyQt.QtGui import QImage

    image = QImage(str(out))
    assert image.width() >= 1200 and image.height() >= 700
    committed = Path(REPO / "docs" / "screenshot-dock.png")
    assert committed.exists(), "run make screenshot and commit docs/screenshot-dock.png"


@pytest.mark.slow
def test_real_qgis_desktop_dock_in_stack_mode_with_a_mask_per_date(tmp_path):
    """Real QGIS desktop under Xvfb: the dock in stack mode with Keep clear pixels shows one cloud mask row per
    ticked date and passes the three masks (what make screenshot shows in docs/screenshot-stack-masks.png)."""
    import screenshot

    facts = screenshot.take(tmp_path / "stack.png", stack_masks=True)
    assert facts.get("plugin") == "True" and facts.get("dock_visible") == "True", facts
    assert facts.get("date_mask_rows") == "3" and facts.get("cloud_masks") == "3", facts
    assert (REPO / "docs" / "screenshot-stack-masks.png").exists(), "run make screenshot and commit it"


@pytest.mark.slow
def test_real_qgis_desktop_toolbox_dialog_loads_the_result(tmp_path, tiny_rgbn):
    """Real QGIS desktop under Xvfb: the Processing dialog of viser:removeclouds, Run pressed, adds the
    result to the project (named and styled) as "Open output file after running algorithm" asks."""
    import screenshot

    facts = screenshot.take(tmp_path / "toolbox.png", model_file=tiny_rgbn, code=DATA / "toolbox_dialog_code.py")
    assert facts.get("dialog") == "True" and facts.get("run_ok") == "True", facts
    assert facts.get("platform") == "desktop", facts
    assert facts.get("layers") == "cloudy|cloudy cloud-free", facts
    assert "true-colour" in facts.get("styled", ""), facts

