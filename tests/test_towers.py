"""Multi-task networks and position modules: invariants, serving independence, learned curves."""

from __future__ import annotations

import pytest
import torch

from recsim.config import validate
from recsim.recsys.rankers.multitask import MultiTaskRanker, append_history
from recsim.recsys.world import World
from towers.mmoe import MultiTaskNet
from towers.position import grad_reverse, position_cells
from towers.ranking import TrainStreams


def _net(arch="mmoe", gate_dropout=0.0, **kw):
    return MultiTaskNet(32, 2, torch.Generator().manual_seed(0), arch=arch, gate_dropout=gate_dropout, **kw)


@pytest.mark.parametrize("arch", ["mmoe", "omoe"])
def test_gates_are_distributions_and_shapes_hold(arch):
    net = _net(arch).eval()
    logits, gates, mixed = net(torch.randn(64, 32, generator=torch.Generator().manual_seed(1)))
    assert logits.shape == (64, 2) and gates.shape == (64, 2, 8) and mixed.shape == (64, 2, 32)
    torch.testing.assert_close(gates.sum(-1), torch.ones(64, 2))
    assert torch.all(gates >= 0)
    if arch == "omoe":  # one gate shared by both tasks
        torch.testing.assert_close(gates[:, 0], gates[:, 1])
    else:
        assert not torch.allclose(gates[:, 0], gates[:, 1])


def test_gate_dropout_zeroes_experts_and_renormalizes():
    net = _net(gate_dropout=0.5).train()
    net.rng = torch.Generator().manual_seed(2)
    _, gates, _ = net(torch.randn(512, 32, generator=torch.Generator().manual_seed(3)))
    torch.testing.assert_close(gates.sum(-1), torch.ones(512, 2))
    dropped = (gates == 0).double().mean()
    assert 0.4 < dropped < 0.6  # about half the experts of each row are dropped
    net.rng = None
    with pytest.raises(RuntimeError, match="generator"):
        net(torch.randn(4, 32))
    net.eval()
    _, gates, _ = net(torch.randn(4, 32))
    assert torch.all(gates > 0)  # no dropout at serving


def test_shared_bottom_is_parameter_matched():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    mmoe, sb = _net("mmoe"), _net("shared_bottom")
    assert abs(count(sb) - count(mmoe)) / count(mmoe) < 0.05
    _, gates, mixed = sb(torch.randn(3, 32))
    assert gates is None and mixed.shape[1] == 2


def test_gradient_reversal_flips_the_gradient():
    x = torch.ones(3, requires_grad=True)
    (grad_reverse(x, 0.5) * 2).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), -1.0))


def test_append_history_matches_a_reference():
    g = torch.Generator().manual_seed(0)
    history = torch.randint(-1, 50, (6, 4), generator=g)
    history = torch.where(torch.arange(4) < torch.tensor([0, 1, 2, 3, 4, 4]).unsqueeze(1), history.abs(), -1)
    # Valid entries must sit at the end (oldest first): move them there.
    ordered = torch.stack([torch.cat([r[r < 0], r[r >= 0]]) for r in history])
    users = torch.tensor([3, 0, 3, 5, 3, 3, 3])
    items = torch.tensor([90, 91, 92, 93, 94, 95, 96])
    got = append_history(ordered, users, items)
    for u in range(6):
        old = [int(v) for v in ordered[u] if v >= 0]
        new = [int(i) for uu, i in zip(users, items, strict=True) if uu == u]
        want = (old + new)[-4:]
        want = [-1] * (4 - len(want)) + want
        assert got[u].tolist() == want, (u, got[u].tolist(), want)
    assert torch.equal(append_history(ordered, users[:0], items[:0]), ordered)


def _append_history_every_row(
    history: torch.Tensor, users: torch.Tensor, items: torch.Tensor
) -> torch.Tensor:
    """append_history as first written: the [U, L + M_max] sort runs over every user's row."""
    n_users, length = history.shape
    order = torch.argsort(users, stable=True)
    users, items = users[order], items[order]
    counts = torch.bincount(users, minlength=n_users)
    slot = torch.arange(users.numel()) - (torch.cumsum(counts, 0) - counts)[users]
    new = torch.full((n_users, int(counts.max())), -1, dtype=history.dtype)
    new[users, slot] = items
    both = torch.cat([history, new], dim=1)
    return both.gather(1, torch.sort((both >= 0).to(torch.int8), dim=1, stable=True).indices)[:, -length:]


