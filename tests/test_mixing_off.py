"""Mixing switched off (timm's ``--mixup-off-epoch``; issue 17, item 3): every method, and the trainer."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import MIXER_KWARGS, reads_attention, tiny_vit
from test_train import Boom, rows, train

import automix
from automix.methods import method_spec
from automix.train import engine
from automix.train.config import Config, validate

NAMES = automix.list_methods()


def build(name: str, **kw) -> automix.Method:
    torch.manual_seed(0)
    # methods that read attention (or a patch grid) run on a 2-block ViT, the rest on a PreAct-ResNet
    model = tiny_vit() if reads_attention(name) else automix.create_model("preact_resnet18", num_classes=4, width=4)
    opts = {**MIXER_KWARGS.get(name, {}), **kw}
    return automix.create_method(name, model, num_classes=4, total_steps=10, seed=0, **opts)


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(6, 3, 32, 32, generator=gen), torch.randint(0, 4, (6,), generator=gen)


@pytest.mark.parametrize("name", NAMES)
def test_every_method_trains_on_clean_images_with_mixing_off(name):
    """The loss is the model's plain loss on the clean batch (with the method's label smoothing) and nothing is
    drawn: so the step is the same whatever the method, and turning mixing back on continues the same stream."""
    smoothing = 0.1 if "label_smoothing" in method_spec(name).options else 0.0
    method = build(name, **({"label_smoothing": smoothing} if smoothing else {}))
    x, y = batch()
    method.set_mixing(False)
    reference = copy.deepcopy(method.model)
    state = method.generator.get_state()
    loss, logs = method.training_step(x, y)
    expected = F.cross_entropy(reference(x), y, label_smoothing=smoothing)
    torch.testing.assert_close(loss, expected)
    assert set(logs) == {"loss"} and method.last_params == {}
    assert torch.equal(method.generator.get_state(), state), "no draw from the method's generator"
    if method.mixes:
        method.set_mixing(True)
        mixed, _ = method.training_step(x, y)
        assert not torch.equal(mixed, expected), f"{name} with mixing on is the clean step"


@pytest.mark.parametrize("name", ["automix", "samix"])
def test_learned_methods_keep_their_ema_encoder_following_the_model(name):
    method = build(name)
    method.set_mixing(False)
    opt = torch.optim.SGD(method.param_groups(), lr=0.1, momentum=0.9)
    ema = copy.deepcopy(method.model_k.state_dict())
    block = copy.deepcopy(method.mix_block.state_dict())
    for step in range(2):
        loss, _ = method.training_step(*batch(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_step()
    assert int(method.step) == 2
    assert all(p.grad is None for p in method.mix_block.parameters()), "the Mix Block is not trained"
    assert all(torch.equal(v, block[k]) for k, v in method.mix_block.state_dict().items())
    moved = [k for k, v in method.model_k.state_dict().items() if v.is_floating_point() and not torch.equal(v, ema[k])]
    assert moved, "after_step still moves the EMA encoder"
    assert method.eval_model() is method.model_k


def test_mixing_flag_travels_in_the_state_and_is_checked():
    method = build("cutmix")
    method.set_mixing(False)
    again = build("cutmix")
    again.load_state_dict(method.state_dict())
    assert again.mixing is False
    with pytest.raises(TypeError, match="enabled must be a bool"):
        method.set_mixing("off")


# ---------------------------------------------------------------- the trainer's --mixup-off-epoch
def test_config_checks_mixup_off_epoch():
    assert validate(Config(method="cutmix", epochs=3, mixup_off_epoch=2)).mixup_off_epoch == 2
    with pytest.raises(ValueError, match="mixup_off_epoch must be >= 0"):
        validate(Config(mixup_off_epoch=-1))
    with pytest.raises(ValueError, match=r"mixup_off_epoch must be below epochs \(3\).*got 3"):
        validate(Config(epochs=3, mixup_off_epoch=3))
    with pytest.raises(ValueError, match="mixup_off_epoch 1 stops mixing, but method 'none' mixes nothing"):
        validate(Config(method="none", epochs=3, mixup_off_epoch=1))


def test_mixup_off_epoch_resumes_exactly_across_the_switch(tmp_path, monkeypatch):
    """AutoMix mixes in epochs 0-1 and trains on clean images in epoch 2; a run killed in epoch 1 and resumed
    through the switch ends with the same weights, EMA encoder and Mix Block as the uninterrupted run."""
    args = ["--dataset", "digits", "--subset", "160", "--epochs", "3", "--checkpoint-interval", "4",
            "--method", "automix", "--seed", "3", "--no-save-images", "--mixup-off-epoch", "2"]
    straight = train(tmp_path, *args, name="straight")
    summary = rows(straight)
    assert [bool(r["train_loss_mb"]) for r in summary] == [True, True, False], "mixing stops at epoch 2"

    calls = {"n": 0}
    original = engine.Run.train_step

    def flaky(self, x, y):
        calls["n"] += 1
        if calls["n"] == 16:  # epoch 1 (10 steps an epoch), 6th step: the last checkpoint is after its 4th
            raise Boom("killed")
        return original(self, x, y)

    monkeypatch.setattr(engine.Run, "train_step", flaky)
    with pytest.raises(Boom):
        train(tmp_path, *args, name="resumed")
    monkeypatch.setattr(engine.Run, "train_step", original)
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["step_in_epoch"] == 4
    train(tmp_path, *args, "--resume", "auto", name="resumed")

    keys = ["epoch", "train_loss", "val_top1", "val_top1_online", "val_loss", "train_loss_mb"]
    assert [[r[k] for k in keys] for r in summary] == [[r[k] for k in keys] for r in rows(tmp_path / "resumed")]
    wa = torch.load(straight / "last.pt", weights_only=True)["method"]
    wb = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["method"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa if isinstance(wa[k], torch.Tensor))
    assert wa["_extra_state"]["mixing"] is False and wb["_extra_state"]["mixing"] is False
