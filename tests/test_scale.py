"""Retrieval (IVF search, candidate filling), chunked truth, and sparse embedding training."""

from __future__ import annotations

import pytest
import torch

import recsim.recsys.world as world_mod
from recsim.config import validate
from recsim.recsys.retrieval import IvfIndex, fill_unique
from recsim.recsys.world import World
from towers.ranking import TrainStreams


def _keys(n: int = 3000, d: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(12, d, generator=g)
    keys = centres[torch.randint(12, (n,), generator=g)] + 0.3 * torch.randn(n, d, generator=g)
    return keys, torch.randn(200, d, generator=g)


def test_ivf_lists_partition_the_items():
    keys, _ = _keys()
    index = IvfIndex.build(keys, 32, torch.Generator().manual_seed(1))
    ids = index.lists[index.lists >= 0]
    assert torch.equal(ids.sort().values, torch.arange(len(keys)))


def test_ivf_search_probing_every_list_is_exact():
    keys, queries = _keys()
    index = IvfIndex.build(keys, 32, torch.Generator().manual_seed(1))
    found = index.search(queries, n_probe=32, n=50)
    exact = (queries @ keys.T).topk(50, dim=1).indices
    assert torch.equal(found.sort(1).values, exact.sort(1).values)


def test_ivf_search_is_exact_within_the_probed_lists():
    keys, queries = _keys()
    index = IvfIndex.build(keys, 32, torch.Generator().manual_seed(1))
    found = index.search(queries, n_probe=4, n=50)
    probe = (queries @ index.centroids.T).topk(4, dim=1).indices
    members = index.lists[probe].reshape(len(queries), -1)
    allowed = torch.zeros(len(queries), len(keys), dtype=torch.bool)
    valid = members >= 0
    allowed[torch.arange(len(queries))[:, None].expand_as(members)[valid], members[valid]] = True
    scores = queries @ keys.T
    ref = scores.masked_fill(~allowed, -torch.inf).topk(50, dim=1)
    # the same top-50 scores (ids may differ only between near-equal scores)
    torch.testing.assert_close(scores.gather(1, found).sort(1).values, ref.values.sort(1).values)
    assert allowed.gather(1, found).all()
    # and it looks at a fraction of the catalogue only: 4 of 32 lists
    assert members.ge(0).sum(1).float().mean() < 0.25 * len(keys)


def test_ivf_search_marks_missing_candidates():
    keys, queries = _keys(n=40)
    index = IvfIndex.build(keys, 8, torch.Generator().manual_seed(1))
    found = index.search(queries, n_probe=1, n=30)
    assert (found == -1).any()  # one list of ~5 items cannot fill 30 slots


def test_fill_unique_gives_distinct_valid_rows_and_keeps_good_entries():
    g = torch.Generator().manual_seed(0)
    cands = torch.randint(-1, 50, (500, 20), generator=g)
    cands[:, 0] = torch.arange(500) % 50  # a valid first entry in every row
    out = fill_unique(cands, 50, torch.Generator().manual_seed(1))
    assert (out >= 0).all() and (out < 50).all()
    assert all(len(set(row.tolist())) == 20 for row in out)
    assert torch.equal(out[:, 0], cands[:, 0])  # the first occurrence of a value is kept


def test_ivf_search_in_chunks_equals_one_pass(monkeypatch):
    import recsim.recsys.retrieval as retrieval

    keys, queries = _keys()
    index = IvfIndex.build(keys, 32, torch.Generator().manual_seed(1))
    whole = index.search(queries, n_probe=4, n=50)
    longest = index.lists.shape[1]
    monkeypatch.setattr(retrieval, "SEARCH_CHUNK", 7 * 4 * longest)  # 7 users a chunk, a ragged last
    assert torch.equal(index.search(queries, n_probe=4, n=50), whole)


def _fill_unique_every_row_every_pass(cands: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """fill_unique as first written: every pass sorts every row."""
    cands = cands.clone()
    while True:
        sorted_, idx = cands.sort(dim=1, stable=True)
        repeat = torch.zeros_like(cands, dtype=torch.bool)
        repeat.scatter_(1, idx[:, 1:], sorted_[:, 1:] == sorted_[:, :-1])
        bad = repeat | (cands < 0)
        if not bad.any():
            return cands
        cands[bad] = torch.randint(n, (int(bad.sum()),), generator=gen)


@pytest.mark.parametrize("chunk", [8192, 7])  # one chunk of rows; 7-row chunks, a ragged last
def test_fill_unique_rechecking_only_redrawn_rows_draws_the_same_candidates(monkeypatch, chunk):
    import recsim.recsys.retrieval as retrieval

    monkeypatch.setattr(retrieval, "FILL_CHUNK", chunk)
    g = torch.Generator().manual_seed(2)
    for n_items, width in ((50, 20), (30, 25), (1000, 40)):  # from many passes to one or two
        cands = torch.randint(-1, n_items, (400, width), generator=g)
        want = _fill_unique_every_row_every_pass(cands, n_items, torch.Generator().manual_seed(3))
        before = cands.clone()
        assert torch.equal(fill_unique(cands, n_items, torch.Generator().manual_seed(3)), want)
        assert torch.equal(cands, before)  # a copy is filled by default
        own = fill_unique(cands, n_items, torch.Generator().manual_seed(3), copy=False)
        assert own is cands and torch.equal(cands, want)  # copy=False: filled in place


def test_chunked_relevance_equals_the_formula(monkeypatch):
    config = validate({"world": {"n_users": 300, "n_items": 200}})
    world = World.create(config)
    users = torch.arange(300)
    items = torch.randint(200, (300, 50), generator=torch.Generator().manual_seed(0))
    whole = world.relevance(users, items)
    monkeypatch.setattr(world_mod, "PAIR_CHUNK", 64)  # many chunks
    chunked = world.relevance(users, items)
    x, y = world.user_factors[users], world.item_factors[items]
    logit = world.affinity_scale * torch.einsum("bd,bcd->bc", x, y) + world.item_popularity[items]
    expected = torch.sigmoid(logit + world.base_logit)
    torch.testing.assert_close(whole, chunked)
    torch.testing.assert_close(whole, expected)


def test_scale_quick_preset_is_a_tenth_of_the_scenario():
    """``recsim run scale --quick`` and ``recsim bench --quick`` read the scenario's own preset."""
    from recsim.scenario import load_scenario

    sc = load_scenario("scale")
    full = next(iter(sc.resolve([]).values()))
    quick = next(iter(sc.resolve(list(sc.quick)).values()))
    assert (quick.world.n_users, quick.world.n_items) == (full.world.n_users // 10, full.world.n_items // 10)
    assert quick.loop.active_users == full.loop.active_users // 10 and quick.loop.rounds == 3


def _train_once(sparse: bool):
    from recsim.recsys.rankers.multitask import MultiTaskRanker
    from recsim.recsys.rankers.multitask_loss import TrainBatch

    config = validate(
        {"world": {"n_users": 500, "n_items": 300}, "ranker": {"name": "mmoe", "sparse_embeddings": sparse}}
    )
    world = World.create(config)
    ranker = MultiTaskRanker(config, world)
    before = ranker.model_.user_ebc.embedding_bags["t_user"].weight.detach().clone()
    g = torch.Generator().manual_seed(0)
    n = 256
    users = torch.randint(100, (n,), generator=g)  # users 100.. never appear
    items = torch.randint(300, (n,), generator=g)
    positions = torch.randint(1, 11, (n,), generator=g)
    devices = world.user_device[users]
    clicks = (torch.rand(n, generator=g) < 0.3).float()
    data = TrainBatch(
        users=users,
        devices=devices,
        history=torch.full((n, 3), -1),
        items=items,
        category=world.item_category[items],
        dense=torch.zeros(n, 2),
        cells=1 + devices * 10 + positions - 1,
        positions=positions,
        clicks=clicks,
        satisfied=clicks,
    )
    ranker._train(data, TrainStreams.seeded(1))
    after = ranker.model_.user_ebc.embedding_bags["t_user"].weight.detach()
    return before, after


def test_sparse_embeddings_touch_only_the_rows_in_the_batch():
    before, after = _train_once(sparse=True)
    assert torch.equal(before[100:], after[100:])
    assert not torch.equal(before[:100], after[:100])
    before, after = _train_once(sparse=False)  # dense Adam with weight decay moves every row
    assert not torch.equal(before[100:], after[100:])
