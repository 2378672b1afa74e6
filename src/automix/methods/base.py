"""The Method contract, and the generic wrapper that turns any mixer into a Method.

A Method is an ``nn.Module`` that owns everything it trains besides the classifier (a Mix Block,
an EMA encoder, its own random generator) and exposes the four calls a training loop needs:

* ``training_step(x, y) -> (loss, logs)``: one step's loss (call ``backward`` on it) and detached logs;
* ``after_step()``: call after ``optimizer.step()``: EMA updates and schedules, then ``step += 1``;
* ``eval_model()``: the network to evaluate;
* ``state_dict()`` / ``load_state_dict()``: everything needed to continue exactly, including the
  step counter and the generator that draws lambdas and pairings.

``set_mixing(False)`` turns mixing off (timm's ``mixup_enabled = False``, which its ``--mixup-off-epoch``
sets): every method then trains its model on the clean batch with the plain loss (``clean_step``: the same
``loss`` and ``label_smoothing``, no draw, the generator untouched) and ``after_step`` goes on as before, so a
learned method's EMA encoder keeps following the model and stays what ``eval_model()`` returns; the Mix Block
(and AutoMix's mix head) get no gradient and stay as they were.

Every mixing draw is a ``MixParams`` (input mixers' and learned masks alike). After ``training_step``,
``last_params`` holds the step's draws by name (``{"mix": ...}`` for a mixer, ``{"mb": ..., "bb": ...}`` for
AutoMix; AdAutoMix's draws of K images carry their sources, weights and masks in ``MixParams.extra``), and
``apply(t, params)`` / ``apply_seg(seg, params, x)`` replay one on any tensor (a second view, a segmentation map).
``mix_preview(x, y)`` draws one mix for pictures. The label weight of a draw may be set after the forward pass of
the mixed batch (TransMix re-weights lam from attention): a method builds its targets from ``params.lam`` only once
that pass is done (``MixerMethod`` through ``MixerMethod.reweight``, which calls ``BaseMixer.reweight`` and which a
method extends when the weight also reads that pass's prediction: MixPro).

``forward`` is ``training_step``, so under DDP the whole method is wrapped
(``DDP(method)(x, y)``) and every trainable part (Mix Block included) has its gradients reduced.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_batch, check_choice, check_positive_int, check_range, check_targets, check_type
from ..context import capture_context, eval_mode, get_context
from ..losses import TargetLoss, resolve_loss, soft_targets, target_loss
from ..mixers import BaseMixer, MixParams
from ..mixers._lam import refusing_alpha_with_lam
from ..mixers.base import blend, mix_seg
from ..models.attention import find_attention
from ..models.features import resolve_module
from .heads import find_classifier


def weight_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of ``module``'s first floating-point parameter (or buffer); None when it has none."""
    for t in module.parameters():
        if t.is_floating_point():
            return t.dtype
    return next((b.dtype for b in module.buffers() if b.is_floating_point()), None)


