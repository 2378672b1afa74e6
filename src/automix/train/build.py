"""Build a run's pieces from its Config: model, method, optimiser, schedule, weight EMA.

Each builder turns config fields into library calls (timm's ``*_kwargs(cfg)`` idea): the
library never sees the config, and the wiring from flags to objects is tested in one place.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import torch
from torch import nn

from ..methods import Method, create_method, method_spec
from ..methods.ema import ema_momentum
from ..models import create_model
from ..models.registry import model_options
from .config import (
    COMMAND_LINE,
    OPTS_WITH_A_FLAG,
    SWITCH_FLAGS,
    Config,
    given_keys,
    option_name,
    setting,
    takes_switch_flags,
)
from .loader import batch_side
from .schedule import WarmupCosine


def build_model(cfg: Config, num_classes: int, in_chans: int, img_size: int | None = None) -> nn.Module:
    """``cfg.model`` with ``--width`` / ``--widen``, ``model_opts`` and the data's channels; a model built for an
    image side (the ViTs' ``img_size``) is built for ``img_size`` (the images' side; else ``--img-size``, else the
    model's default).

    Raises:
        ValueError: ``--width`` / ``--widen`` for a built-in model without that option (naming the models that have
            it; a ``timm:`` / ``torchvision:`` model gets them as keywords, for its library to take or refuse), or
            a value the model refuses, with the flags and options behind the arguments it names (``--img-size``,
            ``--model-opt patch_size=16``, with the config file they came from).
        TypeError: a model option the model does not take (the model's message, with the option as given).
    """
    kw: dict[str, Any] = dict(cfg.model_opts)
    registered = not cfg.model.startswith(("timm:", "torchvision:"))
    for key, which in (("width", "the CIFAR ResNets and ResNeXt"), ("widen", "the WRNs")):
        if getattr(cfg, key) is None:
            continue
        # a timm / torchvision model gets it as a keyword: that library decides whether the model takes it
        if registered and key not in model_options(cfg.model):
            raise ValueError(f"{setting(cfg, key)} applies to {which} only (the models with a {key} option), not "
                             f"to model {cfg.model!r}; drop {option_name(cfg, key)}")
        kw[key] = getattr(cfg, key)
    side = None
    if registered:
        kw["in_chans"] = in_chans
        side = img_size if img_size is not None else cfg.img_size
        if side is not None and "img_size" in model_options(cfg.model):
            kw["img_size"] = side
    try:
        return create_model(cfg.model, num_classes=num_classes, **kw)
    except (ValueError, TypeError) as err:
        given = _model_settings(str(err), cfg, side)
        if not given:
            raise
        raise type(err)(f"{err} (given as {given})") from err


def _names(message: str, key: str) -> bool:
    """Whether ``message`` names option ``key`` as a word (``layer``, not the ``layer`` of ``feature_layer``)."""
    return re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", message) is not None


def _opts_in(message: str, cfg: Config, field: str) -> list[str]:
    """The entries of ``cfg.<field>`` (``model_opts`` / ``method_opts``) that ``message`` names, as the user gave
    them: ``--method-opt layer=blocks.3``, or ``method_opts layer='blocks.3' (config file r.yaml)``."""
    source = getattr(cfg, "_sources", {}).get(field)
    flag = "--" + field[:-1].replace("_", "-")  # model_opts -> --model-opt
    return [f"{flag} {key}={value}" if source == COMMAND_LINE else
            f"{field} {key}={value!r}" + (f" ({source})" if source else "")
            for key, value in getattr(cfg, field).items() if _names(message, key)]


def _model_settings(message: str, cfg: Config, side: int | None) -> str:
    """The options behind the model arguments that ``message`` names, as the user gave them: ``--img-size 120``
    (or the images' side), ``--model-opt patch_size=16`` / ``model_opts patch_size=16 (config file r.yaml)``."""
    found = []
    message = message.split("; accepted:")[0]  # the list of what the model takes names nothing given
    if side is not None and _names(message, "img_size"):
        found.append(setting(cfg, "img_size") if cfg.img_size == side else f"the images' side {side}")
    return "; ".join(found + _opts_in(message, cfg, "model_opts"))


def image_side(data: Any, cfg: Config) -> int:
    """The side of the images the model will see (``loader.batch_side``): ``--img-size``, else the in-memory
    images' own, else the 224 px the large-image loader crops to. CIFAR held at 32 px with ``--img-size 224`` is
    seen at 224 (the loader resizes each batch)."""
    return batch_side(data, cfg.img_size)[-1]


def check_fits(method: Method, cfg: Config, size: tuple[int, int], in_chans: int) -> None:
    """Refuse options of ``method`` that cannot work on this run's batches, before it starts: a per-process
    ``--batch-size`` below what the method needs (``Method.check_batch_size``), options that do not fit images of
    ``size`` (H, W) with ``in_chans`` channels (``Method.check_image_size``: a token grid, PuzzleMix's blocks,
    AttentiveMix's feature grid).

    Raises:
        ValueError: the method's message, with the batch size or the image size it was checked against.
    """
    try:  # AdAutoMix needs at least mix_samples images per (per-process) batch
        method.check_batch_size(cfg.batch_size)
    except ValueError as err:
        raise ValueError(f"{err} (--batch-size {cfg.batch_size}, per process)") from err
    try:
        method.check_image_size(size, in_chans)
    except ValueError as err:
        shown = f"{size[0]}x{size[1]}"
        raise ValueError(f"method {cfg.method}: {err}" + ("" if shown in str(err) else f" (the images are "
                                                                                      f"{shown} px)")) from err


def check_model_and_method(cfg: Config, num_classes: int, in_chans: int, side: int) -> None:
    """Build ``cfg``'s model and method as a run on ``side`` px images with ``in_chans`` channels and
    ``num_classes`` classes would, and run their checks (``check_fits``), on the meta device: no memory for the
    weights, no computation, no draw from the global random generators (they are restored anyway). What the
    trainer, ``automix show`` and ``automix eval`` call before loading any data, so a model option that does not
    fit ``--img-size`` (``patch_size=8`` at 36 px) or a method option the model refuses is named at once, not
    after the dataset is decoded and cached. The same builders raise the same messages again on the real run.

    ``timm:`` / ``torchvision:`` models, and any model or method whose construction the meta device cannot run
    (a tensor read back with ``.item()``), are left to the run's own build.

    Raises:
        ValueError / TypeError: from ``build_model``, ``build_method`` or ``check_fits``.
    """
    if cfg.model.startswith(("timm:", "torchvision:")):
        # Another library's constructor may read values back from tensors it builds (timm's drop-path rates via
        # .item()), which the meta device cannot do: those are checked when the run builds them.
        return
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        try:
            model = build_model(cfg, num_classes, in_chans, side)
            method = build_method(cfg, model, num_classes, max(1, cfg.epochs), seed=cfg.seed)
            check_fits(method, cfg, (side, side), in_chans)
        except (NotImplementedError, RuntimeError):
            return  # something the meta device cannot run: the real build checks the same options


def method_kwargs(cfg: Config, num_classes: int, total_steps: int, seed: int) -> dict[str, Any]:
    """``create_method``'s keyword arguments for ``cfg``: the run's numbers, the flags the method declares an
    option for (``OPTS_WITH_A_FLAG``: ``--smoothing`` is ``label_smoothing``, ``--mixup-mode`` is ``mode``, ...)
    and ``method_opts``. timm's switch flags (``--mixup``, ``--cutmix``, ``--cutmix-minmax``,
    ``--mixup-switch-prob``) go to a method that takes them all (``config.takes_switch_flags``), each one that is
    set, at any value (``validate`` sets each unset one to the value the method uses: ``config.switch_defaults``).

    A flag whose option the method does not declare is not passed (``config.check_conflicts`` refuses it
    when given); an unset ``--alpha`` or ``--mixup-lam`` leaves the method's own default.

    Example:
        >>> kw = method_kwargs(Config(method="transmix", mixup_switch_prob=0.5), 10, 100, 0)
        >>> kw["switch_prob"], "mixup_alpha" in kw
        (0.5, False)
    """
    options = method_spec(cfg.method).options
    switch = takes_switch_flags(options)
    kw: dict[str, Any] = {}
    for key, flag in OPTS_WITH_A_FLAG.items():
        value = getattr(cfg, flag)
        if key not in options or (flag in ("alpha", "mixup_lam", *SWITCH_FLAGS) and value is None):
            continue
        if flag in SWITCH_FLAGS and not switch:  # mixpro's and smmix's switch_prob mean another switch
            continue
        kw[key] = tuple(value) if flag == "cutmix_minmax" else value
    # validate() refused a method_opts key given together with its flag, so merging loses nothing.
    return {"num_classes": num_classes, "total_steps": total_steps, "seed": seed, **kw, **cfg.method_opts}


def check_method_options(cfg: Config) -> None:
    """Check ``cfg.method`` and its options as ``create_method`` does before building (the name; each option's key
    and type, ``method_spec(...).check``; a lam beside an alpha), without a model or data: what ``automix bench``
    checks of every cell before any runs. Values that need the model or the images are checked when the run
    builds its method (``build_method``, then ``Method.check_image_size``).

    Raises:
        ValueError / TypeError: an unknown method, or an option it does not declare or of the wrong type (named
            with the method; a flag given for it named too).
    """
    from ..methods.registry import RUN_ARGUMENTS
    from ..mixers._lam import refuse_alpha_with_lam

    spec = method_spec(cfg.method)
    kwargs = {k: v for k, v in method_kwargs(cfg, 2, 1, 0).items() if k not in RUN_ARGUMENTS}
    try:
        refuse_alpha_with_lam(kwargs, f"method {cfg.method!r}")
        spec.check({"loss": "ce", **kwargs})
    except (ValueError, TypeError) as err:
        given = flags_in(str(err), cfg, kwargs)
        if not given:
            raise
        raise type(err)(f"{err} (given as {given})") from err


def build_method(cfg: Config, model: nn.Module, num_classes: int, total_steps: int, seed: int) -> Method:
    """The training Method for ``cfg.method`` through ``create_method``, the library's one dispatcher.

    Raises:
        ValueError / TypeError: from ``create_method``: an unknown method, or a ``method_opts`` key the method
            does not declare or of the wrong type (named with the method), or a bad value; the message ends with
            the flags, ``--method-opt`` entries (and their config file) behind the options it names, and, for an
            error about the model, the run's ``--model`` (``method_hints``).
    """
    kwargs = method_kwargs(cfg, num_classes, total_steps, seed)
    check_required(cfg, kwargs)
    try:
        return create_method(cfg.method, model, **kwargs)
    except (ValueError, TypeError) as err:
        # The library names its option (``mode``, ``layer``, ``model``); the user gave a flag (``--mixup-mode``), a
        # ``--method-opt`` or a ``--model`` (perhaps by not giving one): name what they gave, and how to set what
        # the library asks for.
        given, hints = flags_in(str(err), cfg, kwargs), method_hints(str(err), cfg)
        if not given and not hints:
            raise
        raise type(err)(f"{err}" + (f" (given as {given})" if given else "") + (f" ({hints})" if hints else "")
                        ) from err


def method_hints(message: str, cfg: Config) -> str:
    """What a method's error about the model or an option it asks for means in the trainer's flags: the run's model
    (``model: CifarResNet has no attention module ...`` -> ``model: --model preact_resnet18, the default; a vision
    transformer: --model vit_tiny``) and the ``--method-opt`` of an option the message asks to give (``give
    patch_size=`` -> ``--method-opt patch_size=N``), or ``""``."""
    hints = []
    if re.match(r"model: ", message):  # the library's convention: the argument at fault first
        shown = setting(cfg, "model") if "model" in given_keys(cfg) else f"--model {cfg.model} (the default)"
        hint = f"model: {shown}"
        if re.search(r"\bViT\b|vision transformer", message) and not cfg.model.startswith(("vit_", "timm:")):
            hint += "; a vision transformer: --model vit_tiny (or vit_small)"
        hints.append(hint)
    try:
        options = method_spec(cfg.method).options
    except ValueError:
        options = {}
    asked = [k for k in re.findall(r"\bgive (\w+)=", message) if k in options and k not in cfg.method_opts]
    hints += [f"{k}= is --method-opt {k}=... (YAML method_opts: {{{k}: ...}})" for k in dict.fromkeys(asked)]
    return "; ".join(hints)


# An example value of a required method option, as --method-opt and YAML write it.
REQUIRED_EXAMPLES = {"mixers": ("[mixup,cutmix]", "[mixup, cutmix]")}


def check_required(cfg: Config, kwargs: dict[str, Any]) -> None:
    """Refuse a run whose method lacks an option it requires (``mix_choice``'s ``mixers``), naming how to give it.

    Raises:
        ValueError: ``method 'mix_choice' needs option mixers: give --method-opt mixers=[mixup,cutmix] (YAML
            method_opts: {mixers: [mixup, cutmix]})``.
    """
    try:
        options = method_spec(cfg.method).options
    except ValueError:
        return  # an unknown name: create_method says so, with the list of names
    missing = [k for k, o in options.items() if o.required and k not in kwargs]
    if missing:
        how = "; ".join(f"--method-opt {k}={REQUIRED_EXAMPLES.get(k, ('...',))[0]} (YAML method_opts: "
                        f"{{{k}: {REQUIRED_EXAMPLES.get(k, ('...', '...'))[1]}}})" for k in missing)
        raise ValueError(f"method {cfg.method!r} needs option {', '.join(missing)}: give {how}")


def flags_in(message: str, cfg: Config, kwargs: dict[str, Any]) -> str:
    """The flags behind the method options that ``message`` names, as the user gave them (``--mixup-mode 'pair'``,
    YAML ``mixup_mode``; ``--method-opt layer=blocks.3``, ``method_opts layer='blocks.3' (config file r.yaml)``),
    or ``""``: only flags given (``config.given_keys``, at any value) and passed as that option."""
    given = given_keys(cfg)
    found = []
    for key, flag in OPTS_WITH_A_FLAG.items():
        value = getattr(cfg, flag)
        if key not in kwargs or key in cfg.method_opts or flag not in given:
            continue
        if _names(message, key) and f"--{flag.replace('_', '-')}" not in message:
            found.append(f"--{flag.replace('_', '-')} {value!r}, YAML {flag}")
    # A --method-opt (or YAML method_opts entry) the message names: the library sees only its key.
    found += _opts_in(message, cfg, "method_opts")
    return "; ".join(found)


def build_optimizer(cfg: Config, method: Method) -> torch.optim.Optimizer:
    """SGD or AdamW over the method's parameter groups; the Mix Block group gets its own lr/momentum.

    With ``head_lr_scale`` other than 1, the parameters of the method's classifier heads
    (``Method.head_modules``: the model's head, AutoMix's mix head) leave their group for a ``"head"`` group
    of their own, at ``lr`` and ``min_lr`` times the scale; the Mix Block keeps its group. Groups are
    listed in a fixed order (the method's, each followed by its head share), so a checkpoint's optimiser
    state fits again on resume.

    Raises:
        ValueError: ``head_lr_scale`` is set but none of the trained parameters is in a head.
    """
    groups = []
    head_ids = set()
    if cfg.head_lr_scale != 1.0:
        head_ids = {id(p) for m in method.head_modules() for p in m.parameters()}
    for group in method.param_groups():
        g = dict(group)
        is_mb = g.get("name") == "mix_block"
        g["base_lr"] = cfg.mix_block_lr if is_mb and cfg.mix_block_lr is not None else cfg.lr
        g["min_lr"] = cfg.mix_block_min_lr if is_mb and cfg.mix_block_min_lr is not None else cfg.min_lr
        g["lr"] = g["base_lr"]
        if cfg.opt == "sgd" and is_mb and cfg.mix_block_momentum is not None:
            g["momentum"] = cfg.mix_block_momentum
        params = list(g["params"])
        heads = [] if is_mb else [p for p in params if id(p) in head_ids]
        if heads:
            g["params"] = [p for p in params if id(p) not in head_ids]
            head = {**g, "name": "head", "params": heads, "base_lr": g["base_lr"] * cfg.head_lr_scale,
                    "min_lr": g["min_lr"] * cfg.head_lr_scale, "lr": g["base_lr"] * cfg.head_lr_scale}
            groups += [g, head] if g["params"] else [head]
        else:
            groups.append(g)
    if head_ids and not any(g.get("name") == "head" for g in groups):
        raise ValueError(f"head_lr_scale {cfg.head_lr_scale!r}: none of the trained parameters is in a classifier "
                         "head of the model")
    if cfg.opt == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_schedule(cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> WarmupCosine:
    return WarmupCosine(optimizer, total_steps=cfg.epochs * steps_per_epoch,
                        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch), warmup_lr=cfg.warmup_lr,
                        cosine=cfg.sched == "cosine")


class ModelEma(nn.Module):
    """A weight-EMA copy of a network (``--model-ema``).

    Parameters and floating buffers (BN running statistics) are both averaged, as timm's ModelEma
    does: averaged weights with the live model's statistics would not match each other.
    With ``end_decay`` the decay follows AutoMix's EMA-encoder schedule instead of staying constant:
    ``decay`` for the first 10% of ``total_steps``, then a cosine to ``end_decay`` (``ema_momentum``).
    """

    def __init__(self, model: nn.Module, decay: float, end_decay: float | None = None,
                 total_steps: int | None = None) -> None:
        super().__init__()
        if end_decay is not None and total_steps is None:
            raise ValueError(f"ModelEma: end_decay={end_decay} needs total_steps")
        # Hooks copied along (AutoMix's head switch) check module identity, so they stay inert here.
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay, self.end_decay, self.total_steps = decay, end_decay, total_steps

    def decay_at(self, step: int) -> float:
        """The decay applied by the update after optimiser step ``step`` (0-based)."""
        if self.end_decay is None:
            return self.decay
        return ema_momentum(step, self.total_steps, self.decay, self.end_decay)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int = 0) -> None:
        """Average ``model`` in; ``step`` (the optimiser steps before this one) sets a scheduled decay."""
        dst, src = [], []
        for d, s in zip(self.module.parameters(), model.parameters()):
            dst.append(d)
            src.append(s.detach())
        for d, s in zip(self.module.buffers(), model.buffers()):
            if d.is_floating_point():
                dst.append(d)
                src.append(s)
            else:
                d.copy_(s)  # counters such as num_batches_tracked
        torch._foreach_lerp_(dst, src, 1.0 - self.decay_at(step))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)
