"""Options declared once, by a constructor's typed signature, and values checked against them.

A method's or mixer's options are the keyword parameters of its constructor (or factory function),
with their annotations and defaults: nothing is listed twice. Where a constructor passes ``**kwargs``
on to its base class, the base class's parameters are options too (the class's own win), so a mixer
declares only what it adds to ``BaseMixer``. ``check_options`` validates user values (``--method-opt
KEY=VALUE``, a YAML ``method_opts`` mapping, ``create_method(**options)``) against that declaration.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_MISSING = inspect.Parameter.empty


@dataclass(frozen=True)
class Option:
    """One declared option: its name, annotation (``Any`` when unannotated) and default (``required`` if none)."""

    name: str
    annotation: Any
    default: Any

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def type_text(self) -> str:
        return _type_text(self.annotation)


def signature_options(factory: Callable[..., Any], skip: tuple[str, ...] = ("self",)) -> dict[str, Option]:
    """The keyword options of ``factory`` (a class or function), following ``**kwargs`` up a class's MRO.

    A function's ``**kwargs`` cannot be followed (where they go is its own business): declare those
    options yourself.
    """
    chain = [c.__init__ for c in inspect.getmro(factory) if "__init__" in vars(c)] if isinstance(factory, type) \
        else [factory]
    options: dict[str, Option] = {}
    for func in chain:
        params = inspect.signature(func).parameters
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # an annotation that does not resolve here: treat it as untyped
            hints = {}
        for name, p in params.items():
            if name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name in options:
                continue
            options[name] = Option(name, hints.get(name, Any), p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return options


def check_options(values: Mapping[str, Any], options: Mapping[str, Option], who: str) -> None:
    """Refuse a key ``options`` does not declare (``ValueError``) or a value of the wrong type (``TypeError``).

    Both messages name the key and ``who`` (e.g. ``"method 'samix'"``). Ranges and choices are checked by
    the constructor itself, which names the argument too.
    """
    unknown = sorted(set(values) - set(options))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {who}; it takes {sorted(options)}")
    for key, value in values.items():
        option = options[key]
        if not matches(value, option.annotation):
            raise TypeError(f"option {key}={value!r} for {who} must be {option.type_text()}, "
                            f"got {type(value).__name__}")


def matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits ``annotation``, as configs give values: a list fits a tuple, an int a float."""
    if annotation is Any or annotation is _MISSING:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return not args or (len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args)))
    if origin in (list, collections.abc.Sequence):
        if isinstance(value, str) or not isinstance(value, (tuple, list)):
            return False
        return not args or all(matches(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            return False
        return len(args) != 2 or all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items())
    if origin is not None:
        return isinstance(value, origin)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _type_text(annotation: Any) -> str:
    if annotation is Any:
        return "any value"
    if annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in typing.get_args(annotation))
    if origin is not None:
        return str(annotation).replace("typing.", "").replace("collections.abc.", "")
    return getattr(annotation, "__name__", str(annotation))
