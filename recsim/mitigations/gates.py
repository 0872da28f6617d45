"""Rubric gates (the DRO idea, Xu et al. 2025): accept or reject a whole group by a rubric, instead
of turning the rubric into a dense reward that an optimizer can trade off item by item.

LLM: a rollout group is rejected (no gradient from it) if any response breaks the rubric (too
long, or copies the user's hint); the dense alternative subtracts ``penalty`` per violation from
each response's reward. Recommender: a slate with fewer than ``floor`` distinct categories is
rejected as training data (weight 0); the dense alternative down-weights its impressions by
``penalty`` times the missing share of categories.
"""

from __future__ import annotations

import torch


def group_gate(violation: torch.Tensor, group: int) -> torch.Tensor:
    """[N * G] bool violations (groups contiguous) -> [N * G] bool: the row's group is accepted."""
    accepted = ~violation.view(-1, group).any(1)
    return accepted.repeat_interleave(group)


def slate_gate_weights(
    slate: torch.Tensor, category: torch.Tensor, floor: int, mode: str, penalty: float
) -> torch.Tensor:
    """Per-impression weights from a diversity floor on each slate.

    slate [M] long slate id of each impression, category [M] long its item's category.
    gate: 1 if the slate has >= floor distinct categories, else 0. dense: 1 - penalty * max(0,
    floor - distinct) / floor, clipped at 0.
    """
    n_slates = int(slate.max()) + 1
    n_cat = int(category.max()) + 1
    present = torch.zeros(n_slates, n_cat, dtype=torch.bool, device=slate.device)
    present[slate, category] = True
    distinct = present.sum(1)[slate].float()  # [M]
    if mode == "gate":
        return (distinct >= floor).float()
    if mode == "dense":
        return (1 - penalty * (floor - distinct).clamp_min(0) / floor).clamp_min(0)
    raise ValueError(f"gate mode must be 'gate' or 'dense', got {mode!r}")
