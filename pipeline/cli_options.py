"""CLI flags generated from the config models, so every field has a flag.

``ClipguardConfig.kafka.bootstrap`` becomes ``--kafka-bootstrap``; values are
handed to pydantic as strings (tuples as comma lists) and validated there, so
the CLI, the environment and defaults share one set of rules.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

import click
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from clipguard.config import ClipguardConfig


def _is_bool(annotation: Any) -> bool:
    return annotation is bool


def _is_tuple(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple


def _help(name: str, f: FieldInfo) -> str:
    shown = "" if f.default is None or "password" in name else f" [default: {f.default}]"
    return (f.description or "") + shown


def config_fields() -> list[tuple[str, str, Any, str]]:
    """(section, field, annotation, help) for every leaf field; section '' for a top-level one (``model_dir``)."""
    out = []
    for section, sfield in ClipguardConfig.model_fields.items():
        model = sfield.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            out.append(("", section, sfield.annotation, _help(section, sfield)))
            continue
        for name, f in model.model_fields.items():
            out.append((section, name, f.annotation, _help(name, f)))
    return out


def _flag_and_dest(section: str, name: str) -> tuple[str, str]:
    if not section:
        return f"--{name}".replace("_", "-"), name
    return f"--{section}-{name}".replace("_", "-"), f"{section}__{name}"


def config_options(func: Callable) -> Callable:
    """Decorate a click command with one option per config field (dest ``section__field``)."""
    for section, name, annotation, help_text in reversed(config_fields()):
        flag, dest = _flag_and_dest(section, name)
        if _is_bool(annotation):
            func = click.option(f"{flag}/--no-{flag[2:]}", dest, default=None, help=help_text)(func)
        else:
            func = click.option(flag, dest, default=None, metavar="VALUE", help=help_text)(func)
    return func


def build_config(options: dict[str, Any]) -> ClipguardConfig:
    """Defaults < environment < the flags that were given."""
    nested: dict[str, Any] = {}
    for section, name, annotation, _ in config_fields():
        value = options.pop(_flag_and_dest(section, name)[1], None)
        if value is None:
            continue
        if _is_tuple(annotation) and isinstance(value, str):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        if section:
            nested.setdefault(section, {})[name] = value
        else:
            nested[name] = value
    try:
        return ClipguardConfig(**nested)
    except ValidationError as exc:
        msg = f"invalid configuration:\n{exc}"
        raise click.UsageError(msg) from exc
