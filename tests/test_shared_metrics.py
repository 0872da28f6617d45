"""One meaning per shared metric: spurious_share is the served score's variance share explained by
spurious variables rather than the truth, fitted the same way in both domains."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from recsim.core import metrics
from recsim.core.runner import run_scenario
from recsim.scenario import Scenario


def test_spurious_share_splits_a_score_into_truth_and_spurious_parts():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(5000, generator=g)
    z = [torch.rand(5000, generator=g), torch.randint(0, 2, (5000,), generator=g).float()]
    assert metrics.score_shares(3.0 * truth + 1.0, truth, z)[0] == pytest.approx(0.0, abs=1e-9)
    assert metrics.score_shares(2.0 * z[0] - z[1], truth, z)[0] == pytest.approx(1.0, abs=1e-9)
    # Var(b) / Var(score) with independent uniforms: b = z0 (var 1/12), g = 2 t (var 4/12)
    assert metrics.score_shares(2.0 * truth + z[0], truth, z)[0] == pytest.approx(0.2, abs=0.02)
    # noise the regressors do not explain enters neither part, but the score's variance:
    # Var(score) = 1/12 + 4/12 + 1
    noisy = 2.0 * truth + z[0] + torch.randn(5000, generator=g)
    spurious, truth_share = metrics.score_shares(noisy, truth, z)
    assert spurious == pytest.approx(1 / 17, abs=0.01) and truth_share == pytest.approx(4 / 17, abs=0.03)
    assert metrics.score_shares(torch.ones(5000), truth, z) == (0.0, 0.0)


def test_least_squares_split_does_not_depend_on_the_chunk_size():
    g = torch.Generator().manual_seed(1)
    cols = [torch.rand(1000, generator=g) for _ in range(4)]
    y = cols[0] - 2 * cols[2] + 0.1 * torch.randn(1000, generator=g)
    whole, _ = metrics.least_squares_split(y, cols)
    chunked, _ = metrics.least_squares_split(y, cols, chunk=77)
    assert torch.allclose(whole, chunked, atol=1e-10)
    assert whole[0] == pytest.approx(1.0, abs=0.05) and whole[2] == pytest.approx(-2.0, abs=0.05)


BASE = {
    "world": {"n_users": 300, "n_items": 200},
    "metrics": {"panel_users": 64},
    "loop": {"rounds": 3},
    "tracking": {"enabled": False},
}


def _final(tmp_path, arms: dict, seed: int) -> dict[str, dict]:
    sc = Scenario(name="shared", description="", base=BASE, arms=arms)
    frame = run_scenario(sc, sc.resolve([f"seed={seed}"]), tmp_path / f"run-{seed}")
    return {row["arm"]: row for row in frame.filter(pl.col("round") == 2).iter_rows(named=True)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recommender_spurious_share_reads_the_served_score(tmp_path, seed):
    arms = {name: {"ranker": {"name": name}} for name in ("oracle", "popularity", "random")}
    rows = _final(tmp_path, arms, seed)
    # The oracle serves the true relevance: nothing of its score is left to the loop's variables.
    assert rows["oracle"]["spurious_share"] == pytest.approx(0.0, abs=1e-6)
    # Popularity serves logged clicks, which follow what the loop showed and where, more than relevance.
    assert rows["oracle"]["truth_share"] == pytest.approx(1.0, abs=1e-6)
    assert rows["popularity"]["spurious_share"] > 0.5, rows["popularity"]["spurious_share"]
    # A random score follows neither.
    assert rows["random"]["spurious_share"] < 0.01 and rows["random"]["truth_share"] < 0.01, rows["random"]


def test_the_position_channel_share_has_its_own_name(tmp_path):
    arms = {"tower": {"ranker": {"name": "mmoe", "position": "shallow_tower"}}}
    row = _final(tmp_path, arms, 0)["tower"]
    assert 0.0 < row["position_share"] < 1.0
    assert 0.0 <= row["spurious_share"] <= 1.0 and row["spurious_share"] != row["position_share"]


@pytest.mark.parametrize("seed", [0, 1])
def test_homogenization_is_measured_against_the_ideal_recommenders_history(tmp_path, seed):
    """Chaney et al. 2018's measure: the Jaccard of cumulative interaction sets between true-taste
    neighbours, minus the same under the ideal recommender. The start-up rounds are shared (0
    exactly); the oracle, recommending by true relevance from the whole catalogue, differs from
    the ideal only by click draws (within 0.06, about three times the largest deviation seen);
    random recommendations leave neighbours' histories far apart."""
    base = {
        "world": {"n_users": 300, "n_items": 200},
        "policy": {"n_candidates": 200, "startup_rounds": 3},
        "metrics": {"panel_users": 64},
        "loop": {"rounds": 10},
        "tracking": {"enabled": False},
    }
    arms = {name: {"ranker": {"name": name}} for name in ("oracle", "random")}
    sc = Scenario(name="chaney", description="", base=base, arms=arms)
    frame = run_scenario(sc, sc.resolve([f"seed={seed}"]), tmp_path / "run")
    h = {arm: part.sort("round")["homogenization"].to_list() for (arm,), part in frame.group_by("arm")}
    assert h["oracle"][:3] == [0.0, 0.0, 0.0] and h["random"][:3] == [0.0, 0.0, 0.0]
    assert max(abs(x) for x in h["oracle"]) < 0.06, h["oracle"]
    assert h["random"][-1] < -0.15, h["random"]
    assert set(frame.columns) >= {"jaccard", "jaccard_topk", "homogenization_topk"}
