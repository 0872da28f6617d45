"""Shared mitigations: MMD, invariance in both domains, gates, the anchor knob, sign split."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch

from recsim.config import validate
from recsim.core.runner import run_scenario
from recsim.llm.domain import LlmDomain
from recsim.mitigations import describe
from recsim.mitigations.gates import group_gate, slate_gate_weights
from recsim.mitigations.invariance import invariance_penalty, mmd2
from recsim.mitigations.sign_split import sign_split_weights
from recsim.scenario import Scenario

# the reward model's fit these bounds were set with (conftest.SHORT_RM_FIT)
LLM_SMALL = {
    "label_prompts": 128,
    "n_eval_prompts": 128,
    "pass_k_samples": 16,
    "reward_model": {"epochs": 3, "heldout_share": 0.0},
}
# Recommender: below the smaller of the effects on seeds 0 and 1 (position_share +0.27 and +0.19).
MARGIN_REC = 0.1


def test_mmd_is_zero_for_identical_samples_and_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, generator=g)
    assert float(mmd2(x, x)) == pytest.approx(0.0, abs=1e-7)
    y = torch.randn(400, generator=g)
    values = [float(mmd2(x, y + shift, scale=torch.tensor(1.0))) for shift in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > 20 * values[0]


def test_invariance_penalty_sees_bin_shifts_and_conditioning_explains_them():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2000, generator=g)
    bins = torch.randint(4, (2000,), generator=g)
    flat = float(invariance_penalty(s, bins))
    shifted = float(invariance_penalty(s + bins.float(), bins))
    assert abs(flat) < 0.01 and shifted > 0.1, (flat, shifted)
    # If the label is the bin itself, within-label distributions no longer differ by bin.
    assert float(invariance_penalty(s + bins.float(), bins, labels=bins)) == pytest.approx(0.0, abs=1e-6)
    scores = torch.randn(64, generator=g, requires_grad=True)
    invariance_penalty(scores, torch.arange(64) % 2).backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()


def test_the_invariance_penalty_is_unbiased_where_the_score_ignores_the_bins():
    """Scores independent of the bins: the penalty's mean over draws is 0 (within 4 standard
    errors), while the V-statistic's is positive (of order 1 / bin size), a push on the score's
    shape that would remove nothing."""
    g = torch.Generator().manual_seed(2)
    unbiased, biased = [], []
    for _ in range(200):
        s = torch.randn(256, generator=g)
        bins = torch.randint(4, (256,), generator=g)
        unbiased.append(float(invariance_penalty(s, bins)))
        biased.append(float(torch.stack([mmd2(s[bins == v], s[bins != v]) for v in range(4)]).mean()))
    u, b = torch.tensor(unbiased), torch.tensor(biased)
    se = float(u.std()) / len(u) ** 0.5
    assert abs(float(u.mean())) < 4 * se, (float(u.mean()), se)
    assert float(b.mean()) > 10 * se + abs(float(u.mean())), (float(b.mean()), se)


def test_group_gate_rejects_exactly_the_groups_that_break_the_rubric():
    violation = torch.tensor([0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1], dtype=torch.bool)
    assert group_gate(violation, 4).tolist() == [True] * 4 + [False] * 8
    d = LlmDomain(validate({"domain": "llm", "llm": {"sft_steps": 0}, "mitigations": {"gate_max_length": 2}}))
    r = d.sample(d.reference, d.eval, 4, torch.Generator().manual_seed(0))
    bad = d.rubric_violation(r)
    assert torch.equal(bad, (r.length > 2) | (r.agree > 0))
    accepted = group_gate(bad, 4).view(-1, 4)[:, 0]
    assert torch.equal(accepted, ~bad.view(-1, 4).any(1))


def test_slate_gate_and_dense_weights():
    slate = torch.tensor([0, 0, 0, 1, 1, 1])
    category = torch.tensor([1, 2, 3, 4, 4, 5])  # slate 0: 3 categories, slate 1: 2
    assert slate_gate_weights(slate, category, 3, "gate", 1.0).tolist() == [1, 1, 1, 0, 0, 0]
    dense = slate_gate_weights(slate, category, 3, "dense", 1.0)
    assert dense.tolist() == pytest.approx([1, 1, 1, 2 / 3, 2 / 3, 2 / 3])


def test_sign_split_weights():
    pos = torch.tensor([True, False, True])
    assert sign_split_weights(pos, "psr").tolist() == [1, 0, 1]
    assert sign_split_weights(pos, "nsr").tolist() == [0, 1, 0]
    assert sign_split_weights(pos, "w_reinforce", 0.1).tolist() == pytest.approx([0.1, 1, 0.1])


def test_anchor_share_is_one_knob_that_changes_the_data_as_documented(tmp_path):
    rec = validate({"mitigations": {"anchor_share": 0.3}})
    llm = validate({"domain": "llm", "mitigations": {"anchor_share": 0.3}})
    assert rec.policy.exploration_share == 0.3
    assert (llm.llm.reward_model.mode, llm.llm.reward_model.anchor_share) == ("anchored", 0.3)
    assert describe(rec)[0] == "anchor=0.3" and describe(llm)[1] == "length_bias=1.5"
    base = {
        "world": {"n_users": 400, "n_items": 100},
        "metrics": {"panel_users": 16},
        "loop": {"rounds": 3},
        "ranker": {"name": "mf"},
        "tracking": {"enabled": False},
        "llm": {**LLM_SMALL, "sft_steps": 10, "policy_steps": 1},
    }
    arms = {
        "rec0": {},
        "rec30": {"mitigations": {"anchor_share": 0.3}},
        "llm0": {"domain": "llm"},
        "llm30": {"domain": "llm", "mitigations": {"anchor_share": 0.3}},
    }
    sc = Scenario(name="anchor", description="", base=base, arms=arms)
    run_scenario(sc, sc.resolve(), tmp_path / "run")

    def scan(pattern: str) -> pl.LazyFrame:
        return pl.scan_parquet(
            tmp_path / "run" / "logs" / "seed=0" / "round=*" / pattern,
            hive_partitioning=True,
            hive_schema={"seed": pl.Int64, "round": pl.Int32},
        )

    late = scan("arm-rec*.parquet").filter(pl.col("round") >= 1)  # round 0: start-up exploration for all
    share = dict(late.group_by("arm").agg(pl.col("exploration").mean()).collect().iter_rows())
    assert share["rec0"] == 0.0 and share["rec30"] == pytest.approx(0.3, abs=0.01)  # a fixed 30% bucket
    llm_logs = scan("arm-llm*.parquet").filter(pl.col("pair") >= 0)
    anchored = dict(llm_logs.group_by("arm").agg(pl.col("anchored").mean()).collect().iter_rows())
    assert anchored["llm0"] == 0.0 and anchored["llm30"] == pytest.approx(0.3, abs=0.05)  # ~1.5k pairs


def test_invariance_acts_on_the_served_score_in_both_domains(tmp_path):
    """LLM: the invariant reward model's served scores depend less on the spurious variables, on
    the mean of seeds 0 and 1. Over seeds 0-12 at these sizes the paired difference in
    spurious_share is -0.167 [-0.276, -0.058] (95% t-interval) but positive on 2 of the 13 seeds,
    so it is not asked of each seed. Recommender, on each seed: the penalty holds the served
    relevance logit flat across positions and leaves the position tower free, so the tower takes
    more of the click score (position_share rises); the relevance the served score carries falls
    with it (the price measured in the README)."""
    llm_differences = [_invariance_effects(tmp_path / f"seed{seed}", seed) for seed in (0, 1)]
    assert sum(llm_differences) / 2 < 0, llm_differences


def _invariance_effects(tmp_path: Path, seed: int) -> float:
    """One seed's run; asserts the recommender's effects and returns the LLM arms' paired
    difference in spurious_share (with the penalty minus without)."""
    rec = {
        "world": {"n_users": 800, "n_items": 300},
        "policy": {"n_candidates": 100},
        "ranker": {"name": "mmoe", "position": "shallow_tower", "window": 5},
        "metrics": {"panel_users": 32},
    }
    llm = {"domain": "llm", "llm": {**LLM_SMALL, "task": {"kind": "sum"}}}  # the one-token task
    inv = {"mitigations": {"invariance_weight": 5.0}}
    sc = Scenario(
        name="inv",
        description="",
        base={"loop": {"rounds": 5}, "tracking": {"enabled": False}},
        arms={"rec": rec, "rec-inv": {**rec, **inv}, "llm": llm, "llm-inv": {**llm, **inv}},
    )
    frame = run_scenario(sc, sc.resolve([f"seed={seed}"]), tmp_path / "run")
    last = {r["arm"]: r for r in frame.filter(pl.col("round") == 4).iter_rows(named=True)}
    assert last["rec-inv"]["position_share"] > last["rec"]["position_share"] + MARGIN_REC, last
    assert last["rec-inv"]["truth_share"] < last["rec"]["truth_share"], last
    return last["llm-inv"]["spurious_share"] - last["llm"]["spurious_share"]


def test_utility_weighted_vs_post_hoc_threshold_on_the_same_cost():
    from recsim.experiments.utility import UtilityConfig, expected_cost, run_utility, summarize

    y = torch.tensor([0, 0, 1, 1])
    act = torch.tensor([True, False, False, True])
    assert expected_cost(act, y, 1.0, 10.0) == pytest.approx((1.0 + 10.0) / 4)
    cfg = UtilityConfig(cost_fn=30.0, repeats=3)
    rows = run_utility(cfg)
    assert {r["learner"] for r in rows} == {"weighted", "post-hoc"} and len(rows) == 6
    post = [r for r in rows if r["learner"] == "post-hoc"]
    assert all(r["threshold"] == pytest.approx(1 / 31) for r in post)
    summary = summarize(rows)
    # Autor et al.: training symmetric and moving the threshold does at least as well on the
    # weighted objective itself, and keeps a better representation of the useful feature.
    assert summary["post-hoc"]["expected_cost"] < summary["weighted"]["expected_cost"]
    assert summary["post-hoc"]["probe_accuracy"] > summary["weighted"]["probe_accuracy"]


def test_compare_prints_the_domain_by_mitigation_table(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from recsim.cli import app
    from recsim.io.tracking import MlflowTracker
    from scenarios.cross_domain import SCENARIO

    monkeypatch.chdir(tmp_path)
    keep = {a: SCENARIO.arms[a] for a in ("recsys/none", "recsys/invariance", "llm/none", "llm/invariance")}
    sc = type(SCENARIO)(name="cross-domain", description="", base=SCENARIO.base, arms=keep)
    tiny = [
        "loop.rounds=2",
        "world.n_users=200",
        "world.n_items=80",
        "policy.n_candidates=30",
        "metrics.panel_users=16",
        "llm.label_prompts=16",
        "llm.initial_prompts=16",
        "llm.n_eval_prompts=16",
        "llm.pass_k_samples=8",
        "llm.sft_steps=5",
        "llm.policy_steps=1",
    ]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sc.run(sc.resolve(tiny), tmp_path / "run", MlflowTracker(uri, "cross-domain"))
    result = CliRunner().invoke(
        app,
        ["compare", "--experiment", "cross-domain", "--tracking-uri", uri, "--metrics", "gap,spurious_share"],
    )
    assert result.exit_code == 0, result.output
    assert "final spurious_share" in result.output and "mitigation" in result.output
    rows = [ln for ln in result.output.splitlines() if ln.startswith("│ invariance")]
    assert len(rows) == 2  # one row per table (gap, spurious_share), a column per domain
    assert all(len(row.split("│")) == 5 for row in rows)  # mitigation | recsys | llm
    assert (tmp_path / "compare.png").exists()
