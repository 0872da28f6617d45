"""`recsim validate`: the claims registry is sound, each statistic computes what its docstring
says, a claim holds only where its interval excludes zero on the claimed side, and the command
writes its report (Markdown, JSON, PNGs, MLflow, the README block), re-uses finished studies and
refuses bad input with one line and exit status 2."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recsim.cli import app
from recsim.core.stats import mde
from recsim.validation.claims import (
    CLAIMS,
    STUDIES,
    Change,
    Claim,
    Contrast,
    Curvature,
    Level,
    check_registry,
    diff,
)
from recsim.validation.suite import README_END, README_START, evaluate


def _frame(effect: float, seeds: int = 6, noise: float = 0.1, rounds: int = 3) -> pl.DataFrame:
    """Two arms over rounds; arm 'b' = arm 'a' + effect in every round, plus seed noise."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(seeds):
        base = rng.normal()
        for r in range(rounds):
            rows.append({"arm": "a", "seed": s, "round": r, "m": base + r})
            rows.append({"arm": "b", "seed": s, "round": r, "m": base + r + effect + noise * rng.normal()})
    return pl.DataFrame(rows)


def test_the_registry_is_sound_and_every_study_meets_the_minimum_grid():
    assert check_registry() == []
    for study in STUDIES.values():
        assert len(study.settings) >= 3 and study.seeds >= 5
    # every paper the suite is asked to cover has at least one claim
    papers = " ".join(c.paper for c in CLAIMS.values())
    for name in (
        "Zhao",
        "Ma",
        "Zhang et al., KDD",
        "Chaney",
        "Gao",
        "Damani",
        "Zhu",
        "Wang",
        "Xu",
        "Critique-GRPO",
        "Reward models that reason",
        "anchors",
        "Autor",
    ):
        assert name in papers, name


def test_check_registry_names_what_is_wrong():
    bad = {
        "x": Claim("x", "p", "c", "position-grid", diff("mmoe-none-explore0", "no-such-arm", "gold"), +1),
        "y": Claim("y", "p", "c", "no-such-study", Level("a", "gold"), 0),
    }
    problems = check_registry(STUDIES, bad)
    assert any("no-such-arm" in p for p in problems)
    assert any("unknown study" in p for p in problems)


def test_statistics_compute_their_definitions():
    frame = _frame(0.5, seeds=3, noise=0.0)
    d = diff("b", "a", "m").values(frame)
    assert list(d) == [0, 1, 2] and all(abs(v - 0.5) < 1e-12 for v in d.values())
    # final round by default; a window averages rounds (here the same difference)
    assert diff("b", "a", "m", window=(0, 1)).values(frame) == pytest.approx(d)
    # a contrast with weights: 2 m[b] - m[a] in the final round = m[a] + 1.0 (round 2: base + 2)
    two = Contrast("m", (("b", 2.0), ("a", -1.0))).values(frame)
    last_a = frame.filter(arm="a", round=2).sort("seed")["m"].to_list()
    assert list(two.values()) == pytest.approx([x + 1.0 for x in last_a])
    # change over rounds of one arm: rounds 0 -> 2 add 2
    assert list(Change("a", "m").values(frame).values()) == pytest.approx([2.0] * 3)
    assert list(Level("a", "m").values(frame).values()) == pytest.approx(last_a)
    # a seed missing one arm drops out of a paired contrast
    assert list(
        diff("b", "a", "m").values(frame.filter(~((pl.col("arm") == "a") & (pl.col("seed") == 1))))
    ) == [0, 2]


def test_curvature_recovers_the_gold_curve():
    d = np.linspace(0.0, 2.0, 8)
    rows = []
    for seed, b in enumerate([0.1, 0.2, 0.3]):
        gold = 0.5 + d * (0.4 - b * d)
        rows += [
            {"arm": "bon", "seed": seed, "round": i, "sqrt_kl": x, "gold": g}
            for i, (x, g) in enumerate(zip(d, gold, strict=True))
        ]
    values = Curvature("bon").values(pl.DataFrame(rows))
    assert list(values.values()) == pytest.approx([0.1, 0.2, 0.3], abs=1e-9)


@pytest.mark.parametrize(
    ("effect", "direction", "holds"),
    [(0.5, +1, True), (0.5, -1, False), (-0.5, -1, True), (0.0, +1, False), (0.0, -1, False)],
)
def test_a_claim_holds_only_where_the_interval_excludes_zero_on_its_side(effect, direction, holds):
    claim = Claim("c", "p", "s", "st", diff("b", "a", "m"), direction)
    (result,) = evaluate(claim, {"setting": (_frame(effect), "abc")})
    assert result.n == 6
    assert result.holds is holds
    assert result.low <= result.mean <= result.high
    assert math.isclose(result.mean, effect, abs_tol=0.15)


def test_settings_with_identical_values_are_flagged():
    from recsim.validation.suite import identical_settings

    claim = Claim("c", "p", "s", "st", diff("b", "a", "m"), +1)
    same, other = _frame(0.5), _frame(0.2)
    results = evaluate(claim, {"x": (same, "c"), "y": (same, "c"), "z": (other, "c")})
    assert identical_settings(results) == [["x", "y"]]


