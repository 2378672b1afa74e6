"""timm's ``--mixup-mode`` for the Mixup/CutMix switch (issue 17, item 3): 'elem' and 'pair' choose per sample or
per pair, and every sample's targets are the mix it really got."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import sample_id_probe

import automix

BATCH = 16


def switch_draws(mode: str, seed: int):
    """A batch of the sample-id probe through timm's switch: channel j of sample i is the share of sample j in it."""
    mixer = automix.create_mixer("mixup_cutmix", mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5, prob=0.8,
                                 mode=mode)
    out = mixer(sample_id_probe(BATCH, 16, 16), torch.eye(BATCH), torch.Generator().manual_seed(seed))
    return out, torch.arange(BATCH)


@pytest.mark.parametrize("mode", ["elem", "pair"])
def test_each_samples_targets_are_its_realised_mix(mode):
    for seed in range(5):
        out, i = switch_draws(mode, seed)
        own = out.x[i, i].mean((1, 2))
        partner = out.x[i, out.index].mean((1, 2))
        moved = out.index != i
        # Sample i's target weights for itself and its partner are the shares of the two in its pixels.
        torch.testing.assert_close(out.y[i, i][moved], own[moved], atol=1e-6, rtol=0)
        torch.testing.assert_close(out.y[i, out.index][moved], partner[moved], atol=1e-6, rtol=0)
        torch.testing.assert_close(out.lam[moved], own[moved], atol=1e-6, rtol=0)
        assert torch.allclose(out.y.sum(1), torch.ones(BATCH))
        # prob=0.8: the samples (or pairs) left unmixed keep their image and a one-hot target.
        kept = out.lam == 1
        assert torch.equal(out.x[kept], sample_id_probe(BATCH, 16, 16)[kept])
        assert torch.equal(out.y[kept], torch.eye(BATCH)[kept])


def test_elem_mode_draws_a_lambda_and_a_mixer_for_each_sample():
    lams, kinds = [], []
    for seed in range(5):
        out, _ = switch_draws("elem", seed)
        mixed = out.lam < 1
        lams.append(out.lam[mixed])
        kinds.append(out.params.extra["choice"][mixed])
    lam, kind = torch.cat(lams), torch.cat(kinds)
    blended = lam[kind == 0]  # mixup's lambdas are continuous; CutMix's realised areas are multiples of 1/256
    assert blended.unique().numel() == blended.numel() > 10, "every mixed sample has its own lambda"
    assert set(kind.tolist()) == {0, 1} and 0.3 < kind.float().mean() < 0.7, "mixup or cutmix, per sample"


def test_pair_mode_shares_the_draw_inside_each_pair_as_timm():
    """timm's 'pair' mixes i with j and j with i with one lambda and one box: the two swap the same region."""
    for seed in range(5):
        out, i = switch_draws("pair", seed)
        j = out.index
        assert torch.equal(j[j], i), "the pairing is symmetric"
        choice = out.params.extra["choice"]
        assert torch.equal(out.lam, out.lam[j]) and torch.equal(choice, choice[j])
        # Where i shows j, j shows i: the partner-weight maps of the two members are the same.
        assert torch.equal(out.x[i, j], out.x[j, i])
        lam = out.lam[(out.lam < 1) & (out.params.extra["choice"] == 0)]  # mixup's: continuous, so no ties
        assert lam.unique().numel() == lam.numel() // 2, "one lambda per pair, not per batch"


@pytest.mark.parametrize(("argv", "named"), [
    (["--method", "snapmix", "--mixup-mode", "pair"],
     r"mode 'pair' does not apply to snapmix: .* \(given as --mixup-mode 'pair', YAML mixup_mode\)"),
    (["--method", "smoothmix", "--mixup-lam", "0.3"],
     r"lam=0.3 does not apply to smoothmix: .* \(given as --mixup-lam 0.3, YAML mixup_lam\)"),
    (["--mixup", "1.0", "--cutmix-minmax", "0.2", "0.8", "--mixup-lam", "0.3"],
     r"cutmix_minmax=.* sizes the box, but lam=0.3 is given.*\(given as --cutmix-minmax \[0.2, 0.8\], YAML "
     r"cutmix_minmax; --mixup-lam 0.3, YAML mixup_lam\)"),
])
def test_a_mode_or_lam_the_method_refuses_names_the_flag_it_came_from(tmp_path, capsys, argv, named):
    """``--mixup-mode pair`` with snapmix failed with "mode must be one of ['batch', 'elem'], got 'pair'": no flag,
    no method. The mixer's error names the mode and the method, and the trainer adds the flag it came from."""
    from automix.cli import main

    code = main(["train", *argv, "--subset", "16", "--batch-size", "8", "--epochs", "1", "--width", "4",
                 "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert re.search(named, err), err
    assert not (tmp_path / "r").exists()
    # Given as the method's own option, the error names that option, as given, and no timm flag.
    assert main(["train", "--method", "snapmix", "--method-opt", "mode=pair", "--subset", "16", "--epochs", "1",
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.rstrip().endswith("(given as --method-opt mode=pair)") and "--mixup-mode" not in err, err
