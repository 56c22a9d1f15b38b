"""``make demo``: cloud removal of the bundled real cloudy sample through headless ``qgis_process``.

Runs ``/usr/bin/qgis_process.bin`` (the real QGIS client; the Debian wrapper passes
``--noversioncheck``, which QGIS 3.22 rejects) offscreen, in a temporary QGIS profile
(``QGIS_CUSTOM_CONFIG_PATH``) whose plugin folder (``QGIS_PLUGINPATH``) holds a ``viser_cr`` symlink
to this checkout, with the venv's site-packages (torch) on QGIS's ``PYTHONPATH``:

    qgis_process.bin plugins enable viser_cr
    qgis_process.bin --json run viser:removeclouds -- INPUT=<sample> OUTPUT=demo-output/<name>-cloudfree.tif
                                                     SCORE=demo-output/<name>-score.tif

(default bundled model: the sensor preset and ``select_model`` pick it), then writes
``demo-output/<name>-before-after.png`` (cloudy | output | cloud score) and prints where both are.

    python viser_qgis/tools/demo.py [--input TIF] [--output-dir demo-output] [--no-keep-clear]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess  # nosec B404 - runs the fixed qgis_process binary
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QGIS_PROCESS = "/usr/bin/qgis_process.bin"
SAMPLE = REPO / "resources" / "samples" / "s2-l1c-cloudy-ROIs1970_fall_85_p492.tif"


def qgis_env(root: Path) -> dict:
    plugins = root / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / "viser_cr").symlink_to(REPO, target_is_directory=True)
    profile = root / "profile"
    profile.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QGIS_CUSTOM_CONFIG_PATH")}
    env.update(
        QT_QPA_PLATFORM="offscreen",
        QGIS_CUSTOM_CONFIG_PATH=str(profile),
        QGIS_PLUGINPATH=str(plugins),
        XDG_RUNTIME_DIR=str(root),
        PYTHONPATH=sysconfig.get_paths()["purelib"],  # QGIS's Python must see torch (the venv)
    )
    return env


def run(args, env, cwd, timeout=900) -> subprocess.CompletedProcess:
    proc = subprocess.run([QGIS_PROCESS, *map(str, args)],  # nosec B603 - fixed binary and argument list
                          env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + "\n" + proc.stderr[-4000:] + "\n")
        raise SystemExit(f"demo: qgis_process {' '.join(map(str, args[:3]))} failed ({proc.returncode})")
    return proc


def display(rgb, lo=None, hi=None):
    """(3, H, W) reflectance -> (H, W, 3) in [0, 1] with a 2-98 % stretch (taken from ``lo``/``hi`` if given)."""
    import numpy as np

    if lo is None:
        lo, hi = np.percentile(rgb, 2), np.percentile(rgb, 98)
    return np.clip((np.moveaxis(rgb, 0, -1) - lo) / max(hi - lo, 1e-6), 0, 1), lo, hi


def before_after(cloudy_tif: Path, output_tif: Path, score_tif: Path, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio

    with rasterio.open(cloudy_tif) as src:
        count = src.count
        # 13-band Sentinel-2 L1C: R, G, B = B4, B3, B2; 3/4 bands: R, G, B first
        idx = [4, 3, 2] if count >= 12 else [1, 2, 3]
        scale = 1e-4 if src.dtypes[0] == "uint16" else (1 / 255 if src.dtypes[0] == "uint8" else 1.0)
        cloudy = src.read(idx).astype("float32") * scale
    with rasterio.open(output_tif) as src:
        names = [(d or "").lower() for d in src.descriptions]
        want = ["red", "green", "blue"]
        oidx = [names.index(n) + 1 for n in want] if all(n in names for n in want) else [1, 2, 3]
        out = src.read(oidx).astype("float32")
        if src.dtypes[0] == "uint16":
            out = out * 1e-4
        elif src.dtypes[0] == "uint8":
            out = out / 255
    with rasterio.open(score_tif) as src:
        score = src.read(1).astype("float32")
    # the same stretch for both images, from the output (the clouds would wash out the cloudy one)
    b_out, lo, hi = display(out)
    b_in, _, _ = display(cloudy, lo, hi)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, img, label in zip(axes, (b_in, b_out, score), ("cloudy input", "VISER-CR output", "cloud score"),
                              strict=True):
        if img.ndim == 2:
            im = ax.imshow(img, cmap="magma", vmin=0, vmax=1)
            fig.colorbar(im, ax=ax, fraction=0.046)
        else:
            ax.imshow(img)
        ax.set_title(label)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=str(SAMPLE))
    ap.add_argument("--output-dir", default=str(REPO / "demo-output"))
    ap.add_argument("--keep-clear", action=argparse.BooleanOptionalAction, default=True,
                    help="fill only the clouds (KEEP_CLEAR, the default; --no-keep-clear lets the model change clear pixels)")
    args = ap.parse_args(argv)
    if not Path(QGIS_PROCESS).exists():
        raise SystemExit(f"demo: {QGIS_PROCESS} not found: run make setup (it installs QGIS)")
    src = Path(args.input).resolve()
    if not src.is_file():
        raise SystemExit(f"demo: input {src} not found")
    out_dir = Path(args.output_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = src.stem.replace("-cloudy", "")
    output, score, png = (out_dir / f"{stem}-cloudfree.tif", out_dir / f"{stem}-score.tif",
                          out_dir / f"{stem}-before-after.png")
    for f in (output, score):
        if f.exists():
            f.unlink()
    with tempfile.TemporaryDirectory(prefix="viser-demo-") as tmp:
        root = Path(tmp)
        env = qgis_env(root)
        run(["plugins", "enable", "viser_cr"], env, root)
        # QGIS/GDAL write statistics beside a raster they read (.aux.xml): keep the shipped sample clean
        work = root / src.name
        shutil.copyfile(src, work)
        params = [f"INPUT={work}", f"OUTPUT={output}", f"SCORE={score}",
                  f"KEEP_CLEAR={'true' if args.keep_clear else 'false'}"]
        t0 = time.time()
        proc = run(["--json", "run", "viser:removeclouds", "--", *params], env, root)
        seconds = time.time() - t0
    text = proc.stdout[proc.stdout.find("{"):] if "{" in proc.stdout else "{}"
    try:
        result = json.loads(text)
    except json.JSONDecodeError:
        result = {}
    results = result.get("results") or {}
    model = next((str(v) for k, v in results.items() if "MODEL" in k.upper() and v), None)
    for f in (output, score):
        if not f.is_file():
            raise SystemExit(f"demo: qgis_process ran but {f} was not written:\n{proc.stdout[-2000:]}")
    title = (f"{src.name} through qgis_process viser:removeclouds ({seconds:.1f} s incl. QGIS start-up"
             + (f", model {model}" if model else ", default bundled model") + ")")
    before_after(src, output, score, png, title)
    print(f"cloud-free GeoTIFF: {output}")
    print(f"cloud score:        {score}")
    print(f"before/after PNG:   {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
