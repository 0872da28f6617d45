"""A damaged run folder is named in one line by every command that reads it, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

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
