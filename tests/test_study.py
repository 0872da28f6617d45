"""Studies: every arm on every seed; intervals and paired differences; units in parallel on Ray give
byte-identical files; a killed parallel study resumes only its unfinished units."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from scipy import stats as sps
from typer.testing import CliRunner

import recsim
from recsim.cli import app
from recsim.core.config import ConfigError
from recsim.core.runner import TABLE_COLUMNS
from recsim.core.stats import describe, paired
from recsim.recsys.config import WorldConfig

SMALL = [
    "--set",
    "world.n_users=120",
    "--set",
    "world.n_items=60",
    "--set",
    "metrics.panel_users=16",
    "--rounds",
    "2",
    "--no-tracking",
    "-q",
]


def _cli(*args: str) -> None:
    result = CliRunner().invoke(app, ["run", *args])
    assert result.exit_code == 0, result.output


def _files(folder: Path) -> dict[str, bytes]:
    """metrics.parquet, every unit file and every log partition, by relative path."""
    paths = [folder / "metrics.parquet", *sorted((folder / "logs").rglob("*.parquet"))]
    paths += sorted((folder / "units").rglob("*.parquet"))
    return {str(p.relative_to(folder)): p.read_bytes() for p in paths}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seq") / "run"
    _cli("exploration", *SMALL, "--seeds", "0,1", "--threads", "1", "--out", str(out))
    return out


def test_every_arm_runs_on_every_seed_with_intervals(sequential):
    frame = pl.read_parquet(sequential / "metrics.parquet")
    assert frame.columns[:4] == ["arm", "seed", "domain", "round"]
    assert frame.group_by("arm", "seed").len()["len"].to_list() == [2] * 10
    assert sorted(p.name for p in (sequential / "logs").iterdir()) == ["seed=0", "seed=1"]
    summary = json.loads((sequential / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["reference"] == "mf"
    # the scenario reads its last 6 rounds; a 2-round run has rounds 0-1, each seed's mean of them
    assert summary["window"] == [0, 1]
    gold = summary["stats"]["oracle"]["gold"]
    oracle = frame.filter(pl.col("arm") == "oracle").group_by("seed").agg(pl.col("gold").mean())
    values = oracle["gold"].to_numpy()
    lo, hi = sps.t.interval(0.95, 1, loc=values.mean(), scale=sps.sem(values))
    assert gold["n"] == 2 and np.isclose(gold["low"], lo) and np.isclose(gold["high"], hi)
    assert summary["paired"]["oracle"]["gold"]["n"] == 2 and "mf" not in summary["paired"]
    md = (sequential / "summary.md").read_text()
    tables = [line for line in md.splitlines() if line.startswith("| arm |")]
    assert len(tables) >= 4  # means, diffs, power, settling: each one table per group of metrics
    assert all(line.count("|") - 2 <= TABLE_COLUMNS for line in tables)
    assert md.count("| oracle |") == len(tables) and "nan" not in md.lower() and "e-1" not in md


def test_a_seed_of_a_study_is_the_run_of_that_seed_alone(sequential, tmp_path):
    """Arms of one seed share the world whatever other seeds run beside it."""
    out = tmp_path / "one"
    _cli("exploration", *SMALL, "--seed", "1", "--threads", "1", "--out", str(out))
    alone = pl.read_parquet(out / "metrics.parquet")
    both = pl.read_parquet(sequential / "metrics.parquet").filter(pl.col("seed") == 1)
    assert alone.equals(both)


def test_units_on_ray_are_byte_identical_and_a_killed_study_resumes_per_unit(sequential, tmp_path):
    parallel = tmp_path / "par"
    _cli("exploration", *SMALL, "--seeds", "0,1", "--threads", "1", "--workers", "2", "--out", str(parallel))
    assert _files(parallel) == _files(sequential)
    # A unit killed mid-run on Ray (SIGKILL at its 2nd checkpoint write): the study stops with
    # one line; --resume runs only what is unfinished and ends byte-identical.
    killed = tmp_path / "killed"
    env = {**os.environ, "RECSIM_FAULT": "checkpoint-write:2"}
    args = ["exploration", *SMALL, "--seeds", "0,1", "--threads", "1", "--workers", "2", "--out", str(killed)]
    proc = subprocess.run(
        [sys.executable, "-m", "recsim", "run", *args], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "failed on Ray" in proc.stderr, proc.stderr[-500:]
    before = {p.name for p in (killed / "units").rglob("*.parquet")}
    assert 0 < len(before) < 10
    resumed = subprocess.run(
        [sys.executable, "-m", "recsim", "run", "--resume", str(killed), "--workers", "2", "-q"],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-500:]
    assert _files(killed) == _files(sequential)


@pytest.mark.skipif(
    shutil.which(str(Path(sys.executable).parent / "ray")) is None, reason="needs the ray CLI"
)
def test_a_study_joins_a_running_ray_head(sequential, tmp_path):
    import ray as ray_api

    # The in-process Ray of the tests above (CliRunner runs in this process) must go first:
    # `ray stop --force` below kills every Ray process, and a driver whose cluster died exits
    # (status 1) about a minute later, taking the test session with it.
    ray_api.shutdown()
    ray = str(Path(sys.executable).parent / "ray")
    port = "6391"
    env = {**os.environ, "RAY_ADDRESS": ""}
    start = [ray, "start", "--head", "--port", port, "--num-cpus", "2", "--include-dashboard=false"]
    subprocess.run(
        [*start, "--node-ip-address", "127.0.0.1", "--disable-usage-stats"],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    try:
        out = tmp_path / "cluster"
        args = ["run", "exploration", *SMALL, "--seeds", "0,1", "--threads", "1", "--workers", "2"]
        args += ["--ray-address", f"127.0.0.1:{port}", "--out", str(out)]
        proc = subprocess.run(
            [sys.executable, "-m", "recsim", *args], capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-800:]
        assert _files(out) == _files(sequential)
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)


def test_paired_differences_against_scipy():
    rng = np.random.default_rng(0)
    base = rng.normal(size=6)
    frame = pl.DataFrame(
        {
            "arm": ["a"] * 6 + ["b"] * 6 + ["c"] * 6,
            "seed": list(range(6)) * 3,
            "round": [0] * 18,
            "x": np.concatenate(
                [base, base + 0.5 + rng.normal(scale=0.1, size=6), base + 0.3 * np.array([1, -1] * 3)]
            ),
        }
    )
    d = paired(frame, ["x"], "a")
    b = d.filter(pl.col("arm") == "b").row(0, named=True)
    c = d.filter(pl.col("arm") == "c").row(0, named=True)
    xb = frame.filter(pl.col("arm") == "b")["x"].to_numpy() - base
    assert np.isclose(b["p"], sps.ttest_rel(base + xb, base).pvalue)
    assert b["distinguishable"] and b["low"] > 0  # +0.5 with noise 0.1 over 6 seeds
    assert not c["distinguishable"] and c["low"] < 0 < c["high"]  # mean shift 0: the interval covers it
    assert np.isclose(c["p"], 1.0)
    one = describe(frame.filter(pl.col("seed") == 0), ["x"])
    assert one["n"].to_list() == [1, 1, 1] and one["low"].is_nan().all()  # one seed: no interval


def test_python_api_takes_dicts_and_config_objects():
    spec = {
        "name": "api-check",
        "base": {"world": {"n_users": 100, "n_items": 50}, "metrics": {"panel_users": 8}},
        "arms": {"random": {"ranker": {"name": "random"}}, "oracle": {"ranker": {"name": "oracle"}}},
        "table": ["gold"],
    }
    result = recsim.run(
        spec, seeds=[3, 4], rounds=2, tracking=False, overrides={"world": WorldConfig(n_users=90)}
    )
    try:
        assert result.config["arms"]["oracle"]["world"]["n_users"] == 90
        assert sorted(set(result.metrics["seed"])) == [3, 4]
        diff = result.compare().row(0, named=True)
        assert diff["arm"] == "oracle" and diff["metric"] == "gold" and diff["diff"] > 0
        assert result.plot(["gold"]).exists()
        assert result.logs().select("seed").unique().collect().height == 2
    finally:
        result.close()
    assert not result.out.exists()
    with pytest.raises(ConfigError, match="world.n_users: Input should be greater than 0"):
        recsim.run(spec, overrides={"world.n_users": 0}, tracking=False)
    with pytest.raises(ConfigError, match="reference must be one of the arms"):
        result.compare(reference="nope")


def test_a_metric_that_does_not_exist_or_is_missing_from_a_unit_is_refused(sequential, tmp_path):
    result = recsim.load(sequential)
    for call in (
        lambda: result.summary(["ginni"]),
        lambda: result.compare(metrics=["ginni"]),
        lambda: result.rounds(metrics=["ginni"]),
        lambda: result.plot(["ginni"], tmp_path / "p.png"),
    ):
        with pytest.raises(ConfigError, match=r"unknown metric 'ginni' \(did you mean gini"):
            call()
    assert not (tmp_path / "p.png").exists()  # no blank figure
    with pytest.raises(ConfigError, match="metrics must be a list of names"):
        result.summary("gini")
    # a unit whose worker did not compute a metric the arm's other seeds have
    arm = result.metrics["arm"][0]
    hole = (pl.col("arm") == arm) & (pl.col("seed") == 1) & (pl.col("round") == 1)
    result._metrics = result.metrics.with_columns(
        pl.when(hole).then(None).otherwise(pl.col("gini")).alias("gini")
    )
    with pytest.raises(ConfigError, match=f"metric 'gini' is missing from unit {arm}/seed=1 in round 1"):
        result.summary(["gini"])
    assert len(result.summary(["gold"])) > 0  # the others still read


def test_bad_study_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(bytes(range(256)))
    cases = [
        (["run", str(binary)], "not a text file"),
        (
            ["run", "exploration", "--set", "world.n_users=2000000000", "--set", "metrics.panel_users=8"],
            "needs at least",
        ),
        (["run", "exploration", "--seeds", "0,0"], "--seeds lists distinct"),
        (["run", "exploration", "--seeds", "2", "--seed", "1"], "give --seed or --seeds"),
        (["run", "exploration", "--workers", "64", "--threads", "2"], "exceeds the"),
        (["run", "exploration", "--window", "5-2"], "--window expects FIRST-LAST"),
        (["run", "mmoe-tasks", "--seeds", "2"], "is not a round loop"),
        (["compare", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"], "no MLflow store at"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")] if args[0] == "run" else args)
        err = result.stderr.strip()
        assert result.exit_code == 2 and err.startswith("error: ") and "\n" not in err, (args, result.output)
        assert message in err, (args, err)
        assert (
            not (tmp_path / "o").exists()
            and not (tmp_path / "none.db").exists()
            and not (tmp_path / "mlflow.db").exists()
        )


def test_runs_started_at_once_on_a_new_store_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "recsim",
                "run",
                "exploration",
                *SMALL[:-2],
                "--rounds",
                "1",
                "-q",
                "--tracking-uri",
                uri,
                "--out",
                str(tmp_path / f"run{i}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outcomes = [(p.wait(timeout=600), p.stderr.read()[-300:]) for p in procs]
    assert [code for code, _ in outcomes] == [0, 0, 0, 0], outcomes
    import mlflow

    runs = mlflow.MlflowClient(tracking_uri=uri).search_runs(
        [mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name("exploration").experiment_id]
    )
    assert sum(1 for r in runs if "arm" not in r.data.tags) == 4  # four scenario runs


def test_plugins_reach_the_ray_workers(tmp_path):
    """A metric registered in one's own module is imported again by every Ray worker: the parallel
    study has its column, with the sequential study's values (equal threads)."""
    from test_plugins import PLUGIN, STUDY, recsim_run

    (tmp_path / "myplug.py").write_text(PLUGIN)
    (tmp_path / "plugged.yaml").write_text(yaml.safe_dump(STUDY))
    common = [
        "plugged.yaml",
        "--plugins",
        "myplug",
        "--seeds",
        "0,1",
        "--threads",
        "1",
        "--no-tracking",
        "-q",
    ]
    for out, workers in (("seq", "0"), ("ray", "2")):
        proc = recsim_run(tmp_path, *common, "--workers", workers, "--out", out)
        assert proc.returncode == 0, proc.stderr[-800:]
    seq, par = (pl.read_parquet(tmp_path / o / "metrics.parquet") for o in ("seq", "ray"))
    assert par["served_relevance"].is_finite().all() and par.height == 8
    assert par.drop("seconds", strict=False).equals(seq.drop("seconds", strict=False))
