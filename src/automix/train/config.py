"""The run configuration: one typed dataclass, loadable from YAML, every field overridable by a flag.

Precedence: defaults < ``--config FILE`` (YAML) < command-line flags. The resolved config is
written as ``args.yaml`` into the run dir. Unknown keys and wrong types are errors naming the key.
Flag names mirror timm where timm has one (``--mixup``, ``--cutmix``, ``--cutmix-minmax``,
``--mixup-prob``, ``--mixup-switch-prob``, ``--mixup-mode``, ``--mixup-off-epoch``, ``--smoothing``); a YAML key is the
flag without dashes, with underscores (``mixup_prob``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import operator
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# Sections group the --help output; the field order is the order of the help text.
SECTIONS = {
    "data": ("dataset", "data_dir", "val_split", "eval_split", "split_seed", "img_size", "download", "cache_dir",
             "workers", "skip_bad_images", "subset", "pad", "flip"),
    "model": ("model", "pretrained", "initial_checkpoint", "width", "widen", "model_opts", "channels_last", "compile",
              "sync_bn"),
    "method": ("method", "alpha", "mixup_lam", "mixup", "cutmix", "cutmix_minmax", "mixup_prob", "mixup_switch_prob",
               "mixup_mode", "mixup_off_epoch", "smoothing", "method_opts"),
    "optimiser": ("opt", "lr", "head_lr_scale", "momentum", "nesterov", "weight_decay", "sched", "min_lr",
                  "warmup_epochs", "warmup_lr", "clip_grad", "mix_block_lr", "mix_block_momentum", "mix_block_min_lr"),
    "run": ("epochs", "batch_size", "eval_batch_size", "seed", "output", "resume", "amp", "model_ema",
            "model_ema_decay", "model_ema_end_decay", "eval_interval", "checkpoint_interval", "log_interval",
            "save_images", "tensorboard", "progress", "deterministic", "on_nan", "device", "threads", "dist_timeout",
            "sync_debug"),
}


@dataclass
class Config:
    """Every option of ``automix train``. See ``automix train --help`` for the text of each."""

    # data
    dataset: str = field(default="digits", metadata={"help": "dataset name (automix list)"})
    data_dir: str | None = field(default=None, metadata={"help": "dataset folder (not needed for digits)"})
    val_split: float = field(default=0.2, metadata={"help": "share of the training images held out for validation"})
    eval_split: str = field(default="val", metadata={"help": "evaluate on the carved 'val' split or the 'test' split"})
    split_seed: int = field(default=0, metadata={
        "help": "seed of the share held out of the training images, and of --subset's pick (fixed across runs)"})
    img_size: int | None = field(default=None, metadata={"help": "image side (dataset default if unset)"})
    download: bool = field(default=False, metadata={"help": "download the dataset when missing (CIFAR)"})
    cache_dir: str | None = field(default=None, metadata={"help": "where decoded images are cached"})
    workers: int = field(default=2, metadata={"help": "data loader worker processes for large-image folders"})
    skip_bad_images: bool = field(default=False, metadata={"help": "skip unreadable images and count them"})
    subset: int | None = field(default=None, metadata={"help": "train on a fixed random subset of this many images"})
    pad: int = field(default=4, metadata={"help": "random-crop padding in pixels (0 = no crop)"})
    flip: bool = field(default=True, metadata={"help": "random horizontal flips"})
    # model
    model: str = field(default="preact_resnet18", metadata={"help": "network (automix list)"})
    pretrained: bool = field(default=False, metadata={
        "help": "start from the published weights of a timm:/torchvision: model (from the library's cache, "
                "else downloaded); a new class count gets a new classifier head"})
    initial_checkpoint: str | None = field(default=None, metadata={
        "help": "start from the network weights in this file: a state dict (plain, or timm's / torchvision's, "
                "also under 'state_dict' or 'model'), or an automix last.pt / best.pt (its online network); "
                "a new class count gets a new classifier head"})
    width: int | None = field(default=None, metadata={"help": "first-stage channels of the ResNets (default 64)"})
    widen: int | None = field(default=None, metadata={"help": "widening factor of the WRNs"})
    model_opts: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "model options as KEY=VALUE (repeatable), e.g. the ViTs' patch_size, depth, drop_path_rate"})
    channels_last: bool = field(default=False, metadata={"help": "channels_last memory format"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    sync_bn: bool = field(default=False, metadata={"help": "SyncBatchNorm under DDP"})
    # method
    method: str = field(default="automix",
                        metadata={"help": "none, automix, samix, adautomix or any mixer (automix list)"})
    alpha: float | None = field(default=None,
                                metadata={"help": "Beta(alpha, alpha) of the method (its default if unset)"})
    mixup_lam: float | list[float] | dict[str, Any] | None = field(default=None, metadata={
        "help": "a given lambda instead of Beta(alpha, alpha), the method's lam option: a number in [0, 1] (fixed), "
                "[low, high] (uniform), or one of {beta: [a, b]}, {uniform: [lo, hi]}, "
                "{eps: [lo, hi]} (lam = (1 - eps) / (2 (1 + eps)), eps uniform), {fold: <any of these>} "
                "(max(lam, 1 - lam)); YAML syntax on the command line too"})
    mixup: float | None = field(default=None, metadata={
        "help": "timm: mixup alpha, 0 = off (with --method mixup_cutmix, where unset is 0, or transmix, where unset "
                "is its 0.8)"})
    cutmix: float | None = field(default=None, metadata={
        "help": "timm: cutmix alpha, 0 = off (with --method mixup_cutmix, where unset is 0, or transmix, where unset "
                "is its 1.0)"})
    cutmix_minmax: list[float] | None = field(default=None, metadata={"help": "timm: cutmix box min/max ratio"})
    mixup_prob: float = field(default=1.0, metadata={"help": "timm: chance a batch (or sample) is mixed"})
    mixup_switch_prob: float | None = field(default=None, metadata={
        "help": "timm: chance of cutmix when both are on (unset: 0.5 for mixup_cutmix, 0.8 for transmix)"})
    mixup_mode: str = field(default="batch", metadata={"help": "timm: batch, pair or elem"})
    mixup_off_epoch: int = field(default=0, metadata={
        "help": "timm: from this epoch on, train on clean images with the plain loss (0 = mix to the end); "
                "AutoMix / SAMix keep their EMA encoder following the online network"})
    smoothing: float = field(default=0.0, metadata={"help": "label smoothing"})
    method_opts: dict[str, Any] = field(default_factory=dict,
                                        metadata={"help": "method options as KEY=VALUE (repeatable)"})
    # optimiser and schedule
    opt: str = field(default="sgd", metadata={"help": "sgd or adamw"})
    lr: float = field(default=0.1, metadata={"help": "peak learning rate"})
    head_lr_scale: float = field(default=1.0, metadata={
        "help": "the classifier heads' lr is --lr (and --min-lr) times this, e.g. 10 to fine-tune a network "
                "at a low --lr while its new head learns fast"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    nesterov: bool = field(default=False, metadata={"help": "Nesterov momentum"})
    weight_decay: float = field(default=5e-4, metadata={"help": "weight decay"})
    sched: str = field(default="cosine", metadata={"help": "cosine or none"})
    min_lr: float = field(default=0.0, metadata={"help": "learning rate at the end of the cosine"})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warm-up epochs"})
    warmup_lr: float = field(default=0.0, metadata={"help": "learning rate at the start of the warm-up"})
    clip_grad: float | None = field(default=None, metadata={"help": "clip the gradient norm to this value"})
    mix_block_lr: float | None = field(default=None, metadata={"help": "Mix Block peak lr (default: --lr)"})
    mix_block_momentum: float | None = field(default=None, metadata={"help": "Mix Block SGD momentum"})
    mix_block_min_lr: float | None = field(default=None, metadata={"help": "Mix Block final lr (default: --min-lr)"})
    # run
    epochs: int = field(default=30, metadata={"help": "training epochs"})
    batch_size: int = field(default=64, metadata={"help": "batch size per process"})
    eval_batch_size: int = field(default=256, metadata={"help": "evaluation batch size"})
    seed: int = field(default=0, metadata={"help": "seed of everything random (plus the rank under DDP)"})
    output: str = field(default="runs/automix", metadata={"help": "the run dir (args.yaml, checkpoints, logs)"})
    resume: str | None = field(default=None, metadata={
        "help": "checkpoint to continue from ('auto' = output/last.pt), with the run's own options: those not given "
                "are taken from it; --epochs and how-to-run options may change, the others must match"})
    amp: str | None = field(default=None, metadata={"help": "autocast dtype: bf16 or fp16"})
    model_ema: bool = field(default=False, metadata={"help": "keep a weight-EMA copy of the evaluated net"})
    model_ema_decay: float = field(default=0.999, metadata={"help": "weight-EMA decay per step"})
    model_ema_end_decay: float | None = field(default=None, metadata={
        "help": "weight-EMA decay at the end, cosine from --model-ema-decay as AutoMix's EMA encoder "
                "(default: constant)"})
    eval_interval: int = field(default=1, metadata={"help": "evaluate every N epochs (and always after the last)"})
    checkpoint_interval: int = field(default=0, metadata={"help": "also checkpoint every N steps (0 = per epoch)"})
    log_interval: int = field(default=20, metadata={"help": "steps between progress updates"})
    save_images: bool = field(default=True, metadata={"help": "PNG grid of mixed samples each epoch"})
    tensorboard: bool = field(default=False, metadata={"help": "TensorBoard logs (needs tensorboard)"})
    progress: bool = field(default=True, metadata={"help": "progress bar"})
    deterministic: bool = field(default=False, metadata={"help": "torch.use_deterministic_algorithms"})
    on_nan: str = field(default="stop", metadata={"help": "non-finite loss: stop, or skip the step"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 ... (default: cuda if available)"})
    threads: int | None = field(default=None, metadata={
        "help": "CPU threads torch uses per process (torch.set_num_threads; default: torch's, one per core). "
                "On a shared machine use 1 or the cores left free"})
    dist_timeout: float = field(default=600.0, metadata={"help": "seconds before a stuck collective fails"})
    sync_debug: str | None = field(default=None, metadata={
        "help": "CUDA: report host synchronisations inside the training step (torch.cuda.set_sync_debug_mode; not "
                "logging or evaluation): warn counts them by source line into metrics.json, error raises at the "
                "first; nothing to check on other devices"})


CHOICES = {"eval_split": ("val", "test"), "mixup_mode": ("batch", "pair", "elem"), "opt": ("sgd", "adamw"),
           "sched": ("cosine", "none"), "amp": (None, "bf16", "fp16"), "on_nan": ("stop", "skip"),
           "sync_debug": (None, "warn", "error")}


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in fields(Config)}


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return functools.reduce(operator.or_, rest), True  # one type, or the union of the rest
    return tp, False


# A number PyYAML leaves as a string: YAML 1.1 wants a dot in a float, so `lr: 1e-3` reads as "1e-3".
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


_INT_TEXT = re.compile(r"[-+]?\d+")


def number_text(value: Any) -> Any:
    """``value`` as a number when it is a string written as one: an int for integer text (``"3"``), else a float
    (``"1e-3"``, ``"0.5"``); anything else unchanged. A quoted number is read as the number it writes, for a
    float option and an int option alike.

    Example:
        >>> number_text("3"), number_text("1e-3"), number_text("layer3")
        (3, 0.001, 'layer3')
    """
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value)
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        return float(value)
    return value


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the field type ``tp``; ints are accepted for floats. Errors name ``key``."""
    base, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise TypeError(f"{key} must not be null")
    origin = typing.get_origin(base)
    if origin in (typing.Union, types.UnionType):  # the first type the value fits (mixup_lam: 0.2, [lo, hi], {...})
        for option in typing.get_args(base):
            try:
                return coerce(key, value, option)
            except TypeError:
                continue
        raise TypeError(f"{key} must be {' or '.join(_type_name(a) for a in typing.get_args(base))}, got {value!r}")
    if base is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{key} must be true or false, got {value!r}")
        return value
    if base is int:
        number = number_text(value)  # a quoted integer ("2") as the float fields read a quoted number
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(f"{key} must be an integer, got {value!r}")
        return number
    if base is float:
        value = number_text(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{key} must be a number, got {value!r}")
        if math.isnan(value):
            raise ValueError(f"{key} must not be NaN")
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise TypeError(f"{key} must be a string, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(base)
        return [coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise TypeError(f"{key} must be a mapping of names to values, got {value!r}")
        return {k: number_text(v) for k, v in value.items()}
    raise TypeError(f"{key}: unsupported type {tp}")  # pragma: no cover - a bug in Config


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false", list: "a list",
            dict: "a mapping"}.get(origin or tp, str(tp))


def validate(cfg: Config, conflicts: bool = True) -> Config:
    """Range checks that types cannot express; each error names the option and the value.

    The option is named as it was given (``option_name``): its flag (``--val-split must be in [0, 1), got 1.5``)
    when from the command line, its key and config file when from one, else its key.
    ``conflicts=False`` skips ``check_conflicts``: a finished run's recorded config is read as it was.
    """

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ValueError(f"{option_name(cfg, key)} must be {what}, got {getattr(cfg, key)!r}{_from(cfg, key)}")

    for key, choices in CHOICES.items():
        need(getattr(cfg, key) in choices, key, f"one of {[c for c in choices if c is not None]}")
    need(0.0 <= cfg.val_split < 1.0, "val_split", "in [0, 1)")
    need(cfg.epochs >= 1, "epochs", ">= 1")
    need(cfg.batch_size >= 1, "batch_size", ">= 1")
    need(cfg.eval_batch_size >= 1, "eval_batch_size", ">= 1")
    need(cfg.lr > 0 and math.isfinite(cfg.lr), "lr", "a finite number > 0")
    need(cfg.head_lr_scale > 0 and math.isfinite(cfg.head_lr_scale), "head_lr_scale", "a finite number > 0")
    need(cfg.initial_checkpoint is None or cfg.initial_checkpoint != "", "initial_checkpoint", "a file path")
    need(0.0 <= cfg.min_lr <= cfg.lr, "min_lr", "in [0, lr]")
    need(cfg.momentum >= 0, "momentum", ">= 0")
    need(cfg.weight_decay >= 0, "weight_decay", ">= 0")
    need(cfg.warmup_epochs >= 0, "warmup_epochs", ">= 0")
    need(cfg.warmup_lr >= 0, "warmup_lr", ">= 0")
    need(cfg.clip_grad is None or cfg.clip_grad > 0, "clip_grad", "> 0 (or unset)")
    need(cfg.alpha is None or (cfg.alpha > 0 and math.isfinite(cfg.alpha)), "alpha", "a finite number > 0")
    if cfg.mixup_lam is not None:
        from ..mixers._lam import lam_sampler

        # ValueError / TypeError naming mixup_lam (its flag when given as one) and the value, and its config file
        try:
            lam_sampler(cfg.mixup_lam, option_name(cfg, "mixup_lam"))
        except (ValueError, TypeError) as err:
            if not _from(cfg, "mixup_lam"):
                raise
            raise type(err)(f"{err}{_from(cfg, 'mixup_lam')}") from None
    need(cfg.mixup is None or cfg.mixup >= 0, "mixup", ">= 0 (or unset)")
    need(cfg.cutmix is None or cfg.cutmix >= 0, "cutmix", ">= 0 (or unset)")
    need(0.0 <= cfg.mixup_prob <= 1.0, "mixup_prob", "in [0, 1]")
    need(cfg.mixup_switch_prob is None or 0.0 <= cfg.mixup_switch_prob <= 1.0, "mixup_switch_prob",
         "in [0, 1] (or unset)")
    need(0.0 <= cfg.smoothing < 1.0, "smoothing", "in [0, 1)")
    need(cfg.cutmix_minmax is None or (len(cfg.cutmix_minmax) == 2 and 0 < cfg.cutmix_minmax[0]
                                       <= cfg.cutmix_minmax[1] <= 1), "cutmix_minmax", "two ratios 0 < min <= max <= 1")
    need(0.0 < cfg.model_ema_decay < 1.0, "model_ema_decay", "in (0, 1)")
    need(cfg.model_ema_end_decay is None or 0.0 < cfg.model_ema_end_decay < 1.0, "model_ema_end_decay",
         "in (0, 1) (or unset)")
    need(cfg.workers >= 0, "workers", ">= 0")
    need(cfg.mixup_off_epoch >= 0, "mixup_off_epoch", ">= 0 (0 = never)")
    need(cfg.pad >= 0, "pad", ">= 0")
    need(cfg.subset is None or cfg.subset >= 1, "subset", ">= 1 (or unset)")
    need(cfg.img_size is None or cfg.img_size >= 4, "img_size", ">= 4 (or unset)")
    need(cfg.width is None or cfg.width >= 1, "width", ">= 1 (or unset)")
    need(cfg.widen is None or cfg.widen >= 1, "widen", ">= 1 (or unset)")
    need(cfg.checkpoint_interval >= 0, "checkpoint_interval", ">= 0")
    need(cfg.eval_interval >= 1, "eval_interval", ">= 1")
    need(cfg.log_interval >= 1, "log_interval", ">= 1")
    need(cfg.dist_timeout > 0, "dist_timeout", "> 0")
    need(cfg.threads is None or cfg.threads >= 1, "threads", ">= 1 (or unset)")
    for key in ("mix_block_lr", "mix_block_min_lr", "mix_block_momentum"):
        need(getattr(cfg, key) is None or getattr(cfg, key) >= 0, key, ">= 0 (or unset)")
    need((cfg.method != "mixup_cutmix") or (cfg.mixup or 0) > 0 or (cfg.cutmix or 0) > 0
         or cfg.cutmix_minmax is not None, "method",
         "given --mixup, --cutmix or --cutmix-minmax when it is mixup_cutmix")
    _unset_legacy_switch(cfg)
    if conflicts:
        check_conflicts(cfg)
    _fill_switch(cfg)
    return cfg


# method_opts keys that an option of their own also sets: giving both is a conflict (which one wins?).
OPTS_WITH_A_FLAG = {"label_smoothing": "smoothing", "alpha": "alpha", "prob": "mixup_prob", "mode": "mixup_mode",
                    "mixup_alpha": "mixup", "cutmix_alpha": "cutmix", "switch_prob": "mixup_switch_prob",
                    "cutmix_minmax": "cutmix_minmax", "lam": "mixup_lam"}
OPTS_SET_BY_THE_TRAINER = ("model", "num_classes", "total_steps", "seed", "generator")
# model_opts keys that the trainer or a flag of their own sets (build.build_model).
MODEL_OPTS_SET_ELSEWHERE = {"num_classes": "is set by the trainer (from the dataset)",
                            "in_chans": "is set by the trainer (from the dataset)",
                            "img_size": "is set by --img-size (the ViTs are built for the images' side)",
                            "width": "has its own option, --width", "widen": "has its own option, --widen"}
# the rest take alpha (Beta(alpha, alpha)); transmix takes timm's --mixup and --cutmix alphas; smmix draws its square's
# side (its mixup steps' alpha is --method-opt mixup_alpha)
NO_ALPHA = ("none", "vanilla", "mixup_cutmix", "mix_choice", "transmix", "smmix")
# timm's Mixup/CutMix switch flags: a method takes them when it declares their options (mixup_cutmix, transmix).
# Unset (None) is the method's own value; validate() writes the value the run uses into the config (_fill_switch), so
# args.yaml, the checkpoint and --resume hold what ran, and method_kwargs passes every one that is set.
SWITCH_FLAGS = ("mixup", "cutmix", "cutmix_minmax", "mixup_switch_prob")
SWITCH_OPTIONS = ("mixup_alpha", "cutmix_alpha", "switch_prob")
# What an unset switch flag is for mixup_cutmix, timm's switch itself: timm's train.py defaults (an alpha not given
# is off), not its factory's mixup_alpha=1.0 (timm's Mixup class). Other methods take their declared defaults.
TIMM_SWITCH_DEFAULTS = {"mixup": 0.0, "cutmix": 0.0, "mixup_switch_prob": 0.5}
# What versions before the unset (None) switch flags wrote for them when none was given (an args.yaml, a
# checkpoint's config, a bench.yaml): every run of those versions with these four values ran the method's own.
LEGACY_SWITCH_DEFAULTS = {"mixup": 0.0, "cutmix": 0.0, "cutmix_minmax": None, "mixup_switch_prob": 0.5}


def takes_switch_flags(options: Any) -> bool:
    """Whether a method with these declared options is a timm-style Mixup/CutMix switch."""
    return all(key in options for key in SWITCH_OPTIONS)


def _switch_options(method: str) -> dict[str, Any] | None:
    """The declared options of ``method`` when it takes timm's switch flags, else None (an unknown name too)."""
    from ..methods import method_spec

    try:
        options = method_spec(method).options
    except ValueError:
        return None
    return options if takes_switch_flags(options) else None


def switch_defaults(method: str) -> dict[str, Any]:
    """The value of each switch flag (``SWITCH_FLAGS``) that a run of ``method`` uses when the flag is unset, or
    ``{}`` for a method that does not take them.

    Example:
        >>> switch_defaults("transmix")
        {'mixup': 0.8, 'cutmix': 1.0, 'cutmix_minmax': None, 'mixup_switch_prob': 0.8}
        >>> switch_defaults("mixup_cutmix")
        {'mixup': 0.0, 'cutmix': 0.0, 'cutmix_minmax': None, 'mixup_switch_prob': 0.5}
    """
    options = _switch_options(method)
    if options is None:
        return {}
    if method == "mixup_cutmix":
        return {flag: TIMM_SWITCH_DEFAULTS.get(flag) for flag in SWITCH_FLAGS}
    by_option = {flag: key for key, flag in OPTS_WITH_A_FLAG.items()}
    found = {flag: options[by_option[flag]].default for flag in SWITCH_FLAGS}
    if found["cutmix_minmax"] is not None:
        found["cutmix_minmax"] = list(found["cutmix_minmax"])
    return found


def _unset_legacy_switch(cfg: Config) -> None:
    """Read an older version's record of unset switch flags (``LEGACY_SWITCH_DEFAULTS``, all four, none of them a
    flag given now) as unset, which is what those runs used."""
    if all(getattr(cfg, k) == v and getattr(cfg, "_sources", {}).get(k) != COMMAND_LINE
           for k, v in LEGACY_SWITCH_DEFAULTS.items()):
        for key in ("mixup", "cutmix", "mixup_switch_prob"):
            setattr(cfg, key, None)


def _fill_switch(cfg: Config) -> None:
    """Write the value the run uses into each unset switch flag of a method that takes them (``switch_defaults``), so
    that the config records what ran; a method that does not take them keeps them unset."""
    for key, value in switch_defaults(cfg.method).items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)


def check_conflicts(cfg: Config) -> None:
    """Refuse an option that this config would drop silently (it would still be recorded in args.yaml).

    An option counts as given when it differs from its default; the error names it and the option that
    makes it void.
    """
    from ..methods import method_spec

    default = Config()

    def given(key: str) -> bool:
        return getattr(cfg, key) != getattr(default, key)

    def refuse(key: str, why: str) -> None:
        raise ValueError(f"{setting(cfg, key)} {why}; drop one of the two")

    method = cfg.method
    try:
        spec = method_spec(method)
    except ValueError:
        spec = None  # an unknown name: create_method says so, with the list of names
    options = spec.options if spec is not None else {}
    learned = spec is not None and spec.kind == "learned"
    switch = takes_switch_flags(options)
    for key in SWITCH_FLAGS:
        if given(key) and not switch:
            alt = " (for its own alpha give --alpha)" if key in ("mixup", "cutmix") and method not in NO_ALPHA else ""
            own = {flag: opt for opt, flag in OPTS_WITH_A_FLAG.items()}[key]
            if own in options:  # mixpro's and smmix's switch_prob and mixup_alpha mean their own switch
                alt = f" (its own {own} is --method-opt {own}=...)"
            refuse(key, f"applies only to method 'mixup_cutmix' (timm's Mixup/CutMix switch) and 'transmix', not to "
                        f"method {method!r}{alt}")
    if given("alpha") and method in NO_ALPHA:
        alt = ": give --mixup and --cutmix alphas" if switch else ""
        refuse("alpha", f"does not apply to method {method!r}{alt}")
    if given("alpha") and given("mixup_lam"):
        refuse("alpha", "is not used when mixup_lam gives lambda")
    for key, option in (("mixup_prob", "prob"), ("mixup_mode", "mode"), ("mixup_lam", "lam")):
        if given(key) and spec is not None and option not in options:
            what = "the input mixers" if key != "mixup_lam" else \
                f"the methods that draw lambda ({', '.join(_lam_methods())})"
            refuse(key, f"applies to {what}, not to method {method!r}")
    if given("mixup_off_epoch"):
        if spec is not None and spec.kind == "vanilla":
            refuse("mixup_off_epoch", f"stops mixing, but method {method!r} mixes nothing")
        if cfg.mixup_off_epoch >= cfg.epochs:
            raise ValueError(f"{option_name(cfg, 'mixup_off_epoch')} must be below epochs ({cfg.epochs}): mixing "
                             f"stops from that epoch and the run's epochs are 0 to {cfg.epochs - 1}; got "
                             f"{cfg.mixup_off_epoch}")
    for key in ("mix_block_lr", "mix_block_momentum", "mix_block_min_lr"):
        if given(key) and not learned:
            refuse(key, f"applies to a Mix Block (method automix, samix or adautomix), not to method {method!r}")
    for key, flag in OPTS_WITH_A_FLAG.items():
        if key in cfg.method_opts and given(flag):
            raise ValueError(f"method_opts {key}={cfg.method_opts[key]!r} and {flag} {getattr(cfg, flag)!r} "
                             f"(--{flag.replace('_', '-')}) set the same thing; give it once")
    for key, why in MODEL_OPTS_SET_ELSEWHERE.items():
        if key in cfg.model_opts:
            raise ValueError(f"model_opts {key}={cfg.model_opts[key]!r} {why}, not a model option")
    for key in OPTS_SET_BY_THE_TRAINER:
        if key in cfg.method_opts:
            raise ValueError(f"method_opts {key}={cfg.method_opts[key]!r} is set by the trainer, not an option")
    if cfg.opt == "adamw":
        for key in ("momentum", "nesterov", "mix_block_momentum"):
            if given(key):
                refuse(key, "applies to opt 'sgd', not to opt 'adamw'")
    if given("nesterov") and cfg.momentum == 0:
        refuse("nesterov", "needs momentum > 0, but momentum is 0")
    if cfg.sched == "none":
        for key in ("min_lr", "mix_block_min_lr"):
            if given(key):
                refuse(key, "is where the cosine ends, but sched is 'none'")
    if given("warmup_lr") and cfg.warmup_epochs == 0:
        refuse("warmup_lr", "is where the warm-up starts, but warmup_epochs is 0")
    if not cfg.model_ema:
        for key in ("model_ema_decay", "model_ema_end_decay"):
            if given(key):
                refuse(key, "applies to the weight EMA, but model_ema is off (give --model-ema)")
    if cfg.eval_split == "test" and cfg.val_split not in (0.0, default.val_split):
        refuse("val_split", "holds images out for validation, but eval_split 'test' evaluates on the test split "
                            "and trains on every training image")
    if cfg.pretrained and cfg.initial_checkpoint is not None:
        refuse("initial_checkpoint", f"and {option_name(cfg, 'pretrained')} both give the starting weights")
    if cfg.pretrained and not cfg.model.startswith(("timm:", "torchvision:")):
        raise ValueError(f"{option_name(cfg, 'pretrained')}: model {cfg.model!r} has no published weights "
                         "(--pretrained takes them from "
                         "timm or torchvision, for a 'timm:<name>' or 'torchvision:<name>' model); start from a "
                         "file of your own with --initial-checkpoint FILE (e.g. a run's best.pt)")
    if cfg.dataset == "digits" and given("data_dir"):
        refuse("data_dir", "is not read: the digits dataset is built in (give another --dataset)")


def _lam_methods() -> list[str]:
    """The methods that take a given lambda (declare ``lam``), the input mixers as one entry when all of them do."""
    from ..methods import list_methods, method_spec

    takes = [m for m in list_methods() if "lam" in method_spec(m).options]
    mixers = list_methods("mixer")
    if all(m in takes for m in mixers):
        takes = ["the input mixers"] + [m for m in takes if m not in mixers]
    return takes


COMMAND_LINE = "command line"


def set_sources(cfg: Config, sources: dict[str, str]) -> Config:
    """Record where ``cfg``'s given values came from (``{key: "command line" | "config file PATH"}``); returns ``cfg``.

    ``args.config_from_args`` records them; messages (``setting``) and ``--resume`` (``given_keys``) read them. The
    record is an attribute of this one object, not a field: it is not written to args.yaml or a checkpoint, and a
    copy (``dataclasses.replace``) has none.
    """
    object.__setattr__(cfg, "_sources", dict(sources))
    return cfg


def given_keys(cfg: Config) -> dict[str, str]:
    """The options given for ``cfg`` and where from: the recorded sources (``set_sources``), else, for a Config
    built in code, every option that differs from its default (``"code"``)."""
    recorded = getattr(cfg, "_sources", None)
    if recorded is not None:
        return dict(recorded)
    default = Config()
    return {f.name: "code" for f in fields(Config) if getattr(cfg, f.name) != getattr(default, f.name)}


def flag_name(key: str) -> str:
    """The command-line flag of option ``key``: ``val_split`` -> ``--val-split``."""
    return {"method_opts": "--method-opt", "model_opts": "--model-opt"}.get(key, "--" + key.replace("_", "-"))


def option_name(cfg: Config, key: str) -> str:
    """Option ``key`` as messages name it: its flag (``--val-split``) when ``cfg`` took it from the command line
    (``set_sources``), else its key (a config file, a checkpoint's config, a Config built in code)."""
    return flag_name(key) if getattr(cfg, "_sources", {}).get(key) == COMMAND_LINE else key


def _from(cfg: Config, key: str) -> str:
    """`` (config file r.yaml)`` when option ``key`` of ``cfg`` came from a config file, else ""."""
    source = getattr(cfg, "_sources", {}).get(key)
    return f" ({source})" if source and source != COMMAND_LINE else ""


def setting(cfg: Config, key: str, value: Any = dataclasses.MISSING) -> str:
    """Option ``key`` of ``cfg`` (or ``value``) as messages name it, with where it came from.

    ``"--val-split 0.1"`` when it was given on the command line, ``"val_split 0.0 (config file r.yaml)"`` from a
    config file, else ``"val_split 0.2"``.

    Example:
        >>> cfg = set_sources(Config(val_split=0.0), {"val_split": "config file r.yaml"})
        >>> setting(cfg, "val_split")
        'val_split 0.0 (config file r.yaml)'
    """
    value = getattr(cfg, key) if value is dataclasses.MISSING else value
    source = getattr(cfg, "_sources", {}).get(key)
    if source == COMMAND_LINE:
        if isinstance(value, bool):
            return flag_name(key) if value else "--no-" + flag_name(key)[2:]
        if isinstance(value, (list, tuple)):  # as typed: --cutmix-minmax 0.2 0.8
            return f"{flag_name(key)} {' '.join(map(str, value))}"
        return f"{flag_name(key)} {value}"
    return f"{key} {value!r}" + (f" ({source})" if source else "")


def from_dict(values: dict[str, Any], base: Config | None = None, source: str = "config") -> Config:
    """A Config from ``base`` (defaults if None) with ``values`` applied; unknown keys are errors.

    ``source`` says where ``values`` came from, for the errors: ``"command line"`` (a wrong value is named by its
    flag: ``--mixup-lam must be ..., got 'high'``), or a description such as ``"config file r.yaml"`` (named by its
    key, with the source after the message).

    Raises:
        ValueError: an unknown key, or a NaN number.
        TypeError: a value of the wrong type.
    """
    if not isinstance(values, dict):
        raise TypeError(f"{source} must be a mapping of keys to values, got {type(values).__name__}")
    types_ = _field_types()
    unknown = sorted(set(values) - set(types_))
    if unknown:
        hint = "; ".join(f"{k} (did you mean {near}?)" if (near := nearest_key(k)) else k for k in unknown)
        raise ValueError(f"unknown key(s) in {source}: {hint}")
    checked = {}
    for k, v in values.items():
        # a value typed as a flag is named by that flag; one from a file by its key and the file
        name = flag_name(k) if source == COMMAND_LINE else k
        try:
            checked[k] = coerce(name, v, types_[k])
        except (TypeError, ValueError) as e:
            if source in (COMMAND_LINE, "config"):
                raise
            raise type(e)(f"{e} ({source})") from None
    return dataclasses.replace(base or Config(), **checked)


def nearest_key(key: str) -> str | None:
    """The Config field a mistyped ``key`` most likely means (``method_opt`` -> ``method_opts``), or None."""
    names = list(_field_types())
    flat = {n.replace("_", ""): n for n in names}
    same = flat.get(str(key).replace("_", "").replace("-", ""))
    if same:
        return same
    near = difflib.get_close_matches(str(key).replace("-", "_"), names, n=1, cutoff=0.75)
    return near[0] if near else None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (errors name the file)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TypeError(f"config file {path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def to_yaml(cfg: Config) -> str:
    import yaml

    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
