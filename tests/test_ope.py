"""Off-policy evaluation: the estimators' formulas, their coverage of the truth on uniformly random
and epsilon-greedy logs over seeds, the ope scenario, and the OBP export's round trip."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

import recsim
from recsim.config import ConfigError
from recsim.experiments.obp import load_obp
from recsim.recsys import ope
from recsim.scenario import builtin_scenarios

SMALL_OPE = [
    "world.n_users=400",
    "world.n_items=100",
    "policy.n_candidates=20",
    "policy.slate_size=4",
    "metrics.panel_users=32",
    "loop.rounds=4",
]


def _slates(pscore: np.ndarray, clicks: np.ndarray) -> ope.LoggedSlates:
    """Two slates, K=2, C=3: slate 0 shows candidates 0, 1; slate 1 shows 2, 0."""
    return ope.LoggedSlates(
        users=np.array([0, 1]),
        device=np.array([0, 0]),
        items=np.array([[10, 11], [22, 20]]),
        clicks=clicks,
        pscore=pscore,
        examination=np.array([[1.0, 0.5], [1.0, 0.5]]),
        candidates=np.array([[10, 11, 12], [20, 21, 22]]),
        relevance=np.array([[0.2, 0.4, 0.6], [0.5, 0.1, 0.3]]),
        shown=np.array([[0, 1], [2, 0]]),
    )


def test_ipw_snipw_and_dr_follow_their_formulas():
    s = _slates(np.array([[0.5, 0.25], [0.5, 0.25]]), np.array([[1.0, 0.0], [1.0, 1.0]]))
    target = ope.deterministic(s, np.array([[3.0, 1.0, 2.0], [1.0, 0.0, 2.0]]))  # slates (0, 2) and (2, 0)
    # w: slate 0: pos 0 shows 0 (target 0) -> 1/0.5; pos 1 shows 1 (target 2) -> 0;
    #    slate 1: pos 0 shows 2 (target 2) -> 1/0.5; pos 1 shows 0 (target 0) -> 1/0.25
    w = np.array([[2.0, 0.0], [2.0, 4.0]])
    assert np.allclose(ope._weights(s, target), w)
    assert ope.ipw(s, target).value == pytest.approx((2.0 + 2.0 + 4.0) / 2)
    assert ope.snipw(s, target).value == pytest.approx((2 + 2) / (2 + 2) + 4 / 4)
    model = ope.ClickModel(0.0, np.zeros(30), np.zeros((2, 1)))  # q = 1/2 everywhere
    direct = 2 * 0.5  # two positions, each with one candidate at q = 1/2
    correction = np.array([2 * 0.5 + 0, 2 * 0.5 + 4 * 0.5])
    assert ope.dr(s, target, model).value == pytest.approx(direct + correction.mean())
    truth = np.mean([1.0 * 0.2 + 0.5 * 0.6, 1.0 * 0.3 + 0.5 * 0.5])  # theta x rel of the target slates
    assert ope.true_value(s, target, "pbm") == pytest.approx(truth)
    assert ope.uniform(s).sum(2) == pytest.approx(np.ones((2, 2)))


def test_a_target_equal_to_a_uniform_logger_has_unit_weights():
    s = _slates(np.full((2, 2), 1 / 3), np.array([[1.0, 0.0], [0.0, 1.0]]))
    est = ope.ipw(s, ope.uniform(s))
    assert est.value == pytest.approx(1.0) and ope.snipw(s, ope.uniform(s)).value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="position-separable"):
        ope.true_value(s, ope.uniform(s), "cascade")


@pytest.fixture(scope="module")
def ope_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ope") / "run"
    result = recsim.run("ope", seeds=4, overrides=SMALL_OPE, tracking=False, out=out)
    return result, pl.read_parquet(out / "ope.parquet")


def test_ipw_intervals_hold_the_truth_on_random_and_epsilon_greedy_logs(ope_run):
    """4 seeds x 3 rounds x 3 targets = 36 intervals per logger; nominal 95%, so a coverage of at
    least 0.8 fails with probability below 1% for calibrated intervals (binomial). Measured:
    0.92-0.97; an IPW that ignores the propensities (w = pi_e) covers none of them."""
    _, table = ope_run
    ipw = table.filter(pl.col("estimator") == "ipw")
    assert ipw.height == 3 * 4 * 3 * 3  # loggers x seeds x rounds x targets
    covered = (pl.col("low") <= pl.col("truth")) & (pl.col("truth") <= pl.col("high"))
    by_logger = ipw.group_by("arm").agg(covered.mean().alias("coverage"))
    assert by_logger["coverage"].min() >= 0.8, by_logger
    assert (ipw["high"] > ipw["low"]).all()


def test_doubly_robust_is_at_least_as_accurate_as_ipw_for_the_ideal_target(ope_run):
    """DR's click model removes most of IPW's variance where the weights are large (a
    deterministic target, epsilon-greedy logs): its RMSE over seeds and rounds is lower."""
    _, table = ope_run
    part = table.filter((pl.col("target") == "oracle") & (pl.col("arm") != "uniform"))
    rmse = part.group_by("estimator").agg(
        ((pl.col("estimate") - pl.col("truth")) ** 2).mean().sqrt().alias("r")
    )
    r = dict(rmse.iter_rows())
    assert r["dr"] < r["ipw"]


def test_the_ope_scenario_writes_its_report_and_refuses_non_separable_clicks(ope_run):
    result, _ = ope_run
    assert {"ope.md", "ope.png", "ope.parquet"} <= {p.name for p in result.out.iterdir()}
    assert "| mf-eps0.1 | oracle | dr |" in (result.out / "ope.md").read_text()
    sc = builtin_scenarios()["ope"]
    with pytest.raises(ConfigError, match="behavior.model must be one of pbm, logit"):
        sc.resolve([*SMALL_OPE, "behavior.model=cascade"])
    with pytest.raises(ConfigError, match="policy.log_candidates must be true"):
        sc.resolve([*SMALL_OPE, "policy.log_candidates=false"])
    with pytest.raises(ConfigError, match="policy.repeat_consumption must be true"):
        sc.resolve([*SMALL_OPE, "policy.repeat_consumption=false"])
    with pytest.raises(ConfigError, match="loop.rounds must be >= 2"):
        sc.resolve([*SMALL_OPE, "loop.rounds=1"])


# -- the export ------------------------------------------------------------------------------------


def _export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recsim", "export", "obp", *args], capture_output=True, text=True
    )


def test_the_obp_export_round_trips_the_logs(ope_run, tmp_path):
    result, _ = ope_run
    out = tmp_path / "feedback.npz"
    res = _export(str(result.out), "--arm", "mf-eps0.3", "--seed", "1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    data = load_obp(out)
    logs = (
        result.logs()
        .filter((pl.col("arm") == "mf-eps0.3") & (pl.col("seed") == 1))
        .collect()
        .sort("round", "user", "position")
    )
    assert data["n_rounds"] == logs.height and data["n_actions"] == 100
    assert np.array_equal(data["action"], logs["item"].to_numpy())
    assert np.array_equal(data["position"], logs["position"].to_numpy() - 1)
    assert np.array_equal(data["reward"], logs["click"].to_numpy().astype(int))
    assert np.allclose(data["pscore"], logs["propensity"].to_numpy())
    assert (np.bincount(data["slate_id"]) == 4).all() and (data["context"].sum(1) == 1).all()
    assert data["action_context"].shape[0] == 100 and len(data["policies"]) == 4
    # the truth: the logged action's expected reward is its candidate's, and clicks follow it
    at = np.argmax(data["candidates"] == data["action"][:, None], axis=1)
    assert np.allclose(
        data["expected_reward"][np.arange(len(at)), at], data["expected_reward_action"], atol=1e-6
    )
    gap = data["reward"] - data["expected_reward_action"]
    assert abs(gap.mean()) < 4 * gap.std() / np.sqrt(len(gap))
    card = json.loads(out.with_suffix(".schema.json").read_text())
    assert card["arm"] == "mf-eps0.3" and card["keys"]["expected_reward"]["shape"] == [logs.height, 20]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arm", "nope"], "--arm must be one of uniform, mf-eps0.3, mf-eps0.1"),
        (["--arm", "uniform", "--seed", "9"], "--seed must be one of [0, 1, 2, 3]"),
        (["--arm", "uniform", "--round", "99"], "no log rows for arm 'uniform', seed 0, round 99"),
    ],
)
def test_the_export_refuses_bad_input_with_status_2(ope_run, tmp_path, args, message):
    result, _ = ope_run
    out = tmp_path / "x.npz"
    res = _export(str(result.out), *args, "--out", str(out))
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_the_export_refuses_a_non_run_and_an_existing_output(ope_run, tmp_path):
    result, _ = ope_run
    res = _export(str(tmp_path), "--arm", "uniform", "--out", str(tmp_path / "a.npz"))
    assert res.returncode == 2 and "is not a run folder" in res.stderr
    (tmp_path / "b.npz").write_text("keep")
    res = _export(str(result.out), "--arm", "uniform", "--out", str(tmp_path / "b.npz"))
    assert res.returncode == 2 and "exists" in res.stderr and (tmp_path / "b.npz").read_text() == "keep"
