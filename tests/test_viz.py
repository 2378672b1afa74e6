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


# ---------------------------------------------------------------- the picture tells the truth, for every method
def method_for_picture(name, **kw):
    from conftest import MIXER_KWARGS, reads_attention, tiny_vit

    torch.manual_seed(0)
    model = tiny_vit() if reads_attention(name) else automix.create_model("preact_resnet18", num_classes=4, width=4)
    opts = {**MIXER_KWARGS.get(name, {}), **kw}
    return automix.create_method(name, model, num_classes=4, total_steps=5, seed=0, **opts)


PICTURED = [n for n in automix.list_methods() if n not in ("none", "adautomix")]  # adautomix: K-way, below


@pytest.mark.parametrize("name", PICTURED)
def test_every_methods_picture_is_what_it_trains_on(name):
    """The legend said 'partner: label weight 1 - lam' and 'mixed = (1-mask)*original + mask*partner' for every
    method. A preview now carries the partner's label weight, and a method for which that legend is not the whole
    truth gives its own: where it keeps the default, both statements must hold for the pictured samples; where the
    mix is a plain blend of the pictured images (PuzzleMix shows them after transport), the formula must hold."""
    from conftest import image_batch

    x, y = image_batch()
    from automix.methods import method_spec

    mode = {"mode": "elem"} if "mode" in method_spec(name).options and name != "alignmix" else {}
    parts = viz.preview(method_for_picture(name, **mode), x, y, n=6)
    legend = parts.get("legend")
    assert legend is None or (len(legend) == len(viz.LEGEND) and all(isinstance(t, str) for t in legend)), legend
    assert parts["lam_partner"].shape == parts["lam"].shape == (6,)
    if legend is None:
        torch.testing.assert_close(parts["lam_partner"], 1 - parts["lam"])
    aligned_to_partner = any("original'" in line for line in legend or ())
    if "partner_region" not in parts and not aligned_to_partner:
        torch.testing.assert_close(parts["mixed"], torch.lerp(parts["x"], parts["partner"], parts["mask"]),
                                   atol=1e-5, rtol=0)
    img = viz.mix_grid(parts, scale=1)
    assert img.size[1] == 6 * 32 + viz.HEADER + viz.FOOTER


def red_pixels_of_partner_column(img, rows, side):
    rgb = torch.frombuffer(bytearray(img.convert("RGB").tobytes()), dtype=torch.uint8).view(img.size[1], img.size[0], 3)
    cells = rgb[viz.HEADER:viz.HEADER + rows * side, side:2 * side]
    red = (cells[..., 0] == 255) & (cells[..., 1] == 0) & (cells[..., 2] == 0)
    return red.view(rows, side, side)


def test_snapmix_picture_shows_both_label_weights_and_the_partners_source_box():
    """The SnapMix picture said the partner's weight is 1 - lam and showed no source box. Its preview has the two
    CAM weights of the draw (the targets' weights) and the box the partner's patch is cut from, outlined in red."""
    import torch.nn.functional as F

    from automix.mixers.snapmix import normalised_cam

    method = method_for_picture("snapmix", mode="elem")
    x, y = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3, 0, 1])
    parts = method.mix_preview(x, y, torch.Generator().manual_seed(2))
    index = torch.stack([(x - p).abs().flatten(1).sum(1).argmin() for p in parts["partner"]])
    assert torch.equal(x[index], parts["partner"])
    # The label weights shown are the paper's: each image's CAM mass kept (own) and cut out of the red box (partner).
    cam = normalised_cam(method.context(x, y), (32, 32))
    region, pasted = parts["partner_region"][:, 0], parts["mask"][:, 0] > 0
    torch.testing.assert_close(parts["lam"], 1 - (cam * pasted).flatten(1).sum(1))
    torch.testing.assert_close(parts["lam_partner"], (cam[index] * region).flatten(1).sum(1))
    assert not torch.allclose(parts["lam_partner"], 1 - parts["lam"])
    # What the mask's box shows is the partner's red box, resized into it.
    for i in range(6):
        (r0, r1), (c0, c1) = [(int(v.min()), int(v.max()) + 1) for v in torch.nonzero(region[i], as_tuple=True)]
        (m0, m1), (n0, n1) = [(int(v.min()), int(v.max()) + 1) for v in torch.nonzero(pasted[i], as_tuple=True)]
        patch = F.interpolate(parts["partner"][i:i + 1, :, r0:r1, c0:c1], size=(m1 - m0, n1 - n0), mode="bilinear",
                              align_corners=False)
        torch.testing.assert_close(parts["mixed"][i, :, m0:m1, n0:n1], patch[0], atol=1e-5, rtol=0)
    assert "lam_b" in " ".join(parts["legend"]) and "red box" in " ".join(parts["legend"])
    red = red_pixels_of_partner_column(viz.mix_grid(parts, scale=1), 6, 32)
    assert torch.equal(red, viz._outline(parts["partner_region"])), "the red outline is the source box's border"
    # same_box=True: the patch comes from the box it goes to: no separate region, the blend formula holds.
    same = method_for_picture("snapmix", mode="elem", same_box=True).mix_preview(x, y, torch.Generator().manual_seed(2))
    assert "partner_region" not in same and "lam_b" in " ".join(same["legend"])
    torch.testing.assert_close(same["mixed"], torch.lerp(same["x"], same["partner"], same["mask"]))


