"""The recommender loop on a CUDA device (skipped where torch sees no GPU), and the CPU refusal."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from recsim.cli import app
from recsim.scenario import builtin_scenarios

GPU = torch.cuda.is_available()
SMALL = [
    "world.n_users=3000",
    "world.n_items=800",
    "loop.active_users=1000",
    "loop.rounds=3",
    "policy.ivf_lists=16",
    "policy.ivf_probe=4",
    "policy.explore_candidates=20",
    "policy.n_candidates=100",
    "metrics.panel_items=200",
    "metrics.panel_users=64",
    "tracking.enabled=false",
]


@pytest.mark.skipif(GPU, reason="a GPU is visible: the refusal does not apply")
def test_cuda_without_a_gpu_is_refused_in_one_line(tmp_path):
    res = CliRunner().invoke(app, ["run", "feedback-loop", "--device", "cuda", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "no CUDA GPU is visible" in res.output and not (tmp_path / "o").exists()


@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
def test_scale_loop_runs_on_the_gpu(tmp_path):
    sc = builtin_scenarios()["scale"]
    cpu = sc.run(sc.resolve(SMALL), tmp_path / "cpu")
    gpu = sc.run(sc.resolve([*SMALL, "device=cuda"]), tmp_path / "gpu")
    assert gpu.columns == cpu.columns and gpu.height == cpu.height
    # Round 0 serves the initial (CPU-drawn) weights on CPU-drawn worlds; draws differ by device,
    # so compare what does not depend on them only loosely: both learn, both are finite.
    for frame in (cpu, gpu):
        assert all(math.isfinite(v) for v in frame["gold"]) and frame["gold"][-1] > frame["gold"][0]
    log = pl.read_parquet(tmp_path / "gpu" / "logs" / "seed=0" / "round=2" / "arm-mmoe-shallow-tower.parquet")
    assert log.height == 1000 * 10
