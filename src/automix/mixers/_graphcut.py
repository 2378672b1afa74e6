"""Exact multi-label graph cut on a small grid with a convex (squared) label distance, for PuzzleMix.

The energy of a labelling ``l`` (long [B, n, n], labels ``0 .. L-1``) is

    E(l) = sum_i unary[i, l_i] + sum_{i~j} w_ij * ((l_i - l_j) / (L - 1))**2,

over the 4-neighbour pairs ``i~j`` of the grid, with weights ``w_ij >= 0``. The pairwise term is convex in
``l_i - l_j``, so one minimum cut of Ishikawa's layered graph (Ishikawa, "Exact optimization for Markov random
fields with convex priors", TPAMI 2003) gives a *global* minimum for any number of labels, where the reference
(PuzzleMix's ``gco`` alpha-beta swap, ``snu-mllab/PuzzleMix``, ``openmixup/models/augments/puzzlemix.py`` of
``Westlake-AI/openmixup`` at ``c042813``) finds a local one. Each pixel is a chain of ``L - 1`` nodes between
source and sink (its label is how many of them stay on the source side); a neighbour pair is joined by edges of
capacity ``w / (L - 1)**2`` between every node of one chain and every node of the other, which cut
``w * (p - q)**2 / (L - 1)**2`` plus terms of ``p`` and of ``q`` alone, taken back out of the unaries.

The whole batch is one graph (one max-flow call, no Python loop over samples or pixels): the maximum flow of
``PyMaxflow`` (Boykov-Kolmogorov, float capacities) when it is installed, else SciPy's
``scipy.sparse.csgraph.maximum_flow`` (Dinic, integer capacities: the costs are scaled to 2**30 in all).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

BACKENDS = ("auto", "maxflow", "scipy")


def grid_energy(labels: Tensor, unary: Tensor, w_down: Tensor, w_right: Tensor) -> Tensor:
    """The energy [B] of labellings ``labels`` (long [B, n, m]) under ``unary`` [B, n, m, L], vertical weights
    ``w_down`` [B, n-1, m] (between rows i and i+1) and horizontal ``w_right`` [B, n, m-1]."""
    levels = unary.shape[-1]
    data = unary.gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum((1, 2))
    lab = labels.to(unary.dtype) / max(levels - 1, 1)
    down = (w_down * (lab[:, 1:] - lab[:, :-1]).pow(2)).sum((1, 2))
    right = (w_right * (lab[:, :, 1:] - lab[:, :, :-1]).pow(2)).sum((1, 2))
    return data + down + right


def available_backend(backend: str = "auto") -> str:
    """The max-flow backend ``solve_grid`` will use: ``"maxflow"`` (PyMaxflow) or ``"scipy"``.

    Raises:
        ValueError: ``backend`` is not one of ``BACKENDS``.
        ImportError: the backend asked for (or, for ``"auto"``, both) is not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, module in (("maxflow", "maxflow"), ("scipy", "scipy.sparse.csgraph")):
        if backend in ("auto", name):
            try:
                __import__(module)
                return name
            except ImportError:
                if backend == name:
                    package = "PyMaxflow" if name == "maxflow" else "scipy"
                    raise ImportError(f"backend={name!r} needs the package {package} (pip install "
                                      "'automix[puzzlemix]')") from None
    raise ImportError("PuzzleMix's graph cut needs PyMaxflow or SciPy: pip install 'automix[puzzlemix]'")


