"""A damaged run folder is named in one line by every command that reads it, never a traceback; a
run whose disk fills stops in one line, keeps every complete round and resumes to identical bytes."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import recsim
from recsim.cli import app
from recsim.io.logs import LogError

SMALL = ["--set", "world.n_users=100", "--set", "world.n_items=50", "--set", "metrics.panel_users=8"]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    args = ["run", "exploration", *SMALL, "--rounds", "2", "--no-tracking", "-q", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if how == "truncate" else b"not what it should be\n" * 4)


@pytest.mark.parametrize("how", ["truncate", "garbage"])
def test_a_damaged_log_partition_is_named_by_export_and_the_api(run_folder, tmp_path, how):
    folder = tmp_path / "r"
    shutil.copytree(run_folder, folder)
    part = folder / "logs" / "seed=0" / "round=1" / "arm-mf.parquet"
    _damage(part, how)
    res = CliRunner().invoke(
        app, ["export", "obp", str(folder), "--arm", "mf", "--out", str(tmp_path / "o.npz")]
    )
    err = res.stderr.strip()
    assert res.exit_code == 1 and err.startswith("error: ") and "\n" not in err, res.output
    assert f"log partition {part} is unreadable" in err
    assert not (tmp_path / "o.npz").exists()
    with pytest.raises(LogError, match=f"log partition {part} is unreadable"):
        recsim.load(folder).logs()


@pytest.mark.parametrize("name", ["metrics.parquet", "config.yaml"])
def test_a_damaged_metrics_or_config_file_is_named_by_the_api(run_folder, tmp_path, name):
    folder = tmp_path / "r"
    shutil.copytree(run_folder, folder)
    path = folder / name
    path.write_bytes(b"\x00\xff: [unclosed\n" if name == "config.yaml" else path.read_bytes()[:40])
    with pytest.raises(LogError, match=f"{path} is unreadable") as info:
        recsim.load(folder).summary()
    assert "\n" not in str(info.value)


TWO = """name: two
base: {world: {n_users: 150, n_items: 60}, metrics: {panel_users: 8}, loop: {rounds: 3}}
arms:
  pop: {ranker: {name: popularity}}
  mf: {ranker: {name: mf}}
"""


def _limited(limit: int, *args: str) -> subprocess.CompletedProcess:
    """``recsim ARGS`` in a process whose files may not grow past ``limit`` bytes, as a disk that
    fills would stop them (SIGXFSZ ignored: the write fails with EFBIG instead)."""

    def cap() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "recsim", *args]
    return subprocess.run(cmd, preexec_fn=cap, capture_output=True, text=True, env=env, timeout=300)  # noqa: PLW1509


def _outputs(folder: Path) -> dict[str, bytes]:
    paths = [folder / "metrics.parquet", *sorted((folder / "logs").rglob("*.parquet"))]
    paths += sorted((folder / "units").rglob("*.parquet"))
    return {str(p.relative_to(folder)): p.read_bytes() for p in paths}


def test_a_full_disk_stops_the_run_in_one_line_and_resume_finishes_it_identically(tmp_path):
    scenario = tmp_path / "two.yaml"
    scenario.write_text(TWO)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run = ["run", str(scenario), "--no-tracking", "-q", "--threads", "1"]
    assert _limited(resource.RLIM_INFINITY, *run, "--out", str(whole)).returncode == 0
    # popularity's files (under 20 kB) fit; mf's first checkpoint (about 60 kB) does not
    res = _limited(40_000, *run, "--out", str(cut))
    err = res.stderr.strip()
    assert res.returncode == 1 and "\n" not in err and "Traceback" not in res.stderr, res.stderr
    ckpt = cut / "logs" / "seed=0" / "round=0" / "arm-mf.ckpt.pt"
    assert err.startswith(f"error: cannot write {ckpt}: file too large (a file-size limit)"), err
    assert f"recsim run --resume {cut}" in err
    assert not ckpt.exists() and not list(cut.rglob("*.tmp-*"))  # nothing half-written
    kept = pl.read_parquet(cut / "units" / "seed=0" / "arm-pop.parquet")
    assert kept["round"].to_list() == [0, 1, 2]  # the complete unit's rounds are kept
    res = _limited(resource.RLIM_INFINITY, "run", "--resume", str(cut), "-q")
    assert res.returncode == 0, res.stderr
    assert _outputs(cut) == _outputs(whole)