def test_append_history_on_the_clicking_rows_equals_the_sort_of_every_row():
    """Rounds of clicks by a few of many users (some users clicking more than L times in a
    round): the same bags as sorting every row, and the input left as it was."""
    g = torch.Generator().manual_seed(4)
    history = torch.full((500, 5), -1, dtype=torch.long)
    for _ in range(6):
        users = torch.randint(0, 500, (40,), generator=g)
        users[:8] = 7  # one user clicks 8 times in the round
        items = torch.randint(0, 1000, (40,), generator=g)
        before = history.clone()
        got = append_history(history, users, items)
        assert torch.equal(got, _append_history_every_row(history, users, items))
        assert torch.equal(history, before) and got is not history
        history = got
    assert (history >= 0).sum() > 100  # bags filled and rolled over


@pytest.mark.parametrize("n_rounds", [1, 3])
def test_features_as_served_equal_the_masked_gathers(n_rounds):
    """Rows from one round or from several, in shuffled order: each row gets the history and
    exposure of the snapshot of its round."""
    from recsim.recsys.rankers.features import ClickFeatures

    g = torch.Generator().manual_seed(n_rounds)
    feats = ClickFeatures(400, 90, 6, ("a", "b"), 5, torch.device("cpu"))
    for r in range(n_rounds):
        feats.snapshots[r] = (torch.randint(-1, 90, (400, 6), generator=g), torch.rand(90, generator=g) * 9)
    m = 2000
    rounds = torch.randint(0, n_rounds, (m,), generator=g)
    users, items = torch.randint(0, 400, (m,), generator=g), torch.randint(0, 90, (m,), generator=g)
    history, exposure = feats.as_served(rounds, users, items)
    for r, (hist, expo) in feats.snapshots.items():
        rows = rounds == r
        assert torch.equal(history[rows], hist[users[rows]]) and torch.equal(
            exposure[rows], expo[items[rows]]
        )
    if n_rounds > 1:  # without round 0's snapshot, the other rounds' rows are still their own
        del feats.snapshots[0]
        history, exposure = feats.as_served(rounds, users, items)
        for r, (hist, expo) in feats.snapshots.items():
            rows = rounds == r
            assert torch.equal(history[rows], hist[users[rows]]) and torch.equal(
                exposure[rows], expo[items[rows]]
            )


def _ranker(position: str, **ranker):
    cfg = validate(
        {
            "world": {"n_users": 60, "n_items": 40},
            "metrics": {"panel_users": 8},
            "ranker": {"name": "mmoe", "position": position, **ranker},
        }
    )
    world = World.create(cfg)
    return MultiTaskRanker(cfg, world), world


@pytest.mark.parametrize("position", ["shallow_tower", "obs_dropout", "grad_reversal", "pal", "feature"])
def test_serving_does_not_depend_on_the_position_input(position):
    ranker, world = _ranker(position)
    users = torch.arange(10)
    items = torch.arange(40).expand(10, 40)
    before = ranker.score(world, users, items, 0)
    model = ranker.model_
    with torch.no_grad():
        if model.tower is not None:
            # Every observed (position, device) cell changes; only "missing" (cell 0) is served.
            model.tower.embed.weight[1:] += torch.randn(model.tower.embed.weight[1:].shape)
            if position == "pal":
                model.tower.embed.weight[0] += 3.0  # PAL serves f alone: even "missing" is unused
        else:
            top = position_cells(torch.ones(2, dtype=torch.long), torch.arange(2), 10)
            mask = torch.ones(model.pos_proj.weight.shape[0], dtype=torch.bool)
            mask[top] = False  # position as a feature is served at position 1
            model.pos_proj.weight[mask] += torch.randn(int(mask.sum()), model.pos_proj.weight.shape[1])
    after = ranker.score(world, users, items, 0)
    torch.testing.assert_close(before, after)


def test_ranker_scores_and_probabilities_have_the_candidate_shape():
    ranker, world = _ranker("none")
    users = torch.tensor([1, 5, 7])
    items = torch.randint(40, (3, 12), generator=torch.Generator().manual_seed(0))
    s = ranker.score(world, users, items, 0)
    p = ranker.predict_proba(world, users, items)
    assert s.shape == p.shape == (3, 12) and torch.all((p > 0) & (p < 1))


