"""Options that cannot work are refused when the method is built (what the model alone tells), or by the trainer
before the run starts (what the image size tells), naming the option and the value; not at the first step."""

from __future__ import annotations

import pytest
import torch

import automix
from automix.cli import main
from automix.mixers.attentivemix import AttentiveMix
from automix.mixers.puzzlemix import PuzzleMix
from automix.mixers.tokenmix import TokenMix


@pytest.fixture(scope="module")
def cnn():
    return automix.create_model("preact_resnet18", num_classes=4, width=4)


@pytest.fixture(scope="module")
def vit():
    return automix.create_model("vit_tiny", num_classes=4, depth=2)


def test_transmix_on_a_cnn_is_refused_when_built(cnn):
    with pytest.raises(ValueError, match=r"^model: CifarResNet has no attention"):
        automix.create_method("transmix", cnn, num_classes=4)


def test_transmix_layer_without_attention_is_refused_when_built(vit):
    with pytest.raises(ValueError, match=r"layer 'blocks\.0\.mlp'.*holds no attention"):
        automix.create_method("transmix", vit, num_classes=4, layer="blocks.0.mlp")
    automix.create_method("transmix", vit, num_classes=4, layer="blocks.0")  # a block holding one is fine


def test_snapmix_head_that_is_not_a_linear_is_refused_when_built(cnn):
    with pytest.raises(TypeError, match=r"head='layer1' must name an nn.Linear.*Sequential"):
        automix.create_method("snapmix", cnn, num_classes=4, head="layer1")


def test_tokenmix_min_tokens_beyond_the_grid_is_refused_at_the_draw():
    mixer = TokenMix(patch_size=4, min_tokens=1000, num_classes=3)
    with pytest.raises(ValueError, match=r"min_tokens=1000 must be below the 64 tokens .* 32x32"):
        mixer(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"min_tokens=64 must be below the 64 tokens"):
        TokenMix(patch_size=4, min_tokens=64).check_image_size((32, 32))
    TokenMix(patch_size=4, min_tokens=63).check_image_size((32, 32))


def test_puzzlemix_block_num_that_never_fits_is_refused():
    with pytest.raises(ValueError, match=r"block_num=3 has no side that divides 32x32"):
        PuzzleMix(block_num=3).check_image_size((32, 32))
    with pytest.raises(ValueError, match=r"block_num=\(3, 5\)"):
        PuzzleMix(block_num=(3, 5)).block_sides((32, 32))
    assert PuzzleMix(block_num=(3, 4)).block_sides((32, 32)) == [4]  # the sides that fit are used
    assert PuzzleMix().block_sides((15, 15)) == [1]  # the default sides keep their documented fallback
    mixer = PuzzleMix(block_num=3, num_classes=2)
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="block_num=3"):
        mixer(x, torch.tensor([0, 1]), context=torch.rand(2, 32, 32))


def test_attentivemix_context_that_is_not_feature_maps_names_layer():
    mixer = AttentiveMix(layer="blocks.1", num_classes=2)
    with pytest.raises(ValueError, match=r"layer='blocks\.1' must give feature maps \[B, C, h, w\]"):
        mixer(torch.rand(2, 3, 16, 16), torch.tensor([0, 1]), context=torch.rand(2, 17, 8))


DIGITS = ["--dataset", "digits", "--subset", "64", "--epochs", "1", "--batch-size", "16", "--no-progress",
          "--no-save-images"]
VIT = ["--model", "vit_tiny", "--model-opt", "depth=1"]


@pytest.mark.parametrize("args, named", [
    (VIT + ["--method", "transmix", "--method-opt", "layer=blocks.0.mlp"], "layer 'blocks.0.mlp'"),
    (["--method", "transmix"], "model: CifarResNet has no attention"),
    (["--method", "tokenmix", "--method-opt", "patch_size=3"], "patch_size=3 does not tile 16x16"),
    (VIT + ["--method", "tokenmix", "--method-opt", "patch_size=3"], "patch_size=3 differs from the model's patch "
                                                                    "size 4"),
    (VIT + ["--method", "tokenmix", "--method-opt", "min_tokens=1000"], "min_tokens=1000 must be below the 16 tokens"),
    (VIT + ["--method", "mixpro", "--method-opt", "mask_patch_size=64"], "mask_patch_size=64 for 16x16"),
    (["--method", "snapmix", "--method-opt", "head=layer1"], "head='layer1'"),
    (["--method", "puzzlemix", "--method-opt", "block_num=3"], "block_num=3 has no side that divides 16x16"),
    (["--method", "attentivemix", "--method-opt", "top_k=100"], "top_k=100 exceeds the 4 cells"),
    (VIT + ["--method", "attentivemix", "--method-opt", "layer=blocks.0"], "layer='blocks.0' must give feature maps"),
], ids=["transmix-layer", "transmix-cnn", "tokenmix-patch", "tokenmix-vit-patch", "tokenmix-min-tokens",
        "mixpro-mask-patch", "snapmix-head", "puzzlemix-block-num", "attentivemix-top-k", "attentivemix-layer"])
