"""The runner: a scenario's arms into one run folder, with tracking, checkpoints and resume.

A run folder holds ``config.yaml`` (every arm, fully resolved), ``metrics.parquet`` (one row per
arm and round: ``arm``, ``domain``, ``round``, then the metrics), ``logs/round=R/arm-A.parquet``,
``curves.png`` and ``summary.json``; domains add per-round tables (``position_curves.parquet``,
``rm_budget.parquet``) and figures drawn from them. :class:`RunRecord` is the bookkeeping every
runner shares (the loop's here, and the experiments' that are not loops).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import polars as pl
import yaml

from recsim.core import faults
from recsim.core.domain import Domain, domain_class, make_domain
from recsim.core.loop import OnRound, metrics_frame, run_arm
from recsim.io.checkpoint import CheckpointError, CheckpointStore
from recsim.io.logs import LogStore, safe_name, write_atomic
from recsim.io.tracking import NullTracker, Tracker, git_commit


class ScenarioSpec(Protocol):
    """What the runner needs of a scenario (see :class:`recsim.scenario.Scenario`)."""

    name: str
    plot: tuple[str, ...]
    table: tuple[str, ...]

    def post(self, frame: pl.DataFrame, out: Path) -> dict[str, float]:
        """Scenario-level results computed from every arm's metrics (logged on the parent run)."""
        ...


def write_json(data: dict[str, Any], path: Path) -> None:
    """``data`` as indented JSON at ``path``, atomically (temp name, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False, default=str))
    os.replace(tmp, path)


class RunRecord:
    """The bookkeeping every runner shares, as a context manager.

    On entry: the folder exists, ``config.yaml`` holds ``config`` (unless None: a resumed run
    keeps its own), and the parent tracker run has started (tags: scenario, git commit; ``run_id``
    continues a recorded one). :meth:`summary` writes ``summary.json``; on exit the parent run
    ends with status FINISHED (after :meth:`finished`), KILLED (Ctrl-C) or FAILED, and the
    artifacts named to :meth:`finished` (``config.yaml``, ``metrics.parquet``, ``curves.png``,
    ``summary.json`` whatever the status).
    """

    BASE = ("config.yaml", "metrics.parquet", "curves.png", "summary.json")

    def __init__(
        self,
        name: str,
        out: Path,
        tracker: Tracker | None = None,
        config: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.name, self.out, self.config, self.run_id = name, out, config, run_id
        self.tracker: Tracker = tracker or NullTracker()
        self.status = "FAILED"
        self.extra: list[Path] = []

    def __enter__(self) -> RunRecord:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.config is not None:
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.commit = git_commit()
        self.tracker.start(self.name, {"scenario": self.name, "git_commit": self.commit}, run_id=self.run_id)
        self.started = time.perf_counter()
        return self

    def arm_tags(self, arm: str, domain: str, **more: str) -> dict[str, str]:
        """MLflow tags of one arm's run."""
        return {"scenario": self.name, "arm": arm, "domain": domain, "git_commit": self.commit, **more}

    def summary(self, **fields: Any) -> dict[str, Any]:
        """Write ``summary.json``: scenario, git commit and elapsed seconds, then ``fields``."""
        data = {
            "scenario": self.name,
            "git_commit": self.commit,
            "elapsed_s": round(time.perf_counter() - self.started, 3),
            **fields,
        }
        (self.out / "summary.json").write_text(json.dumps(data, indent=2, allow_nan=False, default=str))
        return data

    def finished(self, *extra: Path) -> None:
        """Mark the run complete; ``extra`` artifacts join the base ones on the parent run."""
        self.extra = list(extra)
        self.status = "FINISHED"

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is KeyboardInterrupt:
            self.status = "KILLED"
        artifacts = [self.out / n for n in self.BASE] + (self.extra if self.status == "FINISHED" else [])
        self.tracker.end(artifacts, status=self.status)


def resolved_config(scenario: ScenarioSpec, configs: dict[str, Any], source: str | None = None) -> dict:
    """What config.yaml holds: the scenario's name, where it came from, what it shows, every arm."""
    return {
        "scenario": scenario.name,
        "source": source or scenario.name,
        "plot": list(scenario.plot),
        "table": list(scenario.table),
        "arms": {a: c.model_dump(mode="json") for a, c in configs.items()},
    }


def final_table(
    frame: pl.DataFrame, metrics: tuple[str, ...] | list[str]
) -> dict[str, dict[str, float | None]]:
    """arm -> {metric: value in the arm's last round} (None where not finite)."""
    cols = [m for m in metrics if m in frame.columns]
    last = frame.sort("round").group_by("arm", maintain_order=True).last()
    out: dict[str, dict[str, float | None]] = {}
    for row in last.iter_rows(named=True):
        out[row["arm"]] = {
            m: (float(row[m]) if row[m] is not None and row[m] == row[m] else None) for m in cols
        }
    return out


