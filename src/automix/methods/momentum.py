"""What AutoMix, SAMix and AdAutoMix share: an online model, its EMA copy (the momentum encoder) with a second
"mix" head on each, a feature tap on the EMA copy, the EMA schedule, the modes of the parts, evaluation.

``MomentumEncoderMethod`` is the base class; a subclass builds its mask generator (``self.mix_block``) and its
losses. The parts, named as the AutoMix reference (OpenMixup, github.com/Westlake-AI/openmixup @ 37e1372,
``openmixup/models/classifiers/automix.py``) names them:

* ``model`` (the online network, "q") with the user's classifier as its clean ("one") head and ``head_mix`` as
  its mix head, switched in by a forward hook (``heads.HeadSwitch``);
* ``model_k`` (the EMA encoder, "k"): a deep copy without gradients and its own ``head_mix_k``, moved after every
  optimiser step by ``after_step()`` (parameters only, BN statistics from its own train-mode passes);
* ``_tap``: a forward hook on ``model_k`` at ``feature_layer`` reading the features the generator works on.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_number, check_positive_int, check_range, check_type
from ..losses import resolve_loss, soft_targets
from ..mixers._sampling import sample_beta
from ..models import FeatureTap, default_feature_layer, tokens_to_map
from .base import Method, weight_dtype
from .ema import ema_momentum, ema_update, scaled_momentum
from .heads import HeadSwitch, HeadView, find_classifier, new_head_like


class MomentumEncoderMethod(Method):
    """Base of the methods that train a mask generator (``self.mix_block``) through an EMA copy of the model.

    A subclass sets, in its constructor: ``alpha``, ``lam_sampler``, ``num_classes``, ``label_smoothing``,
    ``eval_net``, ``eval_head``; calls ``_init_ema_schedule`` and ``_build_encoder``; then builds
    ``self.mix_block``. Everything below then works: ``param_groups`` (the model and its mix head; the generator
    in a group named ``"mix_block"``, the name the trainer's ``--mix-block-lr`` looks for), ``after_step`` (the
    EMA update), ``eval_model`` and the state dict (the generator and ``total_steps`` included).
    """

    mix_block: nn.Module

    # ------------------------------------------------------------------ setup helpers
    def _init_ema_schedule(self, model_ema_decay: float | None, model_ema_end_decay: float | None,
                           model_ema_warmup: float) -> None:
        """Check and keep the EMA encoder's decay schedule; ``None`` decays follow ``total_steps``."""
        # None: follow the run's length (scaled_momentum), re-derived whenever total_steps is set.
        self._decay_arg = None if model_ema_decay is None else check_range("model_ema_decay", model_ema_decay, 0.0, 1.0)
        self._end_decay_arg = None if model_ema_end_decay is None else check_range(
            "model_ema_end_decay", model_ema_end_decay, 0.0, 1.0)
        self._derive_decays()
        self.model_ema_warmup = check_range("model_ema_warmup", model_ema_warmup, 0.0, 1.0)

    def _init_common(self, *, label_smoothing: float, loss: Any, num_classes: int | None, eval_net: str,
                     eval_head: str, separate_heads: bool, loss_weights: dict[str, float] | None,
                     terms: tuple[str, ...]) -> None:
        """Check and set the options every momentum-encoder method shares; ``terms`` are its loss terms (the keys
        ``loss_weights`` may set, each 1.0 by default)."""
        self.label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
        self.loss = resolve_loss(loss)
        self.num_classes = None if num_classes is None else check_positive_int("num_classes", num_classes)
        self.eval_net = check_choice("eval_net", eval_net, ("ema", "online"))
        self.eval_head = check_choice("eval_head", eval_head, ("one", "mix"))
        check_type("separate_heads", separate_heads, bool, "a bool")
        weights = {**{k: 1.0 for k in terms}, **(loss_weights or {})}
        unknown = set(weights) - set(terms)
        if unknown:
            raise ValueError(f"loss_weights has unknown keys {sorted(unknown)}; use "
                             f"{', '.join(repr(k) for k in terms)}")
        self.loss_weights = {k: check_number(f"loss_weights[{k!r}]", v) for k, v in weights.items()}

    def _build_encoder(self, model: nn.Module, feature_layer: str | None, head_layer: str | None,
                       separate_heads: bool) -> None:
        """The EMA encoder, the mix heads and their switches, and the feature tap on the EMA encoder."""
        self.feature_layer = feature_layer or default_feature_layer(model)
        # The EMA encoder is copied before any hook is put on the online model.
        self.model_k = copy.deepcopy(model)
        self.model_k.requires_grad_(False)
        self.head_layer = find_classifier(model, head_layer)
        head_q = model.get_submodule(self.head_layer)
        self.head_mix = new_head_like(head_q) if separate_heads else None
        self.head_mix_k = copy.deepcopy(self.head_mix).requires_grad_(False) if separate_heads else None
        self._switch_q = HeadSwitch(model, self.head_layer, self.head_mix) if separate_heads else None
        self._switch_k = HeadSwitch(self.model_k, self.head_layer, self.head_mix_k) if separate_heads else None
        self._tap = FeatureTap(self.model_k, self.feature_layer, detach=True)
        prefix = getattr(model, "num_prefix_tokens", None)  # a ViT's class token(s), dropped from its tokens
        self.num_prefix_tokens = prefix if isinstance(prefix, int) and not isinstance(prefix, bool) else None

    def _dry_run_size(self, input_size: int | None) -> int:
        """The image side of the dry run that finds the feature layer's shape: ``input_size``, else the model's
        own (``img_size`` of automix's ViTs, ``patch_embed.img_size`` of timm's), else 32."""
        if input_size is not None:
            return check_positive_int("input_size", input_size)
        for owner in (self.model_k, getattr(self.model_k, "patch_embed", None)):
            side = getattr(owner, "img_size", None)
            side = side[0] if isinstance(side, (tuple, list)) and side else side
            if isinstance(side, int) and not isinstance(side, bool) and side > 0:
                return side
        return 32

    def _feature_map(self, z: Tensor, size: tuple[int, int]) -> Tensor:
        """The Mix Block's input: a CNN map as it is, transformer tokens [B, N, C] on their patch grid
        [B, C, h, w] without the class token (``automix.models.tokens_to_map``)."""
        return tokens_to_map(z, size, self.num_prefix_tokens, name=f"feature_layer {self.feature_layer!r}")

    @torch.no_grad()
    def _infer_channels(self, input_size: int) -> tuple[int, bool]:
        """(channels at the feature layer, whether it gives transformer tokens), from one dry run."""
        was_training = self.model_k.training
        self.model_k.eval()  # a dry run must not touch BN statistics
        try:
            first = next(self.model_k.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
            first_conv = next((m for m in self.model_k.modules() if isinstance(m, nn.Conv2d)), None)
            in_chans = getattr(self.model_k, "in_chans", first_conv.in_channels if first_conv is not None else 3)
            # In the weights' dtype: a bf16 / fp16 model refuses a float32 batch.
            dtype = weight_dtype(self.model_k) or torch.float32
            self.model_k(torch.zeros(2, in_chans, input_size, input_size, device=device, dtype=dtype))
            feats = self._tap.pop()
        finally:
            self.model_k.train(was_training)
        if feats.ndim not in (3, 4):
            raise ValueError(f"feature_layer {self.feature_layer!r} gives shape {tuple(feats.shape)}; the Mix Block "
                             "needs a [B, C, h, w] map or transformer tokens [B, N, C]")
        z = self._feature_map(feats, (input_size, input_size))  # tokens that do not tile the image: ValueError
        return int(z.shape[1]), feats.ndim == 3

    def param_groups(self) -> list[dict[str, Any]]:
        """``[{"name": "model", ...}, {"name": "mix_block", ...}]``: give the Mix Block its own lr/momentum."""
        model_params = [p for p in self.model.parameters() if p.requires_grad]
        if self.head_mix is not None:
            model_params += list(self.head_mix.parameters())
        return [{"name": "model", "params": model_params},
                {"name": "mix_block", "params": list(self.mix_block.parameters())}]

    def head_modules(self) -> list[nn.Module]:
        """The model's classifier and, with ``separate_heads``, the mix head beside it."""
        heads = [self.model.get_submodule(self.head_layer)]
        return heads + ([self.head_mix] if self.head_mix is not None else [])

    # ------------------------------------------------------------------ training
    def _targets(self, y: Tensor) -> Tensor:
        return soft_targets(y, self.num_classes, self.label_smoothing)

    def _logits(self, model: nn.Module, switch: HeadSwitch | None, x: Tensor, mix_head: bool) -> Tensor:
        if mix_head and switch is not None:
            with switch.active():
                return model(x)
        return model(x)

    def _own_modes(self) -> None:
        """Put the parts this method owns into the modes its step needs, whatever happened to them since.

        A user's ``evaluate(method.eval_model())`` calls ``.eval()`` on the EMA encoder and nothing puts it
        back; the reference runs the encoder with train-mode BN (its statistics come from the clean and
        the mixed batch), so every step sets it again. The online model's mode stays the user's.
        """
        for part in (self.model_k, self.mix_block, self.head_mix, self.head_mix_k):
            if part is not None and not part.training:
                part.train()

    @torch.no_grad()
    def after_step(self) -> None:
        m = self.current_ema_decay()
        ema_update([self.model_k] + ([self.head_mix_k] if self.head_mix is not None else []),
                   [self.model] + ([self.head_mix] if self.head_mix is not None else []), m)
        super().after_step()

    def _derive_decays(self) -> None:
        self.model_ema_decay, self.model_ema_end_decay = scaled_momentum(self.total_steps, self._decay_arg,
                                                                         self._end_decay_arg)

    def set_total_steps(self, total_steps: int) -> None:
        super().set_total_steps(total_steps)
        self._derive_decays()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)  # total_steps comes back with it, and the momenta follow it
        self._derive_decays()

    def current_ema_decay(self) -> float:
        """The EMA encoder's decay (momentum) the next ``after_step()`` will use."""
        return ema_momentum(int(self.step), self.total_steps, self.model_ema_decay, self.model_ema_end_decay,
                            self.model_ema_warmup)

    # ------------------------------------------------------------------ evaluation
    def eval_model(self, net: str | None = None, head: str | None = None) -> nn.Module:
        """The network to evaluate: the EMA encoder by default (what the reference reports).

        ``net="online"`` gives the online network; ``head="mix"`` the mix head instead of the clean one.
        The ``"one"`` head network is the user's own model class, loadable like any checkpoint.

        The EMA encoder is returned in eval mode, so an ``evaluate()`` that forgets ``.eval()`` does not
        update its BN statistics from evaluation data; the next ``training_step`` puts it back in train
        mode (``.eval()`` by the user is as harmless). The online network is the user's model: its mode
        is left as it is.
        """
        net = check_choice("net", net or self.eval_net, ("ema", "online"))
        head = check_choice("head", head or self.eval_head, ("one", "mix"))
        model, switch = (self.model_k, self._switch_k) if net == "ema" else (self.model, self._switch_q)
        out = HeadView(model, switch) if head == "mix" and switch is not None else model
        return out.eval() if net == "ema" else out

    def _draw_lams(self, n: int, gen: torch.Generator) -> Tensor:
        """``n`` lambdas (float32 on ``gen.device``) from ``lam`` when given, else Beta(alpha, alpha) as always."""
        if self.lam_sampler is not None:
            return self.lam_sampler(n, gen)
        return sample_beta(self.alpha, n, gen)


__all__ = ["MomentumEncoderMethod"]
