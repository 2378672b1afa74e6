"""``fit(cfg)``: the training run, from data to metrics.json, resumable at any checkpoint.

Order of one epoch: mixing switched off from ``mixup_off_epoch`` on (``Method.set_mixing``, decided by the
epoch alone, so a resumed run switches at the same step), train steps (checkpoint every
``checkpoint_interval`` steps if set), then
evaluation of the method's eval network (the EMA encoder for AutoMix), the online network and the
weight-EMA copy, a row in ``summary.csv``, a picture of the current mixes, and ``last.pt``
(``best.pt`` when the top-1 improves). A run killed at any point and resumed with ``--resume``
continues exactly: model, optimiser, schedule, scaler, method state, loader position and every
random generator come back from the checkpoint. SIGINT (Ctrl-C) and SIGTERM (preemption) stop the run
after the step in flight with such a checkpoint (``automix/_signals.py``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import viz
from .._signals import Interrupted, StopRequests, signal_name
from . import checkpoint as ckpt
from . import distributed as dist_util
from .build import ModelEma, build_method, build_model, build_optimizer, build_schedule, check_fits, image_side
from .config import Config, to_yaml
from .loader import TrainBatches, batch_side, eval_batches
from .logger import RunLogger
from .rundir import claim
from .setup import check_before_data, check_resume, describe_eval, load_data, resume_config, seed_everything
from .syncdebug import SyncCheck
from .weights import load_initial_weights

_NUMBER = re.compile(r"\d+(\.\d+)?(e-?\d+)?")  # a warning's numbers, ignored when telling warnings apart

FORMAT = ckpt.FORMAT


@torch.no_grad()
def evaluate(net: nn.Module, batches, device: torch.device, amp_dtype) -> tuple[float, float]:
    """(top-1 %, mean CE loss) of ``net`` over the batches, summed over the ranks."""
    was_training = net.training
    net.eval()
    correct = total = loss_sum = 0.0
    for x, y in batches:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = net(x)
        loss_sum += float(nn.functional.cross_entropy(logits.float(), y, reduction="sum"))
        correct += float((logits.argmax(1) == y).sum())
        total += y.numel()
    net.train(was_training)
    correct, total, loss_sum = dist_util.all_sum([correct, total, loss_sum], device)
    return (100.0 * correct / total, loss_sum / total) if total else (float("nan"), float("nan"))


class Run:
    """Everything a run holds, built once; ``fit`` drives it."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.info, self.device = dist_util.setup(cfg.device, cfg.dist_timeout, cfg.sync_bn)
        self.out = Path(cfg.output)
        seed_everything(cfg.seed + self.info.rank, cfg.deterministic)
        # What the arguments alone decide (a patch size that does not tile --img-size, a method option the model
        # refuses) is refused before the dataset is decoded and cached.
        check_before_data(cfg)
        self.data, self.train_idx, self.val_data, self.val_idx = load_data(cfg)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[cfg.amp]
        self.batches = TrainBatches(self.data, self.train_idx, cfg.batch_size, self.device, seed=cfg.seed,
                                    pad=cfg.pad, flip=cfg.flip, rank=self.info.rank, world=self.info.world_size,
                                    img_size=cfg.img_size, workers=cfg.workers, channels_last=cfg.channels_last)
        self.steps_per_epoch = len(self.batches)
        in_chans = self.data.images.shape[1] if self.data.images is not None else 3
        model = build_model(cfg, self.data.num_classes, in_chans, image_side(self.data, cfg))
        # Before the method is built on it: AutoMix's EMA encoder (and --model-ema's copy) start from these
        # weights too. A resumed run takes every weight from its checkpoint instead.
        self.init_report = None if cfg.resume else load_initial_weights(model, cfg.model, cfg.pretrained,
                                                                        cfg.initial_checkpoint)
        self.eval_source = describe_eval(cfg, self.data, self.val_data, self.val_idx)
        if cfg.sync_bn and self.info.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.method = build_method(cfg, model, self.data.num_classes, cfg.epochs * self.steps_per_epoch,
                                   seed=cfg.seed * 1000 + self.info.rank).to(self.device)
        # Options that cannot work on this run's batches (AdAutoMix's mix_samples, a token grid, PuzzleMix's blocks,
        # AttentiveMix's feature grid): refused here, before the run header, not at the first step.
        check_fits(self.method, cfg, batch_side(self.data, cfg.img_size), in_chans)
        if cfg.compile:
            self.method.model.compile()
        self.optimizer = build_optimizer(cfg, self.method)
        self.schedule = build_schedule(cfg, self.optimizer, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.model_ema = ModelEma(self.method.model, cfg.model_ema_decay, cfg.model_ema_end_decay,
                                  cfg.epochs * self.steps_per_epoch) if cfg.model_ema else None
        self.step_fn = self.method
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # With mixing off, a learned method's Mix Block and mix head take no part in the loss, nor SMMix's token
            # head on its mixup steps; DDP must be told to expect parameters without gradients (a per-step graph
            # walk, paid only then).
            unused = cfg.mixup_off_epoch > 0 or self.method.skips_parameters
            self.step_fn = nn.parallel.DistributedDataParallel(self.method, device_ids=ids,
                                                               find_unused_parameters=unused)
        self.epoch, self.step_in_epoch, self.best, self.skipped = 0, 0, -1.0, 0
        self.resumes: list[str] = []  # one line per resume of this run: where from, and the options it changed
        self.warnings: dict[str, int] = {}  # the method's epoch warnings -> first epoch they were raised
        self.loss_sum, self.loss_count = 0.0, 0  # this epoch's running train loss (checkpointed mid-epoch)
        self.term_sums: dict[str, float] = {}  # and the running sums of the method's other logs (loss terms, lam)
        # This epoch's training seconds and images before the current session (checkpointed mid-epoch, so a resumed
        # epoch's epoch_time is the sum of its parts, without the time between the kill and the resume), and the
        # start of the current part (None between epochs).
        self.epoch_seconds, self.epoch_images = 0.0, 0
        self.part_start: float | None = None
        self.part_images = 0
        self.logger = RunLogger(self.out, cfg, enabled=self.info.is_main)
        self.stop: StopRequests | None = None  # fit's signal handlers
        self.sync_check = SyncCheck(cfg.sync_debug, self.device)  # --sync-debug: off unless asked
        # The per-epoch pictures show the same 8 training images every epoch, one class after another.
        idx = torch.as_tensor(self.train_idx)
        first = idx[viz.spread_over_classes(self.data.labels[idx], 8)]
        self.preview_x = next(eval_batches(self.data, first, 8, self.device, img_size=cfg.img_size))[0]

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        return {"format": FORMAT, "config": dataclasses.asdict(self.cfg), "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch, "best": self.best, "skipped": self.skipped,
                "warnings": dict(self.warnings),
                "epoch_loss": [self.loss_sum, self.loss_count], "epoch_terms": dict(self.term_sums),
                "epoch_time": list(self.epoch_time_so_far()),
                "num_classes": self.data.num_classes, "classes": list(self.data.classes),
                "method_name": self.cfg.method,
                "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
                "model_ema": None if self.model_ema is None else self.model_ema.state_dict(),
                "batches": self.batches.state_dict(), "rng": ckpt.capture_rng(), "resumes": list(self.resumes)}

    def save(self, name: str) -> None:
        if self.info.enabled:
            self.method.sync_buffers("broadcast")
        if self.info.is_main:
            ckpt.save(self.state(), self.out / name)
        dist_util.barrier()

    def restore(self, state: dict[str, Any], path: str, changed: list[str] | None = None) -> None:
        """Continue from checkpoint ``state`` (read from ``path``; its config already merged into ``self.cfg`` by
        ``setup.resume_config``, which listed the options ``changed``)."""
        check_resume(state, path, self.data.classes, self.cfg.data_dir)
        self.method.load_state_dict(state["method"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # torch's "different number of parameter groups": name what differs
            saved = [g.get("name", "?") for g in state["optimizer"].get("param_groups", [])]
            built = [g.get("name", "?") for g in self.optimizer.param_groups]
            raise ValueError(f"resume: the optimiser state in {path} does not fit this run's optimiser (parameter "
                             f"groups {saved} there, {built} here: {exc})") from None
        total = self.cfg.epochs * self.steps_per_epoch
        if self.method.total_steps != total:  # --epochs changed: the method's schedules span the new length
            self.method.set_total_steps(total)
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        if self.model_ema is not None and state["model_ema"] is not None:
            self.model_ema.load_state_dict(state["model_ema"])
        self.batches.load_state_dict(state["batches"])
        ckpt.restore_rng(state["rng"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.best, self.skipped = state["best"], state["skipped"]
        self.warnings = dict(state.get("warnings", {}))
        self.loss_sum, self.loss_count = state["epoch_loss"]
        self.term_sums = dict(state.get("epoch_terms", {}))
        # A checkpoint from before the epoch's time was kept: the resumed epoch counts from the resume, as it did.
        seconds, images = state.get("epoch_time", (0.0, 0))
        self.epoch_seconds, self.epoch_images = float(seconds), int(images)
        where = f"resumed from {path} at epoch {self.epoch}, step {self.step_in_epoch}"
        self.resumes = list(state.get("resumes", [])) + [where + (f"; changed {', '.join(changed)}" if changed else "")]
        if self.info.rank > 0:
            # The checkpoint holds rank 0's random streams; give the other ranks their own again,
            # derived from (seed, rank, step), so ranks keep drawing differently after a resume.
            reseed = self.cfg.seed * 1_000_003 + self.info.rank * 7919 + int(self.method.step)
            self.method.generator.manual_seed(reseed)
            self.batches.aug_gen.manual_seed(reseed + 1)
            seed_everything(reseed + 2)
        self.logger.truncate(self.epoch)

    # ------------------------------------------------------------------ one step / one epoch
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor] | None:
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss, logs = self.step_fn(x, y)
        if not torch.isfinite(loss):
            where = f"epoch {self.epoch} step {self.step_in_epoch} (global step {int(self.method.step)})"
            terms = ", ".join(f"{k}={float(v):.4g}" for k, v in logs.items())
            if self.cfg.on_nan == "stop":
                raise FloatingPointError(f"non-finite loss at {where}: {terms}; the last good checkpoint is kept")
            self.skipped += 1
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], self.cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.after_step()
        if self.model_ema is not None:
            self.model_ema.update(self.method.model, int(self.method.step) - 1)
        return logs

    def mixing(self, epoch: int) -> bool:
        """Whether ``epoch`` mixes (timm's ``--mixup-off-epoch``: from that epoch on it does not; 0 = always)."""
        return not (self.cfg.mixup_off_epoch and epoch >= self.cfg.mixup_off_epoch)

    def epoch_time_so_far(self) -> tuple[float, int]:
        """(seconds, images) of this epoch's training so far, over every session (0 between epochs)."""
        if self.part_start is None:
            return self.epoch_seconds, self.epoch_images
        return self.epoch_seconds + time.perf_counter() - self.part_start, self.epoch_images + self.part_images

    def train_epoch(self) -> dict[str, float]:
        self.method.train()
        self.method.set_mixing(self.mixing(self.epoch))
        self.part_start, self.part_images = time.perf_counter(), 0
        batches = iter(self.batches.epoch(self.epoch, self.step_in_epoch))
        while True:
            with self.sync_check.region("batch"):
                x, y = next(batches, (None, None))
            if x is None:
                break
            with self.sync_check.region("step"):
                logs = self.train_step(x, y)
                self.schedule.step()
            self.step_in_epoch += 1
            self.part_images += self.cfg.batch_size * self.info.world_size
            if logs is not None:
                self.loss_sum += float(logs["loss"])
                self.loss_count += 1
                keys = [k for k in logs if k != "loss"]
                if keys:  # one device-to-host copy for all terms, not one per term
                    terms = [torch.as_tensor(logs[k], device=self.device).float().reshape(()) for k in keys]
                    values = torch.stack(terms).tolist()
                    for key, value in zip(keys, values):
                        self.term_sums[key] = self.term_sums.get(key, 0.0) + value
            self.logger.progress(self.epoch, self.step_in_epoch, self.steps_per_epoch, logs,
                                 self.optimizer.param_groups[0]["lr"], x.shape[0] * self.info.world_size)
            # At an epoch's last step the epoch is finished first (evaluation, its row), then fit stops.
            if self.step_in_epoch < self.steps_per_epoch and self.stop_requested():
                self.save("last.pt")
                raise self.stopped()
            interval = self.cfg.checkpoint_interval
            if interval and self.step_in_epoch % interval == 0 and self.step_in_epoch < self.steps_per_epoch:
                self.save("last.pt")
        # A resumed epoch: the seconds and images before its checkpoint are added to this session's.
        elapsed, images = self.epoch_time_so_far()
        count = max(self.loss_count, 1)
        stats = {"train_loss": self.loss_sum / count, "epoch_time": elapsed, "img_per_s": images / max(elapsed, 1e-9),
                 **{f"train_{key}": total / count for key, total in self.term_sums.items()}}
        self.loss_sum, self.loss_count, self.term_sums = 0.0, 0, {}
        self.epoch_seconds, self.epoch_images, self.part_start = 0.0, 0, None
        return stats

    def stop_requested(self) -> bool:
        """Whether a signal asked this run to stop; under DDP every rank gets the same answer at the same step."""
        asked = self.stop is not None and self.stop.signum is not None
        if self.info.enabled:  # one tiny all-reduce per step: ranks must stop together or a collective hangs
            asked = dist_util.all_sum([float(asked)], self.device)[0] > 0
        return asked

    def stopped(self) -> Interrupted:
        signum = self.stop.signum if self.stop is not None and self.stop.signum is not None else 15
        where = f"epoch {self.epoch}, step {self.step_in_epoch} of {self.steps_per_epoch}"
        text = (f"stopped by {signal_name(signum)}; saved {self.out / 'last.pt'} ({where}); "
                "to continue, run the same command with --resume auto")
        return Interrupted(signum, text if self.info.is_main else "")  # rank 0 speaks for all

    def check_epoch(self, stats: dict[str, Any]) -> None:
        """Print the method's warnings about this epoch; remember the first epoch of each for metrics.json.

        Warnings that differ only in their numbers (one per epoch, say) are one warning: the first is kept.
        """
        means = {"loss": stats["train_loss"]}
        means.update({k[len("train_"):]: v for k, v in stats.items() if k.startswith("train_") and k != "train_loss"})
        seen = {_NUMBER.sub("#", t) for t in self.warnings}
        for text in self.method.check_epoch(means):
            if self.info.is_main:
                print(f"warning: epoch {self.epoch}: {text}", file=sys.stderr)
            kind = _NUMBER.sub("#", text)
            if kind not in seen:
                self.warnings[text] = self.epoch
                seen.add(kind)

    def evaluate_all(self) -> dict[str, float]:
        if self.info.enabled:
            self.method.sync_buffers("reduce")

        def batches():
            return eval_batches(self.val_data, self.val_idx, self.cfg.eval_batch_size, self.device, rank=self.info.rank,
                                world=self.info.world_size, img_size=self.cfg.img_size, workers=self.cfg.workers,
                                channels_last=self.cfg.channels_last)

        top1, val_loss = evaluate(self.method.eval_model(), batches(), self.device, self.amp_dtype)
        row = {"val_top1": top1, "val_loss": val_loss}
        online = self.method.model
        row["val_top1_online"] = top1 if online is self.method.eval_model() else evaluate(
            online, batches(), self.device, self.amp_dtype)[0]
        if self.model_ema is not None:
            row["val_top1_ema"] = evaluate(self.model_ema, batches(), self.device, self.amp_dtype)[0]
        return row

    def picture(self) -> None:
        if not self.cfg.save_images or not self.info.is_main or not self.method.mixes or not self.mixing(self.epoch):
            return
        viz.save_mix_grid(self.out / "mixes" / f"epoch{self.epoch:03d}.png", self.method, self.preview_x,
                          torch.zeros(self.preview_x.shape[0], dtype=torch.long, device=self.device),
                          mean=self.data.mean, std=self.data.std,
                          title=f"{self.cfg.method}, epoch {self.epoch} of {self.cfg.epochs}")


def fit(cfg: Config) -> dict[str, Any]:
    """Train as ``cfg`` says; returns the final metrics (also written to metrics.json)."""
    stop = StopRequests().install()
    lock = None
    run = None
    threads = torch.get_num_threads()
    try:
        if cfg.threads is not None:  # before any work: torch sizes its thread pool on first use
            torch.set_num_threads(cfg.threads)
        # Checked before the process group is joined: a refused run dir or device fails at once, and
        # torchrun then stops the other ranks instead of leaving them waiting for rank 0.
        if cfg.device is not None:
            dist_util.check_device(cfg.device, dist_util.env_local_rank())
        lock = claim(cfg, rank=dist_util.env_rank())
        state, path, changed = None, "", []
        if cfg.resume:
            # The run's own options first (those not given, and the checks of those given): the data, model and
            # optimiser are built from them.
            path = str(ckpt.find(Path(cfg.output) / "last.pt" if cfg.resume == "auto" else cfg.resume, ("last.pt",),
                                 what="--resume"))
            state = ckpt.load(path)
            cfg, changed = resume_config(cfg, state, path)
            if cfg.threads is not None:
                torch.set_num_threads(cfg.threads)
        run = Run(cfg)
        run.stop = stop
        if state is not None:
            run.restore(state, path, changed)
            del state
        history = "".join(f"# {line}\n" for line in run.resumes)  # what args.yaml's values held before, and when
        run.logger.start(history + to_yaml(cfg), run)
        t_start = time.perf_counter()
        stop.training = True
        while run.epoch < cfg.epochs:
            stats = run.train_epoch()
            run.check_epoch(stats)
            last = run.epoch == cfg.epochs - 1
            if len(run.val_idx) and (last or (run.epoch + 1) % cfg.eval_interval == 0):  # --val-split 0: none
                stats.update(run.evaluate_all())
            stats.update(epoch=run.epoch, lr=run.optimizer.param_groups[0]["lr"], skipped_steps=run.skipped)
            top1 = stats.get("val_top1", float("nan"))
            improved = not math.isnan(top1) and top1 > run.best
            run.best = top1 if improved else run.best
            run.logger.epoch_row(stats)
            run.picture()
            run.epoch, run.step_in_epoch = run.epoch + 1, 0
            run.save("last.pt")
            if improved:
                run.save("best.pt")
            if run.epoch < cfg.epochs and run.stop_requested():
                raise run.stopped()
        result = run.logger.finish(run, time.perf_counter() - t_start)
        dist_util.barrier()  # the ranks leave together: a gloo rank torn down while rank 0 still writes can abort
        return result
    finally:
        if run is not None:
            run.logger.close()
        run = None  # its DDP wrapper must be gone before the process group (dist_util.cleanup)
        dist_util.cleanup()
        if lock is not None:
            lock.release()
        stop.restore()
        torch.set_num_threads(threads)
