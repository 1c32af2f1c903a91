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
from pydantic import ValidationError

from clipguard.config import ClipguardConfig


def _is_bool(annotation: Any) -> bool:
    return annotation is bool


def _is_tuple(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple


def config_fields() -> list[tuple[str, str, Any, str]]:
    """(section, field, annotation, help) for every leaf field."""
    out = []
    for section, sfield in ClipguardConfig.model_fields.items():
        model = sfield.annotation
        for name, f in model.model_fields.items():
            default = f.default
            shown = "" if f.default is None else f" [default: {default}]"
            if "password" in name:
                shown = ""
            out.append((section, name, f.annotation, (f.description or "") + shown))
    return out


def config_options(func: Callable) -> Callable:
    """Decorate a click command with one option per config field (dest ``section__field``)."""
    for section, name, annotation, help_text in reversed(config_fields()):
        flag = f"--{section}-{name}".replace("_", "-")
        dest = f"{section}__{name}"
        if _is_bool(annotation):
            func = click.option(f"{flag}/--no-{flag[2:]}", dest, default=None, help=help_text)(func)
        else:
            func = click.option(flag, dest, default=None, metavar="VALUE", help=help_text)(func)
    return func


def build_config(options: dict[str, Any]) -> ClipguardConfig:
    """Defaults < environment < the flags that were given."""
    nested: dict[str, dict[str, Any]] = {}
    for section, name, annotation, _ in config_fields():
        value = options.pop(f"{section}__{name}", None)
        if value is None:
            continue
        if _is_tuple(annotation) and isinstance(value, str):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        nested.setdefault(section, {})[name] = value
    try:
        return ClipguardConfig(**nested)
    except ValidationError as exc:
        msg = f"invalid configuration:\n{exc}"
        raise click.UsageError(msg) from exc
