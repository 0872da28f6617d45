"""The bad-input corpus beyond configs: run folders given to --resume, their checkpoints, log
partitions and tracking state. Each case: exit status, one line naming the problem (and the file),
and nothing in the folder lost or half-written."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from recsim.cli import app
from recsim.core.runner import run_scenario
from recsim.scenario import load_scenario

ARM = "mmoe"
SMALL = [
    "world.n_users=200",
    "world.n_items=120",
    "policy.n_candidates=40",
    "metrics.panel_users=16",
    "loop.rounds=3",
    "loop.keep_checkpoints=3",
    "tracking.enabled=false",
]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A run folder as a crash in round 2 of the first arm leaves it: rounds 0-1 complete."""
    out = tmp_path_factory.mktemp("base") / "run"
    sc = load_scenario("feedback-loop")
    configs = sc.resolve(SMALL)
    run_scenario(sc, {ARM: configs[ARM]}, out, source="feedback-loop")
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["arms"] = {a: c.model_dump(mode="json") for a, c in configs.items()}  # all arms planned
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out / "logs" / "seed=0" / "round=2" / f"arm-{ARM}.ckpt.pt").unlink()
    (out / "summary.json").unlink()
    return out


def _ckpt(run: Path, r: int = 1) -> Path:
    return run / "logs" / "seed=0" / f"round={r}" / f"arm-{ARM}.ckpt.pt"


