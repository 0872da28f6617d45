"""World: shapes, bounds, the satisfaction correlation knob, drift, and catalogue growth."""

from __future__ import annotations

import pytest
import torch

from recsim.config import validate
from recsim.recsys.world import World


def _world(**world) -> World:
    return World.create(
        validate({"world": {"n_users": 400, "n_items": 300, **world}, "metrics": {"panel_users": 16}})
    )


def test_shapes_and_probability_bounds():
    w = _world()
    assert w.user_factors.shape == (400, 16) and w.item_factors.shape == (300, 16)
    assert torch.allclose(w.user_factors.norm(dim=1), torch.ones(400))
    items = torch.arange(300).expand(400, 300)
    rel = w.relevance(torch.arange(400), items)
    sat = w.satisfaction(torch.arange(400), items)
    assert rel.shape == (400, 300) and torch.all((rel > 0) & (rel < 1))
    assert torch.all((sat > 0) & (sat < 1))
    assert set(w.user_device.unique().tolist()) == {0, 1}


def test_same_seed_same_world_and_clusters_exist():
    a, b = _world(), _world()
    assert torch.equal(a.user_factors, b.user_factors) and torch.equal(a.item_popularity, b.item_popularity)
    # Users agree more with items of their own cluster than with others.
    own = (a.user_factors @ a.item_factors.T)[a.user_cluster.unsqueeze(1) == a.item_category.unsqueeze(0)]
    other = (a.user_factors @ a.item_factors.T)[a.user_cluster.unsqueeze(1) != a.item_category.unsqueeze(0)]
    assert own.mean() > other.mean() + 0.3


@pytest.mark.parametrize("rho", [-0.5, 0.0, 0.5, 0.9, 1.0])
def test_satisfaction_appeal_has_the_configured_cosine(rho):
    w = _world(satisfaction_correlation=rho)
    cos = (w.item_factors * w.item_sat_factors).sum(1)
    assert cos.mean().item() == pytest.approx(rho, abs=1e-5)


def test_click_and_satisfaction_correlation_rises_with_rho():
    def corr(rho):
        w = _world(satisfaction_correlation=rho, popularity_scale=0.0)
        items = torch.arange(300).expand(400, 300)
        r = w.relevance(torch.arange(400), items).flatten()
        s = w.satisfaction(torch.arange(400), items).flatten()
        return torch.corrcoef(torch.stack([r, s]))[0, 1].item()

    values = [corr(r) for r in (0.0, 0.5, 1.0)]
    # At rho = 1 the two logits differ only in their intercepts, so the sigmoids are near-linear kin.
    assert values[0] < values[1] < values[2] and values[2] > 0.95


def test_drift_moves_clickers_toward_clicked_items_only():
    w = _world(drift_rate=0.5)
    users = torch.tensor([0, 1])
    items = torch.tensor([[5, 6], [7, 8]])
    clicks = torch.tensor([[True, False], [False, False]])
    w2 = w.drift(users, items, clicks)
    before = (w.user_factors[0] @ w.item_factors[5]).item()
    after = (w2.user_factors[0] @ w.item_factors[5]).item()
    assert after > before
    assert torch.equal(w2.user_factors[1], w.user_factors[1])
    assert torch.allclose(w2.user_factors.norm(dim=1), torch.ones(400))
    assert _world(drift_rate=0.0).drift(users, items, clicks) is not None


def test_new_items_join_as_a_prefix_each_round():
    w = World.create(
        validate(
            {
                "world": {"n_users": 50, "n_items": 100, "new_items_per_round": 7},
                "loop": {"rounds": 4},
                "metrics": {"panel_users": 8},
            }
        )
    )
    assert w.n_items_total == 100 + 7 * 3
    assert [w.n_available(r) for r in range(4)] == [100, 107, 114, 121]
