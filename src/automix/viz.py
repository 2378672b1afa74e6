"""Pictures of mixing: a PNG grid of originals, partners, masks, mixed samples and lambda.

``preview(mixer_or_method, x, y)`` mixes a few samples and returns the pieces; ``mix_grid`` lays
them out (one row per sample: original | partner | mask | mixed, with lam written beside it) and
``save_mix_grid`` writes a PNG. The mask column is the partner's weight (white = all partner).
A method that mixes K images (AdAutoMix) adds ``sources`` / ``masks`` / ``lams`` to its preview; its rows
are then image 1 | ... | image K | mask 1 | ... | mask K | mixed, each mask the share of its image.
Works for any mixer and any Method (both have ``mix_preview``). Needs only Pillow.

The legend under the grid says how the mix and its label weights are made. ``LEGEND`` (a blend, weights lam and
1 - lam) is the default; a mixer or method for which that is not the whole truth gives its own lines in the
preview's ``"legend"`` (``BaseMixer.preview_parts``): SnapMix (two label weights from class activation maps, the
partner's box resized), ResizeMix (the whole partner shrunk), PuzzleMix (transport), TransMix (attention-based
weights), TokenMix with a teacher, ManifoldMix (a hidden layer), AlignMix (aligned cells). A preview's
``"lam_partner"`` (the partner's label weight) is written beside lam when it is not ``1 - lam``, and its
``"partner_region"`` (the part of the partner the mix shows, when not where the mask is) is outlined in red on the
partner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .methods import Method
from .mixers import BaseMixer

HEADER = 12  # pixels of column titles above the grid


@torch.no_grad()
def preview(source: Any, x: Tensor, y: Tensor | None = None, n: int = 8, seed: int = 0) -> dict[str, Any]:
    """Mix the first ``n`` samples of ``x`` with ``source``: a mixer or a Method, through its ``mix_preview``.

    Both give ``{"x", "partner", "mask", "mixed", "lam"}``, mostly ``"lam_partner"``, and where needed ``"legend"``
    and ``"partner_region"`` (``BaseMixer.mix_preview``, ``Method.mix_preview``); anything else raises ``TypeError``.
    """
    if not isinstance(source, (BaseMixer, Method)):
        raise TypeError(f"source must be a mixer or a Method, got {type(source).__name__}")
    x = x[:n]
    out = source.mix_preview(x, None if y is None else y[:n], generator=torch.Generator().manual_seed(seed))
    return {k: (v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in out.items()}


def spread_over_classes(labels: Tensor, n: int) -> Tensor:
    """Positions of up to ``n`` samples, taking the classes in turn (each class's first, then its second, ...).

    >>> spread_over_classes(torch.tensor([0, 0, 0, 1, 1, 2]), 4).tolist()
    [0, 3, 5, 1]
    """
    labels = labels.reshape(-1).long()
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(len(labels)) - starts  # how many of its class come before it
    key = rank * (int(labels.max()) + 1 if len(labels) else 1) + labels
    return torch.argsort(key, stable=True)[:n]


def _to_uint8(img: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    img = (img.float() - lo) / (hi - lo).clamp_min(1e-8)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return (img[:3].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)


LEGEND = ("original: label weight lam",
          "partner: label weight 1 - lam",
          "mask: partner's share per pixel",
          "  (white = partner, black = original)",
          "mixed = (1-mask)*original + mask*partner",
          "right: lam | mean of the mask")
LEGEND_K = ("image i: label weight lam_i",
            "mask i: image i's share per pixel",
            "  (white = all image i; the masks sum to 1)",
            "mixed = sum over i of mask i * image i",
            "right: lam_1/.../lam_K |",
            "  mean of mask 1/.../mask K")
LINE = 11  # pixels per text line
FOOTER = LINE * len(LEGEND) + 6  # the legend's height under the grid (every legend has six lines)
REGION_RGB = (255, 0, 0)  # the outline of the partner's region shown (``partner_region``)


def mix_grid(parts: dict[str, Any], scale: int = 4, mean=None, std=None, title: str | None = None):
    """A ``PIL.Image`` grid from ``preview``'s output; ``mean``/``std`` undo input normalisation.

    One row per sample (original | partner | mask | mixed, or with K-way ``sources`` / ``masks`` / ``lams``:
    image 1..K | mask 1..K | mixed), each row's lam (and the partner's label weight when it is not 1 - lam) and
    mask mean(s) at its right, the partner's ``partner_region`` outlined in red, ``title`` (e.g. the run and epoch)
    above and a legend below saying how the mix and its label weights are made (the preview's ``"legend"``, else
    ``LEGEND``).
    """
    from PIL import Image, ImageDraw

    kway = "sources" in parts
    x, mixed = parts["x"], parts["mixed"]
    if kway:
        k = parts["sources"].shape[1]
        images = [parts["sources"][:, i] for i in range(k)]
        masks = [parts["masks"][:, i] for i in range(k)]
        lams = parts["lams"]
        names = [f"image {i + 1}" for i in range(k)] + [f"mask {i + 1}" for i in range(k)] + ["mixed"]
        legend = LEGEND_K
    else:
        images, masks = [x, parts["partner"]], [parts["mask"]]
        names, legend = ["original", "partner", "mask", "mixed"], tuple(parts.get("legend") or LEGEND)
    lam_b = None if kway else parts.get("lam_partner")
    if lam_b is not None and torch.allclose(lam_b.float(), 1.0 - parts["lam"].float(), atol=1e-6):
        lam_b = None  # the usual 1 - lam: nothing to add
    region = None if kway else parts.get("partner_region")
    outline = None if region is None else _outline(region)
    if mean is not None and std is not None:
        m = torch.as_tensor(mean).view(-1, 1, 1)
        s = torch.as_tensor(std).view(-1, 1, 1)
        images, mixed = [t.float() * s + m for t in images], mixed.float() * s + m
        lo, hi = torch.tensor(0.0), torch.tensor(1.0)
    else:
        both = torch.cat([x.float(), mixed.float()])
        lo, hi = both.min(), both.max()
    n, _, h, w = x.shape

    def side_text(i: int) -> str:
        if kway:
            return ("lam " + "/".join(f"{float(v):.2f}" for v in lams[i]) + "\nmask "
                    + "/".join(f"{float(mk[i].mean()):.2f}" for mk in masks))
        lam = f"lam {float(parts['lam'][i]):.2f}" + ("" if lam_b is None else f" / {float(lam_b[i]):.2f}")
        return f"{lam}\nmask {float(masks[0][i].mean()):.2f}"

    label_w = max(64, 6 * max(len(line) for i in range(n) for line in side_text(i).split("\n")) + 8)
    line = LINE
    head = HEADER + (line if title else 0)
    cols = len(names)
    width = max(cols * w * scale + label_w, 6 * max(len(t) for t in legend) + 8)
    grid = Image.new("RGB", (width, n * h * scale + head + FOOTER), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((2, 1), title, fill="black")
    for j, name in enumerate(names):
        draw.text((j * w * scale + 2, head - HEADER + 1), name, fill="black")
    zero, one = torch.tensor(0.0), torch.tensor(1.0)
    for i in range(n):
        cells = [_to_uint8(t[i], lo, hi) for t in images] + [_to_uint8(mk[i], zero, one) for mk in masks]
        cells.append(_to_uint8(mixed[i], lo, hi))
        if outline is not None:  # on the partner (column 1)
            cells[1] = torch.where(outline[i].unsqueeze(-1), torch.tensor(REGION_RGB, dtype=torch.uint8), cells[1])
        for j, cell in enumerate(cells):
            tile = Image.frombytes("RGB", (w, h), bytes(cell.contiguous().flatten().tolist()))
            tile = tile.resize((w * scale, h * scale), Image.NEAREST)
            grid.paste(tile, (j * w * scale, head + i * h * scale))
        draw.text((cols * w * scale + 4, head + i * h * scale + 4), side_text(i), fill="black")
    for k_line, text in enumerate(legend):
        draw.text((2, head + n * h * scale + 3 + k_line * line), text, fill="black")
    return grid


def _outline(region: Tensor) -> Tensor:
    """The border pixels of each region [N, 1, H, W] (bool [N, H, W]): inside it, next to outside or the edge."""
    inside = region.bool()[:, 0].float().unsqueeze(1)
    eroded = -torch.nn.functional.max_pool2d(-torch.nn.functional.pad(inside, (1, 1, 1, 1)), 3, stride=1)
    return (inside > 0)[:, 0] & (eroded < 1)[:, 0]


def save_mix_grid(path: str | Path, source: Any, x: Tensor, y: Tensor | None = None, n: int = 8, **kwargs) -> Path:
    """Preview ``source`` on ``x`` and write the grid PNG to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mix_grid(preview(source, x, y, n), **kwargs).save(path)
    return path
