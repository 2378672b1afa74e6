"""Config: YAML + flags precedence, errors that name the key, and the flag-to-object wiring."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import automix
from automix.train.args import add_config_arguments, config_from_args
from automix.train.build import build_method, build_optimizer
from automix.train.config import Config, from_dict, validate

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str]):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_defaults_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"lr": 0.05, "epochs": 3, "method": "cutmix",
                                    "method_opts": {"correct_lam": False}}))
    cfg = parse(["--config", str(path), "--epochs", "7", "--method-opt", "alpha=0.3"])
    assert cfg.lr == 0.05 and cfg.epochs == 7 and cfg.method == "cutmix"
    assert cfg.method_opts == {"correct_lam": False, "alpha": 0.3}
    assert cfg.batch_size == Config().batch_size


def test_timm_flags():
    cfg = parse(["--method", "mixup_cutmix", "--mixup", "0.8", "--cutmix", "1.0", "--cutmix-minmax", "0.2", "0.8",
                 "--mixup-prob", "0.5", "--mixup-switch-prob", "0.3", "--mixup-mode", "elem", "--smoothing", "0.1"])
    method = build_method(cfg, automix.create_model("preact_resnet18", num_classes=10, width=8), 10, 10, 0)
    mixer = method.mixer
    assert isinstance(mixer, automix.mixers.MixChoice) and mixer.prob == 0.5 and mixer.mode == "elem"
    assert mixer.mixers[0].alpha == 0.8 and mixer.mixers[1].cutmix_minmax == (0.2, 0.8)
    torch.testing.assert_close(mixer.probs, torch.tensor([0.7, 0.3]))
    assert mixer.label_smoothing == 0.1


def test_timm_flags_alone_select_the_switch():
    cfg = parse(["--mixup", "0.2"])
    assert cfg.method == "mixup_cutmix" and cfg.mixup == 0.2
    with pytest.raises(ValueError, match="mixup 0.2 applies only to method 'mixup_cutmix'.*'automix'"):
        parse(["--mixup", "0.2", "--method", "automix"])  # issue 13 item 12: was kept, recorded and ignored


def test_cli_alpha_reaches_the_right_mixer():
    """vision#8440: a flag wired to the wrong object is a silent bug; check the wiring."""
    cfg = parse(["--method", "cutmix", "--alpha", "0.2", "--mixup-mode", "pair"])
    method = build_method(cfg, automix.create_model("preact_resnet18", num_classes=10, width=8), 10, 10, 0)
    assert isinstance(method.mixer, automix.mixers.CutMix) and method.mixer.alpha == 0.2 and method.mixer.mode == "pair"
    cfg = parse(["--method", "automix", "--alpha", "1.5", "--method-opt", "mask_loss=0.2", "--smoothing", "0.1"])
    method = build_method(cfg, automix.create_model("preact_resnet18", num_classes=10, width=8), 10, 10, 0)
    assert method.alpha == 1.5 and method.mask_loss_weight == 0.2 and method.label_smoothing == 0.1


def test_mix_block_group_gets_its_own_settings():
    cfg = parse(["--method", "automix", "--lr", "0.2", "--mix-block-lr", "0.1", "--mix-block-momentum", "0",
                 "--min-lr", "0.05", "--mix-block-min-lr", "0.001"])
    method = build_method(cfg, automix.create_model("preact_resnet18", num_classes=10, width=8), 10, 10, 0)
    groups = {g["name"]: g for g in build_optimizer(cfg, method).param_groups}
    assert groups["model"]["lr"] == 0.2 and groups["model"]["momentum"] == 0.9 and groups["model"]["min_lr"] == 0.05
    assert groups["mix_block"]["lr"] == 0.1 and groups["mix_block"]["momentum"] == 0.0
    assert groups["mix_block"]["min_lr"] == 0.001


