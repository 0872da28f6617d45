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


def test_the_amplification_mode_pairs_every_arm_with_its_open_loops(tmp_path):
    spec = {"name": "amp", "arms": {"rand": {"ranker": {"name": "random"}}}, "base": BASE}
    result = recsim.run(spec, seeds=2, out=tmp_path / "r", tracking=False, threads=1, amplification=True)
    assert sorted(set(result.metrics["arm"])) == ["rand", "rand@open", "rand@random"]
    amp = result.amplification(["gold", "gini", "regret"])
    assert sorted(set(zip(amp["arm"], amp["mode"], strict=True))) == [("rand", "open"), ("rand", "random")]
    assert amp["diff"].to_list() == [0.0] * 6  # exactly: the random ranker's slates ignore its data
    summary = result.summary_json()
    assert set(summary["amplification"]["rand"]) == {"open", "random"}
    assert summary["amplification"]["rand"]["open"]["gini"]["diff"] == 0.0
    assert "rand: closed - random" in (tmp_path / "r" / "summary.md").read_text()
    assert (tmp_path / "r" / "amplification.png").stat().st_size > 0


def test_the_loop_concentrates_a_personalised_learners_exposure_but_not_popularitys(tmp_path):
    """Matrix factorization retrained on its own slates concentrates exposure: closed - random gini
    is +0.125 [+0.074, +0.175] on these 4 seeds (rounds 8-11), so the interval's lower end is
    checked against 0. A popularity ranker's exposure depends only on the items' order by clicks
    (every strict order of the catalogue gives the same exposure to the j-th item among random
    candidates), so closing its loop changes which items win (gold), not how concentrated they
    are: its gini amplification stays within +-0.002 here (its MDE is 0.0016)."""
    base = {
        "world": {"n_users": 400, "n_items": 200},
        "metrics": {"panel_users": 64},
        "policy": {"n_candidates": 100},
        "loop": {"rounds": 12},
    }
    arms = {
        f"{ranker}{suffix}": {"ranker": {"name": ranker}, "loop": {"feedback": mode}}
        for ranker in ("mf", "popularity")
        for suffix, mode in (("", "closed"), ("@random", "random"))
    }
    spec = {"name": "gini", "arms": arms, "base": base, "window": 4}
    result = recsim.run(spec, seeds=4, out=tmp_path / "r", tracking=False, threads=1)
    amp = {(r["arm"], r["metric"]): r for r in result.amplification(["gini", "gold"]).iter_rows(named=True)}
    assert amp[("mf", "gini")]["low"] > 0
    assert abs(amp[("popularity", "gini")]["diff"]) < 0.002
    assert amp[("popularity", "gold")]["high"] < 0  # it locks in its first winners


def test_a_resumed_amplification_run_finds_its_arms(tmp_path):
    import yaml

    from recsim.core.runner import resolved_config
    from recsim.scenario import load_run, load_scenario

    sc = load_scenario("feedback-loop").amplified()
    assert list(sc.arms)[:3] == ["mmoe", "mmoe@open", "mmoe@random"]
    configs = sc.resolve(["loop.rounds=2"])
    assert configs["oracle@random"].loop.feedback == "random"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(resolved_config(sc, configs)))
    again, loaded, _, _ = load_run(tmp_path)
    assert list(again.arms) == list(sc.arms) and loaded == configs


def test_the_llm_open_loop_fits_the_reward_model_on_the_base_policys_samples(tmp_path):
    from recsim.llm.config import QUICK

    quick = {k: v for k, _, v in (q.partition("=") for q in QUICK)}
    overrides = {**quick, "loop.rounds": 3, "llm.task.n_prompts": 256, "llm.labeler.initial_prompts": 64}
    overrides["llm.policy.sft_steps"] = 60
    arms = {
        "closed": {},
        "open": {"loop": {"feedback": "open"}},
        "open-fast": {"loop": {"feedback": "open"}, "llm": {"optimization": {"lr": 1e-2}}},
        "frozen": {"llm": {"reward_model": {"refit": False}}},
        "frozen@open": {"llm": {"reward_model": {"refit": False}}, "loop": {"feedback": "open"}},
    }
    spec = {"name": "llm-open", "arms": arms, "base": {"domain": "llm", "llm": {"task": {"kind": "sum"}}}}
    result = recsim.run(spec, seeds=1, overrides=overrides, out=tmp_path / "r", tracking=False, threads=1)

    def responses(arm: str, r: int) -> list:
        return pl.read_parquet(tmp_path / "r" / "logs" / "seed=0" / f"round={r}" / f"arm-{arm}.parquet")[
            "response"
        ].to_list()

    # round 0: the policy is the reference, so both loops log the same samples
    assert responses("closed", 0) == responses("open", 0)
    # later the closed loop logs its own samples, the open loops the one fixed base policy's
    assert responses("closed", 2) != responses("open", 2)
    assert responses("open", 2) == responses("open-fast", 2)
    # a reward model fitted once on round 0 sees the same pairs in both loops: no amplification
    amp = result.amplification(["gold", "proxy", "gap", "rm_accuracy_heldout"])
    frozen = amp.filter(pl.col("arm") == "frozen")
    assert frozen.height == 4 and frozen["diff"].to_list() == [0.0] * 4
    assert set(amp["arm"]) == {"closed", "frozen"}  # open-fast differs in more than the loop


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


def test_random_logs_are_for_the_recommender_domain():
    from recsim.config import ConfigError, validate

    with pytest.raises(ConfigError, match="runs the recommender domain only"):
        validate({"domain": "llm", "loop": {"feedback": "random"}})
    assert validate({"domain": "llm", "loop": {"feedback": "open"}}).loop.feedback == "open"


def test_amplified_arms_are_tracked_under_mlflow_keys(tmp_path):
    # an amplified arm's name carries '@', which MLflow refuses in metric keys: the tracker logs
    # the scenario run's per-arm results under keys it accepts, and every arm gets its own run
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = {
        "name": "amp-tracked",
        "arms": {"none": {"ranker": {"name": "random"}}},
        "base": {**BASE, "loop": {"rounds": 2}, "tracking": {"uri": uri, "experiment": "amp"}},
    }
    recsim.run(spec, seeds=2, out=tmp_path / "run", tracking=True, threads=1, amplification=True)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("amp")
    runs = client.search_runs([exp.experiment_id])
    arms = {r.data.tags.get("arm") for r in runs} - {None}
    assert {"none", "none@open", "none@random"} <= arms
    arm_run = next(r for r in runs if r.data.tags.get("arm") == "none@open" and "seed" not in r.data.tags)
    assert "gold" in arm_run.data.metrics
    from recsim.io.tracking import finite_metrics

    assert finite_metrics({"llm/none@open.gold": 0.5, "seed": 1}) == {"llm/none_open.gold": 0.5}
