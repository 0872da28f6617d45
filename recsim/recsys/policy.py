"""Slates from scores: candidates, top-K, exploration, and the logged propensities.

A user's slate is one of two things:
- greedy: the K highest-scoring candidates in score order;
- random: K candidates drawn uniformly without replacement, in random order.

A user is served a random slate if they belong to the fixed exploration bucket
(``exploration_share`` of users, the randomized-traffic anchor), during the start-up rounds, or,
otherwise, with probability ``epsilon`` this round (epsilon-greedy over whole slates). Because the
mixture is over whole slates, the propensity of showing candidate i at position k is exact:

    pi(i, k) = (1 - e) * 1[greedy slate has i at k] + e / C

with e the user's probability of a random slate this round (0, epsilon or 1) and C the number of
candidates. Shapes: B users, C candidates, K positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from recsim.core.errors import check_finite

#: A scoring of [B, C] pairs: the scores, and positions [B, K] -> the ranker's click probabilities
#: of those pairs from the same pass (None where the ranker has no such pass).
Scored = tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor] | None]


@dataclass(frozen=True)
class Slates:
    """The decisions of one round. Attributes are [B] or [B, K].

    Attributes:
        users: [B] long user ids.
        device: [B] long device index of each user.
        items: [B, K] long item ids, position k = column k-1.
        scores: [B, K] ranker score of each shown item.
        propensity: [B, K] probability that the policy shows this item at this position.
        exploration: [B] bool, the slate was a random one.
        predicted: [B, K] the ranker's P(click | examined at the top) for each shown item, at
            serving time (its belief when it decided).
        candidates: [B, C] long, the candidate set each slate was chosen from.
    """

    users: torch.Tensor
    device: torch.Tensor
    items: torch.Tensor
    scores: torch.Tensor
    propensity: torch.Tensor
    exploration: torch.Tensor
    predicted: torch.Tensor
    candidates: torch.Tensor


def exploration_bucket(n_users: int, share: float, gen: torch.Generator) -> torch.Tensor:
    """[U] bool: a fixed random ``share`` of users (rounded down) that always gets random slates."""
    mask = torch.zeros(n_users, dtype=torch.bool)
    n = int(share * n_users)
    if n:
        mask[torch.randperm(n_users, generator=gen)[:n]] = True
    return mask


def sample_candidates(
    n_users: int, n_available: int, n_candidates: int | None, gen: torch.Generator
) -> torch.Tensor:
    """[B, C] item ids: all available items (C = n_available) or C drawn without replacement."""
    if n_candidates is None or n_candidates >= n_available:
        return torch.arange(n_available, device=gen.device).expand(n_users, n_available)
    keys = torch.rand(n_users, n_available, generator=gen, device=gen.device)
    return keys.topk(n_candidates, dim=1).indices


def build_slates(
    users: torch.Tensor,
    device: torch.Tensor,
    candidates: torch.Tensor,
    scores: torch.Tensor | None,
    slate_size: int,
    p_random: torch.Tensor,
    gen: torch.Generator,
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    allowed: torch.Tensor | None = None,
    score_shown: Callable[[torch.Tensor, torch.Tensor], Scored] | None = None,
    predicted_at: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Slates:
    """Top-K or random slates per user, with exact propensities.

    Args:
        users: [B] user ids; device: [B] device index.
        candidates: [B, C] item ids; scores: [B, C] ranker scores (higher is better), or None
            when every slate is random (``p_random`` all 1, the start-up rounds): the scores then
            rank nothing, and only the shown items' are taken, from ``score_shown`` (users [B],
            items [B, K] -> their scores [B, K] and a ``predicted_at`` for them, or None).
        slate_size: K.
        p_random: [B] probability that each user's slate is random this round (0, epsilon or 1).
        gen: generator of the round's policy stream.
        predict: (users [B], items [B, K]) -> [B, K] the ranker's click probabilities.
        allowed: [B, C] bool, the candidates each user may be shown (None: all). Greedy and random
            slates pick from the allowed ones first (a user with fewer than K allowed is shown
            disallowed ones last).
        predicted_at: positions [B, K] into ``candidates`` -> [B, K] the ranker's click
            probabilities, from the pass that gave ``scores`` (so the shown items are not scored
            again); None: ``predict`` on the shown items.
    """
    n_users, n_cand = candidates.shape
    if scores is None and (score_shown is None or bool((p_random < 1).any())):
        raise ValueError("build_slates: scores=None needs every slate random and a score_shown")
    if scores is not None:
        check_finite("ranker scores", scores)
    dtype = torch.float32 if scores is None else scores.dtype
    keys = torch.rand(n_users, n_cand, generator=gen, device=gen.device)
    n_allowed = torch.full((n_users,), float(n_cand), device=candidates.device)
    if allowed is not None:
        keys = keys.masked_fill(~allowed, -1.0)
        n_allowed = allowed.sum(1).clamp(min=1).to(dtype)
    random_idx = keys.topk(slate_size, dim=1).indices
    if scores is None:  # every slate random: (1 - p_random) = 0 cancels the greedy term below
        greedy = random_idx
    else:
        ranked = scores if allowed is None else scores.masked_fill(~allowed, float("-inf"))
        greedy = ranked.topk(slate_size, dim=1).indices  # [B, K] positions into candidates
    explore = torch.rand(n_users, generator=gen, device=gen.device) < p_random  # [B]
    pick = torch.where(explore.unsqueeze(1), random_idx, greedy)  # [B, K]
    is_greedy_here = (pick == greedy).to(dtype)
    propensity = (1 - p_random).unsqueeze(1) * is_greedy_here + (p_random / n_allowed).unsqueeze(1)
    items = candidates.gather(1, pick)
    at = pick  # the shown items' positions in the pairs that were scored
    if scores is None:
        shown, predicted_at = score_shown(users, items)
        check_finite("ranker scores", shown)
        at = torch.arange(slate_size, device=items.device).expand_as(items)  # scored: the shown items
    else:
        shown = scores.gather(1, pick)
    return Slates(
        users=users,
        device=device,
        items=items,
        scores=shown,
        propensity=propensity,
        exploration=explore,
        predicted=predict(users, items) if predicted_at is None else predicted_at(at),
        candidates=candidates,
    )
