"""Metrics on inputs whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from recsim.core import metrics


def test_gini_known_values():
    assert metrics.gini(torch.ones(10)) == pytest.approx(0.0)
    assert metrics.gini(torch.tensor([0.0] * 9 + [5.0])) == pytest.approx(0.9)
    # Exposure proportional to rank 1..n: G = (n - 1) / (3 n) for a linear distribution.
    n = 100
    assert metrics.gini(torch.arange(1, n + 1).double()) == pytest.approx((n - 1) / (3 * n), rel=1e-9)
    assert metrics.gini(torch.zeros(5)) == 0.0


def test_entropy_and_coverage_known_values():
    assert metrics.entropy(torch.ones(16)) == pytest.approx(math.log(16))
    assert metrics.entropy(torch.tensor([0.0, 0.0, 7.0])) == pytest.approx(0.0)
    assert metrics.entropy(torch.tensor([1.0, 1.0, 2.0])) == pytest.approx(
        -(0.5 * math.log(0.25) + 0.5 * math.log(0.5))
    )
    assert metrics.coverage(torch.tensor([0.0, 1.0, 0.0, 2.0, 0.0])) == pytest.approx(0.4)


def test_mean_jaccard_known_sets():
    sets = torch.tensor([[0, 1, 2], [1, 2, 3], [4, 5, 6]])
    # row 0 vs 1: |{1,2}| / |{0,1,2,3}| = 0.5 ; row 1 vs 0: 0.5 ; row 2 vs 0: 0
    assert metrics.mean_jaccard(sets, torch.tensor([1, 0, 0]), 7) == pytest.approx(1 / 3)
    assert metrics.mean_jaccard(sets, torch.tensor([0, 1, 2]), 7) == pytest.approx(1.0)


def test_nearest_neighbours_excludes_self():
    f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    assert metrics.nearest_neighbours(f).tolist() == [1, 0, 1]


def test_ece_zero_when_calibrated_and_equal_to_offset_when_shifted():
    q = torch.rand(10_000, generator=torch.Generator().manual_seed(0)) * 0.8
    assert metrics.ece(q, q) == pytest.approx(0.0, abs=1e-12)
    assert metrics.ece(q + 0.1, q) == pytest.approx(0.1, abs=1e-6)  # float32 input


def test_brier_is_expected_squared_error():
    p = torch.tensor([0.2, 0.9])
    q = torch.tensor([0.5, 1.0])
    expected = ((p - q) ** 2 + q * (1 - q)).mean()
    assert metrics.brier(p, q) == pytest.approx(float(expected), abs=1e-6)
    # Reporting the truth is optimal (proper scoring rule).
    assert metrics.brier(q, q) < metrics.brier(p, q)


def test_ndcg_and_rank_stability_extremes():
    truth = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert metrics.ndcg_at_k(truth, truth, 4) == pytest.approx(1.0)
    assert metrics.ndcg_at_k(truth, -truth, 4) < 0.7
    s = torch.tensor([[0.1, 0.5, 0.3, 0.9], [1.0, 2.0, 3.0, 4.0]])
    assert metrics.rank_stability(s, s) == pytest.approx(1.0)
    assert metrics.rank_stability(s, -s) == pytest.approx(-1.0)


class _Serving:
    """A learner serving the true value of the objective (w_c, w_s) it declares."""

    def __init__(self, objective: tuple[float, float]) -> None:
        self.objective = objective

    def score(self, world, users, items, round_):
        w_c, w_s = self.objective
        rel = world.relevance(users, items)
        return rel * (w_c + w_s * world.satisfaction(users, items))


@pytest.mark.parametrize("objective", [(1.0, 1.0), (0.5, 2.0), (1.0, 0.0)])
def test_ndcg_truth_scores_the_true_value_of_the_served_objective(objective):
    """A learner that orders by the truth of what it serves has ndcg_truth 1; ordered by p_click
    p_sat that is not the click-relevance order, so ndcg_click falls below 1 unless w_s = 0."""
    from dataclasses import replace

    from recsim.config import validate
    from recsim.recsys.domain import RecsysDomain
    from recsim.recsys.measures import RoundView, panel

    config = validate(
        {
            "world": {"n_users": 60, "n_items": 80},
            "metrics": {"panel_users": 20},
            "policy": {"n_candidates": 30},
        }
    )
    dom = RecsysDomain(config)
    state = dom.initial_state()
    slates = dom.act(state, 0)
    fb = dom.feedback(state, slates, 0)
    row = panel(RoundView(dom, replace(state, ranker=_Serving(objective)), slates, fb, 0))
    assert row["ndcg_truth"] == pytest.approx(1.0, abs=1e-6)
    if objective[1] == 0:
        assert row["ndcg_click"] == pytest.approx(1.0, abs=1e-6)
    else:
        assert row["ndcg_click"] < 0.9999  # 0.991 at (1, 1) in this world
