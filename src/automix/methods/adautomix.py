"""AdAutoMix (Adversarial AutoMixup, arXiv:2312.11954, ICLR 2024) as a plain-PyTorch Method, for any backbone.

Built from the authors' own code, not from OpenMixup's port of it: github.com/JinXins/Adversarial-AutoMixup at
commit 0990787 (09907876cf830ac74c7b333188202f1533e83a22, 2023-12-19; the same two files at its HEAD 9d6fd12),
``openmixup/models/classifiers/AdAutoMix.py`` (class ``AdAutoMix``) and ``openmixup/models/heads/Ada_mix_pine.py``
(class ``AdaptiveMask``), with its configs ``configs/classification/cifar100/basic/r18_adautomix_bilinear.py``,
``.../imagenet/adautomix/basic/r50_adautomix_bilinear.py``. Nothing is copied; this is a re-implementation of what
that code does. One training step, with ``K = mix_samples`` (3 in the CIFAR configs, 2 on ImageNet):

1. Draw K lambdas from Beta(alpha, alpha) (alpha 1 in every config; or from a given ``lam=``). K = 2: ``lam_mb``
   drives the generator's own sample and ``lam_bb`` the classifier's, independent, as AutoMix. K > 2: one
   vector, normalised to sum 1, shared by both branches. The sources of a mix: K = 2, the batch itself and one
   random permutation of it (one permutation per branch); K > 2, K random permutations per branch (the batch in
   its own order is not one of them).
2. Features ``z`` of the clean batch from the EMA encoder at ``feature_layer`` (no gradient, train-mode BN).
3. The generator (``AdaptiveMask``): for every source i, from its features ``z_i`` (with a constant lam_i channel
   when ``lam_concat``): a query ``q_i`` and a key ``k_i`` (separate 1x1 convs to C / 2 channels, each followed
   by BN when ``att_norm`` and by a ReLU: upstream's ``ConvModule`` with its default activation) and a value
   ``v_i`` (1x1 conv to one channel). Source i attends to all the others: ``s_i = softmax(q_i (sum_{j != i}
   k_j) / sqrt(d)) v_i``, one logit per position; the K logit maps are upsampled to the image (bilinear in every
   CNN config, by the factor 4 on CIFAR and 16 on ImageNet) and a softmax across the K sources makes the masks,
   which sum to 1 at every pixel. The mixed image is ``sum_i mask_i * x_i``. There is no mask loss, and on CIFAR
   (``lam_concat=False``) the generator is never told lam: the label weights are the lambdas, whatever share of
   the picture each source gets.
4. The classifier's masks come from a second call of the generator (with the classifier branch's lambdas and
   sources), without gradient. They are replaced by the constant lambdas, i.e. plain K-way mixup, when
   ``lam_0 <= lam_margin`` or ``lam_0 > 1 - lam_margin`` (K > 2; upstream's test, about 3% of steps with the
   CIFAR settings) or ``min(lam_bb, 1 - lam_bb) <= lam_margin`` (K = 2, as AutoMix).
5. Classifier (online network) losses: the clean CE (its own head) and the CE of the classifier's masked sample
   (its mix head) against the lambda-weighted labels ``sum_i lam_i y_i``; for K > 2 the clean term becomes
   ``(1 - mixup_radio) * clean CE + mixup_radio * CE of the linear K-way mix sum_i lam_i x_i`` (mix head, the
   classifier branch's sources). No gradient reaches the generator from here.
6. Generator loss, through the EMA encoder and its mix head: ``CE_k``, the CE of its logits on the generator's
   sample against the same lambda-weighted labels (the gradient flows through the frozen encoder to the image
   and from there to the generator only), and ``cos``, the batch mean of ``sum_i lam_i cos(logits(x_mix),
   logits(x_i))``, cosines between raw logit vectors (K more passes of the EMA encoder, one per source, without
   gradient). On every ``adv_interval``-th step (the first, the third, ...: upstream's hard-coded 2) the step is
   adversarial: ``L_G = -beta_radio * CE_k + (1 - beta_radio) * cos``; on the others it is cooperative, as
   AutoMix: ``L_G = CE_k``. beta_radio is 0.3 on CIFAR, 0.1 on ImageNet.
7. One backward of ``w_mix * mix + w_one * one + w_gen * L_G``; after the optimiser step ``after_step()`` moves the
   EMA encoder (parameters only) with AutoMix's constant-then-cosine momentum schedule.

Upstream, not OpenMixup's port (``Westlake-AI/openmixup`` ``openmixup/models/classifiers/adautomix.py``, from
``dd292a2``, three days after upstream's 0990787): the port's K > 2 fallback test reads ``lam_margin >= lam_0 or
lam_margin < 1 - lam_0``, true whenever lam_0 < 0.97, so its 3-image CIFAR config trains the classifier on plain
linear 3-way mixup in 99.98% of its steps; upstream's ``>`` makes it about 3% (tests/test_adautomix.py counts it).
The port also builds a matplotlib figure on every K > 2 step; here nothing is drawn inside the step (the pictures
are ``mix_preview`` / ``automix show`` / the trainer's per-epoch mixes).

The cosine term's sign. The generator minimises ``L_G``, so on adversarial steps it *lowers* the lambda-weighted
cosine similarity between the mixed sample's logits and its sources' logits, while raising the EMA model's CE.
Upstream's README and the paper's abstract say the cosine term is there "to prevent the collapse of the inherent
meanings of images", which reads as *keeping* the mix similar to its sources (a ``-cos`` term, or ``+cos`` under
a maximisation). The paper's own equation for the generator objective could not be read here (only its abstract
and its OpenReview reviews, which call it "a weighted cosine similarity term between the mixed sample and
individual samples" used to prevent the collapse). Upstream's own CIFAR-100 R18 training log
(``experiments/CIFAR100/Mixups_r18_200epoch_json/AdAutoMix.json``) logs ``cos_simi_weight`` falling from 0.82 to
0.38 over training, which fits the code's sign, though logits of a network that learns to tell classes apart
drift apart on their own too. Both the upstream code and OpenMixup's port have the sign as implemented here (the
default, ``cosine_sign=1``); ``cosine_sign=-1`` flips it (the reading "keep the mix similar to its sources"),
which no published number was run with.

Deliberate differences from upstream, none of which changes a published config's step:

* the adversarial/cooperative alternation follows the method's step counter (saved in its state dict, so a
  resume continues it); upstream keeps an attribute that a restart resets to "adversarial";
* the EMA momenta follow ``total_steps`` when not given (``model_ema_decay=None``, as AutoMix: the reference's
  0.999 -> 0.999999 at 200,000 steps); the recipes give upstream's values;
* the masks are upsampled to the image size; ``scale_factor`` (optional) checks that it is upstream's factor;
* a fixed ``lam`` (upstream has none; it only draws from Beta) is the first image's weight, the other K - 1 sharing
  the rest equally (``fixed_lams``), since K equal draws normalised would give 1 / K whatever the number;
* a batch smaller than K is refused (upstream would mix images with themselves);
* ``sum_{j != i} q_i k_j`` is computed as ``q_i (sum_j k_j - k_i)`` (the same sum, K products instead of K (K - 1));
* not implemented (unused by every CNN config): ``switch_off`` (ViT configs; upstream also multiplied a skipped
  generator loss, a crash), ``is_random`` (a random K per step), ``mix_shuffle_no_repeat``, the ``debug`` and
  ``save`` pictures, and the NaN fallback of the generator (upstream fills NaN logits with asymmetric constants;
  here a NaN loss is the trainer's ``on_nan`` business).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from .._checks import (
    check_choice,
    check_positive,
    check_positive_int,
    check_range,
    check_type,
)
from ..losses import TargetLoss, target_loss
from ..mixers import MixParams
from ..mixers._lam import LamSpec, lam_sampler
from ..mixers._sampling import pair_index
from ..mixers.base import blend, mix_seg, mix_targets
from .base import weight_dtype
from .momentum import MomentumEncoderMethod
from .registry import register_method

# Old option names AutoMix's configs use for the EMA encoder's decay -> current names (as AutoMix's aliases).
OPTION_ALIASES = {"momentum": "model_ema_decay", "end_momentum": "model_ema_end_decay",
                  "momentum_warmup": "model_ema_warmup"}


class AdaptiveMask(nn.Module):
    """AdAutoMix's mask generator: K-way masks from the features of K sources (see the module docstring).

    Args:
        in_channels: channels C of the feature map.
        reduction: query/key width ``d = C // reduction`` (2 in every config).
        use_scale: divide the attention logits by ``sqrt(d)``.
        lam_concat: append a constant lam_i channel to each source's features (ImageNet configs).
        att_norm: BatchNorm after the query and key convs (ImageNet configs, upstream's ``att_norm_cfg``).
        upsample: ``"bilinear"`` (every CNN config) or ``"nearest"`` (upstream's default, its ViT configs).
        init_std: the convolutions start from Normal(0, init_std) with zero bias (upstream: 0.01, so the first
            masks are 1 / K everywhere); ``None``: Normal(0, 1 / sqrt(fan_in)).

    Raises:
        ValueError: a value out of range. TypeError: a flag that is not a bool.
    """

    def __init__(self, in_channels: int, *, reduction: int = 2, use_scale: bool = True, lam_concat: bool = False,
                 att_norm: bool = False, upsample: str = "bilinear", init_std: float | None = 0.01) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("reduction", reduction)
        for name, flag in (("use_scale", use_scale), ("lam_concat", lam_concat), ("att_norm", att_norm)):
            check_type(name, flag, bool, "a bool")
        self.use_scale, self.lam_concat, self.att_norm = use_scale, lam_concat, att_norm
        self.upsample = check_choice("upsample", upsample, ("bilinear", "nearest"))
        self.init_std = None if init_std is None else check_range("init_std", init_std, 0.0, float("inf"))
        c = in_channels + (1 if lam_concat else 0)
        self.inter_channels = max(in_channels // reduction, 1)

        def qk() -> nn.Sequential:  # upstream's ConvModule: conv (bias only without a norm), [BN], ReLU
            layers: list[nn.Module] = [nn.Conv2d(c, self.inter_channels, 1, bias=not att_norm)]
            if att_norm:
                layers.append(nn.BatchNorm2d(self.inter_channels))
            layers.append(nn.ReLU())
            return nn.Sequential(*layers)

        self.query, self.key = qk(), qk()
        self.value = nn.Conv2d(c, 1, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, m.weight[0].numel() ** -0.5 if self.init_std is None else self.init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, z: Tensor, sources: Tensor, lams: Sequence[float], size: tuple[int, int]) -> Tensor:
        """Masks [N, K, H, W] (float32, summing to 1 over K at every pixel).

        Args:
            z: features [N, C, h, w] of the batch (any float dtype; the convolutions run in the block's dtype,
                the attention, upsampling and softmax in float32, also under autocast).
            sources: long [K, N]: source i of sample n is ``z[sources[i, n]]``.
            lams: the K label weights (read only with ``lam_concat``).
            size: the image size (H, W) the masks are upsampled to.
        """
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self._forward(z.to(self.value.weight.dtype), sources.to(z.device), [float(v) for v in lams],
                                 tuple(size))

    def _forward(self, z: Tensor, sources: Tensor, lams: list[float], size: tuple[int, int]) -> Tensor:
        n, _, h, w = z.shape
        feats = [z[src] for src in sources]
        if self.lam_concat:
            feats = [torch.cat([f, f.new_full((n, 1, h, w), lam)], dim=1) for f, lam in zip(feats, lams)]
        d = self.inter_channels
        # Each source through the convs on its own, as upstream (with att_norm each call has its own BN batch).
        qs = [self.query(f).float().reshape(n, d, h * w).transpose(1, 2) for f in feats]  # [N, hw, d]
        ks = [self.key(f).float().reshape(n, d, h * w) for f in feats]  # [N, d, hw]
        vs = [self.value(f).float().reshape(n, h * w, 1) for f in feats]  # [N, hw, 1]
        k_sum = torch.stack(ks).sum(0)
        logits = []
        for q, k, v in zip(qs, ks, vs):
            attn = torch.bmm(q, k_sum - k)  # source i's positions over the other sources' positions, summed
            if self.use_scale:
                attn = attn / d**0.5
            logits.append(torch.bmm(attn.softmax(dim=-1), v).reshape(n, 1, h, w))
        s = torch.cat(logits, dim=1)  # [N, K, h, w]
        if (h, w) != size:
            kw = {"align_corners": False} if self.upsample == "bilinear" else {}
            s = F.interpolate(s, size=size, mode=self.upsample, **kw)
        return s.softmax(dim=1)


# ---------------------------------------------------------------------------------------------- K-way draws
def fixed_lams(lam: float, k: int) -> Tensor:
    """The K label weights of a fixed ``lam`` (float32 [K], summing to 1): ``lam`` for the first image, ``1 - lam``
    shared equally by the other K - 1.

    Upstream only draws K lambdas from Beta(alpha, alpha) and normalises them; K equal values (a fixed number)
    would normalise to 1 / K whatever the number, so a fixed lam is given automix's meaning instead, the one it has
    for two images (lam and 1 - lam) and for every other method: the weight of the first image, whose lam_0 is also
    what the classifier's fallback test reads.

    >>> fixed_lams(0.4, 3)
    tensor([0.4000, 0.3000, 0.3000])
    """
    return torch.tensor([lam] + [(1.0 - lam) / (k - 1)] * (k - 1), dtype=torch.float32)


def kway_params(sources: Tensor, lams: Tensor, masks: Tensor | None, size: tuple[int, ...]) -> MixParams:
    """A K-way draw as ``MixParams``: ``extra["sources"]`` long [K, B], ``extra["lams"]`` float32 [K] (the label
    weights) and ``extra["masks"]`` float32 [B, K, H, W] (``None``: the linear mix ``sum_i lam_i x_i``).

    ``index`` is the first source and ``lam`` its label weight (lam_0 for every sample); such a draw is replayed
    by ``AdAutoMix.apply`` (``kway_blend``) and labelled by ``kway_targets``, not by the two-way ``blend``.
    """
    batch = sources.shape[1]
    lams = lams.float()
    return MixParams(index=sources[0], lam=lams[0].expand(batch).to(sources.device), mode="elem", size=tuple(size),
                     extra={"sources": sources, "lams": lams, "masks": masks})


def two_way_params(index: Tensor, lam: float, mask: Tensor) -> MixParams:
    """A two-source draw (the batch and its permutation ``index``) as an ordinary ``MixParams``: ``mask`` [B, 1, H,
    W] is the partner's share, ``lam`` the label weight of the sample itself (as AutoMix's draws)."""
    batch = index.shape[0]
    return MixParams(index=index, lam=torch.full((batch,), lam, dtype=torch.float32, device=mask.device),
                     mode="elem", size=tuple(mask.shape[2:]), mask=mask)


def kway_blend(t: Tensor, params: MixParams) -> Tensor:
    """``sum_i mask_i * t[source_i]`` (or ``sum_i lam_i * t[source_i]``) for a K-way draw; ``blend`` for a two-way one.

    Gradients flow to ``t`` and to masks that carry a graph (the generator trains through them).
    """
    if "sources" not in params.extra:
        return blend(t, params)
    sources, lams, masks = params.extra["sources"].to(t.device), params.extra["lams"], params.extra["masks"]
    if masks is not None and (t.ndim != masks.ndim or tuple(t.shape[2:]) != tuple(masks.shape[2:])):
        raise ValueError(f"t must be [B, C, *spatial] with the draw's spatial size {tuple(masks.shape[2:])}, got "
                         f"shape {tuple(t.shape)}")
    out = None
    for i, src in enumerate(sources):
        weight = float(lams[i]) if masks is None else masks[:, i : i + 1].to(device=t.device, dtype=t.dtype)
        term = t[src] * weight
        out = term if out is None else out + term
    return out


def kway_targets(target: Tensor, params: MixParams) -> Tensor:
    """The lambda-weighted targets of any draw: ``sum_i lam_i target[source_i]`` for a K-way one (``target``: float
    [B, ...], e.g. soft targets), ``mix_targets`` for a two-way one."""
    if "sources" not in params.extra:
        return mix_targets(target, params)
    sources, lams = params.extra["sources"].to(target.device), params.extra["lams"].to(target.device, target.dtype)
    return sum(lams[i] * target[src] for i, src in enumerate(sources))


@register_method("adautomix", kind="learned", aliases=OPTION_ALIASES)
class AdAutoMix(MomentumEncoderMethod):
    """AdAutoMix: a generator mixes K images against the EMA classifier, adversarially every other step.

    Args:
        model: the classifier to train (any backbone: features are read by module path).
        feature_layer: module path feeding the generator (default: the model's registered default, e.g.
            ``"layer3"`` for the CIFAR ResNets: stage-3 features, 8x8 at 32 px).
        num_classes: number of classes, needed when ``y`` holds class indices.
        mix_samples: K, the images in each mix (3 in upstream's CIFAR and Tiny-ImageNet configs, 2 on ImageNet).
        alpha: Beta(alpha, alpha) of the lambdas (1.0 in every config). Not used with ``lam``.
        lam: given lambdas instead of Beta(alpha, alpha), in every form the mixers take
            (``automix.mixers._lam``; giving ``alpha`` too is a ``ValueError``). A fixed number (or
            ``{"fold": number}``) is the first image's weight: K = 2, ``(lam, 1 - lam)`` for both branches; K > 2,
            ``lam`` for the first image and ``1 - lam`` shared equally by the others (``fixed_lams``; K equal
            values normalised would be 1 / K whatever the number). Any other form (a range, a distribution, a
            callable) draws K values per step from the method's generator, normalised to sum 1 when K > 2 as
            upstream's Beta draws (a draw that sums to 0 gives 1 / K each).
        lam_margin: the classifier's masks fall back to the constant lambdas (K-way mixup) when
            ``lam_0 <= lam_margin`` or ``lam_0 > 1 - lam_margin`` (K > 2), or ``min(lam_bb, 1 - lam_bb) <=
            lam_margin`` (K = 2). 0.03 in every config.
        mixup_radio: K > 2: the share of the linear K-way mixup CE in the online network's clean term (0.5).
        beta_radio: beta, the weight of ``-CE_k`` in the adversarial generator loss, ``1 - beta`` that of the cosine
            term: 0.3 CIFAR, 0.4 Tiny-ImageNet, 0.1 ImageNet.
        adv_interval: every ``adv_interval``-th step (step 0, then every ``adv_interval`` steps) is adversarial
            (upstream: 2); 1: every step; 0: none (the generator then always cooperates, as AutoMix's Mix Block).
        cosine_sign: +1 (upstream's code: the adversarial step lowers the cosine similarity) or -1 (raises it);
            see "The cosine term's sign" in the module docstring.
        model_ema_decay, model_ema_end_decay, model_ema_warmup: the EMA encoder's momentum schedule, as
            ``AutoMix``'s (``None``: scaled to ``total_steps``; upstream 0.999 -> 0.999999 on CIFAR, 0.99999 on
            ImageNet). ``momentum``, ``end_momentum``, ``momentum_warmup`` are accepted by ``create_method`` too.
        lam_concat: give each source its lam as an extra feature channel (ImageNet configs).
        att_norm: BN after the query and key convs (ImageNet configs).
        upsample: ``"bilinear"`` (every CNN config) or ``"nearest"``; ``None``: bilinear for a CNN's map, nearest
            for transformer tokens (upstream's ViT configs).
        scale_factor: upstream's fixed upsampling factor (4 on CIFAR / Tiny-ImageNet ResNets, 16 on ImageNet);
            the masks are upsampled to the image size, and a given factor is checked against it at every step
            (``ValueError`` naming it on a mismatch). ``None``: not checked.
        reduction, use_scale, init_std: the generator's query/key reduction (2), its 1/sqrt(d) (True) and the
            std of its initial weights (0.01; ``None``: 1 / sqrt(fan_in)).
        separate_heads: a separate mix head beside the model's classifier (as upstream).
        head_layer: module path of the model's classifier (found automatically).
        eval_net, eval_head: what ``eval_model()`` returns by default: ``"ema"`` or ``"online"``, with the
            ``"one"`` (clean) or ``"mix"`` head. Upstream reports the best of the four; in its CIFAR-100 R18 log the
            EMA clean head is the best (81.54 against 80.60 for the EMA mix head and 74.40 for the online one).
        label_smoothing: smoothing of class-index and float [B, C] targets.
        loss: ``"ce"`` (upstream), ``"bce"`` or ``"decouplemix"`` (or a ``TargetLoss``) for every CE term.
        loss_weights: ``one`` (the clean term, with the linear mix when K > 2), ``mix`` (the classifier's masked
            sample) and ``gen`` (the generator loss); all 1 as upstream.
        feature_channels: channels at ``feature_layer`` (inferred by a dry run if None).
        input_size: image side for that dry run (None: the model's ``img_size``, as automix's and timm's ViTs
            have, else 32).
        total_steps, seed: see ``Method``.

    Transformer features, as ``AutoMix``'s: a ``feature_layer`` that gives tokens ``[B, N, C]`` (a ViT block,
    ``"blocks.5"`` of automix's ``vit_small`` by default) feeds the generator the patch tokens on their ``h x w``
    grid, the class token dropped (``automix.models.tokens_to_map``); the masks are upsampled with nearest
    (upstream's ViT configs) unless ``upsample`` says otherwise. Tokens that do not tile the image raise
    ``ValueError`` naming ``feature_layer``.

    Raises:
        ValueError: an option out of range or not one of its choices (the error names it); ``alpha`` beside
            ``lam``; at the first ``training_step`` (or ``check_batch_size``), a batch smaller than ``mix_samples``
            (naming both). TypeError: a flag that is not a bool.

    Example:
        >>> import torch, automix
        >>> model = automix.create_model("preact_resnet18", num_classes=10, width=8)
        >>> method = automix.AdAutoMix(model, feature_layer="layer3", num_classes=10, total_steps=10)
        >>> opt = torch.optim.SGD(method.param_groups(), lr=0.1, momentum=0.9)
        >>> loss, logs = method.training_step(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
        >>> loss.backward(); opt.step(); opt.zero_grad(); method.after_step()
        >>> int(method.step), int(logs["adversarial"]), tuple(method.last_mix["masks_mb"].shape)
        (1, 1, (4, 3, 32, 32))
    """

    def __init__(self, model: nn.Module, feature_layer: str | None = None, num_classes: int | None = None, *,
                 mix_samples: int = 3, alpha: float = 1.0, lam: LamSpec | None = None, lam_margin: float = 0.03,
                 mixup_radio: float = 0.5, beta_radio: float = 0.3, adv_interval: int = 2, cosine_sign: int = 1,
                 model_ema_decay: float | None = None, model_ema_end_decay: float | None = None,
                 model_ema_warmup: float = 0.1, lam_concat: bool = False, att_norm: bool = False,
                 upsample: str | None = None, scale_factor: int | None = None, reduction: int = 2,
                 use_scale: bool = True, init_std: float | None = 0.01, separate_heads: bool = True,
                 head_layer: str | None = None, eval_net: str = "ema", eval_head: str = "one",
                 label_smoothing: float = 0.0, loss: str | TargetLoss = "ce",
                 loss_weights: dict[str, float] | None = None, feature_channels: int | None = None,
                 input_size: int | None = None, total_steps: int | None = None, seed: int | None = None) -> None:
        super().__init__(model, total_steps=total_steps, seed=seed)
        self.mix_samples = check_positive_int("mix_samples", mix_samples)
        if self.mix_samples < 2:
            raise ValueError(f"mix_samples must be >= 2 (the images in each mix), got {mix_samples!r}")
        self.alpha = check_positive("alpha", alpha)
        self.lam = lam
        self.lam_sampler = lam_sampler(lam)
        self.lam_margin = check_range("lam_margin", lam_margin, 0.0, 0.5, high_open=True)
        self.mixup_radio = check_range("mixup_radio", mixup_radio, 0.0, 1.0)
        self.beta_radio = check_range("beta_radio", beta_radio, 0.0, 1.0)
        check_type("adv_interval", adv_interval, int, "an int")
        if isinstance(adv_interval, bool) or adv_interval < 0:
            raise ValueError(f"adv_interval must be an int >= 0 (0: never adversarial), got {adv_interval!r}")
        self.adv_interval = adv_interval
        if isinstance(cosine_sign, bool) or cosine_sign not in (1, -1):
            raise ValueError(f"cosine_sign must be 1 (upstream) or -1, got {cosine_sign!r}")
        self.cosine_sign = int(cosine_sign)
        self._init_ema_schedule(model_ema_decay, model_ema_end_decay, model_ema_warmup)
        if scale_factor is not None:
            check_positive_int("scale_factor", scale_factor)
        self.scale_factor = scale_factor
        self._init_common(label_smoothing=label_smoothing, loss=loss, num_classes=num_classes, eval_net=eval_net,
                          eval_head=eval_head, separate_heads=separate_heads, loss_weights=loss_weights,
                          terms=("one", "mix", "gen"))
        self._build_encoder(model, feature_layer, head_layer, separate_heads)
        if feature_channels is None:
            channels, tokens = self._infer_channels(self._dry_run_size(input_size))
        else:  # no dry run: the layer is taken to give a CNN map unless it turns out to give tokens
            channels, tokens = check_positive_int("feature_channels", feature_channels), False
        self.token_features = tokens
        if upsample is None:  # upstream's ViT configs upsample the token grid's masks with nearest
            upsample = "nearest" if tokens else "bilinear"
        generator = AdaptiveMask(channels, reduction=reduction, use_scale=use_scale, lam_concat=lam_concat,
                                 att_norm=att_norm, upsample=upsample, init_std=init_std)
        # In the model's dtype, as `method.to(dtype)` would leave it; the attention runs in float32.
        self.mix_block = generator.to(dtype=weight_dtype(model) or torch.float32)
        self.last_mix: dict[str, Any] = {}

    # ------------------------------------------------------------------ draws
    def _lam_vector(self, gen: torch.Generator) -> Tensor:
        """K lambdas (float32, CPU): K = 2 gives two independent draws; K > 2 one vector normalised to sum 1, or
        ``fixed_lams`` for a fixed ``lam`` (which draws nothing from ``gen``)."""
        k = self.mix_samples
        constant = None if self.lam_sampler is None else self.lam_sampler.constant
        if k > 2 and constant is not None:
            return fixed_lams(constant, k)
        lams = self._draw_lams(k, gen).float().cpu()
        if k == 2:
            return lams
        total = lams.sum()
        return lams / total if float(total) > 0 else torch.full_like(lams, 1.0 / k)

    def draw(self, batch: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """One step's lambdas, sources and fallback decision, from ``generator`` (default: the method's own).

        Returns ``{"lam_mb", "lam_bb"}`` (float32 [K] on the CPU: the label weights of the generator's and the
        classifier's sample), ``{"src_mb", "src_bb"}`` (long [K, batch] on the generator's device) and
        ``"fallback"`` (whether the classifier's sample is the constant-lambda K-way mixup). ``training_step``
        draws exactly this, first thing, so counting ``fallback`` over many draws gives its rate.

        Raises:
            ValueError: ``batch`` is smaller than ``mix_samples`` (naming both), at the first training step.
        """
        gen = self.generator if generator is None else generator
        k = self.mix_samples
        self.check_batch_size(batch)
        lams = self._lam_vector(gen)
        if k == 2:
            lam_mb, lam_bb = float(lams[0]), float(lams[1])
            own = torch.arange(batch, device=gen.device)
            src_mb = torch.stack([own, pair_index(batch, "perm", False, gen)])
            src_bb = torch.stack([own, pair_index(batch, "perm", False, gen)])
            fallback = min(lam_bb, 1.0 - lam_bb) <= self.lam_margin
            vec_mb, vec_bb = torch.tensor([lam_mb, 1.0 - lam_mb]), torch.tensor([lam_bb, 1.0 - lam_bb])
        else:
            src_mb = torch.stack([pair_index(batch, "perm", False, gen) for _ in range(k)])
            src_bb = torch.stack([pair_index(batch, "perm", False, gen) for _ in range(k)])
            lam0 = float(lams[0])
            fallback = lam0 <= self.lam_margin or lam0 > 1.0 - self.lam_margin  # upstream's test, not the port's
            vec_mb = vec_bb = lams
        return {"lam_mb": vec_mb.float(), "lam_bb": vec_bb.float(), "src_mb": src_mb, "src_bb": src_bb,
                "fallback": bool(fallback)}

    def check_batch_size(self, batch: int) -> None:
        """``ValueError`` naming ``mix_samples`` and the batch size when ``batch < mix_samples``: K permutations of
        fewer than K images would mix an image with itself in every sample."""
        k = self.mix_samples
        if batch < k:
            raise ValueError(f"mix_samples={k} needs a batch of at least {k} images (each mix takes {k} images of "
                             f"the batch), got a batch of {batch}; lower mix_samples or raise the batch size")

    def is_adversarial(self, step: int | None = None) -> bool:
        """Whether step ``step`` (default: the next one, ``self.step``) trains the generator adversarially."""
        step = int(self.step) if step is None else int(step)
        return self.adv_interval > 0 and step % self.adv_interval == 0

    def _params(self, src: Tensor, lams: Tensor, masks: Tensor | None, size: tuple[int, int]) -> MixParams:
        """The draw of one branch: two-way ``MixParams`` for K = 2, K-way (``kway_params``) for K > 2."""
        if self.mix_samples == 2:
            partner = torch.full((src.shape[1], 1) + size, float(lams[1]), device=src.device) if masks is None \
                else masks[:, 1:2]  # the fallback: plain mixup, as AutoMix's
            return two_way_params(src[1], float(lams[0]), partner)
        return kway_params(src, lams, masks, size)

    # ------------------------------------------------------------------ training
    def apply(self, t: Tensor, params: MixParams) -> Tensor:
        """Replay one of this method's draws (``last_params``) on any tensor [B, ...] (K-way draws included)."""
        return kway_blend(t, params)

    def apply_seg(self, seg: Tensor, params: MixParams, x: Tensor) -> Tensor:
        """Mix a segmentation map like ``x``: a float one-hot / soft map (the masks are soft)."""
        if "sources" not in params.extra:
            return super().apply_seg(seg, params, x)
        return mix_seg(seg, params, x, self.apply, hard=False, who=type(self).__name__)

    def _check_size(self, z: Tensor, size: tuple[int, int]) -> None:
        if self.scale_factor is None:
            return
        up = (z.shape[-2] * self.scale_factor, z.shape[-1] * self.scale_factor)
        if up != tuple(size):
            raise ValueError(f"scale_factor {self.scale_factor} upsamples the {tuple(z.shape[-2:])} features at "
                             f"feature_layer {self.feature_layer!r} to {up}, but the images are {tuple(size)}; give "
                             f"the factor that matches (or scale_factor=None)")

    def compute_losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """The step's loss terms, with their graphs: ``one`` (clean CE), ``linear`` (K > 2: CE of the linear
        K-way mix), ``mix`` (the classifier's CE on its masked sample), ``gen_ce`` and ``cos`` (the generator's
        terms through the EMA encoder). ``training_step`` combines them.

        ``x`` is a float batch [B, C, H, W], ``y`` class ids [B] or float targets [B, C]; anything else raises
        the mixers' ``TypeError`` / ``ValueError`` (``Method.check_batch``).
        """
        self.check_batch(x, y, type(self).__name__, num_classes=self.num_classes,
                         label_smoothing=self.label_smoothing, spatial_dims=(2,))
        x = self.cast_input(x)
        self._own_modes()
        n, size = x.shape[0], tuple(x.shape[-2:])
        target = self._targets(y)
        d = self.draw(n)
        src_mb, src_bb = d["src_mb"].to(x.device), d["src_bb"].to(x.device)

        # The record_function labels name the step's pieces for torch.profiler (benchmarks/_step_pieces.py).
        with torch.no_grad(), record_function("adautomix/encoder_features"):
            self._tap.clear()
            self.model_k(x)
            z = self._feature_map(self._tap.pop(), size)
        self._check_size(z, size)
        with record_function("adautomix/generator"):
            masks_mb = self.mix_block(z, src_mb, d["lam_mb"].tolist(), size)
            with torch.no_grad():
                masks_bb = None if d["fallback"] else self.mix_block(z, src_bb, d["lam_bb"].tolist(), size)
        params_mb = self._params(src_mb, d["lam_mb"], masks_mb, size)
        params_bb = self._params(src_bb, d["lam_bb"], masks_bb, size)
        with record_function("adautomix/mixing"):
            x_mb, x_bb = kway_blend(x, params_mb), kway_blend(x, params_bb)
        with record_function("adautomix/encoder_mixed"):
            logits_k = self._logits(self.model_k, self._switch_k, x_mb, mix_head=True)
            loss_gen_ce = target_loss(self.loss, logits_k, kway_targets(target, params_mb))
        with torch.no_grad(), record_function("adautomix/encoder_sources"):
            # One pass of the EMA encoder per source, as upstream (each in train mode: its BN statistics too).
            source_logits = [self._logits(self.model_k, self._switch_k, x[src], mix_head=True) for src in src_mb]
            self._tap.clear()  # the hook stored features of the last pass; drop them now
        with record_function("adautomix/cosine"):
            cos = sum(float(d["lam_mb"][i]) * F.cosine_similarity(logits_k.float(), s.float(), dim=-1)
                      for i, s in enumerate(source_logits)).mean()
        with record_function("adautomix/backbone"):
            loss_one = target_loss(self.loss, self.model(x), target)
            terms = {"one": loss_one}
            if self.mix_samples > 2:
                params_lin = kway_params(src_bb, d["lam_bb"], None, size)
                logits_lin = self._logits(self.model, self._switch_q, kway_blend(x, params_lin), mix_head=True)
                terms["linear"] = target_loss(self.loss, logits_lin, kway_targets(target, params_lin))
            logits_mix = self._logits(self.model, self._switch_q, x_bb, mix_head=True)
            terms["mix"] = target_loss(self.loss, logits_mix, kway_targets(target, params_bb))
        terms.update(gen_ce=loss_gen_ce, cos=cos)
        detached_mb = _detached(params_mb)
        self.last_params = {"mb": detached_mb, "bb": params_bb}
        if self.mix_samples > 2:
            self.last_params["linear"] = params_lin
        # What was mixed this step, for pictures and checks (detached, small).
        self.last_mix = {"x": x.detach(), "x_mb": x_mb.detach(), "masks_mb": masks_mb.detach(), "src_mb": src_mb,
                         "lam_mb": d["lam_mb"], "x_bb": x_bb.detach(), "masks_bb": masks_bb, "src_bb": src_bb,
                         "lam_bb": d["lam_bb"], "fallback": d["fallback"]}
        return terms

    def generator_loss(self, terms: dict[str, Tensor], adversarial: bool) -> Tensor:
        """``-beta CE_k + (1 - beta) cosine_sign cos`` on an adversarial step, ``CE_k`` on a cooperative one."""
        if adversarial:
            return -self.beta_radio * terms["gen_ce"] + (1.0 - self.beta_radio) * self.cosine_sign * terms["cos"]
        return terms["gen_ce"]

    def training_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not self.mixing:
            # As AutoMix: the online network on clean images (timm's --mixup-off-epoch); after_step keeps the EMA
            # encoder following it; the generator is not trained.
            return self.clean_step(x, y, who=type(self).__name__, num_classes=self.num_classes,
                                   label_smoothing=self.label_smoothing, loss=self.loss)
        adversarial = self.is_adversarial()
        terms = self.compute_losses(x, y)
        w = self.loss_weights
        one = terms["one"] if self.mix_samples == 2 else \
            (1.0 - self.mixup_radio) * terms["one"] + self.mixup_radio * terms["linear"]
        loss_gen = self.generator_loss(terms, adversarial)
        loss = w["one"] * one + w["mix"] * terms["mix"] + w["gen"] * loss_gen
        masks = self.last_mix["masks_mb"]
        logs = {"loss": loss.detach(), **{f"loss_{k}": v.detach() for k, v in terms.items() if k != "cos"},
                "loss_gen": loss_gen.detach(), "cos": terms["cos"].detach(),
                "adversarial": torch.tensor(float(adversarial)),
                "fallback": torch.tensor(float(self.last_mix["fallback"])),
                "lam_mb": self.last_mix["lam_mb"][0].clone(), "lam_bb": self.last_mix["lam_bb"][0].clone(),
                **mask_stats(masks, self.last_mix["lam_mb"])}
        return loss, logs

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def mix_preview(self, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None, *,
                    lam: float | Sequence[float] | None = None) -> dict[str, Tensor]:
        """The generator's mix of ``x`` [N, C, H, W] without training (``Method.mix_preview``).

        The K sources are the batch itself and K - 1 others, taken along one random cycle through the batch
        (every sample's sources differ when N >= K). ``lam`` fixes the label weights: a number (lam for the first
        image and ``1 - lam`` shared equally by the others, ``fixed_lams``, as a fixed ``lam=`` in training) or K
        numbers (normalised when K > 2); else they are drawn as in training, with ``generator`` (default seed 0).
        ``y`` is not read.

        Returns the two-way keys every preview has (``x`` = source 0, ``partner`` = source 1, ``mask`` = the share
        of everything but source 0 [N, 1, H, W], ``mixed``, ``lam`` = lam_0 [N]) and the K-way ones the pictures
        use: ``sources`` [N, K, C, H, W], ``masks`` [N, K, 1, H, W] (summing to 1 over K), ``lams`` [N, K].
        """
        gen = generator or torch.Generator().manual_seed(0)
        k, n = self.mix_samples, x.shape[0]
        if lam is None:
            lams = self._lam_vector(gen)
            lams = torch.stack([lams[0], 1.0 - lams[0]]) if k == 2 else lams
        else:
            values = fixed_lams(float(lam), k).tolist() if isinstance(lam, (int, float)) else lam
            if not isinstance(values, (Sequence, Tensor)) or len(values) != k:
                raise ValueError(f"lam must be a number or {k} numbers for mix_samples={k}, got {lam!r}")
            lams = torch.tensor([float(v) for v in values])
            if k > 2:
                lams = lams / lams.sum()
        order = torch.randperm(n, generator=gen)
        src = torch.empty(k, n, dtype=torch.long)
        for i in range(k):  # source i of the sample at position p of the cycle: the one i places further on
            src[i, order] = order.roll(-i)
        x = self.cast_input(x)
        src = src.to(x.device)
        was_training = self.model_k.training
        self.model_k.eval()
        try:
            self._tap.clear()
            self.model_k(x)
            z = self._feature_map(self._tap.pop(), tuple(x.shape[-2:]))
        finally:
            self.model_k.train(was_training)
        was_block = self.mix_block.training
        self.mix_block.eval()
        try:
            masks = self.mix_block(z, src, lams.tolist(), tuple(x.shape[-2:]))
        finally:
            self.mix_block.train(was_block)
        mixed = kway_blend(x, kway_params(src, lams, masks, tuple(x.shape[-2:])))
        return {"x": x, "partner": x[src[1]], "mask": 1.0 - masks[:, :1], "mixed": mixed,
                "lam": lams[0].expand(n).clone().to(x.device), "sources": torch.stack([x[s] for s in src], dim=1),
                "masks": masks.unsqueeze(2), "lams": lams.expand(n, k).clone().to(x.device)}


def _detached(params: MixParams) -> MixParams:
    """``params`` with its masks' graph dropped (to keep after the step without holding the graph)."""
    from dataclasses import replace

    if "sources" in params.extra:
        masks = params.extra["masks"]
        return replace(params, extra={**params.extra, "masks": None if masks is None else masks.detach()})
    return replace(params, mask=params.mask.detach())


def mask_stats(masks: Tensor, lams: Tensor) -> dict[str, Tensor]:
    """Logged statistics of K-way masks [N, K, H, W] made for label weights ``lams`` [K]:

    * ``mask_entropy``: the mean per-pixel entropy over the K sources, over log K: 1 is the uniform blend 1 / K
      everywhere (the generator's first masks), 0 one source alone at every pixel (hard cuts);
    * ``mask_std``: each mask's spatial std, averaged (0: constant masks, i.e. linear mixup);
    * ``mask_gap``: the mean of ``|mean(mask_i) - lam_i|``, how far the share of the picture each source gets is
      from its label weight (nothing in AdAutoMix's losses ties the two).
    """
    k = masks.shape[1]
    m = masks.float()
    entropy = -(m * m.clamp_min(1e-12).log()).sum(1).mean() / math.log(k)
    share = m.flatten(2).mean(2)  # [N, K]
    gap = (share - lams.to(share.device, share.dtype)).abs().mean()
    return {"mask_entropy": entropy, "mask_std": m.flatten(2).std(2).mean(), "mask_gap": gap}


__all__ = ["AdAutoMix", "AdaptiveMask", "fixed_lams", "kway_blend", "kway_params", "kway_targets", "mask_stats",
           "two_way_params"]
