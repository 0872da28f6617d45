"""A click model in one file: position-based examination, but an examined item is clicked with
probability eps + (1 - 2 eps) rel (clicks carry label noise both ways)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NoisyClicks:
    eps: float = 0.2

    def clicks(self, exam: torch.Tensor, relevance: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u[0] < self.click_probability(exam, relevance)

    def click_probability(self, exam: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        return exam * (self.eps + (1 - 2 * self.eps) * relevance)
