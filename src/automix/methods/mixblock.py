"""The Mix Block of AutoMix and SAMix: a mixing mask generated from features by cross-attention.

Given features ``z`` [N, C, h, w] of a batch, a mixing ratio ``lam`` and a partner permutation,
the block computes for every position of each sample's map a single logit, attention-pooled from
the partner's map, upsamples it to the image size and applies a sigmoid: that is the weight of the
partner at each pixel (the sample itself gets ``1 - mask``). As ``PixelMixBlock.forward`` in
OpenMixup (github.com/Westlake-AI/openmixup @ 37e1372) ``openmixup/models/heads/pmix_block.py``, for AutoMix
(arXiv:2103.13027) and SAMix (arXiv:2111.15454):

* ``z_a = z`` (the sample, label weight lam) and ``z_b = z[perm]`` (the partner);
* lam encoding: none; a constant channel (``lam_concat``: lam on z_a, 1 - lam on z_b); or the SAMix
  multiplicative residual ``z_a * (1 + r(lam))``, ``z_b * (1 + 1 - r(lam))`` (``lam_mul``);
* value ``v = W_v z_b`` (1x1 conv to one channel, or SAMix's ConvNeck);
* query/key: one shared 1x1 conv on z_a and z_b (AutoMix), or separate convs on ``[z_a; z_b]``
  (SAMix, ``qk_concat``);
* ``P = softmax(q k / sqrt(d))`` over the partner's positions, in float32 (also under autocast);
* ``s = P v`` -> [N, 1, h, w] -> upsampled (nearest for AutoMix, bilinear for SAMix) -> sigmoid;
* with ``mask_fit`` (automix's default, not the reference's): before the sigmoid each sample's logit
  map is shifted by the one offset that makes its mask mean exactly ``1 - lam`` (``fit_mask_mean``);
* with ``min_sharpness`` as well (AutoMix's default 0.6), each map is also scaled so that its mask's
  spatial std is at least that share of a hard cut's (``fit_sharp_mask``); with nearest upsampling by an
  integer factor both fits run at feature size and the mask is upsampled (the same mask, 16x cheaper).

Convolutions start from zero bias and Normal(0, 0.01) weights (the reference's ``init_std``: the first
masks are about 0.5 everywhere) or, with ``init_std=None``, Normal(0, 1 / sqrt(fan_in)) (AutoMix's default
with ``mask_fit``: masks that vary in space from the first step).

Why ``mask_fit``: the reference's mask is free in level and only a batch-level hinge (``mask_loss``)
ties its mean to lam, while the Mix Block is not told lam (CIFAR configs). Each step's gradient then
pushes the level of every mask of the batch one way (toward the sample when lam > 0.5, toward the
partner when lam < 0.5), at a step size that grows with the feature scale, and a sigmoid pushed into
saturation passes no gradient back: the masks collapse to whole-image choices and stay there
(measured in docs/benchmarks.md, "Why the Mix Block collapsed"). With the level fitted per sample,
lam decides how much of each image is shown and the Mix Block only where: its gradient has no level
component, every mask's mean equals its label weight, and a mask can be sharp but never whole.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_positive_int, check_range, check_type


def rescale_lam(lam: float, k: float) -> float:
    """SAMix's S-curve ``r(lam) = (4/3 lam^3 - 2 lam^2 + k' lam) / (k' - 2/3)``, k' = k + 1; identity for k < 0.

    ``r(0) = 0``, ``r(0.5) = 0.5``, ``r(1) = 1``; flattened around 0.5 for small k.
    """
    if k < 0:
        return lam
    kk = k + 1.0
    return (4.0 / 3.0 * lam**3 - 2.0 * lam**2 + kk * lam) / (kk - 2.0 / 3.0)


class ConvNeck(nn.Module):
    """SAMix's non-linear value head: 1x1 conv (C -> C/2, no bias) + BN + ELU + 1x1 conv (-> 1) + dropout."""

    def __init__(self, in_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = max(in_channels // 2, 1)
        self.conv1 = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, 1, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, z: Tensor) -> Tensor:
        return self.drop(self.conv2(F.elu(self.bn(self.conv1(z)))))


class PixelMixBlock(nn.Module):
    """Mask generator shared by AutoMix and SAMix (see the module docstring).

    Args:
        in_channels: channels C of the feature map.
        reduction: query/key width is ``C // reduction`` (2 in every reference config).
        use_scale: divide attention logits by sqrt(d).
        lam_concat: append a lam channel (AutoMix ImageNet configs).
        lam_mul: SAMix multiplicative lam residual; ``lam_mul_k`` shapes its S-curve (-1 = identity).
        qk_concat: SAMix separate query/key convs over the concatenated pair.
        value_neck: ``"conv"`` (1x1 conv) or ``"convneck"`` (SAMix ConvNeck); ``value_dropout`` for it.
        upsample: ``"nearest"`` (AutoMix) or ``"bilinear"`` (SAMix).
        mask_fit: shift each sample's logits so its mask mean is exactly ``1 - lam`` (``fit_mask_mean``);
            ``False`` is the reference's free mask.
        init_std: std of the convolutions' Normal init: 0.01 (the reference's: the attention starts
            uniform, every mask is flat) or ``None`` for ``1 / sqrt(fan_in)`` (attention logits of order 1,
            masks that vary in space from the first step).
        min_sharpness: with ``mask_fit``, the least ratio in [0, 1) of a mask's spatial std to a hard cut's
            (``fit_sharp_mask``); 0 (default) fits the mean only.

    Raises:
        ValueError: a value out of range, ``lam_concat`` with ``lam_mul``, or ``min_sharpness`` without
            ``mask_fit``. TypeError: a flag that is not a bool.
    """

    def __init__(self, in_channels: int, *, reduction: int = 2, use_scale: bool = True, lam_concat: bool = False,
                 lam_mul: bool = False, lam_mul_k: float = -1.0, qk_concat: bool = False, value_neck: str = "conv",
                 value_dropout: float = 0.0, upsample: str = "nearest", mask_fit: bool = False,
                 init_std: float | None = 0.01, min_sharpness: float = 0.0) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("reduction", reduction)
        for name, flag in (("use_scale", use_scale), ("lam_concat", lam_concat), ("lam_mul", lam_mul),
                           ("qk_concat", qk_concat), ("mask_fit", mask_fit)):
            check_type(name, flag, bool, "a bool")
        if lam_concat and lam_mul:
            raise ValueError("lam_concat and lam_mul are alternative lam encodings; set at most one (got both True)")
        self.use_scale, self.lam_concat, self.lam_mul, self.qk_concat = use_scale, lam_concat, lam_mul, qk_concat
        self.mask_fit = mask_fit
        self.min_sharpness = check_range("min_sharpness", min_sharpness, 0.0, 1.0, high_open=True)
        self.last_scale: Tensor | None = None  # the sharpness floor's k per map of the last call (diagnostics)
        if self.min_sharpness and not mask_fit:
            raise ValueError(f"min_sharpness={min_sharpness!r} needs mask_fit=True: it scales the logits, which "
                             "would also move a free mask's level")
        self.lam_mul_k = float(lam_mul_k)
        self.upsample = check_choice("upsample", upsample, ("nearest", "bilinear"))
        check_choice("value_neck", value_neck, ("conv", "convneck"))
        check_range("value_dropout", value_dropout, 0.0, 1.0, high_open=True)
        c = in_channels + (1 if lam_concat else 0)
        self.inter_channels = max(in_channels // reduction, 1)
        qk_in = 2 * c if qk_concat else c
        self.query = nn.Conv2d(qk_in, self.inter_channels, 1)
        self.key = nn.Conv2d(qk_in, self.inter_channels, 1) if qk_concat else None
        self.value = nn.Conv2d(c, 1, 1) if value_neck == "conv" else ConvNeck(c, value_dropout)
        self.init_std = None if init_std is None else check_range("init_std", init_std, 0.0, float("inf"))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                nn.init.normal_(m.weight, 0.0, fan_in**-0.5 if self.init_std is None else self.init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, z: Tensor, lam: float, perm: Tensor, size: tuple[int, int]) -> Tensor:
        """Partner-weight mask [N, 1, H, W] (float32) for features ``z`` [N, C, h, w] and image ``size``.

        ``z`` may have any float dtype: the convolutions run in the block's own dtype (float32, or bf16 /
        fp16 when the method was built on or moved to such a model), the attention and sigmoid in float32.
        """
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self._forward(z.to(self.query.weight.dtype), float(lam), perm, size)

    def _forward(self, z: Tensor, lam: float, perm: Tensor, size: tuple[int, int]) -> Tensor:
        n, _, h, w = z.shape
        z_a, z_b = z, z[perm]
        if self.lam_mul:
            r = rescale_lam(lam, self.lam_mul_k)
            z_a, z_b = z_a * (1.0 + r), z_b * (1.0 + (1.0 - r))
        if self.lam_concat:
            z_a = torch.cat([z_a, z_a.new_full((n, 1, h, w), lam)], dim=1)
            z_b = torch.cat([z_b, z_b.new_full((n, 1, h, w), 1.0 - lam)], dim=1)
        # From here on float32 (a no-op for a float32 block): a bf16 softmax over hw positions loses the mask.
        v = self.value(z_b).float().reshape(n, h * w, 1)
        if self.qk_concat:
            pair = torch.cat([z_a, z_b], dim=1)
            q, k = self.query(pair), self.key(pair)
        else:
            q, k = self.query(z_a), self.query(z_b)
        q = q.float().reshape(n, self.inter_channels, h * w).transpose(1, 2)  # [N, hw, d]
        k = k.float().reshape(n, self.inter_channels, h * w)  # [N, d, hw]
        logits = torch.bmm(q, k)
        if self.use_scale:
            logits = logits / self.inter_channels**0.5
        attn = logits.softmax(dim=-1)  # rows: positions of the sample; softmax over the partner's
        s = torch.bmm(attn, v).reshape(n, 1, h, w)
        if self.mask_fit and self.min_sharpness:
            s = s + TIE_BREAK * partner_energy(z[perm].float())
        if self.mask_fit and self.min_sharpness and self.upsample == "nearest" and size[0] % h == 0 \
                and size[1] % w == 0:
            # Replicating each logit an equal number of times keeps every mask's mean and std: fit the small map.
            mask, self.last_scale = fit_sharp_mask(s, 1.0 - lam, self.min_sharpness, return_scale=True)
            return F.interpolate(mask, size=tuple(size))
        if (h, w) != tuple(size):
            kw = {"align_corners": False} if self.upsample == "bilinear" else {}
            s = F.interpolate(s, size=tuple(size), mode=self.upsample, **kw)
        if self.mask_fit:
            if self.min_sharpness:
                mask, self.last_scale = fit_sharp_mask(s, 1.0 - lam, self.min_sharpness, return_scale=True)
                return mask
            return fit_mask_mean(s, 1.0 - lam)
        return torch.sigmoid(s)


TIE_BREAK = 1e-3  # logit units: far below a working Mix Block's spread (about 1), within the floor's reach


@torch.no_grad()
def partner_energy(z_b: Tensor) -> Tensor:
    """Each position's feature energy ``||z_b||_2`` over channels, standardised per sample: ``[N, 1, h, w]``.

    The sharpness floor's tie-breaker (``PixelMixBlock`` adds ``TIE_BREAK`` times it to the logits): a Mix
    Block whose logits are (nearly) equal everywhere, e.g. an attention that picks one partner position for
    every query, gives the floor nothing to sharpen, and its mask would be flat. On the quickstart it went
    there within ten epochs (57% of held-out maps at the floor's scale cap, spatial std 0.12). With the
    tie-breaker such a block shows the partner where its features are strongest (a saliency cut, as
    SaliencyMix does with image saliency) instead of a blend; a block with logits of its own is unchanged
    to 1e-3. Constant features give zeros.
    """
    e = z_b.pow(2).sum(1, keepdim=True).sqrt()
    e = e - e.mean(dim=(2, 3), keepdim=True)
    return e / e.pow(2).mean(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-12)


PROBE_BUDGET = 2**24  # elements of one search round's probe tensor: 64 MiB in float32


def search_probes(numel: int, device: torch.device) -> int:
    """Probes per round of the mask fits' searches (``_fit_offset``, ``sharpness_scale``): 15, 3 or 1.

    Each round of a search tries ``p`` points at once and shrinks the bracket by ``p + 1``, so 15 probes do in
    4 rounds what bisection does in 16, with the same points (dyadic fractions of the bracket) and, for a test
    monotone along them, the same answer (``_narrow``). On a GPU a round is a few small kernels whose launches,
    not their arithmetic, are the cost: the sharpness floor's 340 sequential bisection rounds made AutoMix 10x a
    vanilla step on an H200 (docs/benchmarks.md, "GPU check"). On the CPU the arithmetic is the cost and the extra
    probes are work, so it keeps bisection. A many-probe round holds ``(p + 1) * numel`` elements, at most
    ``PROBE_BUDGET``; bisection holds ``numel``, whatever its size.
    """
    if device.type == "cpu":
        return 1
    for p in (15, 3):
        if (p + 1) * numel <= PROBE_BUDGET:
            return p
    return 1


def _check_probes(probes: int) -> int:
    check_positive_int("probes", probes)
    if probes & (probes + 1):
        raise ValueError(f"probes={probes!r} must be one less than a power of 2 (1, 3, 7, 15, ...): each round "
                         "splits the bracket into probes + 1 equal parts, as that many bisection steps would")
    return probes


def _probe_points(lo: Tensor, hi: Tensor, parts: int) -> Tensor:
    """The ``parts - 1`` inner edges of ``[lo, hi]`` split into ``parts`` equal parts: ``[parts - 1, *lo.shape]``
    (two parts: bisection's midpoint, written as bisection writes it)."""
    if parts == 2:
        return (0.5 * (lo + hi))[None]
    frac = torch.arange(1, parts, dtype=lo.dtype, device=lo.device) / parts
    return lo + (hi - lo) * frac.reshape((-1,) + (1,) * lo.dim())


def _narrow(lo: Tensor, hi: Tensor, points: Tensor, ok: Tensor) -> tuple[Tensor, Tensor]:
    """The part of ``[lo, hi]`` that ends at the first probe of ``points`` where ``ok`` holds (``hi`` if none).

    As bisection, the upper end is always a point that passed (or the first ``hi``), also where the predicate is
    not monotone along the probes: the sharpness test is not, near its boundary at large scales, where the
    inner offset fit is coarse; counting the failed probes instead kept a failed one there."""
    edges = torch.cat([lo[None], points, hi[None]])
    j = (~ok).to(torch.int64).cumprod(0).sum(0, keepdim=True)  # leading failures
    return edges.gather(0, j)[0], edges.gather(0, j + 1)[0]


@torch.no_grad()
def sharpness_scale(logits: Tensor, target: float | Tensor, min_sharpness: float, max_scale: float = 1e4,
                    iters: int = 16, probes: int | None = None) -> Tensor:
    """The smallest factor ``k >= 1`` per sample that makes the fitted mask of ``k * logits`` sharp enough.

    Args:
        logits: float tensor ``[N, 1, h, w]`` (any ``[N, ...]``): the Mix Block's partner logits.
        target: each mask's mean, as for ``fit_mask_mean`` (a float in [0, 1] or a tensor ``[N]``).
        min_sharpness: the wanted ratio, in [0, 1), of a mask's spatial std to ``sqrt(t (1 - t))``, the
            std of a hard cut with the same mean ``t`` (0: any mask; near 1: almost a hard cut).
        max_scale: the largest factor tried (a map with ties, e.g. constant, cannot be sharpened at all).
        iters: bisection steps on ``log k`` (16: ``k`` within 0.03% of the boundary).
        probes: scales tried at once per round (``2**b - 1``: a round does ``b`` bisection steps); ``None``
            picks by device and size (``search_probes``). Where the test is monotone in ``k`` every choice
            gives bisection's ``k`` up to one bisection cell; where it is not (spiky maps at scales in the
            thousands, where the inner offset fit is coarse) each returns a ``k`` that passed it, maybe another.

    Returns:
        ``k``, a float tensor ``[N, 1]`` without gradient: 1 where the mask is already sharp enough.

    Raises:
        ValueError: ``probes`` not of the form ``2**b - 1``.

    Why: with its level fitted, nothing in AutoMix's loss asks the mask to stay sharp, and on CPU-scale
    data the Mix Block's loss prefers a blend: its masks flatten to a spatial std below 0.01, and a floor
    on the logits' std is evaded by a few extreme pixels (docs/benchmarks.md, "What the fitted mask does on
    CIFAR"). A floor on the mask's own std cannot be evaded: a mask of mean ``t`` with that std must show
    each image over a real part of the picture. The mask's std rises with ``k`` (from 0 at ``k = 0`` to the
    hard cut's as ``k -> inf``), so ``k`` is found by bisection; the Mix Block still decides where the
    partner shows (the order of its logits) and may always be sharper than the floor.
    """
    n = logits.shape[0]
    flat = logits.reshape(n, -1)
    if probes is None:
        probes = search_probes(flat.numel(), flat.device)
    bits = _check_probes(probes).bit_length()
    t = _targets(target, flat)
    want = min_sharpness * (t * (1 - t)).clamp_min(0).sqrt()
    tc = t.clamp(1e-6, 1 - 1e-6)

    def sharp_enough(log_k: Tensor) -> Tensor:  # [G, N, 1] -> bool [G, N, 1]: all G probes in one pass
        g = log_k.shape[0]
        u = (flat * log_k.exp()).reshape(g * n, -1)
        fit = torch.sigmoid(u + _fit_offset(u, tc.repeat(g, 1), 20))
        return (fit.std(1, unbiased=False, keepdim=True) >= want.repeat(g, 1)).reshape(g, n, 1)

    lo, hi = torch.zeros_like(t), torch.full_like(t, math.log(max_scale))
    # k = 1 (log k = 0) rides along with the first round of a many-probe search; alone for bisection, whose
    # memory stays one probe's.
    done, left = (sharp_enough(lo[None])[0] if probes == 1 or iters == 0 else None), iters
    while left > 0:
        parts = 2 ** min(bits, left)
        left -= min(bits, left)
        points = _probe_points(lo, hi, parts)
        if done is None:
            ok = sharp_enough(torch.cat([lo[None], points]))
            done, ok = ok[0], ok[1:]
        else:
            ok = sharp_enough(points)
        lo, hi = _narrow(lo, hi, points, ok)
    return torch.where(done, torch.ones_like(t), hi.exp()).to(logits.dtype)


def fit_sharp_mask(logits: Tensor, target: float | Tensor, min_sharpness: float, *,
                   return_scale: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``sigmoid(k * logits + delta)``, fitted per sample: mean ``target`` and at least a given sharpness.

    Args:
        logits: float tensor ``[N, 1, H, W]`` (any ``[N, ...]``): the Mix Block's partner logits.
        target: each mask's mean, a float in [0, 1] or a float tensor ``[N]``.
        min_sharpness: in (0, 1): the least ratio of a mask's spatial std to ``sqrt(t (1 - t))``, the std
            of a hard cut of the same mean ``t`` (``sharpness_scale``).

    Returns:
        The mask, same shape and dtype as ``logits``: each sample's mean is ``target``; its std is at least
        ``min_sharpness * sqrt(t (1 - t))`` unless its logits have too many ties (a constant map stays flat) or
        the map is too coarse for the target (a cell of the map larger than ``min(t, 1 - t)`` of it, e.g.
        ``t`` beyond 0.97 on a 4 x 4 map: about 0.3% of lam ~ Beta(2, 2) draws there).
        With ``return_scale``, also each map's ``k`` ([N], no gradient; ``sharpness_scale``'s ``max_scale``
        where the floor could not be reached).

    ``k >= 1`` (``sharpness_scale``) and ``delta`` are functions of the logits and the gradient is the implicit
    one through both, divided by ``k``: where the floor binds (``k > 1``), the gradient reaching the logits
    moves neither the mean nor the std of the mask, only where the partner shows, so a Mix Block whose loss
    prefers a blend cannot flatten the mask by shrinking or squashing its logits; the division keeps its size
    that of a unit-scale map (the exact one grows as 1 / the logits' scale and blew the Mix Block's weights up
    on CIFAR). Where it does not bind (``k = 1``), this is ``fit_mask_mean`` with its exact gradient.
    """
    n = logits.shape[0]
    flat = logits.reshape(n, -1)
    t = _targets(target, flat)
    edge = (t <= 0) | (t >= 1)
    s0 = flat.detach()
    with torch.no_grad():
        k = sharpness_scale(s0, t, min_sharpness)
        delta = _fit_offset(s0 * k, t.clamp(1e-6, 1 - 1e-6), 30)
        # The 2 x 2 solve in float64: near a hard cut few pixels have slope and float32 sums lose the system.
        s64, k64 = s0.double(), k.double()
        p = torch.sigmoid(s64 * k64 + delta.double())
        a = p * (1 - p)  # d mask / d logit
        b = (p - p.mean(1, keepdim=True)) * a  # (mask - mean) * d mask / d logit: the std's direction
        sa, sb = a.sum(1, keepdim=True), b.sum(1, keepdim=True)
        sas, sbs = (a * s64).sum(1, keepdim=True), (b * s64).sum(1, keepdim=True)
        det = sas * sb - sa * sbs
        # An ill-conditioned system (ties, a saturated mask) falls back to holding the mean only.
        bound = (k64 > 1) & (det.abs() > 1e-9 * (sas * sb).abs() + 1e-9 * (sa * sbs).abs() + 1e-300)
        det = torch.where(bound, det, torch.ones_like(det))
        a, b, sa, sb, sas, sbs, det = (v.to(s0.dtype) for v in (a, b, sa, sb, sas, sbs, det))
    # A tangent that is 0 in value: du = k ds + s dk + d delta, with (dk, d delta) keeping mean (and std where
    # the floor binds) fixed to first order: sum a du = 0 and sum b du = 0. Divided by k: where the floor binds
    # the mask depends on the logits' shape only, so its exact gradient grows as 1 / their scale; small logits
    # (an attention that averages the partner's values) then took steps that blew the Mix Block's weights up to
    # 1e11 within an epoch on CIFAR, where float32 flattens every map. Divided, the step has the exact direction
    # (no part that moves a mean, a std or the scale) and the size of a unit-scale map's.
    moved = (flat - s0) / k
    ga = k * (a * moved).sum(1, keepdim=True)
    gb = k * (b * moved).sum(1, keepdim=True)
    dk = torch.where(bound, (sa * gb - sb * ga) / det, torch.zeros_like(ga))
    dd = torch.where(bound, (sbs * ga - sas * gb) / det, -ga / sa.clamp_min(1e-12))
    mask = torch.sigmoid(s0 * k + delta + k * moved + s0 * dk + dd)
    mask = torch.where(edge, t.expand_as(mask), mask).reshape(logits.shape)
    return (mask, k.reshape(n)) if return_scale else mask


def _targets(target: float | Tensor, flat: Tensor) -> Tensor:
    """Each row's mask mean as ``[N, 1]`` in ``flat``'s dtype and device; a single number is filled on the device
    (``torch.as_tensor`` would copy it from the host: a synchronisation per call on a GPU, twice per AutoMix step)."""
    n = flat.shape[0]
    if isinstance(target, numbers.Real):
        return torch.full((n, 1), float(target), dtype=flat.dtype, device=flat.device)
    return torch.as_tensor(target, dtype=flat.dtype, device=flat.device).reshape(-1, 1).expand(n, 1)


def _fit_offset(flat: Tensor, t: Tensor, iters: int, probes: int | None = None) -> Tensor:
    """The offset ``delta`` [N, 1] with ``mean(sigmoid(flat + delta)) = t`` per row, by bisection (no gradient).

    ``probes`` offsets are tried at once per round (``search_probes``; the mean is monotone in the offset: the same
    offset up to rounding)."""
    if probes is None:
        probes = search_probes(flat.numel(), flat.device)
    bits = _check_probes(probes).bit_length()
    base = torch.logit(t)
    lo = base - flat.max(1, keepdim=True).values
    hi = base - flat.min(1, keepdim=True).values
    left = iters
    while left > 0:
        parts = 2 ** min(bits, left)
        left -= min(bits, left)
        if parts == 2:  # plain bisection: no probe axis
            mid = 0.5 * (lo + hi)
            above = torch.sigmoid(flat + mid).mean(1, keepdim=True) > t
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
            continue
        points = _probe_points(lo, hi, parts)  # [parts - 1, N, 1]
        lo, hi = _narrow(lo, hi, points, torch.sigmoid(flat + points).mean(2, keepdim=True) > t)
    return 0.5 * (lo + hi)


def fit_mask_mean(logits: Tensor, target: float | Tensor, iters: int = 30) -> Tensor:
    """``sigmoid(logits + delta)`` with one offset ``delta`` per sample so that each mask's mean is ``target``.

    Args:
        logits: float tensor ``[N, 1, H, W]`` (any ``[N, ...]``): the Mix Block's partner logits.
        target: the wanted mean of each sample's mask, a float in (0, 1) or a float tensor ``[N]``.
        iters: bisection steps; the offset's bracket shrinks by 2**-iters (30: below float32 precision).

    Returns:
        The mask, same shape and dtype as ``logits``, each sample's mean equal to ``target`` (to float
        precision; exactly 0 or 1 when the target is).

    The offset is found by bisection (the mask mean rises monotonically with it) inside the bracket
    ``[logit(target) - max(logits), logit(target) - min(logits)]``, which always holds the solution. Its
    gradient is the implicit one, ``d delta / d s_j = -sigmoid'(s_j + delta) / sum_k sigmoid'(s_k + delta)``:
    the gradient reaching the logits has no component that moves a sample's mean, so training shapes where
    the partner shows, never how much of it.
    """
    n = logits.shape[0]
    flat = logits.reshape(n, -1)
    t = _targets(target, flat)
    edge = (t <= 0) | (t >= 1)
    tc = t.clamp(1e-6, 1 - 1e-6)
    with torch.no_grad():
        delta = _fit_offset(flat, tc, iters)
        slope = torch.sigmoid(flat + delta)
        slope = slope * (1 - slope)
        weight = slope / slope.sum(1, keepdim=True).clamp_min(1e-12)
    moved = flat - flat.detach()
    mask = torch.sigmoid(flat + delta - (weight * moved).sum(1, keepdim=True))
    mask = torch.where(edge, t.expand_as(mask), mask)
    return mask.reshape(logits.shape)


def mask_loss(mask: Tensor, lam: float, margin: float, mode: str = "L1") -> Tensor:
    """Mask regulariser on the partner mask ``mask`` [N, 1, H, W] for ratio ``lam``.

    ``"L1"``: ``max(|(1 - lam) - mean(mask)| - margin, 0)`` with the mean over the whole batch (one
    scalar, as the reference). ``"L1+Variance"`` (SAMix) subtracts ``2 * mean((mask - mean)^2)``,
    rewarding sharper masks.
    """
    mean = mask.mean()
    loss = (torch.abs((1.0 - lam) - mean) - margin).clamp_min(0.0)
    if mode == "L1+Variance":
        loss = loss - 2.0 * (mask - mean).pow(2).mean()
    return loss


def adjust_mask(mask: Tensor, lam: float) -> Tensor:
    """Rescale each sample's partner mask so its mean is exactly ``1 - lam``, staying inside [0, 1].

    This is what the reference's ``mask_adjust`` intends for the backbone mask; the reference
    rescales toward the *other* branch's lam (``lam[0]``), which mismatches mask and labels. Here the
    lam that built the mask and labels the batch is used.
    """
    mean = mask.mean(dim=(1, 2, 3), keepdim=True)
    target = 1.0 - lam
    shrink_partner = mask * (target / mean.clamp_min(1e-8))
    shrink_self = 1.0 - (1.0 - mask) * (lam / (1.0 - mean).clamp_min(1e-8))
    return torch.where(mean > target, shrink_partner, shrink_self).clamp(0.0, 1.0)


def whole_image_share(mask: Tensor, edge: float = 0.05, lam: float | Tensor | None = None) -> Tensor:
    """The share of samples whose mask shows one of their two images almost alone while the label mixes them.

    Args:
        mask: partner masks ``[N, 1, H, W]`` (float).
        edge: a mask mean below ``edge`` or above ``1 - edge`` shows one image almost alone.
        lam: the label weight of each sample (a float or ``[N]``); samples whose label is itself that
            lopsided (``1 - lam`` outside ``[edge, 1 - edge]``) are not counted: their mask agrees with
            their label. ``None`` counts every lopsided mask (with lam ~ Beta(2, 2) a mask that follows lam
            is lopsided for about 1.5% of samples).

    Returns:
        A float32 scalar tensor in [0, 1]. Logged per step as ``mask_whole``: near 1 means the Mix Block
        has collapsed to whole-image choices.
    """
    mean = mask.flatten(1).mean(1)
    lopsided = (mean < edge) | (mean > 1.0 - edge)
    if lam is not None:
        share = 1.0 - _targets(lam, mean[:, None])[:, 0]
        lopsided = lopsided & (share >= edge) & (share <= 1.0 - edge)
    return lopsided.float().mean()
