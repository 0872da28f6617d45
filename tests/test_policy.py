"""Slates: top-K order, exploration, and exact propensities."""

from __future__ import annotations

import pytest
import torch

from recsim.recsys.policy import build_slates, exploration_bucket, sample_candidates


def _predict(users, items):
    return torch.full(items.shape, 0.5)


def test_greedy_slates_are_top_k_in_score_order():
    cands = torch.arange(6).expand(2, 6)
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.0, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    s = build_slates(
        torch.tensor([0, 1]),
        torch.tensor([0, 0]),
        cands,
        scores,
        3,
        torch.zeros(2),
        torch.Generator(),
        _predict,
    )
    assert s.items.tolist() == [[1, 3, 5], [0, 1, 2]]
    assert torch.all(s.propensity == 1) and not s.exploration.any()
    assert s.scores.tolist()[1] == [5.0, 4.0, 3.0]


def test_random_slates_have_distinct_items_and_uniform_propensity():
    n, c, k = 4000, 8, 3
    cands = torch.arange(c).expand(n, c)
    scores = torch.arange(c, dtype=torch.float32).expand(n, c)
    s = build_slates(
        torch.arange(n),
        torch.zeros(n, dtype=torch.long),
        cands,
        scores,
        k,
        torch.ones(n),
        torch.Generator().manual_seed(0),
        _predict,
    )
    assert s.exploration.all()
    assert torch.all(s.propensity == 1 / c)
    assert all(len(set(row)) == k for row in s.items.tolist())
    # Each item appears at position 1 with frequency 1/C (binomial, 5 sigma).
    freq = torch.bincount(s.items[:, 0], minlength=c).double() / n
    assert torch.all((freq - 1 / c).abs() < 5 * (1 / c * (1 - 1 / c) / n) ** 0.5)


def test_epsilon_greedy_propensity_matches_empirical_frequency():
    n, c, k, eps = 50_000, 5, 2, 0.3
    cands = torch.arange(c).expand(n, c)
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0]).expand(n, c)
    s = build_slates(
        torch.arange(n),
        torch.zeros(n, dtype=torch.long),
        cands,
        scores,
        k,
        torch.full((n,), eps),
        torch.Generator().manual_seed(1),
        _predict,
    )
    assert abs(s.exploration.double().mean() - eps) < 5 * (eps * (1 - eps) / n) ** 0.5
    # P(item 0 at position 1) = (1 - eps) + eps / C, and the logged propensity says exactly that.
    emp = (s.items[:, 0] == 0).double().mean()
    expected = (1 - eps) + eps / c
    assert abs(emp - expected) < 5 * (expected * (1 - expected) / n) ** 0.5
    logged = s.propensity[:, 0][s.items[:, 0] == 0]
    assert torch.allclose(logged, torch.tensor(expected, dtype=logged.dtype))
    # An item shown at position 1 that is not the greedy pick has propensity eps / C.
    other = s.propensity[:, 0][s.items[:, 0] == 3]
    assert torch.allclose(other, torch.tensor(eps / c, dtype=other.dtype))


def test_exploration_bucket_share_and_determinism():
    a = exploration_bucket(1000, 0.1, torch.Generator().manual_seed(3))
    b = exploration_bucket(1000, 0.1, torch.Generator().manual_seed(3))
    assert int(a.sum()) == 100 and torch.equal(a, b)
    assert not exploration_bucket(1000, 0.0, torch.Generator()).any()


def test_candidate_sampling_distinct_and_in_range():
    c = sample_candidates(50, 30, 10, torch.Generator().manual_seed(0))
    assert c.shape == (50, 10)
    assert int(c.max()) < 30 and all(len(set(r)) == 10 for r in c.tolist())
    assert sample_candidates(3, 30, None, torch.Generator()).shape == (3, 30)


def test_all_random_slates_without_scores_equal_those_with_and_score_only_the_shown_items():
    n, c, k = 300, 40, 5
    g = torch.Generator().manual_seed(3)
    cands = torch.rand(n, c, generator=g).argsort(1)
    scores = torch.rand(n, c, generator=g)
    allowed = torch.rand(n, c, generator=g) > 0.2
    asked = []

    def score_shown(users, items):
        asked.append(items.shape)
        return scores.gather(1, (cands.unsqueeze(2) == items.unsqueeze(1)).int().argmax(1)), None

    args = (torch.arange(n), torch.zeros(n, dtype=torch.long), cands)
    for mask in (None, allowed):
        full = build_slates(*args, scores, k, torch.ones(n), torch.Generator().manual_seed(7), _predict, mask)
        lazy = build_slates(
            *args, None, k, torch.ones(n), torch.Generator().manual_seed(7), _predict, mask, score_shown
        )
        assert torch.equal(full.items, lazy.items) and torch.equal(full.propensity, lazy.propensity)
        assert torch.equal(full.scores, lazy.scores) and lazy.exploration.all()
    assert asked == [(n, k), (n, k)]  # the shown items only, never the [B, C] candidates
    with pytest.raises(ValueError, match="every slate random"):  # a greedy slate needs the scores
        build_slates(*args, None, k, torch.full((n,), 0.5), torch.Generator(), _predict, None, score_shown)


def test_predictions_from_the_scoring_pass_are_taken_at_the_shown_positions():
    """``predicted_at`` gets each shown item's position among the pairs that were scored: its
    candidate column for ranked slates, its slate position where only the shown were scored."""
    n, c, k = 50, 12, 4
    g = torch.Generator().manual_seed(5)
    cands = torch.rand(n, c, generator=g).argsort(1)
    scores = torch.rand(n, c, generator=g)
    belief = torch.rand(n, c, generator=g)  # the pass's predictions of every candidate

    def at(pick):
        return belief.gather(1, pick)

    args = (torch.arange(n), torch.zeros(n, dtype=torch.long), cands)
    for p_random in (torch.zeros(n), torch.full((n,), 0.5)):
        s = build_slates(
            *args, scores, k, p_random, torch.Generator().manual_seed(1), _predict, predicted_at=at
        )
        column = (cands.unsqueeze(2) == s.items.unsqueeze(1)).int().argmax(1)  # [B, K] into candidates
        assert torch.equal(s.predicted, belief.gather(1, column))
    shown_belief = torch.rand(n, k, generator=g)

    def score_shown(users, items):
        return torch.zeros(items.shape), lambda pick: shown_belief.gather(1, pick)

    s = build_slates(*args, None, k, torch.ones(n), torch.Generator(), _predict, None, score_shown)
    assert torch.equal(s.predicted, shown_belief)
    s = build_slates(*args, scores, k, torch.ones(n), torch.Generator(), _predict)
    assert torch.equal(s.predicted, torch.full((n, k), 0.5))  # no pass's predictions: predict
