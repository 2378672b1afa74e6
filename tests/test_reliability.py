"""Faults a long run must survive: kill -9, a kill mid-save, bad images, NaN, hostile checkpoints, dead ranks.

Each test names the fault in docs/reliability.md it proves.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import spawn_ddp_ranks
from test_data import make_folder

from automix.cli import main
from automix.methods import MixerMethod
from automix.train import checkpoint as ckpt

TINY = ["--model", "preact_resnet18", "--width", "4", "--batch-size", "16", "--eval-batch-size", "128",
        "--no-progress", "--log-interval", "1000", "--no-save-images"]
ROOT = Path(__file__).resolve().parents[1]


def cli(tmp_path: Path, out: str, *args: str) -> int:
    return main(["train", *TINY, "--output", str(tmp_path / out), "--cache-dir", str(tmp_path / "cache"), *args])


def spawn(tmp_path: Path, out: str, *args: str, script: str | None = None) -> subprocess.Popen:
    """``automix train`` in a child process, optionally after running ``script`` (monkeypatches) in it."""
    argv = ["train", *TINY, "--output", str(tmp_path / out), "--cache-dir", str(tmp_path / "cache"), *args]
    code = (script or "") + f"\nfrom automix.cli import main\nimport sys\nsys.exit(main({argv!r}))\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tests'}"}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def run_child(tmp_path: Path, out: str, *args: str, script: str | None = None) -> int:
    """``automix train`` in a child with one thread, so every run of a comparison has the same numerics."""
    proc = spawn(tmp_path, out, *args, script=script)
    _, err = proc.communicate(timeout=300)
    if proc.returncode not in (0, 9):
        print(err)
    return proc.returncode


def summary(run: Path) -> list[list[str]]:
    keys = ["epoch", "train_loss", "val_top1", "val_top1_online", "val_loss", "lr", "skipped_steps"]
    with (run / "summary.csv").open() as f:
        return [[r[k] for k in keys] for r in csv.DictReader(f)]


def same_weights(a: Path, b: Path) -> bool:
    wa = torch.load(a / "last.pt", weights_only=True)["method"]
    wb = torch.load(b / "last.pt", weights_only=True)["method"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa if isinstance(wa[k], torch.Tensor))


RUN = ["--dataset", "digits", "--subset", "480", "--epochs", "3", "--checkpoint-interval", "5", "--seed", "1"]
LONG = ["--dataset", "digits", "--epochs", "4", "--checkpoint-interval", "7", "--seed", "1", "--width", "8"]


@pytest.mark.parametrize("method", ["cutmix", "automix"])
def test_kill9_then_resume_matches_an_uninterrupted_run(tmp_path, method):
    """Fault 1: kill -9 at a random point after the first checkpoint, then --resume."""
    args = [*LONG, "--method", method]
    assert run_child(tmp_path, "straight", *args) == 0
    delay = random.Random().uniform(0.0, 2.0)
    proc = spawn(tmp_path, "victim", *args)
    deadline = time.time() + 120
    while not (tmp_path / "victim" / "last.pt").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(delay)
    assert proc.poll() is None, "the run ended before the kill: make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run_child(tmp_path, "victim", *args, "--resume", "auto") == 0
    assert summary(tmp_path / "straight") == summary(tmp_path / "victim"), f"killed after {delay:.2f}s"
    assert same_weights(tmp_path / "straight", tmp_path / "victim"), f"killed after {delay:.2f}s"


KILL_IN_REPLACE = """
import os, automix.train.checkpoint as C
calls = {"n": 0}
real = os.replace
def replace(a, b):
    calls["n"] += 1
    if calls["n"] == 4:
        os._exit(9)  # killed after the temp file is written, before it is renamed
    real(a, b)
C.os.replace = replace
"""

KILL_IN_WRITE = """
import os, torch, automix.train.checkpoint as C
calls = {"n": 0}
real = torch.save
def save(obj, f):
    calls["n"] += 1
    if calls["n"] == 4:
        f.write(b"PK\\x03\\x04 half a checkpoint")
        f.flush()
        os._exit(9)  # killed while writing
    real(obj, f)
