"""AlignMix (Venkataramanan et al., "AlignMixup: Improving Representations By Interpolating Aligned Features",
CVPR 2022, arXiv:2103.15375): mixup of last-stage feature maps after aligning them with optimal transport.

A feature map ``A`` [C, h, w] is a set of ``n = h * w`` position features. For a pair (``A`` of sample ``i``,
``A'`` of its partner ``index[i]``) the method computes the entropic optimal transport plan ``P`` [n, n]
between the two sets (uniform weights, cost ``M[p, q] = ||a_p - a'_q||^2``, regularisation ``eps``, ``max_iter``
log-domain Sinkhorn iterations, batched over the whole batch; ``sinkhorn_plan``) and re-arranges one map onto the
other's positions with the plan's barycentric projection (``align``): each position ``p`` of ``A`` receives
``sum_q R[p, q] a'_q`` with ``R = P / P.sum(-1)`` (the plan's rows renormalised; ``R = n P`` at convergence), i.e.
the partner's features that correspond to it. Then

* ``"to_sample"``: ``lam * A + (1 - lam) * aligned(A' -> A)`` (the partner is moved onto the sample's layout);
* ``"to_partner"``: ``lam * aligned(A -> A') + (1 - lam) * A'`` (the sample is moved onto the partner's layout);

and the rest of the network (pooling and head) continues from the mixed map. Targets are
``lam * y + (1 - lam) * y[index]`` in both cases. The plan is computed without gradient (as the reference), the
features keep theirs.

The batch runs through the model once: a one-shot forward hook on the last stage (``layer``) replaces its output
``A`` with the mix. ``last_params["mix"]`` records the draw: ``extra["layer"]`` (the stage, or ``"input"``),
``extra["align"]`` (the direction), ``extra["plan"]`` (float32 [B, n, n], rows: the sample's positions, columns:
the partner's) and ``extra["size"]`` (h, w), so ``apply(t, params)`` replays it on the stage's output, and on any
map whose spatial size is a multiple of (h, w) (an image, a one-hot segmentation map) by moving whole cells.

As the reference, each step is either plain input mixup (with chance ``input_prob``, 1/2) or the aligned mix,
and the direction is drawn per step (``direction="both"``); the stage is the output of the backbone's last stage,
before any final norm and pooling of the model.

Why a Method, as ManifoldMix: the mix happens inside the forward pass that trains the model (the head is applied
to mixed features), which a mixer handed an input batch cannot express.

Reference: ``mixup_aligned`` and ``Resnet_classifier.forward`` in ``cifar10_100/models/resnet18_classifier.py``
and ``SinkhornDistance`` in ``cifar10_100/utils/OT.py`` of shashankvkt/AlignMixup_CVPR22 at commit 0b9de8c
(eps 0.1, 100 iterations, uniform marginals, squared Euclidean cost, plan detached and scaled by ``h * w``, one
of the two directions and one of {input mixup, aligned mix} drawn per step; alpha 2, one lambda per batch).
Differences: no early stop (the reference stops once the potentials move less than 0.1, a host sync per
iteration; here ``max_iter`` iterations always run), and the projection divides by the plan's row (or column)
sums rather than multiplying by ``n``, the same at convergence and a convex combination of partner features
before it. Convergence: with raw features the costs are in the hundreds for these networks, so at ``eps=0.1`` 100
iterations leave the row sums off (the columns are exact after every iteration), in the reference as here; the
plan is then a soft nearest-match, and the row normalisation keeps the aligned map a convex combination.

Why not POT: ``ot.batch.solve_batch(M, reg, method="log_sinkhorn", max_iter=100, tol=0)`` (POT 0.9.7) computes the
same plans, bit for bit, at the same speed (46 ms vs 40 ms for 64 pairs of 16 positions, one CPU thread);
``ot.sinkhorn`` solves one pair per call (6x slower over a batch) and updates the columns first (rows exact). Ten
lines of torch need no new dependency and stay on the features' device.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_positive, check_positive_int, check_range, check_type
from ..losses import TargetLoss, resolve_loss, target_loss
from ..mixers import MixParams, Mixup
from ..mixers._lam import LamSpec, alpha_or_lam
from ..mixers.base import mix_seg
from ..models.features import eager_call, forward_replacing, resolve_module
from .base import Method
from .registry import register_method

INPUT = "input"
DIRECTIONS = ("both", "to_sample", "to_partner")


def sinkhorn_plan(cost: Tensor, eps: float = 0.1, max_iter: int = 100) -> Tensor:
    """Entropic optimal transport plans between uniform measures, batched, in the log domain.

    Args:
        cost: float [..., n, m] transport costs.
        eps: entropic regularisation (> 0), in the units of ``cost``.
        max_iter: Sinkhorn iterations (each rescales the rows, then the columns).

    Returns:
        float32 [..., n, m]: the plan ``P = exp((f_p + g_q - cost[p, q]) / eps)``; its columns sum to ``1 / m``
        exactly and its rows to ``1 / n`` up to the convergence of ``max_iter`` iterations.

    >>> import torch
    >>> cost = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])        # [1, 2, 2]: the identity is the cheap match
    >>> plan = sinkhorn_plan(cost, eps=0.1, max_iter=50)
    >>> plan.shape, torch.allclose(plan.sum(-1), torch.full((1, 2), 0.5)), plan[0].diagonal().sum() > 0.99
    (torch.Size([1, 2, 2]), True, tensor(True))
    """
    k = -cost.float() / eps
    n, m = k.shape[-2:]
    f = k.new_zeros(k.shape[:-1])
    g = k.new_zeros(k.shape[:-2] + (m,))
    for _ in range(max_iter):
        f = -math.log(n) - torch.logsumexp(k + g.unsqueeze(-2), dim=-1)
        g = -math.log(m) - torch.logsumexp(k + f.unsqueeze(-1), dim=-2)
    return torch.exp(k + f.unsqueeze(-1) + g.unsqueeze(-2))


def feature_cost(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances between the positions of two maps: ``a``, ``b`` [B, C, h, w] -> float32
    [B, n, n] (``n = h * w``; rows: ``a``'s positions, columns: ``b``'s), computed as ``|a|^2 + |b|^2 - 2 a.b``
    (no [B, n, n, C] intermediate)."""
    a, b = a.float().flatten(2), b.float().flatten(2)  # [B, C, n]
    dot = a.transpose(1, 2) @ b
    return (a.pow(2).sum(1).unsqueeze(2) + b.pow(2).sum(1).unsqueeze(1) - 2 * dot).clamp_min(0)