class _Progress:
    """What a loop run has written so far: metric rows, per-round tables, MLflow run ids."""

    def __init__(self, out: Path, table_names: set[str]) -> None:
        self.out = out
        self.rows: list[dict[str, Any]] = []
        self.tables: dict[str, pl.DataFrame] = {}
        self.ids: dict[str, Any] = {"parent": None, "arms": {}, "ended": []}
        self.table_names = table_names

    @property
    def ids_path(self) -> Path:
        return self.out / "tracking.json"

    def load(self) -> None:
        """Read back a stopped run (half-written temp files of the stopped process are removed)."""
        out = self.out
        for stale in [*out.glob(".*.tmp-*"), *(out / "logs").glob("round=*/.*.tmp-*")]:
            stale.unlink()
        metrics = out / "metrics.parquet"
        self.rows = pl.read_parquet(metrics).to_dicts() if metrics.exists() else []
        for name in sorted(self.table_names):
            if (out / f"{name}.parquet").exists():
                self.tables[name] = pl.read_parquet(out / f"{name}.parquet")
        if self.ids_path.exists():
            try:
                ids = json.loads(self.ids_path.read_text())
                assert isinstance(ids, dict) and {"parent", "arms", "ended"} <= set(ids)
            except (ValueError, AssertionError):
                raise CheckpointError(
                    f"{self.ids_path} is unreadable; delete it to continue in new MLflow runs"
                ) from None
            self.ids = ids

    def save_ids(self) -> None:
        if self.ids["parent"] is not None:
            write_json(self.ids, self.ids_path)

    def drop_after(self, arm: str, last: int) -> None:
        """Forget the arm's rows and table rows after round ``last`` (to be redone)."""
        self.rows[:] = [row for row in self.rows if row["arm"] != arm or row["round"] <= last]
        for name, table in self.tables.items():
            self.tables[name] = table.filter((pl.col("arm") != arm) | (pl.col("round") <= last))

    def add_row(self, row: dict[str, Any]) -> None:
        """Every complete round reaches metrics.parquet at once."""
        self.rows.append(row)
        write_atomic(metrics_frame(self.rows), self.out / "metrics.parquet")

    def add_tables(self, new: dict[str, pl.DataFrame]) -> None:
        for name, table in new.items():
            self.tables[name] = pl.concat([self.tables[name], table]) if name in self.tables else table
            write_atomic(self.tables[name], self.out / f"{name}.parquet")


