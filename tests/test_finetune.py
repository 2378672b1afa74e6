"""Fine-tuning: --initial-checkpoint with each kind of file (a plain state dict, a timm / torchvision-style
checkpoint, an automix last.pt), with the same and another class count; corrupt and foreign files; --pretrained
through a stand-in timm / torchvision (neither is installed here), with and without weights; --head-lr-scale's
parameter groups; and a fine-tuning run that resumes exactly."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
from pathlib import Path

import pytest
import torch
from test_data import make_folder
from test_train import TINY, Boom, rows
from torch import nn

import automix
from automix.cli import build_parser, main
from automix.train import engine
from automix.train.args import config_from_args
from automix.train.build import build_method, build_model, build_optimizer
from automix.train.config import Config, validate
from automix.train.weights import initial_state_dict, load_initial_weights, load_weights

WIDTH = 4


def net(num_classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return automix.create_model("preact_resnet18", num_classes=num_classes, width=WIDTH)


def backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def folders(tmp_path):
    """A 2-class train/val folder (the user's) at 16 px."""
    root = tmp_path / "mine"
    make_folder(str(root / "train"), classes=("ants", "bees"), per_class=16, size=16)
    make_folder(str(root / "val"), classes=("ants", "bees"), per_class=4, size=16)
    return root


def cfg_for(tmp_path, data, **kw) -> Config:
    values = {"dataset": "imagefolder", "data_dir": str(data), "model": "preact_resnet18", "width": WIDTH,
              "batch_size": 8, "epochs": 1, "cache_dir": str(tmp_path / "cache"), "output": str(tmp_path / "o"),
              "save_images": False, "progress": False, **kw}
    return validate(Config(**values))


# ---------------------------------------------------------------- the three kinds of file

def write_plain(path, classes):
    source = net(classes, seed=1)
    torch.save(source.state_dict(), path)
    return source.state_dict()


def write_timm_style(path, classes):
    """timm's train.py checkpoint: the weights under 'state_dict' (here with DDP's 'module.' prefix), an EMA
    copy, the optimiser and the argparse Namespace of its arguments."""
    source = net(classes, seed=2)
    sd = source.state_dict()
    torch.save({"epoch": 7, "arch": "resnet18", "state_dict": {f"module.{k}": v for k, v in sd.items()},
                "state_dict_ema": {k: v + 1 for k, v in sd.items() if v.is_floating_point()},
                "optimizer": {"state": {}, "param_groups": []}, "args": argparse.Namespace(lr=0.1, model="r18"),
                "metric": 71.5}, path)
    return sd


def write_automix(tmp_path, classes):
    """An automix run (AutoMix, so its file also holds an EMA encoder, mix heads and a Mix Block)."""
    data = make_folder(str(tmp_path / f"pre{classes}"), classes=[f"c{i}" for i in range(classes)], per_class=10,
                       size=16)
    out = tmp_path / f"pre{classes}-run"
    assert main(["train", *TINY, "--dataset", "imagefolder", "--data-dir", data, "--epochs", "1", "--batch-size", "8",
                 "--method", "automix", "--no-save-images", "--cache-dir", str(tmp_path / "cache"),
                 "--output", str(out)]) == 0
    state = torch.load(out / "last.pt", weights_only=True)["method"]
    return out / "last.pt", {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}


@pytest.mark.parametrize("kind", ["plain", "timm", "automix"])
@pytest.mark.parametrize("classes", [2, 3])
def test_initial_checkpoint_kinds(tmp_path, folders, capsys, kind, classes):
    path = tmp_path / "start.pt"
    if kind == "plain":
        expected = write_plain(path, classes)
    elif kind == "timm":
        expected = write_timm_style(path, classes)
    else:
        path, expected = write_automix(tmp_path, classes)
    capsys.readouterr()
    run = engine.Run(cfg_for(tmp_path, folders, method="automix", initial_checkpoint=str(path)))
    model = run.method.model.state_dict()
    assert same(backbone(model), backbone(expected))
    # AutoMix's EMA encoder is built on the loaded network: it starts from it too.
    assert same(run.method.model_k.state_dict(), model)
    report = run.init_report
    if classes == 2:  # the file's head fits: loaded as well
        assert torch.equal(model["fc.weight"], expected["fc.weight"]) and report.reinitialised == []
    else:  # another class count: a fresh head of this run's size
        assert model["fc.weight"].shape == (2, expected["fc.weight"].shape[1])
        assert report.reinitialised == ["fc.weight", "fc.bias"] and report.classes == (3, 2)
        assert "re-initialised (3 classes in the file, 2 here): fc.weight, fc.bias" in report.lines()
    assert len(report.loaded) == len(expected) - len(report.reinitialised)
    ignored = " ".join(report.lines())
    if kind == "timm":
        assert "(its 'state_dict' state dict)" in report.source and "state_dict_ema.*" in ignored
    if kind == "automix":
        assert "the online network of an automix checkpoint" in report.source
        assert "model_k.*" in ignored and "mix_block.*" in ignored


def test_initial_checkpoint_header_and_run(tmp_path, folders, capsys):
    path = tmp_path / "start.pt"
    write_plain(path, 5)
    code = main(["train", *TINY, "--dataset", "imagefolder", "--data-dir", str(folders), "--epochs", "1",
                 "--batch-size", "8", "--method", "cutmix", "--initial-checkpoint", str(path), "--no-save-images",
                 "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"automix: initial weights from {path} (a state dict): " in err
    assert "automix: re-initialised (5 classes in the file, 2 here): fc.weight, fc.bias" in err
    assert f"initial_checkpoint: {path}" in (tmp_path / "run" / "args.yaml").read_text()


def test_a_run_folder_is_its_best_network(tmp_path):
    path, expected = write_automix(tmp_path, 2)
    state, source, _, _ = initial_state_dict(path.parent)
    assert source.startswith(str(path.parent / "best.pt")) and same(state, expected)  # one epoch: best is last


# ---------------------------------------------------------------- what does not fit, and bad files

def test_another_width_is_a_clear_error(tmp_path):
    torch.save(automix.create_model("preact_resnet18", num_classes=2, width=8).state_dict(), tmp_path / "w8.pt")
    state, source, _, _ = initial_state_dict(tmp_path / "w8.pt")
    with pytest.raises(ValueError, match=r"does not fit model CifarResNet outside its classifier head \(fc\): "
                                         r"\d+ tensor\(s\) of another shape: stem.0.weight is \[8, 3, 3, 3\] there, "
                                         r"\[4, 3, 3, 3\] here.*--width"):
        load_weights(net(2), state, source)


def test_missing_backbone_tensors_are_an_error_missing_head_is_not(tmp_path):
    full = net(2, seed=3).state_dict()
    no_head = {k: v for k, v in full.items() if not k.startswith("fc.")}
    report = load_weights(net(2), no_head, "x")
    assert report.reinitialised == ["fc.weight", "fc.bias"]
    partial = {k: v for k, v in full.items() if not k.startswith("layer4.")}
    with pytest.raises(ValueError, match=r"tensor\(s\) missing from the file: layer4\."):
        load_weights(net(2), partial, "x")


def test_foreign_and_corrupt_files(tmp_path, folders, capsys):
    torch.save(nn.Linear(3, 4).state_dict(), tmp_path / "linear.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "meta.pt")
    good = tmp_path / "good.pt"
    write_plain(good, 2)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:2000])
    (tmp_path / "notes.yaml").write_text("lr: 0.1\n")

    class Payload:  # a pickle that would run code when loaded without weights_only
        def __reduce__(self):
            return (print, ("ran code",))

    torch.save({"state_dict": Payload()}, tmp_path / "payload.pt")
    cases = {"linear.pt": "shares no tensor names with model CifarResNet",
             "list.pt": "holds no network weights: it holds a list",
             "meta.pt": "holds no network weights: a dict with keys 'epoch', 'note'",
             "truncated.pt": "is truncated or corrupt (2,000 bytes",
             "notes.yaml": "is not a checkpoint: it is a YAML file",
             "payload.pt": "cannot be loaded safely: it holds print", "absent.pt": "--initial-checkpoint not found"}
    for name, text in cases.items():
        code = main(["train", *TINY, "--dataset", "imagefolder", "--data-dir", str(folders), "--epochs", "1",
                     "--batch-size", "8", "--method", "none", "--initial-checkpoint", str(tmp_path / name),
                     "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "r")])
        out, err = capsys.readouterr()
        line = err.strip().splitlines()[-1]
        assert code == 2 and text in line and "--initial-checkpoint" in line, (name, line)
        assert "ran code" not in out and "weights_only" not in line
        assert not (tmp_path / "r").exists()  # the run dir it made is removed again


def automix_method(classes: int):
    torch.manual_seed(4)
    return automix.create_method("automix", net(classes, seed=4), num_classes=classes, seed=0)


@pytest.mark.parametrize("kind", ["method.state_dict", "lightning-style"])
def test_state_dicts_with_entries_that_are_not_tensors(tmp_path, folders, capsys, kind):
    """``method.state_dict()`` (README: "holds everything") and a Lightning checkpoint of a module holding the method
    have ``_extra_state`` entries (the generator state, total_steps): they were refused as 'no network weights'."""
    method = automix_method(3)
    state = method.state_dict()
    assert not isinstance(state["_extra_state"], torch.Tensor)
    path = tmp_path / "method.pt"
    if kind == "method.state_dict":
        torch.save(state, path)
        prefix, skipped = "model.", "_extra_state"
    else:  # what Lightning's Trainer.save_checkpoint writes for examples/lightning_module.py (minus its loops)
        torch.save({"epoch": 0, "global_step": 4, "pytorch-lightning_version": "2.6.6",
                    "state_dict": {f"method.{k}": v for k, v in state.items()}, "optimizer_states": [],
                    "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": {"method": "automix"}}, path)
        prefix, skipped = "method.model.", "method._extra_state"
    capsys.readouterr()
    code = main(["train", *TINY, "--dataset", "imagefolder", "--data-dir", str(folders), "--epochs", "1",
                 "--batch-size", "8", "--method", "none", "--initial-checkpoint", str(path), "--no-save-images",
                 "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"the network under {prefix!r}: 105 tensors loaded, 2 re-initialised, " in err
    assert f"automix: skipped (not tensors): {skipped}\n" in err
    assert f"{prefix[:-len('model.')]}model_k.* (107)" in err  # the EMA encoder: not the online network
    run = engine.Run(cfg_for(tmp_path, folders, method="none", initial_checkpoint=str(path),
                             output=str(tmp_path / "o")))
    assert same(backbone(run.method.model.state_dict()), backbone(method.model.state_dict()))
    assert run.init_report.skipped == [skipped] and run.init_report.prefix == prefix


def test_real_lightning_checkpoint(tmp_path):
    """A checkpoint Lightning wrote for examples/lightning_module.py, read with weights_only=True."""
    from test_examples import lightning_or_skip, load_example

    lightning_or_skip()
    ex = load_example("lightning_module.py")
    module = ex.MixingModule("automix", num_classes=10, width=WIDTH, seed=0)
    trainer = ex.trainer(1)
    trainer.fit(module, torch.utils.data.DataLoader(ex.synthetic(16), batch_size=8))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state, source, left, skipped = initial_state_dict(tmp_path / "last.ckpt")
    report = load_weights(net(2), state, source, ignored=left, skipped=skipped)
    assert report.prefix == "method.model." and report.skipped == ["method._extra_state"]
    assert report.reinitialised == ["fc.weight", "fc.bias"] and report.classes == (10, 2)


def test_a_file_with_no_tensors_is_still_refused(tmp_path):
    torch.save({"state_dict": {"_extra_state": {"total_steps": 8}}, "epoch": 1}, tmp_path / "none.pt")
    with pytest.raises(ValueError, match=r"--initial-checkpoint .*none.pt holds no network weights: a dict with keys "
                                         r"'state_dict', 'epoch' and no tensors"):
        initial_state_dict(tmp_path / "none.pt")
    torch.save({"_extra_state": {"total_steps": 8}, "head.w": torch.zeros(2)}, tmp_path / "other.pt")
    state, source, left, skipped = initial_state_dict(tmp_path / "other.pt")
    assert skipped == ["_extra_state"]
    with pytest.raises(ValueError, match="shares no tensor names with model CifarResNet"):
        load_weights(net(2), state, source, skipped=skipped)


@pytest.mark.parametrize("classes", [2, 5])
def test_batchnorm_counters_are_not_reported_as_reinitialised(tmp_path, classes):
    """A file without BatchNorm's num_batches_tracked (many published state dicts): the header listed the 20
    counters as re-initialised layers."""
    full = net(classes, seed=6).state_dict()
    counters = [k for k in full if k.endswith("num_batches_tracked")]
    assert counters
    report = load_weights(net(2), {k: v for k, v in full.items() if k not in counters}, "x")
    head = ["fc.weight", "fc.bias"] if classes != 2 else []
    assert report.reinitialised == head and report.counters == counters
    assert report.lines()[0] == f"initial weights from x: {len(full) - len(counters) - len(head)} tensors loaded, " \
                                f"{len(head)} re-initialised, 0 ignored"
    assert not any("num_batches_tracked" in line for line in report.lines())


def test_pretrained_and_initial_checkpoint_conflict():
    with pytest.raises(ValueError, match="initial_checkpoint 'a.pt' and pretrained both give the starting weights"):
        validate(Config(model="timm:resnet18", pretrained=True, initial_checkpoint="a.pt"))
    with pytest.raises(ValueError, match="pretrained: model 'preact_resnet18' has no published weights.*"
                                         "--initial-checkpoint FILE"):
        validate(Config(pretrained=True))


# ---------------------------------------------------------------- --pretrained through stand-ins

class TinyNet(nn.Module):
    """A timm-style network whose classifier is ``head`` (timm's name for it in most models)."""

    def __init__(self, num_classes: int = 1000, width: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.stem(x).mean((2, 3)))


def published(num_classes: int = 1000) -> dict:
    torch.manual_seed(42)
    return TinyNet(num_classes).state_dict()


def stand_in_timm(monkeypatch, offline: bool) -> None:
    timm = types.ModuleType("timm")

    def create_model(arch, pretrained=False, num_classes=1000, **kw):
        model = TinyNet(num_classes, **kw)
        if pretrained:
            if offline:  # what timm raises with no network and nothing in the Hugging Face cache
                raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find "
                              "them in the cached files.")
            model.load_state_dict(published(num_classes))
        return model

    timm.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", timm)


def stand_in_torchvision(monkeypatch, offline: bool) -> None:
    tv, models = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")

    class Weights:
        @staticmethod
        def get_state_dict(progress=True):
            if offline:
                import urllib.error

                raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
            return published()

    models.get_model = lambda arch, weights=None, num_classes=1000, **kw: TinyNet(num_classes, **kw)
    models.get_model_weights = lambda arch: types.SimpleNamespace(DEFAULT=Weights)
    tv.models = models
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)


@pytest.mark.parametrize("library", ["timm", "torchvision"])
def test_pretrained_weights_load_with_a_new_head(tmp_path, folders, capsys, monkeypatch, library):
    (stand_in_timm if library == "timm" else stand_in_torchvision)(monkeypatch, offline=False)
    run = engine.Run(cfg_for(tmp_path, folders, model=f"{library}:tiny", pretrained=True, method="cutmix"))
    model, weights = run.method.model.state_dict(), published()
    assert same({k: v for k, v in model.items() if not k.startswith("head.")},
                {k: v for k, v in weights.items() if not k.startswith("head.")})
    assert model["head.weight"].shape == (2, WIDTH)
    assert run.init_report.source == f"{library}:tiny (published weights)"
    assert run.init_report.reinitialised == ["head.weight", "head.bias"] and run.init_report.classes == (1000, 2)


@pytest.mark.parametrize("library", ["timm", "torchvision"])
def test_pretrained_without_weights_is_a_clear_error(tmp_path, folders, capsys, monkeypatch, library):
    (stand_in_timm if library == "timm" else stand_in_torchvision)(monkeypatch, offline=True)
    code = main(["train", "--dataset", "imagefolder", "--data-dir", str(folders), "--model", f"{library}:tiny",
                 "--pretrained", "--width", "4", "--epochs", "1", "--batch-size", "8", "--no-progress",
                 "--method", "none", "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "r")])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    cache = "Hugging Face cache" if library == "timm" else "torch hub cache"
    reason = "OSError: We couldn't connect" if library == "timm" else "URLError"
    assert code == 2 and line.startswith(f"automix train: error: --pretrained: no pretrained weights for "
                                         f"'{library}:tiny' here: not in the {cache}"), line
    assert reason in line and "give --initial-checkpoint FILE" in line


def test_real_library_offline_gives_the_same_error(tmp_path, monkeypatch):
    """With torchvision installed: an empty hub cache and no network give the clear error, not a traceback."""
    pytest.importorskip("torchvision")
    import socket

    from automix.models.external import pretrained_state_dict

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)

    def refuse(*a, **k):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(FileNotFoundError, match="no pretrained weights for 'torchvision:resnet18' here"):
        pretrained_state_dict("torchvision:resnet18")


# ---------------------------------------------------------------- --head-lr-scale

@pytest.mark.parametrize("method", ["none", "automix"])
def test_head_lr_scale_groups(method):
    cfg = validate(Config(method=method, lr=0.01, min_lr=0.001, head_lr_scale=10.0, mix_block_lr=0.05))\
        if method == "automix" else validate(Config(method=method, lr=0.01, min_lr=0.001, head_lr_scale=10.0))
    m = automix.create_method(method, net(3), num_classes=3, total_steps=10, seed=0)
    opt = build_optimizer(cfg, m)
    groups = {g["name"]: g for g in opt.param_groups}
    heads = {id(p) for h in m.head_modules() for p in h.parameters()}
    assert {id(p) for p in groups["head"]["params"]} == heads
    assert groups["head"]["base_lr"] == pytest.approx(0.1) and groups["head"]["min_lr"] == pytest.approx(0.01)
    assert groups["model"]["base_lr"] == 0.01 and not heads & {id(p) for p in groups["model"]["params"]}
    trained = [p for g in m.param_groups() for p in g["params"]]
    assert sorted(map(id, trained)) == sorted(id(p) for g in opt.param_groups for p in g["params"])
    if method == "automix":  # the Mix Block keeps its own group and lr; the mix head is a head
        assert groups["mix_block"]["base_lr"] == 0.05 and len(groups["head"]["params"]) == 4
    plain = build_optimizer(dataclasses.replace(cfg, head_lr_scale=1.0), m)
    assert "head" not in [g["name"] for g in plain.param_groups]


# ---------------------------------------------------------------- a fine-tuning run resumes exactly

def test_finetuning_resumes_exactly(tmp_path, folders, monkeypatch):
    start, _ = write_automix(tmp_path, 3)
    args = ["--dataset", "imagefolder", "--data-dir", str(folders), "--epochs", "3", "--batch-size", "8",
            "--checkpoint-interval", "2", "--method", "automix", "--seed", "5", "--no-save-images",
            "--initial-checkpoint", str(start), "--lr", "0.02", "--head-lr-scale", "5",
            "--cache-dir", str(tmp_path / "cache")]

    def train(*extra, name):
        assert main(["train", *TINY, *args, *extra, "--output", str(tmp_path / name)]) == 0

    train(name="straight")
    calls = {"n": 0}
    original = engine.Run.train_step

    def flaky(self, x, y):
        calls["n"] += 1
        if calls["n"] == 7:  # epoch 1 (4 steps each), its 3rd step: the last checkpoint is after its 2nd
            raise Boom("killed")
        return original(self, x, y)

    monkeypatch.setattr(engine.Run, "train_step", flaky)
    with pytest.raises(Boom):
        train(name="resumed")
    monkeypatch.setattr(engine.Run, "train_step", original)
    state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) == (1, 2)
    # The resumed run takes every weight from last.pt; the initial checkpoint is not read again.
    (tmp_path / "moved.pt").write_bytes(start.read_bytes())
    start.unlink()
    train("--resume", "auto", name="resumed")
    a, b = rows(tmp_path / "straight"), rows(tmp_path / "resumed")
    keys = ["epoch", "train_loss", "val_top1", "val_top1_online", "val_loss", "lr", "train_loss_mb"]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    wa = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    wb = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert all(torch.equal(wa["method"][k], wb["method"][k]) for k in wa["method"]
               if isinstance(wa["method"][k], torch.Tensor))
    assert [g["lr"] for g in wa["optimizer"]["param_groups"]] == [g["lr"] for g in wb["optimizer"]["param_groups"]]


# ---------------------------------------------------------------- the fine-tuning recipes

RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs" / "finegrained").glob("*.yaml")) + [
    Path(__file__).resolve().parents[1] / "configs" / "cpu" / "finetune_folder.yaml"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_finetuning_recipes_build_and_step(path, monkeypatch):
    """Each recipe's model (a stand-in torchvision giving automix's torchvision-layout ResNet-18 at width 4), its
    published weights with a new head, method, optimiser, and one training step."""
    tv, models = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")

    def get_model(arch, weights=None, num_classes=1000, **kw):
        torch.manual_seed(0)
        return automix.create_model("resnet18", num_classes=num_classes, width=4)

    models.get_model = get_model
    models.get_model_weights = lambda arch: types.SimpleNamespace(DEFAULT=types.SimpleNamespace(
        get_state_dict=lambda progress=True: get_model(arch).state_dict()))
    tv.models = models
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    text = path.read_text()
    assert text.startswith("# ") and "automix train --config configs/" in text
    assert path.parent.name == "cpu" or "Published top-1: " in text
    cfg = config_from_args(build_parser().parse_args(["train", "--config", str(path)]))
    assert cfg.pretrained and cfg.model.startswith("torchvision:")
    model = build_model(cfg, 5, 3)
    report = load_initial_weights(model, cfg.model, cfg.pretrained, cfg.initial_checkpoint)
    assert report.reinitialised == ["fc.weight", "fc.bias"] and report.classes == (1000, 5)
    method = build_method(cfg, model, 5, total_steps=10, seed=0)
    opt = build_optimizer(cfg, method)
    loss, _ = method.training_step(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()


# ---------------------------------------------------------------- more kinds of file, and clearer refusals

def test_a_method_state_dict_under_a_method_entry(tmp_path):
    """``torch.save({"method": method.state_dict(), "optimizer": ...})`` was refused as 'holds no network weights'."""
    method = automix_method(2)
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    torch.save({"method": method.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, tmp_path / "m.pt")
    state, source, left, skipped = initial_state_dict(tmp_path / "m.pt")
    assert "'method'" in source and skipped == ["_extra_state"]
    report = load_weights(net(2), state, source, ignored=left, skipped=skipped)
    assert report.prefix == "model." and not report.reinitialised
    assert same(report_model_state(state, "model."), method.model.state_dict())


def report_model_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def test_safetensors_files_load(tmp_path, monkeypatch):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    expected = net(2, seed=5).state_dict()
    safetensors_torch.save_file({k: v.contiguous() for k, v in expected.items()}, str(tmp_path / "w.safetensors"))
    state, source, left, skipped = initial_state_dict(tmp_path / "w.safetensors")
    assert "safetensors" in source and same(state, expected)
    model = net(2)
    load_weights(model, state, source, ignored=left, skipped=skipped)
    assert same(model.state_dict(), expected)
    # Without the package: say what to install, not "a file of another format".
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ValueError, match=r"--initial-checkpoint .*w.safetensors is a safetensors file; reading it "
                                         r"needs the safetensors package \(pip install safetensors\)"):
        initial_state_dict(tmp_path / "w.safetensors")


def test_an_empty_folder_names_the_flag(tmp_path, folders, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"^--initial-checkpoint: the folder .*empty holds no best.pt or "
                                                 r"last.pt"):
        initial_state_dict(tmp_path / "empty")


def test_a_stem_of_other_input_channels_is_named(tmp_path):
    """A 1-channel (grayscale) network's weights into an RGB run: the hint said only '--width or --widen?'."""
    gray = automix.create_model("preact_resnet18", num_classes=2, width=WIDTH, in_chans=1).state_dict()
    with pytest.raises(ValueError, match=r"stem.0.weight is \[4, 1, 3, 3\] there, \[4, 3, 3, 3\] here.*The file's "
                                         r"network takes 1 input channel\(s\), this one 3"):
        load_weights(net(2), gray, "gray.pt")
