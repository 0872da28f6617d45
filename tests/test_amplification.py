"""The open loop: a learner trained on a fixed logger's slates (``loop.feedback`` open or random),
measured on its own decisions, so closed - open of a metric is the loop's amplification of it."""

from __future__ import annotations

import polars as pl
import pytest

import recsim

BASE = {
    "world": {"n_users": 150, "n_items": 80, "drift_rate": 0.0},
    "metrics": {"panel_users": 32},
    "policy": {"n_candidates": 40},
    "loop": {"rounds": 5},
}


def _run(arms: dict, tmp_path, name: str, seeds: int = 3) -> pl.DataFrame:
    spec = {"name": name, "arms": arms, "base": BASE}
    return recsim.run(spec, seeds=seeds, out=tmp_path / name, tracking=False, threads=1).metrics


def _modes(ranker: str) -> dict:
    return {
        mode: {"ranker": {"name": ranker}, "loop": {"feedback": mode}}
        for mode in ("closed", "open", "random")
    }


def _by(frame: pl.DataFrame, arm: str, metric: str) -> list[float]:
    return frame.filter(pl.col("arm") == arm).sort("seed", "round")[metric].to_list()


def test_a_learner_whose_slates_ignore_its_fit_has_no_amplification(tmp_path):
    # the random ranker's slates depend on nothing it learns, and with no drift the world does not
    # depend on what was shown: every metric of its own slates is the same, closed or open
    frame = _run(_modes("random"), tmp_path, "rand")
    for metric in ("gold", "gini", "coverage", "ndcg_truth", "regret"):
        closed = _by(frame, "closed", metric)
        assert _by(frame, "open", metric) == closed and _by(frame, "random", metric) == closed


def test_only_the_closed_loop_logs_and_measures_the_same_slates(tmp_path):
    """Closed: the gold measured is that of the logged slates (the learner's own). Open and random:
    the logged slates are the logger's, so the logged clicks no longer follow the measured gold."""
    spec = {"name": "mf", "arms": _modes("mf"), "base": BASE}
    result = recsim.run(spec, seeds=1, out=tmp_path / "r", tracking=False, threads=1)
    logs = tmp_path / "r" / "logs" / "seed=0" / "round=3"
    frame = result.metrics.filter(pl.col("round") == 3)
    for mode in ("closed", "open", "random"):
        log = pl.read_parquet(logs / f"arm-{mode}.parquet")
        users = log["user"].n_unique()
        logged_gold = (log["examination"] * log["true_relevance"]).sum() / users  # position-based model
        measured = frame.filter(pl.col("arm") == mode)["gold"][0]
        assert (abs(logged_gold - measured) < 1e-4) is (mode == "closed"), mode
    # the random logger shows every user a random slate (propensity 1/C), the learner a greedy one (1)
    assert pl.read_parquet(logs / "arm-random.parquet")["propensity"].to_list() == pytest.approx(
        [1 / 40] * 1500
    )
    assert set(pl.read_parquet(logs / "arm-closed.parquet")["propensity"]) == {1.0}


def test_the_fixed_logger_is_the_same_for_every_arm_of_a_seed(tmp_path):
    arms = {
        "mf-open": {"ranker": {"name": "mf"}, "loop": {"feedback": "open"}},
        "pop-open": {"ranker": {"name": "popularity"}, "loop": {"feedback": "open"}},
    }
    spec = {"name": "logger", "arms": arms, "base": BASE}
    recsim.run(spec, seeds=1, out=tmp_path / "r", tracking=False, threads=1)
    logs = tmp_path / "r" / "logs" / "seed=0" / "round=3"
    cols = ["user", "item", "position", "click"]
    mf, pop = (pl.read_parquet(logs / f"arm-{a}.parquet").select(cols) for a in arms)
    assert mf.equals(pop)


def test_the_open_loop_is_for_the_recommender_domain():
    from recsim.config import ConfigError, validate

    with pytest.raises(ConfigError, match="runs the recommender domain only"):
        validate({"domain": "llm", "loop": {"feedback": "open"}})