def align(t: Tensor, plan: Tensor, size: tuple[int, int], to: str) -> Tensor:
    """Move ``t``'s cells with a plan: ``to="sample"`` puts the partner map ``t`` [B, C, H, W] onto the sample's
    positions (``R = plan / rows``, cell ``p`` gets ``sum_q R[p, q] t_q``); ``to="partner"`` puts the sample map
    ``t`` onto the partner's (``R = plan / columns``, cell ``q`` gets ``sum_p R[p, q] t_p``).

    ``plan`` is [B, n, n] for a grid ``size = (h, w)``, ``n = h * w``; ``H`` and ``W`` must be multiples of
    ``h`` and ``w``: each cell of ``(H / h) x (W / w)`` pixels moves as a whole (at the plan's own size a cell
    is one position). Every output value is a convex combination of ``t``'s values at the same place in a cell.

    Raises:
        ValueError: ``t`` is not [B, C, H, W] with ``H``, ``W`` multiples of ``size``.
    """
    h, w = size
    if t.ndim != 4 or t.shape[2] % h or t.shape[3] % w:
        raise ValueError(f"alignmix: a draw aligned on a {h}x{w} feature map replays on [B, C, H, W] tensors "
                         f"whose H, W are multiples of ({h}, {w}), got shape {tuple(t.shape)}")
    b, c, big_h, big_w = t.shape
    kh, kw = big_h // h, big_w // w
    cells = t.reshape(b, c, h, kh, w, kw).permute(0, 1, 3, 5, 2, 4).reshape(b, c * kh * kw, h * w)
    plan = plan.to(device=t.device, dtype=torch.float32)
    tiny = torch.finfo(torch.float32).tiny
    if to == "sample":
        assign = (plan / plan.sum(-1, keepdim=True).clamp_min(tiny)).transpose(1, 2)  # [B, q, p]
    else:
        assign = plan / plan.sum(-2, keepdim=True).clamp_min(tiny)  # [B, p, q]
    moved = (cells.float() @ assign).to(t.dtype)
    return moved.reshape(b, c, kh, kw, h, w).permute(0, 1, 4, 2, 5, 3).reshape(t.shape)


