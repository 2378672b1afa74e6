"""``--resume`` continues the run as it was: options not given are the run's own (a fine-tuning run's
``--head-lr-scale`` included), options that define the run (data, model, starting weights, method, optimiser) are
refused when given with another value, naming the flag or config file, the run's value and the given one, and
``--epochs`` is applied (every per-step schedule spans the new length) and recorded in args.yaml and the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_data import make_folder
from test_train import Boom, rows

from automix.cli import main
from automix.train import engine

BASE = ["--model", "preact_resnet18", "--width", "4", "--batch-size", "8", "--no-progress", "--log-interval", "1000",
        "--no-save-images"]


@pytest.fixture
def data(tmp_path) -> Path:
    """A 2-class train/val/test folder at 12 px: 4 training steps of 8 per epoch."""
    root = tmp_path / "data"
    make_folder(str(root / "train"), classes=("ants", "bees"), per_class=16, size=12)
    make_folder(str(root / "val"), classes=("ants", "bees"), per_class=3, size=12)
    make_folder(str(root / "test"), classes=("ants", "bees"), per_class=4, size=12)
    return root


def train(tmp_path, data, name, *args) -> int:
    return main(["train", *BASE, "--dataset", "imagefolder", "--data-dir", str(data), "--cache-dir",
                 str(tmp_path / "cache"), "--output", str(tmp_path / name), *args])


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("automix train: error: "), err
    return lines[0]


FINETUNE = ["--method", "automix", "--epochs", "2", "--lr", "0.02", "--head-lr-scale", "10", "--checkpoint-interval",
            "1", "--seed", "3"]


def kill_at(monkeypatch, call: int) -> None:
    """Make the ``call``-th training step of the next run raise ``Boom`` (the last checkpoint is the step before)."""
    calls = {"n": 0}
    original = engine.Run.train_step

    def flaky(self, x, y):
        calls["n"] += 1
        if calls["n"] == call:
            raise Boom("killed")
        return original(self, x, y)

    monkeypatch.setattr(engine.Run, "train_step", flaky)


@pytest.mark.parametrize("again", ["all but --head-lr-scale", "no flag"])
def test_resume_without_the_flags_continues_a_finetuning_run_exactly(tmp_path, data, monkeypatch, capsys, again):
    """Resuming a run started with --head-lr-scale 10 without giving it again (torch's 'loaded state dict has a
    different number of parameter groups' before), or with no flag but --resume: the run's own options come back
    from its checkpoint, and the result equals the uninterrupted run."""
    assert train(tmp_path, data, "straight", *FINETUNE) == 0
    kill_at(monkeypatch, 6)  # epoch 1, its 2nd step: last.pt holds epoch 1 after 1 step
    with pytest.raises(Boom):
        train(tmp_path, data, "resumed", *FINETUNE)
    monkeypatch.undo()
    capsys.readouterr()
    if again == "no flag":
        code = main(["train", "--output", str(tmp_path / "resumed"), "--resume", "auto", "--no-progress"])
    else:
        flags = [a for a in FINETUNE if a not in ("--head-lr-scale", "10")]
        code = train(tmp_path, data, "resumed", *flags, "--resume", "auto")
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"automix: resumed from {tmp_path / 'resumed' / 'last.pt'} at epoch 1, step 1\n" in err
    keys = ["epoch", "train_loss", "val_top1", "val_top1_online", "val_loss", "lr"]
    a, b = rows(tmp_path / "straight"), rows(tmp_path / "resumed")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    wa = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    wb = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert all(torch.equal(wa["method"][k], wb["method"][k]) for k in wa["method"]
               if isinstance(wa["method"][k], torch.Tensor))
    assert [(g["name"], g["lr"]) for g in wa["optimizer"]["param_groups"]] == \
        [(g["name"], g["lr"]) for g in wb["optimizer"]["param_groups"]]
    text = (tmp_path / "resumed" / "args.yaml").read_text()
    assert "head_lr_scale: 10.0" in text and "method: automix" in text and "lr: 0.02" in text
    assert text.startswith(f"# resumed from {tmp_path / 'resumed' / 'last.pt'} at epoch 1, step 1\n")
    assert wb["resumes"] == [f"resumed from {tmp_path / 'resumed' / 'last.pt'} at epoch 1, step 1"]


@pytest.fixture
def finished(tmp_path, data) -> Path:
    """A one-epoch fine-tuning run (mixup, --head-lr-scale 10, --initial-checkpoint) to resume."""
    start = tmp_path / "start.pt"
    method = torch.load(_plain_run(tmp_path, data) / "last.pt", weights_only=True)["method"]
    torch.save({k[len("model."):]: v for k, v in method.items() if k.startswith("model.")}, start)
    assert train(tmp_path, data, "run", "--method", "mixup", "--epochs", "1", "--lr", "0.02", "--head-lr-scale", "10",
                 "--initial-checkpoint", str(start)) == 0
    return tmp_path / "run"


def _plain_run(tmp_path, data) -> Path:
    assert train(tmp_path, data, "pre", "--method", "none", "--epochs", "1") == 0
    return tmp_path / "pre"


@pytest.mark.parametrize("given,named", [
    (["--lr", "0.05"], "--lr 0.05 (the run's: 0.02)"),
    (["--head-lr-scale", "5"], "--head-lr-scale 5.0 (the run's: 10.0)"),
    (["--eval-split", "test"], "--eval-split test (the run's: 'val')"),
    (["--img-size", "16"], "--img-size 16 (the run's: the dataset's own size)"),
    (["--method", "cutmix"], "--method cutmix (the run's: 'mixup')"),
    (["--alpha", "0.5"], "--alpha 0.5 (the run's: the method's default)"),  # not "None"
    (["--no-flip"], "--no-flip (the run's: True)"),
    (["--batch-size", "4"], "--batch-size 4 (the run's: 8)"),
    (["--seed", "1"], "--seed 1 (the run's: 0)"),
    (["--initial-checkpoint", "other.pt"], "--initial-checkpoint other.pt (the run's: '"),
], ids=lambda v: v[0] if isinstance(v, list) else None)
def test_a_changed_option_that_defines_the_run_is_refused(tmp_path, data, finished, capsys, given, named):
    before = {n: (finished / n).read_bytes() for n in ("args.yaml", "last.pt", "summary.csv")}
    capsys.readouterr()
    assert train(tmp_path, data, "run", "--epochs", "2", "--resume", "auto", *given) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"resume: {finished / 'last.pt'} continues a run with its own settings, and these differ from them: " \
           f"{named}" in line, line
    assert "another --output" in line
    assert before == {n: (finished / n).read_bytes() for n in before}  # nothing written, args.yaml included


def test_a_changed_data_dir_or_config_file_value_is_named(tmp_path, data, finished, capsys):
    other = tmp_path / "other"
    make_folder(str(other / "train"), classes=("ants", "bees"), per_class=16, size=12)
    capsys.readouterr()
    assert train(tmp_path, other, "run", "--resume", "auto") == 2
    assert f"--data-dir {other} (the run's: '{data}')" in one_error_line(capsys.readouterr().err)
    config = tmp_path / "recipe.yaml"
    config.write_text("lr: 0.05\nsplit_seed: 4\nmethod: mixup\n")  # mixup: the run's own, not a change
    assert train(tmp_path, data, "run", "--config", str(config), "--resume", "auto") == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"split_seed 4 (config file {config}) (the run's: 0); lr 0.05 (config file {config}) (the run's: 0.02)" \
        in line and "method" not in line
    # The same folder written another way is the same folder.
    assert train(tmp_path, Path(str(data) + "/../data"), "run", "--epochs", "2", "--resume", "auto") == 0


def test_epochs_is_applied_and_recorded(tmp_path, data, finished, capsys):
    """--epochs 2 on a finished 1-epoch run trains epoch 1; the cosine, the method's schedules and the weight EMA
    span 2 epochs from there, and args.yaml and the checkpoint say when it changed."""
    capsys.readouterr()
    assert train(tmp_path, data, "run", "--epochs", "2", "--workers", "0", "--resume", "auto") == 0
    err = capsys.readouterr().err
    where = f"resumed from {finished / 'last.pt'} at epoch 1, step 0; changed workers 2 -> 0, epochs 1 -> 2"
    assert f"automix: {where}\n" in err
    assert [r["epoch"] for r in rows(finished)] == ["0", "1"]
    text = (finished / "args.yaml").read_text()
    assert text.startswith(f"# {where}\n") and "\nepochs: 2\n" in text and "\nworkers: 0\n" in text
    assert "head_lr_scale: 10.0" in text and "lr: 0.02" in text  # the run's own, not given again
    state = torch.load(finished / "last.pt", weights_only=True)
    assert state["resumes"] == [where] and state["config"]["epochs"] == 2
    assert state["method"]["_extra_state"]["total_steps"] == 2 * 4  # the method's schedules: 2 epochs of 4 steps
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [0.0, 0.0]  # the cosine ended with the run
    # Fewer epochs than the run has done: refused, naming the flag.
    assert train(tmp_path, data, "run", "--epochs", "1", "--resume", "auto") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "resume: --epochs 1: the run in" in line and "is already at epoch 2, step 0; give --epochs 2 or more" in line


def test_an_optimiser_state_that_does_not_fit_is_a_clear_error(tmp_path, data, finished, capsys):
    """A checkpoint whose optimiser has other parameter groups (one written by another version): torch's bare
    'different number of parameter groups' becomes a message naming the groups."""
    path = finished / "last.pt"
    state = torch.load(path, weights_only=True)
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:1]
    torch.save(state, path)
    capsys.readouterr()
    assert train(tmp_path, data, "run", "--epochs", "2", "--resume", "auto") == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"resume: the optimiser state in {path} does not fit this run's optimiser (parameter groups ['model'] " \
           "there, ['model', 'head'] here" in line, line


def test_mixup_off_epoch_may_change_for_epochs_not_yet_trained(tmp_path, data, finished, capsys):
    """Stopping mixing from an epoch the run has not reached is true of the whole run; from one it has trained with
    mixing, args.yaml would say what the run did not do."""
    capsys.readouterr()
    assert train(tmp_path, data, "run", "--epochs", "3", "--mixup-off-epoch", "2", "--resume", "auto") == 0
    assert "changed mixup_off_epoch 0 -> 2, epochs 1 -> 3" in capsys.readouterr().err
    assert [r["epoch"] for r in rows(finished)] == ["0", "1", "2"]
    assert torch.load(finished / "last.pt", weights_only=True)["method"]["_extra_state"]["mixing"] is False
    assert "\nmixup_off_epoch: 2\n" in (finished / "args.yaml").read_text()
    assert train(tmp_path, data, "run", "--epochs", "4", "--mixup-off-epoch", "1", "--resume", "auto") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--mixup-off-epoch 1 (the run's: 2, which the 3 epoch(s) it has trained followed)" in line, line


def test_resume_on_renamed_class_folders_names_them(tmp_path, data, finished, capsys):
    """The checkpoint holds its run's class names: a data_dir whose class folders were renamed (as many) would
    otherwise continue training with every label on another class."""
    for split in ("train", "val", "test"):
        (data / split / "bees").rename(data / split / "wasps")
    capsys.readouterr()
    assert train(tmp_path, data, "run", "--epochs", "2", "--resume", "auto") == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"resume: data_dir {data}: its classes are not those the run of {finished / 'last.pt'} was trained on " \
           "(missing bees; extra wasps)" in line, line


def test_a_missing_resume_file_is_reported_before_the_output_dir(tmp_path, data, finished, capsys):
    """--output holding a run made the message 'already holds a run; continue it with --resume auto', hiding the
    missing file."""
    capsys.readouterr()
    assert train(tmp_path, data, "run", "--epochs", "2", "--resume", str(tmp_path / "nonexistent.pt")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--resume {tmp_path / 'nonexistent.pt'}: no such checkpoint file or run folder" in line, line
    assert not (tmp_path / "new").exists()
    assert train(tmp_path, data, "new", "--resume", str(tmp_path / "nonexistent.pt")) == 2
    assert "no such checkpoint file" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()  # nothing made for a run that cannot start


def test_an_empty_resume_folder_names_the_flag(tmp_path, data, capsys):
    (tmp_path / "empty").mkdir()
    assert train(tmp_path, data, "new", "--resume", str(tmp_path / "empty")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--resume: the folder {tmp_path / 'empty'} holds no last.pt" in line, line


def test_a_resumed_epochs_time_is_the_sum_of_its_parts(tmp_path, data, monkeypatch):
    """epoch_time of an epoch resumed mid-way counts its steps before the checkpoint too (they are saved in it), but
    not the time lost between the kill and the resume; img_per_s is over the whole epoch alike."""
    import csv
    import time

    step_s, lost_s = 0.15, 2.0
    original = engine.Run.train_step
    calls = {"n": 0}

    def slow(self, x, y):  # 4 steps an epoch; the 4th of the first session is killed after the 3rd's checkpoint
        calls["n"] += 1
        if calls["n"] == 4:
            time.sleep(lost_s)
            raise Boom("killed")
        time.sleep(step_s)
        return original(self, x, y)

    args = ["--epochs", "1", "--checkpoint-interval", "1", "--method", "mixup"]
    monkeypatch.setattr(engine.Run, "train_step", slow)
    with pytest.raises(Boom):
        train(tmp_path, data, "r", *args)
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) == (0, 3)
    seconds, images = state["epoch_time"]
    assert seconds >= 3 * step_s and images == 3 * 8
    assert train(tmp_path, data, "r", *args, "--resume", "auto") == 0
    with (tmp_path / "r" / "summary.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    epoch_time = float(row["epoch_time"])
    assert 4 * step_s <= epoch_time < 4 * step_s + lost_s, epoch_time  # before: only the resumed step, ~0.15 s
    assert float(row["img_per_s"]) * epoch_time == pytest.approx(4 * 8, rel=1e-6)
