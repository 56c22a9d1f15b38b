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
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..core.cli import ProgressBar
from ..core.device import resolve_device
from ..core.errors import ViserError
from .augment import channel_shuffle, radiometric, random_frames
from .checkpoint import FORMAT, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state, weights_digest
from .cli import run_cli
from .config import load_config, model_arch
from .warmstart import init_from

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
        model.use_radiometry(bool(s["display"]))
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


# ------------------------------------------------------------------------------------- the run's parts


@dataclass
class Process:
    """This process of the run: its rank among ``world`` processes and its device. Rank 0 logs,
    validates and writes."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class Data:
    train: object
    val: object | None
    sampler: ResumableSampler
    loader: DataLoader
    band_names: list[str]


@dataclass
class Optimisation:
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp: tuple[bool, torch.dtype | None]


@dataclass
class Position:
    """Where the run is: what a checkpoint saves and a resume restores."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: dict | None = None


@dataclass
class Interval:
    """The loss parts, steps and pixels since the last ``train_log.csv`` row."""

    sums: dict = field(default_factory=dict)
    steps: int = 0
    pixels: int = 0
    started: float = field(default_factory=time.time)


def start_process(cfg: dict) -> Process:
    """The device, the process group (several processes) and the CPU threads of this process."""
    import torch.distributed as dist

    rank, world, local_rank = dist_env()
    tcfg, dcfg = cfg["train"], cfg["distributed"]
    device = resolve_device(tcfg["device"], default_index=local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = dcfg["backend"]
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    if tcfg.get("threads"):
        torch.set_num_threads(int(tcfg["threads"]))
    return Process(rank, world, device)


def build_model(cfg: dict, process: Process, seed: int) -> tuple[torch.nn.Module, dict]:
    """The network with the same initialisation on every rank (DDP also broadcasts rank 0's weights);
    randomness per rank from here on (e.g. anything stochastic in the network)."""
    from ..core.model import ViserCR

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    arch = model_arch(cfg)
    model = ViserCR(**arch).to(process.device)
    torch.manual_seed(seed + 1000 * process.rank + 1)
    return model, arch


def build_data(cfg: dict, process: Process, arch: dict, seed: int) -> Data:
    """The training set, its shard of this process and its loader; the validation set on rank 0."""
    from .datasets import build_dataset

    tcfg = cfg["train"]
    train_set = build_dataset(cfg["data"], "train", seed)
    band_names = list(train_set.band_names)
    if len(band_names) != arch["in_bands"]:
        raise ViserError(f"the data gives {len(band_names)} bands {band_names}, the model takes {arch['in_bands']}")
    val_set = build_dataset(cfg["data"], "val", seed) if (process.is_main and cfg["data"].get("val")) else None
    bs = int(tcfg["batch_size"])
    sampler = ResumableSampler(train_set, num_replicas=process.world, rank=process.rank, shuffle=True, seed=seed,
                               drop_last=True)
    if len(sampler) < bs:
        raise ViserError(f"the training set gives {len(sampler)} samples per process, fewer than batch_size {bs}")
    loader_gen = torch.Generator()
    loader_gen.manual_seed(seed)
    nw = int(tcfg.get("num_workers") or 0)
    loader = DataLoader(train_set, batch_size=bs, sampler=sampler, num_workers=nw, drop_last=True,
                        pin_memory=process.device.type == "cuda", generator=loader_gen, persistent_workers=False,
                        prefetch_factor=2 if nw else None)
    return Data(train_set, val_set, sampler, loader, band_names)


def trained_parameters(model: torch.nn.Module, freeze=()) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates: all but those under the ``train.freeze`` name prefixes, which
    keep their (warm-started) values and get no gradient (e.g. the encoder and score heads, so that a
    stack fine-tune cannot move the cloud score it inherits)."""
    prefixes = tuple(freeze)
    trained = []
    for name, param in model.named_parameters():
        frozen = bool(prefixes) and name.startswith(prefixes)
        param.requires_grad_(not frozen)
        if not frozen:
            trained.append(param)
    if not trained:
        raise ViserError(f"train.freeze {list(prefixes)} leaves no parameter to train")
    return trained


def build_optimisation(cfg: dict, model: torch.nn.Module, band_names, device: torch.device) -> Optimisation:
    """Loss, Adam, the learning-rate schedule and mixed precision (with its gradient scaler for fp16)."""
    from .losses import CloudRemovalLoss

    ocfg, total = cfg["optim"], int(cfg["train"]["steps"])
    loss_fn = CloudRemovalLoss.from_config(cfg["loss"], band_names).to(device)
    optimizer = torch.optim.Adam(trained_parameters(model, cfg["train"].get("freeze") or ()), lr=float(ocfg["lr"]),
                                 betas=tuple(ocfg["betas"]),
                                 weight_decay=float(ocfg["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, ocfg, total) / float(ocfg["lr"]))
    amp = amp_settings(cfg["train"]["amp"], device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp[0] and amp[1] == torch.float16)
    return Optimisation(loss_fn, optimizer, scheduler, scaler, amp)


def warm_start(cfg: dict, model: torch.nn.Module, band_names, process: Process) -> None:
    """``train.init_from``: another model's weights, adapted to this network (``warmstart.py``)."""
    tcfg = cfg["train"]
    report = init_from(model, tcfg["init_from"], band_names, reset=tcfg.get("init_reset") or ())
    if process.is_main:
        _LOG.info(f"warm start from {report['source']} (bands {report['source_bands']}): {len(report['copied'])} "
                  f"tensors copied, adapted {report['adapted']}, {len(report['new'])} new, skipped "
                  f"{report['skipped']}, reset {report['reset']}")


def resume_from(path, model: torch.nn.Module, opt: Optimisation, process: Process, out_dir: Path) -> Position:
    """Model, optimizer, scheduler, scaler, position and this rank's RNG states from a checkpoint; the logs
    lose the rows written after it (the resumed run writes them again)."""
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt["model"])
    opt.optimizer.load_state_dict(ckpt["optimizer"])
    opt.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        opt.scaler.load_state_dict(ckpt["scaler"])
    position = Position(int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch_in_epoch"]), ckpt.get("best"))
    rngs = ckpt.get("rng") or []
    if len(rngs) == process.world:
        set_rng_state(rngs[process.rank], process.device)
    elif process.is_main:
        _LOG.info(f"note: checkpoint saved by {len(rngs)} process(es), resuming with {process.world}: not bit-exact")
    if process.is_main:
        _truncate_csv(out_dir / "train_log.csv", position.step)
        _truncate_csv(out_dir / "val_log.csv", position.step)
        _LOG.info(f"resumed from {path} at step {position.step} (epoch {position.epoch}, "
                  f"batch {position.batch_in_epoch})")
    return position


def start_position(cfg: dict, resume, model: torch.nn.Module, opt: Optimisation, band_names, process: Process,
                   out_dir: Path) -> Position:
    """A fresh start (warm or not), or where ``resume`` left off (``auto``: the last checkpoint, if any)."""
    if resume == "auto":
        last = out_dir / "checkpoints" / "last.pt"
        resume = last if last.exists() else None
    if cfg["train"].get("init_from") and not resume:
        warm_start(cfg, model, band_names, process)
    return resume_from(resume, model, opt, process, out_dir) if resume else Position()


def distributed(model: torch.nn.Module, process: Process, dcfg: dict) -> torch.nn.Module:
    """The model as the loop drives it: DistributedDataParallel over several processes."""
    if process.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[process.device.index] if process.device.type == "cuda" else None,
               find_unused_parameters=bool(dcfg.get("find_unused_parameters", True)))


