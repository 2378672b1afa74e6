"""Rebuild the accuracy sections of docs/benchmarks.md from the committed results files.

Exact command (from the repository root):

    PYTHONPATH=src python benchmarks/accuracy_report.py

For every protocol in configs/bench/*.yaml it first folds the finished run folders that exist on this machine
(``benchmarks/results/accuracy/<name>/<method>/seed<k>``, not in git) into the protocol's results file
``benchmarks/results/accuracy/<name>.json`` (``automix.bench.aggregate``; entries whose folder is absent are
kept, so on a fresh clone nothing changes), then rewrites the protocol's section of docs/benchmarks.md
(between ``<!-- accuracy-<section>:start -->`` and its end marker; the hand-written text around it is kept) and
its plot ``docs/<section>-cost.png`` from that results file alone. Running it twice changes nothing.

The runs themselves come from ``automix bench configs/bench/<protocol>.yaml --root benchmarks/results/accuracy``
(that command skips every cell the results file already holds, by config hash, and writes its own report to
``benchmarks/results/accuracy/<name>.md``, which is not committed).

Options:
    --no-aggregate   read the results files only; ignore run folders.
    --check          write nothing; exit 1 and name the sections whose text differs from what the results give.
    --doc PATH       the markdown file (default docs/benchmarks.md); plots go beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    from automix import bench
except ImportError:  # run without PYTHONPATH=src
    sys.path.insert(0, str(ROOT / "src"))
    from automix import bench

RESULTS = Path("benchmarks/results/accuracy")  # relative to ROOT, as the sections' commands print it
COMMAND = "PYTHONPATH=src python benchmarks/accuracy_report.py"


def protocols() -> list[Path]:
    return sorted((ROOT / "configs" / "bench").glob("*.yaml"))


def section_command(path: Path, proto: bench.Protocol) -> str:
    rel = path.relative_to(ROOT).as_posix()
    return (f"automix bench {rel} --root {RESULTS.as_posix()}   # runs the cells not yet in the results file\n"
            f"{COMMAND}   # this section, from {(RESULTS / f'{proto.name}.json').as_posix()}")


def current_body(doc: Path, section: str) -> str | None:
    start, end = f"<!-- accuracy-{section}:start -->\n", f"<!-- accuracy-{section}:end -->"
    text = doc.read_text() if doc.is_file() else ""
    if start not in text or end not in text:
        return None
    return text[text.index(start) + len(start):text.index(end)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-aggregate", action="store_true", help="read the results files only")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a section is out of date")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file to rewrite")
    args = ap.parse_args(argv)
    doc = Path(args.doc)
    results: dict[str, dict] = {}
    stale = []
    for path in protocols():
        proto = bench.load_protocol(path)
        if proto.name not in results:
            root = ROOT / RESULTS
            if args.no_aggregate or args.check:
                results[proto.name] = bench.load_results(bench.results_path(root, proto))
            else:
                results[proto.name] = bench.aggregate(root, proto)
        body = bench.report(proto, results[proto.name], doc, section_command(path, proto), write=not args.check)
        if args.check and current_body(doc, proto.section) != body:
            stale.append(proto.section)
        print(f"{'checked' if args.check else 'wrote'} section accuracy-{proto.section} "
              f"({len(results[proto.name]['runs'])} runs in {proto.name}.json)")
    if stale:
        print(f"out of date in {doc}: {', '.join(stale)}; run {COMMAND}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
