"""PNG grids of mixes for every mixer and for AutoMix / SAMix."""

from __future__ import annotations

import pytest
import torch
from conftest import build_mixer
from PIL import Image

import automix
from automix import viz


def test_grid_for_every_mixer(tmp_path, mixer_name):
    x = torch.rand(6, 3, 16, 16)
    y = torch.randint(0, 5, (6,))
    path = viz.save_mix_grid(tmp_path / f"{mixer_name}.png", build_mixer(mixer_name, mode="elem"), x, y, n=4, scale=2)
    img = Image.open(path)
    assert img.size[0] >= 4 * 16 * 2 + 64 and img.size[1] == 4 * 16 * 2 + viz.HEADER + viz.FOOTER


def test_preview_mask_matches_the_mix():
    x = torch.rand(5, 3, 16, 16)
    parts = viz.preview(automix.create_mixer("cutmix", num_classes=3, mode="elem"), x, torch.zeros(5).long())
    expected = torch.lerp(parts["x"], parts["partner"], parts["mask"])
    torch.testing.assert_close(parts["mixed"], expected)
    moved = (parts["partner"] != parts["x"]).flatten(1).any(1)  # a sample paired with itself keeps all
    torch.testing.assert_close(1 - parts["mask"].mean((1, 2, 3))[moved], parts["lam"][moved])


@pytest.mark.parametrize("cls", [automix.AutoMix, automix.SAMix])
def test_grid_for_learned_methods(tmp_path, cls):
    model = automix.create_model("preact_resnet18", num_classes=4, width=8)
    method = cls(model, num_classes=4, total_steps=5)
    path = viz.save_mix_grid(tmp_path / "m.png", method, torch.rand(4, 3, 32, 32), n=4, scale=1,
                             mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert Image.open(path).size[1] == 4 * 32 + viz.HEADER + viz.FOOTER
    titled = viz.save_mix_grid(tmp_path / "t.png", method, torch.rand(4, 3, 32, 32), n=4, scale=1, title="epoch 3")
    assert Image.open(titled).size[1] == Image.open(path).size[1] + viz.LINE, "the title takes one more line"


def test_preview_rejects_other_objects():
    with pytest.raises(TypeError, match="source"):
        viz.preview(object(), torch.rand(2, 3, 8, 8))


@pytest.mark.parametrize("k", [2, 3])
def test_grid_for_k_way_masks(tmp_path, k):
    """AdAutoMix mixes K images: each row shows the K images, their K masks and the mix."""
    model = automix.create_model("preact_resnet18", num_classes=4, width=8)
    method = automix.AdAutoMix(model, num_classes=4, mix_samples=k, total_steps=5, init_std=None)
    x = torch.rand(4, 3, 32, 32)
    parts = viz.preview(method, x, n=4)
    assert parts["sources"].shape == (4, k, 3, 32, 32) and parts["masks"].shape == (4, k, 1, 32, 32)
    path = viz.save_mix_grid(tmp_path / "k.png", method, x, n=4, scale=1, mean=(0.5, 0.5, 0.5), std=(0.25,) * 3,
                             title="adautomix, epoch 0")
    img = Image.open(path)
    assert img.size[1] == 4 * 32 + viz.HEADER + viz.LINE + viz.FOOTER
    assert img.size[0] >= (2 * k + 1) * 32, "K images, K masks and the mix in every row"
    # The mask columns are the masks themselves: mask i of row 0 at column K + i.
    row0 = torch.frombuffer(bytearray(img.convert("RGB").tobytes()), dtype=torch.uint8).float()
    row0 = row0.view(img.size[1], img.size[0], 3)
    top = viz.HEADER + viz.LINE
    for i in range(k):
        cell = row0[top:top + 32, (k + i) * 32:(k + i + 1) * 32, 0] / 255
        torch.testing.assert_close(cell, parts["masks"][0, i, 0], atol=1 / 255 + 1e-6, rtol=0)
