"""Train VISER-CR: ``viser-cr-train --config training/configs/NAME.yaml [--set key=value ...]``
(or ``python -m viser_cr.training.train``). Distributed: ``torchrun --nproc_per_node=N -m
viser_cr.training.train --config ...`` (DistributedDataParallel; NCCL on GPUs, gloo on CPU; each
process draws its shard with a DistributedSampler; rank 0 logs, validates and checkpoints).

What a run writes under ``output_dir`` (default ``runs/<name>``):
``config.yaml`` (the resolved config), ``train_log.csv`` (step, epoch, lr, loss and its parts,
gradient norm, seconds per step, samples and megapixels per second), ``val_log.csv`` (model and
cloudy-input metrics at each validation), ``curves.png``, ``sheets/step_<N>.png`` (cloudy | output |
clear | score | mask), ``checkpoints/last.pt``, ``step_<N>.pt`` (the last few), ``best.pt`` (best
validation PSNR), ``summary.json`` and, for DDP, ``ranks.json`` (per-rank weight digests).

Exact resume (``--resume auto`` or a checkpoint path): the checkpoint holds the model, optimizer,
scheduler, AMP scaler, step, epoch, position within the epoch and every RNG state (per rank).
Samples depend only on (seed, epoch, index) and the sampler order only on (seed, epoch), so a
resumed run continues bit-identically on the same hardware and process count.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..core.cli import ProgressBar
from ..core.device import resolve_device
from ..core.errors import ViserError
from .cli import run_cli
from .config import load_config, model_arch

_LOG = logging.getLogger(__name__)
TRAIN_FIELDS = ["step", "epoch", "lr", "loss", "l1", "fft", "perceptual", "score", "aux", "grad_norm",
                "sec_per_step", "samples_per_s", "mpx_per_s"]


# ----------------------------------------------------------------------------------------- helpers


def dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def amp_settings(amp, device: torch.device) -> tuple[bool, torch.dtype | None]:
    if device.type != "cuda" or amp in ("off", False, None):
        return False, None
    if amp == "fp16":
        return True, torch.float16
    if amp in ("bf16", "auto", True):
        return True, (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return False, None


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that can skip the first ``start`` indices of its shard (mid-epoch resume)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start :])

    def __len__(self):
        return max(0, self.num_samples - self.start)


def lr_at(step: int, optim: dict, total: int) -> float:
    lr, lr_min = float(optim["lr"]), float(optim.get("lr_min", optim["lr"]))
    warm = int(optim.get("warmup_steps") or 0)
    if warm and step < warm:
        return lr * (step + 1) / warm
    p = min(1.0, max(0.0, (step - warm) / max(1, total - warm)))
    if optim["schedule"] == "cosine":
        return lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * p))
    if optim["schedule"] == "linear":
        return lr + (lr_min - lr) * p
    return lr


def get_rng_state(device: torch.device) -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ViserError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "viser-cr-train":
        raise ViserError(f"{path} is not a viser-cr training checkpoint")
    return ckpt


class Progress:
    """Training progress: the CLI's bar on a terminal, else a plain line every ``every`` steps."""

    def __init__(self, total: int, start: int, enabled: bool, every: int):
        self.total, self.start, self.every = total, start, every
        self.bar = ProgressBar(enabled=enabled and sys.stderr.isatty())
        self.lines = enabled and not self.bar.enabled
        self.t0 = time.time()

    def update(self, step: int, loss: float, sps: float, mpx: float) -> None:
        eta = (self.total - step) * (time.time() - self.t0) / max(1, step - self.start)
        text = (f"{step}/{self.total} loss {loss:.4f} {sps:.2f} it/s {mpx:.2f} Mpx/s "
                f"eta {int(eta // 60)}:{int(eta % 60):02d}")
        self.bar(step / self.total, text)
        if self.lines and (step % self.every == 0 or step == self.total):
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