def _log(run: Path, r: int) -> Path:
    return run / "logs" / "seed=0" / f"round={r}" / f"arm-{ARM}.parquet"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_config(run: Path, fn: Callable[[dict], None]) -> None:
    data = yaml.safe_load((run / "config.yaml").read_text())
    fn(data)
    (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _resave(run: Path, fn: Callable[[dict], object]) -> None:
    payload = torch.load(_ckpt(run), weights_only=True)
    torch.save(fn(payload), _ckpt(run))


def _set(key: str, value: object) -> Callable[[dict], dict]:
    return lambda p: {**p, key: value}


# (id, how to break the folder, extra CLI args, exit status, expected text of the one line)
CASES: list[tuple[str, Callable[[Path], None], list[str], int, str]] = [
    ("ckpt-truncated", lambda r: _truncate(_ckpt(r)), [], 1, "round=1/arm-mmoe.ckpt.pt is unreadable"),
    ("ckpt-garbage", lambda r: _ckpt(r).write_bytes(b"not a checkpoint"), [], 1, "ckpt.pt is unreadable"),
    ("ckpt-empty", lambda r: _ckpt(r).write_bytes(b""), [], 1, "ckpt.pt is unreadable"),
    ("ckpt-tensor", lambda r: torch.save(torch.zeros(3), _ckpt(r)), [], 1, "has an unknown format"),
    (
        "ckpt-format",
        lambda r: _resave(r, _set("format", 99)),
        [],
        1,
        "has an unknown format (expected format 1)",
    ),
    ("ckpt-arm", lambda r: _resave(r, _set("arm", "other")), [], 1, "is for arm='other', expected 'mmoe'"),
    ("ckpt-round", lambda r: _resave(r, _set("round", 7)), [], 1, "is for round=7, expected 1"),
    (
        "ckpt-domain",
        lambda r: _resave(r, _set("domain", "llm")),
        [],
        1,
        "is for domain='llm', expected 'recsys'",
    ),
    (
        "ckpt-object",
        lambda r: torch.save({"format": 1, "evil": Path("/")}, _ckpt(r)),
        [],
        1,
        "ckpt.pt is unreadable (truncated or not ours)",
    ),
    (
        "ckpt-other-config",
        lambda r: _edit_config(r, lambda d: d["arms"][ARM]["policy"].update(epsilon=0.5)),
        [],
        1,
        "was written under another config of arm 'mmoe'",
    ),
    (
        "ckpt-weights-shape",
        lambda r: _resave(r, lambda p: {**p, "ranker": {**p["ranker"], "history": torch.zeros(3, 3)}}),
        [],
        1,
        "does not fit arm 'mmoe'",
    ),
    ("log-truncated", lambda r: _truncate(_log(r, 0)), [], 1, "round=0/arm-mmoe.parquet is unreadable"),
    ("log-missing", lambda r: _log(r, 0).unlink(), [], 1, "missing log partition"),
    (
        "log-schema",
        lambda r: (
            pl.read_parquet(_log(r, 0))
            .with_columns(pl.col("click").cast(pl.String))
            .write_parquet(_log(r, 0))
        ),
        [],
        1,
        "round=0/arm-mmoe.parquet does not match the log's schema",
    ),
    (
        "log-column-missing",
        lambda r: pl.read_parquet(_log(r, 1)).drop("score").write_parquet(_log(r, 1)),
        [],
        1,
        "round=1/arm-mmoe.parquet does not match the log's schema",
    ),
    (
        "tracking-json",
        lambda r: (r / "tracking.json").write_text("{not json"),
        [],
        1,
        "tracking.json is unreadable",
    ),
    ("no-config", lambda r: (r / "config.yaml").unlink(), [], 2, "has no config.yaml"),
    ("config-yaml", lambda r: (r / "config.yaml").write_text("arms: [unclosed"), [], 2, "is not valid YAML"),
    (
        "config-no-arms",
        lambda r: (r / "config.yaml").write_text("scenario: x\n"),
        [],
        2,
        "lacks 'scenario' and 'arms'",
    ),
    (
        "config-bad-value",
        lambda r: _edit_config(r, lambda d: d["arms"][ARM]["policy"].update(epsilon=3)),
        [],
        2,
        "invalid config for arm 'mmoe': policy.epsilon",
    ),
    (
        "config-arms-differ",
        lambda r: _edit_config(r, lambda d: d["arms"].pop("oracle")),
        [],
        2,
        "scenario 'feedback-loop' has",
    ),
    (
        "config-distributed",
        lambda r: _edit_config(r, lambda d: d.update(distributed={"world_size": 2})),
        [],
        2,
        "sharded runs cannot be resumed",
    ),
    ("resume-with-set", lambda r: None, ["--set", "seed=3"], 2, "drop --set"),
    ("resume-with-out", lambda r: None, ["--out", "elsewhere"], 2, "drop --out"),
    (
        "resume-other-scenario",
        lambda r: None,
        ["exploration"],
        2,
        "holds a run of 'feedback-loop', not 'exploration'",
    ),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("break_it", "args", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_resume_refuses_a_broken_run_in_one_line(
    stopped, tmp_path, monkeypatch, break_it, args, status, message
):
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    break_it(run)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(run)
    positional = [a for a in args if not a.startswith("-") and a not in ("seed=3", "elsewhere")]
    options = [a for a in args if a not in positional]
    result = CliRunner().invoke(app, ["run", *positional, "--resume", str(run), "-q", *options])
    assert result.exit_code == status, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert message in err
    after = _snapshot(run)
    # nothing complete is lost: every file but the dropped partitions of the unfinished round stays
    assert {k: v for k, v in before.items() if "round=2" not in k} == {
        k: v for k, v in after.items() if "round=2" not in k
    }
    assert not (tmp_path / "elsewhere").exists()


def test_resume_missing_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--resume", "nowhere"])
    assert result.exit_code == 2 and "--resume: nowhere is not a folder" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_stopped_folder_itself_resumes(stopped, tmp_path, monkeypatch):
    """The corpus's base folder is sound: resumed unbroken, it finishes every arm."""
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--resume", str(run), "-q"])
    assert result.exit_code == 0, result.output
    frame = pl.read_parquet(run / "metrics.parquet")
    assert frame.group_by("arm").len().sort("arm")["len"].to_list() == [3, 3, 3]
