"""Build the plugin zip for plugins.qgis.org and check it the way the upload does.

    .venv/bin/python viser_qgis/tools/package_plugin.py [--output dist]        (make package)

The zip holds one top folder ``viser_cr`` with what QGIS needs at run time (the root
``__init__.py``, ``metadata.txt``, ``LICENSE``, ``README.md``, ``core/``, ``viser_qgis/`` without
this ``tools/`` folder, ``resources/``): files tracked by git or new and not ignored, never
``__pycache__`` or ``.pyc``; ``i18n/`` (the translation project and any .qm). Checks: one top folder, LICENSE and the required metadata fields,
no byte code, at most 25 MB, and no finding from ``bandit`` (every severity) or ``detect-secrets``
(default plugins) on the unpacked zip. Exit status 1 on any failure, with the findings printed.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import subprocess  # nosec B404
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = "viser_cr"
INCLUDE = ["__init__.py", "metadata.txt", "LICENSE", "README.md", "core", "viser_qgis", "resources", "i18n"]
EXCLUDE_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", "tools"}
EXCLUDE_SUFFIXES = {".pyc", ".pyo", ".tmp"}
REQUIRED_METADATA = ["name", "description", "version", "qgisMinimumVersion", "author", "email", "about",
                     "tracker", "repository"]
MAX_BYTES = 25 * 1024 * 1024


def plugin_files(root: Path = ROOT) -> list[Path]:
    """Relative paths of the files that go into the zip."""
    try:
        out = subprocess.run(  # nosec
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *INCLUDE],
            cwd=root, capture_output=True, check=True,
        ).stdout.decode()
        candidates = [Path(p) for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        candidates = []
        for entry in INCLUDE:
            path = root / entry
            candidates += [p.relative_to(root) for p in (path.rglob("*") if path.is_dir() else [path])]
    files = []
    for rel in sorted(set(candidates)):
        parts = rel.parts
        if parts[0] == "viser_qgis" and len(parts) > 1 and parts[1] == "tools":
            continue
        if any(part in EXCLUDE_DIRS for part in parts[:-1]) or rel.suffix in EXCLUDE_SUFFIXES:
            continue
        if (root / rel).is_file():
            files.append(rel)
    return files


def build(output_dir: Path, root: Path = ROOT) -> Path:
    metadata = read_metadata(root / "metadata.txt")
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{TOP}-{metadata.get('version', '0')}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel in plugin_files(root):
            archive.write(root / rel, f"{TOP}/{rel.as_posix()}")
    os.replace(tmp, target)
    return target


def read_metadata(path: Path) -> dict:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(path, encoding="utf-8")
    return dict(parser["general"]) if parser.has_section("general") else {}


def check_structure(zip_path: Path) -> list[str]:
    problems = []
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        tops = {name.split("/", 1)[0] for name in names}
        if tops != {TOP}:
            problems.append(f"the zip must hold one top folder {TOP!r}, it holds {sorted(tops)}")
        if f"{TOP}/LICENSE" not in names:
            problems.append("LICENSE is missing")
        if f"{TOP}/metadata.txt" not in names:
            problems.append("metadata.txt is missing")
        else:
            parser = configparser.ConfigParser(interpolation=None)
            parser.optionxform = str
            parser.read_string(archive.read(f"{TOP}/metadata.txt").decode("utf-8"))
            general = dict(parser["general"]) if parser.has_section("general") else {}
            missing = [key for key in REQUIRED_METADATA if not general.get(key)]
            if missing:
                problems.append(f"metadata.txt lacks {', '.join(missing)}")
        bad = [n for n in names if "__pycache__" in n.split("/") or n.endswith((".pyc", ".pyo"))]
        if bad:
            problems.append(f"byte code in the zip: {bad[:5]}")
    size = zip_path.stat().st_size
    if size > MAX_BYTES:
        problems.append(f"the zip is {size / 2**20:.1f} MB; plugins.qgis.org takes at most 25 MB")
    return problems


def _tool(name: str) -> list[str]:
    """Run a console tool of this interpreter's environment (bandit, detect-secrets)."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    found = shutil.which(name)
    if found:
        return [found]
    raise FileNotFoundError(
        f"{name} is not installed: .venv/bin/python -m pip install -c constraints.txt bandit detect-secrets"
    )


def scan(zip_path: Path) -> list[str]:
    """bandit and detect-secrets on the unpacked zip, as plugins.qgis.org does."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="viser-package-") as tmp:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(tmp)  # our own, freshly built zip
        folder = Path(tmp) / TOP
        # fixed argument list
        proc = subprocess.run(  # nosec B603
            [*_tool("bandit"), "-r", str(folder), "-f", "json", "-q"], capture_output=True, text=True,
        )
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            return [f"bandit did not run: {proc.stderr.strip()[-2000:]}"]
        for issue in report.get("results", []):
            where = Path(issue["filename"]).relative_to(folder)
            problems.append(f"bandit {issue['test_id']} ({issue['issue_severity']}): {where}:{issue['line_number']}: "
                            f"{issue['issue_text']}")
        for error in report.get("errors", []):
            problems.append(f"bandit could not scan {error.get('filename')}: {error.get('reason')}")
        # fixed argument list
        proc = subprocess.run(  # nosec B603
            [*_tool("detect-secrets"), "scan", "--all-files", "."], cwd=folder, capture_output=True, text=True,
        )
        try:
            secrets = json.loads(proc.stdout).get("results", {})
        except json.JSONDecodeError:
            return problems + [f"detect-secrets did not run: {proc.stderr.strip()[-2000:]}"]
        for filename, findings in secrets.items():
            for finding in findings:
                hint = ""
                if filename.endswith(".json") and finding["type"] == "Hex High Entropy String":
                    hint = (" (a bare hex checksum, e.g. a model card's sha256: the upload check flags it too; "
                            "store it as 'sha256:<hex>')")
                problems.append(f"detect-secrets {finding['type']}: {filename}:{finding['line_number']}{hint}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "dist", help="folder for the zip (default dist/)")
    parser.add_argument("--no-scan", action="store_true", help="skip bandit and detect-secrets")
    args = parser.parse_args(argv)
    zip_path = build(args.output)
    problems = check_structure(zip_path)
    if not args.no_scan:
        problems += scan(zip_path)
    size = zip_path.stat().st_size / 2**20
    if problems:
        print(f"{zip_path} ({size:.2f} MB) FAILS the upload checks:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{zip_path} ({size:.2f} MB): one top folder {TOP}, LICENSE, metadata complete, no byte code, "
          f"{'no bandit or detect-secrets finding' if not args.no_scan else 'scans skipped'}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
