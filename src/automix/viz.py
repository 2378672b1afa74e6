"""Pictures of mixing: a PNG grid of originals, partners, masks, mixed samples and lambda.

``preview(mixer_or_method, x, y)`` mixes a few samples and returns the pieces; ``mix_grid`` lays
them out (one row per sample: original | partner | mask | mixed, with lam written beside it) and
``save_mix_grid`` writes a PNG. The mask column is the partner's weight (white = all partner).
Works for any mixer and any Method (both have ``mix_preview``). Needs only Pillow.
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
def preview(source: Any, x: Tensor, y: Tensor | None = None, n: int = 8, seed: int = 0) -> dict[str, Tensor]:
    """Mix the first ``n`` samples of ``x`` with ``source``: a mixer or a Method, through its ``mix_preview``.

    Both give ``{"x", "partner", "mask", "mixed", "lam"}`` (``BaseMixer.mix_preview``, ``Method.mix_preview``);
    anything else raises ``TypeError``.
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
LINE = 11  # pixels per text line
FOOTER = LINE * len(LEGEND) + 6  # the legend's height under the grid


def mix_grid(parts: dict[str, Tensor], scale: int = 4, mean=None, std=None, title: str | None = None):
    """A ``PIL.Image`` grid from ``preview``'s output; ``mean``/``std`` undo input normalisation.

    One row per sample (original | partner | mask | mixed), each row's lam and mask mean at its right,
    ``title`` (e.g. the run and epoch) above and a legend below saying which side is which.
    """
    from PIL import Image, ImageDraw

    x, partner, mask, mixed, lam = (parts[k] for k in ("x", "partner", "mask", "mixed", "lam"))
    if mean is not None and std is not None:
        m = torch.as_tensor(mean).view(-1, 1, 1)
        s = torch.as_tensor(std).view(-1, 1, 1)
        x, partner, mixed = (t.float() * s + m for t in (x, partner, mixed))
        lo, hi = torch.tensor(0.0), torch.tensor(1.0)
    else:
        both = torch.cat([x.float(), mixed.float()])
        lo, hi = both.min(), both.max()
    n, _, h, w = x.shape
    label_w, line = 64, LINE
    head = HEADER + (line if title else 0)
    width = max(4 * w * scale + label_w, 6 * max(len(t) for t in LEGEND) + 8)
    grid = Image.new("RGB", (width, n * h * scale + head + FOOTER), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((2, 1), title, fill="black")
    for j, name in enumerate(("original", "partner", "mask", "mixed")):
        draw.text((j * w * scale + 2, head - HEADER + 1), name, fill="black")
    for i in range(n):
        cells = [_to_uint8(x[i], lo, hi), _to_uint8(partner[i], lo, hi),
                 _to_uint8(mask[i], torch.tensor(0.0), torch.tensor(1.0)), _to_uint8(mixed[i], lo, hi)]
        for j, cell in enumerate(cells):
            tile = Image.frombytes("RGB", (w, h), bytes(cell.contiguous().flatten().tolist()))
            tile = tile.resize((w * scale, h * scale), Image.NEAREST)
            grid.paste(tile, (j * w * scale, head + i * h * scale))
        draw.text((4 * w * scale + 4, head + i * h * scale + 4),
                  f"lam {float(lam[i]):.2f}\nmask {float(mask[i].mean()):.2f}", fill="black")
    for k, text in enumerate(LEGEND):
        draw.text((2, head + n * h * scale + 3 + k * line), text, fill="black")
    return grid


def save_mix_grid(path: str | Path, source: Any, x: Tensor, y: Tensor | None = None, n: int = 8, **kwargs) -> Path:
    """Preview ``source`` on ``x`` and write the grid PNG to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mix_grid(preview(source, x, y, n), **kwargs).save(path)
    return path
