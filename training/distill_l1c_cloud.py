"""Train the bundled L1C cloud classifier (``core.l1c_cloud``) from s2cloudless's probability (a teacher).

    python -m viser_cr.training.distill_l1c_cloud --config training/configs/l1c-cloud.yaml \
        [--out resources/cloud] [--set train.steps=15000 ...]

The config (``training/configs/l1c-cloud.yaml``) lists 13-band L1C images for training and for held-out checks,
each ``{files, include, exclude, window}`` (a raster in the ``s2-13`` layout) or ``{clip, window}`` (a folder of
``*_10m.tif``, ``*_20m.tif``, ``*_60m.tif`` files, as ``sentinel2-clear`` / ``sentinel2-cloudy``, read onto the
10 m grid). Every image gives the ten classifier bands' means over cells of each size in ``cells`` (the run
takes 4 x 4 cells, ``core.s2cloudless.STEP``); ``augment`` adds copies of the cells with a random gain and random
mixtures of two cells (sub-cell cloud), so that the student sees spectra between and around those of the images.
s2cloudless labels every vector; the network learns its probability (binary cross-entropy on soft labels).

Writes ``<out>/viser-l1c-cloud.safetensors`` and its card ``.json`` (sha256, the config, the feature range, and
the agreement with s2cloudless on the held-out images: the share each calls cloud with a run's post-processing,
their IoU and the mean probability difference). Needs the optional s2cloudless and lightgbm packages (``make
setup``), which the classifier it writes never needs.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.sensors import S2_13
from .cli import run_cli
from .config import apply_overrides, deep_merge, read_config_file
from .datasets.common import expand_files, filter_names, get_layout, read_reflectance, window_slices

_LOG = logging.getLogger(__name__)
DEFAULTS = {
    "name": "viser-l1c-cloud",
    "data": {"root": "../shared/data", "train": [], "held_out": []},
    "cells": [2, 4, 8],
    "augment": {"gain": [0.75, 1.3], "mixtures": True},
    "network": {"hidden": 128},
    "train": {"steps": 30000, "batch_size": 4096, "lr": 3.0e-3, "seed": 0, "threads": 2},
}
# each SAFE band (B1..B12 with B8A) of a 10 / 20 / 60 m clip as (file suffix, band number in that file)
SAFE_ORDER = [("60m", 1), ("10m", 1), ("10m", 2), ("10m", 3), ("20m", 1), ("20m", 2), ("20m", 3), ("10m", 4),
              ("20m", 4), ("60m", 2), ("60m", 3), ("20m", 5), ("20m", 6)]


def read_l1c_clip_dn(folder) -> tuple[np.ndarray, dict]:
    """A clip's three files as one ``(13, H, W)`` uint16 L1C array on the 10 m grid (bilinear) and that grid's
    rasterio profile."""
    import rasterio
    from rasterio.enums import Resampling

    folder = Path(folder)
    paths = {res: next(iter(sorted(folder.glob(f"*_{res}.tif"))), None) for res in ("10m", "20m", "60m")}
    if None in paths.values():
        raise InputError(f"{folder}: an L1C clip needs its *_10m.tif, *_20m.tif and *_60m.tif files")
    files = {res: rasterio.open(path) for res, path in paths.items()}
    try:
        grid = files["10m"]
        bands = [files[res].read(number, out_shape=(grid.height, grid.width), resampling=Resampling.bilinear)
                 for res, number in SAFE_ORDER]
        return np.stack(bands).astype("uint16"), dict(grid.profile)
    finally:
        for dataset in files.values():
            dataset.close()


def read_images(entries, root) -> list[tuple[str, np.ndarray]]:
    """``(name, (13, H, W) TOA reflectance)`` of each image of config ``entries``."""
    images = []
    for entry in entries:
        window = entry.get("window")
        if "clip" in entry:
            dn, _ = read_l1c_clip_dn(Path(root) / entry["clip"])
            image = dn.astype(np.float32) * np.float32(1e-4)
            if window is not None:
                image = image[(slice(None), *window_slices(window, *image.shape[-2:]))]
            images.append((str(entry["clip"]), image))
            continue
        files = filter_names(expand_files(entry["files"], root), entry.get("include"), entry.get("exclude"))
        if not files:
            raise InputError(f"no file matches {entry['files']} (data root {root})")
        for path in files:
            image, _ = read_reflectance(path, get_layout("s2-13"), S2_13, window=window)
            images.append((path.stem, image))
    return images


def cell_vectors(image: np.ndarray, cell: int) -> np.ndarray:
    """``(N, 10)`` the classifier bands' means over ``cell`` x ``cell`` cells of a 13-band image."""
    from ..core import s2cloudless

    bands = image[[S2_13.index(band) for band in s2cloudless.MODEL_BANDS]].astype(np.float64)
    return np.moveaxis(s2cloudless.cell_means(bands, cell), 0, -1).reshape(-1, bands.shape[0]).astype(np.float32)


