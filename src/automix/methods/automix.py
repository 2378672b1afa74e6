"""AutoMix (arXiv:2103.13027, ECCV 2022) and SAMix (arXiv:2111.15454) as plain-PyTorch Methods, for any backbone.

The reference is OpenMixup (github.com/Westlake-AI/openmixup @ 37e1372),
``openmixup/models/classifiers/automix.py`` (class ``AutoMixup``; SAMix is the same class with another config).
One training step, exactly as it runs one (``forward_train``):

1. draw ``lam_mb, lam_bb ~ Beta(alpha, alpha)`` (or from a given ``lam=``) and two random permutations
   ``perm_mb, perm_bb``;
2. features ``z`` of the clean batch from the EMA encoder ``k`` (no grad, train-mode BN), read at
   ``feature_layer`` by a forward hook;
3. Mix Block masks: ``M_mb = MB(z, lam_mb, perm_mb)`` keeps its graph, ``M_bb = MB(z, lam_bb, perm_bb)``
   does not; if ``min(lam_bb, 1 - lam_bb) <= lam_margin`` the backbone sees plain mixup instead;
4. ``L_mb``: mixed CE of the EMA encoder's mix head on ``x_mb`` (grads reach only the Mix Block,
   through the frozen encoder and the image) plus the mask loss on ``M_mb``;
5. ``L_one + L_mix``: CE of the online network's clean head on ``x`` and mixed CE of its mix head on
   ``x_bb`` (the mask is detached, so the online network never trains the Mix Block);
6. one backward of the sum; after the optimiser step, ``after_step()`` moves the EMA encoder
   (parameters only) with the constant-then-cosine momentum schedule.

Defaults that differ from the reference, and why (``reference=True`` restores the reference's):
* ``mask_fit=True``: each sample's mask mean is fitted to ``1 - lam`` by one logit offset per sample
  (``mixblock.fit_mask_mean``), for both branches. The reference's mask is free in level and tied to
  lam only by a batch-level hinge, while the Mix Block is not told lam (CIFAR configs): at small scale
  every step pushes the level of the whole batch's masks one way, the sigmoid saturates, no gradient
  comes back, and the masks stay whole-image choices (every seed of our CPU benchmark, and the
  quickstart from its second epoch; docs/benchmarks.md, "Why the Mix Block collapsed"). With the fit,
  the L1 mask loss is identically 0 (SAMix's variance term still acts) and ``mask_adjust`` has nothing
  left to adjust.
* the Mix Block's convolutions start from Normal(0, 1 / sqrt(fan_in)) when ``mask_fit`` is on, not
  Normal(0, 0.01): with the level fitted, a block whose attention is uniform (what 0.01 gives) makes
  flat masks and gets no gradient to leave them (measured: CIFAR masks' spatial std 0.0002 after four
  epochs with 0.01, 0.14-0.32 within six with fan-in; later in the run they still flatten toward a
  blend, docs/benchmarks.md "What the fitted mask does on CIFAR").
* ``mask_min_sharpness=0.6`` (with ``mask_fit``): each mask's spatial std is held at least at 0.6 times a
  hard cut's, by one logit scale per sample (``mixblock.fit_sharp_mask``). With its level fitted,
  AutoMix's Mix Block loss prefers a blend at small scale: the masks flattened to a spatial std below
  0.01 on CIFAR and 0.04 on the quickstart (a floor on the logits' own std was evaded by a few extreme
  pixels, a larger logit scale by shrinking the value conv). The floor keeps a real cut, and the Mix
  Block still decides where the partner shows.
* ``model_ema_decay=None, model_ema_end_decay=None``: the EMA schedule follows ``total_steps``, keeping the
  reference's averaging horizons as fractions of the run (``ema.scaled_momentum``: 200,000 steps give
  its 0.999 -> 0.999999; 2,000 steps 0.9 -> 0.9999). The reference's fixed values make the EMA encoder
  lag far behind a short run (it is what ``eval_model()`` returns and what the run reports).

Deliberate differences from the reference code (its losses and secondary switches), documented, not copied:
* ``mask_adjust`` rescales the backbone mask toward ``lam_bb`` (the reference uses ``lam_mb``);
* no mask-loss decay schedule here (CIFAR/Tiny configs use a constant weight; the reference's
  ImageNet "cosine" compounds and vanishes within a few epochs). Set ``mask_loss`` as needed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from .._checks import check_choice, check_number, check_positive, check_positive_int, check_range, check_type
from ..losses import TargetLoss, target_loss
from ..mixers import MixParams
from ..mixers._lam import LamSpec, lam_sampler
from ..mixers._sampling import pair_index
from ..mixers.base import blend, mix_targets
from .base import weight_dtype
from .ema import REFERENCE_MOMENTUM
from .mixblock import PixelMixBlock, adjust_mask, mask_loss, whole_image_share
from .momentum import MomentumEncoderMethod
from .registry import register_method

# Old option names (configs and cached benchmark runs use them) -> current names.
OPTION_ALIASES = {"momentum": "model_ema_decay", "end_momentum": "model_ema_end_decay",
                  "momentum_warmup": "model_ema_warmup", "mask_loss": "mask_loss_weight"}


@register_method("automix", kind="learned", aliases=OPTION_ALIASES)
class AutoMix(MomentumEncoderMethod):
    """AutoMix: a Mix Block learns the mixing mask from a momentum encoder's features.

    Args:
        model: the classifier to train (any backbone: features are read by module path).
        feature_layer: module path feeding the Mix Block (default: the model's registered default,
            e.g. ``"layer3"`` for the CIFAR ResNets).
        num_classes: number of classes, needed when ``y`` holds class indices.
        alpha: Beta(alpha, alpha) for both lambdas (2.0 in every reference config). Not used with ``lam``.
        lam: a given lambda for both ``lam_mb`` and ``lam_bb`` instead of Beta(alpha, alpha), in every form the
            mixers take (``BaseMixer``, ``automix.mixers._lam``): a number in [0, 1], a ``(low, high)`` pair,
            a scalar ``torch.distributions.Distribution``, a callable ``(shape, generator) -> Tensor`` or a
            spec mapping; two values are drawn per step with the method's generator (so a resume repeats
            them). ``ValueError`` naming ``lam`` for values outside [0, 1]. ``None`` (default): Beta(alpha,
            alpha), drawn exactly as before.
        model_ema_decay, model_ema_end_decay, model_ema_warmup: the EMA encoder's decay (the reference's
            "momentum") schedule, named as the trainer's weight EMA (``--model-ema-decay``): constant
            ``model_ema_decay`` for the first ``model_ema_warmup`` share of steps, then a cosine to
            ``model_ema_end_decay``; ``None`` (default) scales the reference's 0.999 -> 0.999999 to
            ``total_steps`` (``ema.scaled_momentum``); a float is used as given. The old names ``momentum``,
            ``end_momentum`` and ``momentum_warmup`` are still accepted by ``create_method`` and in configs.
        mask_fit: fit each sample's mask mean to ``1 - lam`` (``None``: yes, unless ``reference``; see the
            module docstring). ``False`` is the reference's free mask.
        mask_min_sharpness: with ``mask_fit``, the least ratio in [0, 1) of each mask's spatial std to that
            of a hard cut with the same mean, ``sqrt(lam (1 - lam))`` (``mixblock.fit_sharp_mask``); ``None``
            is the class's ``default_mask_min_sharpness`` (AutoMix 0.6, SAMix 0) with ``mask_fit``, else 0.
            0 lets the masks flatten into a blend.
        reference: the reference's behaviour: ``mask_fit=False`` (with the reference's Normal(0, 0.01)
            Mix Block init) and, unless given, momenta 0.999 -> 0.999999 whatever the run's length (the
            reference's CIFAR configs).
        mask_loss_weight, mask_loss_margin: weight and margin of the mask hinge (0.1, 0.1); ``create_method``
            and configs still accept the old name ``mask_loss`` for the weight.
        mask_loss_mode: ``"L1"`` (AutoMix's) or ``"L1+Variance"`` (SAMix's, which also rewards sharp masks);
            ``None`` keeps the class's. With ``mask_fit`` the L1 term is 0 (each mask's mean is exact).
        lam_margin: the backbone falls back to plain mixup when ``min(lam, 1 - lam) <= lam_margin``.
        mask_adjust: probability of rescaling the backbone mask to mean ``1 - lam_bb`` (0).
        lam_concat: give lam to the Mix Block as an extra channel (ImageNet configs).
        separate_heads: a separate mix head beside the model's classifier (as the reference).
        head_layer: module path of the model's classifier (found automatically).
        eval_net, eval_head: what ``eval_model()`` returns by default: ``"ema"`` or ``"online"``,
            with the ``"one"`` (clean) or ``"mix"`` head.
        label_smoothing: smoothing of class-index targets and float [B, C] targets (as the mixers do).
        loss: ``"ce"`` (soft-target cross-entropy, the reference), ``"bce"`` (multi-label) or
            ``"decouplemix"`` (or a ``TargetLoss``), for all three classification terms; the same names as every
            other Method (``automix.losses.target_loss``).
        loss_weights: weights of ``one``, ``mix``, ``mb`` losses (all 1 in the reference).
        upsample: how the Mix Block's map reaches the image size, ``"nearest"`` or ``"bilinear"``; ``None``: the
            class's default for the feature layer, AutoMix nearest, SAMix bilinear for a CNN map and nearest for
            transformer tokens (the reference's DeiT / Swin configs: x16 nearest at 224 px with patch 16, x4 at
            32 px with patch 4; the factor is the image side over the token grid's).
        feature_channels: channels at ``feature_layer`` (inferred by a dry run if None; given, there is no dry
            run, and ``upsample=None`` takes the CNN default).
        input_size: image side for that dry run (None: the model's ``img_size``, as automix's and timm's ViTs
            have, else 32).

    Transformer features: a ``feature_layer`` that gives tokens ``[B, N, C]`` (a ViT block: ``"blocks.5"`` of
    automix's ``vit_small`` or of timm's ``vit_*`` / ``deit_*``, the default for both) feeds the Mix Block their
    patch tokens laid on the ``h x w`` grid, the class token dropped (``model.num_prefix_tokens`` prefix tokens;
    a model that does not say: 1, 0 or 2, whichever leaves a grid; ``automix.models.tokens_to_map``). Tokens
    that do not tile the image raise ``ValueError`` naming ``feature_layer``, at construction (the dry run) or in
    the step.
        total_steps, seed: see ``Method``.
        mix_block_kwargs: extra ``PixelMixBlock`` options (SAMix sets several).

    Example:
        >>> import torch, automix
        >>> model = automix.create_model("preact_resnet18", num_classes=10, width=8)
        >>> method = automix.AutoMix(model, feature_layer="layer3", num_classes=10, total_steps=10)
        >>> opt = torch.optim.SGD(method.param_groups(), lr=0.1, momentum=0.9)
        >>> loss, logs = method.training_step(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
        >>> loss.backward(); opt.step(); opt.zero_grad(); method.after_step()
        >>> int(method.step), sorted(logs)[:3]
        (1, ['lam_bb', 'lam_mb', 'loss'])
    """

    mask_loss_mode = "L1"
    default_mask_min_sharpness = 0.6
    default_upsample = ("nearest", "nearest")  # for a CNN's map, for transformer tokens (the reference's configs)

    def __init__(self, model: nn.Module, feature_layer: str | None = None, num_classes: int | None = None, *,
                 alpha: float = 2.0, lam: LamSpec | None = None,
                 model_ema_decay: float | None = None, model_ema_end_decay: float | None = None,
                 model_ema_warmup: float = 0.1,
                 mask_loss_weight: float = 0.1, mask_loss_margin: float = 0.1, mask_loss_mode: str | None = None,
                 lam_margin: float = 0.08, mask_adjust: float = 0.0, lam_concat: bool = False,
                 upsample: str | None = None, mask_fit: bool | None = None, mask_min_sharpness: float | None = None,
                 separate_heads: bool = True, head_layer: str | None = None, eval_net: str = "ema",
                 eval_head: str = "one", label_smoothing: float = 0.0, loss: str | TargetLoss = "ce",
                 loss_weights: dict[str, float] | None = None, feature_channels: int | None = None,
                 input_size: int | None = None, total_steps: int | None = None, seed: int | None = None,
                 mix_block_kwargs: dict[str, Any] | None = None, reference: bool = False) -> None:
        super().__init__(model, total_steps=total_steps, seed=seed)
        if mask_loss_mode is not None:  # else the class's: "L1" (AutoMix), "L1+Variance" (SAMix)
            self.mask_loss_mode = check_choice("mask_loss_mode", mask_loss_mode, ("L1", "L1+Variance"))
        check_type("reference", reference, bool, "a bool")
        self.reference = reference
        if mask_fit is not None:
            check_type("mask_fit", mask_fit, bool, "a bool")
        if reference:
            if mask_fit or mask_min_sharpness:
                given = "mask_fit=True" if mask_fit else f"mask_min_sharpness={mask_min_sharpness!r}"
                raise ValueError(f"{given} conflicts with reference=True (the reference's free mask); drop one")
            mask_fit = False
            model_ema_decay = REFERENCE_MOMENTUM[0] if model_ema_decay is None else model_ema_decay
            model_ema_end_decay = REFERENCE_MOMENTUM[1] if model_ema_end_decay is None else model_ema_end_decay
        self.alpha = check_positive("alpha", alpha)
        self.lam = lam
        self.lam_sampler = lam_sampler(lam)
        self._init_ema_schedule(model_ema_decay, model_ema_end_decay, model_ema_warmup)
        self.mask_loss_weight = check_range("mask_loss_weight", mask_loss_weight, 0.0, float("inf"))
        self.mask_loss_margin = check_range("mask_loss_margin", mask_loss_margin, 0.0, 1.0)
        self.lam_margin = check_range("lam_margin", lam_margin, -1.0, 0.5)
        self.mask_adjust = check_range("mask_adjust", mask_adjust, 0.0, 1.0)
        self._init_common(label_smoothing=label_smoothing, loss=loss, num_classes=num_classes, eval_net=eval_net,
                          eval_head=eval_head, separate_heads=separate_heads, loss_weights=loss_weights,
                          terms=("one", "mix", "mb"))
        self._build_encoder(model, feature_layer, head_layer, separate_heads)
        if feature_channels is None:
            channels, tokens = self._infer_channels(self._dry_run_size(input_size))
        else:  # no dry run: the layer is taken to give a CNN map unless it turns out to give tokens
            channels, tokens = check_positive_int("feature_channels", feature_channels), False
        self.token_features = tokens
        if upsample is None:  # the reference's mode: its ViT configs upsample token maps with nearest
            upsample = self.default_upsample[1 if tokens else 0]
        mask_fit = True if mask_fit is None else mask_fit
        # The fitted mask has no level to learn, only where the partner shows, and a uniform attention gives
        # it no gradient for that: start it with attention logits of order 1 (fan-in init), not 0.01.
        if mask_min_sharpness is None:
            mask_min_sharpness = self.default_mask_min_sharpness if mask_fit else 0.0
        check_range("mask_min_sharpness", mask_min_sharpness, 0.0, 1.0, high_open=True)
        if mask_min_sharpness and not mask_fit:
            raise ValueError(f"mask_min_sharpness={mask_min_sharpness!r} needs mask_fit=True (a free mask's level "
                             "would move with the logits' scale)")
        block_kw = {"lam_concat": lam_concat, "upsample": check_choice("upsample", upsample, ("nearest", "bilinear")),
                    "mask_fit": mask_fit,
                    "init_std": None if mask_fit else 0.01, "min_sharpness": mask_min_sharpness,
                    **(mix_block_kwargs or {})}
        # In the model's dtype, as `method.to(dtype)` would leave it; the block's attention runs in float32.
        self.mix_block = PixelMixBlock(channels, **block_kw).to(dtype=weight_dtype(model) or torch.float32)
        self.last_mix: dict[str, Any] = {}

    # ------------------------------------------------------------------ training
    def compute_losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """The step's loss terms, with their graphs: ``one``, ``mix``, ``mb`` and ``mask``.

        ``x`` is a float batch [B, C, H, W], ``y`` class ids [B] or float targets [B, C]; anything else
        raises the mixers' ``TypeError`` / ``ValueError`` (``Method.check_batch``).
        """
        self.check_batch(x, y, type(self).__name__, num_classes=self.num_classes,
                         label_smoothing=self.label_smoothing, spatial_dims=(2,))
        x = self.cast_input(x)
        self._own_modes()
        n = x.shape[0]
        target = self._targets(y)
        # The draws come from the mixers' sampling code: two lambdas, then two random permutations.
        lam_mb, lam_bb = self._draw_lams(2, self.generator).tolist()
        perm_mb = pair_index(n, "perm", False, self.generator).to(x.device)
        perm_bb = pair_index(n, "perm", False, self.generator).to(x.device)
        adjust = self.mask_adjust > 0 and float(torch.rand(1, generator=self.generator)) < self.mask_adjust
        size = tuple(x.shape[-2:])

        # The record_function labels name the step's pieces for torch.profiler (benchmarks/_step_pieces.py).
        with torch.no_grad(), record_function("automix/encoder_features"):
            self._tap.clear()
            self.model_k(x)
            z = self._feature_map(self._tap.pop(), size)
        with record_function("automix/mix_block"):
            m_mb = self.mix_block(z, lam_mb, perm_mb, size)
            with torch.no_grad():
                if min(lam_bb, 1.0 - lam_bb) <= self.lam_margin:
                    m_bb = torch.full((n, 1) + size, 1.0 - lam_bb, device=x.device)  # plain mixup
                else:
                    m_bb = self.mix_block(z, lam_bb, perm_bb, size)
                    if adjust:
                        m_bb = adjust_mask(m_bb, lam_bb)
            loss_mask = mask_loss(m_mb, lam_mb, self.mask_loss_margin, self.mask_loss_mode) * self.mask_loss_weight

        # Both masks become draws like any mixer's: blended and turned into targets by the same code.
        params_mb, params_bb = mask_params(perm_mb, lam_mb, m_mb), mask_params(perm_bb, lam_bb, m_bb)
        with record_function("automix/mixing"):
            x_mb, x_bb = blend(x, params_mb), blend(x, params_bb)
        with record_function("automix/encoder_mixed"):
            logits_k = self._logits(self.model_k, self._switch_k, x_mb, mix_head=True)
            self._tap.clear()  # the hook stored features of x_mb; drop them now
            loss_mb = target_loss(self.loss, logits_k, mix_targets(target, params_mb))
        with record_function("automix/backbone"):
            loss_one = target_loss(self.loss, self.model(x), target)
            logits_mix = self._logits(self.model, self._switch_q, x_bb, mix_head=True)
            loss_mix = target_loss(self.loss, logits_mix, mix_targets(target, params_bb))
        self.last_params = {"mb": detached(params_mb), "bb": params_bb}
        # What was mixed this step, for pictures and checks (detached, small).
        self.last_mix = {"x": x.detach(), "x_mb": x_mb.detach(), "mask_mb": m_mb.detach(), "perm_mb": perm_mb,
                         "lam_mb": lam_mb, "x_bb": x_bb.detach(), "mask_bb": m_bb, "perm_bb": perm_bb,
                         "lam_bb": lam_bb}
        return {"one": loss_one, "mix": loss_mix, "mb": loss_mb, "mask": loss_mask}

    def check_epoch(self, means: dict[str, float]) -> list[str]:
        """Warn when the Mix Block's masks are saturated: a sigmoid at 0 or 1 passes almost no gradient, so
        it rarely recovers, and every "mixed" image is then one of its two images under a mixed label."""
        mean, whole = means.get("mask_mean"), means.get("mask_whole")
        if mean is not None and not 1e-3 < mean < 1.0 - 1e-3:
            return [f"Mix Block masks are saturated (epoch mean of the partner mask {mean:.2g}): the mixed images "
                    f"are unmixed, the labels still mixed, and the Mix Block gets almost no gradient. A smaller Mix "
                    f"Block step cannot bring it back; the fitted mask (mask_fit=True, the default) prevents it; see "
                    f"'Why the Mix Block collapsed' in docs/benchmarks.md"]
        if whole is not None and whole > 0.5:  # a mask that follows lam ~ Beta(2, 2) does it ~1.5% of the time
            return [f"Mix Block masks show one image almost alone for {100 * whole:.0f}% of samples (mask mean "
                    f"below 0.05 or above 0.95) while the labels say lam: the masks have collapsed to whole-image "
                    f"choices; the fitted mask (mask_fit=True, the default) prevents it; see 'Why the Mix Block "
                    f"collapsed' in docs/benchmarks.md"]
        return []

    def training_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not self.mixing:
            # The online network on clean images, as timm's --mixup-off-epoch leaves a classifier; after_step
            # keeps the EMA encoder (what eval_model() returns) following it. The Mix Block is not trained.
            return self.clean_step(x, y, who=type(self).__name__, num_classes=self.num_classes,
                                   label_smoothing=self.label_smoothing, loss=self.loss)
        terms = self.compute_losses(x, y)
        w = self.loss_weights
        loss = w["one"] * terms["one"] + w["mix"] * terms["mix"] + w["mb"] * terms["mb"] + terms["mask"]
        logs = {"loss": loss.detach(), **{f"loss_{k}": v.detach() for k, v in terms.items()},
                "lam_mb": torch.tensor(self.last_mix["lam_mb"]), "lam_bb": torch.tensor(self.last_mix["lam_bb"]),
                "mask_mean": self.last_mix["mask_mb"].mean(),
                "mask_std": self.last_mix["mask_mb"].flatten(1).std(1).mean(),  # 0: a constant mask, i.e. mixup
                "mask_whole": whole_image_share(self.last_mix["mask_mb"], lam=self.last_mix["lam_mb"])}
        return loss, logs

    # ------------------------------------------------------------------ evaluation and pictures
    @torch.no_grad()
    def mix_preview(self, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None, *,
                    lam: float | None = None) -> dict[str, Tensor]:
        """The Mix Block's mix of ``x`` [N, C, H, W] without training (``Method.mix_preview``); ``lam`` fixes the
        ratio (else drawn as in training, from ``lam`` or Beta(alpha, alpha), with ``generator``, default seed 0).
        ``y`` is not read."""
        gen = generator or torch.Generator().manual_seed(0)
        lam = float(self._draw_lams(1, gen)) if lam is None else float(lam)
        # One random cycle through the batch: every sample gets a partner other than itself.
        order = torch.randperm(x.shape[0], generator=gen)
        perm = torch.empty_like(order)
        perm[order] = order.roll(-1)
        perm = perm.to(x.device)
        x = self.cast_input(x)
        was_training = self.model_k.training
        self.model_k.eval()
        try:
            self._tap.clear()
            self.model_k(x)
            z = self._feature_map(self._tap.pop(), tuple(x.shape[-2:]))
        finally:
            self.model_k.train(was_training)
        params = mask_params(perm, lam, self.mix_block(z, lam, perm, tuple(x.shape[-2:])))
        return {"x": x, "partner": x[perm], "mask": params.mask, "mixed": self.apply(x, params), "lam": params.lam,
                "lam_partner": 1.0 - params.lam}


def mask_params(index: Tensor, lam: float, mask: Tensor) -> MixParams:
    """A Mix Block draw as ``MixParams``: partner ``index`` [B], one ``lam`` for the batch, partner-weight
    ``mask`` [B, 1, H, W] (float32, with its graph when the Mix Block is being trained through it)."""
    batch = index.shape[0]
    return MixParams(index=index, lam=torch.full((batch,), lam, dtype=torch.float32, device=mask.device),
                     mode="elem", size=tuple(mask.shape[2:]), mask=mask)


def detached(params: MixParams) -> MixParams:
    """``params`` with the mask's graph dropped (to keep after the step without holding the graph)."""
    return replace(params, mask=params.mask.detach())


@register_method("samix", kind="learned", aliases=OPTION_ALIASES)
class SAMix(AutoMix):
    """SAMix (arXiv:2111.15454): AutoMix with SAMix's Mix Block and the L1+Variance mask loss (reference: the
    ``cifar100/samix`` configs of OpenMixup (github.com/Westlake-AI/openmixup @ 37e1372)).

    Mix Block: multiplicative lam residual with the S-curve (``lam_mul_k=0.25`` on CIFAR/Tiny, -1 on
    ImageNet), separate query/key convs over the concatenated pair, a ConvNeck value with ELU and
    dropout (0 on CIFAR, 0.1 on ImageNet) and bilinear upsampling (nearest for transformer tokens, as its DeiT
    configs, e.g. ``cifar100/mixups/vits/deit_small/deit_s_samix_l6_a2_near_sz224_bs100_ep200.py``). Everything
    else is AutoMix.
    """

    mask_loss_mode = "L1+Variance"
    default_upsample = ("bilinear", "nearest")  # its CNN configs upsample bilinearly, its ViT configs with nearest
    # SAMix's variance term already asks for sharp masks (its CPU runs kept them); its bilinear masks would
    # also need the floor's bisection at image resolution, about 10x the cost of AutoMix's at feature size.
    default_mask_min_sharpness = 0.0

    def __init__(self, model: nn.Module, feature_layer: str | None = None, num_classes: int | None = None, *,
                 lam_mul_k: float = 0.25, value_dropout: float = 0.0, upsample: str | None = None,
                 mix_block_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if kwargs.get("lam_concat"):
            raise ValueError("lam_concat: SAMix encodes lam multiplicatively; lam_concat=True is not SAMix")
        block = {"lam_mul": True, "lam_mul_k": check_number("lam_mul_k", lam_mul_k), "qk_concat": True,
                 "value_neck": "convneck", "value_dropout": value_dropout, **(mix_block_kwargs or {})}
        super().__init__(model, feature_layer, num_classes, upsample=upsample, mix_block_kwargs=block, **kwargs)
