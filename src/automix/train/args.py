"""Command-line flags generated from ``Config``: one flag per field, grouped by section.

A field ``mixup_switch_prob`` becomes ``--mixup-switch-prob``; booleans get ``--x/--no-x``;
``Optional`` fields accept ``none``; ``method_opts`` is ``--method-opt KEY=VALUE`` and ``model_opts``
``--model-opt KEY=VALUE`` (repeatable, values typed as YAML scalars). Flags default to "not given", so a
YAML file's values survive unless a flag overrides them.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

from .config import (
    COMMAND_LINE,
    SECTIONS,
    Config,
    _field_types,
    _strip_optional,
    from_dict,
    load_yaml,
    number_text,
    set_sources,
    validate,
)

ALIASES = {"output": ["-o", "--output-dir"], "config": ["-c"], "batch_size": ["-b"]}


def _scalar(text: str) -> Any:
    import yaml

    try:
        return number_text(yaml.safe_load(text))  # "1e-3" too, which YAML 1.1 reads as a string
    except yaml.YAMLError:
        return text


def _optional(conv):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else conv(text)

    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def _method_opt(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--method-opt / --model-opt must be KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), _scalar(value)


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """Add ``--config`` and one flag per ``Config`` field (but those in ``exclude``) to ``parser``."""
    parser.add_argument("-c", "--config", default=None, metavar="FILE", help="YAML file of options (flags win)")
    types_ = _field_types()
    helps = {f: Config.__dataclass_fields__[f].metadata.get("help", "") for f in types_}
    defaults = Config()
    for section, names in SECTIONS.items():
        group = parser.add_argument_group(section)
        for name in (n for n in names if n not in exclude):
            flag = "--" + name.replace("_", "-")
            flags = [flag] + [a for a in ALIASES.get(name, []) if a != flag]
            base, optional = _strip_optional(types_[name])
            default = getattr(defaults, name)
            kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                                  "help": f"{helps[name]} (default: {default})"}
            if name in ("method_opts", "model_opts"):
                flags = ["--method-opt" if name == "method_opts" else "--model-opt"]
                kw.update(action="append", type=_method_opt, metavar="KEY=VALUE")
            elif typing.get_origin(base) in (typing.Union, types.UnionType):  # --mixup-lam: any YAML value
                kw.update(type=_optional(_scalar), metavar=name.upper())
            elif base is bool:
                kw.update(action=argparse.BooleanOptionalAction)
            elif getattr(base, "__origin__", None) is list:
                kw.update(nargs=2, type=float, metavar=("MIN", "MAX"))
            else:
                conv = {int: int, float: float, str: str}[base]
                kw.update(type=_optional(conv) if optional else conv, metavar=name.upper())
            group.add_argument(*flags, **kw)


def config_from_args(ns: argparse.Namespace) -> Config:
    """Defaults, then the ``--config`` YAML, then the flags that were given; validated, with the source of each given
    value recorded (``config.set_sources``: messages name the flag or the file, and ``--resume`` keeps the run's own
    value of every option not given)."""
    known = set(_field_types()) | {"config"}
    values = {k: v for k, v in vars(ns).items() if k in known}  # drop the subcommand's own arguments
    path = values.pop("config", None)
    from_file = load_yaml(path) if path else {}
    cfg = from_dict(from_file, source=f"config file {path}")
    given = set(from_file) | set(values)
    if given & {"mixup", "cutmix", "cutmix_minmax"} and "method" not in given:
        values["method"] = "mixup_cutmix"  # timm's flags alone select timm's Mixup/CutMix switch
    for key in ("method_opts", "model_opts"):
        if key in values:
            values[key] = {**getattr(cfg, key), **dict(values[key])}
    sources = {**{k: f"config file {path}" for k in from_file}, **{k: COMMAND_LINE for k in values}}
    return validate(set_sources(from_dict(values, cfg, source="command line"), sources))
