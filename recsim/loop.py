"""The domain-agnostic multi-round loop, and a scenario run that writes its outputs.

Per round, in order (one function, top to bottom: :func:`run_arm`):

    1. act       the learner decides (slates for active users)
    2. feedback  users respond: the platform's biased observations, and the hidden truth
    3. log       the round is appended to the Parquet log (partition round=R)
    4. fit       the learner retrains on the logs its own decisions produced
    5. measure   cascade metrics against the truth of this round (same names in every domain)
    6. track     the row goes to metrics.parquet, MLflow and the progress display
    7. evolve    the world reacts to what was consumed (interest drift) before the next round

A run directory holds ``config.yaml`` (every arm, fully resolved), ``metrics.parquet`` (one row per
arm and round: ``arm``, ``domain``, ``round``, then the metrics), ``logs/round=R/arm-A.parquet``,
``curves.png`` and ``summary.json``; domains may add per-round tables (``position_curves.parquet``
and its figure for learners with a position channel).
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

from recsim import faults
from recsim.checkpoint import CheckpointError, CheckpointStore
from recsim.config import SimConfig
from recsim.distributed import Dist
from recsim.errors import NonFiniteError, check_finite
from recsim.logs import LogStore, safe_name, write_atomic
from recsim.mitigations import describe
from recsim.scenario import Scenario
from recsim.tracking import NullTracker, Tracker, git_commit

OnRound = Callable[[str, int, dict[str, Any]], None]
#: Per-round tables domains may add beside metrics.parquet (written after every round).
TABLE_NAMES = ("position_curves", "rm_budget")


class Domain(Protocol):
    """What a domain implements to run on the loop (see :class:`recsim.recsys.RecsysDomain`)."""

    name: str

    def initial_state(self) -> Any: ...

    def act(self, state: Any, round_: int) -> Any: ...

    def feedback(self, state: Any, batch: Any, round_: int) -> Any: ...

    def log_frame(self, state: Any, batch: Any, fb: Any) -> pl.DataFrame: ...

    def evolve(self, state: Any, batch: Any, fb: Any, round_: int) -> Any: ...

    def fit(self, state: Any, logs: LogStore, arm: str, round_: int) -> Any: ...

    def measure(self, state: Any, batch: Any, fb: Any, round_: int) -> tuple[dict[str, float], Any]: ...

    def tables(self, state: Any, round_: int) -> dict[str, pl.DataFrame]: ...

    def checkpoint(self, state: Any) -> dict[str, Any]: ...

    def restore(self, payload: dict[str, Any]) -> Any: ...


def make_domain(config: SimConfig, dist: Dist | None = None) -> Domain:
    """The domain named by ``config.domain`` (``dist``: this process's rank, recommender only)."""
    if config.domain == "recsys":
        from recsim.recsys import RecsysDomain

        return RecsysDomain(config, dist)
    if config.domain == "llm":
        from recsim.llm.domain import LlmDomain

        return LlmDomain(config)
    raise ValueError(f"domain must be 'recsys' or 'llm', got {config.domain!r}")


def run_arm(
    domain: Domain,
    arm: str,
    rounds: int,
    logs: LogStore,
    on_round: OnRound,
    start: tuple[int, Any] | None = None,
    on_tables: Callable[[int, dict[str, pl.DataFrame]], None] | None = None,
    save: Callable[[int, Any], None] | None = None,
) -> list[dict[str, Any]]:
    """Run one arm up to ``rounds`` rounds; returns its metric rows.

    ``start`` = (first round, state entering it) continues a checkpointed arm; ``on_tables``
    receives each round's domain tables; ``save(r, state)`` checkpoints the state entering r + 1.
    """
    first, state = start if start is not None else (0, domain.initial_state())
    rows = []
    for r in range(first, rounds):
        try:
            batch = domain.act(state, r)  # 1
            fb = domain.feedback(state, batch, r)  # 2
            logs.append(r, arm, domain.log_frame(state, batch, fb))  # 3
            faults.point("fit")
            state = domain.fit(state, logs, arm, r)  # 4
            row, state = domain.measure(state, batch, fb, r)  # 5
            for key in ("train_loss", "rm_loss", "policy_loss"):
                if key in row:
                    check_finite(key, row[key])
        except NonFiniteError as exc:
            raise NonFiniteError(f"round {r}, arm '{arm}': {exc}; rounds before {r} are complete") from None
        row = {"arm": arm, "domain": domain.name, "round": r, **row}
        if on_tables is not None:
            on_tables(
                r, {n: t.with_columns(pl.lit(arm).alias("arm")) for n, t in domain.tables(state, r).items()}
            )
        on_round(arm, r, row)  # 6
        rows.append(row)
        state = domain.evolve(state, batch, fb, r)  # 7
        if save is not None:
            save(r, state)  # the round is complete once its checkpoint is on disk
    return rows


def metrics_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows -> frame with ``arm``, ``domain``, ``round`` first, then metrics in first-seen order."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    frame = pl.DataFrame(rows, schema_overrides={"round": pl.Int32}, infer_schema_length=None)
    return frame.select(list(names))


def _write_json(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def resolved_config(scenario: Scenario, configs: dict[str, SimConfig], source: str | None = None) -> dict:
    """What config.yaml holds: the scenario's name, where it came from, what it shows, every arm."""
    return {
        "scenario": scenario.name,
        "source": source or scenario.name,
        "plot": list(scenario.plot),
        "table": list(scenario.table),
        "arms": {a: c.model_dump(mode="json") for a, c in configs.items()},
    }


def run_scenario(
    scenario: Scenario,
    configs: dict[str, SimConfig],
    out: Path,
    tracker: Tracker | None = None,
    on_round: OnRound | None = None,
    dist: Dist | None = None,
    resume: bool = False,
    source: str | None = None,
) -> pl.DataFrame:
    """Run every arm of ``scenario`` into ``out``; returns the metrics frame.

    ``configs`` come from :meth:`Scenario.resolve` (already validated). Arms run one after the
    other. After every round, metrics.parquet (and any per-round table) is rewritten atomically,
    then the round's checkpoint lands: a round is complete once its checkpoint is on disk.
    ``resume`` continues ``out`` from the last complete round of each arm: later rows, tables
    and log partitions (of a round cut short) are dropped and redone, the MLflow runs recorded in
    ``tracking.json`` continue without repeating a step. Under ``--distributed`` (``dist``) every
    rank runs the loop and writes its own log partitions; rank 0 alone writes everything else.
    """
    tracker = tracker or NullTracker()
    main = dist is None or dist.main
    out.mkdir(parents=True, exist_ok=True)
    logs = LogStore(out / "logs", *((dist.rank, dist.world_size) if dist is not None else (0, 1)))
    config_path = out / "config.yaml"
    metrics_path = out / "metrics.parquet"
    ids_path = out / "tracking.json"
    resolved = resolved_config(scenario, configs, source)
    if dist is not None:
        resolved["distributed"] = {"world_size": dist.world_size, "sharding": dist.sharding}
    if not main:
        for arm, config in configs.items():
            run_arm(make_domain(config, dist), arm, config.loop.rounds, logs, lambda *_: None)
        return pl.DataFrame()
    rows: list[dict[str, Any]] = []
    tables: dict[str, pl.DataFrame] = {}
    ids: dict[str, Any] = {"parent": None, "arms": {}, "ended": []}
    if resume:
        for stale in [*out.glob(".*.tmp-*"), *(out / "logs").glob("round=*/.*.tmp-*")]:
            stale.unlink()  # half-written files of the stopped process (complete files were moved)
        rows = pl.read_parquet(metrics_path).to_dicts() if metrics_path.exists() else []
        for name in TABLE_NAMES:
            if (out / f"{name}.parquet").exists():
                tables[name] = pl.read_parquet(out / f"{name}.parquet")
        if ids_path.exists():
            try:
                ids = json.loads(ids_path.read_text())
                assert isinstance(ids, dict) and {"parent", "arms", "ended"} <= set(ids)
            except (ValueError, AssertionError):
                raise CheckpointError(
                    f"{ids_path} is unreadable; delete it to continue in new MLflow runs"
                ) from None
    else:
        config_path.write_text(yaml.safe_dump(resolved, sort_keys=False))
    commit = git_commit()
    tracker.start(scenario.name, {"scenario": scenario.name, "git_commit": commit}, run_id=ids["parent"])
    ids["parent"] = tracker.run_id()
    if ids["parent"] is not None:
        _write_json(ids, ids_path)
    started = time.perf_counter()
    status = "FAILED"
    extra: list[Path] = []
    try:
        for arm, config in configs.items():
            domain = make_domain(config, dist)
            ckpts = CheckpointStore(out / "logs", keep=config.loop.keep_checkpoints)
            done = ckpts.rounds(arm) if resume else []
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
            if resume:  # what a round cut short left behind is redone
                rows[:] = [row for row in rows if row["arm"] != arm or row["round"] <= last]
                for name, table in tables.items():
                    tables[name] = table.filter((pl.col("arm") != arm) | (pl.col("round") <= last))
                logs.drop_after(arm, last)
            arm_config = out / "arms" / f"{safe_name(arm)}.yaml"
            mitigation, bias = describe(config)
            tags = {
                "scenario": scenario.name,
                "arm": arm,
                "domain": domain.name,
                "git_commit": commit,
                "mitigation": mitigation,
                "bias": bias,
            }
            if last == config.loop.rounds - 1:  # a finished arm: only its MLflow run may be open
                if arm not in ids["ended"]:
                    tracker.start_arm(arm, config, tags, run_id=ids["arms"].get(arm))
                    tracker.end_arm([arm_config])
                    ids["ended"].append(arm)
                continue
            tracker.start_arm(arm, config, tags, run_id=ids["arms"].get(arm))
            if tracker.run_id() is not None:
                ids["arms"][arm] = tracker.run_id()
                _write_json(ids, ids_path)

            def track(arm_: str, r: int, row: dict[str, Any]) -> None:
                rows.append(row)  # every complete round reaches metrics.parquet at once
                write_atomic(metrics_frame(rows), metrics_path)
                faults.point("metrics")
                tracker.log(row, step=r)
                faults.point("mlflow")
                if on_round is not None:
                    on_round(arm_, r, row)

            def keep_tables(r: int, new: dict[str, pl.DataFrame]) -> None:
                for name, table in new.items():
                    tables[name] = pl.concat([tables[name], table]) if name in tables else table
                    write_atomic(tables[name], out / f"{name}.parquet")

            def save(
                r: int,
                state: Any,
                domain: Domain = domain,
                config: SimConfig = config,
                ckpts: CheckpointStore = ckpts,
                arm: str = arm,
            ) -> None:
                payload = {"domain": domain.name, "config": config.model_dump(mode="json")}
                ckpts.save(r, arm, {**payload, **domain.checkpoint(state)})

            run_arm(domain, arm, config.loop.rounds, logs, track, start, keep_tables, save)
            arm_config.parent.mkdir(exist_ok=True)
            arm_config.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
            tracker.end_arm([arm_config])
            ids["ended"].append(arm)
            if ids["parent"] is not None:
                _write_json(ids, ids_path)
        frame = metrics_frame(rows)
        from recsim.plots import plot_curves

        plot_curves(frame, scenario.plot, out / "curves.png", title=scenario.name)
        results = scenario.post(frame, out)
        if results:
            tracker.log(results, step=0)  # on the parent run (every arm has ended); non-finite skipped
        extra = [out / f"{name}.parquet" for name in tables]
        if "position_curves" in tables:
            from recsim.plots import plot_position_curves

            extra.append(plot_position_curves(tables["position_curves"], out / "position_curves.png"))
        summary = {
            "scenario": scenario.name,
            "arms": list(configs),
            "rounds": {a: c.loop.rounds for a, c in configs.items()},
            "seed": {a: c.seed for a, c in configs.items()},
            "git_commit": commit,
            "elapsed_s": round(time.perf_counter() - started, 3),
            "resumed": resume,
            "final": final_table(frame, scenario.table),
            "results": {k: (v if math.isfinite(v) else None) for k, v in results.items()},
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False, default=str))
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        artifacts = [config_path, metrics_path, out / "curves.png", out / "summary.json"]
        tracker.end(artifacts + (extra if status == "FINISHED" else []), status=status)
    return frame


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