def test_bf16_serving_stays_close_to_float32():
    ranker, world = _ranker("shallow_tower")
    cfg = validate(
        {
            "world": {"n_users": 60, "n_items": 40},
            "metrics": {"panel_users": 8},
            "ranker": {"name": "mmoe", "position": "shallow_tower", "serve_bf16": True},
        }
    )
    fast = MultiTaskRanker(cfg, world)
    fast.model_.load_state_dict(ranker.model_.state_dict())
    users = torch.arange(20)
    items = torch.arange(40).expand(20, 40)
    a, b = ranker.score(world, users, items, 0), fast.score(world, users, items, 0)
    assert a.dtype == b.dtype == torch.float32
    assert (a - b).abs().max() < 0.01  # scores are probabilities; bf16 keeps ~3 significant digits
    assert not torch.equal(a, b)  # the bf16 path really ran


def test_bf16_training_runs_the_first_layers_products_in_bfloat16_forward_and_backward():
    """``train_dtype``: in training the experts' and gates' products (and their backward products)
    run in bfloat16 and nothing else does; in eval mode the network is float32's bit for bit."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Products(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm):
                mats = [a for a in args if isinstance(a, torch.Tensor) and a.dim() >= 2]
                self.seen.append((func.overloadpacket.__name__, tuple(mats[0].shape), mats[0].dtype))
            return func(*args, **(kwargs or {}))

    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
    full, half = _net(), _net(train_dtype=torch.bfloat16)
    outs = {}
    for name, net in (("full", full), ("half", half)):
        net.train()
        pre = x.clone().requires_grad_()
        with Products() as rec:
            logits, _, _ = net(pre)
            logits.square().sum().backward()
        outs[name] = (logits.detach(), pre.grad, net.in_w.grad, rec.seen)
    (l32, g32, w32, seen32), (l16, g16, w16, seen16) = outs["full"], outs["half"]
    assert all(dtype == torch.float32 for _, _, dtype in seen32)
    low = [(op, shape) for op, shape, dtype in seen16 if dtype == torch.bfloat16]
    # forward: the experts' [256, 32] x [32, 256] and the gates' [256, 32] x [32, 16] products;
    # backward: each one's input gradient (from its [256, .] output gradient) and weight gradient
    assert sorted(low) == sorted(
        [("addmm", (256, 32)), ("addmm", (256, 32)), ("mm", (256, 256)), ("mm", (256, 16))]
        + [("mm", (32, 256)), ("mm", (32, 256))]
    )
    assert len(seen16) - len(low) == len(seen32) - 6  # mixing and towers stay float32
    assert w16.dtype == g16.dtype == l16.dtype == torch.float32
    # close to float32 training, yet not equal: bfloat16 rounds to 8 significant bits (2^-9 relative),
    # a few roundings a value here; gradients are sums over a batch with cancellation, so their
    # relative error is larger (here 0.016 for the weights' and 0.063 for the input's)
    assert not torch.equal(l16, l32) and (l16 - l32).abs().max() < 0.02 * l32.abs().max()
    assert (w16 - w32).norm() < 0.05 * w32.norm()
    assert not torch.equal(g16, g32) and (g16 - g32).norm() < 0.15 * g32.norm()
    full.eval()
    half.eval()
    with torch.no_grad():
        assert torch.equal(full(x)[0], half(x)[0])


def test_bf16_training_reaches_float32_trainings_loss():
    """A ranker trained with ``train_bf16`` on the same rows, batches and dropout draws ends within
    1% of float32 training's loss: the products' rounding does not hold its training back here."""
    from recsim.cli.bench import synthetic_rows

    losses = {}
    for flag in (False, True):
        cfg = validate(
            {"world": {"n_users": 300, "n_items": 200}, "ranker": {"name": "mmoe", "train_bf16": flag}}
        )
        world = World.create(cfg)
        rows = synthetic_rows(world, 8192, cfg.ranker.history_len, torch.Generator().manual_seed(0))
        ranker = MultiTaskRanker(cfg, world)
        first = ranker._train(rows, TrainStreams.seeded(1))["train_loss"]
        for _ in range(4):
            last = ranker._train(rows, TrainStreams.seeded(1))["train_loss"]
        losses[flag] = (first, last)
    (first32, last32), last16 = losses[False], losses[True][1]
    assert last32 < 0.97 * first32  # it learned something to compare
    assert abs(last16 - last32) < 0.01 * last32
    assert last16 != last32  # the bfloat16 path really ran
