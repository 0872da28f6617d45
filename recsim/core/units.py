"""A unit of a study: one arm on one seed, run on its own files (so units can run anywhere, in any
order, and be resumed one by one).

A unit's files in the run folder ``out``:

| file                                              | what                                          |
|---------------------------------------------------|-----------------------------------------------|
| ``logs/seed=S/round=R/arm-A.parquet``              | its log partitions                            |
| ``logs/seed=S/round=R/arm-A.ckpt.pt``              | its per-round checkpoints (the state entering R + 1) |
| ``units/seed=S/arm-A.parquet``                     | its metric rows so far (rewritten each round)  |
| ``units/seed=S/NAME.arm-A.parquet``                | its per-round domain tables (``NAME``)         |
| ``cache/NAME-HASH.pt``                             | set-ups shared by units (LLM base policy, fit) |

:func:`run_unit` runs one unit in this process (also inside a Ray task); the runner merges the
units' rows into ``metrics.parquet`` in a fixed order, so the result does not depend on which
unit finished first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from recsim.core import faults
from recsim.core.domain import make_domain
from recsim.core.loop import StageTimes, metrics_frame, run_arm
from recsim.core.registry import load_plugins
from recsim.io.cache import SharedCache
from recsim.io.checkpoint import CheckpointError, CheckpointStore, CheckpointWriter
from recsim.io.logs import LogStore, safe_name, write_atomic


@dataclass(frozen=True)
class Unit:
    """One arm on one seed: ``config`` is the arm's config with ``seed`` set; ``plugins`` the
    modules that register the components it may use (imported before it runs, so a Ray worker
    sees the driver's registrations)."""

    arm: str
    seed: int
    config: Any
    plugins: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Its name in tracking.json and progress displays."""
        return f"{self.arm}/seed={self.seed}"

    def logs_root(self, out: Path) -> Path:
        return out / "logs" / f"seed={self.seed}"

    def metrics_path(self, out: Path) -> Path:
        return out / "units" / f"seed={self.seed}" / f"arm-{safe_name(self.arm)}.parquet"

    def table_path(self, out: Path, name: str) -> Path:
        return out / "units" / f"seed={self.seed}" / f"{name}.arm-{safe_name(self.arm)}.parquet"


@dataclass
class UnitResult:
    """What a unit produced: its metric rows and per-round tables (all rounds, resumed ones too)."""

    rows: list[dict[str, Any]]
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)


def read_unit(unit: Unit, out: Path, table_names: set[str], last: int | None = None) -> UnitResult:
    """The unit's rows and tables written so far (``last``: only rounds up to it)."""
    result = UnitResult([])
    path = unit.metrics_path(out)
    if path.exists():
        result.rows = [r for r in pl.read_parquet(path).to_dicts() if last is None or r["round"] <= last]
    for name in sorted(table_names):
        table_path = unit.table_path(out, name)
        if table_path.exists():
            table = pl.read_parquet(table_path)
            result.tables[name] = table if last is None else table.filter(pl.col("round") <= last)
    return result


def last_complete_round(unit: Unit, out: Path) -> int:
    """The unit's last round whose checkpoint is on disk (-1: none)."""
    done = CheckpointStore(unit.logs_root(out), keep=unit.config.loop.keep_checkpoints).rounds(unit.arm)
    return done[-1] if done else -1


def run_unit(
    unit: Unit,
    out: Path,
    resume: bool = False,
    dist: Any = None,
    on_round: Callable[[Unit, int, dict[str, Any]], None] | None = None,
    threads: int | None = None,
    timer: StageTimes | None = None,
) -> UnitResult:
    """Run ``unit`` (or continue it from its last complete round with ``resume``) on its files.

    ``on_round(unit, r, row)`` sees each new row once it is in the unit's metrics file;
    ``threads`` sets torch's intra-op threads for the unit (results depend on it: float sums are
    split by thread); ``timer`` records each round's stage times. Under ``--distributed``
    (``dist``) every rank runs it and writes its log rows; rank 0 writes the rest.
    """
    import torch

    load_plugins(unit.plugins, entry_points=True)
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(unit, out, resume, dist, on_round, timer)
    finally:
        torch.set_num_threads(saved)


def _run(
    unit: Unit, out: Path, resume: bool, dist: Any, on_round: Any, timer: StageTimes | None
) -> UnitResult:
    config, arm = unit.config, unit.arm
    domain = make_domain(config, dist, SharedCache(out / "cache"))
    ranks = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    logs = LogStore(unit.logs_root(out), *ranks)
    if dist is not None and not dist.main:
        run_arm(domain, arm, config.loop.rounds, logs, lambda *_: None, seed=unit.seed)
        return UnitResult([])
    ckpts = CheckpointStore(unit.logs_root(out), keep=config.loop.keep_checkpoints)
    last = last_complete_round(unit, out) if resume else -1
    result = read_unit(unit, out, set(domain.table_names), last) if resume else UnitResult([])
    if last == config.loop.rounds - 1:
        return result
    start = None
    if last >= 0:  # read (and check) the checkpoint before touching anything
        payload = ckpts.load(last, arm, domain.name, config.model_dump(mode="json"))
        try:
            start = (last + 1, domain.restore(payload))
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise CheckpointError(
                f"checkpoint {ckpts.path(last, arm)} does not fit arm '{arm}': {first}"
            ) from None
    if resume:  # what a round cut short left behind is redone
        logs.drop_after(arm, last)
    metrics_path = unit.metrics_path(out)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)

    def track(arm_: str, r: int, row: dict[str, Any]) -> None:
        result.rows.append(row)
        write_atomic(metrics_frame(result.rows), metrics_path)
        faults.point("metrics")
        if on_round is not None:
            on_round(unit, r, row)

    def keep_tables(r: int, new: dict[str, pl.DataFrame]) -> None:
        for name, table in new.items():
            table = table.with_columns(pl.lit(unit.seed).alias("seed"))
            result.tables[name] = pl.concat([result.tables[name], table]) if name in result.tables else table
            write_atomic(result.tables[name], unit.table_path(out, name))

    with CheckpointWriter(ckpts) as writer:  # each round's checkpoint is written during the next

        def save(r: int, state: Any) -> None:
            payload = {"domain": domain.name, "config": config.model_dump(mode="json")}
            writer.submit(r, arm, {**payload, **domain.checkpoint(state)})

        run_arm(
            domain,
            arm,
            config.loop.rounds,
            logs,
            track,
            start,
            keep_tables,
            save,
            unit.seed,
            timer,
            writer.wait,
        )
    return result
