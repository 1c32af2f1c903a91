"""CLI flags generated from the config models, so every field has a flag.

``ClipguardConfig.kafka.bootstrap`` becomes ``--kafka-bootstrap``; values are
handed to pydantic as strings (tuples as comma lists) and validated there, so
the CLI, the environment and defaults share one set of rules.

Secrets get no flag: a command line is visible in ``ps``, in shell history and in a Ray
job's entrypoint. They come from the environment or from files (``clipguard.config``:
``CLIPGUARD_SECRETS_DIR``, e.g. a mounted Kubernetes Secret), and a URL given as a flag may
not carry a password either.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import click
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from clipguard.config import SECRETS_DIR_ENV, ClipguardConfig


def _is_bool(annotation: Any) -> bool:
    return annotation is bool


def _is_tuple(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple


def _help(f: FieldInfo) -> str:
    shown = "" if f.default is None else f" [default: {f.default}]"
    return (f.description or "") + shown


def is_secret(annotation: Any) -> bool:
    """True for a ``SecretStr`` field (also ``SecretStr | None``): settable from env or files only."""
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def config_fields() -> list[tuple[str, str, Any, str]]:
    """(section, field, annotation, help) for every leaf field that gets a flag; section '' for a top-level one.

    Secret fields (:func:`is_secret`) are left out: they have no flag.
    """
    out = []
    for section, sfield in ClipguardConfig.model_fields.items():
        model = sfield.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            out.append(("", section, sfield.annotation, _help(sfield)))
            continue
        for name, f in model.model_fields.items():
            if not is_secret(f.annotation):
                out.append((section, name, f.annotation, _help(f)))
    return out


def _refuse_password_in_url(flag: str, value: str) -> None:
    try:
        has_password = urlsplit(value).password is not None
    except ValueError:  # not a URL at all: pydantic reports that
        return
    if has_password:
        msg = (
            f"{flag}: the URL carries a password, and a command line is visible to every user of the machine; "
            f"pass the password in CLIPGUARD_REDIS__PASSWORD or a file in ${SECRETS_DIR_ENV}"
        )
        raise click.UsageError(msg)


def _flag_and_dest(section: str, name: str) -> tuple[str, str]:
    if not section:
        return f"--{name}".replace("_", "-"), name
    return f"--{section}-{name}".replace("_", "-"), f"{section}__{name}"


def _add_options(func: Callable, chosen: list[tuple[str, str, Any, str]]) -> Callable:
    for section, name, annotation, help_text in reversed(chosen):
        flag, dest = _flag_and_dest(section, name)
        if _is_bool(annotation):
            func = click.option(f"{flag}/--no-{flag[2:]}", dest, default=None, help=help_text)(func)
        else:
            func = click.option(flag, dest, default=None, metavar="VALUE", help=help_text)(func)
    return func


def config_options(func: Callable) -> Callable:
    """Decorate a click command with one option per config field (dest ``section__field``)."""
    return _add_options(func, config_fields())


def section_options(*sections: str, fields: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Like :func:`config_options`, for a client that uses only some sections (and single ``section.field`` s).

    Flags it does not get keep their environment variables and defaults, so ``clipguard verdict`` shows
    the Redis flags only, yet still reads ``CLIPGUARD_KAFKA__*`` it has no use for without complaint.
    """
    known = {section for section, *_ in config_fields()}
    unknown = sorted((set(sections) | {f.split(".")[0] for f in fields}) - known)
    if unknown:
        msg = f"no config sections {unknown}"
        raise ValueError(msg)
    chosen = [f for f in config_fields() if f[0] in sections or f"{f[0]}.{f[1]}" in fields]
    return lambda func: _add_options(func, chosen)


def build_config(options: dict[str, Any]) -> ClipguardConfig:
    """Defaults < environment < the flags that were given."""
    nested: dict[str, Any] = {}
    for section, name, annotation, _ in config_fields():
        value = options.pop(_flag_and_dest(section, name)[1], None)
        if value is None:
            continue
        if isinstance(value, str) and section == "redis" and name == "url":
            _refuse_password_in_url(_flag_and_dest(section, name)[0], value)
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
