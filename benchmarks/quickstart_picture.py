"""The README's picture: a run's per-epoch mix pictures side by side (the first, a middle one, the last).

    PYTHONPATH=src python benchmarks/quickstart_picture.py runs/quickstart docs/quickstart-mixes.png [--epochs 0 5 29]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, nargs="+", default=None, help="default: first, middle, last")
    args = ap.parse_args()
    pictures = sorted((Path(args.run_dir) / "mixes").glob("epoch*.png"))
    if not pictures:
        raise SystemExit(f"quickstart_picture: error: no mixes/epoch*.png in {args.run_dir}")
    by_epoch = {int(p.stem[len("epoch"):]): p for p in pictures}
    epochs = args.epochs or sorted({min(by_epoch), sorted(by_epoch)[len(by_epoch) // 6], max(by_epoch)})
    missing = [e for e in epochs if e not in by_epoch]
    if missing:
        raise SystemExit(f"quickstart_picture: error: --epochs {missing} have no picture in {args.run_dir}/mixes")
    tiles = [Image.open(by_epoch[e]).convert("RGB") for e in epochs]
    gap = 12
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), max(t.height for t in tiles)),
                      "white")
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + gap
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}: epochs {epochs}")


if __name__ == "__main__":
    main()