def broadcast_flag(value: bool, process: Process) -> bool:
    """Rank 0's ``value`` on every rank."""
    flag = torch.tensor([int(value)])
    if process.world > 1:
        import torch.distributed as dist

        dist.broadcast(flag, 0)
    return bool(flag.item())


# ---------------------------------------------------------------------------------------------- loop


class Run:
    """One training in this process: its parts, and the steps of the loop as named methods."""

    def __init__(self, cfg: dict, resume=None):
        self.cfg, self.tcfg = cfg, cfg["train"]
        self.process = start_process(cfg)
        self.out_dir = Path(cfg["output_dir"])
        if self.process.is_main:
            self._write_config()
        seed = int(cfg["seed"])
        self.raw, self.arch = build_model(cfg, self.process, seed)
        self.data = build_data(cfg, self.process, self.arch, seed)
        self.opt = build_optimisation(cfg, self.raw, self.data.band_names, self.process.device)
        self.position = start_position(cfg, resume, self.raw, self.opt, self.data.band_names, self.process,
                                       self.out_dir)
        self.model = distributed(self.raw, self.process, cfg["distributed"])
        self.lpips = None
        if self.process.is_main and cfg["eval"].get("lpips"):
            from .vgg import LPIPS

            self.lpips = LPIPS().to(self.process.device)
        self.total = int(self.tcfg["steps"])
        self.has_val = bool(cfg["data"].get("val"))  # on every rank (only rank 0 holds the set)
        self.started = time.time()
        self.last_val_step = None

    def _write_config(self) -> None:
        import yaml

        (self.out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg, sort_keys=False))

    def run(self) -> dict:
        """The loop: epochs of batches until ``train.steps`` or ``train.max_minutes``; then the summary."""
        process, position, data = self.process, self.position, self.data
        if process.is_main:
            amp = self.opt.amp
            _LOG.info(f"training {self.cfg['name']}: {sum(p.numel() for p in self.raw.parameters()) / 1e6:.3f} M "
                      f"parameters, {len(data.train)} training samples, {process.world} process(es) on "
                      f"{process.device}, amp={amp[1] if amp[0] else 'off'}, steps {position.step}->{self.total}, "
                      f"output {self.out_dir}")
        progress = Progress(self.total, position.step, process.is_main and bool(self.tcfg.get("progress", True)),
                            int(self.tcfg["log_every"]))
        if self.total == 0:  # no training: the warm-started network as checkpoint step 0 (e.g. to export it)
            self.save()
        self.model.train()
        interval = Interval()
        stop = False
        while position.step < self.total and not stop:
            if hasattr(data.train, "set_epoch"):
                data.train.set_epoch(position.epoch)
            data.sampler.set_epoch(position.epoch)
            data.sampler.start = position.batch_in_epoch * int(self.tcfg["batch_size"])
            for batch in data.loader:
                parts, pixels = self.train_step(batch)
                position.step += 1
                position.batch_in_epoch += 1
                self.add_to_interval(interval, parts, pixels)
                stop = self.time_is_up()
                if process.is_main:
                    seconds = time.time() - interval.started
                    progress.update(position.step, parts["loss"], interval.steps / max(seconds, 1e-9),
                                    interval.pixels / max(seconds, 1e-9) / 1e6)
                end = position.step == self.total or stop
                if position.step % int(self.tcfg["log_every"]) == 0 or end:
                    self.log_interval(interval)
                    interval = Interval()
                is_best = False
                if self.has_val and (position.step % int(self.tcfg["val_every"]) == 0 or end):
                    is_best = self.validate(progress)
                if position.step % int(self.tcfg["ckpt_every"]) == 0 or end or is_best:
                    self.save(("best.pt",) if is_best else ())
                if position.step >= self.total or stop:
                    break
            else:
                position.epoch += 1
                position.batch_in_epoch = 0
        progress.close()
        return self.finish()

    def train_step(self, batch: dict) -> tuple[dict, int]:
        """One optimisation step on a batch: augment, forward, loss, backward, clip, step. Returns the loss
        parts (with ``loss`` and ``grad_norm``) and the pixels of the run's whole batch (every process)."""
        device, opt, ocfg = self.process.device, self.opt, self.cfg["optim"]
        x = batch["input"].to(device, non_blocking=True)
        y = batch["target"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        mw = batch["mask_weight"].to(device, non_blocking=True)
        if self.tcfg.get("random_frames"):
            x = random_frames(x)
        if self.tcfg.get("radiometric"):
            x, y = radiometric(x, y, self.tcfg["radiometric"])
        if self.tcfg.get("channel_shuffle"):
            x, y = channel_shuffle(x, y, self.tcfg["channel_shuffle"])
        self.raw.use_radiometry(batch["display"].to(device))  # each sample's cloud gate
        with torch.autocast(device_type=device.type, dtype=opt.amp[1], enabled=opt.amp[0]):
            pred, score = self.model(x)
            loss, parts = opt.loss_fn(pred, y, score, mask, mw, self.raw.aux_losses(), batch["target_weight"].to(device),
                                      batch["mask_known"].to(device))
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
        opt.scaler.unscale_(opt.optimizer)
        clip = ocfg.get("grad_clip")
        if clip:
            gnorm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip)))
        else:
            gnorm = float(torch.sqrt(sum((p.grad.detach().float() ** 2).sum() for p in self.model.parameters()
                                         if p.grad is not None)))
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        opt.scheduler.step()
        parts["loss"] = float(loss.detach())
        parts["grad_norm"] = gnorm
        return parts, x.shape[0] * x.shape[-1] * x.shape[-2] * self.process.world

    @staticmethod
    def add_to_interval(interval: Interval, parts: dict, pixels: int) -> None:
        for k, v in parts.items():
            interval.sums[k] = interval.sums.get(k, 0.0) + v
        interval.steps += 1
        interval.pixels += pixels

    def time_is_up(self) -> bool:
        """``train.max_minutes`` has passed (rank 0's clock decides for every rank)."""
        max_minutes = self.tcfg.get("max_minutes")
        if not max_minutes:
            return False
        up = self.process.is_main and (time.time() - self.started) / 60 >= float(max_minutes)
        return broadcast_flag(up, self.process)

    def log_interval(self, interval: Interval) -> None:
        """A ``train_log.csv`` row: the interval's mean loss parts, learning rate and speed (rank 0)."""
        if not self.process.is_main:
            return
        seconds = time.time() - interval.started
        row = {k: v / interval.steps for k, v in interval.sums.items()}
        row.update(step=self.position.step, epoch=self.position.epoch,
                   lr=self.opt.optimizer.param_groups[0]["lr"], sec_per_step=seconds / interval.steps,
                   samples_per_s=interval.steps * int(self.tcfg["batch_size"]) * self.process.world
                   / max(seconds, 1e-9),
                   mpx_per_s=interval.pixels / max(seconds, 1e-9) / 1e6)
        _append_csv(self.out_dir / "train_log.csv", TRAIN_FIELDS, row)

    def validate(self, progress: Progress) -> bool:
        """Validation on rank 0 (``val_log.csv``, curves, a sheet); True on every rank when it is the best."""
        from .viz import save_curves

        is_best = False
        if self.process.is_main:
            position = self.position
            metrics = validate(self.raw, self.data.val, self.cfg, self.process.device, self.opt.amp, position.step,
                               self.out_dir, self.lpips)
            self.last_val_step = position.step
            _append_csv(self.out_dir / "val_log.csv", list(metrics), metrics)
            save_curves(self.out_dir)
            progress.close()
            _LOG.info(f"validation at step {position.step}: PSNR {metrics.get('psnr', float('nan')):.2f} dB "
                      f"(input {metrics.get('input_psnr', float('nan')):.2f}), SSIM "
                      f"{metrics.get('ssim', float('nan')):.4f} (input {metrics.get('input_ssim', float('nan')):.4f})")
            if position.best is None or metrics.get("psnr", -1e9) > position.best.get("psnr", -1e9):
                position.best = {k: v for k, v in metrics.items() if isinstance(v, float | int)}
                is_best = True
        return broadcast_flag(is_best, self.process)

    def save(self, also=()) -> None:
        """A checkpoint of the run as it is now, with every rank's RNG states (written by rank 0)."""
        rngs = [get_rng_state(self.process.device)]
        if self.process.world > 1:
            import torch.distributed as dist

            gathered = [None] * self.process.world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if not self.process.is_main:
            return
        opt, position = self.opt, self.position
        ckpt = {"format": FORMAT, "version": 1, "config": self.cfg, "arch": self.arch,
                "band_names": self.data.band_names, "model": self.raw.state_dict(),
                "optimizer": opt.optimizer.state_dict(), "scheduler": opt.scheduler.state_dict(),
                "scaler": opt.scaler.state_dict() if opt.scaler.is_enabled() else None, "step": position.step,
                "epoch": position.epoch, "batch_in_epoch": position.batch_in_epoch, "rng": rngs,
                "best": position.best, "world_size": self.process.world}
        save_checkpoint(ckpt, self.out_dir / "checkpoints", position.step, also,
                        keep=int(self.tcfg.get("keep_checkpoints") or 0))

    def finish(self) -> dict:
        """Weight digests of every rank (they must agree), curves and ``summary.json``; the process group ends."""
        import torch.distributed as dist

        from .viz import save_curves

        process, position = self.process, self.position
        result = {}
        digests = [weights_digest(self.raw)]
        if process.world > 1 and self.cfg["distributed"].get("check_sync", True):
            gathered = [None] * process.world
            dist.all_gather_object(gathered, digests[0])
            digests = gathered
        if process.is_main:
            if process.world > 1:
                (self.out_dir / "ranks.json").write_text(json.dumps(
                    {"world_size": process.world, "digests": digests, "in_sync": len(set(digests)) == 1}, indent=2))
            save_curves(self.out_dir)
            result = {"name": self.cfg["name"], "steps": position.step, "epoch": position.epoch,
                      "world_size": process.world, "seconds": round(time.time() - self.started, 1),
                      "parameters": sum(p.numel() for p in self.raw.parameters()), "best": position.best,
                      "last_validation_step": self.last_val_step, "weights_sha256": digests[0],
                      "output_dir": str(self.out_dir)}
            (self.out_dir / "summary.json").write_text(json.dumps(result, indent=2))
            _LOG.info(f"done: {position.step} steps in {result['seconds']} s; best validation {position.best}")
        if process.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
        return result


def train(cfg: dict, resume=None) -> dict:
    """Run (or resume) a training; returns the summary dict (rank 0) or {} (other ranks)."""
    return Run(cfg, resume).run()


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
