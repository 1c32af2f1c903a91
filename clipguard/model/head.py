"""The classification head: L2-normalise the feature, then one linear layer (docs/method.md §1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

FAKE_CLASS = 1  # class 0 = real, 1 = fake


@dataclass(frozen=True)
class HeadOutput:
    """Logits (B, 2) and the unit embeddings z (B, D) they were computed from, both fp32."""

    logits: torch.Tensor
    embeddings: torch.Tensor


class NormLinearHead(nn.Module):
    """z = f / ||f||, logits = W z + b; no temperature.

    ``embed`` and ``classify`` are separate so training can augment z (slerp)
    between them; ``forward`` chains the two.
    """

    def __init__(self, in_dim: int, num_classes: int = 2) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, num_classes, bias=True)

    @staticmethod
    def embed(features: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings, in fp32 whatever the tower's autocast dtype."""
        return F.normalize(features.float(), p=2, dim=-1)

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Logits from unit embeddings, kept in fp32 (autocast off: 2 outputs, no speed to gain)."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return self.fc(embeddings.float())

    def forward(self, features: torch.Tensor) -> HeadOutput:
        """Normalise then classify."""
        z = self.embed(features)
        return HeadOutput(logits=self.classify(z), embeddings=z)


def p_fake(logits: torch.Tensor) -> torch.Tensor:
    """Probability of the fake class: softmax(logits)[:, 1]."""
    return torch.softmax(logits.float(), dim=-1)[:, FAKE_CLASS]
