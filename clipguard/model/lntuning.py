"""LN-tuning: which parameters train (docs/method.md §1), decided by one name predicate.

Trainable = the weight and bias of every LayerNorm of the visual tower, plus the
head. Everything else is frozen. The same predicate decides what a checkpoint
stores, so "trained" and "saved" can never disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from clipguard.errors import ModelError

TOWER_PREFIX = "tower."  # attribute names of the detector's two parts
HEAD_PREFIX = "head."

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


def is_trained_param(name: str) -> bool:
    """True for a detector parameter that LN-tuning trains (tower LayerNorms and the head)."""
    return name.startswith(HEAD_PREFIX) or (name.startswith(TOWER_PREFIX) and is_layernorm_param(name))


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


def apply_ln_tuning(model: nn.Module) -> ParamCounts:
    """Freeze every parameter except the tower's LayerNorms and the head.

    Sets ``requires_grad`` on every parameter, so calling it again (after loading a
    checkpoint, or on a model someone unfroze) gives the same state.

    Args:
        model: a module with ``tower`` and ``head`` children (the detector).

    Returns:
        The resulting parameter counts.
    """
    _check_predicate_matches_modules(model)
    for name, param in model.named_parameters():
        param.requires_grad_(is_trained_param(name))
    return count_parameters(model)


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
    """The tensors LN-tuning changes (what a checkpoint stores), detached, by detector name."""
    return {name: param.detach() for name, param in model.named_parameters() if is_trained_param(name)}


def frozen_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything LN-tuning never changes (the base tower a checkpoint depends on)."""
    return {name: tensor.detach() for name, tensor in model.state_dict().items() if not is_trained_param(name)}