def test_trainer_refuses_before_the_run_starts(tmp_path, capsys, monkeypatch, args, named):
    from automix.train import engine

    def no_step(self, x, y):  # the refusal must come before any step
        raise AssertionError("a training step ran")

    monkeypatch.setattr(engine.Run, "train_step", no_step)
    assert main(["train", *DIGITS, *args, "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("automix train: error: "), err  # no run header before it
    assert named in lines[0], lines[0]
    assert not (tmp_path / "r" / "summary.csv").exists()


# ----------------------------------------------------------------------------- before any data is loaded
# A model or method option that the arguments alone refuse is refused before the dataset is decoded and cached
# (before: `--model vit_tiny --model-opt patch_size=8 --img-size 36` on the CIFAR-10 folder decoded and cached all
# 50,000 images at 36 px first).

def _no_data(monkeypatch):
    from automix.data import folder
    from automix.train import setup

    def refuse(*args, **kwargs):
        raise AssertionError("data was loaded before the options were checked")

    monkeypatch.setattr(setup, "load_dataset", refuse)
    monkeypatch.setattr(folder, "decode_files", refuse)


@pytest.mark.parametrize("command", ["train", "show"])
def test_a_patch_size_that_does_not_tile_img_size_is_refused_before_the_data(tmp_path, capsys, monkeypatch, command):
    from test_data import make_folder

    root = make_folder(str(tmp_path / "cifar"), classes=[f"k{i}" for i in range(10)], per_class=1, size=32)
    _no_data(monkeypatch)
    out = ["--output", str(tmp_path / ("r" if command == "train" else "show.png"))]
    assert main([command, "--dataset", "cifar10", "--data-dir", root, "--model", "vit_tiny", "--model-opt",
                 "patch_size=8", "--img-size", "36", "--cache-dir", str(tmp_path / "cache"), *out]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [f"automix {command}: error: img_size must be a multiple of patch_size, got img_size=36 and "
                     "patch_size=8 (given as --img-size 36; --model-opt patch_size=8)"]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, named", [
    (VIT + ["--method", "transmix", "--method-opt", "layer=blocks.0.mlp"], "layer 'blocks.0.mlp'"),
    (VIT + ["--method", "tokenmix", "--method-opt", "min_tokens=1000"], "min_tokens=1000 must be below the 16 tokens"),
    (["--method", "attentivemix", "--method-opt", "top_k=100"], "top_k=100 exceeds the 4 cells"),
    (["--method", "adautomix", "--batch-size", "2", "--method-opt", "mix_samples=3"], "--batch-size 2"),
    (["--model", "preact_resnet18", "--widen", "2"], "--widen 2 applies to the WRNs only"),
], ids=["method-layer", "method-grid", "method-feature-grid", "batch-size", "model-flag"])
def test_model_and_method_options_are_refused_before_the_data(tmp_path, capsys, monkeypatch, args, named):
    _no_data(monkeypatch)
    assert main(["train", *DIGITS, *args, "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert named in err and err.startswith("automix train: error: "), err


def test_the_early_check_agrees_with_the_real_build_and_leaves_the_random_state():
    """Every method on a CNN and a ViT: the meta-device check refuses exactly what the real build refuses, with the
    same message (no false refusal), and draws nothing from the global generator (a run's initial weights stay)."""
    from conftest import MIXER_KWARGS

    from automix.train.build import build_method, build_model, check_fits, check_model_and_method
    from automix.train.config import Config, validate

    def outcome(check):
        try:
            check()
        except (ValueError, TypeError) as err:
            return f"{type(err).__name__}: {err}"
        return "ok"

    def real(cfg):
        check_fits(build_method(cfg, build_model(cfg, 10, 3, 32), 10, 1, 0), cfg, (32, 32), 3)

    refused = 0
    for model, opts in (("preact_resnet18", {"width": 4}), ("vit_tiny", {"depth": 1})):
        for name in automix.list_methods():
            switch = {"mixup": 0.8, "cutmix": 1.0} if name == "mixup_cutmix" else {}  # its timm flags
            method_opts = {} if switch else dict(MIXER_KWARGS.get(name, {}))
            cfg = validate(Config(method=name, model=model, model_opts=opts, method_opts=method_opts, img_size=32,
                                  batch_size=8, **switch), conflicts=False)
            state = torch.get_rng_state()
            early = outcome(lambda: check_model_and_method(cfg, 10, 3, 32))  # noqa: B023
            assert torch.equal(torch.get_rng_state(), state), (model, name)
            assert early == outcome(lambda: real(cfg)), (model, name)  # noqa: B023
            refused += early != "ok"
    assert 0 < refused < len(automix.list_methods())  # the ViT-only methods on the CNN


def test_the_early_check_leaves_what_the_meta_device_cannot_build_to_the_run():
    """A constructor that reads a tensor back (timm's ViTs: drop-path rates via ``.item()``) cannot run on the meta
    device: the early check steps aside instead of failing a run that would build fine, and another library's model
    (``timm:``, ``torchvision:``) is never built there."""
    from automix.models import registry
    from automix.train.build import check_model_and_method
    from automix.train.config import Config, validate

    @automix.register_model("reads_back_test", feature_layer="0")
    def reads_back(num_classes: int = 10, in_chans: int = 3) -> torch.nn.Module:
        rates = [float(v.item()) for v in torch.linspace(0, 0.1, 2)]  # what the meta device cannot do
        return torch.nn.Sequential(torch.nn.Conv2d(in_chans, 4, 3), torch.nn.Dropout(rates[1]),
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, num_classes))

    try:
        with pytest.raises(RuntimeError), torch.device("meta"):
            reads_back()  # the premise: this constructor fails on the meta device
        cfg = validate(Config(method="mixup", model="reads_back_test", img_size=32, batch_size=8), conflicts=False)
        check_model_and_method(cfg, 10, 3, 32)  # no error: left to the run
        real = reads_back()
        assert real(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    finally:
        registry._REGISTRY.pop("reads_back_test", None)
    cfg = validate(Config(method="mixup", model="timm:vit_tiny_patch16_224", img_size=32, batch_size=8),
                   conflicts=False)
    check_model_and_method(cfg, 10, 3, 32)  # not built here at all, so no ImportError without timm either


@pytest.mark.parametrize("method", ["transmix", "tla", "smmix", "mixpro", "tokenmix"])
@pytest.mark.parametrize("command", ["train", "show"])
def test_a_vit_method_on_the_default_cnn_names_the_model_flag_and_a_vit(tmp_path, capsys, method, command):
    """The error names what the user can change: the --model they got (by not giving one), and a ViT to pick;
    tokenmix also takes a patch_size, named as its --method-opt."""
    out = ["--output", str(tmp_path / ("r" if command == "train" else "p.png"))]
    assert main([command, *DIGITS[:4], "--method", method, *out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"automix {command}: error: model: CifarResNet has no "), err
    assert "(model: --model preact_resnet18 (the default); a vision transformer: --model vit_tiny" in err, err
    if method == "tokenmix":
        assert "patch_size= is --method-opt patch_size=" in err, err


@pytest.mark.parametrize("opt, named", [
    ("mask_patch_size=6", "mask_patch_size must be a multiple of patch_size=4"),
    ("layer=blocks.3", "layer 'blocks.3' is not a submodule of VisionTransformer; blocks has blocks.0-blocks.1"),
    ("patch_size=2", "patch_size=2 differs from the model's patch size 4"),
])
def test_a_method_opt_the_method_refuses_is_named_as_given(tmp_path, capsys, opt, named):
    method = "mixpro" if opt.startswith(("mask", "layer")) else "tla"
    args = [*DIGITS, *VIT[:2], "--model-opt", "depth=2", "--method", method, "--output", str(tmp_path / "r")]
    assert main(["train", *args, "--method-opt", opt]) == 2
    err = capsys.readouterr().err
    assert named in err and err.rstrip().endswith(f"(given as --method-opt {opt})"), err
    config = tmp_path / "r.yaml"
    key, value = opt.split("=")
    config.write_text(f"method_opts: {{{key}: {value}}}\n")
    assert main(["train", *args, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    shown = repr(int(value)) if value.isdigit() else repr(value)
    assert err.rstrip().endswith(f"(given as method_opts {key}={shown} (config file {config}))"), err


def test_a_feature_layer_beyond_the_blocks_lists_the_blocks_and_the_option(tmp_path, capsys):
    args = [*DIGITS, *VIT[:2], "--model-opt", "depth=2", "--method", "automix", "--output", str(tmp_path / "r")]
    assert main(["train", *args, "--method-opt", "feature_layer=blocks.7"]) == 2
    err = capsys.readouterr().err
    assert "feature_layer 'blocks.7' is not a submodule of VisionTransformer; blocks has blocks.0-blocks.1 (given as " \
           "--method-opt feature_layer=blocks.7)" in err, err
    with pytest.raises(ValueError, match=r"top-level modules are: patch_embed, pos_drop, blocks \(blocks.0-blocks.1\), "
                                         r"norm"):
        automix.models.resolve_module(automix.create_model("vit_tiny", num_classes=4, depth=2), "nope", "layer")
