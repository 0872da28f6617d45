"""Common random numbers: arms of one seed that differ in one mechanism share every other draw.

A fit's draws come from one stream per purpose (:data:`recsim.recsys.rankers.multitask.FIT_STREAMS`),
so two rankers that differ only in the position mode see the same minibatch order and the same
gate-dropout masks; an arm whose only difference is a knob its mode never reads gives the same
bytes as the arm without it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch

import recsim
from recsim.cli.bench import synthetic_rows
from recsim.config import validate
from recsim.recsys.rankers import multitask
from recsim.recsys.rankers.multitask import MultiTaskRanker, fit_streams
from recsim.recsys.world import World
from recsim.scenario import Scenario
from towers.mmoe import MultiTaskNet


def _draws(position: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[torch.Tensor]]:
    """One fit of a ranker with ``position`` on fixed rows: the minibatches it stepped through,
    and the gate-dropout generator's state before each gate draw (equal states, equal masks)."""
    config = validate(
        {
            "seed": 3,
            "world": {"n_users": 200, "n_items": 100},
            "metrics": {"panel_users": 32},
            "ranker": {"name": "mmoe", "position": position, "epochs": 2, "batch_size": 256},
        }
    )
    world = World.create(config)
    rows = synthetic_rows(world, 1500, config.ranker.history_len, torch.Generator().manual_seed(0))
    seen: dict[str, list[torch.Tensor]] = {"batches": [], "gate_states": []}
    real_batches, real_gates = multitask.minibatches, MultiTaskNet.gates

    def batches(*args, **kwargs):
        for b in real_batches(*args, **kwargs):
            seen["batches"].append(b.clone())
            yield b

    def gates(self, logits):
        if self.training:
            seen["gate_states"].append(self.rng.get_state().clone())
        return real_gates(self, logits)

    monkeypatch.setattr(multitask, "minibatches", batches)
    monkeypatch.setattr(MultiTaskNet, "gates", gates)
    ranker = MultiTaskRanker(config, world)
    ranker._train(rows, fit_streams(config.seed, 2))
    monkeypatch.setattr(multitask, "minibatches", real_batches)
    monkeypatch.setattr(MultiTaskNet, "gates", real_gates)
    return seen


def test_arms_that_differ_in_the_position_mode_share_minibatch_order_and_gate_masks(monkeypatch):
    base = _draws("none", monkeypatch)
    assert len(base["batches"]) == 2 * 6 and len(base["gate_states"]) == len(base["batches"])
    # the gate stream advances between steps: equal states below are not one state repeated
    assert not torch.equal(base["gate_states"][0], base["gate_states"][1])
    for mode in ("shallow_tower", "obs_dropout", "feature"):
        other = _draws(mode, monkeypatch)
        assert len(other["batches"]) == len(base["batches"]), mode
        for mine, theirs in zip(other["batches"], base["batches"], strict=True):
            assert torch.equal(mine, theirs), mode
        for mine, theirs in zip(other["gate_states"], base["gate_states"], strict=True):
            assert torch.equal(mine, theirs), mode


def test_fit_streams_are_one_generator_per_purpose():
    streams = fit_streams(0, 4)
    first = {name: torch.rand(8, generator=g) for name, g in vars(streams).items()}
    assert len({tuple(v.tolist()) for v in first.values()}) == 4  # four different streams
    again = fit_streams(0, 4)
    assert all(torch.equal(torch.rand(8, generator=getattr(again, k)), v) for k, v in first.items())
    other_round = fit_streams(0, 5)
    assert not torch.equal(torch.rand(8, generator=other_round.gate), first["gate"])


def _logs(folder: Path, arm: str) -> dict[str, pl.DataFrame]:
    """An arm's log partitions without the ``arm`` column, by path with the arm's name taken out."""
    paths = sorted((folder / "logs").rglob(f"arm-{arm}.parquet"))
    return {str(p.relative_to(folder)).replace(arm, "ARM"): pl.read_parquet(p).drop("arm") for p in paths}


def test_a_knob_the_mode_never_reads_leaves_every_byte_of_the_arm_unchanged(tmp_path):
    """``observation_dropout`` and ``reversal_weight`` are read only by obs_dropout and
    grad_reversal: a shallow-tower arm with them changed writes the same logs and metrics."""
    tower = {"ranker": {"name": "mmoe", "position": "shallow_tower", "window": 2}}
    knob = {"ranker": {**tower["ranker"], "observation_dropout": 0.9, "reversal_weight": 3.0}}
    scenario = Scenario("crn", "", arms={"tower": tower, "knob": knob}, base={"loop": {"rounds": 3}})
    result = recsim.run(
        scenario,
        seeds=[0, 1],
        overrides=["world.n_users=150", "world.n_items=80", "metrics.panel_users=16"],
        out=tmp_path / "run",
        tracking=False,
        threads=1,
    )
    mine, theirs = _logs(tmp_path / "run", "knob"), _logs(tmp_path / "run", "tower")
    assert len(mine) == 2 * 3 and mine.keys() == theirs.keys()
    assert [k for k in mine if not mine[k].equals(theirs[k])] == []
    rows = {arm: result.metrics.filter(pl.col("arm") == arm).drop("arm") for arm in ("knob", "tower")}
    assert rows["knob"].height == 2 * 3 and rows["knob"].equals(rows["tower"])
