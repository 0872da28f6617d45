"""The four recipes of EXTENDING.md: each registers a toy component from tests/extensions/ and runs
it. The registrations are temporary, so the rest of the suite sees only the built-in components."""

from __future__ import annotations

import polars as pl
import torch
from extensions import category_ranker, noisy_clicks, served_relevance, tiny_scenario
from typer.testing import CliRunner

from recsim.cli import app
from recsim.core.runner import run_scenario
from recsim.recsys.behavior import CLICK_MODELS, examination_curve, simulate
from recsim.recsys.config import RANKERS
from recsim.recsys.measures import METRICS
from recsim.scenario import SCENARIOS, Scenario, builtin_scenarios

SMALL = {
    "world": {"n_users": 60, "n_items": 40, "n_clusters": 4},
    "policy": {"slate_size": 5},
    "metrics": {"panel_users": 8},
    "loop": {"rounds": 3},
    "tracking": {"enabled": False},
}


def _run(tmp_path, arms: dict, name: str = "x") -> pl.DataFrame:
    sc = Scenario(name=name, description="", base=SMALL, arms=arms)
    return run_scenario(sc, sc.resolve(), tmp_path / name)


def test_a_ranker_kind_is_one_file_and_one_registration(tmp_path):
    with RANKERS.temporarily("category", category_ranker.KIND):
        frame = _run(tmp_path, {"category": {"ranker": {"name": "category", "prior": 0.3}}})
        logs = pl.read_parquet(tmp_path / "x" / "logs" / "seed=0" / "round=2" / "arm-category.parquet")
    assert frame["round"].to_list() == [0, 1, 2]
    # after round 0 (random start-up) the slates follow the fitted category click rates:
    # every slate's scores are non-increasing down the positions, and they are category rates
    scores = logs.sort("user", "position")["score"].to_numpy().reshape(-1, 5)
    assert (scores[:, :-1] >= scores[:, 1:] - 1e-7).all()
    assert len(set(scores.round(6).ravel())) <= 4  # one score per category (4 clusters)
    assert "category" not in RANKERS  # the registration ended with the block


def test_a_click_model_is_one_class_and_one_registration(tmp_path):
    model = noisy_clicks.NoisyClicks(eps=0.25)
    with CLICK_MODELS.temporarily("noisy", model):
        theta = examination_curve(torch.tensor([1.0]), 4)
        rel = torch.zeros(20_000, 4)  # nothing relevant: every click is noise
        fb = simulate(
            "noisy", theta, torch.zeros(20_000, dtype=torch.long), rel, rel, torch.Generator().manual_seed(0)
        )
        rate = fb.click.float().mean(0)
        expected = theta[0] * 0.25
        assert torch.allclose(rate, expected, atol=0.015)  # 20k Bernoulli draws: sd <= 0.0031
        frame = _run(tmp_path, {"mf": {"behavior": {"model": "noisy"}}})
    assert frame.height == 3 and frame["gold"].is_finite().all()
    assert "noisy" not in CLICK_MODELS


def test_a_metric_is_one_function_and_one_registration(tmp_path):
    with METRICS.temporarily("served_relevance", served_relevance.served_relevance):
        frame = _run(tmp_path, {"oracle": {"ranker": {"name": "oracle"}, "policy": {"startup_rounds": 0}}})
    logs = pl.read_parquet(
        tmp_path / "x" / "logs" / "seed=0" / "round=*" / "*.parquet", hive_partitioning=True
    )
    by_round = logs.group_by("round").agg(pl.col("true_relevance").mean()).sort("round")
    assert frame.columns[-1] == "served_relevance"  # registration order is column order
    for mine, truth in zip(frame["served_relevance"], by_round["true_relevance"], strict=True):
        assert abs(mine - truth) < 1e-6
    assert "served_relevance" not in METRICS


def test_a_scenario_is_one_file_and_one_registration(tmp_path):
    with (
        RANKERS.temporarily("category", category_ranker.KIND),
        METRICS.temporarily("served_relevance", served_relevance.served_relevance),
        SCENARIOS.temporarily("toy-category", tiny_scenario.SCENARIO),
    ):
        assert "toy-category" in builtin_scenarios()
        out = tmp_path / "run"
        result = CliRunner().invoke(app, ["run", "toy-category", "--out", str(out), "-q"])
        assert result.exit_code == 0, result.output
        frame = pl.read_parquet(out / "metrics.parquet")
    assert set(frame["arm"]) == {"category", "mf"} and "served_relevance" in frame.columns
    assert "toy-category" not in builtin_scenarios()