def solve_grid(unary: Tensor, w_down: Tensor, w_right: Tensor, *, backend: str = "auto") -> Tensor:
    """A labelling (long [B, n, m], on ``unary``'s device) of minimum ``grid_energy``; weights must be >= 0.

    >>> unary = torch.tensor([[[[0.0, 1.0], [0.8, 0.0]]]])  # one sample, a 1 x 2 grid, two labels
    >>> solve_grid(unary, torch.zeros(1, 0, 2), torch.zeros(1, 1, 1)).tolist()
    [[[0, 1]]]
    >>> solve_grid(unary, torch.zeros(1, 0, 2), torch.full((1, 1, 1), 5.0)).tolist()  # a strong edge: one label
    [[[0, 0]]]
    """
    batch, rows, cols, levels = unary.shape
    if levels == 1:
        return torch.zeros(batch, rows, cols, dtype=torch.long, device=unary.device)
    which = available_backend(backend)
    u = unary.detach().double().cpu().numpy().copy()
    wd = w_down.detach().double().cpu().numpy().clip(min=0)
    wr = w_right.detach().double().cpu().numpy().clip(min=0)
    layers = levels - 1
    scale = 1.0 / layers**2
    k = np.arange(levels)
    # Each edge's all-to-all layer links cut w*s*((p-q)^2 + p(L-1-p) + q(L-1-q)): remove the last two from the unaries.
    extra = k * (layers - k) * scale
    u[:, :-1, :, :] -= wd[..., None] * extra
    u[:, 1:, :, :] -= wd[..., None] * extra
    u[:, :, :-1, :] -= wr[..., None] * extra
    u[:, :, 1:, :] -= wr[..., None] * extra
    u -= u.min(-1, keepdims=True)  # a constant per pixel: capacities >= 0, same minimiser
    pix = np.arange(batch * rows * cols).reshape(batch, rows, cols)
    node = lambda p, a: p * layers + a  # noqa: E731  (chain node a = 0 .. L-2 of pixel p)
    # Chain links: node a -> a+1 carries the cost of label a+1 ... (label = nodes on the source side).
    tails, heads, caps, rcaps = [], [], [], []
    flat = u.reshape(-1, levels)
    inf = 1.0 + 2.0 * float(flat.sum() + wd.sum() * layers**2 * scale + wr.sum() * layers**2 * scale)
    for a in range(layers - 1):
        tails.append(node(pix.ravel(), a))
        heads.append(node(pix.ravel(), a + 1))
        caps.append(flat[:, a + 1])
        rcaps.append(np.full(flat.shape[0], inf))
    for w, first, second in ((wd, pix[:, :-1, :], pix[:, 1:, :]), (wr, pix[:, :, :-1], pix[:, :, 1:])):
        for a in range(layers):
            for b in range(layers):
                tails.append(node(first.ravel(), a))
                heads.append(node(second.ravel(), b))
                caps.append(w.ravel() * scale)
                rcaps.append(w.ravel() * scale)
    tails, heads = np.concatenate(tails), np.concatenate(heads)
    caps, rcaps = np.concatenate(caps), np.concatenate(rcaps)
    source_cap = np.zeros(pix.size * layers)
    sink_cap = np.zeros(pix.size * layers)
    source_cap[node(pix.ravel(), 0)] = flat[:, 0]  # cut when the first node is on the sink side: label 0
    sink_cap[node(pix.ravel(), layers - 1)] = flat[:, layers]  # cut when the last one is on the source side
    count = pix.size * layers
    if which == "maxflow":
        side = _cut_maxflow(count, tails, heads, caps, rcaps, source_cap, sink_cap)
    else:
        side = _cut_scipy(count, tails, heads, caps, rcaps, source_cap, sink_cap, inf)
    labels = side.reshape(batch, rows, cols, layers).sum(-1)
    return torch.from_numpy(labels).long().to(unary.device)


def _cut_maxflow(count, tails, heads, caps, rcaps, source_cap, sink_cap) -> np.ndarray:
    import maxflow

    graph = maxflow.Graph[float](count, tails.size)
    nodes = graph.add_nodes(count)
    graph.add_edges(nodes[tails], nodes[heads], caps, rcaps)
    graph.add_grid_tedges(np.asarray(nodes), source_cap, sink_cap)
    graph.maxflow()
    return ~graph.get_grid_segments(np.asarray(nodes))  # True: source side


def _cut_scipy(count, tails, heads, caps, rcaps, source_cap, sink_cap, inf) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    src, snk = count, count + 1
    ids = np.arange(count)
    row = np.concatenate([tails, heads, np.full(count, src), ids])
    col = np.concatenate([heads, tails, ids, np.full(count, snk)])
    cap = np.concatenate([caps, rcaps, source_cap, sink_cap])
    # Integer capacities (SciPy's flow is int32): the finite ones scaled to 2**30 in all, "infinite" kept below 2**31.
    finite = cap < inf
    total = cap[finite].sum()
    factor = (2.0**30) / total if total > 0 else 1.0
    icap = np.where(finite, np.round(cap * factor), 2**31 - 1).astype(np.int64)
    keep = icap > 0
    graph = coo_matrix((icap[keep], (row[keep], col[keep])), shape=(count + 2, count + 2)).tocsr()
    graph.sum_duplicates()
    graph = graph.astype(np.int32)
    flow = maximum_flow(graph, src, snk, method="dinic").flow
    residual = (graph - flow).tocsr()  # flow is antisymmetric: a reverse arc's residual is the flow it can undo
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reach = breadth_first_order(residual, src, directed=True, return_predecessors=False)
    side = np.zeros(count + 2, dtype=bool)
    side[reach] = True
    return side[:count]
