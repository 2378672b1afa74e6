"""Training curves of one or several run dirs as a PNG, drawn with Pillow (no matplotlib needed).

``plot_runs([dir_a, dir_b], "curves.png", metrics=("val_top1", "train_loss"))`` reads each run's
``summary.csv`` and draws one panel per metric, one coloured line per run, with a legend.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def read_summary(run_dir: str | Path) -> list[dict[str, float]]:
    """Rows of ``run_dir/summary.csv`` with numeric values (empty and non-finite cells dropped).

    A run without validation leaves its val columns empty; older runs wrote ``nan`` there.
    """
    path = Path(run_dir) / "summary.csv"
    if not path.is_file():
        raise FileNotFoundError(f"run dir {run_dir} has no summary.csv")
    with path.open() as f:
        rows = [{k: _number(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    return [{k: v for k, v in row.items() if math.isfinite(v)} for row in rows]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    step = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(step))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= step), default=step)
    start = (lo // step) * step
    ticks, t = [], start
    while t <= hi + 1e-9:
        if t >= lo - 1e-9:
            ticks.append(round(t, 10))
        t += step
    return ticks


def _panel(draw, box, series, metric, font) -> None:
    x0, y0, x1, y1 = box
    points = [(x, y) for _, rows in series for x, y in rows]
    if not points:
        draw.text((x0 + 10, y0 + 10), f"{metric}: no data", fill="black", font=font)
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xlo, xhi = min(xs), max(max(xs), min(xs) + 1)
    ylo, yhi = min(ys), max(ys)
    pad = (yhi - ylo) * 0.05 or 0.5
    ylo, yhi = ylo - pad, yhi + pad
    left, bottom = x0 + 50, y1 - 30

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - xlo) / (xhi - xlo) * (x1 - 10 - left),
                bottom - (y - ylo) / (yhi - ylo) * (bottom - y0 - 20))

    draw.rectangle([left, y0 + 20, x1 - 10, bottom], outline="black")
    draw.text((left, y0 + 4), metric, fill="black", font=font)
    for t in nice_ticks(ylo, yhi):
        _, py = to_px(xlo, t)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((x0 + 2, py - 6), f"{t:g}", fill="black", font=font)
    for t in nice_ticks(xlo, xhi):
        px, _ = to_px(t, ylo)
        draw.line([px, bottom, px, bottom + 4], fill="black")
        draw.text((px - 6, bottom + 6), f"{t:g}", fill="black", font=font)
    for i, (_, rows) in enumerate(series):
        pts = [to_px(x, y) for x, y in rows]
        colour = COLOURS[i % len(COLOURS)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for px, py in pts:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, metrics: Sequence[str] = ("val_top1", "train_loss"),
              labels: Sequence[str] | None = None, size: tuple[int, int] = (520, 320)) -> Path:
    """One panel per metric (x = epoch), one line per run; returns the PNG path."""
    from PIL import Image, ImageDraw, ImageFont

    if not run_dirs:
        raise ValueError("run_dirs must name at least one run dir")
    labels = list(labels) if labels else [Path(d).name or str(d) for d in run_dirs]
    runs = [read_summary(d) for d in run_dirs]
    width, height = size
    legend_h = 16 * len(runs) + 10
    img = Image.new("RGB", (width * len(metrics), height + legend_h), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for j, metric in enumerate(metrics):
        series = [(label, [(r["epoch"], r[metric]) for r in rows if metric in r and "epoch" in r])
                  for label, rows in zip(labels, runs)]
        _panel(draw, (j * width, 0, (j + 1) * width, height), series, metric, font)
    for i, label in enumerate(labels):
        y = height + 5 + 16 * i
        draw.rectangle([10, y + 3, 24, y + 11], fill=COLOURS[i % len(COLOURS)])
        draw.text((30, y), label, fill="black", font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
