"""The trainer end to end on tiny data: each dataset kind, resume equality, the other commands, DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_data import make_folder, write_cifar_pickles

from automix.cli import main
from automix.train import engine

TINY = ["--model", "preact_resnet18", "--width", "4", "--batch-size", "16", "--eval-batch-size", "64",
        "--no-progress", "--log-interval", "1000"]


def train(tmp_path: Path, *args: str, name: str = "run") -> Path:
    out = tmp_path / name
    code = main(["train", *TINY, "--output", str(out), "--cache-dir", str(tmp_path / "cache"), *args])
    assert code == 0
    return out


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def test_digits_run_writes_everything(tmp_path):
    run = train(tmp_path, "--dataset", "digits", "--epochs", "2", "--subset", "96", "--method", "automix")
    for name in ("args.yaml", "summary.csv", "last.pt", "best.pt", "metrics.json", "mixes/epoch000.png",
                 "mixes/epoch001.png"):
        assert (run / name).exists(), name
    summary = rows(run)
    assert [r["epoch"] for r in summary] == ["0", "1"]
    assert all(0 <= float(r["val_top1"]) <= 100 and float(r["img_per_s"]) > 0 for r in summary)
    for r in summary:  # AutoMix's loss terms and mask statistics, epoch means, after the fixed columns
        terms = [float(r[f"train_loss_{k}"]) for k in ("one", "mix", "mb", "mask")]
        total = terms[0] + terms[1] + terms[2] + terms[3]  # every loss weight is 1 by default
        assert abs(total - float(r["train_loss"])) < 1e-4 * total, (total, r["train_loss"])
        assert 0 <= float(r["train_mask_std"]) <= 0.5 and 0 < float(r["train_lam_mb"]) < 1
    assert list(summary[0])[:3] == ["epoch", "train_loss", "val_top1"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["method"] == "automix"
    assert "width: 4" in (run / "args.yaml").read_text()


@pytest.mark.parametrize("kind", ["cifar10", "cifar100", "imagefolder", "imagefolder-lazy", "tiny-imagenet"])
def test_each_dataset_kind(tmp_path, kind):
    if kind.startswith("cifar"):
        write_cifar_pickles(str(tmp_path / "data"), kind, per_batch=8 if kind == "cifar10" else 24)
        args = ["--dataset", kind, "--data-dir", str(tmp_path / "data"), "--method", "cutmix", "--alpha", "0.2"]
        if kind == "cifar100":  # 100 classes in 24 images: evaluate on the test split instead
            args += ["--eval-split", "test"]
    elif kind == "imagefolder":
        make_folder(str(tmp_path / "data"), classes=("a", "b", "c"), per_class=12, size=16)
        args = ["--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--method", "mixup"]
    elif kind == "imagefolder-lazy":
        make_folder(str(tmp_path / "data"), classes=("a", "b"), per_class=16, size=120, ext=".jpg")
        args = ["--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--img-size", "32",
                "--method", "fmix", "--workers", "0", "--img-size", "112"]
    else:
        from PIL import Image

        root = tmp_path / "data"
        for w in ("n01", "n02"):
            (root / "train" / w / "images").mkdir(parents=True)
            for i in range(12):
                Image.new("RGB", (64, 64), (40 * i, 100 if w == "n01" else 200, 0)).save(
                    root / "train" / w / "images" / f"{w}_{i}.JPEG")
        (root / "wnids.txt").write_text("n01\nn02\n")
        args = ["--dataset", "tiny-imagenet", "--data-dir", str(root), "--method", "samix"]
    split = [] if "--eval-split" in args else ["--val-split", "0.25"]  # with the test split nothing is held out
    run = train(tmp_path, *args, "--epochs", "1", *split)
    assert len(rows(run)) == 1 and (run / "last.pt").exists()


class Boom(Exception):
    pass


@pytest.mark.parametrize("method", ["automix", "cutmix"])
def test_resume_continues_exactly(tmp_path, monkeypatch, method):
    args = ["--dataset", "digits", "--subset", "160", "--epochs", "3", "--checkpoint-interval", "4",
            "--method", method, "--seed", "3", "--no-save-images",
            "--model-ema", "--model-ema-decay", "0.5", "--model-ema-end-decay", "0.99"]  # a scheduled EMA too
    straight = train(tmp_path, *args, name="straight")

    calls = {"n": 0}
    original = engine.Run.train_step

    def flaky(self, x, y):
        calls["n"] += 1
        if calls["n"] == 17:  # epoch 1, 7th step: the last checkpoint is after its 4th
            raise Boom("killed")
        return original(self, x, y)

    monkeypatch.setattr(engine.Run, "train_step", flaky)
    with pytest.raises(Boom):
        train(tmp_path, *args, name="resumed")
    monkeypatch.setattr(engine.Run, "train_step", original)
    state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) == (1, 4)
    train(tmp_path, *args, "--resume", "auto", name="resumed")

    a, b = rows(straight), rows(tmp_path / "resumed")
    keys = ["epoch", "train_loss", "val_top1", "val_top1_online", "val_top1_ema", "val_loss", "lr"]
    keys += [k for k in a[0] if k.startswith("train_") and k != "train_loss"]  # the method's own terms too
    assert list(a[0]) == list(b[0])
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    wa = torch.load(straight / "last.pt", weights_only=True)["method"]
    wb = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["method"]
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa if isinstance(wa[k], torch.Tensor))
    ea = torch.load(straight / "last.pt", weights_only=True)["model_ema"]
    eb = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["model_ema"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_eval_show_plot_list(tmp_path, capsys):
    run = train(tmp_path, "--dataset", "digits", "--subset", "64", "--epochs", "1", "--model-ema")
    capsys.readouterr()
    assert main(["eval", str(run / "best.pt"), "--output", str(tmp_path / "acc.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"val_top1", "val_top1_online", "val_top1_ema"} <= set(result) and result["images"] == 359
    assert json.loads((tmp_path / "acc.json").read_text())["config"]["width"] == 4
    assert main(["show", "--checkpoint", str(run / "last.pt"), "--image", str(tmp_path / "a.png")]) == 0
    assert main(["show", "--method", "gridmix", "--dataset", "digits", "--image", str(tmp_path / "b.png"),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert main(["plot", str(run), str(run), "--output", str(tmp_path / "c.png")]) == 0
    for name in ("a.png", "b.png", "c.png"):
        assert (tmp_path / name).stat().st_size > 500
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "automix" in out and "preact_resnet18" in out and "digits" in out


def test_cli_errors_name_the_key(tmp_path, capsys):
    assert main(["train", "--dataset", "nope", "--output", str(tmp_path / "r")]) == 2
    assert "name" in capsys.readouterr().err
    assert main(["train", "--lr", "-1", "--output", str(tmp_path / "r")]) == 2
    assert "lr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "two"])
    assert "--epochs" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--batch-size", "5000", "--output", str(tmp_path / "r")]) == 2
    assert "batch_size" in capsys.readouterr().err


def test_resume_refuses_another_model(tmp_path, capsys):
    run = train(tmp_path, "--dataset", "digits", "--subset", "32", "--epochs", "1", "--method", "mixup")
    code = main(["train", *TINY, "--width", "8", "--dataset", "digits", "--subset", "32", "--epochs", "2",
                 "--method", "mixup", "--output", str(run), "--resume", str(run / "last.pt")])
    assert code == 2 and "width" in capsys.readouterr().err


def test_torchrun_two_processes_and_resume(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "automix",
           "train", *TINY, "--dataset", "digits", "--subset", "128", "--method", "automix",
           "--output", str(out), "--cache-dir", str(tmp_path / "cache")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd + ["--epochs", "1"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(rows(out)) == 1 and (out / "last.pt").exists()
    assert "world size 2" in proc.stderr
    # One JSON summary on stdout, rank 0's (the run's metrics), so `| jq` reads it: rank 1 prints nothing.
    summary = json.loads(proc.stdout)
    assert summary["epochs"] == 1 and "val_top1" in summary and "train_loss" in summary, summary
    # Epoch 1 without mixing: the Mix Block and mix head get no gradient, which DDP must be told to expect.
    proc = subprocess.run(cmd + ["--epochs", "2", "--resume", "auto", "--mixup-off-epoch", "1"], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(r["epoch"], bool(r["train_loss_mb"])) for r in rows(out)] == [("0", True), ("1", False)]


def test_model_ema_averages_weights_and_bn_statistics():
    from automix.train.build import ModelEma

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    ema = ModelEma(net, decay=0.5)
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.fill_(4.0)
    start_w = ema.module[0].weight.clone()
    ema.update(net)
    torch.testing.assert_close(ema.module[0].weight, (start_w + net[0].weight) / 2)
    torch.testing.assert_close(ema.module[1].running_mean, torch.full((2,), 2.0))  # 0.5 * 0 + 0.5 * 4
    for _ in range(40):
        ema.update(net)
    torch.testing.assert_close(ema.module[0].weight, net[0].weight)
    assert ema.module[1].num_batches_tracked == net[1].num_batches_tracked


def test_model_ema_end_decay_follows_the_encoder_schedule():
    from automix.methods.ema import ema_momentum
    from automix.train.build import ModelEma

    net = torch.nn.Linear(1, 1, bias=False)
    ema = ModelEma(net, decay=0.5, end_decay=0.9, total_steps=100)
    assert [ema.decay_at(s) for s in (0, 9, 100, 500)] == [0.5, 0.5, 0.9, 0.9]
    assert ema.decay_at(50) == ema_momentum(50, 100, 0.5, 0.9) and 0.5 < ema.decay_at(50) < 0.9
    assert ModelEma(net, decay=0.5).decay_at(100) == 0.5
    with torch.no_grad():
        net.weight.fill_(1.0)
        ema.module.weight.fill_(0.0)
    ema.update(net, step=100)  # 0.9 * 0 + 0.1 * 1
    torch.testing.assert_close(ema.module.weight, torch.full((1, 1), 0.1))
    with pytest.raises(ValueError, match="total_steps"):
        ModelEma(net, decay=0.5, end_decay=0.9)


@pytest.mark.parametrize("method", ["automix", "cutmix"])
def test_bf16_autocast_channels_last_and_clipping(tmp_path, method):
    run = train(tmp_path, "--dataset", "digits", "--subset", "64", "--epochs", "1", "--method", method,
                "--amp", "bf16", "--channels-last", "--clip-grad", "1.0", "--warmup-epochs", "0.5", "--opt", "adamw",
                "--lr", "0.001")
    row = rows(run)[0]
    assert float(row["train_loss"]) == float(row["train_loss"]) and 0 <= float(row["val_top1"]) <= 100


def test_sync_bn_on_cpu_under_ddp_is_refused_before_joining(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")  # no peer exists: a join would hang, the check must come first
    assert main(["train", *TINY, "--dataset", "digits", "--sync-bn", "--device", "cpu",
                 "--output", str(tmp_path / "r")]) == 2
    assert "sync_bn" in capsys.readouterr().err


def test_method_warnings_are_printed_kept_and_resumed(tmp_path, monkeypatch, capsys):
    from automix.methods.automix import AutoMix

    monkeypatch.setattr(AutoMix, "check_epoch",
                        lambda self, means: [f"masks odd ({means['loss']:.4f})"] if means["loss"] > 0 else [])
    args = ["--dataset", "digits", "--subset", "64", "--method", "automix", "--no-save-images"]
    run = train(tmp_path, *args, "--epochs", "1")
    assert "warning: epoch 0: masks odd (" in capsys.readouterr().err
    (first,) = json.loads((run / "metrics.json").read_text())["warnings"]
    assert first.startswith("from epoch 0: masks odd (")
    train(tmp_path, *args, "--epochs", "3", "--resume", "auto")  # the warning keeps its first epoch
    assert "warning: epoch 2: masks odd (" in capsys.readouterr().err  # printed every epoch, kept once
    assert json.loads((run / "metrics.json").read_text())["warnings"] == [first]