def test_resizemix_and_puzzlemix_pictures_show_what_is_blended():
    x, y = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(3)), torch.arange(6) % 4
    resize = viz.preview(method_for_picture("resizemix", mode="elem"), x, y, n=6)
    assert bool(resize["partner_region"].all()), "the whole partner is shown, shrunk"
    assert bool(red_pixels_of_partner_column(viz.mix_grid(resize, scale=1), 6, 32)[:, 0].all())
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    puzzle = viz.preview(method_for_picture("puzzlemix"), x, y, n=6)
    assert not torch.equal(puzzle["x"], x), "transport moved the original's cells: the picture shows them moved"
    torch.testing.assert_close(puzzle["mixed"], torch.lerp(puzzle["x"], puzzle["partner"], puzzle["mask"]))
    assert "transport" in " ".join(puzzle["legend"])
    plain = viz.preview(method_for_picture("puzzlemix", transport=False), x, y, n=6)
    assert "legend" not in plain and torch.equal(plain["x"], x)


def test_transmix_picture_shows_the_attention_label_weight():
    """TransMix's label weight is set from the class token's attention in the mixed batch's forward pass; the
    picture showed the area weight. Its preview runs that pass (eval mode, the model's state unchanged)."""
    import torch.nn.functional as F

    from automix.context import capture_context, eval_mode

    method = method_for_picture("transmix", mixup_alpha=0.0, ratio=0.0, mode="elem")
    x, y = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(4)), torch.arange(6) % 4
    before = {k: v.clone() for k, v in method.model.state_dict().items()}
    method.model.train()
    parts = method.mix_preview(x, y, torch.Generator().manual_seed(5))
    assert method.model.training and all(torch.equal(v, before[k]) for k, v in method.model.state_dict().items())
    with eval_mode(method.model), capture_context("attention", method.model) as seen, torch.no_grad():
        method.model(parts["mixed"])
    row = seen.value[:, :, 0, 1:].mean(1)  # the class token's attention on the 8 x 8 patches
    pasted = F.adaptive_avg_pool2d(parts["mask"], (8, 8)).flatten(1)
    torch.testing.assert_close(parts["lam"], 1 - (row * pasted).sum(1) / row.sum(1), atol=1e-5, rtol=0)
    area = 1 - parts["mask"].mean((1, 2, 3))
    assert not torch.allclose(parts["lam"], area, atol=1e-3), "the area weight is not what TransMix trains with"
    assert "attention" in " ".join(parts["legend"])


def test_tokenmix_picture_with_a_teacher_shows_the_teachers_weights():
    from conftest import tiny_vit

    teacher = automix.create_model("preact_resnet18", num_classes=4, width=4)
    method = automix.create_method("tokenmix", tiny_vit(), num_classes=4, mode="elem", teacher=teacher, seed=0)
    x, y = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(6)), torch.arange(6) % 4
    parts = method.mix_preview(x, y, torch.Generator().manual_seed(0))
    assert not torch.allclose(parts["lam_partner"], 1 - parts["lam"]), "the teacher's two CAM weights"
    assert "teacher" in " ".join(parts["legend"])
    plain = automix.create_method("tokenmix", tiny_vit(), num_classes=4, mode="elem", seed=0)
    assert "legend" not in plain.mix_preview(x, y, torch.Generator().manual_seed(0))


def test_smmix_picture_outlines_the_square_it_moves():
    from conftest import image_batch

    x, y = image_batch()
    parts = viz.preview(method_for_picture("smmix"), x, y, n=6)
    region, mask = parts["partner_region"][:, 0], parts["mask"][:, 0] > 0.5
    assert region.sum() == mask.sum() > 0
    for i in range(6):  # the red square's pixels are, in order, what the mask's square shows
        assert torch.equal(parts["partner"][i][:, region[i]], parts["mixed"][i][:, mask[i]])