class LoopRun:
    """One run of a loop scenario's arms into ``out`` (see :func:`run_scenario`)."""

    def __init__(
        self,
        scenario: ScenarioSpec,
        configs: dict[str, Any],
        out: Path,
        tracker: Tracker | None,
        on_round: OnRound | None,
        dist: Any,
        resume: bool,
    ) -> None:
        self.scenario, self.configs, self.out = scenario, configs, out
        self.tracker: Tracker = tracker or NullTracker()
        self.on_round, self.dist, self.resume = on_round, dist, resume
        self.classes = {c.domain: domain_class(c.domain) for c in configs.values()}
        names = {n for cls in self.classes.values() for n in cls.table_names}
        self.progress = _Progress(out, names)
        ranks = (dist.rank, dist.world_size) if dist is not None else (0, 1)
        self.logs = LogStore(out / "logs", *ranks)

    def run(self, source: str | None) -> pl.DataFrame:
        """Every arm, then the figures, scenario results and summary (rank 0 of a sharded run)."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist is not None and not self.dist.main:  # other ranks: the loop and their log rows
            for arm, config in self.configs.items():
                run_arm(make_domain(config, self.dist), arm, config.loop.rounds, self.logs, lambda *_: None)
            return pl.DataFrame()
        resolved = resolved_config(self.scenario, self.configs, source)
        if self.dist is not None:
            resolved["distributed"] = {"world_size": self.dist.world_size, "sharding": self.dist.sharding}
        if self.resume:
            self.progress.load()
        ids = self.progress.ids
        with RunRecord(
            self.scenario.name, self.out, self.tracker, None if self.resume else resolved, ids["parent"]
        ) as rec:
            ids["parent"] = self.tracker.run_id()
            self.progress.save_ids()
            for arm, config in self.configs.items():
                self._arm(rec, arm, config)
            frame = metrics_frame(self.progress.rows)
            rec.finished(*self._finish(rec, frame))
        return frame

    def _start(self, domain: Domain, arm: str, config: Any, ckpts: CheckpointStore) -> tuple[int, Any]:
        """The last complete round of the arm (-1: none) and, if it is to continue, its start."""
        done = ckpts.rounds(arm) if self.resume else []
        last = done[-1] if done else -1
        start = None
        if 0 <= last < config.loop.rounds - 1:  # read (and check) it before touching anything
            payload = ckpts.load(last, arm, domain.name, config.model_dump(mode="json"))
            try:
                start = (last + 1, domain.restore(payload))
            except (KeyError, ValueError, RuntimeError, TypeError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                raise CheckpointError(
                    f"checkpoint {ckpts.path(last, arm)} does not fit arm '{arm}': {first}"
                ) from None
        if self.resume:  # what a round cut short left behind is redone
            self.progress.drop_after(arm, last)
            self.logs.drop_after(arm, last)
        return last, start

    def _arm(self, rec: RunRecord, arm: str, config: Any) -> None:
        """Run (or continue, or only close the MLflow run of) one arm."""
        domain = make_domain(config, self.dist)
        ckpts = CheckpointStore(self.out / "logs", keep=config.loop.keep_checkpoints)
        last, start = self._start(domain, arm, config, ckpts)
        ids, tracker = self.progress.ids, self.tracker
        arm_config = self.out / "arms" / f"{safe_name(arm)}.yaml"
        tags = rec.arm_tags(arm, domain.name, **domain.tags())
        if last == config.loop.rounds - 1:  # a finished arm: only its MLflow run may be open
            if arm not in ids["ended"]:
                tracker.start_arm(arm, config, tags, run_id=ids["arms"].get(arm))
                tracker.end_arm([arm_config])
                ids["ended"].append(arm)
            return
        tracker.start_arm(arm, config, tags, run_id=ids["arms"].get(arm))
        if tracker.run_id() is not None:
            ids["arms"][arm] = tracker.run_id()
            write_json(ids, self.progress.ids_path)
        run_arm(
            domain,
            arm,
            config.loop.rounds,
            self.logs,
            self._track,
            start,
            self._tables(arm),
            self._saver(domain, arm, config, ckpts),
        )
        arm_config.parent.mkdir(exist_ok=True)
        arm_config.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        tracker.end_arm([arm_config])
        ids["ended"].append(arm)
        self.progress.save_ids()

    def _track(self, arm: str, r: int, row: dict[str, Any]) -> None:
        """6. track: metrics.parquet, then MLflow, then the progress display."""
        self.progress.add_row(row)
        faults.point("metrics")
        self.tracker.log(row, step=r)
        faults.point("mlflow")
        if self.on_round is not None:
            self.on_round(arm, r, row)

    def _tables(self, arm: str) -> Callable[[int, dict[str, pl.DataFrame]], None]:
        return lambda r, new: self.progress.add_tables(new)

    def _saver(
        self, domain: Domain, arm: str, config: Any, ckpts: CheckpointStore
    ) -> Callable[[int, Any], None]:
        """Checkpoint the state entering round r + 1 (the round is complete once it is on disk)."""

        def save(r: int, state: Any) -> None:
            payload = {"domain": domain.name, "config": config.model_dump(mode="json")}
            ckpts.save(r, arm, {**payload, **domain.checkpoint(state)})

        return save

    def _finish(self, rec: RunRecord, frame: pl.DataFrame) -> list[Path]:
        """Figures, scenario-level results, summary.json; returns the extra artifacts."""
        from recsim.io.plots import plot_curves

        out, scenario, configs = self.out, self.scenario, self.configs
        plot_curves(frame, scenario.plot, out / "curves.png", title=scenario.name)
        results = scenario.post(frame, out)
        if results:
            self.tracker.log(results, step=0)  # on the parent run (every arm has ended); non-finite skipped
        extra = [out / f"{name}.parquet" for name in self.progress.tables]
        for cls in self.classes.values():
            extra.extend(cls.figures(self.progress.tables, out))
        rec.summary(
            arms=list(configs),
            rounds={a: c.loop.rounds for a, c in configs.items()},
            seed={a: c.seed for a, c in configs.items()},
            resumed=self.resume,
            final=final_table(frame, scenario.table),
            results={k: (v if math.isfinite(v) else None) for k, v in results.items()},
        )
        return extra


def run_scenario(
    scenario: ScenarioSpec,
    configs: dict[str, Any],
    out: Path,
    tracker: Tracker | None = None,
    on_round: OnRound | None = None,
    dist: Any = None,
    resume: bool = False,
    source: str | None = None,
) -> pl.DataFrame:
    """Run every arm of ``scenario`` into ``out``; returns the metrics frame.

    ``configs`` come from :meth:`recsim.scenario.Scenario.resolve` (already validated). Arms run
    one after the other. After every round, metrics.parquet (and any per-round table) is rewritten
    atomically, then the round's checkpoint lands: a round is complete once its checkpoint is on
    disk. ``resume`` continues ``out`` from the last complete round of each arm: later rows,
    tables and log partitions (of a round cut short) are dropped and redone, the MLflow runs
    recorded in ``tracking.json`` continue without repeating a step. Under ``--distributed``
    (``dist``) every rank runs the loop and writes its own log partitions; rank 0 alone writes
    everything else.
    """
    return LoopRun(scenario, configs, out, tracker, on_round, dist, resume).run(source)