class Method(nn.Module):
    """Base class: a step counter, a total step count for schedules, and an owned generator.

    Args:
        model: the classifier being trained.
        total_steps: optimiser steps in the whole run (schedules need it; the trainer sets it).
        seed: seed of the method's generator; ``None`` draws one from torch's global generator, so
            ``torch.manual_seed`` makes the run reproducible.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A method that draws lambda (AutoMix, SAMix, AdAutoMix, ManifoldMix, ...) takes alpha and lam; giving both
        # is refused by the constructor's call, where a given alpha can be told from the default (``mixers._lam``).
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            cls.__init__ = refusing_alpha_with_lam(cls.__init__)

    def __init__(self, model: nn.Module, *, total_steps: int | None = None, seed: int | None = None) -> None:
        super().__init__()
        check_type("model", model, nn.Module, "an nn.Module")
        self.model = model
        self.total_steps = None if total_steps is None else check_positive_int("total_steps", total_steps)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)))
        check_type("seed", seed, int, "an int")
        self.generator = torch.Generator().manual_seed(seed)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.last_params: dict[str, MixParams] = {}  # the last step's draws, by name (see the module docstring)
        self.mixing = True  # set_mixing(False): clean batches from then on (timm's --mixup-off-epoch)

    @property
    def mixes(self) -> bool:
        """Whether this method mixes anything (False for vanilla training): whether it has a preview."""
        return True

    @property
    def skips_parameters(self) -> bool:
        """Whether a mixing step may leave some of ``param_groups()``'s parameters out of the loss (SMMix's token
        head on its mixup steps). Under DDP the trainer then asks DDP to look for unused parameters (a per-step
        graph walk, paid only when this is True or mixing is switched off for some epochs)."""
        return False

    def apply(self, t: Tensor, params: MixParams) -> Tensor:
        """Mix ``t`` [B, ...] with one of this method's draws (``last_params``): replay on any tensor."""
        return blend(t, params)

    def apply_seg(self, seg: Tensor, params: MixParams, x: Tensor) -> Tensor:
        """Mix a segmentation map like ``x`` with a draw (``automix.mixers.base.mix_seg``: integer maps need a
        hard mask, a float one-hot map works with any)."""
        hard = params.mask is None or params.mask.dtype == torch.bool
        return mix_seg(seg, params, x, self.apply, hard=hard, who=type(self).__name__)

    @torch.no_grad()
    def mix_preview(self, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None
                    ) -> dict[str, Tensor]:
        """One mix of ``x`` [N, C, H, W] for pictures, without training and without touching ``self.generator``:
        ``{"x", "partner", "mask" (partner weight [N, 1, H, W]), "mixed", "lam" [N], "lam_partner" [N]}`` (the
        partner's label weight), and ``"legend"`` / ``"partner_region"`` where the blend and ``(lam, 1 - lam)`` are
        not the whole truth (``BaseMixer.preview_parts``; ``automix.viz`` draws them).

        Raises:
            ValueError: the method mixes nothing (vanilla training).
        """
        raise ValueError(f"{type(self).__name__} mixes nothing to show; pick a mixing method")

    def set_total_steps(self, total_steps: int) -> None:
        """Tell the method how many optimiser steps the run has (drives its schedules)."""
        self.total_steps = check_positive_int("total_steps", total_steps)

    def check_batch_size(self, batch: int) -> None:
        """Raise ``ValueError`` (naming the option that needs it) when this method cannot train on batches of
        ``batch`` samples; every method takes any batch but AdAutoMix (at least ``mix_samples``). The trainer calls
        it before the first step, when it knows the batch size."""

    def check_image_size(self, size: tuple[int, int], channels: int = 3) -> None:
        """Raise ``ValueError`` (naming the option and the image size) when an option of this method cannot work
        on images of ``size`` (H, W) pixels with ``channels`` channels: what a first step would find (a token grid
        that ``patch_size`` does not tile, ``min_tokens`` beyond it, a ``block_num`` that never fits, a
        ``top_k`` beyond the feature grid), found before it. The trainer calls it before the run starts, when it
        knows the image size. The default runs the mixer's checks (``BaseMixer.check_image_size``), if any."""
        mixer = getattr(self, "mixer", None)
        if mixer is not None:
            mixer.check_image_size(size)

    def set_mixing(self, enabled: bool) -> None:
        """Turn mixing on or off for the following steps (timm's ``Mixup.mixup_enabled``).

        Off, ``training_step`` is ``clean_step``: the model on the clean batch with the method's loss and label
        smoothing; ``after_step`` still runs its EMA updates and schedules. The trainer's ``--mixup-off-epoch N``
        calls ``set_mixing(epoch < N)`` before each epoch. The flag travels in ``state_dict()``.

        Raises:
            TypeError: ``enabled`` is not a bool.
        """
        check_type("enabled", enabled, bool, "a bool")
        self.mixing = enabled

    def clean_step(self, x: Tensor, y: Tensor, *, who: str, num_classes: int | None, label_smoothing: float,
                   loss: TargetLoss) -> tuple[Tensor, dict[str, Tensor]]:
        """The unmixed step: ``loss`` of ``self.model(x)`` against ``y`` (smoothed by ``label_smoothing``).

        What vanilla training does, and what every method does with mixing off (``set_mixing``). ``x`` is a
        float batch, ``y`` class ids ``[B]`` or float targets; the loss is a float32 scalar. Nothing is drawn
        from the method's generator, so a run that turns mixing back on continues the same stream.
        """
        self.check_batch(x, y, who, num_classes=num_classes, label_smoothing=label_smoothing)
        logits = self.model(self.cast_input(x))
        self.last_params = {}
        if y.is_floating_point() or loss.name != "ce":
            value = target_loss(loss, logits, soft_targets(y, num_classes, label_smoothing))
        else:  # class ids with CE: the fused kernel, same value as the soft-target form
            value = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        return value, {"loss": value.detach()}

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.training_step(x, y)

    def training_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def check_batch(self, x: Any, y: Any, who: str, *, num_classes: int | None = None,
                    label_smoothing: float = 0.0, spatial_dims: tuple[int, ...] | None = None) -> None:
        """The input check every ``training_step`` starts with, shared with the mixers.

        ``x`` must be a floating-point batch (``[B, C, *spatial]`` when ``spatial_dims`` is given) and ``y``
        class ids ``[B]`` in ``[0, num_classes)`` or float targets ``[B, ...]``; see ``automix._checks``.

        Raises:
            TypeError: ``x`` or ``y`` is not a tensor, ``x`` is not floating point (e.g. uint8 images),
                ``y`` is bool or complex.
            ValueError: a shape or batch-size mismatch, or class ids out of range.
        """
        check_batch("x", x, who, spatial_dims)
        check_targets("y", y, x.shape[0], num_classes, label_smoothing)

    def cast_input(self, x: Tensor) -> Tensor:
        """``x`` in the dtype of the model's weights, so a bf16 / fp16 model trains on a float32 batch.

        A float32 model (under ``torch.autocast`` or not) gets ``x`` unchanged.
        """
        dtype = weight_dtype(self.model)
        return x if dtype is None or x.dtype == dtype else x.to(dtype)

    @torch.no_grad()
    def after_step(self) -> None:
        """Schedules and EMA updates after the optimiser step; subclasses call ``super()`` last."""
        self.step += 1

    @torch.no_grad()
    def sync_buffers(self, mode: str = "reduce") -> None:
        """Make buffers (BN statistics) equal on every rank before evaluating or saving.

        DDP broadcasts rank 0's buffers at the start of each forward, then every rank updates them
        from its own data, so after a step they differ. ``"reduce"`` averages floating buffers over
        the ranks (timm's ``--dist-bn reduce``); ``"broadcast"`` copies rank 0's. No-op without DDP.
        """
        check_choice("mode", mode, ("reduce", "broadcast"))
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        world = torch.distributed.get_world_size()
        for buf in self.buffers():
            if mode == "reduce" and buf.is_floating_point():
                torch.distributed.all_reduce(buf)
                buf.div_(world)
            else:
                torch.distributed.broadcast(buf, 0)

    def check_epoch(self, means: dict[str, float]) -> list[str]:
        """Warnings about an epoch of training, from the epoch means of ``training_step``'s logs.

        The trainer calls it after every epoch with ``{"loss": ..., "loss_mb": ..., ...}`` and prints what
        it returns (and keeps the first epoch of each warning in metrics.json). Nothing to say here.
        """
        return []

    def eval_model(self) -> nn.Module:
        """The network to evaluate (here the model itself)."""
        return self.model

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups: one per separately tunable part."""
        return [{"name": "model", "params": [p for p in self.model.parameters() if p.requires_grad]}]

    def head_modules(self) -> list[nn.Module]:
        """The classifier heads this method trains: the model's own (``heads.find_classifier``), and any head
        a method adds (AutoMix's mix head). The trainer's ``--head-lr-scale`` gives their parameters their own
        learning rate, for fine-tuning a network whose head is new.

        Raises:
            ValueError: the model has no classifier to find (name it with the method's ``head_layer``).
        """
        return [self.model.get_submodule(find_classifier(self.model))]

    # The generator and total_steps travel in the state dict, so resume continues the same draws.
    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "total_steps": self.total_steps, "mixing": self.mixing}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.total_steps = state["total_steps"]
        self.mixing = state.get("mixing", True)  # checkpoints from before set_mixing existed were mixing


def check_module_options(module: nn.Module, mixer: BaseMixer | None) -> None:
    """What can be checked of the mixer's context from ``module`` alone, at build time rather than at the first
    step: a module-path option (``layer``, ``head``) must name a submodule (``resolve_module``'s ``ValueError``
    naming the option); an attention context needs an attention module at ``layer`` (``find_attention``); class
    activation maps need an ``nn.Linear`` at ``head`` (``TypeError`` naming ``head``, as
    ``automix.context.class_activation_map``; ``ValueError`` when the model has none)."""
    if mixer is None or (mixer.needs is None and getattr(mixer, "reweights", None) is None):
        return
    options = mixer.context_options()
    for option in ("layer", "head"):
        path = options.get(option)
        if isinstance(path, str):
            resolve_module(module, path, option)
    kind = mixer.needs or mixer.reweights
    if kind == "attention":
        find_attention(module, options.get("layer"), option="layer")
    if kind == "cam":
        head = options.get("head")
        if head is None:
            if not any(isinstance(m, nn.Linear) for m in module.modules()):
                raise ValueError(f"head: {type(module).__name__} has no nn.Linear classifier; class activation "
                                 f"maps need one (give head= the model's linear classifier)")
        elif not isinstance(module.get_submodule(head), nn.Linear):
            raise TypeError(f"head={head!r} must name an nn.Linear classifier of {type(module).__name__}, got "
                            f"{type(module.get_submodule(head)).__name__} there")


class MixerMethod(Method):
    """Any input-space mixer (or none) as a Method: mixed batch -> model -> soft-target loss.

    ``training_step(x, y)`` takes a float batch (cast to the model's weight dtype, so a bf16 model takes
    float32 batches) and targets as the mixers do; it returns a float32 loss.

    The one generic method for model-aware mixers too: when the mixer ``needs`` a context, it is computed
    from the model on the clean batch (``automix.context.get_context(mixer.needs)``) and handed to the draw;
    when the mixer ``reweights``, that context is read during the mixed batch's forward pass and the mixer
    sets lam from it before the targets are built.

    Args:
        model: the classifier.
        mixer: a mixer from ``create_mixer``, or ``None`` for vanilla training.
        num_classes: needed when ``y`` holds class indices and no mixer knows it.
        loss: ``"ce"`` (soft-target cross-entropy), ``"bce"`` (multi-label: class ids become one-hot rows),
            ``"decouplemix"`` (``automix.losses.decoupled_cross_entropy``) or a ``TargetLoss`` carrying a loss's
            options; the same names and meaning in every Method (``automix.losses.target_loss``).
        label_smoothing: for vanilla training, on class ids or float [B, C] targets (mixers carry their own).
        total_steps, seed: see ``Method``.
    """

    def __init__(self, model: nn.Module, mixer: BaseMixer | None = None, *, num_classes: int | None = None,
                 loss: str | TargetLoss = "ce", label_smoothing: float = 0.0, total_steps: int | None = None,
                 seed: int | None = None) -> None:
        super().__init__(model, total_steps=total_steps, seed=seed)
        if mixer is not None:
            check_type("mixer", mixer, BaseMixer, "a mixer (automix.create_mixer) or None")
        self.mixer = mixer
        self.num_classes = None if num_classes is None else check_positive_int("num_classes", num_classes)
        self.loss = resolve_loss(loss)
        self.label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
        if self.context_reads_model:
            check_module_options(model, self.mixer)

    # Whether the mixer's context comes from ``model`` (its module-path options are checked against it when the
    # method is built); AttentiveMix+ reads an extractor instead and checks against that.
    context_reads_model = True

    @property
    def mixes(self) -> bool:
        return self.mixer is not None

    def apply(self, t: Tensor, params: MixParams) -> Tensor:
        if self.mixer is None:
            raise ValueError("vanilla training has no draw to apply")
        return self.mixer.apply(t, params)

    def apply_seg(self, seg: Tensor, params: MixParams, x: Tensor) -> Tensor:
        if self.mixer is None:
            raise ValueError("vanilla training has no draw to apply")
        return self.mixer.apply_seg(seg, params, x)

    def context(self, x: Tensor, y: Tensor) -> Any:
        """What the mixer reads from the model for this batch (None for a static mixer)."""
        if self.mixer is None or self.mixer.needs is None:
            return None
        return get_context(self.mixer.needs)(self.model, x, y, **self.mixer.context_options())

    def reweight(self, params: MixParams, context: Any, *, logits: Tensor, y: Tensor) -> MixParams:
        """The draw with its label weight set after the mixed batch's forward pass: ``mixer.reweight(params,
        context)``, ``context`` being what that pass showed of ``mixer.reweights``. A method whose label weight
        also depends on the model's prediction (MixPro's progress factor) overrides this; ``logits`` [B, K] are
        that pass's (with their graph: detach what only sets a weight) and ``y`` the batch's targets."""
        return self.mixer.reweight(params, context)

    @torch.no_grad()
    def mix_preview(self, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None
                    ) -> dict[str, Tensor]:
        """The mixer's preview with the context training would give it (``context``: the model's for a model-aware
        mixer, a teacher's for TokenMix with one) and, for a mixer that re-weights its labels from the mixed
        batch's forward pass (TransMix), the label weight of that pass (the model in eval mode: its BN statistics
        stay as they were), so the picture shows the label weights training uses."""
        if self.mixer is None:
            return super().mix_preview(x, y, generator)
        with torch.enable_grad():  # a context may need an input gradient (saliency)
            context = self.context(self.cast_input(x), y if y is not None else torch.zeros(x.shape[0]).long())
        mixer = self.mixer

        def reweight(mixed: Tensor, params: MixParams) -> MixParams:
            if not mixer.wants_reweight(params):
                return params
            with eval_mode(self.model), capture_context(mixer.reweights, self.model,
                                                        **mixer.context_options()) as seen:
                self.model(self.cast_input(mixed))
            return mixer.reweight(params, seen.value)

        return mixer.mix_preview(x, y, generator, context=context,
                                 reweight=reweight if mixer.reweights is not None else None)

    def training_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        mixer = self.mixer
        if mixer is None or not self.mixing:  # vanilla, or mixing turned off: the mixer's smoothing stays
            return self.clean_step(x, y, who=mixer.name if mixer is not None else "vanilla training",
                                   num_classes=self.num_classes or (mixer.num_classes if mixer is not None else None),
                                   label_smoothing=self.label_smoothing if mixer is None else mixer.label_smoothing,
                                   loss=self.loss)
        self.check_batch(x, y, mixer.name, num_classes=self.num_classes or mixer.num_classes,
                         spatial_dims=mixer.spatial_dims if mixer.spatial else None)
        x = self.cast_input(x)
        mixer.check_targets(y, x.shape[0])
        params = mixer.sample(x, self.generator, context=self.context(x, y))
        x = mixer.apply(x, params)
        if mixer.reweights is None or not mixer.wants_reweight(params):
            logits = self.model(x)
        else:  # the label weight comes from what the model sees of the mixed batch (TransMix)
            with capture_context(mixer.reweights, self.model, **mixer.context_options()) as seen:
                logits = self.model(x)
            params = self.reweight(params, seen.value, logits=logits, y=y)
        self.last_params = {"mix": params}
        loss = target_loss(self.loss, logits, mixer.mix_targets(y, params))
        return loss, {"loss": loss.detach()}
