"""Position handling learns the world's examination curve where it is identifiable, and the
synthetic experiment of Ma et al. shows MMoE's advantage at low task correlation.

Thresholds, from the mechanisms (measured values in the closing note of the change):
- A position channel that learned nothing has position_curve_error = mean |log theta(k)/theta(1)|
  over k >= 2 and both devices = 1.51 in this world (eta = 1.2 and 0.6).
- PAL factorizes P(click) = theta * rel exactly as the world does, so on uniformly random slates
  its curve is identifiable and approaches the truth: threshold 0.2.
- The additive logit tower cannot represent theta * rel exactly: the log-odds offset of a product
  depends on rel (log((1 - r) / (1 - theta r))), so its curve is biased toward steeper offsets even
  on random slates: threshold 0.45, a third of the untrained error.
"""

from __future__ import annotations

import polars as pl
import pytest

from recsim.core.runner import run_scenario
from recsim.scenario import Scenario
from scenarios.mmoe_tasks import SCENARIO as MA


def _position_run(tmp_path, position: str) -> pl.DataFrame:
    sc = Scenario(
        name="curve",
        description="",
        base={
            "world": {"n_users": 2000, "n_items": 300},
            "policy": {"exploration_share": 1.0, "n_candidates": 100},
            "ranker": {"name": "mmoe", "window": 5},
            "metrics": {"panel_users": 32},
            "loop": {"rounds": 6},
            "tracking": {"enabled": False},
        },
        arms={position: {"ranker": {"position": position}}},
    )
    run_scenario(sc, sc.resolve(), tmp_path / position)
    return pl.read_parquet(tmp_path / position / "metrics.parquet")


@pytest.mark.parametrize(("position", "threshold"), [("pal", 0.2), ("shallow_tower", 0.45)])
def test_learned_curve_is_close_to_the_truth_on_random_slates(tmp_path, position, threshold):
    metrics = _position_run(tmp_path, position)
    errors = metrics["position_curve_error"].to_list()
    assert errors[-1] < threshold, errors
    assert errors[-1] < errors[0], errors
    curves = pl.read_parquet(tmp_path / position / "position_curves.parquet")
    untrained = curves.filter(pl.col("position") > 1)["true"].abs().mean()  # error of a flat curve
    assert untrained == pytest.approx(1.51, abs=0.01)
    last = curves.filter(pl.col("round") == 5)
    assert last.height == 20  # 2 devices x 10 positions
    # The learned curve is decreasing in position, like the truth.
    print(position, errors)
    for (_,), part in last.group_by("device"):
        learned = part.sort("position")["learned"].to_list()
        assert learned[-1] < learned[1] < learned[0] + 1e-6


def test_mmoe_beats_shared_bottom_at_low_task_correlation(tmp_path):
    configs = MA.resolve(
        ["correlations=[0.5]", "models=[mmoe, shared_bottom]", "repeats=4", "tracking.enabled=false"]
    )
    MA.run(configs, tmp_path / "ma")
    table = pl.read_parquet(tmp_path / "ma" / "final_test_loss.parquet")
    loss = dict(zip(table["model"], table["test_loss"], strict=True))
    assert loss["mmoe"] < loss["shared_bottom"], loss
    assert table["repeats"].to_list() == [4, 4]
