"""The classification head: L2-normalise the feature, then one linear layer (docs/method.md §1).

``l2_normalize=False`` is the ablation's "LN-tuning" and "linear probe" rows (docs/method.md §8):
the linear layer then sees the raw CLS feature. The unit embeddings z = f/‖f‖ are returned
either way, because the alignment and uniformity losses and slerp live on the unit sphere
(docs/method.md §3-4); the reference code does the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

FAKE_CLASS = 1  # class 0 = real, 1 = fake


@dataclass(frozen=True)
class HeadOutput:
    """Logits (B, 2) and the unit embeddings z (B, D) of the same features, both fp32."""

    logits: torch.Tensor
    embeddings: torch.Tensor


class NormLinearHead(nn.Module):
    """logits = W z + b with z = f / ||f|| (or z = f with ``l2_normalize=False``); no temperature.

    ``embed``, ``head_input`` and ``classify`` are separate so training can augment z
    (slerp) between them; ``forward`` chains them.
    """

    def __init__(self, in_dim: int, num_classes: int = 2, *, l2_normalize: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, num_classes, bias=True)
        self.l2_normalize = l2_normalize

    @staticmethod
    def embed(features: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings, in fp32 whatever the tower's autocast dtype (losses and slerp use these)."""
        return F.normalize(features.float(), p=2, dim=-1)

    def head_input(self, features: torch.Tensor) -> torch.Tensor:
        """What the linear layer sees: the unit embedding, or the raw feature without L2 normalisation."""
        return self.embed(features) if self.l2_normalize else features.float()

    def classify(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits from the head's input, kept in fp32 (autocast off: 2 outputs, no speed to gain)."""
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            return self.fc(inputs.float())

    def forward(self, features: torch.Tensor) -> HeadOutput:
        """Classify the head input; also return the unit embeddings."""
        return HeadOutput(logits=self.classify(self.head_input(features)), embeddings=self.embed(features))

    def extra_repr(self) -> str:
        return f"l2_normalize={self.l2_normalize}"


def p_fake(logits: torch.Tensor) -> torch.Tensor:
    """Probability of the fake class: softmax(logits)[:, 1]."""
    return torch.softmax(logits.float(), dim=-1)[:, FAKE_CLASS]