def training_vectors(images, cells, augment, rng: np.random.Generator) -> np.ndarray:
    vectors = np.concatenate([cell_vectors(image, cell) for _, image in images for cell in cells])
    parts = [vectors]
    if augment.get("gain"):
        low, high = (float(v) for v in augment["gain"])
        parts.append(vectors * rng.uniform(low, high, (len(vectors), 1)).astype(np.float32))
    if augment.get("mixtures"):
        share = rng.uniform(0.0, 1.0, (len(vectors), 1)).astype(np.float32)
        parts.append(share * vectors + (1 - share) * vectors[rng.permutation(len(vectors))])
    return np.concatenate(parts)


def train_student(vectors: np.ndarray, labels: np.ndarray, hidden: int, steps: int, batch_size: int, lr: float,
                  seed: int) -> dict[str, np.ndarray]:
    """The network of ``core.l1c_cloud`` fitted to ``labels`` (s2cloudless's probability); its tensors."""
    import torch

    from ..core import l1c_cloud

    torch.manual_seed(seed)
    feats = torch.from_numpy(l1c_cloud.features(vectors))
    low, high = feats.min(0).values, feats.max(0).values
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
    feats = (feats - mean) / std
    target = torch.from_numpy(labels.astype(np.float32))
    net = torch.nn.Sequential(torch.nn.Linear(feats.shape[1], hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
                              torch.nn.SiLU(), torch.nn.Linear(hidden, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    for step in range(steps):
        batch = torch.randint(0, len(feats), (batch_size,))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(feats[batch])[:, 0], target[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 1000 == 0 or step == steps - 1:
            _LOG.info("step %d/%d: loss %.4f", step + 1, steps, float(loss.detach()))
    layers = {"hidden1": net[0], "hidden2": net[2], "output": net[4]}
    tensors = {"feature_low": low, "feature_high": high, "feature_mean": mean, "feature_std": std}
    for name, layer in layers.items():
        tensors[f"{name}.weight"], tensors[f"{name}.bias"] = layer.weight, layer.bias
    return {name: value.detach().numpy().astype(np.float32) for name, value in tensors.items()}


def agreement(student, images) -> dict:
    """On the held-out images, the student against s2cloudless as a run uses them (cells of ``STEP``, the run's
    threshold and post-processing): share each calls cloud, IoU, mean probability difference per image."""
    from ..core import s2cloudless

    inter = union = pixels = teacher_called = student_called = 0
    differences = []
    for _, image in images:
        teacher_p, student_p = (s2cloudless.cloud_probability(image, S2_13, s2cloudless.STEP, classifier)
                                for classifier in ("s2cloudless", student))
        teacher_m, student_m = (s2cloudless.cloud_mask(p, s2cloudless.INFERENCE_THRESHOLD) for p in (teacher_p, student_p))
        inter += int((teacher_m & student_m).sum())
        union += int((teacher_m | student_m).sum())
        pixels += teacher_m.size
        teacher_called += int(teacher_m.sum())
        student_called += int(student_m.sum())
        differences.append(float(np.abs(teacher_p - student_p).mean()))
    return {"images": len(images), "s2cloudless_cloud_share": round(teacher_called / max(pixels, 1), 4),
            "classifier_cloud_share": round(student_called / max(pixels, 1), 4),
            "iou": round(inter / union, 4) if union else None,
            "mean_probability_difference": round(float(np.mean(differences)), 4) if differences else None}


def write_classifier(tensors: dict, out_dir, card: dict) -> Path:
    """``<out_dir>/viser-l1c-cloud.safetensors`` and its card (with the file's sha256), each written whole."""
    from safetensors.numpy import save

    from ..core import l1c_cloud
    from ..core.weights import atomic_write, canonical_safetensors

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = canonical_safetensors(save({name: tensors[name] for name in l1c_cloud.TENSORS}))
    weights = out_dir / f"{l1c_cloud.NAME}.safetensors"
    atomic_write(weights, data)
    card = dict(card, name=l1c_cloud.NAME, weights=weights.name, sha256="sha256:" + hashlib.sha256(data).hexdigest())
    card_file = l1c_cloud.card_path(out_dir)
    atomic_write(card_file, (json.dumps(card, indent=2) + "\n").encode("utf-8"))
    return card_file


def distill(cfg: dict, out_dir) -> Path:
    import torch

    from ..core import l1c_cloud, s2cloudless

    if not s2cloudless.available():
        raise InputError(f"the teacher is s2cloudless, which is not installed here. {s2cloudless.HOW_TO_GET}")
    t = cfg["train"]
    torch.set_num_threads(int(t["threads"]))
    started = time.time()
    root = cfg["data"]["root"]
    images = read_images(cfg["data"]["train"], root)
    rng = np.random.default_rng(int(t["seed"]))
    vectors = training_vectors(images, cfg["cells"], cfg["augment"], rng)
    _LOG.info("%d training images, %d vectors: labelling them with s2cloudless", len(images), len(vectors))
    labels = s2cloudless.predictor("s2cloudless")(vectors.astype(np.float64)).astype(np.float32)
    tensors = train_student(vectors, labels, int(cfg["network"]["hidden"]), int(t["steps"]), int(t["batch_size"]),
                            float(t["lr"]), int(t["seed"]))
    student = l1c_cloud.L1CCloudClassifier(tensors)
    checks = {}
    for entry in cfg["data"]["held_out"]:
        checks[entry.get("label", entry.get("files", entry.get("clip")))] = agreement(student, read_images([entry], root))
    card = {"description": "Cloud probability of 13-band Sentinel-2 L1C from the ten bands s2cloudless takes, a "
                           "small network distilled from s2cloudless (core/l1c_cloud.py)",
            "bands": list(s2cloudless.MODEL_BANDS), "input": "TOA reflectance (DN / 10000); a run feeds it 4 x 4 cell means",
            "teacher": "s2cloudless 1.7.2 (Sentinel Hub), pixel_s2_cloud_detector_lightGBM_v0.1",
            "license": "CC BY-SA 4.0: its labels are s2cloudless's (Sentinel Hub, CC BY-SA 4.0); imagery: Copernicus "
                       "Sentinel data (SEN12MS-CR, SEN12MS-CR-TS: Ebel et al., CC BY 4.0; sentinel2-clear / -cloudy)",
            "config": cfg, "training_vectors": int(len(vectors)), "minutes": round((time.time() - started) / 60, 1),
            "held_out_agreement": checks}
    return write_classifier(tensors, out_dir, card)


def load_distill_config(path, overrides=None) -> dict:
    user = apply_overrides(read_config_file(path), overrides)
    return deep_merge(copy.deepcopy(DEFAULTS), user)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m viser_cr.training.distill_l1c_cloud", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="e.g. training/configs/l1c-cloud.yaml")
    ap.add_argument("--out", default="resources/cloud", help="folder for the classifier and its card")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    args = ap.parse_args(argv)

    def run():
        card = distill(load_distill_config(args.config, args.overrides), args.out)
        print(f"written: {card}")

    return run_cli(ap.prog, run)


if __name__ == "__main__":
    raise SystemExit(main())
