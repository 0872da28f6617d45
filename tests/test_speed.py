"""The fast paths compute what the slow ones did: bit for bit where the change claims it (the MF
gradient and flat Adam, Kendall's tau), up to float rounding where it says so (NDCG, Brier,
entropy, shared-row products, the serving softmax); checkpoints written in the background are the
state of their round; the stage timer and ``recsim bench --profile``."""

from __future__ import annotations

import copy
import io
import json
import math
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import SHORT_RM_FIT
from scipy import stats
from sklearn.metrics import brier_score_loss, ndcg_score

from recsim.core import metrics
from recsim.io.checkpoint import CheckpointStore, CheckpointWriter
from recsim.recsys.rankers.training import FlatAdam, train_bce
from towers.mf import LogisticMF
from towers.ranking import TrainStreams


def _mf_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(300, (n,), generator=g)
    items = torch.randint(200, (n, 1), generator=g)
    return users, items, (torch.rand(n, 1, generator=g) < 0.3).float()


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_mf_closed_form_gradient_and_flat_adam_match_autograd_and_torch_adam_bit_for_bit(weight_decay):
    users, items, labels = _mf_data(5_003, 0)  # a ragged last batch
    base = LogisticMF(300, 200, 8, torch.Generator().manual_seed(1))
    ref, fast = copy.deepcopy(base), copy.deepcopy(base)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.02, weight_decay=weight_decay)
    fast_opt = FlatAdam(fast.parameters(), lr=0.02, weight_decay=weight_decay)
    for epoch in range(3):  # several calls: the flat state carries over as torch's does
        gen = lambda e=epoch: torch.Generator().manual_seed(10 + e)  # noqa: E731
        a = train_bce(ref, ref_opt, (users, items), labels, 2, 256, gen())
        b = train_bce(
            fast,
            fast_opt,
            (users, items),
            labels,
            2,
            256,
            gen(),
            backward=lambda x, y, loss: fast.bce_backward(*x, y, loss),
        )
        assert a == b
    for (name, x), y in zip(ref.state_dict().items(), fast.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    # and the closed form alone equals autograd's gradient, under torch's own optimizer too
    other = copy.deepcopy(base)
    other_opt = torch.optim.Adam(other.parameters(), lr=0.02, weight_decay=weight_decay)
    for p in other.parameters():
        p.grad = torch.zeros_like(p)
    train_bce(
        other, other_opt, (users, items), labels, 1, 256, torch.Generator().manual_seed(3),
        backward=lambda x, y, loss: other.bce_backward(*x, y, loss),
    )  # fmt: skip
    auto = copy.deepcopy(base)
    auto_opt = torch.optim.Adam(auto.parameters(), lr=0.02, weight_decay=weight_decay)
    train_bce(auto, auto_opt, (users, items), labels, 1, 256, torch.Generator().manual_seed(3))
    assert all(
        torch.equal(x, y)
        for x, y in zip(auto.state_dict().values(), other.state_dict().values(), strict=True)
    )
    # and flat Adam under autograd (which adds into the flat gradient's views) equals torch's Adam
    flat = copy.deepcopy(base)
    flat_opt = FlatAdam(flat.parameters(), lr=0.02, weight_decay=weight_decay)
    train_bce(flat, flat_opt, (users, items), labels, 1, 256, torch.Generator().manual_seed(3))
    assert all(
        torch.equal(x, y) for x, y in zip(auto.state_dict().values(), flat.state_dict().values(), strict=True)
    )


def test_small_mf_steps_on_one_thread_give_the_same_weights_and_restore_the_thread_count(monkeypatch):
    import recsim.recsys.rankers.training as training

    users, items, labels = _mf_data(3000, 5)
    weights, before = [], torch.get_num_threads()
    for small_model in (training.SMALL_MODEL, 0):  # one thread, then every thread
        monkeypatch.setattr(training, "SMALL_MODEL", small_model)
        model = LogisticMF(300, 200, 8, torch.Generator().manual_seed(0))
        opt = FlatAdam(model.parameters(), lr=0.01)
        torch.set_num_threads(2)
        try:
            train_bce(
                model,
                opt,
                (users, items),
                labels,
                2,
                256,
                torch.Generator().manual_seed(1),
                backward=lambda x, y, loss, m=model: m.bce_backward(*x, y, loss),
            )
            assert torch.get_num_threads() == 2
        finally:
            torch.set_num_threads(before)
        weights.append(opt.flat.clone())
    assert torch.equal(weights[0], weights[1])


def test_flat_adam_state_round_trip_continues_identically():
    users, items, labels = _mf_data(2_000, 1)
    base = LogisticMF(300, 200, 8, torch.Generator().manual_seed(2))
    a = copy.deepcopy(base)
    opt_a = FlatAdam(a.parameters(), lr=0.01, weight_decay=1e-4)
    step = lambda m, o, s: train_bce(  # noqa: E731
        m, o, (users, items), labels, 1, 128, torch.Generator().manual_seed(s),
        backward=lambda x, y, loss: m.bce_backward(*x, y, loss),
    )  # fmt: skip
    step(a, opt_a, 0)
    saved = copy.deepcopy({"model": a.state_dict(), "opt": opt_a.state_dict()})
    step(a, opt_a, 1)
    b = LogisticMF(300, 200, 8, torch.Generator().manual_seed(99))
    opt_b = FlatAdam(b.parameters(), lr=0.01, weight_decay=1e-4)
    b.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    step(b, opt_b, 1)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def _ranking_model_and_grads(seed: int, steps: int) -> tuple[torch.nn.Module, list[list[torch.Tensor]]]:
    from towers.ranking import RankingModel, RankingSpec

    spec = RankingSpec(60, 50, 5, 2, 4, position="grad_reversal")  # a position group beside the rest
    model = RankingModel(spec, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    grads = [[torch.randn(p.shape, generator=g) for p in model.parameters()] for _ in range(steps)]
    return model, grads


def _step(model: torch.nn.Module, opt, grads: list[torch.Tensor]) -> None:  # noqa: ANN001
    opt.zero_grad(set_to_none=True)
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = g.clone() if p.grad is None else p.grad.copy_(g)
    opt.step()


def test_multitask_flat_adam_is_torch_adam_and_reads_its_old_checkpoints():
    from recsim.recsys.rankers.multitask import MultiTaskConfig, _flat_adam_states, make_optimizer

    rc = MultiTaskConfig(name="mmoe", weight_decay=1e-4, position_lr=0.05)
    base, grads = _ranking_model_and_grads(0, 6)
    ref, old, new = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    position = [p for mod in (ref.tower, ref.adversary) for p in mod.parameters()]
    ids = {id(p) for p in position}
    groups = [{"params": [p for p in ref.parameters() if id(p) not in ids]}, {"params": position, "lr": 0.05}]
    ref_opt = torch.optim.Adam(groups, lr=rc.learning_rate, weight_decay=1e-4)  # the optimizer before
    flat_opt = make_optimizer(new, rc)
    assert len(flat_opt.optimizers) == 2
    for g in grads:
        _step(ref, ref_opt, g)
        _step(new, flat_opt, g)
    assert all(torch.equal(x, y) for x, y in zip(ref.parameters(), new.parameters(), strict=True))
    # a checkpoint written by torch's Adam after 3 steps continues as the uninterrupted run
    position_old = [p for mod in (old.tower, old.adversary) for p in mod.parameters()]
    old_ids = {id(p) for p in position_old}
    rest_old = [p for p in old.parameters() if id(p) not in old_ids]
    old_opt = torch.optim.Adam(
        [{"params": rest_old}, {"params": position_old, "lr": 0.05}], lr=rc.learning_rate, weight_decay=1e-4
    )
    for g in grads[:3]:
        _step(old, old_opt, g)
    resumed, _ = _ranking_model_and_grads(7, 0)
    resumed.load_state_dict(old.state_dict())
    resumed_opt = make_optimizer(resumed, rc)
    resumed_opt.load_state_dict(_flat_adam_states([copy.deepcopy(old_opt.state_dict())], resumed_opt))
    for g in grads[3:]:
        _step(resumed, resumed_opt, g)
    assert all(torch.equal(x, y) for x, y in zip(ref.parameters(), resumed.parameters(), strict=True))


def _scipy_taus(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    with warnings.catch_warnings():  # scipy warns on rows it cannot rank
        warnings.simplefilter("ignore")
        pairs = zip(x.double().numpy(), y.double().numpy(), strict=True)
        return np.array([stats.kendalltau(a, b).statistic for a, b in pairs])


@pytest.mark.parametrize(
    ("rows", "n", "levels"),
    [(64, 1000, None), (40, 37, 4), (20, 2, 1), (9, 513, 2), (3, 4096, None), (5, 1, None)],
)
def test_kendall_tau_b_is_scipys_bit_for_bit(rows, n, levels):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(rows, n, generator=g)
    y = x + torch.randn(rows, n, generator=g)
    if levels is not None:  # ties in x, in y and in both
        x, y = (x * levels).round(), (y * levels).round()
    x[0] = 1.0  # a constant row: undefined
    if rows > 2 and n > 1:
        y[2, 0] = float("nan")  # a NaN score: undefined
    want = _scipy_taus(x, y)
    got = metrics.kendall_tau_b(x, y).numpy()
    assert np.array_equal(want, got, equal_nan=True)
    finite = want[np.isfinite(want)]
    expected = float(np.mean(finite)) if len(finite) else float("nan")
    got_mean = metrics.rank_stability(x, y)
    assert got_mean == expected or (math.isnan(got_mean) and math.isnan(expected))


@pytest.mark.parametrize("levels", [None, 2])
def test_kendall_tau_b_without_ties_in_x_is_scipys_bit_for_bit(levels):
    """Rows untied in x (most rows of learned scores) take x's own order for the (x, y) order."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(30, 700, generator=g)
    y = x + torch.randn(30, 700, generator=g)
    if levels is not None:  # ties in y only
        y = (y * levels).round()
    y[1, 5] = float("nan")
    assert bool((x.sort(1).values.diff(dim=1) != 0).all())  # the case under test: no tie in x
    assert np.array_equal(_scipy_taus(x, y), metrics.kendall_tau_b(x, y).numpy(), equal_nan=True)


def test_kendall_tau_b_in_row_chunks_equals_one_pass():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(50, 300, generator=g), torch.randn(50, 300, generator=g)
    assert torch.equal(metrics.kendall_tau_b(x, y, chunk_elements=900), metrics.kendall_tau_b(x, y))
    with pytest.raises(ValueError, match=r"\[P, N\]"):
        metrics.kendall_tau_b(x, y[:, :10])


@pytest.mark.parametrize(
    ("rows", "n", "k", "levels"), [(128, 500, 10, None), (40, 60, 5, 3), (10, 30, 30, 1)]
)
def test_ndcg_equals_sklearn_with_and_without_ties(rows, n, k, levels):
    g = torch.Generator().manual_seed(k)
    truth = torch.rand(rows, n, generator=g)
    scores = truth + torch.randn(rows, n, generator=g)
    if levels is not None:
        scores = (scores * levels).round()
    truth[0] = 0.0  # a row with no gain counts 0
    want = float(ndcg_score(truth.double().numpy(), scores.double().numpy(), k=k))
    assert metrics.ndcg_at_k(truth, scores, k) == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_brier_and_entropy_equal_sklearn_and_scipy():
    g = torch.Generator().manual_seed(0)
    p, q = torch.rand(3_000, generator=g), torch.rand(3_000, generator=g)
    pn, qn = p.double().numpy(), q.double().numpy()
    y = np.concatenate([np.ones_like(pn), np.zeros_like(pn)])
    want = brier_score_loss(y, np.concatenate([pn, pn]), sample_weight=np.concatenate([qn, 1 - qn]))
    assert metrics.brier(p, q) == pytest.approx(float(want), rel=1e-12)
    counts = torch.randint(0, 6, (1_000,), generator=g).double()
    assert metrics.entropy(counts) == pytest.approx(float(stats.entropy(counts.numpy())), rel=1e-12)


def test_shared_row_products_equal_the_gathered_ones():
    from recsim.config import validate
    from recsim.recsys.world import World, shared_row

    world = World.create(validate({"world": {"n_users": 300, "n_items": 300}}))
    users = torch.arange(0, 200, 3)
    row = torch.arange(300)
    shared = row.expand(len(users), 300)
    assert shared_row(shared) is not None and shared_row(shared.clone()) is None
    assert torch.allclose(world.relevance(users, shared), world.relevance(users, shared.clone()), atol=1e-6)
    assert torch.allclose(
        world.satisfaction(users, shared), world.satisfaction(users, shared.clone()), atol=1e-6
    )
    mf = LogisticMF(200, 300, 16, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(mf(users, shared), mf(users, shared.clone()), atol=1e-5)


def test_gate_softmax_equals_torch_softmax_forward_and_backward():
    from towers.mmoe import MultiTaskNet

    net = MultiTaskNet(32, 2, torch.Generator().manual_seed(0)).eval()
    logits = torch.randn(500, net.n_gates * net.n_experts, generator=torch.Generator().manual_seed(1)) * 20
    want = torch.softmax(logits.view(500, 2, -1), -1)
    with torch.inference_mode():
        fast = net.gates(logits)
    assert torch.allclose(fast, want, rtol=1e-6, atol=1e-7)
    assert torch.allclose(fast.sum(-1), torch.ones(500, 2))
    upstream = torch.randn(500, 2, net.n_experts, generator=torch.Generator().manual_seed(2))
    mine, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    (net.gates(mine) * upstream).sum().backward()
    (torch.softmax(theirs.view(500, 2, -1), -1) * upstream).sum().backward()
    assert torch.allclose(mine.grad, theirs.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["mmoe", "omoe", "shared_bottom"])
@pytest.mark.parametrize("n_tasks", [1, 2])
def test_serving_pass_equals_forward_bit_for_bit(arch, n_tasks):
    from towers.ranking import RankingModel, RankingSpec

    g = torch.Generator().manual_seed(0)
    spec = RankingSpec(60, 50, 4, 3, 10, arch=arch, n_tasks=n_tasks)
    model = RankingModel(spec, g).eval()
    with torch.no_grad():  # trained-looking weights: gates far from uniform
        for p in model.net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    pre = torch.randn(3000, spec.hidden, generator=g)
    with torch.inference_mode():
        want = model(pre.clone())[0]
        got = model.serve(pre.clone(), model.net.serving_weights())
        assert torch.equal(got, want), (arch, n_tasks)
        # bfloat16: the first layer's products in bfloat16, the rest in float32; closer to float32
        # than running the whole network under bfloat16 autocast
        half = model.serve(pre.clone(), model.net.serving_weights(torch.bfloat16))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(pre.clone())[0].float()
    assert half.dtype == torch.float32
    err, err_autocast = (half - want).abs(), (autocast - want).abs()
    assert err.max() < 0.05 * want.abs().max() and err.mean() < err_autocast.mean()


def test_row_gradients_equal_the_dense_backward_up_to_rounding():
    from recsim.cli.bench import synthetic_rows
    from recsim.config import validate
    from recsim.recsys.rankers.multitask import MultiTaskRanker
    from recsim.recsys.world import World

    config = validate({"world": {"n_users": 300, "n_items": 200}, "ranker": {"name": "mmoe"}})
    world = World.create(config)
    rows = synthetic_rows(world, 2048, config.ranker.history_len, torch.Generator().manual_seed(0))
    grads = []
    for row_grads in (False, True):
        ranker = MultiTaskRanker(config, world)
        model = ranker.model_
        model.row_gradients(row_grads)
        model.train()
        model.use_streams(TrainStreams.seeded(1))
        loss, _ = ranker.loss_(rows)
        model.backward(loss)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    dense, rowwise = grads
    assert dense.keys() == rowwise.keys()
    tables = [n for n in dense if "embedding_bags" in n]
    assert len(tables) == 5 and all(not rowwise[n].is_sparse for n in tables)
    for name in dense:
        assert torch.allclose(rowwise[name], dense[name], rtol=1e-5, atol=1e-7), name


def test_row_gradients_land_in_flat_adams_gradient_as_autograds_own_accumulation():
    """``RankingModel.backward`` adds the tables' row gradients into the optimizer's views itself:
    the same values as autograd's ``dense += sparse``, bit for bit, and in the flat gradient that
    :class:`FlatAdam` steps on (a new ``.grad`` tensor there would leave the tables untrained)."""
    from recsim.cli.bench import synthetic_rows
    from recsim.config import validate
    from recsim.recsys.rankers.multitask import MultiTaskRanker
    from recsim.recsys.world import World

    config = validate({"world": {"n_users": 300, "n_items": 200}, "ranker": {"name": "mmoe"}})
    world = World.create(config)
    rows = synthetic_rows(world, 2048, config.ranker.history_len, torch.Generator().manual_seed(0))
    grads, moved = [], []
    for ours in (False, True):
        ranker = MultiTaskRanker(config, world)
        model, flat = ranker.model_, ranker.opt_.optimizers[0]
        tables = model.embedding_parameters()
        assert all(bag.sparse for bag in model._bags())  # row gradients on the CPU
        before = [t.detach().clone() for t in tables]
        model.train()
        model.use_streams(TrainStreams.seeded(1))
        loss, _ = ranker.loss_(rows)
        ranker.opt_.zero_grad()
        if ours:  # autograd hands each table its row gradient; the add into the view is ours
            seen: list[bool] = []

            def record(p: torch.Tensor, seen: list[bool] = seen) -> None:
                seen.append(p.grad.is_sparse)

            hooks = [t.register_post_accumulate_grad_hook(record) for t in tables]
            model.backward(loss)
            assert len(seen) == len(tables) and all(seen)
            for hook in hooks:
                hook.remove()
        else:
            loss.backward()
        assert flat.grad.abs().sum() > 0
        grads.append(flat.grad.clone())
        for t in tables:  # still views of the flat gradient
            assert t.grad.untyped_storage().data_ptr() == flat.grad.untyped_storage().data_ptr()
        ranker.opt_.step()
        moved.append(all(not torch.equal(t, b) for t, b in zip(tables, before, strict=True)))
    assert torch.equal(grads[0], grads[1])
    assert moved == [True, True]
    with pytest.raises(RuntimeError, match="second time"):  # a failed backward keeps the views
        model.backward(loss)
    assert all(t.grad.untyped_storage().data_ptr() == flat.grad.untyped_storage().data_ptr() for t in tables)


@pytest.mark.parametrize(
    ("torch_kind", "row_kind", "lr", "state_keys"),
    [
        ("Adagrad", "RowAdagrad", 0.05, ("sum", "step")),
        ("SparseAdam", "RowSparseAdam", 0.01, ("exp_avg", "exp_avg_sq")),
    ],
)
def test_row_optimizers_equal_torchs_sparse_steps_bit_for_bit(torch_kind, row_kind, lr, state_keys):
    from recsim.recsys.rankers import training

    g = torch.Generator().manual_seed(0)
    start = torch.randn(3000, 8, generator=g)
    theirs, mine = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    opt_theirs = getattr(torch.optim, torch_kind)([theirs], lr=lr)
    opt_mine = getattr(training, row_kind)([mine], lr=lr)
    for _ in range(12):
        ids = torch.randint(3000, (2000,), generator=g)  # repeated rows: the gradient is coalesced
        upstream = torch.randn(2000, 8, generator=g)
        for param, opt in ((theirs, opt_theirs), (mine, opt_mine)):
            opt.zero_grad()
            (torch.nn.functional.embedding(ids, param, sparse=True) * upstream).sum().backward()
            with torch.sparse.check_sparse_tensor_invariants(enable=False):
                opt.step()
    assert torch.equal(mine, theirs)
    for key in state_keys:  # the same state, under torch's own names
        assert torch.equal(
            torch.as_tensor(opt_mine.state[mine][key]), torch.as_tensor(opt_theirs.state[theirs][key])
        )


@pytest.mark.parametrize(
    ("row_kind", "state_keys"), [("RowAdagrad", ("sum",)), ("RowSparseAdam", ("exp_avg", "exp_avg_sq"))]
)
@pytest.mark.parametrize("touched", [100, 2000, 3000])
def test_row_optimizer_state_dicts_keep_touched_rows_and_restore_exactly(row_kind, state_keys, touched):
    from recsim.recsys.rankers import training

    g = torch.Generator().manual_seed(0)
    param = torch.nn.Parameter(torch.randn(3000, 8, generator=g))
    opt = getattr(training, row_kind)([param], lr=0.01)
    for _ in range(3):
        ids = torch.randint(touched, (touched,), generator=g)  # 95% of the first `touched` rows in all
        opt.zero_grad()
        upstream = torch.randn(touched, 8, generator=g)
        (torch.nn.functional.embedding(ids, param, sparse=True) * upstream).sum().backward()
        with torch.sparse.check_sparse_tensor_invariants(enable=False):
            opt.step()
    untouched = min(touched + 7, 2999)
    opt.state[param][state_keys[0]][untouched, 3] = -0.0  # a negative zero is a value to keep
    saved = opt.state_dict()
    entry = saved["state"][0]
    if touched < 3000:  # a tenth of the rows or more have no state: only those with state are written
        assert entry["n_rows"] == 3000 and entry["rows"].tolist()[-1] == untouched
        assert all(entry[k].shape == (len(entry["rows"]), 8) for k in state_keys)
    else:
        assert "rows" not in entry and all(entry[k].shape == (3000, 8) for k in state_keys)
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    other = getattr(training, row_kind)([torch.nn.Parameter(param.detach().clone())], lr=0.01)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    restored = other.state[other.param_groups[0]["params"][0]]
    for key in state_keys:
        a, b = opt.state[param][key], restored[key]
        assert torch.equal(a.view(torch.int32), b.view(torch.int32)), key  # bits: -0.0 stays -0.0
    assert float(restored["step"]) == float(opt.state[param]["step"])
    if "rows" in entry:  # a state that does not fit its table is refused in one line
        bad = {**saved, "state": {0: {**entry, "rows": entry["rows"] + 3000}}}
        with pytest.raises(ValueError, match="rows outside its 3000"):
            other.load_state_dict(bad)


def test_start_up_rounds_score_only_the_shown_items():
    from recsim.config import validate
    from recsim.recsys.domain import RecsysDomain

    config = validate(
        {"world": {"n_users": 50, "n_items": 80}, "policy": {"startup_rounds": 1}, "ranker": {"name": "mf"}}
        | {"metrics": {"panel_users": 20}}
    )
    domain = RecsysDomain(config)
    state = domain.initial_state()
    shapes = []
    score = state.ranker.score
    state.ranker.score = lambda w, u, i, r: shapes.append(tuple(i.shape)) or score(w, u, i, r)
    domain.act(state, 0)
    domain.act(state, 1)
    k = config.policy.slate_size
    assert shapes == [(50, k), (50, 80)]  # round 0: random slates, only their items; round 1: all


@pytest.mark.parametrize("ranker", [{"name": "mf"}, {"name": "mmoe", "window": 2}])
def test_panel_rows_reused_in_act_give_the_same_run(tmp_path, monkeypatch, ranker):
    import polars as pl

    import recsim
    from recsim.recsys.domain import RecsysDomain
    from recsim.recsys.rankers.mf import MFRanker
    from recsim.recsys.rankers.multitask import MultiTaskRanker

    scenario = {
        "name": "reuse",
        "base": {
            "world": {"n_users": 300, "n_items": 200},
            "policy": {"startup_rounds": 1},
            "loop": {"rounds": 4},
            "metrics": {"panel_users": 100},
        },
        "arms": {"a": {"ranker": ranker}},
    }
    scored: list[int] = []
    real = RecsysDomain._scores

    def spy(self, state, users, cands, score):  # noqa: ANN001, ANN202
        return real(self, state, users, cands, lambda u, c: scored.append(len(u)) or score(u, c))

    monkeypatch.setattr(RecsysDomain, "_scores", spy)
    recsim.run(scenario, out=tmp_path / "reused", threads=1, tracking=False)
    assert scored == [200, 200, 200]  # rounds 1-3: the 100 panel users' rows come from the panel
    for cls in (MFRanker, MultiTaskRanker):
        monkeypatch.setattr(cls, "scores_from_fit", False)
    scored.clear()
    recsim.run(scenario, out=tmp_path / "full", threads=1, tracking=False)
    assert scored == [300, 300, 300]
    files = sorted((tmp_path / "full").rglob("*.parquet"))
    assert len(files) > 4
    for path in files:
        other = tmp_path / "reused" / path.relative_to(tmp_path / "full")
        assert pl.read_parquet(path).equals(pl.read_parquet(other)), path.name


@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.7, 0.3), (0.0, 2.5)])
def test_serving_score_in_place_equals_the_written_formula(weights):
    from types import SimpleNamespace

    from recsim.recsys.rankers.multitask import MultiTaskRanker

    click_weight, satisfaction_weight = weights
    ranker = SimpleNamespace(
        spec=SimpleNamespace(n_tasks=2),
        rc=SimpleNamespace(click_weight=click_weight, satisfaction_weight=satisfaction_weight),
    )
    logits = torch.randn(300, 70, 2, generator=torch.Generator().manual_seed(1)) * 4
    p = torch.sigmoid(logits[..., 0])
    want = click_weight * p + satisfaction_weight * p * torch.sigmoid(logits[..., 1])
    assert torch.equal(MultiTaskRanker._scores_of(ranker, logits), want)


@pytest.mark.parametrize(
    "ranker",
    [
        {"position": "shallow_tower", "serve_bf16": True},
        {"position": "shallow_tower"},
        {"position": "feature"},
        {"name": "single_task", "position": "none"},
        {"name": "shared_bottom", "position": "pal", "serve_bf16": True},
    ],
)
def test_score_and_predict_equal_score_and_predict_proba_bit_for_bit(ranker):
    """One pass against two, after a fit (tower biases and history bags not zero), on every
    item (a shared row) and on per-user candidates; and for a round predict_proba does not serve,
    the prediction is predict_proba's own."""
    import polars as pl

    from recsim.config import validate
    from recsim.recsys.domain import RecsysDomain

    cfg = validate(
        {"world": {"n_users": 300, "n_items": 120}, "ranker": {"name": "mmoe", **ranker}}
        | {"metrics": {"panel_users": 20}}
    )
    domain = RecsysDomain(cfg)
    state = domain.initial_state()
    slates = domain.act(state, 0)
    frame = domain.log_frame(state, slates, domain.feedback(state, slates, 0))
    state.ranker.fit(frame.with_columns(pl.lit(0, dtype=pl.Int32).alias("round")), state.world, 0)
    model, world, k = state.ranker, state.world, cfg.policy.slate_size
    g = torch.Generator().manual_seed(2)
    users = torch.arange(0, 300, 2)
    for items in (
        torch.arange(120).expand(len(users), 120),
        torch.randint(0, 120, (len(users), 37), generator=g),
    ):
        pick = torch.rand(items.shape, generator=g).topk(k, dim=1).indices
        scores, predicted_at = model.score_and_predict(world, users, items, 1)
        assert torch.equal(scores, model.score(world, users, items, 1))
        assert torch.equal(predicted_at(pick), model.predict_proba(world, users, items.gather(1, pick)))
        _, other_round = model.score_and_predict(world, users, items, 3)
        assert torch.equal(other_round(pick), model.predict_proba(world, users, items.gather(1, pick)))


@pytest.mark.parametrize(
    "arm,predicted_rows",
    [
        # per-user candidates, bfloat16 serving, the bias tower: no shown item is scored again
        ({"policy": {"n_candidates": 40}, "ranker": {"position": "shallow_tower", "serve_bf16": True}}, []),
        # float32, single task
        ({"policy": {"n_candidates": 40}, "ranker": {"name": "single_task", "position": "feature"}}, []),
        # every item scored, the panel's rows reused: every shown item predicted in one call
        ({"ranker": {"position": "feature"}}, [300, 300, 300]),
    ],
)
def test_shown_items_predicted_from_the_scoring_pass_give_the_same_run(
    tmp_path, monkeypatch, arm, predicted_rows
):
    """``score_and_predict`` (one pass) against ``score`` then ``predict_proba`` on the shown items
    (two): the same logs and metrics byte for byte, and the shown items are not scored twice."""
    import polars as pl

    import recsim
    from recsim.recsys.rankers.multitask import MultiTaskRanker

    scenario = {
        "name": "fused",
        "base": {
            "world": {"n_users": 300, "n_items": 200},
            "policy": {"startup_rounds": 1},
            "loop": {"rounds": 4},
            "metrics": {"panel_users": 100},
            "ranker": {"name": "mmoe", "window": 2},
        },
        "arms": {"a": arm},
    }
    rows: list[int] = []
    real = MultiTaskRanker.predict_proba
    monkeypatch.setattr(
        MultiTaskRanker, "predict_proba", lambda self, w, u, i: rows.append(len(u)) or real(self, w, u, i)
    )
    recsim.run(scenario, out=tmp_path / "fused", threads=1, tracking=False)
    assert rows == predicted_rows  # round 0 too: the random slates' items are scored once
    monkeypatch.delattr(MultiTaskRanker, "score_and_predict")
    rows.clear()
    recsim.run(scenario, out=tmp_path / "twice", threads=1, tracking=False)
    assert rows == [300] * 4
    files = sorted((tmp_path / "twice").rglob("*.parquet"))
    assert len(files) > 4
    for path in files:
        other = tmp_path / "fused" / path.relative_to(tmp_path / "twice")
        assert pl.read_parquet(path).equals(pl.read_parquet(other)), path.name


def test_background_checkpoint_holds_the_state_of_its_round(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    weights = torch.zeros(4)
    with CheckpointWriter(store) as writer:
        for r in range(3):
            writer.wait()  # as the loop does before fit: then the state may change in place
            weights += 1
            writer.submit(r, "a", {"w": weights, "nested": [weights.clone(), {"r": r}]})
    assert store.rounds("a") == [1, 2]
    for r in (1, 2):
        payload = torch.load(store.path(r, "a"), weights_only=True)
        assert payload["round"] == r and payload["w"].tolist() == [r + 1.0] * 4
        assert payload["nested"][0].tolist() == [r + 1.0] * 4 and payload["nested"][1] == {"r": r}
    assert not list(tmp_path.rglob("*.tmp-*"))


TWO_TOWER = ["policy.retrieval=two_tower", "policy.ivf_lists=8", "policy.n_candidates=50", "ranker.window=1"]


@pytest.mark.parametrize(
    ("scenario", "extra"),
    [
        ("feedback-loop", []),
        ("feedback-loop", ["ranker.name=mf"]),  # flat Adam: the state's tensors are its views
        ("feedback-loop", TWO_TOWER),
        ("llm-self-reward", []),
        ("llm-critique", []),
        ("llm-reasoning-rm", []),
    ],
)
def test_checkpoints_written_late_equal_checkpoints_written_at_once(
    tmp_path, monkeypatch, scenario, extra, small
):
    """The loop's contract: act, feedback and log do not change the state in place, so a write
    that runs as late as the loop allows (when fit waits for it) stores the same tensors as one
    that ran the moment the round ended. Checked by deferring every write to that wait."""
    import recsim.core.units as units
    from recsim.core.units import Unit, run_unit
    from recsim.scenario import load_scenario

    sc = load_scenario(scenario)
    if scenario == "feedback-loop":
        overrides = [*small, "loop.rounds=3", *extra]
    else:
        overrides = [*sc.quick, "loop.rounds=3", "llm.labeler.initial_prompts=64", "tracking.enabled=false"]
        overrides += [*SHORT_RM_FIT, *extra]
    arm, config = next(iter(sc.resolve(overrides).items()))

    class Deferred(CheckpointWriter):
        def submit(self, round_, arm, payload):  # noqa: ANN001
            self.wait()
            self._late = (round_, arm, payload)

        def wait(self):  # noqa: ANN201
            late, self._late = getattr(self, "_late", None), None
            return self.store.save(*late) if late is not None else None

    class AtOnce(CheckpointWriter):
        def submit(self, round_, arm, payload):  # noqa: ANN001
            self.store.save(round_, arm, payload)

    for name, writer in (("late", Deferred), ("now", AtOnce)):
        monkeypatch.setattr(units, "CheckpointWriter", writer)
        config_keep = config.model_copy(
            update={"loop": config.loop.model_copy(update={"keep_checkpoints": 5})}
        )
        run_unit(Unit(arm, config.seed, config_keep), tmp_path / name, threads=1)
    files = sorted(p.relative_to(tmp_path / "now") for p in (tmp_path / "now").rglob("*.ckpt.pt"))
    assert len(files) == 3
    for rel in files:
        a = torch.load(tmp_path / "now" / rel, weights_only=True)
        b = torch.load(tmp_path / "late" / rel, weights_only=True)
        _same_tree(a, b, str(rel))


def _same_tree(a: object, b: object, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _same_tree(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_tree(x, y, f"{where}/{i}")
    else:
        assert a == b or (a != a and b != b), where


def _click_round(round_: int, users: list[int], clicks: list[bool], items: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "round": [round_] * len(users),
            "user": users,
            "position": [1 + i % 3 for i in range(len(users))],
            "item": items,
            "click": clicks,
            "exploration": [False] * len(users),
            "device": ["a"] * len(users),
        }
    )


def test_click_features_checkpoint_is_compact_and_restores_exactly():
    from recsim.recsys.rankers.features import ClickFeatures

    def make() -> ClickFeatures:
        return ClickFeatures(40, 30, 4, ("a", "b"), 3, torch.device("cpu"))

    feats = make()
    feats.update(
        _click_round(0, [0, 1, 2, 3, 5, 5], [True, True, False, True, True, True], [1, 2, 3, 4, 5, 6]), 0
    )
    feats.update(_click_round(1, [1, 2, 7, 9], [True, False, True, False], [7, 8, 9, 10]), 1)
    state = feats.state_dict()
    assert state["history"].dtype == torch.int32
    by_round = {entry[0]: entry for entry in state["snapshots"]}
    # round 0's snapshot (all empty) differs from today's history in every user who ever clicked;
    # round 1's only in those who clicked in round 1
    assert by_round[0][1].tolist() == [0, 1, 3, 5, 7]
    assert by_round[1][1].tolist() == [1, 7]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    back = make()
    back.load_state_dict(torch.load(buffer, weights_only=True))
    assert back.history.dtype == torch.long and torch.equal(back.history, feats.history)
    assert back.snapshots.keys() == feats.snapshots.keys()
    for r, (hist, expo) in feats.snapshots.items():
        assert torch.equal(back.snapshots[r][0], hist) and torch.equal(back.snapshots[r][1], expo)
    whole = {**state, "snapshots": [[r, h, e] for r, (h, e) in feats.snapshots.items()]}  # whole snapshots
    back.load_state_dict(whole)
    assert all(torch.equal(back.snapshots[r][0], feats.snapshots[r][0]) for r in feats.snapshots)
    bad = {
        **state,
        "snapshots": [[1, torch.tensor([40]), torch.zeros(1, 4, dtype=torch.int32), state["exposure"]]],
    }
    with pytest.raises(ValueError, match="does not fit 40 users x 4 items"):
        back.load_state_dict(bad)


def test_background_checkpoint_errors_surface(tmp_path):
    (tmp_path / "round=0").write_text("a file where the round's folder goes")
    with pytest.raises(OSError), CheckpointWriter(CheckpointStore(tmp_path)) as writer:
        writer.submit(0, "a", {"w": torch.ones(2)})


def test_stage_timer_covers_every_round_and_stage(small):
    from recsim.core.loop import STAGES, StageTimes
    from recsim.core.units import Unit, run_unit
    from recsim.scenario import load_scenario

    configs = load_scenario("feedback-loop").resolve([*small, "loop.rounds=3", "tracking.enabled=false"])
    config = configs["oracle"]
    timer = StageTimes()
    with tempfile.TemporaryDirectory() as tmp:
        run_unit(Unit("oracle", config.seed, config), Path(tmp), timer=timer)
    assert [r["round"] for r in timer.rounds] == [0, 1, 2]
    assert all(set(r) == {"round", *STAGES} and all(r[s] >= 0 for s in STAGES) for r in timer.rounds)
    assert all(r["act"] > 0 and r["checkpoint"] > 0 for r in timer.rounds)
    assert set(timer.usage) == set(STAGES)
    assert all(
        u["cpu_user_s"] >= 0 and u["cpu_sys_s"] >= 0 and u["minor_faults"] >= 0 for u in timer.usage.values()
    )


def test_stage_usage_counts_the_pages_a_stage_touches_first():
    """A stage that writes 64 MiB the allocator just took from the system (above glibc's largest
    mmap threshold, 32 MiB: fresh pages) is charged at least one fault per 2 MiB huge page (at
    least 16,384 with 4 KiB pages); the stages it did not run in are charged nothing."""
    from recsim.core.loop import StageTimes

    timer = StageTimes()
    timer.start(0)
    with timer.stage("fit"):
        torch.empty(1 << 24).fill_(1.0)  # 64 MiB
    assert timer.usage["fit"]["minor_faults"] >= 32, timer.usage["fit"]
    assert all(
        timer.usage[s] == {"cpu_user_s": 0, "cpu_sys_s": 0, "minor_faults": 0}
        for s in timer.usage
        if s != "fit"
    )


def test_bench_profile_prints_stages_and_refuses_bad_input(small):
    from recsim.core.loop import STAGES

    cmd = [sys.executable, "-m", "recsim", "bench", "--profile", "feedback-loop", "--arm", "oracle"]
    sets = [a for s in small for a in ("--set", s)]
    res = subprocess.run([*cmd, "--rounds", "2", *sets], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = {d["name"]: d for d in map(json.loads, res.stdout.splitlines())}
    for stage in STAGES:
        assert lines[f"profile_{stage}_s"]["value"] >= 0
        assert {"cpu_user_s", "cpu_sys_s", "minor_faults"} <= set(lines[f"profile_{stage}_s"])
    assert lines["profile_act_s"]["cpu_user_s"] > 0
    shares = [lines[f"profile_{stage}_s"]["share"] for stage in STAGES]
    assert sum(shares) == pytest.approx(1, abs=1e-3)
    assert lines["profile_total_s"]["rounds"] == 2
    bad = subprocess.run([*cmd[:-1], "nope", "--rounds", "1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not an arm" in bad.stderr and bad.stderr.count("\n") == 1
    bad = subprocess.run(
        [sys.executable, "-m", "recsim", "bench", "--only", "nope"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--only" in bad.stderr


def test_startup_floor_draws_the_runs_three_figures_and_times_each_step(tmp_path):
    """``startup_feedback_loop_floor_s``'s child: on a finished one-round run of the default scenario
    it draws what that run drew (the same three figures) and prints the seconds of its five steps."""
    from recsim.cli.bench import STARTUP_FLOOR_SCRIPT, _timed_output, time_recsim_run

    run, figures = tmp_path / "run", tmp_path / "figures"
    figures.mkdir()
    time_recsim_run("feedback-loop", ("--rounds", "1", "--set", "world.n_users=300"), out=run)
    drawn = {"curves.png", "position_curves.png", "intervals.png"}
    assert drawn <= {p.name for p in run.iterdir()}
    cmd = [sys.executable, "-c", STARTUP_FLOOR_SCRIPT, str(run), str(figures), "feedback-loop"]
    seconds, printed = _timed_output(cmd)
    steps = json.loads(printed.strip().splitlines()[-1])
    assert list(steps) == ["torch_s", "torchrec_s", "recsim_s", "matplotlib_s", "figures_s"]
    assert all(v > 0 for v in steps.values()) and sum(steps.values()) < seconds
    assert {p.name for p in figures.iterdir()} == drawn
    assert all((figures / name).read_bytes() == (run / name).read_bytes() for name in drawn)


def test_stage_flops_charge_each_product_to_the_stage_it_ran_in():
    """2 x m x k x n FLOPs for an [m, k] x [k, n] product in the stage it ran in (batched products
    per batch), none for elementwise ops; products outside any stage are left to the caller."""
    from torch.utils.flop_counter import FlopCounterMode

    from recsim.cli.bench import _StageFlops

    a, b = torch.ones(64, 32), torch.ones(32, 16)
    counter = FlopCounterMode(display=False)
    timer = _StageFlops(counter)
    with counter:
        a @ b  # outside the stages
        timer.start(0)
        with timer.stage("fit"):
            a @ b
            torch.bmm(torch.ones(3, 8, 4), torch.ones(3, 4, 5))
        with timer.stage("act"):
            (a * 2).relu_().sum()
        with timer.stage("fit"):
            torch.addmm(torch.zeros(16), torch.ones(10, 32), b)
    assert timer.flops == {"fit": 2 * 64 * 32 * 16 + 2 * 3 * 8 * 4 * 5 + 2 * 10 * 32 * 16, "act": 0}
    assert counter.get_total_flops() == timer.flops["fit"] + 2 * 64 * 32 * 16


def test_profile_counts_the_rankers_training_products_from_their_shapes(small):
    """The fit stage's counted FLOPs are the trained examples x 6 x the network's dense
    multiply-accumulates (forward 2 per MAC, backward twice that), the count ``recsim bench``'s
    training peak ratio uses: one epoch on a one-round window trains on every impression of the
    round once. The CLI prints them per stage and against the GEMM peak."""
    from recsim.cli.bench import count_dense_flops
    from recsim.core.units import Unit
    from recsim.recsys.rankers.multitask import MultiTaskRanker
    from recsim.recsys.world import World
    from recsim.scenario import load_scenario

    sets = [*small, "loop.rounds=2", "tracking.enabled=false", "ranker.epochs=1", "ranker.window=1"]
    config = load_scenario("feedback-loop").resolve(sets)["mmoe"]
    flops = count_dense_flops(Unit("mmoe", config.seed, config))
    model = MultiTaskRanker(config, World.create(config)).model_
    assert config.loop.active_users is None  # every user is shown one slate a round
    per_round = config.world.n_users * config.policy.slate_size
    assert flops["fit"] == 2 * per_round * 6 * model.dense_macs_per_example()
    assert flops["act"] > 0 and flops["measure"] > 0 and flops["log"] == 0

    cmd = [sys.executable, "-m", "recsim", "bench", "--profile", "feedback-loop", "--arm", "mmoe", "--flops"]
    res = subprocess.run(
        [*cmd, *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    lines = {d["name"]: d for d in map(json.loads, res.stdout.splitlines())}
    assert lines["profile_fit_s"]["dense_gflop"] == round(flops["fit"] / 1e9, 3)
    assert 0 < lines["profile_fit_s"]["gemm_peak_share"] < 2
    dense = lines["profile_dense_gflop"]["value"]
    assert dense == pytest.approx(sum(v for k, v in flops.items() if k != "setup") / 1e9, abs=1e-3)
    at_peak = lines["profile_rounds_at_gemm_peak_s"]["value"]
    # printed values are rounded to 4 decimals
    assert at_peak == pytest.approx(dense / lines["profile_gemm_peak_gflops"]["value"], rel=1e-3, abs=1e-4)
    bad = subprocess.run(
        [sys.executable, "-m", "recsim", "bench", "--only", "core", "--flops"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--profile" in bad.stderr and bad.stderr.count("\n") == 1


def test_peer_size_scenario_and_the_loop_group_run(tmp_path):
    from recsim.cli.bench import _loop_lines, peer_scenario, time_recsim_run

    sc = peer_scenario({"name": "mf"}, 1, 1)
    assert sc["base"]["world"] == {"n_users": 1000, "n_items": 1000} and sc["base"]["loop"]["rounds"] == 2
    assert time_recsim_run(sc) > 0
    lines = {d["name"]: d for d in map(json.loads, _loop_lines(True, {}))}
    assert (
        lines["loop_rounds_per_s_early"]["value"] > 0
        and lines["loop_rounds_per_s_early"]["averaged"] == "10-14"
    )
    assert (
        lines["loop_rounds_per_s_late"]["value"] > 0
        and lines["loop_rounds_per_s_late"]["averaged"] == "25-29"
    )
    assert lines["loop_late_vs_early_round_cost"]["value"] > 0


def test_peer_group_counts_the_mmoe_runs_training_products():
    """The peer group's FLOP count of the MMoE run: with a window of 5 rounds and 2 epochs, round 0
    trains on its 10,000 impressions twice and round 1 on 20,000 twice, 6 x the dense
    multiply-accumulates each (the same count as the training peak ratio's)."""
    from recsim.cli.bench import _scenario_flops, peer_scenario
    from recsim.config import validate
    from recsim.recsys.rankers.multitask import MultiTaskRanker
    from recsim.recsys.world import World

    flops = _scenario_flops(peer_scenario({"name": "mmoe", "window": 5}, 1, 1), "mmoe")
    config = validate({"ranker": {"name": "mmoe"}, "world": {"n_users": 1000, "n_items": 1000}})
    assert config.ranker.epochs == 2
    macs = MultiTaskRanker(config, World.create(config)).model_.dense_macs_per_example()
    assert flops["fit"] == (10_000 + 20_000) * 2 * 6 * macs
    assert flops["act"] > flops["measure"] > 0 and flops["setup"] == 0


def test_peer_python_without_trecs_is_refused_in_one_line():
    cmd = [sys.executable, "-m", "recsim", "bench", "--only", "peer", "--peer-python", sys.executable]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "cannot import T-RECS" in res.stderr and res.stderr.count("\n") == 1
    assert res.stdout == ""