def test_validate_quick_writes_the_report_reuses_studies_and_logs_to_mlflow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{README_START}\nold table\n{README_END}\n\nafter\n")
    args = ["validate", "--quick", "--only", "zhao-tower-vs-none,utility", "--out", "v"]
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    result = CliRunner().invoke(app, [*args, "--tracking-uri", uri, "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    ids = [c["id"] for c in report["claims"]]
    assert ids == ["zhao-tower-vs-none", "autor-post-hoc-threshold"]
    for c in report["claims"]:
        (row,) = c["settings"]
        assert row["n"] == 2 and len(row["values"]) == 2
        assert row["low"] <= row["mean"] <= row["high"]
        assert (tmp_path / "v" / "figures" / f"{c['id']}.png").stat().st_size > 1000
    md = (tmp_path / "v" / "report.md").read_text()
    assert "`zhao-tower-vs-none`" in md and "quick" in md
    text = readme.read_text()
    assert "old table" not in text and "after" in text and "`autor-post-hoc-threshold`" in text
    # the claim's numbers come from the study's own run folder
    frame = pl.read_parquet(
        next((tmp_path / "v" / "studies" / "position-grid").glob("*/run/metrics.parquet"))
    )
    direct = diff("mmoe-shallow_tower-explore0", "mmoe-none-explore0", "ndcg_truth", last=6).values(frame)
    assert report["claims"][0]["settings"][0]["rounds"] == [0, 2]  # the last 6 of a 3-round run
    assert [direct[s] for s in (0, 1)] == pytest.approx(
        list(report["claims"][0]["settings"][0]["values"].values())
    )
    # MLflow: one run in experiment 'validation' with the effects and the report
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("validation").experiment_id])
    assert run.data.metrics["autor-post-hoc-threshold.settings"] == 1.0
    assert "report.md" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # a second call re-uses the finished studies: same numbers, nothing run again
    again = CliRunner().invoke(app, [*args, "--no-tracking"])
    assert again.exit_code == 0 and again.output.count("re-used") == 2
    assert json.loads((tmp_path / "v" / "report.json").read_text())["claims"] == report["claims"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "no-such-claim"], "unknown claim or study 'no-such-claim'"),
        (["--readme", "missing.md"], "no <!-- validation:start -->"),
        (["--out", "afile"], "output afile exists and is not a folder"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("keep")
    result = CliRunner().invoke(app, ["validate", "--quick", "--no-tracking", "--out", "v", *args])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "v").exists() and (tmp_path / "afile").read_text() == "keep"


def test_list_names_every_claim():
    result = CliRunner().invoke(app, ["validate", "--list"])
    assert result.exit_code == 0
    assert all(cid in result.output for cid in CLAIMS)


def _rounds_frame(onset: int, rounds: int = 12, seeds: int = 8) -> pl.DataFrame:
    """b = a + 0.5 from round ``onset`` on (noise sd 0.05), a random walk shared by the pair."""
    gen = np.random.default_rng(3)
    rows = []
    for s in range(seeds):
        base = gen.normal(0, 1, rounds)
        for r in range(rounds):
            rows.append({"arm": "a", "seed": s, "round": r, "m": base[r]})
            b = base[r] + (0.5 if r >= onset else -0.3) + gen.normal(0, 0.05)
            rows.append({"arm": "b", "seed": s, "round": r, "m": b})
    return pl.DataFrame(rows)


def test_a_claim_reads_its_final_rounds_reports_power_and_where_it_settles():
    frame = _rounds_frame(onset=5)
    claim = Claim("c", "p", "s", "st", diff("b", "a", "m", last=4), +1)
    (r,) = evaluate(claim, {"x": (frame, "c")})
    assert r.rounds == (8, 11) and r.verdict == "holds" and math.isclose(r.mean, 0.5, abs_tol=0.05)
    assert r.settles == 5  # below zero before round 5, above from it on
    assert math.isclose(r.mde, mde(r.sd, 8))
    # read in the transient (rounds 0-11 at onset 10) the same pair is the opposite
    (early,) = evaluate(Claim("c", "p", "s", "st", diff("b", "a", "m"), +1), {"x": (_rounds_frame(12), "c")})
    assert early.verdict == "opposite" and early.settles == 0


@pytest.mark.parametrize(
    ("effect", "expected"),
    [(None, "not distinguishable"), (0.01, "under-powered"), (5.0, "not distinguishable")],
)
def test_an_interval_covering_zero_is_under_powered_where_the_mde_exceeds_the_papers_effect(effect, expected):
    claim = Claim("c", "p", "s", "st", diff("b", "a", "m"), +1, effect=effect)
    (r,) = evaluate(claim, {"x": (_frame(0.0), "c")})
    assert r.low < 0 < r.high and r.verdict == expected
    assert 0.01 < r.mde < 5.0
