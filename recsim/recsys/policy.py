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
    scores: torch.Tensor,
    slate_size: int,
    p_random: torch.Tensor,
    gen: torch.Generator,
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    allowed: torch.Tensor | None = None,
) -> Slates:
    """Top-K or random slates per user, with exact propensities.

    Args:
        users: [B] user ids; device: [B] device index.
        candidates: [B, C] item ids; scores: [B, C] ranker scores (higher is better).
        slate_size: K.
        p_random: [B] probability that each user's slate is random this round (0, epsilon or 1).
        gen: generator of the round's policy stream.
        predict: (users [B], items [B, K]) -> [B, K] the ranker's click probabilities.
        allowed: [B, C] bool, the candidates each user may be shown (None: all). Greedy and random
            slates pick from the allowed ones first (a user with fewer than K allowed is shown
            disallowed ones last).
    """
    n_users, n_cand = candidates.shape
    check_finite("ranker scores", scores)
    keys = torch.rand(n_users, n_cand, generator=gen, device=gen.device)
    ranked, n_allowed = scores, torch.full((n_users,), float(n_cand), device=scores.device)
    if allowed is not None:
        ranked = scores.masked_fill(~allowed, float("-inf"))
        keys = keys.masked_fill(~allowed, -1.0)
        n_allowed = allowed.sum(1).clamp(min=1).to(scores.dtype)
    greedy = ranked.topk(slate_size, dim=1).indices  # [B, K] positions into candidates
    random_idx = keys.topk(slate_size, dim=1).indices
    explore = torch.rand(n_users, generator=gen, device=gen.device) < p_random  # [B]
    pick = torch.where(explore.unsqueeze(1), random_idx, greedy)  # [B, K]
    is_greedy_here = (pick == greedy).to(scores.dtype)
    propensity = (1 - p_random).unsqueeze(1) * is_greedy_here + (p_random / n_allowed).unsqueeze(1)
    items = candidates.gather(1, pick)
    return Slates(
        users=users,
        device=device,
        items=items,
        scores=scores.gather(1, pick),
        propensity=propensity,
        exploration=explore,
        predicted=predict(users, items),
        candidates=candidates,
    )
