"""Every bad input exits 2 with one line naming the problem, and writes nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsim.cli import app
from recsim.config import ConfigError

CASES = [
    (["--set", "world.n_users=-5"], "world.n_users: Input should be greater than 0 (got -5)"),
    (["--set", "world.n_items=1"], "world.n_items: Input should be greater than 1 (got 1)"),
    (["--set", "policy.slate_size=5000"], "policy.slate_size must be <= world.n_items (1000), got 5000"),
    (["--set", "policy.n_candidates=5"], "policy.n_candidates must lie in [policy.slate_size=10"),
    (
        ["--set", "ranker.name=xgboost"],
        "ranker.name must be one of random, popularity, oracle, mf, mmoe, shared_bottom, single_task; "
        "got 'xgboost'",
    ),
    (["--set", "policy.epsilon=1.5"], "policy.epsilon: Input should be less than or equal to 1 (got 1.5)"),
    (
        ["--set", "policy.exploration_share=-0.1"],
        "policy.exploration_share: Input should be greater than or equal to 0",
    ),
    (
        ["--set", "world.satisfaction_correlation=2"],
        "world.satisfaction_correlation: Input should be less than or equal to 1",
    ),
    (["--set", "world.n_users=many"], "world.n_users: Input should be a valid integer"),
    (["--set", "ranker.warm_start=maybe"], "ranker.warm_start: Input should be a valid boolean"),
    (["--set", "world.colour=red"], "world.colour: unknown key (allowed: affinity_scale"),
    (["--set", "nonsense=1"], "nonsense: unknown key (allowed: behavior, device, domain"),
    (["--set", "world.devices={mobile: 0.5, desktop: 0.4}"], "world.devices shares must sum to 1"),
    (["--set", "behavior.eta={mobile: 1.0}"], "behavior.eta must give one exponent per device"),
    (["--set", "behavior.model=dcm"], "behavior.model: must be one of pbm, cascade, logit, choice (got"),
    (["--set", "loop.active_users=999999"], "loop.active_users must be <= world.n_users"),
    (["--set", "ranker.prior_impressions=0.5"], "ranker.prior_impressions must be > ranker.prior_clicks"),
    (["--set", "world.n_users"], "--set expects dotted.key=value"),
    (["--set", "arms.nobody.seed=1"], "expected arms.ARM.key with ARM one of mf, mf-explore10"),
    (
        ["--set", "arms.mf.loop.rounds=-1"],
        "invalid config for arm 'mf': loop.rounds: Input should be greater than 0",
    ),
    (["--rounds", "0"], "loop.rounds: Input should be greater than 0 (got 0)"),
    (["--set", "domain=vision"], "domain: Input should be 'recsys' or 'llm' (got 'vision')"),
    (["--set", "device=tpu"], "device: Input should be 'cpu' or 'cuda' (got 'tpu')"),
    (["--device", "tpu"], "device: Input should be 'cpu' or 'cuda' (got 'tpu')"),
    (["--set", "device=cuda", "--set", "domain=llm"], "device='cuda' runs the recommender domain only"),
    (
        ["--set", "policy.retrieval=two_tower", "--set", "policy.explore_candidates=500"],
        "policy.retrieval='two_tower' needs policy.n_candidates > policy.explore_candidates (500)",
    ),
    (
        [
            "--set",
            "policy.retrieval=two_tower",
            "--set",
            "policy.n_candidates=100",
            "--set",
            "policy.ivf_probe=999",
        ],
        "policy.ivf_probe must be <= policy.ivf_lists <= world.n_items",
    ),
    (["--set", "policy.retrieval=faiss"], "policy.retrieval: Input should be 'uniform' or 'two_tower'"),
    (["--set", "metrics.panel_items=99999"], "metrics.panel_items must be <= world.n_items"),
    (["--set", "ranker.embedding_lr=0"], "ranker.embedding_lr: Input should be greater than 0"),
    (["--distributed"], "arm 'mf': ranker.name=mf has no sharded training"),
    (["--tracking-uri", "http://127.0.0.1:9"], "MLflow tracking URI http://127.0.0.1:9 cannot be used"),
    (["--tracking-uri", "sqlite:////proc/forbidden/mlflow.db"], "or run with --no-tracking"),
    (
        ["--set", "llm.optimizer=ppo"],
        "llm.optimization.optimizer: Input should be 'grpo', 'best_of_n', 'psr'",
    ),
    (
        ["--set", "llm.task.kind=sum", "--set", "llm.max_difficulty=9"],
        "llm.task.max_difficulty + 1 must be <= llm.task.prompt_len (4), got 9",
    ),
    (["--set", "llm.task.n_values=9"], "llm.task.n_values: Input should be greater than or equal to 10"),
    (
        ["--set", "llm.task.kind=sum", "--set", "llm.optimization.reward=process"],
        "process rewards and step-checking gold need llm.task.kind chain",
    ),
    (
        ["--set", "llm.anchor_share=1.5"],
        "llm.reward_model.anchor_share: Input should be less than or equal to 1",
    ),
    (["--set", "llm.group_size=1"], "llm.optimization.group_size: Input should be greater than 1 (got 1)"),
    (["--set", "seed=[1, 2]"], "seed: Input should be a valid integer"),
    (["--quick"], "scenario 'exploration' has no --quick preset"),
    # non-finite numbers: no float field gives NaN or an infinity a meaning
    (["--set", "world.base_logit=.inf"], "world.base_logit: Input should be a finite number (got inf)"),
    (["--set", "policy.epsilon=.nan"], "policy.epsilon: Input should be a finite number (got nan)"),
    (["--set", "ranker.lr=-.inf"], "ranker.lr: Input should be a finite number (got -inf)"),
    (
        ["--set", "behavior.eta={mobile: .inf, desktop: 0.6}"],
        "behavior.eta.mobile: Input should be a finite number (got inf)",
    ),
    (["--set", "llm.labeler.length_bias=.nan"], "llm.labeler.length_bias: Input should be a finite number"),
    # a value that repeats a key
    (["--set", "behavior.eta={mobile: 1.0, mobile: 2.0}"], "key 'mobile' appears twice (lines 1 and 1)"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_config_exits_2_with_one_line_and_writes_nothing(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "exploration", "--out", "out", *args])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert message in err
    assert list(tmp_path.iterdir()) == []  # no output folder, no mlflow.db


def test_unknown_scenario_and_missing_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "no-such-scenario"])
    assert (
        result.exit_code == 2
        and "unknown scenario 'no-such-scenario' (known: " in result.stderr
        and "feedback-loop" in result.stderr
    )
    result = CliRunner().invoke(app, ["run", "missing.yaml"])
    assert result.exit_code == 2 and "scenario file missing.yaml does not exist" in result.stderr
    (tmp_path / "bad.yaml").write_text("name: x\narms: [1, 2]\n")
    result = CliRunner().invoke(app, ["run", "bad.yaml"])
    assert result.exit_code == 2 and "'arms' must map each arm name" in result.stderr
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    result = CliRunner().invoke(app, ["run", "broken.yaml"])
    assert result.exit_code == 2 and "not valid YAML" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "broken.yaml"]


def test_a_scenario_that_repeats_a_key_is_refused_naming_it_and_its_lines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text, message in [
        (
            "name: x\narms:\n  a: {}\n  b: {}\n  a: {loop: {rounds: 2}}\n",
            "key 'a' appears twice (lines 3 and 5)",
        ),
        ("name: x\nname: y\narms: {a: {}}\n", "key 'name' appears twice (lines 1 and 2)"),
        ("name: x\narms:\n  a: {world: {n_users: 50, n_users: 60}}\n", "key 'n_users' appears twice"),
    ]:
        (tmp_path / "s.yaml").write_text(text)
        result = CliRunner().invoke(app, ["run", "s.yaml", "--no-tracking"])
        err = result.stderr.strip()
        assert result.exit_code == 2 and "\n" not in err and message in err, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def _unusable_paths(tmp: Path) -> list[tuple[str, str]]:
    (tmp / "afile").write_text("x")
    return [
        (str(tmp / "afile"), "exists and is not a folder"),
        (str(tmp / "afile" / "sub"), f"goes through {tmp / 'afile'}, which is a file, not a folder"),
        (str(tmp / ("n" * 300) / "run"), "is longer than 255 bytes"),
        (str(tmp / "/".join(["d" * 200] * 20)), "the path is too long"),
    ]


def test_unusable_output_paths_are_one_line_and_write_nothing(tmp_path, monkeypatch):
    import recsim
    from recsim.config import ConfigError

    monkeypatch.chdir(tmp_path)
    for out, message in _unusable_paths(tmp_path):
        result = CliRunner().invoke(app, ["run", "exploration", "--out", out, "--no-tracking"])
        err = result.stderr.strip()
        assert result.exit_code == 2 and err.startswith("error: ") and "\n" not in err, err
        assert message in err, err
        with pytest.raises(ConfigError, match=re.escape(message[:30])):
            recsim.run("exploration", out=out, tracking=False, rounds=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_an_output_folder_that_may_not_be_written_is_refused(tmp_path, monkeypatch):
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    result = CliRunner().invoke(app, ["run", "exploration", "--out", str(tmp_path / "r"), "--no-tracking"])
    assert result.exit_code == 2 and f"cannot write to {tmp_path} (permission denied)" in result.stderr


def test_a_ray_address_where_no_head_listens_fails_fast_before_writing(tmp_path, monkeypatch):
    import socket
    import time

    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:  # a free port on the loopback: nothing listens once it closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    args = ["run", "exploration", "--workers", "1", "--ray-address", f"127.0.0.1:{port}", "--out", "out"]
    result = CliRunner().invoke(app, args)
    err = result.stderr.strip()
    assert result.exit_code == 2 and "\n" not in err, result.output
    assert f"--ray-address 127.0.0.1:{port}: no Ray head answers there (connection refused)" in err
    assert time.perf_counter() - start < 30 and list(tmp_path.iterdir()) == []
    from recsim.core.parallel import check_ray_address

    waited = []

    def silent(address, timeout):  # noqa: ANN001 - a host that never answers
        waited.append(timeout)
        raise TimeoutError

    monkeypatch.setenv("RECSIM_RAY_TIMEOUT", "0.5")
    monkeypatch.setattr(socket, "create_connection", silent)
    with pytest.raises(ConfigError, match=r"no answer within 0.5 s"):
        check_ray_address(f"ray://127.0.0.1:{port}")
    assert waited == [0.5]  # the wait is bounded by the setting
    with pytest.raises(ConfigError, match="expects HOST:PORT"):
        check_ray_address("nowhere")


def test_non_empty_output_folder_is_refused_and_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    result = CliRunner().invoke(app, ["run", "exploration", "--out", "out", "--no-tracking"])
    assert result.exit_code == 2 and "exists and is not empty" in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"


def test_real_process_exit_status_and_single_stderr_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "recsim.cli", "run", "--set", "policy.epsilon=7"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: invalid config for arm 'mmoe': policy.epsilon: "
        "Input should be less than or equal to 1 (got 7)"
    ]
    assert list(tmp_path.iterdir()) == []


DIST_CASES = [
    (["--set", "ranker.sparse_embeddings=false"], "set ranker.sparse_embeddings=true"),
    (["--set", "ranker.sparse_embeddings=true"], "--distributed needs the torchrun environment"),
    (["--set", "ranker.sparse_embeddings=true", "--sharding", "row_wise"], "--sharding must be one of"),
]


@pytest.mark.parametrize(("args", "message"), DIST_CASES, ids=[" ".join(a) for a, _ in DIST_CASES])
def test_distributed_refusals_are_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    result = CliRunner().invoke(app, ["run", "feedback-loop", "--distributed", "--out", "out", *args])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_distributed_refuses_non_loop_scenarios(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "mmoe-tasks", "--distributed", "--out", "out"])
    assert result.exit_code == 2 and "is not a loop scenario" in result.stderr
    result = CliRunner().invoke(app, ["bench", "--only", "gpu"])
    assert (
        result.exit_code == 2
        and "--only must be one of peer, startup, loop, scale, sharded, core, study" in result.stderr
    )
