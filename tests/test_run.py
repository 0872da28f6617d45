"""End-to-end runs: outputs and their schema, determinism, MLflow runs, compare, crash safety."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from recsim.cli import app
from recsim.core.runner import run_scenario
from recsim.io.logs import LogError, LogStore, scan_logs
from recsim.scenario import Scenario, load_scenario

LOG_SCHEMA = {
    "user": pl.Int64,
    "item": pl.Int64,
    "position": pl.Int16,
    "device": pl.String,
    "score": pl.Float32,
    "propensity": pl.Float32,
    "examination": pl.Float32,
    "click": pl.Boolean,
    "satisfaction": pl.Boolean,
    "true_relevance": pl.Float32,
    "true_satisfaction": pl.Float32,
    "exploration": pl.Boolean,
    "arm": pl.String,
    "round": pl.Int32,
}


def _run(tmp_path, small, name="run", extra=()):
    sc = load_scenario("exploration")
    return run_scenario(sc, sc.resolve([*small, *extra]), tmp_path / name), tmp_path / name


def test_outputs_schema_and_contents(tmp_path, small):
    frame, out = _run(tmp_path, small)
    assert {p.name for p in out.iterdir()} >= {
        "config.yaml",
        "metrics.parquet",
        "logs",
        "curves.png",
        "summary.json",
    }
    metrics = pl.read_parquet(out / "metrics.parquet")
    assert metrics.columns[:4] == ["arm", "seed", "domain", "round"]
    assert metrics.height == 5 * 4 and set(metrics["domain"]) == {"recsys"}
    for name in (
        "gold",
        "proxy",
        "gap",
        "regret",
        "ndcg_truth",
        "gini",
        "entropy",
        "coverage",
        "homogenization",
        "rank_stability",
        "ece",
        "brier",
        "gold_satisfaction",
        "clicks",
    ):
        assert name in metrics.columns
    assert (metrics["gap"] - (metrics["proxy"] - metrics["gold"])).abs().max() < 1e-9
    logs = scan_logs(out / "logs").collect()
    assert dict(logs.schema) == {**LOG_SCHEMA, "seed": pl.Int64}
    assert logs["seed"].unique().to_list() == [0]
    assert logs.height == 5 * 4 * 300 * 10  # arms x rounds x users x slate
    # satisfaction is observed only after a click; positions 1..K
    assert logs.filter(~pl.col("click"))["satisfaction"].null_count() == logs.filter(~pl.col("click")).height
    assert logs.filter(pl.col("click"))["satisfaction"].null_count() == 0
    assert sorted(logs["position"].unique()) == list(range(1, 11))
    # Start-up round is all exploration with propensity 1/C; the oracle's regret is ~0 afterwards.
    assert logs.filter(pl.col("round") == 0)["exploration"].all()
    assert logs.filter(pl.col("round") == 0)["propensity"].to_numpy() == pytest.approx(1 / 200)
    oracle = metrics.filter((pl.col("arm") == "oracle") & (pl.col("round") > 0))
    assert oracle["regret"].abs().max() < 1e-6 and oracle["gap"].abs().max() < 1e-6
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["arms"]["mf"]["world"]["n_users"] == 300
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["final"]) == {"mf", "mf-explore10", "popularity", "random", "oracle"}


def test_same_seed_identical_metrics_different_seed_differs(tmp_path, small):
    _run(tmp_path, small, "a")
    _run(tmp_path, small, "b")
    _run(tmp_path, small, "c", ["seed=1"])
    a, b, c = (pl.read_parquet(tmp_path / n / "metrics.parquet") for n in "abc")
    assert a.equals(b)
    assert (tmp_path / "a" / "logs" / "seed=0" / "round=3" / "arm-mf.parquet").read_bytes() == (
        tmp_path / "b" / "logs" / "seed=0" / "round=3" / "arm-mf.parquet"
    ).read_bytes()
    assert not a.equals(c)
    assert a["gold"].to_list() != c["gold"].to_list()


def test_log_partition_is_complete_or_absent_after_a_crash_mid_write(tmp_path, monkeypatch):
    store = LogStore(tmp_path / "logs")
    frame = pl.DataFrame({"user": list(range(1000)), "click": [True] * 1000})

    def crash(self, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", crash)
    with pytest.raises(OSError, match="disk full"):
        store.append(0, "arm", frame)
    assert not store.path(0, "arm").exists()
    assert list((tmp_path / "logs" / "round=0").iterdir()) == []  # no temporary file left either
    monkeypatch.undo()
    store.append(0, "arm", frame)
    assert store.read("arm", 0, 0).height == 1000
    with pytest.raises(FileExistsError):
        store.append(0, "arm", frame)
    with pytest.raises(LogError, match="missing log partition .*round=1"):
        store.read("arm", 0, 1)


def test_cli_run_tracks_mlflow_and_compare_reads_it_back(tmp_path, monkeypatch, small):
    import mlflow

    monkeypatch.chdir(tmp_path)
    args = ["run", "exploration", "--out", "out", "--quiet", "--rounds", "3"]
    for s in small:
        if not s.startswith(("tracking", "loop")):
            args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "rounds 0-2" in result.output and "ndcg_truth" in result.output  # the last 6 of 3 rounds
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["exploration"])
    parents = runs[runs["tags.arm"].isna()]
    children = runs[runs["tags.recsim.scenario_run"] == parents.iloc[0]["run_id"]]
    assert len(parents) == 1 and len(children) == 5
    assert set(children["tags.arm"]) == {"mf", "mf-explore10", "popularity", "random", "oracle"}
    assert set(children["tags.domain"]) == {"recsys"} and children["tags.git_commit"].notna().all()
    assert (children["params.world.n_users"] == "300").all()
    client = mlflow.MlflowClient(tracking_uri=uri)
    mf = children[children["tags.arm"] == "mf"].iloc[0]
    history = client.get_metric_history(mf["run_id"], "gold")
    assert [p.step for p in history] == [0, 1, 2]
    metrics = pl.read_parquet(tmp_path / "out" / "metrics.parquet").filter(pl.col("arm") == "mf")
    assert [p.value for p in history] == pytest.approx(metrics["gold"].to_list())
    artifacts = {a.path for a in client.list_artifacts(parents.iloc[0]["run_id"])}
    assert {"config.yaml", "metrics.parquet", "curves.png", "summary.json"} <= artifacts
    assert (tmp_path / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()

    result = CliRunner().invoke(
        app, ["compare", "--experiment", "exploration", "--tracking-uri", uri, "--out", "cmp.png"]
    )
    assert result.exit_code == 0, result.output
    assert "oracle" in result.output and (tmp_path / "cmp.png").stat().st_size > 10_000
    result = CliRunner().invoke(app, ["compare", "--experiment", "nope", "--tracking-uri", uri])
    assert result.exit_code == 2 and "no MLflow experiment 'nope'" in result.stderr
    named = ["compare", "--experiment", "exploration", "--tracking-uri", uri, "--out", "typo.png"]
    result = CliRunner().invoke(app, [*named, "--metrics", "gold,ginni"])
    err = result.stderr.strip()
    assert result.exit_code == 2 and "unknown metric 'ginni' (did you mean gini" in err and "\n" not in err
    assert not (tmp_path / "typo.png").exists()


def test_yaml_scenario_and_per_arm_override(tmp_path, small):
    path = tmp_path / "mine.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "mine",
                "description": "two arms",
                "base": {"ranker": {"name": "mf"}},
                "arms": {"greedy": {}, "eps": {"policy": {"epsilon": 0.2}}},
            }
        )
    )
    sc = load_scenario(str(path))
    configs = sc.resolve([*small, "arms.greedy.ranker.epochs=3"])
    assert configs["eps"].policy.epsilon == 0.2 and configs["greedy"].policy.epsilon == 0.0
    assert configs["greedy"].ranker.epochs == 3 and configs["eps"].ranker.epochs == 2
    frame = run_scenario(sc, configs, tmp_path / "out")
    assert set(frame["arm"]) == {"greedy", "eps"}


def test_scenario_without_arms_is_rejected():
    from recsim.config import ConfigError

    with pytest.raises(ConfigError, match="has no arms"):
        Scenario(name="x", description="", arms={}).resolve()


def test_truncated_partition_is_named_in_the_error(tmp_path):
    store = LogStore(tmp_path / "logs")
    store.append(0, "arm", pl.DataFrame({"user": [1, 2], "click": [True, False]}))
    store.append(1, "arm", pl.DataFrame({"user": [3], "click": [True]}))
    path = store.path(1, "arm")
    path.write_bytes(path.read_bytes()[:20])  # a torn file, as after a crash of another writer
    with pytest.raises(LogError, match=r"round=1.*unreadable"):
        store.read("arm", 0, 1)
    assert store.read("arm", 0, 0)["round"].to_list() == [0, 0]


def test_non_finite_scores_stop_the_run_keeping_complete_rounds(tmp_path, monkeypatch, small):
    from typer.testing import CliRunner

    from recsim.cli import app
    from recsim.recsys.rankers import OracleRanker

    real = OracleRanker.score

    def broken(self, world, users, items, round_):
        out = real(self, world, users, items, round_)
        serving = len(users) == 300  # every user acts; the evaluation panel has 64
        return out * float("nan") if serving and round_ == 2 else out

    monkeypatch.setattr(OracleRanker, "score", broken)
    monkeypatch.chdir(tmp_path)
    args = ["run", "exploration", "--out", "out", "-q", "--no-tracking", "--set", "arms.oracle.seed=0"]
    for s in small:
        if not s.startswith("tracking"):
            args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    err = result.stderr.strip()
    assert "round 2, arm 'oracle': non-finite ranker scores" in err and "\n" not in err
    metrics = pl.read_parquet(tmp_path / "out" / "metrics.parquet")
    oracle = metrics.filter(pl.col("arm") == "oracle")
    assert oracle["round"].to_list() == [0, 1]  # the complete rounds of the failing arm are kept
    assert metrics.filter(pl.col("arm") == "mf").height == 4
