"""Kill a real `recsim run` with SIGKILL at several points, resume it, and get the uninterrupted
run's metrics.parquet, log partitions and per-round tables, byte for byte, and MLflow runs that
continue without a repeated step. Both domains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
import torch
from conftest import SHORT_RM_FIT

RECSYS = [
    "feedback-loop",
    "--rounds",
    "3",
    "--set",
    "world.n_users=300",
    "--set",
    "world.n_items=200",
    "--set",
    "policy.n_candidates=50",
    "--set",
    "metrics.panel_users=32",
    "--set",
    "arms.oracle.loop.rounds=2",
    "--set",  # carries every user's clicks in the state (checkpointed, restored)
    "policy.repeat_consumption=false",
]
LLM = [
    "llm-self-reward",
    "--rounds",
    "3",
    "--set",
    "llm.n_prompts=128",
    "--set",
    "llm.n_eval_prompts=32",
    "--set",
    "llm.label_prompts=16",
    "--set",
    "llm.initial_prompts=16",
    "--set",
    "llm.batch_prompts=16",
    "--set",
    "llm.pass_k_samples=8",
    "--set",
    "llm.sft_steps=10",
    "--set",
    "llm.policy_steps=2",
    *(arg for setting in SHORT_RM_FIT for arg in ("--set", setting)),
]
# (fault point, which pass): mid-training (after the 7th optimizer step: round 1 of the first
# arm), mid-log-write, between metrics and MLflow, after MLflow but before the checkpoint,
# mid-checkpoint-write (the later ones land in the second arm).
FAULTS = [("train-step", 7), ("log-write", 4), ("metrics", 2), ("mlflow", 4), ("checkpoint-write", 3)]


def _recsim(args: list[str], cwd: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RECSIM_FAULT"}
    if fault is not None:
        env["RECSIM_FAULT"] = fault
    # One torch thread per run: a 2-thread LLM run in this suite once gave other last bits of
    # kl_ref and policy_loss than the same command elsewhere (inside pytest only; none of about 19
    # runs outside it; cause not found). The claim tested here is that
    # a resumed run equals an uninterrupted one, so both run at the same, single thread.
    threads = [] if "--resume" in args else ["--threads", "1"]
    cmd = [sys.executable, "-m", "recsim", "run", *args, *threads, "-q"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _same_run(ref: Path, other: Path) -> None:
    a, b = pl.read_parquet(ref / "metrics.parquet"), pl.read_parquet(other / "metrics.parquet")
    differ = [c for c in a.columns if c not in b.columns or not a[c].equals(b[c])]
    assert a.equals(b), {c: (a[c].to_list(), b[c].to_list() if c in b.columns else None) for c in differ[:3]}
    ref_logs = sorted(p.relative_to(ref) for p in (ref / "logs").rglob("*.parquet"))
    assert ref_logs == sorted(p.relative_to(other) for p in (other / "logs").rglob("*.parquet"))
    for rel in ref_logs:
        assert (ref / rel).read_bytes() == (other / rel).read_bytes(), rel
    for table in ref.glob("position_curves.parquet"):
        assert pl.read_parquet(table).equals(pl.read_parquet(other / table.name))
    assert not list((other / "logs").rglob(".*tmp*"))  # no half-written file left behind


def _mlflow_steps(db: Path, experiment: str) -> dict[str, Counter]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
    return {
        r.info.run_name: Counter(m.step for m in client.get_metric_history(r.info.run_id, "gold"))
        for r in runs
        if "gold" in r.data.metrics
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    for name, args in (("recsys", RECSYS), ("llm", LLM)):
        res = _recsim([*args, "--out", str(tmp / name), "--no-tracking"], tmp)
        assert res.returncode == 0, res.stderr[-2000:]
    return tmp


def _kill_and_resume(args: list[str], tmp_path: Path, fault: str, ref: Path, experiment: str) -> dict:
    """Run with a crash at ``fault``, resume, check the result equals ``ref``; MLflow step counts."""
    out, db = tmp_path / "run", tmp_path / "mlflow.db"
    killed = _recsim([*args, "--out", str(out), "--tracking-uri", f"sqlite:///{db}"], tmp_path, fault)
    assert killed.returncode == -signal.SIGKILL
    resumed = _recsim(["--resume", str(out)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _same_run(ref, out)
    return _mlflow_steps(db, experiment)


@pytest.mark.parametrize(("point", "nth"), FAULTS, ids=[f"{p}:{n}" for p, n in FAULTS])
def test_recsys_run_killed_and_resumed_equals_uninterrupted(tmp_path, reference, point, nth):
    steps = _kill_and_resume(RECSYS, tmp_path, f"{point}:{nth}", reference / "recsys", "feedback-loop")
    rounds = {"mmoe": 3, "mmoe-shallow-tower": 3, "oracle": 2}
    assert steps == {arm: Counter(range(n)) for arm, n in rounds.items()}  # each step once, one run per arm


@pytest.mark.parametrize(
    ("point", "nth"), [("train-step", 3), ("mlflow", 5)], ids=["train-step:3", "mlflow:5"]
)
def test_llm_run_killed_and_resumed_equals_uninterrupted(tmp_path, reference, point, nth):
    steps = _kill_and_resume(LLM, tmp_path, f"{point}:{nth}", reference / "llm", "llm-self-reward")
    assert steps and all(c == Counter(range(3)) for c in steps.values())


def test_resuming_a_finished_run_changes_nothing(tmp_path, reference):
    out = tmp_path / "done"
    res = _recsim([*RECSYS, "--out", str(out), "--no-tracking"], tmp_path)
    assert res.returncode == 0
    before = (out / "metrics.parquet").read_bytes()
    res = _recsim(["--resume", str(out)], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "metrics.parquet").read_bytes() == before


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, reference):
    out = tmp_path / "int"
    env = {k: v for k, v in os.environ.items() if k != "RECSIM_FAULT"}
    cmd = [
        sys.executable,
        "-m",
        "recsim",
        "run",
        *RECSYS,
        "--out",
        str(out),
        "--no-tracking",
        "--threads",
        "1",
        "-q",
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    # wait for the first complete round (its checkpoint), then interrupt as Ctrl-C does
    ckpt = out / "logs" / "seed=0" / "round=0" / "arm-mmoe.ckpt.pt"
    for _ in range(1200):
        if ckpt.exists() or proc.poll() is not None:
            break
        subprocess.run(["sleep", "0.05"])
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130
    assert f"continue with: recsim run --resume {out}" in err and "Traceback" not in err
    assert pl.read_parquet(out / "metrics.parquet").height >= 1
    res = _recsim(["--resume", str(out)], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    _same_run(reference / "recsys", out)


SCALE = [
    "scale",
    "--rounds",
    "3",
    *("--set", "world.n_users=400", "--set", "world.n_items=300", "--set", "world.n_clusters=4"),
    *("--set", "loop.active_users=100", "--set", "policy.ivf_lists=8", "--set", "policy.n_candidates=60"),
    *("--set", "policy.explore_candidates=20", "--set", "metrics.panel_users=16"),
    *("--set", "metrics.panel_items=100"),
]


def test_scale_run_with_retrieval_and_row_optimizers_killed_and_resumed_equals_uninterrupted(tmp_path):
    """The scale preset's checkpoint (two-tower retriever with its IVF index, row-wise optimizers
    whose states are stored as their touched rows, history snapshots stored as changed rows),
    killed while round 1's checkpoint is written and resumed from round 0's."""
    ref = _recsim([*SCALE, "--out", str(tmp_path / "ref"), "--no-tracking"], tmp_path)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "run"
    killed = _recsim([*SCALE, "--out", str(out), "--no-tracking"], tmp_path, "checkpoint-write:2")
    assert killed.returncode == -signal.SIGKILL
    (ckpt,) = (out / "logs").rglob("*.ckpt.pt")
    assert ckpt.parent.name == "round=0"
    state = torch.load(ckpt, weights_only=True)  # the compact forms are what gets restored
    row_adagrad = state["ranker"]["opt"][-1]  # after the dense groups' FlatAdam states
    assert "rows" in state["retriever"]["opt"][0]["state"][0] and "rows" in row_adagrad["state"][0]
    assert len(state["ranker"]["snapshots"][0]) == 4 and state["ranker"]["history"].dtype == torch.int32
    resumed = _recsim(["--resume", str(out)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _same_run(tmp_path / "ref", out)