BAD_FLAGS = [
    (["--lr", "-0.1"], "lr"),
    (["--lr", "0"], "lr"),
    (["--epochs", "0"], "epochs"),
    (["--batch-size", "0"], "batch_size"),
    (["--alpha", "0"], "alpha"),
    (["--alpha", "-1"], "alpha"),
    (["--mixup-prob", "1.5"], "mixup_prob"),
    (["--mixup-switch-prob", "-0.2"], "mixup_switch_prob"),
    (["--mixup-mode", "sample"], "mixup_mode"),
    (["--smoothing", "1.0"], "smoothing"),
    (["--val-split", "1.0"], "val_split"),
    (["--opt", "lamb"], "opt"),
    (["--amp", "fp8"], "amp"),
    (["--min-lr", "1.0"], "min_lr"),
    (["--cutmix-minmax", "0.8", "0.2"], "cutmix_minmax"),
    (["--method", "mixup_cutmix"], "method"),
    (["--on-nan", "ignore"], "on_nan"),
    (["--model-ema-decay", "1.0"], "model_ema_decay"),
    (["--model-ema-end-decay", "0"], "model_ema_end_decay"),
    (["--weight-decay", "-1"], "weight_decay"),
]


@pytest.mark.parametrize("argv,key", BAD_FLAGS, ids=[k for _, k in BAD_FLAGS])
def test_bad_flags_name_the_flag(argv, key):
    """Named as given: the flag (``--val-split must be in [0, 1)``), not the config key."""
    with pytest.raises(ValueError, match=f"^{argv[0]} "):
        parse(argv)


BAD_YAML = [
    ({"lrr": 0.1}, ValueError, "lrr"),
    ({"learning_rate": 0.1}, ValueError, "learning_rate"),
    ({"epochs": "ten"}, TypeError, "epochs"),
    ({"epochs": 2.5}, TypeError, "epochs"),
    ({"lr": "fast"}, TypeError, "lr"),
    ({"channels_last": "yes"}, TypeError, "channels_last"),
    ({"method_opts": [1, 2]}, TypeError, "method_opts"),
    ({"cutmix_minmax": 0.5}, TypeError, "cutmix_minmax"),
    ({"lr": float("nan")}, ValueError, "lr"),
]


@pytest.mark.parametrize("values,error,key", BAD_YAML, ids=[k for *_, k in BAD_YAML])
def test_bad_yaml_names_the_key(tmp_path, values, error, key):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(error, match=key):
        parse(["--config", str(path)])


def test_yaml_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        parse(["--config", str(tmp_path / "nope.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [0.1\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        parse(["--config", str(bad)])
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(TypeError, match="list.yaml"):
        parse(["--config", str(listy)])


def test_unknown_method_opt_is_named():
    cfg = parse(["--method", "automix", "--method-opt", "mask_los=0.1"])
    with pytest.raises(ValueError, match="mask_los"):
        build_method(cfg, automix.create_model("preact_resnet18", num_classes=10, width=8), 10, 10, 0)
    cfg = parse(["--method", "cutmix", "--method-opt", "decay_power=3"])
    with pytest.raises(ValueError, match="decay_power"):
        build_method(cfg, automix.create_model("preact_resnet18", num_classes=10, width=8), 10, 10, 0)


def test_every_shipped_config_parses():
    files = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "bench" not in p.parts)  # bench: protocols
    assert len(files) >= 10
    for path in files:
        cfg = parse(["--config", str(path)])
        assert cfg.method in automix.list_methods(), path


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["lr", "epochs", "batch_size", "mixup_prob", "smoothing", "alpha", "val_split"]),
                       st.one_of(st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
                                 st.text(max_size=3), st.booleans(), st.none()), max_size=3))
def test_config_parser_accepts_only_valid_values(values):
    """Any mapping either gives a valid Config or raises ValueError/TypeError naming one of its keys."""
    try:
        cfg = validate(from_dict(values))
    except (ValueError, TypeError) as exc:
        assert any(k in str(exc) for k in values), exc
        return
    assert cfg.lr > 0 and cfg.epochs >= 1 and cfg.batch_size >= 1 and 0 <= cfg.mixup_prob <= 1


SWITCH_CASES = [  # flags -> (mixup_alpha, cutmix_alpha, switch_prob) the method is built with
    (["--method", "transmix"], (0.8, 1.0, 0.8)),
    (["--method", "transmix", "--mixup-switch-prob", "0.5"], (0.8, 1.0, 0.5)),  # given at the trainer's old default
    (["--method", "transmix", "--mixup", "0.8", "--cutmix", "1.0"], (0.8, 1.0, 0.8)),  # README's "the defaults"
    (["--method", "transmix", "--mixup", "0.8"], (0.8, 1.0, 0.8)),  # was: cutmix_alpha must be in (0.0, inf]
    (["--method", "transmix", "--mixup-switch-prob", "0.3"], (0.8, 1.0, 0.3)),
    (["--method", "mixup_cutmix", "--cutmix", "1.0"], (0.0, 1.0, 0.5)),  # timm's train.py: an alpha not given is off
    (["--mixup", "0.8"], (0.8, 0.0, 0.5)),
]


