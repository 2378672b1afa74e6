"""``--sync-debug``: accepted and recorded on CPU, and (with CUDA's switch faked) on only around the training step,
counting each synchronisation by its source line and passing other warnings on."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from automix.cli import main
from automix.train import engine, syncdebug

TINY = ["--model", "preact_resnet18", "--width", "4", "--batch-size", "16", "--eval-batch-size", "64", "--subset", "48",
        "--no-progress", "--log-interval", "1000", "--epochs", "2", "--threads", "1", "--no-save-images"]


def train(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--output", str(out), "--cache-dir", str(tmp_path / "cache"), *args]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_accepted_on_cpu_and_recorded(tmp_path):
    metrics = train(tmp_path, "--sync-debug", "warn")
    assert metrics["sync_debug"] == {"mode": "warn", "device": "cpu", "checked": False, "steps": 6, "syncs": 0,
                                     "where": {}}  # 48 images, batch 16, 2 epochs
    assert "sync_debug" not in train(tmp_path / "off")


def test_bad_mode_is_named(tmp_path, capsys):
    assert main(["train", *TINY, "--output", str(tmp_path / "r"), "--sync-debug", "loud"]) == 2
    assert "--sync-debug must be one of" in capsys.readouterr().err  # the flag given, not the config key
    with pytest.raises(ValueError, match="sync_debug must be one of .* got 'loud'"):
        syncdebug.SyncCheck("loud", torch.device("cpu"))


class FakeCuda:
    """torch.cuda's sync-debug switch, without CUDA: the mode set now, and every mode set."""

    def __init__(self) -> None:
        self.mode, self.history = 0, []

    def get(self) -> int:
        return self.mode

    def set(self, mode) -> None:
        self.mode = mode
        self.history.append(mode)


def test_only_the_training_step_is_checked(tmp_path, monkeypatch):
    cuda = FakeCuda()
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", cuda.get)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", cuda.set)
    real_init = syncdebug.SyncCheck.__init__

    def as_if_cuda(self, mode, device):
        real_init(self, mode, device)
        self.checked = True  # the device is the CPU; the switch above stands in for CUDA's

    monkeypatch.setattr(syncdebug.SyncCheck, "__init__", as_if_cuda)
    real_step, real_eval = engine.Run.train_step, engine.evaluate
    modes_in_eval = []

    def step(self, x, y):
        assert cuda.mode == "warn"  # on inside the step
        warnings.warn("an op called a synchronizing CUDA operation", stacklevel=1)  # as torch warns
        warnings.warn("not about syncs", FutureWarning, stacklevel=1)
        return real_step(self, x, y)

    def evaluate(*args, **kwargs):
        modes_in_eval.append(cuda.mode)
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(engine.Run, "train_step", step)
    monkeypatch.setattr(engine, "evaluate", evaluate)
    with pytest.warns(FutureWarning, match="not about syncs"):  # other warnings come through
        metrics = train(tmp_path, "--sync-debug", "warn")
    record = metrics["sync_debug"]
    assert record["checked"] and record["steps"] == 6 and record["syncs"] == 6
    (where, count), = record["where"].items()
    assert where.startswith("step: ") and where.split(":")[1].strip().endswith("test_syncdebug.py") and count == 6
    assert modes_in_eval and set(modes_in_eval) == {0}  # evaluation runs with the switch off
    # On for each step (6) and each batch fetch (3 + the one that ends the epoch, twice), and back off after each.
    assert cuda.mode == 0 and cuda.history.count("warn") == 14 and cuda.history.count(0) == 14


def test_error_mode_raises_at_the_first_sync_and_restores_the_mode(monkeypatch):
    cuda = FakeCuda()
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", cuda.get)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", cuda.set)
    check = syncdebug.SyncCheck("error", torch.device("cuda"))
    with pytest.raises(RuntimeError, match="synchronizing"):
        with check.region("step"):
            assert cuda.mode == "error"
            raise RuntimeError("called a synchronizing CUDA operation")  # what torch raises in error mode
    assert cuda.mode == 0 and check.steps == 1