def _truncate_csv(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` (a resumed run re-logs them)."""
    if not path.exists():
        return
    with path.open() as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    head, body = rows[0], [r for r in rows[1:] if r and float(r[0]) <= step]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        w.writerows(body)


def _append_csv(path: Path, fields: list[str], row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})


# ----------------------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(model, dataset, cfg: dict, device, amp: tuple[bool, torch.dtype | None], step: int, out_dir: Path,
             lpips=None) -> dict:
    from .metrics import MetricTable, rgb_indexes
    from .viz import save_sheet

    was_training = model.training
    model.eval()
    ev = cfg["eval"]
    table = MetricTable(ev["protocol"], dataset.band_names, lpips)
    rows = []
    n = min(len(dataset), int(ev.get("max_images") or len(dataset)))
    for i in range(n):
        s = dataset[i]
        x = s["input"][None].to(device)
        with torch.autocast(device_type=device.type, dtype=amp[1], enabled=amp[0]):
            pred, score = model(x)
        pred = pred.float()[0].cpu().numpy()
        score = score.float()[0, 0].cpu().numpy()
        tgt = s["target"].numpy()
        cloudy = s["input"].numpy()
        ref = cloudy[0] if cloudy.ndim == 4 else cloudy
        mask = s["mask"][0].numpy() if float(s["mask_weight"]) > 0 else None
        table.add("model", s["name"], pred, tgt, mask)
        table.add("input", s["name"], ref, tgt, mask)
        if len(rows) < int(ev.get("sheet_images", 4)):
            rows.append({"cloudy": ref, "output": pred, "target": tgt, "score": score,
                         "mask": None if mask is None else mask, "label": s["name"][:40]})
    summary = table.summary()
    out = {"step": step}
    for k, v in summary.get("model", {}).items():
        out[k] = v
    for k, v in summary.get("input", {}).items():
        out[f"input_{k}"] = v
    if rows:
        title = (f"step {step}: PSNR {out.get('psnr', float('nan')):.2f} dB "
                 f"(cloudy input {out.get('input_psnr', float('nan')):.2f} dB), protocol {ev['protocol']}")
        save_sheet(out_dir / "sheets" / f"step_{step:07d}.png", rows, rgb_indexes(dataset.band_names), title)
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------------------- training


def train(cfg: dict, resume=None) -> dict:
    """Run (or resume) a training; returns the summary dict (rank 0) or {} (other ranks)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from ..core.model import ViserCR
    from .datasets import build_dataset
    from .losses import CloudRemovalLoss
    from .viz import save_curves

    rank, world, local_rank = dist_env()
    tcfg, ocfg, dcfg = cfg["train"], cfg["optim"], cfg["distributed"]
    device = resolve_device(tcfg["device"], default_index=local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = dcfg["backend"]
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    is_main = rank == 0
    if tcfg.get("threads"):
        torch.set_num_threads(int(tcfg["threads"]))
    out_dir = Path(cfg["output_dir"])
    if is_main:
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        import yaml

        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    seed = int(cfg["seed"])

    # model: identical initialisation on every rank (DDP also broadcasts rank 0's weights)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    arch = model_arch(cfg)
    model = ViserCR(**arch).to(device)
    raw = model
    # per-rank randomness from here on (e.g. anything stochastic in the network)
    torch.manual_seed(seed + 1000 * rank + 1)

    train_ds = build_dataset(cfg["data"], "train", seed)
    band_names = list(train_ds.band_names)
    if len(band_names) != arch["in_bands"]:
        raise ViserError(f"the data gives {len(band_names)} bands {band_names}, the model takes {arch['in_bands']}")
    has_val = bool(cfg["data"].get("val"))
    val_ds = build_dataset(cfg["data"], "val", seed) if (is_main and has_val) else None

    bs = int(tcfg["batch_size"])
    sampler = ResumableSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    if len(sampler) < bs:
        raise ViserError(f"the training set gives {len(sampler)} samples per process, fewer than batch_size {bs}")
    loader_gen = torch.Generator()
    loader_gen.manual_seed(seed)
    nw = int(tcfg.get("num_workers") or 0)
    loader = DataLoader(train_ds, batch_size=bs, sampler=sampler, num_workers=nw, drop_last=True,
                        pin_memory=device.type == "cuda", generator=loader_gen, persistent_workers=False,
                        prefetch_factor=2 if nw else None)

    loss_fn = CloudRemovalLoss.from_config(cfg["loss"], band_names).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(ocfg["lr"]), betas=tuple(ocfg["betas"]),
                                 weight_decay=float(ocfg["weight_decay"]))
    total = int(tcfg["steps"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, ocfg, total) / float(ocfg["lr"]))
    amp = amp_settings(tcfg["amp"], device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp[0] and amp[1] == torch.float16)

    step, epoch, batch_in_epoch, best = 0, 0, 0, None
    if resume == "auto":
        last = out_dir / "checkpoints" / "last.pt"
        resume = last if last.exists() else None
    if tcfg.get("init_from") and not resume:
        from .warmstart import init_from

        report = init_from(raw, tcfg["init_from"], band_names, reset=tcfg.get("init_reset") or ())
        if is_main:
            _LOG.info(f"warm start from {report['source']} (bands {report['source_bands']}): {len(report['copied'])} tensors "
                f"copied, adapted {report['adapted']}, {len(report['new'])} new, skipped {report['skipped']}, "
                f"reset {report['reset']}")
    if resume:
        ckpt = load_checkpoint(resume)
        raw.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        step, epoch, batch_in_epoch = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch_in_epoch"])
        best = ckpt.get("best")
        rngs = ckpt.get("rng") or []
        if len(rngs) == world:
            set_rng_state(rngs[rank], device)
        elif is_main:
            _LOG.info(f"note: checkpoint saved by {len(rngs)} process(es), resuming with {world}: not bit-exact")
        if is_main:
            _truncate_csv(out_dir / "train_log.csv", step)
            _truncate_csv(out_dir / "val_log.csv", step)
            _LOG.info(f"resumed from {resume} at step {step} (epoch {epoch}, batch {batch_in_epoch})")

    if world > 1:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=bool(dcfg.get("find_unused_parameters", True)))

    lpips = None
    if is_main and cfg["eval"].get("lpips"):
        from .vgg import LPIPS

        lpips = LPIPS().to(device)

    def save(tag_step: int, extra_names=()):
        rngs = [get_rng_state(device)]
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if not is_main:
            return
        ckpt = {"format": "viser-cr-train", "version": 1, "config": cfg, "arch": arch, "band_names": band_names,
                "model": raw.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None, "step": tag_step, "epoch": epoch,
                "batch_in_epoch": batch_in_epoch, "rng": rngs, "best": best, "world_size": world}
        cdir = out_dir / "checkpoints"
        atomic_save(ckpt, cdir / "last.pt")
        for name in extra_names:
            atomic_save(ckpt, cdir / name)
        keep = int(tcfg.get("keep_checkpoints") or 0)
        if keep:
            atomic_save(ckpt, cdir / f"step_{tag_step:07d}.pt")
            for old in sorted(cdir.glob("step_*.pt"))[:-keep]:
                old.unlink()

    if is_main:
        _LOG.info(f"training {cfg['name']}: {sum(p.numel() for p in raw.parameters()) / 1e6:.3f} M parameters, "
            f"{len(train_ds)} training samples, {world} process(es) on {device}, amp={amp[1] if amp[0] else 'off'}, "
            f"steps {step}->{total}, output {out_dir}")
    progress = Progress(total, step, is_main and bool(tcfg.get("progress", True)), int(tcfg["log_every"]))
    model.train()
    acc: dict[str, float] = {}
    acc_n, t_int, px_int = 0, time.time(), 0
    t_start = time.time()
    max_minutes = tcfg.get("max_minutes")
    last_val_step = None
    stop = False
    while step < total and not stop:
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        sampler.start = batch_in_epoch * bs
        for batch in loader:
            x = batch["input"].to(device, non_blocking=True)
            y = batch["target"].to(device, non_blocking=True)
            mask = batch["mask"].to(device, non_blocking=True)
            mw = batch["mask_weight"].to(device, non_blocking=True)
            if tcfg.get("random_frames"):
                from .warmstart import random_frames

                x = random_frames(x)
            if tcfg.get("radiometric"):
                from .warmstart import radiometric

                x, y = radiometric(x, y, tcfg["radiometric"])
            with torch.autocast(device_type=device.type, dtype=amp[1], enabled=amp[0]):
                pred, score = model(x)
                loss, parts = loss_fn(pred, y, score, mask, mw, raw.aux_losses())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            clip = ocfg.get("grad_clip")
            if clip:
                gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip)))
            else:
                gnorm = float(torch.sqrt(sum((p.grad.detach().float() ** 2).sum() for p in model.parameters()
                                             if p.grad is not None)))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            batch_in_epoch += 1
            parts["loss"] = float(loss.detach())
            parts["grad_norm"] = gnorm
            for k, v in parts.items():
                acc[k] = acc.get(k, 0.0) + v
            acc_n += 1
            px_int += x.shape[0] * x.shape[-1] * x.shape[-2] * world

            if max_minutes:
                flag = torch.tensor([int(is_main and (time.time() - t_start) / 60 >= float(max_minutes))])
                if world > 1:
                    dist.broadcast(flag, 0)
                stop = bool(flag.item())
            if is_main:
                dt = time.time() - t_int
                progress.update(step, parts["loss"], acc_n / max(dt, 1e-9), px_int / max(dt, 1e-9) / 1e6)
            if step % int(tcfg["log_every"]) == 0 or step == total or stop:
                dt = time.time() - t_int
                if is_main:
                    row = {k: v / acc_n for k, v in acc.items()}
                    row.update(step=step, epoch=epoch, lr=optimizer.param_groups[0]["lr"],
                               sec_per_step=dt / acc_n, samples_per_s=acc_n * bs * world / max(dt, 1e-9),
                               mpx_per_s=px_int / max(dt, 1e-9) / 1e6)
                    _append_csv(out_dir / "train_log.csv", TRAIN_FIELDS, row)
                acc, acc_n, t_int, px_int = {}, 0, time.time(), 0
            val_due = has_val and (step % int(tcfg["val_every"]) == 0 or step == total or stop)
            is_best = False
            if val_due and is_main:
                metrics = validate(raw, val_ds, cfg, device, amp, step, out_dir, lpips)
                last_val_step = step
                _append_csv(out_dir / "val_log.csv", list(metrics), metrics)
                save_curves(out_dir)
                progress.close()
                _LOG.info(f"validation at step {step}: PSNR {metrics.get('psnr', float('nan')):.2f} dB "
                    f"(input {metrics.get('input_psnr', float('nan')):.2f}), SSIM {metrics.get('ssim', float('nan')):.4f} "
                    f"(input {metrics.get('input_ssim', float('nan')):.4f})")
                if best is None or metrics.get("psnr", -1e9) > best.get("psnr", -1e9):
                    best = {k: v for k, v in metrics.items() if isinstance(v, float | int)}
                    is_best = True
            if val_due and world > 1:
                flag = torch.tensor([int(is_best)])
                dist.broadcast(flag, 0)
                is_best = bool(flag.item())
            if step % int(tcfg["ckpt_every"]) == 0 or step == total or stop or is_best:
                save(step, ("best.pt",) if is_best else ())
            if step >= total or stop:
                break
        else:
            epoch += 1
            batch_in_epoch = 0
    progress.close()
    result = {}
    digests = [weights_digest(raw)]
    if world > 1 and dcfg.get("check_sync", True):
        gathered = [None] * world
        dist.all_gather_object(gathered, digests[0])
        digests = gathered
    if is_main:
        if world > 1:
            (out_dir / "ranks.json").write_text(json.dumps({"world_size": world, "digests": digests,
                                                            "in_sync": len(set(digests)) == 1}, indent=2))
        save_curves(out_dir)
        result = {"name": cfg["name"], "steps": step, "epoch": epoch, "world_size": world,
                  "seconds": round(time.time() - t_start, 1), "parameters": sum(p.numel() for p in raw.parameters()),
                  "best": best, "last_validation_step": last_val_step, "weights_sha256": digests[0],
                  "output_dir": str(out_dir)}
        (out_dir / "summary.json").write_text(json.dumps(result, indent=2))
        _LOG.info(f"done: {step} steps in {result['seconds']} s; best validation {best}")
    if world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="viser-cr-train", description="Train a VISER-CR model from a YAML config.")
    ap.add_argument("--config", required=True, help="YAML config (training/configs/*.yaml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set train.steps=1000 --set model.use_sr=false")
    ap.add_argument("--resume", default=None, help="checkpoint to resume from, or 'auto' (output_dir/checkpoints/last.pt)")
    ap.add_argument("--output-dir", default=None, help="override output_dir")
    args = ap.parse_args(argv)
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    return run_cli("viser-cr-train", lambda: train(load_config(args.config, overrides), resume=args.resume))


if __name__ == "__main__":
    sys.exit(main())
