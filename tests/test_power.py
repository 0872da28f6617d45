"""Power and transients: the minimum detectable effect of a paired design, the seeds a study needs,
per-round paired differences and the round they settle at, and the window of final rounds a
scenario declares for its summary."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

import recsim
from recsim.core.config import ConfigError
from recsim.core.runner import study_window
from recsim.core.stats import mde, paired, paired_rounds, seeds_needed, settled, settling_round
from recsim.scenario import Scenario, _from_mapping, load_run


def _power(effect: float, sd: float, n: int) -> float:
    """Exact power of the two-sided 95% paired t-test (noncentral t)."""
    df, nc = n - 1, effect / sd * math.sqrt(n)
    crit = sps.t.ppf(0.975, df)
    return float(1 - sps.nct.cdf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))


@pytest.mark.parametrize("n", [5, 8, 12, 20, 40])
def test_an_effect_of_one_mde_is_detected_four_times_in_five(n):
    # (t_.975 + t_.8) sd / sqrt(n) is the usual approximation; the exact power at it is 0.79-0.80
    # for n >= 5, and a formula with z for t, or without the sqrt(n), is far off (0.7 or 1.0).
    assert 0.785 < _power(mde(2.0, n), 2.0, n) < 0.805
    assert mde(2.0, n) == pytest.approx(2 * mde(1.0, n))
    assert mde(1.0, n + 1) < mde(1.0, n)
    assert math.isnan(mde(1.0, 1))


@pytest.mark.parametrize(("sd", "effect"), [(1.0, 0.5), (0.3, 0.05), (2.0, 3.0), (1.0, -0.4)])
def test_seeds_needed_is_the_fewest_whose_mde_reaches_the_effect(sd, effect):
    n = seeds_needed(sd, effect)
    assert n is not None and mde(sd, n) <= abs(effect)
    assert n == 2 or mde(sd, n - 1) > abs(effect)
    assert seeds_needed(1.0, 1e-6) is None  # past the limit
    assert seeds_needed(1.0, 0.0) is None


def _frame(seeds: int = 8, rounds: int = 10, onset: int = 4) -> pl.DataFrame:
    """Arm ``ref``; arm ``late`` = ref + 1 from round ``onset`` on (+ noise sd 0.1); arm ``same``
    = ref + noise sd 0.1 (no effect)."""
    gen = np.random.default_rng(7)
    rows = []
    for s in range(seeds):
        base = gen.normal(0, 1, rounds)
        for r in range(rounds):
            rows.append(("ref", s, r, base[r]))
            rows.append(("late", s, r, base[r] + (1.0 if r >= onset else 0.0) + gen.normal(0, 0.1)))
            rows.append(("same", s, r, base[r] + gen.normal(0, 0.1)))
    return pl.DataFrame(rows, schema=["arm", "seed", "round", "x"], orient="row")


def test_per_round_paired_differences_and_where_they_settle():
    frame = _frame()
    per_round = paired_rounds(frame, ["x"], "ref")
    assert per_round["arm"].unique(maintain_order=True).to_list() == ["late", "same"]
    assert per_round.filter(pl.col("arm") == "late")["round"].to_list() == list(range(10))
    # each row is the mean and t-interval of that round's per-seed differences
    at = frame.filter(pl.col("round") == 6).sort("seed")
    d = at.filter(pl.col("arm") == "late")["x"].to_numpy() - at.filter(pl.col("arm") == "ref")["x"].to_numpy()
    row = per_round.filter(pl.col("arm") == "late", pl.col("round") == 6).row(0, named=True)
    low, high = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
    assert row["n"] == 8 and np.isclose(row["diff"], d.mean())
    assert np.isclose(row["low"], low) and np.isclose(row["high"], high)
    found = {r["arm"]: (r["settles"], r["side"]) for r in settled(per_round).iter_rows(named=True)}
    assert found["late"] == (4, 1)
    assert found["same"][0] is None or found["same"][0] > 4  # noise: at most a late, chance run
    # a difference that flips sign settles where it last crossed zero
    assert settling_round([0, 1, 2, 3], [0.1, -0.9, -0.8, -0.7], [0.5, -0.2, -0.1, -0.1]) == (1, -1)


def test_paired_reports_the_mde_of_its_own_sd_and_seeds():
    frame = _frame()
    row = paired(frame, ["x"], "ref", (6, 9)).filter(pl.col("arm") == "late").row(0, named=True)
    assert row["distinguishable"] and np.isclose(row["diff"], 1.0, atol=0.1)
    assert np.isclose(row["mde"], mde(row["sd"], 8))
    assert row["seeds_for_half"] == seeds_needed(row["sd"], row["diff"] / 2)
    # read over the transient (rounds 0-9) the effect is diluted to about 0.6
    diluted = paired(frame, ["x"], "ref", (0, 9)).filter(pl.col("arm") == "late")["diff"][0]
    assert 0.5 < diluted < 0.7


def _configs(rounds: dict[str, int]):
    sc = Scenario("w", "", {a: {"loop": {"rounds": r}} for a, r in rounds.items()})
    return sc.resolve(["metrics.panel_users=16", "world.n_users=100", "world.n_items=50"])


def test_a_scenario_declares_the_final_rounds_its_summary_reads():
    configs = _configs({"a": 12, "b": 10})
    declared = Scenario("w", "", {"a": {}, "b": {}}, window=4)
    assert study_window(declared, configs, None) == (6, 9)  # the shortest arm's last 4 rounds
    assert study_window(declared, configs, (2, 3)) == (2, 3)  # --window replaces it
    assert study_window(declared, _configs({"a": 3, "b": 3}), None) == (0, 2)
    assert study_window(Scenario("w", "", {"a": {}}), configs, None) is None
    assert _from_mapping({"name": "w", "arms": {"a": {}}, "window": 3}, "w.yaml").window == 3
    for bad in (0, -2, 2.5, "6", True):
        with pytest.raises(ConfigError, match="window is the number of final rounds"):
            _from_mapping({"name": "w", "arms": {"a": {}}, "window": bad}, "w.yaml")


def test_a_run_records_its_window_and_the_api_reads_it(tmp_path):
    spec = {
        "name": "tiny-window",
        "arms": {"random": {"ranker": {"name": "random"}}, "pop": {"ranker": {"name": "popularity"}}},
        "base": {
            "world": {"n_users": 120, "n_items": 60},
            "metrics": {"panel_users": 16},
            "loop": {"rounds": 4},
        },
        "window": 2,
    }
    result = recsim.run(spec, seeds=3, out=tmp_path / "run", tracking=False, threads=1)
    assert result.window == (2, 3)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["window"] == [2, 3]
    assert load_run(tmp_path / "run")[3]["window"] == (2, 3)  # --resume reads the same rounds
    expected = paired(result.metrics, ["gold"], "random", (2, 3))
    assert result.compare(metrics=["gold"]).equals(expected)
    rounds = result.rounds(metrics=["gold"])
    assert rounds.columns[-2:] == ["settles", "side"] and rounds["round"].to_list() == [0, 1, 2, 3]
    assert (tmp_path / "run" / "paired.png").exists()
    assert "seeds that would detect half" in (tmp_path / "run" / "summary.md").read_text()
