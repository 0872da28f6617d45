"""Records that travel between the LLM domain's steps: the round's samples, the labels, the state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl
import torch

from recsim.llm.feedback import Rollouts
from recsim.llm.tasks import Format, Prompts
from towers.llm_policy import TokenPolicy
from towers.reward_model import RewardModel

if TYPE_CHECKING:
    from recsim.config import SimConfig
    from recsim.llm.config import LlmConfig


PASS_K = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Batch:
    """The round's samples for the labeler (``rollouts``, groups of G per training prompt) and, for
    best-of-n, the reward model's pick among n samples per evaluation prompt (``served``)."""

    rollouts: Rollouts
    served: Rollouts | None = None
    n: int = 1


@dataclass(frozen=True)
class Labels:
    """Pairs (winner, loser) as indices into the batch's rollouts, and who labeled them."""

    winner: torch.Tensor
    loser: torch.Tensor
    anchored: torch.Tensor


@dataclass(frozen=True)
class LlmState:
    """policy and reward model are updated in place by ``fit``; ``train`` holds fit statistics;
    ``budget`` the reward model's accuracy at each test-time budget (the round's table)."""

    policy: TokenPolicy
    reward_model: RewardModel
    policy_opt: torch.optim.Optimizer
    rm_opt: torch.optim.Optimizer
    train: dict[str, float] | None = None
    budget: pl.DataFrame | None = None
    fit_curve: pl.DataFrame | None = None
    """The round's reward-model fit, one row per epoch (the ``rm_fit`` table); None: no fit."""


def gold_pairs(r: Rollouts, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(winner, loser) indices [M]: responses (2i, 2i + 1) within each group of ``group``
    (contiguous) that differ in correctness; the correct one wins by gold."""
    a = torch.arange(r.tokens.shape[0])
    pos = a % group
    a = a[(pos % 2 == 0) & (pos < group - 1)]
    b = a + 1
    differ = r.correct[a] != r.correct[b]
    a, b = a[differ], b[differ]
    a_wins = r.correct[a] > r.correct[b]
    return torch.where(a_wins, a, b), torch.where(a_wins, b, a)


class DomainParts:
    """What the concerns of :class:`recsim.llm.domain.LlmDomain` (base policy, reward fit, policy
    optimization, evaluation) read from the domain: its config, the response format, the prompt
    pool and evaluation set, and the frozen reference policy (all set in ``LlmDomain.__init__``)."""

    config: SimConfig
    cfg: LlmConfig
    fmt: Format
    pool: Prompts
    eval: Prompts
    reference: TokenPolicy
    checker: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    """The verifier's checks of (prompts, responses) (chain task with ``reward_model.checks``)."""
