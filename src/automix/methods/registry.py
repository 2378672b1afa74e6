"""String registry of training methods: ``register_method``, ``create_method``, ``list_methods``.

One dispatcher for every method. A method is registered with its kind and its options, and the options
are declared once, by the typed signature of its constructor (``automix._options``): ``create_method``
checks the user's options against that declaration before building, so a mistyped key or a value of the
wrong type fails with the key and the method named, whatever the method. The trainer's ``build_method``
only turns its ``Config`` into keyword arguments for ``create_method``.

Every registered mixer is a method of the same name (``MixerMethod`` around it), kind ``"mixer"``, or
``"model-aware"`` when the mixer needs a context from the model (``BaseMixer.needs``); its options are the
mixer's plus ``loss``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .._options import Option, check_options, signature_options
from ..losses import LOSS_OPTIONS, TargetLoss, resolve_loss
from ..mixers import BaseMixer, create_mixer, list_mixers
from ..mixers._lam import refuse_alpha_with_lam
from ..mixers.registry import mixer_factory
from .base import Method, MixerMethod

KINDS = ("vanilla", "mixer", "model-aware", "learned")
# create_method's own keywords: every method takes them, and the trainer (not an option) sets all but loss.
RUN_ARGUMENTS = ("num_classes", "total_steps", "seed")
_NOT_OPTIONS = ("self", "model", "mixer", "generator") + RUN_ARGUMENTS
# The options of the losses (DecoupleMix's decouple_eta, ...): every method declares them beside ``loss``, and
# create_method turns ``loss`` and them into one ``automix.losses.TargetLoss`` for the method.
_LOSS_OPTIONS = {key: Option(key, float if isinstance(default, float) else str, default)
                 for opts in LOSS_OPTIONS.values() for key, (_, default) in opts.items()}


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes:
        name: the name ``create_method`` takes.
        kind: ``"vanilla"``, ``"mixer"`` (input-space mixer), ``"model-aware"`` (mixer + context from the
            model) or ``"learned"`` (trains a part of its own, e.g. a Mix Block).
        build: ``build(model, *, num_classes, total_steps, seed, loss, **options) -> Method``.
        options: the options a user may set, by name (type and default from the constructor's signature).
        aliases: old option names still accepted, mapped to their current names.
    """

    name: str
    kind: str
    build: Callable[..., Method]
    options: dict[str, Option]
    aliases: dict[str, str] = field(default_factory=dict)

    def check(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with aliases renamed, checked against the declaration (``ValueError`` / ``TypeError``
        naming the key and this method)."""
        renamed: dict[str, Any] = {}
        given_as: dict[str, str] = {}
        for key, value in options.items():
            new = self.aliases.get(key, key)
            if new in renamed:
                first, second = sorted((given_as[new], key), key=lambda k: k == new)  # the old name first
                raise ValueError(f"options {first!r} and {second!r} of method {self.name!r} set the same thing; "
                                 f"give one")
            renamed[new], given_as[new] = value, key
        check_options(renamed, self.options, f"method {self.name!r}")
        return renamed


_METHODS: dict[str, MethodSpec] = {}
_NAME_ALIASES = {"vanilla": "none"}


def register_method(name: str, *, kind: str = "learned", options: dict[str, Option] | None = None,
                    aliases: dict[str, str] | None = None) -> Callable:
    """Class / factory decorator registering a method under ``name``.

    The factory is called as ``factory(model, num_classes=..., total_steps=..., seed=..., loss=..., **options)``.
    ``options`` defaults to the factory's keyword parameters (following ``**kwargs`` up a class's MRO) minus
    ``model``, ``num_classes``, ``total_steps``, ``seed`` and ``generator``.

    Raises:
        ValueError: ``name`` is taken (by a method or a mixer) or ``kind`` is not one of ``KINDS``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def wrap(factory: Callable[..., Method]) -> Callable[..., Method]:
        if name in _METHODS or name in list_mixers() or name in _NAME_ALIASES:
            raise ValueError(f"a method named {name!r} is already registered")
        declared = options if options is not None else {
            k: v for k, v in signature_options(factory).items() if k not in _NOT_OPTIONS}
        declared = {**declared, **_LOSS_OPTIONS}
        _METHODS[name] = MethodSpec(name, kind, factory, dict(declared), dict(aliases or {}))
        return factory

    return wrap