@pytest.mark.parametrize("argv, expected", SWITCH_CASES)
def test_switch_flags_given_reach_the_method_and_args_yaml_says_what_ran(argv, expected):
    """A switch flag given is passed at any value, one not given is the method's own, and the config written to
    args.yaml and the checkpoint holds the values the method was built with."""
    from automix.train.build import method_kwargs
    from automix.train.config import to_yaml

    cfg = parse(argv)
    kw = method_kwargs(cfg, 4, 10, 0)
    built = create_switch(cfg.method, kw)
    assert (built.mixup_alpha, built.cutmix_alpha, built.switch_prob) == expected
    recorded = yaml.safe_load(to_yaml(cfg))
    assert (recorded["mixup"], recorded["cutmix"], recorded["mixup_switch_prob"]) == expected


def create_switch(method: str, kw: dict):
    """The Mixup/CutMix choice the method is built with, read back as (mixup_alpha, cutmix_alpha, switch_prob)."""
    import types

    from automix.mixers import create_mixer

    if method == "transmix":
        return create_mixer("transmix", **{k: v for k, v in kw.items() if k not in ("total_steps", "seed")})
    return types.SimpleNamespace(mixup_alpha=kw["mixup_alpha"], cutmix_alpha=kw["cutmix_alpha"],
                                 switch_prob=kw["switch_prob"])


def test_switch_flag_in_code_or_yaml_at_the_old_default_is_passed(tmp_path):
    from automix.train.build import method_kwargs

    assert method_kwargs(Config(method="transmix", mixup_switch_prob=0.5), 4, 10, 0)["switch_prob"] == 0.5
    path = tmp_path / "t.yaml"
    path.write_text("method: transmix\nmixup_switch_prob: 0.5\n")
    assert method_kwargs(parse(["--config", str(path)]), 4, 10, 0)["switch_prob"] == 0.5


def test_switch_flags_given_to_another_method_are_refused_at_any_value():
    """--mixup-switch-prob 0.5 (the value that used to count as not given) was kept in args.yaml and dropped."""
    with pytest.raises(ValueError, match=r"--mixup-switch-prob 0.5 applies only to .*'mixpro' \(its own switch_prob "
                                         r"is --method-opt switch_prob=...\)"):
        parse(["--method", "mixpro", "--mixup-switch-prob", "0.5"])
    with pytest.raises(ValueError, match=r"--mixup 0.0 applies only to .*'cutmix'"):
        parse(["--method", "cutmix", "--mixup", "0"])


def test_a_config_written_before_unset_switch_flags_reads_as_what_ran():
    """Older args.yaml / checkpoints / bench.yaml wrote mixup 0, cutmix 0, switch 0.5 for 'not given': a TransMix run
    of those ran 0.8 / 1.0 / 0.8, and a cutmix run used none of them."""
    old = {"mixup": 0.0, "cutmix": 0.0, "cutmix_minmax": None, "mixup_switch_prob": 0.5}
    trans = validate(from_dict({"method": "transmix", **old}))
    assert (trans.mixup, trans.cutmix, trans.mixup_switch_prob) == (0.8, 1.0, 0.8)
    cut = validate(from_dict({"method": "cutmix", **old}))
    assert (cut.mixup, cut.cutmix, cut.mixup_switch_prob) == (None, None, None)


def test_resume_keeps_a_switch_prob_given_at_the_old_default():
    from automix.train.build import method_kwargs
    from automix.train.setup import resume_config

    run = parse(["--method", "transmix", "--mixup-switch-prob", "0.5"])
    state = {"config": dataclasses.asdict(run), "epoch": 1}
    resumed, changed = resume_config(parse(["--epochs", "40"]), state, "last.pt")
    assert method_kwargs(resumed, 4, 10, 0)["switch_prob"] == 0.5 and changed == ["epochs 30 -> 40"]
    with pytest.raises(ValueError, match=r"--mixup-switch-prob 0.8 \(the run's: 0.5\)"):
        resume_config(parse(["--mixup-switch-prob", "0.8", "--method", "transmix"]), state, "last.pt")