C.torch.save = save
"""


@pytest.mark.parametrize("script", [KILL_IN_REPLACE, KILL_IN_WRITE], ids=["before-rename", "mid-write"])
def test_kill_during_checkpoint_save_keeps_the_previous_one(tmp_path, script):
    """Fault 2: a kill while saving leaves the previous checkpoint loadable, never a half file."""
    args = [*RUN, "--method", "mixup"]
    proc = spawn(tmp_path, "victim", *args, script=script)
    proc.wait(timeout=300)
    assert proc.returncode == 9
    state = ckpt.load(tmp_path / "victim" / "last.pt")  # the 3rd save (after step 15 of 30), intact
    assert (state["epoch"], state["step_in_epoch"]) == (0, 15)
    assert list((tmp_path / "victim").glob(".last.pt.*.tmp")), "the interrupted temp file is left aside"
    assert run_child(tmp_path, "victim", *args, "--resume", "auto") == 0
    assert not list((tmp_path / "victim").glob(".last.pt.*.tmp")), "stale temp files are cleaned"
    assert run_child(tmp_path, "straight", *args) == 0
    assert summary(tmp_path / "straight") == summary(tmp_path / "victim")
    assert same_weights(tmp_path / "straight", tmp_path / "victim")


def test_half_written_checkpoint_is_refused(tmp_path):
    good = tmp_path / "good.pt"
    ckpt.save({"format": "automix-checkpoint-1", "x": torch.arange(1000)}, good)
    half = tmp_path / "half.pt"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="half.pt"):
        ckpt.load(half)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ckpt.load(tmp_path / "missing.pt")


def _bad_folder(tmp_path: Path) -> Path:
    root = Path(make_folder(str(tmp_path / "imgs"), classes=("a", "b"), per_class=24, size=16, ext=".png"))
    jpeg = root / "a" / "0.png"
    from PIL import Image

    Image.new("RGB", (16, 16), (200, 10, 10)).save(root / "a" / "x.jpg", "JPEG")
    (root / "a" / "broken.jpg").write_bytes((root / "a" / "x.jpg").read_bytes()[:60])  # truncated JPEG
    assert jpeg.exists()
    return root


def test_corrupt_image_stops_before_training_or_is_skipped(tmp_path, capsys):
    """Fault 3: a truncated JPEG names the file; --skip-bad-images skips and counts it."""
    root = _bad_folder(tmp_path)
    args = ["--dataset", "imagefolder", "--data-dir", str(root), "--epochs", "1", "--method", "cutmix"]
    assert cli(tmp_path, "stop", *args) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert not (tmp_path / "stop" / "summary.csv").exists(), "no training started"
    assert cli(tmp_path, "skip", *args, "--skip-bad-images") == 0
    metrics = (tmp_path / "skip" / "metrics.json").read_text()
    assert '"skipped_images": 1' in metrics


@pytest.mark.parametrize("case", ["missing", "empty-dataset", "empty-class"])
def test_bad_dataset_layout_fails_before_training(tmp_path, capsys, case):
    root = tmp_path / "d"
    if case == "empty-dataset":
        root.mkdir()
    elif case == "empty-class":
        make_folder(str(root), classes=("a",), per_class=3, size=8)
        (root / "b").mkdir()
    assert cli(tmp_path, "r", "--dataset", "imagefolder", "--data-dir", str(root)) == 2
    err = capsys.readouterr().err
    assert str(root) in err and not (tmp_path / "r" / "summary.csv").exists()


def _nan_at(monkeypatch, call: int) -> None:
    original = MixerMethod.training_step
    count = {"n": 0}

    def step(self, x, y):
        count["n"] += 1
        loss, logs = original(self, x, y)
        if count["n"] == call:
            loss = loss * float("nan")
            logs = {**logs, "loss": loss.detach()}
        return loss, logs

    monkeypatch.setattr(MixerMethod, "training_step", step)


def test_nonfinite_loss_stops_naming_the_step(tmp_path, monkeypatch, capsys):
    """Fault 4: a NaN loss stops the run at that step, keeping the last good checkpoint."""
    _nan_at(monkeypatch, 13)  # 30 steps per epoch: epoch 0, step 12
    args = ["--dataset", "digits", "--subset", "480", "--epochs", "2", "--method", "mixup"]
    assert cli(tmp_path, "nan", *args, "--checkpoint-interval", "10") == 2
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 0 step 12" in err and "loss=nan" in err
    state = ckpt.load(tmp_path / "nan" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (0, 10)
    assert all(torch.isfinite(v).all() for v in state["method"].values() if isinstance(v, torch.Tensor)
               and v.is_floating_point())


def test_nonfinite_loss_can_be_skipped_and_counted(tmp_path, monkeypatch):
    _nan_at(monkeypatch, 13)
    args = ["--dataset", "digits", "--subset", "480", "--epochs", "2", "--method", "mixup", "--on-nan", "skip"]
    assert cli(tmp_path, "skip", *args) == 0
    assert [row[-1] for row in summary(tmp_path / "skip")] == ["1", "1"]


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = ""


def test_malicious_checkpoint_does_not_run_code(tmp_path, capsys):
    """Fault 6: weights_only loading refuses pickled code; nothing is executed."""
    global MARKER
    MARKER = str(tmp_path / "pwned")
    evil = tmp_path / "evil.pt"
    torch.save({"format": "automix-checkpoint-1", "payload": Evil()}, evil)
    with pytest.raises(ValueError, match="evil.pt"):
        ckpt.load(evil)
    assert main(["eval", str(evil)]) == 2
    assert cli(tmp_path, "r", "--dataset", "digits", "--epochs", "1", "--resume", str(evil)) == 2
    assert not Path(MARKER).exists()
    assert "evil.pt" in capsys.readouterr().err


@pytest.mark.parametrize("change,word", [(["--method", "cutmix"], "method"), (["--width", "8"], "width"),
                                         (["--model", "resnet18"], "model")])
def test_checkpoint_from_another_setup_is_refused(tmp_path, capsys, change, word):
    base = ["--dataset", "digits", "--subset", "64", "--epochs", "1", "--method", "mixup"]
    assert cli(tmp_path, "a", *base) == 0
    assert cli(tmp_path, "b", *base, *change, "--resume", str(tmp_path / "a" / "last.pt")) == 2
    err = capsys.readouterr().err
    assert f"continues a run with its own settings, and these differ from them: --{word} " in err, err


def test_checkpoint_with_other_class_count_is_refused(tmp_path, capsys):
    make_folder(str(tmp_path / "data"), classes=("a", "b", "c"), per_class=20, size=16)
    base = ["--dataset", "imagefolder", "--epochs", "1", "--method", "mixup", "--data-dir", str(tmp_path / "data")]
    assert cli(tmp_path, "a", *base) == 0
    make_folder(str(tmp_path / "data"), classes=("d",), per_class=20, size=16)  # a class folder added since
    assert cli(tmp_path, "b", *base, "--epochs", "2", "--resume", str(tmp_path / "a" / "last.pt")) == 2
    err = capsys.readouterr().err
    assert f"resume: data_dir {tmp_path / 'data'} has 4 classes, but the run of" in err
    assert "was trained on 3 classes (extra d)" in err


DIE_ON_RANK1 = """
import os, automix.train.engine as E
calls = {"n": 0}
real = E.Run.train_step
def step(self, x, y):
    calls["n"] += 1
    if self.info.rank == 1 and calls["n"] == 3:
        os._exit(3)
    return real(self, x, y)
E.Run.train_step = step
"""


def test_dead_rank_makes_the_others_fail_not_hang(tmp_path):
    """Fault 8: rank 1 dies mid-run; rank 0 exits with an error (process-group timeout), no hang."""
    argv = ["train", *TINY, "--dataset", "digits", "--subset", "320", "--epochs", "2", "--method", "automix",
                "--dist-timeout", "20", "--output", str(tmp_path / "ddp"), "--cache-dir", str(tmp_path / "cache")]
    procs = spawn_ddp_ranks(argv, DIE_ON_RANK1)
    start = time.time()
    rank0 = procs[0].wait(timeout=180)
    procs[1].wait(timeout=30)
    assert procs[1].returncode == 3
    assert rank0 != 0, "rank 0 must fail when its peer dies"
    assert time.time() - start < 150
    script = textwrap.dedent(procs[0].stderr.read())
    assert "Error" in script or "error" in script
