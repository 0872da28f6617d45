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
    still = _world(drift_rate=0.0)
    assert torch.equal(still.drift(users, items, clicks).user_factors, still.user_factors)  # no drift at 0


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


def _pairs_by_einsum(world: World, users, items, factors, offset, base, scale, chunk):
    """The gathered-pairs formula as first written: advanced indexing and einsum, per chunk."""
    out = torch.empty(items.shape)
    step = max(1, chunk // items.shape[1])
    for s in range(0, items.shape[0], step):
        it = items[s : s + step]
        logit = scale * torch.einsum("bd,bcd->bc", world.user_factors[users[s : s + step]], factors[it])
        logit = logit + offset[it] + base if offset is not None else logit + base
        out[s : s + step] = torch.sigmoid(logit)
    return out


@pytest.mark.parametrize(
    "dim,n_cand,chunk", [(16, 200, 1 << 18), (16, 10, 1 << 18), (7, 13, 100), (32, 5, 64)]
)
def test_gathered_pairs_equal_the_einsum_over_indexed_factors_bit_for_bit(monkeypatch, dim, n_cand, chunk):
    """relevance and satisfaction of per-user candidates (no shared row) in chunks, the last one
    short: index_select into a reused buffer and the einsum's own product give the same bits."""
    import recsim.recsys.world as world_mod

    monkeypatch.setattr(world_mod, "PAIR_CHUNK", chunk)
    world = World.create(validate({"world": {"n_users": 3000, "n_items": 500, "dim": dim}}))
    g = torch.Generator().manual_seed(dim + n_cand)
    users = torch.randint(0, 3000, (1337,), generator=g)
    items = torch.randint(0, 500, (1337, n_cand), generator=g)
    want = _pairs_by_einsum(
        world,
        users,
        items,
        world.item_factors,
        world.item_popularity,
        world.base_logit,
        world.affinity_scale,
        chunk,
    )
    assert torch.equal(world.relevance(users, items), want)
    scale = world.affinity_scale if world.satisfaction_scale is None else world.satisfaction_scale
    want = _pairs_by_einsum(
        world, users, items, world.item_sat_factors, None, world.satisfaction_logit, scale, chunk
    )
    assert torch.equal(world.satisfaction(users, items), want)
