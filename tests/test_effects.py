"""The loop produces the effects it exists to show (several seeds, directions not sizes).

Each check compares paired arms (same seed, same world) and requires the direction on every seed;
the margins are far below the effects seen at these sizes (printed in the assertion messages).
"""

from __future__ import annotations

import polars as pl
import pytest

from recsim.core.runner import run_scenario
from recsim.scenario import Scenario

BASE = {
    "world": {"n_users": 500, "n_items": 300},
    "metrics": {"panel_users": 64},
    "loop": {"rounds": 6},
    "tracking": {"enabled": False},
}
SEEDS = (0, 1, 2)


def _final(tmp_path, arms, seed, name):
    sc = Scenario(name=name, description="", base=BASE, arms=arms)
    frame = run_scenario(sc, sc.resolve([f"seed={seed}"]), tmp_path / f"{name}-{seed}")
    return {row["arm"]: row for row in frame.filter(pl.col("round") == 5).iter_rows(named=True)}


@pytest.mark.parametrize("seed", SEEDS)
def test_exploration_traffic_keeps_the_catalogue_in_view(tmp_path, seed):
    rows = _final(
        tmp_path,
        {"greedy": {"ranker": {"name": "mf"}}, "explore": {"policy": {"exploration_share": 0.2}}},
        seed,
        "explore",
    )
    g, e = rows["greedy"], rows["explore"]
    assert e["coverage"] > g["coverage"] + 0.1, (g["coverage"], e["coverage"])
    assert e["gini"] < g["gini"], (g["gini"], e["gini"])


@pytest.mark.parametrize("seed", SEEDS)
def test_learning_from_logs_beats_random_and_trails_the_oracle(tmp_path, seed):
    rows = _final(
        tmp_path,
        {
            "mf": {"ranker": {"name": "mf"}},
            "random": {"ranker": {"name": "random"}},
            "oracle": {"ranker": {"name": "oracle"}},
        },
        seed,
        "learn",
    )
    assert rows["random"]["gold"] < rows["mf"]["gold"] < rows["oracle"]["gold"]
    assert rows["random"]["ndcg_truth"] + 0.1 < rows["mf"]["ndcg_truth"] < rows["oracle"]["ndcg_truth"]
    assert rows["oracle"]["regret"] == pytest.approx(0.0, abs=1e-6)
    assert rows["mf"]["regret"] > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_position_bias_makes_the_naive_click_model_underestimate_relevance(tmp_path, seed):
    # Same MF, same world; only the examination curve differs. Trained on clicks discounted by
    # theta(k) < 1, the naive model predicts below the true relevance of what it serves.
    flat = {"mobile": 0.0, "desktop": 0.0}
    steep = {"mobile": 1.5, "desktop": 1.5}
    rows = _final(
        tmp_path,
        {"unbiased": {"behavior": {"eta": flat}}, "biased": {"behavior": {"eta": steep}}},
        seed,
        "bias",
    )
    assert rows["biased"]["gap"] < rows["unbiased"]["gap"] - 0.1, (
        rows["unbiased"]["gap"],
        rows["biased"]["gap"],
    )
    assert rows["biased"]["ece"] > rows["unbiased"]["ece"]
