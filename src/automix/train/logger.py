"""What a run writes: args.yaml, summary.csv (a row per epoch), metrics.json, optional TensorBoard,
and a progress bar (tqdm when available and on a terminal, else a log line every few steps).

summary.csv has the fixed ``COLUMNS`` and, after them, the epoch means of whatever else the method logs
(``train_loss_one``, ``train_loss_mb``, ``train_mask_std``, ... for AutoMix), in the order they first appear.

Only rank 0 writes; other ranks get a disabled logger.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any

from .._jsonio import dumps
from .config import Config

COLUMNS = ["epoch", "train_loss", "val_top1", "val_top1_online", "val_top1_ema", "val_loss", "lr", "epoch_time",
           "img_per_s", "skipped_steps"]


class RunLogger:
    def __init__(self, out: Path, cfg: Config, enabled: bool = True) -> None:
        self.out, self.cfg, self.enabled = out, cfg, enabled
        self.summary = out / "summary.csv"
        self.bar = None
        self.tb = None
        self._t = time.perf_counter()
        self._seen = 0

    def start(self, args_yaml: str, run: Any) -> None:
        if not self.enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "args.yaml").write_text(args_yaml)
        if self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("tensorboard: --tensorboard needs the tensorboard package "
                                  "(pip install tensorboard)") from None
            self.tb = SummaryWriter(str(self.out / "tb"))
        params = sum(p.numel() for p in run.method.model.parameters())
        print(f"automix: {self.cfg.method} on {self.cfg.dataset} ({len(run.train_idx)} train / {len(run.val_idx)} "
              f"{self.cfg.eval_split}, "
              f"{run.data.num_classes} classes{self._skipped_note(run)}), "
              f"{self.cfg.model} {params / 1e6:.2f}M params, {run.steps_per_epoch} "
              f"steps/epoch x {self.cfg.epochs} epochs on {run.device}, world size {run.info.world_size}; "
              f"run dir {self.out}", file=sys.stderr)
        if run.resumes:
            print(f"automix: {run.resumes[-1]}", file=sys.stderr)
        if len(run.val_idx):
            print(f"automix: evaluates on {run.eval_source}", file=sys.stderr)
        for line in run.init_report.lines() if run.init_report is not None else []:
            print(f"automix: {line}", file=sys.stderr)
        if not len(run.val_idx):
            print(f"automix: no validation images (val_split {self.cfg.val_split}): nothing is evaluated, so no "
                  "best.pt is written; last.pt is the final model", file=sys.stderr)

    @staticmethod
    def _skipped_note(run: Any) -> str:
        n = len(run.data.skipped)
        return f", {n} unreadable image(s) skipped, e.g. {run.data.skipped[0]}" if n else ""

    def truncate(self, epoch: int) -> None:
        """Drop summary rows of epochs >= ``epoch`` (written before a kill, redone after the resume)."""
        if not self.enabled or not self.summary.exists():
            return
        with self.summary.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < epoch]
        self._write_rows(rows)

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        extra = list(dict.fromkeys(k for r in rows for k in r if k not in COLUMNS))
        tmp = self.summary.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS + extra, restval="")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.summary)

    def progress(self, epoch: int, step: int, steps: int, logs: dict | None, lr: float, images: int) -> None:
        if not self.enabled or not self.cfg.progress:
            return
        self._seen += images
        if step % self.cfg.log_interval and step != steps:
            return
        now = time.perf_counter()
        rate = self._seen / max(now - self._t, 1e-9)
        self._t, self._seen = now, 0
        loss = float("nan") if logs is None else float(logs["loss"])
        if self.bar is None and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=steps, leave=False, dynamic_ncols=True)
            except ImportError:
                self.bar = False
        if self.bar:
            self.bar.set_description(f"epoch {epoch}")
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
            self.bar.n = step
            self.bar.refresh()
            if step == steps:
                self.bar.close()
                self.bar = None
        else:
            print(f"epoch {epoch} step {step}/{steps} loss {loss:.4f} lr {lr:.4g} {rate:.0f} img/s", file=sys.stderr)

    def epoch_row(self, stats: dict[str, Any]) -> None:
        if not self.enabled:
            return
        rows = []
        if self.summary.exists():
            with self.summary.open() as f:
                rows = list(csv.DictReader(f))
        rows.append({**{k: stats.get(k, "") for k in COLUMNS}, **{k: v for k, v in stats.items() if k not in COLUMNS}})
        self._write_rows(rows)
        if self.tb is not None:
            for key, value in stats.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, stats["epoch"])
        keys = COLUMNS[1:] + [k for k in stats if k not in COLUMNS]
        parts = [f"{k} {stats[k]:.4g}" for k in keys if isinstance(stats.get(k), float)]
        print(f"epoch {stats['epoch']}: " + ", ".join(parts), file=sys.stderr)

    def finish(self, run: Any, seconds: float) -> dict[str, Any]:
        # No validation images: nothing was evaluated, so there is no best (null, and no best.pt).
        metrics = {"best_val_top1": run.best if run.best >= 0 else None, "epochs": run.epoch,
                   "train_seconds_this_session": seconds,
                   "skipped_steps": run.skipped, "skipped_images": len(run.data.skipped),
                   "warnings": [f"from epoch {epoch}: {text}" for text, epoch in run.warnings.items()],
                   "method": self.cfg.method, "model": self.cfg.model,
                   "dataset": self.cfg.dataset}
        if self.cfg.sync_debug is not None:
            metrics["sync_debug"] = run.sync_check.record()
        if self.enabled and self.summary.exists():
            with self.summary.open() as f:
                rows = list(csv.DictReader(f))
            if rows:  # the last epoch's training loss, and the last evaluation (none without validation)
                metrics["train_loss"] = float(rows[-1]["train_loss"])
            evaluated = [r for r in rows if r.get("val_top1") not in (None, "")]
            if evaluated:
                last = evaluated[-1]
                metrics.update({k: float(last[k]) for k in ("val_top1", "val_top1_online", "val_top1_ema")
                                if last.get(k) not in (None, "")})
            (self.out / "metrics.json").write_text(dumps(metrics, indent=2) + "\n")
        return metrics

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
