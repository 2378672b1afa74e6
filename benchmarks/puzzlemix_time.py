"""Where a PuzzleMix step's time goes, and the graph-cut solvers side by side (CPU; a benchmark, not a test).

Exact command (from the repository root; one thread, as the numbers in docs/benchmarks.md):

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/puzzlemix_time.py

Options: ``--batch-size`` (100), ``--width`` (16, the PreAct-ResNet-18's first stage), ``--steps`` (timed repeats
per row, 3), ``--quick`` (batch 8, width 4, one repeat: a smoke run). About a minute on one core. Prints two tables:

1. One PuzzleMix training step at B x 3 x 32 x 32 (CIFAR-100 targets), split into its parts: the saliency pass
   (forward + backward in eval mode), the graph cut per grid side, the transport plans, the mixing, and the
   training forward + backward + SGD step; with the graph cut + transport share of the whole step (the target
   is <= 20%), averaged over the four grid sides the CIFAR config draws from.
2. The graph-cut solvers on the same PuzzleMix energies (n_labels = 3): automix's exact cut with PyMaxflow and with
   SciPy (one max-flow for the whole batch), and the reference's ``gco`` alpha-beta swap (``gco-wrapper``, one
   call per sample, integer costs) when installed, with how far above the exact minimum its energy ends.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch

import automix
from automix.context import input_saliency
from automix.mixers._graphcut import grid_energy, solve_grid
from automix.mixers.puzzlemix import PuzzleMix, permute_cells


def timed(fn, steps: int) -> tuple[float, object]:
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(steps):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def energies(mixer: PuzzleMix, x, sal, index, lam, n):
    """The unaries and edge weights PuzzleMix builds, captured at the solver call."""
    seen = {}
    import automix.mixers.puzzlemix as pm

    real = pm.solve_grid

    def spy(unary, w_down, w_right, backend="auto"):
        seen.update(unary=unary, w_down=w_down, w_right=w_right)
        return real(unary, w_down, w_right, backend=backend)

    pm.solve_grid = spy
    try:
        mixer._graph_cut(x, sal, index, lam, n)
    finally:
        pm.solve_grid = real
    return seen["unary"], seen["w_down"], seen["w_right"]


def gco_labels(unary, w_down, w_right):
    import gco

    scale = 1e6 / float(unary.abs().max())
    levels = unary.shape[-1]
    pair = torch.tensor([[(i - j) ** 2 / (levels - 1) ** 2 for j in range(levels)] for i in range(levels)])
    out = []
    for b in range(unary.shape[0]):  # the reference's loop over samples
        out.append(torch.from_numpy(gco.cut_grid_graph(
            (unary[b] * scale).round().int().numpy(), (pair * 1000).round().int().numpy(),
            (w_down[b] * scale / 1000).round().int().numpy(), (w_right[b] * scale / 1000).round().int().numpy(),
            algorithm="swap").reshape(unary.shape[1:3])))
    return torch.stack(out).long()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.width, args.steps = 8, 4, 1
    torch.manual_seed(0)
    batch = args.batch_size
    model = automix.create_model("preact_resnet18", num_classes=100, width=args.width)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 100, (batch,))
    index, lam = torch.randperm(batch), torch.full((batch,), 0.5)
    print(f"PuzzleMix step parts, B={batch}, 32px, preact_resnet18 width {args.width}, "
          f"{torch.get_num_threads()} thread(s), best of {args.steps} (ms)")
    t_sal, sal = timed(lambda: input_saliency(model, x, y, reduce="l2"), args.steps)

    def train_step(xm):
        opt.zero_grad(set_to_none=True)
        automix.losses.target_loss("ce", model(xm), torch.nn.functional.one_hot(y, 100).float()).backward()
        opt.step()

    t_train, _ = timed(lambda: train_step(x), args.steps)
    rows, shares = [], []
    for n in (2, 4, 8, 16):
        mixer = PuzzleMix(block_num=n, num_classes=100)
        t_cut, labels = timed(lambda: mixer._graph_cut(x, sal, index, lam, n), args.steps)  # noqa: B023
        cells = labels.float() / (mixer.n_labels - 1)
        everyone = torch.ones(batch, dtype=torch.bool)
        t_plan, plans = timed(lambda: mixer._transport_plans(sal, index, cells, everyone, n, (32, 32)),  # noqa: B023
                              args.steps)
        mask = torch.nn.functional.interpolate(cells.unsqueeze(1), size=(32, 32))
        t_mix, _ = timed(lambda: torch.lerp(permute_cells(x, plans[0], plans[2]),  # noqa: B023
                                            permute_cells(x[index], plans[1], plans[2]), mask), args.steps)  # noqa: B023
        step = t_sal + t_cut + t_plan + t_mix + t_train
        shares.append((t_cut + t_plan) / step)
        rows.append((n, t_cut, t_plan, t_mix, step, shares[-1]))
    print(f"{'grid':>5} {'saliency':>9} {'graph cut':>10} {'transport':>10} {'mix':>6} {'train f+b+opt':>14} "
          f"{'step':>7} {'cut+transport':>14}")
    for n, t_cut, t_plan, t_mix, step, share in rows:
        print(f"{n:>3}x{n:<1} {1e3 * t_sal:9.1f} {1e3 * t_cut:10.1f} {1e3 * t_plan:10.1f} {1e3 * t_mix:6.1f} "
              f"{1e3 * t_train:14.1f} {1e3 * step:7.1f} {100 * share:13.1f}%")
    print(f"mean cut+transport share over the grids (2, 4, 8, 16): {100 * sum(shares) / len(shares):.1f}% "
          f"(target <= 20%)\n")

    print(f"Graph-cut solvers on PuzzleMix's energies, B={batch}, n_labels=3 (ms per batch; energy above exact)")
    print(f"{'grid':>5} {'exact/PyMaxflow':>16} {'exact/SciPy':>12} {'gco swap (ref.)':>16} {'gco energy gap':>15}")
    mixer = PuzzleMix(num_classes=100)
    for n in (2, 4, 8, 16):
        unary, w_down, w_right = energies(mixer, x, sal, index, lam, n)
        cells = {}
        for name, mod in (("maxflow", "maxflow"), ("scipy", "scipy")):
            if importlib.util.find_spec(mod) is None:
                cells[name] = (None, None)
                continue
            cells[name] = timed(lambda: solve_grid(unary, w_down, w_right, backend=name), args.steps)  # noqa: B023
        exact = grid_energy(next(v[1] for v in cells.values() if v[1] is not None), unary.double(),
                            w_down.double(), w_right.double())
        gap = "n/a"
        t_gco = None
        if importlib.util.find_spec("gco") is not None:
            t_gco, labels = timed(lambda: gco_labels(unary, w_down, w_right), args.steps)  # noqa: B023
            energy = grid_energy(labels, unary.double(), w_down.double(), w_right.double())
            worse = (energy - exact) / exact.abs().clamp_min(1e-12)
            gap = f"{100 * float(worse.mean()):.3f}% mean, {100 * float(worse.max()):.2f}% max"
        fmt = lambda t: "n/a" if t is None else f"{1e3 * t:.1f}"  # noqa: E731
        print(f"{n:>3}x{n:<1} {fmt(cells['maxflow'][0]):>16} {fmt(cells['scipy'][0]):>12} {fmt(t_gco):>16} {gap:>15}")


if __name__ == "__main__":
    main()
