"""A few-round smoke run of every built-in scenario, and determinism of the multi-task rankers."""

from __future__ import annotations

import json

import polars as pl
import pytest

from recsim.scenario import builtin_scenarios

TINY_LOOP = [
    "world.n_users=80",
    "world.n_items=60",
    "policy.n_candidates=30",
    "metrics.panel_users=16",
    "loop.rounds=2",
    "tracking.enabled=false",
    # LLM-reward domain
    "llm.n_prompts=64",
    "llm.n_eval_prompts=16",
    "llm.label_prompts=8",
    "llm.initial_prompts=8",
    "llm.batch_prompts=8",
    "llm.pass_k_samples=8",
    "llm.sft_steps=5",
    "llm.policy_steps=1",
]
TINY_MA = ["n_train=200", "n_test=100", "repeats=2", "epochs=2", "tracking.enabled=false"]
TINY_SCALE = TINY_LOOP + [
    "loop.active_users=40",
    "policy.ivf_lists=8",
    "policy.ivf_probe=2",
    "policy.explore_candidates=10",
    "metrics.panel_items=40",
]
TINY = {
    "mmoe-tasks": TINY_MA,
    "utility-weighted": TINY_MA[:4] + ["tracking.enabled=false"],
    "scale": TINY_SCALE,
    "movielens": TINY_LOOP + ["loop.active_users=40"],
}


def test_every_scenario_is_listed():
    assert {"feedback-loop", "exploration", "position-bias", "mmoe-tasks"} <= set(builtin_scenarios())
    llm = {"llm-overoptimization", "llm-calibration", "llm-negative-reinforcement", "llm-self-reward"}
    assert {"cross-domain", "utility-weighted"} <= set(builtin_scenarios())
    assert llm <= set(builtin_scenarios())


@pytest.mark.parametrize("name", sorted(builtin_scenarios()))
def test_every_scenario_runs_a_few_rounds(tmp_path, name):
    sc = builtin_scenarios()[name]
    configs = sc.resolve(TINY.get(name, TINY_LOOP))
    frame = sc.run(configs, tmp_path / name)
    out = tmp_path / name
    assert (
        (out / "metrics.parquet").exists()
        and (out / "summary.json").exists()
        and (out / "curves.png").exists()
    )
    metrics = pl.read_parquet(out / "metrics.parquet")
    assert metrics.equals(frame)
    loop = name not in ("mmoe-tasks", "utility-weighted")
    assert metrics.columns[:4] == (
        ["arm", "seed", "domain", "round"] if loop else ["arm", "domain", "round", metrics.columns[3]]
    )
    assert set(metrics["arm"]) == set(sc.arms)
    final = sc.final(frame)
    assert set(final) == set(sc.arms)
    if name == "llm-overoptimization":
        assert set(json.loads((out / "summary.json").read_text())["results"]) >= {
            "best-of-n.gold_a",
            "grpo.gold_b",
        }
    if name.startswith("llm"):
        assert set(metrics["domain"]) == {"llm"}
        assert {
            "gold",
            "proxy",
            "gap",
            "kl_ref",
            "ece",
            "brier",
            "accuracy",
            "pass_at_8",
            "entropy",
            "answer_entropy",
            "gini",
            "length",
            "sycophancy",
            "spurious_share",
        } <= set(metrics.columns)
    if name == "scale":
        assert metrics["retrieval_recall"].is_between(0, 1).all()
        log = pl.read_parquet(out / "logs" / "seed=0" / "round=1" / "arm-mmoe-shallow-tower.parquet")
        distinct = log.group_by("user").agg(pl.col("item").n_unique())["item"]
        assert log.height == 40 * 10 and distinct.min() == 10
    if name == "cross-domain":
        cascade = pl.read_parquet(out / "cascade.parquet")
        assert set(cascade["domain"]) == {"recsys", "llm"} and (out / "cascade.png").exists()
        assert cascade.filter(pl.col("round") == 0)["gap_change"].abs().max() == 0
    if name == "position-bias":
        curves = pl.read_parquet(out / "position_curves.parquet")
        tower_arms = {
            a
            for a in sc.arms
            if any(m in a for m in ("shallow_tower", "obs_dropout", "grad_reversal", "pal"))
        }
        assert set(curves["arm"]) == tower_arms
        assert (out / "position_curves.png").exists()


def test_multitask_ranker_runs_are_deterministic(tmp_path):
    sc = builtin_scenarios()["feedback-loop"]
    configs = sc.resolve(TINY_LOOP)
    a = sc.run(configs, tmp_path / "a")
    b = sc.run(configs, tmp_path / "b")
    assert a.equals(b)
    assert (
        tmp_path / "a" / "logs" / "seed=0" / "round=1" / "arm-mmoe-shallow-tower.parquet"
    ).read_bytes() == (
        tmp_path / "b" / "logs" / "seed=0" / "round=1" / "arm-mmoe-shallow-tower.parquet"
    ).read_bytes()


def test_benchmark_functions_report_positive_rates():
    from recsim.cli.bench import _line, bench_behavior, bench_llm

    assert bench_behavior(1000, 10, 1) > 0
    llm = bench_llm(8, 1)
    assert llm["tokens_per_s"] > 0 and llm["grpo_steps_per_s"] > 0 and llm["sequences"] == 64
    assert json.loads(_line("x", 1.23456, "u", a=1)) == {"name": "x", "value": 1.2346, "unit": "u", "a": 1}
