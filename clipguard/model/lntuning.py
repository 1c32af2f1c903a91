"""What trains (docs/method.md §1, §8), decided by one name predicate per tuning mode.

* ``ln`` (the method): the weight and bias of every LayerNorm of the visual tower, plus the head.
* ``linear-probe`` (the ablation's "frozen CLIP" row): the head only.
* ``full`` (full fine-tuning): every tower parameter, plus the head.

Everything else is frozen. The same predicate decides what a checkpoint stores, so
"trained" and "saved" can never disagree: an ``ln`` checkpoint holds the LayerNorms
and the head, a ``linear-probe`` one the head, a ``full`` one every parameter.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass

import torch
from torch import nn

from clipguard.config import Tuning
from clipguard.errors import ModelError

TOWER_PREFIX = "tower."  # attribute names of the detector's two parts
HEAD_PREFIX = "head."
TUNINGS: tuple[str, ...] = typing.get_args(Tuning)

# open_clip names its LayerNorms ln_pre, ln_post, ln_1, ln_2 (and ln_attn/ln_inner in custom blocks).
_LN_PARAM = re.compile(r"(?:^|\.)ln_[a-z0-9]+\.(?:weight|bias)$")


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a detector (numbers of scalars, not tensors)."""

    total: int
    trainable: int
    layernorm: int  # LayerNorm scalars of the tower
    head: int

    @property
    def frozen(self) -> int:
        """Scalars that never receive gradients."""
        return self.total - self.trainable


def is_layernorm_param(name: str) -> bool:
    """True for the weight or bias of an open_clip LayerNorm, e.g. ``transformer.resblocks.3.ln_1.bias``."""
    return _LN_PARAM.search(name) is not None


def check_tuning(tuning: str) -> str:
    """``tuning`` itself when it is a known mode, else a ModelError naming the modes."""
    if tuning not in TUNINGS:
        msg = f"tuning must be one of {list(TUNINGS)}, got {tuning!r}"
        raise ModelError(msg)
    return tuning


def is_trained_param(name: str, tuning: str = "ln") -> bool:
    """True for a detector parameter that ``tuning`` trains (and a checkpoint of it stores)."""
    if name.startswith(HEAD_PREFIX):
        return True
    if not name.startswith(TOWER_PREFIX):
        return False
    if check_tuning(tuning) == "full":
        return True
    return tuning == "ln" and is_layernorm_param(name)


def model_tuning(model: nn.Module) -> str:
    """The tuning mode a detector was built with (its ``tuning`` attribute; unwraps DDP's ``.module``)."""
    inner = getattr(model, "module", model)
    tuning = getattr(inner, "tuning", None)
    if tuning is None:
        msg = f"{type(inner).__name__} has no 'tuning' attribute: expected a Detector"
        raise ModelError(msg)
    return check_tuning(tuning)


def _check_predicate_matches_modules(model: nn.Module) -> None:
    """Guard the name predicate: it must select exactly the tower's LayerNorm parameters."""
    tower = model.get_submodule(TOWER_PREFIX.rstrip("."))
    by_type = {
        f"{module_name}.{param_name}"
        for module_name, module in tower.named_modules()
        if isinstance(module, nn.LayerNorm)
        for param_name, _ in module.named_parameters(recurse=False)
    }
    by_name = {name for name, _ in tower.named_parameters() if is_layernorm_param(name)}
    if by_type != by_name:
        msg = (
            "LayerNorm name predicate disagrees with the tower's LayerNorm modules: "
            f"missed {sorted(by_type - by_name)[:5]}, extra {sorted(by_name - by_type)[:5]}"
        )
        raise ModelError(msg)


def apply_tuning(model: nn.Module, tuning: str) -> ParamCounts:
    """Freeze every parameter that ``tuning`` does not train.

    Sets ``requires_grad`` on every parameter, so calling it again (after loading a
    checkpoint, or on a model someone unfroze) gives the same state.

    Args:
        model: a module with ``tower`` and ``head`` children (the detector).
        tuning: ``ln``, ``linear-probe`` or ``full``.

    Returns:
        The resulting parameter counts.
    """
    _check_predicate_matches_modules(model)
    check_tuning(tuning)
    for name, param in model.named_parameters():
        param.requires_grad_(is_trained_param(name, tuning))
    return count_parameters(model)


def apply_ln_tuning(model: nn.Module) -> ParamCounts:
    """Freeze every parameter except the tower's LayerNorms and the head (the method's LN-tuning)."""
    return apply_tuning(model, "ln")


def count_parameters(model: nn.Module) -> ParamCounts:
    """Count total, trainable, LayerNorm and head scalars of a detector."""
    total = trainable = layernorm = head = 0
    for name, param in model.named_parameters():
        n = param.numel()
        total += n
        trainable += n if param.requires_grad else 0
        if name.startswith(HEAD_PREFIX):
            head += n
        elif name.startswith(TOWER_PREFIX) and is_layernorm_param(name):
            layernorm += n
    return ParamCounts(total=total, trainable=trainable, layernorm=layernorm, head=head)


def trained_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors the detector's tuning changes (what a checkpoint stores), detached, by detector name."""
    tuning = model_tuning(model)
    return {name: param.detach() for name, param in model.named_parameters() if is_trained_param(name, tuning)}


def frozen_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything the detector's tuning never changes (the base tower a checkpoint depends on).

    Empty for ``full`` (unless the tower has buffers): such a checkpoint needs no base weights.
    """
    tuning = model_tuning(model)
    return {name: t.detach() for name, t in model.state_dict().items() if not is_trained_param(name, tuning)}