def list_methods(kind: str | None = None) -> list[str]:
    """Every name ``create_method`` accepts (``"none"``, the learned methods, then every mixer), or those of
    one ``kind``."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    names = sorted(_METHODS, key=lambda n: (KINDS.index(_METHODS[n].kind), n)) + list_mixers()
    return [n for n in names if kind is None or method_spec(n).kind == kind]


def method_spec(name: str) -> MethodSpec:
    """The registration of method ``name`` (a registered mixer name gives its ``MixerMethod`` spec).

    Raises:
        ValueError: no method is called ``name``.
    """
    if isinstance(name, str):
        name = _NAME_ALIASES.get(name, name)
        if name in _METHODS:
            return _METHODS[name]
        if name in list_mixers():
            return _mixer_spec(name)
    raise ValueError(f"name must be one of {list_methods()}, got {name!r}")


def create_method(name: str, model: nn.Module, *, num_classes: int | None = None, total_steps: int | None = None,
                  seed: int | None = None, loss: str = "ce", **options: Any) -> Method:
    """Build the Method called ``name`` around ``model``.

    Args:
        name: one of ``list_methods()`` (``"vanilla"`` is ``"none"``).
        model: the classifier to train.
        num_classes, total_steps, seed: see ``Method`` (the trainer sets them).
        loss: ``"ce"``, ``"bce"`` or ``"decouplemix"``, the same for every method (``automix.losses.target_loss``);
            DecoupleMix's options ``decouple_eta`` (0.1), ``decouple_mode`` ("both"), ``decouple_thr`` (0.5) are
            options of every method too (``--method-opt loss=decouplemix --method-opt decouple_eta=0.01``).
        **options: the method's own options (``method_spec(name).options``).

    Raises:
        ValueError: unknown ``name``, an option the method does not declare (the error names it and the
            method), or a bad value (the constructor names the argument).
        TypeError: an option of the wrong type (the error names it and the method).

    >>> import automix
    >>> model = automix.create_model("preact_resnet18", num_classes=10, width=4)
    >>> automix.create_method("cutmix", model, num_classes=10, alpha=0.2).mixer.alpha
    0.2
    >>> automix.create_method("cutmix", model, num_classes=10, alpah=0.2)
    Traceback (most recent call last):
    ...
    ValueError: unknown option(s) ['alpah'] for method 'cutmix'; it takes [...]
    """
    spec = method_spec(name)
    refuse_alpha_with_lam(options, f"method {name!r}")
    options = spec.check({"loss": loss, **options})  # loss is every method's option, checked like the rest
    loss_options = {k: options.pop(k) for k in _LOSS_OPTIONS if k in options}
    options["loss"] = resolve_loss(options["loss"], **loss_options)
    return spec.build(model, num_classes=num_classes, total_steps=total_steps, seed=seed, **options)


@register_method("none", kind="vanilla")
def vanilla(model: nn.Module, *, num_classes: int | None = None, loss: str | TargetLoss = "ce",
            label_smoothing: float = 0.0, total_steps: int | None = None, seed: int | None = None) -> Method:
    """Training without mixing (``MixerMethod`` with no mixer)."""
    return MixerMethod(model, None, num_classes=num_classes, loss=loss, label_smoothing=label_smoothing,
                       total_steps=total_steps, seed=seed)


_MIXER_SPECS: dict[str, MethodSpec] = {}


def _mixer_spec(name: str) -> MethodSpec:
    """The method spec of mixer ``name``: its options (``BaseMixer``'s under a factory's ``**kwargs``) + ``loss``."""
    factory = mixer_factory(name)
    spec = _MIXER_SPECS.get(name)
    if spec is not None and spec.build.factory is factory:
        return spec
    options = signature_options(factory)
    if not isinstance(factory, type):
        # A factory function's **kwargs go to the mixer it builds: BaseMixer's shared, keyword-only options
        # (its alphas are its own parameters).
        shared = signature_options(BaseMixer)
        options = {**{k: v for k, v in shared.items() if k != "alpha"}, **options}
    options = {k: v for k, v in options.items() if k not in _NOT_OPTIONS}
    options["loss"] = Option("loss", str | TargetLoss, "ce")
    options.update(_LOSS_OPTIONS)
    needs = getattr(factory, "needs", None) or getattr(factory, "reweights", None)

    def build(model: nn.Module, *, num_classes: int | None = None, total_steps: int | None = None,
              seed: int | None = None, loss: str = "ce", **mixer_options: Any) -> Method:
        mixer = create_mixer(name, num_classes=num_classes, **mixer_options)
        return MixerMethod(model, mixer, num_classes=num_classes, loss=loss, total_steps=total_steps, seed=seed)

    build.factory = factory
    spec = MethodSpec(name, "model-aware" if needs else "mixer", build, options)
    _MIXER_SPECS[name] = spec
    return spec