def last_stage(model: nn.Module) -> str:
    """The module path of the backbone's last stage: ``model.stage_names[-1]`` (these CIFAR networks),
    ``"layer4"`` (torchvision and timm ResNets) or the last of ``model.stages`` (timm ConvNeXt).

    Raises:
        ValueError: none of these; pass ``layer`` (a module path whose output is [B, C, h, w]) yourself.
    """
    stages = tuple(getattr(model, "stage_names", ()))
    if stages:
        return stages[-1]
    names = {n for n, _ in model.named_modules()}
    if "layer4" in names:
        return "layer4"
    seq = getattr(model, "stages", None)
    if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq):
        return f"stages.{len(seq) - 1}"
    raise ValueError(f"layer must be given for {type(model).__name__}: it has no stage_names, layer4 or stages; "
                     f"pass the module path of its last stage (output [B, C, h, w])")


@register_method("alignmix", kind="model-aware")
class AlignMix(Method):
    """Mixup of last-stage feature maps aligned by optimal transport (Sinkhorn), then the model's head.

    Args:
        model: the classifier.
        alpha: Beta(alpha, alpha) of lambda (2.0, the reference's).
        lam: a given lambda instead (``automix.mixers._lam``: a number, a range, a distribution, ...).
        eps: entropic regularisation of the Sinkhorn plan (0.1), in units of squared feature distance.
        max_iter: Sinkhorn iterations (100).
        direction: ``"both"`` (one of the next two drawn per step, as the reference), ``"to_sample"`` (the
            partner's map aligned onto the sample's) or ``"to_partner"`` (the sample's onto the partner's).
        input_prob: chance that a step is plain input mixup instead (0.5, the reference's coin flip; 0 for
            aligned feature mixing only).
        layer: module path whose output [B, C, h, w] is aligned and mixed; None: the last stage (``last_stage``).
        prob, mode, pairing: as ``BaseMixer`` (``mode="batch"``: one lambda for the batch, as the reference).
        num_classes, label_smoothing: of the targets, as the mixers.
        loss: as every Method (``automix.losses.target_loss``).
        total_steps, seed: see ``Method``.

    Raises:
        ValueError: ``eps`` not a finite number > 0, ``max_iter`` < 1, ``input_prob`` outside [0, 1], an unknown
            ``direction``, a ``layer`` that is not a module of the model, or bad mixup options (named by
            ``Mixup``); during the step, a layer whose output is not [B, C, h, w] (``TypeError``).

    Example (x: [B, C, H, W] images, y: [B] class ids; the plan is [B, h*w, h*w] at the last stage):
        >>> import torch, automix
        >>> model = automix.create_model("preact_resnet18", num_classes=4, width=4)
        >>> method = automix.create_method("alignmix", model, num_classes=4, seed=0, input_prob=0.0)
        >>> method.layer
        'layer4'
        >>> loss, logs = method.training_step(torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1]))
        >>> params = method.last_params["mix"]
        >>> params.extra["layer"], params.extra["size"], tuple(params.extra["plan"].shape), loss.dtype
        ('layer4', (4, 4), (6, 16, 16), torch.float32)
    """

    def __init__(self, model: nn.Module, *, alpha: float = 2.0, lam: LamSpec | None = None, eps: float = 0.1,
                 max_iter: int = 100, direction: str = "both", input_prob: float = 0.5, layer: str | None = None,
                 prob: float = 1.0, mode: str = "batch", pairing: str = "perm", num_classes: int | None = None,
                 label_smoothing: float = 0.0, loss: str | TargetLoss = "ce", total_steps: int | None = None,
                 seed: int | None = None) -> None:
        super().__init__(model, total_steps=total_steps, seed=seed)
        self.mixer = Mixup(**alpha_or_lam(alpha, lam), prob=prob, mode=mode, pairing=pairing, num_classes=num_classes,
                           label_smoothing=label_smoothing)
        self.eps = check_positive("eps", eps)
        self.max_iter = check_positive_int("max_iter", max_iter)
        self.direction = check_choice("direction", direction, DIRECTIONS)
        self.input_prob = check_range("input_prob", input_prob, 0.0, 1.0)
        if layer is None:
            layer = last_stage(model)
        check_type("layer", layer, str, "a module path string or None")
        resolve_module(model, layer, "layer")
        self.layer = layer
        self.num_classes = num_classes
        self.loss = resolve_loss(loss)

    # ------------------------------------------------------------------ the draw and its replay
    def apply(self, t: Tensor, params: MixParams) -> Tensor:
        """Replay a draw: input mixup on any tensor when ``extra["layer"]`` is ``"input"``; else the aligned mix
        of ``t`` [B, C, H, W] (the stage's output, or a map whose H, W are multiples of ``extra["size"]``). A sample
        whose lam is 1 (left unmixed by ``prob``) keeps its map as it is in both directions."""
        if params.extra.get("layer", INPUT) == INPUT or not params.mixed:
            return self.mixer.apply(t, params)
        lam = params.lam.to(t.device).view(-1, 1, 1, 1)
        plan, size = params.extra["plan"], params.extra["size"]
        partner = t[params.index.to(t.device)]
        if params.extra["align"] == "to_sample":
            mixed = lam * t.float() + (1 - lam) * align(partner, plan, size, "sample").float()
        else:
            mixed = lam * align(t, plan, size, "partner").float() + (1 - lam) * partner.float()
            mixed = torch.where(lam == 1, t.float(), mixed)  # unmixed (prob) or lam 1: the sample as it is
        return mixed.to(t.dtype)

    def apply_seg(self, seg: Tensor, params: MixParams, x: Tensor) -> Tensor:
        """Mix a float one-hot / soft segmentation map [B, K, H, W] with a draw (the mix is soft: integer maps are
        refused, one-hot them first)."""
        return mix_seg(seg, params, x, self.apply, hard=False, who="alignmix")

    def plan(self, a: Tensor, index: Tensor) -> Tensor:
        """The Sinkhorn plans [B, n, n] between each map of ``a`` [B, C, h, w] and its partner's ``a[index]``,
        without gradient."""
        with torch.no_grad():
            a = a.detach()
            return sinkhorn_plan(feature_cost(a, a[index.to(a.device)]), self.eps, self.max_iter)

    def _draw(self, x: Tensor, generator: torch.Generator, direction: str) -> MixParams:
        """Partner and lambda (``Mixup.sample``), then where to mix and which way to align (one ``rand(2)``)."""
        params = self.mixer.sample(x, generator)
        coin = torch.rand(2, generator=generator, device=generator.device)
        if bool(coin[0] < self.input_prob):
            params.extra["layer"] = INPUT
        else:
            params.extra["layer"] = self.layer
            params.extra["align"] = direction if direction != "both" else (
                "to_sample" if bool(coin[1] < 0.5) else "to_partner")
        return params

    # ------------------------------------------------------------------ training
    def training_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not self.mixing:
            return self.clean_step(x, y, who="alignmix", num_classes=self.num_classes,
                                   label_smoothing=self.mixer.label_smoothing, loss=self.loss)
        self.check_batch(x, y, "alignmix", num_classes=self.num_classes)
        x = self.cast_input(x)
        self.mixer.check_targets(y, x.shape[0])
        params = self._draw(x, self.generator, self.direction)
        if params.extra["layer"] == INPUT:
            logits = self.model(self.mixer.apply(x, params))
        else:
            logits = self._forward_aligned(x, params)
        self.last_params = {"mix": params}
        loss = target_loss(self.loss, logits, self.mixer.mix_targets(y, params))
        return loss, {"loss": loss.detach()}

    def _forward_aligned(self, x: Tensor, params: MixParams) -> Tensor:
        """The model on ``x`` with the first output of ``self.layer`` replaced by the aligned mix; fills
        ``params.extra["plan"]`` and ``["size"]``."""
        def align(output: Any) -> Tensor:
            self._check_map(output, x.shape[0])
            params.extra["plan"] = self.plan(output, params.index)
            params.extra["size"] = tuple(output.shape[2:])
            return self.apply(output, params)

        return forward_replacing(self.model, self.layer, x, align)

    def _check_map(self, output: Any, batch: int) -> None:
        if not isinstance(output, Tensor) or output.ndim != 4 or output.shape[0] != batch:
            raise TypeError(f"layer: module {self.layer!r} must return a feature map [B, C, h, w] with B={batch} to "
                            f"be aligned, got {type(output).__name__} {tuple(getattr(output, 'shape', ()))}")

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def mix_preview(self, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None
                    ) -> dict[str, Tensor]:
        """The aligned mix shown on the images: the plan from the model's last-stage maps of ``x`` (one pass in
        eval mode: BN statistics untouched, no gradients), applied to whole image cells (``align``).
        ``"partner"`` is the partner re-arranged onto the sample's layout (``direction="to_partner"``: the
        partner itself, and ``"mixed"`` holds the sample re-arranged onto it); ``"mask"`` is ``1 - lam``."""
        gen = generator if generator is not None else torch.default_generator  # as the mixers' previews
        n = x.shape[0]
        for _ in range(20):
            params = self.mixer.sample(x, gen)
            if n < 2 or bool((params.index.cpu() != torch.arange(n)).all()):
                break
        params.extra.update(layer=self.layer, align="to_partner" if self.direction == "to_partner" else "to_sample")
        seen: dict[str, Tensor] = {}
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        handle = resolve_module(self.model, self.layer).register_forward_hook(
            lambda m, i, out: None if "f" in seen else seen.update(f=out))
        try:
            eager_call(self.model, self.cast_input(x))
        finally:
            handle.remove()
            for module, training in modes:
                module.training = training
        self._check_map(seen.get("f"), n)
        params.extra["plan"] = self.plan(seen["f"], params.index)
        params.extra["size"] = tuple(seen["f"].shape[2:])
        index = params.index.to(x.device)
        partner = x[index] if params.extra["align"] == "to_partner" else align(
            x[index], params.extra["plan"], params.extra["size"], "sample")
        mask = (1.0 - params.lam).view(-1, 1, 1, 1).expand(n, 1, *x.shape[2:])
        if params.extra["align"] == "to_sample":
            legend = ("original: label weight lam",
                      "partner: label weight 1 - lam, its cells",
                      "  moved to the original's layout (transport)",
                      "mask: partner's share (constant 1 - lam)",
                      "mixed = (1-mask)*original + mask*partner")
        else:
            legend = ("original: label weight lam",
                      "partner: label weight 1 - lam",
                      "mask: partner's share (constant 1 - lam)",
                      "mixed = (1-mask)*original' + mask*partner,",
                      "  original' = its cells moved to the partner's")
        legend += ("right: lam | mean of the mask",)
        return {"x": x.cpu(), "partner": partner.cpu(), "mask": mask.float().cpu().contiguous(),
                "mixed": self.apply(x, params).cpu(), "lam": params.lam.cpu(), "lam_partner": 1.0 - params.lam.cpu(),
                "legend": legend}
