"""The losses agree with torch's own and with each other on mixed batches."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

import automix
from automix import losses


def test_soft_target_ce_equals_ce_on_hard_labels():
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(losses.soft_target_cross_entropy(logits, F.one_hot(y, 4).float()),
                               F.cross_entropy(logits, y))
    per = losses.soft_target_cross_entropy(logits, F.one_hot(y, 4).float(), reduction="none")
    assert per.shape == (6,)
    torch.testing.assert_close(losses.SoftTargetCrossEntropy(reduction="sum")(logits, F.one_hot(y, 4).float()),
                               per.sum())


def test_mixed_ce_equals_soft_target_ce_of_mixed_targets():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 3, 8, 8, generator=gen), torch.randint(0, 5, (8,), generator=gen)
    for name in ("mixup", "cutmix"):
        out = automix.create_mixer(name, num_classes=5, mode="elem")(x, y, gen)
        logits = torch.randn(8, 5, generator=gen)
        torch.testing.assert_close(losses.mixed_cross_entropy(logits, y, out.index, out.lam),
                                   losses.soft_target_cross_entropy(logits, out.y))


def test_mixed_ce_with_smoothing_matches_smoothed_targets():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(8, 3, 8, 8, generator=gen), torch.randint(0, 5, (8,), generator=gen)
    out = automix.create_mixer("mixup", num_classes=5, label_smoothing=0.1)(x, y, gen)
    logits = torch.randn(8, 5, generator=gen)
    torch.testing.assert_close(losses.mixed_cross_entropy(logits, y, out.index, out.lam, label_smoothing=0.1),
                               losses.soft_target_cross_entropy(logits, out.y))


def test_interpolate_loss_matches_mixed_ce():
    logits, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    index, lam = torch.tensor([4, 3, 2, 1, 0]), torch.rand(5)
    ce = partial(F.cross_entropy, reduction="none")
    torch.testing.assert_close(losses.interpolate_loss(ce, logits, y, index, lam),
                               losses.mixed_cross_entropy(logits, y, index, lam))


def test_losses_are_float32_under_bf16():
    logits = torch.randn(4, 3).bfloat16()
    target = torch.softmax(torch.randn(4, 3), 1)
    assert losses.soft_target_cross_entropy(logits, target).dtype == torch.float32
    assert losses.soft_target_bce(logits, target).dtype == torch.float32
    assert losses.mixed_mse(logits, target).dtype == torch.float32


def test_bce_matches_torch_on_multilabel_mix():
    gen = torch.Generator().manual_seed(2)
    y = (torch.rand(6, 4, generator=gen) > 0.5).float()
    out = automix.create_mixer("mixup")(torch.rand(6, 3, 4, 4, generator=gen), y, gen)
    logits = torch.randn(6, 4, generator=gen)
    torch.testing.assert_close(losses.soft_target_bce(logits, out.y), F.binary_cross_entropy_with_logits(logits, out.y))
    assert ((out.y >= 0) & (out.y <= 1)).all()


def test_mse_on_mixed_regression_targets():
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(7, 10, generator=gen), torch.randn(7, 2, 3, generator=gen)
    out = automix.create_mixer("mixup")(x, y, gen)
    pred = torch.randn(7, 2, 3, generator=gen)
    torch.testing.assert_close(losses.mixed_mse(pred, out.y), F.mse_loss(pred, out.y))
    assert losses.mixed_mse(pred, out.y, reduction="none").shape == (7,)
