"""The runner: a study (every arm of a scenario on every seed) into one run folder, with
tracking, statistics over seeds, checkpoints and resume, units run here or on Ray.

A run folder holds ``config.yaml`` (every arm, fully resolved, and the seeds), ``metrics.parquet``
(one row per arm, seed and round: ``arm``, ``seed``, ``domain``, ``round``, then the metrics),
``logs/seed=S/round=R/arm-A.parquet``, ``curves.png`` (means over seeds with 95% bands),
``summary.json`` and ``summary.md`` (means with intervals, paired differences to the reference
arm); domains add per-round tables (``position_curves.parquet``, ``rm_budget.parquet``) and figures
drawn from them. Each unit (arm, seed) has its own files (:mod:`recsim.core.units`).
:class:`RunRecord` is the bookkeeping every runner shares (the loop's here, and the experiments'
that are not loops).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import polars as pl
import yaml

from recsim.core import faults
from recsim.core.config import ConfigError
from recsim.core.domain import domain_class
from recsim.core.loop import OnRound, metrics_frame
from recsim.core.units import Unit, UnitResult, last_complete_round, read_unit, run_unit
from recsim.io.atomic import write_json, write_text
from recsim.io.checkpoint import CheckpointError
from recsim.io.logs import LogError, safe_name, write_atomic
from recsim.io.tracking import NullTracker, Tracker, git_commit


class ScenarioSpec(Protocol):
    """What the runner needs of a scenario (see :class:`recsim.scenario.Scenario`)."""

    name: str
    plot: tuple[str, ...]
    table: tuple[str, ...]
    reference: str | None

    def post(self, frame: pl.DataFrame, out: Path) -> dict[str, float]:
        """Scenario-level results computed from every arm's metrics (logged on the parent run)."""
        ...


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
            write_text(self.out / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
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
        write_json(data, self.out / "summary.json")
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


def resolved_config(
    scenario: ScenarioSpec, configs: dict[str, Any], source: str | None = None, study: Study | None = None
) -> dict:
    """What config.yaml holds: the scenario's name, where it came from, what it shows, the study's
    seeds, threads per unit and summary window, every arm (with the first seed; each unit sets its
    own)."""
    study = study or Study.single(configs)
    return {
        "scenario": scenario.name,
        "source": source or scenario.name,
        "plot": list(scenario.plot),
        "table": list(scenario.table),
        "reference": reference_arm(scenario, configs),
        "seeds": list(study.seeds),
        "threads": study.threads,
        "window": list(study.window) if study.window is not None else None,
        "plugins": list(study.plugins()),
        "arms": {a: c.model_dump(mode="json") for a, c in configs.items()},
    }


def reference_arm(scenario: Any, configs: dict[str, Any]) -> str:
    """The arm others are compared with: the scenario's ``reference``, else its first arm."""
    ref = getattr(scenario, "reference", None)
    return ref if ref in configs else next(iter(configs))


@dataclass(frozen=True)
class Study:
    """How a scenario's arms run: on which seeds, with how many torch threads per unit, and with
    how many parallel workers (0: one after the other in this process) on which Ray cluster.

    Attributes:
        seeds: root seeds; each arm runs once per seed (arms of one seed share the world).
        threads: torch intra-op threads of each unit (None: torch's default). Float sums are
            split by thread, so results are bit-identical across worker counts at equal threads.
        workers: units run at once on Ray (0: sequential, in-process).
        ray_address: an existing Ray cluster ("HOST:PORT"); None starts a local one on demand.
        window: rounds (first, last) whose mean is each seed's value in the summary; None: the
            final round (see :func:`study_window` for the scenario's declared one).
    """

    seeds: tuple[int, ...] = (0,)
    threads: int | None = None
    workers: int = 0
    ray_address: str | None = None
    window: tuple[int, int] | None = None

    @classmethod
    def single(cls, configs: dict[str, Any]) -> Study:
        """The one-seed study of ``configs`` as resolved (their own seed)."""
        return cls(seeds=(next(iter(configs.values())).seed,))

    def units(self, configs: dict[str, Any]) -> list[Unit]:
        """Every (arm, seed), arms outer: the order of metrics.parquet. Each carries the modules
        that registered components from outside the simulator (:func:`plugins`)."""
        plugins = self.plugins()
        return [
            Unit(arm, s, config.model_copy(update={"seed": s}), plugins)
            for arm, config in configs.items()
            for s in self.seeds
        ]

    def plugins(self) -> tuple[str, ...]:
        """The modules outside the simulator whose registrations the units need (imported again
        by every worker). On Ray, a component registered in the running script (``__main__``)
        cannot be imported there: refused in one line rather than silently missing."""
        from recsim.core.registry import plugin_modules, plugin_registrations

        if self.workers:
            script = [
                f"{kind} '{name}'" for kind, name, module in plugin_registrations() if module == "__main__"
            ]
            if script:
                raise ConfigError(
                    f"{', '.join(script)} registered in the running script cannot reach Ray workers: "
                    "move the registration into a module and name it with --plugins (plugins= in "
                    "recsim.run), or run with workers=0"
                )
        return tuple(m for m in plugin_modules() if m != "__main__")


def final_table(
    frame: pl.DataFrame, metrics: tuple[str, ...] | list[str]
) -> dict[str, dict[str, float | None]]:
    """arm -> {metric: mean over seeds of its value in the arm's last round} (None where not finite)."""
    from recsim.core.stats import describe

    out: dict[str, dict[str, float | None]] = {}
    for row in describe(frame, metrics).iter_rows(named=True):
        value = row["mean"]
        out.setdefault(row["arm"], {})[row["metric"]] = (
            value if value is not None and math.isfinite(value) else None
        )
    for arm in dict.fromkeys(frame["arm"].to_list()) if frame.height else []:
        out.setdefault(arm, {})
    return out


class StudyRun:
    """One run of a loop scenario's study into ``out`` (see :func:`run_scenario`)."""

    def __init__(
        self,
        scenario: ScenarioSpec,
        configs: dict[str, Any],
        out: Path,
        tracker: Tracker | None,
        on_round: OnRound | None,
        dist: Any,
        resume: bool,
        study: Study,
    ) -> None:
        self.scenario, self.configs, self.out, self.study = scenario, configs, out, study
        self.tracker: Tracker = tracker or NullTracker()
        self.on_round, self.dist, self.resume = on_round, dist, resume
        self.units = study.units(configs)
        self.classes = {c.domain: domain_class(c.domain) for c in configs.values()}
        self.table_names = {n for cls in self.classes.values() for n in cls.table_names}
        self.multi = len(study.seeds) > 1
        self.results: dict[str, UnitResult] = {}
        self.ids: dict[str, Any] = {"parent": None, "runs": {}, "ended": []}

    # -- the study --------------------------------------------------------------------------------
    def run(self, source: str | None) -> pl.DataFrame:
        """Every unit, then the figures, statistics and summary (rank 0 of a sharded run)."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist is not None and not self.dist.main:  # other ranks: the loop and their log rows
            for unit in self.units:
                run_unit(unit, self.out, dist=self.dist, threads=self.study.threads)
            return pl.DataFrame()
        resolved = resolved_config(self.scenario, self.configs, source, self.study)
        if self.dist is not None:
            resolved["distributed"] = {"world_size": self.dist.world_size, "sharding": self.dist.sharding}
        if self.resume:
            self._load()
        config = None if self.resume else resolved
        with RunRecord(self.scenario.name, self.out, self.tracker, config, self.ids["parent"]) as rec:
            self.ids["parent"] = self.tracker.run_id()
            self._save_ids()
            self._open_arm_runs(rec)
            self._run_units(rec)
            frame = metrics_frame(self._rows())
            rec.finished(*self._finish(rec, frame))
        return frame

    def _run_units(self, rec: RunRecord) -> None:
        """Finished units are read back; the others run here, one after the other, or on Ray."""
        pending = []
        for unit in self.units:
            last = last_complete_round(unit, self.out) if self.resume else -1
            if last == unit.config.loop.rounds - 1:
                self._done(rec, unit, read_unit(unit, self.out, self.table_names))
            else:
                pending.append(unit)
        if self.study.workers:
            from recsim.core.parallel import run_on_ray

            run_on_ray(pending, self.out, self.resume, self.study, lambda u, res: self._done(rec, u, res))
            return
        for unit in pending:
            last = last_complete_round(unit, self.out) if self.resume else -1
            self.results[unit.key] = (
                read_unit(unit, self.out, self.table_names, last) if self.resume else UnitResult([])
            )
            self._open_seed_run(rec, unit)
            result = run_unit(unit, self.out, self.resume, self.dist, self._track, self.study.threads)
            self._done(rec, unit, result)

    def _rows(self) -> list[dict[str, Any]]:
        """Every unit's rows so far, in the study's order (arms outer, seeds inner)."""
        return [row for unit in self.units for row in self.results.get(unit.key, UnitResult([])).rows]

    def _track(self, unit: Unit, r: int, row: dict[str, Any]) -> None:
        """6. track (units run here): metrics.parquet, then MLflow, then the progress display."""
        self.results[unit.key].rows.append(row)
        write_atomic(metrics_frame(self._rows()), self.out / "metrics.parquet")
        self.tracker.log(row, step=r, key=self._run_key(unit))
        faults.point("mlflow")
        if self.on_round is not None:
            self.on_round(unit.arm, r, row)

    def _done(self, rec: RunRecord, unit: Unit, result: UnitResult) -> None:
        """A unit finished (here, on Ray, or before a resume): merge it, close its MLflow run,
        and the arm's once every seed of the arm is done."""
        live = unit.key in self.results  # run here: its rows reached MLflow round by round
        self.results[unit.key] = result
        write_atomic(metrics_frame(self._rows()), self.out / "metrics.parquet")
        self._write_tables()
        if not live and self._run_key(unit) not in self.ids["ended"]:  # an ended run holds its rows
            self._open_seed_run(rec, unit)
            for row in result.rows:
                self.tracker.log(row, step=row["round"], key=self._run_key(unit))
            if self.on_round is not None:
                for row in result.rows:
                    self.on_round(unit.arm, row["round"], row)
        if self.multi and unit.key not in self.ids["ended"]:
            self.tracker.end_run(unit.key, [])
            self.ids["ended"].append(unit.key)
            self._save_ids()
        seeds_done = all(u.key in self.results for u in self.units if u.arm == unit.arm)
        if seeds_done and unit.arm not in self.ids["ended"]:
            self._close_arm(unit.arm)

    # -- MLflow runs: one per arm (means over seeds), one per seed beneath it -----------------------
    def _run_key(self, unit: Unit) -> str:
        return unit.key if self.multi else unit.arm

    def _open_arm_runs(self, rec: RunRecord) -> None:
        from recsim.io.tracking import domain_params

        for arm, config in self.configs.items():
            if arm in self.ids["ended"]:
                continue
            tags = rec.arm_tags(arm, config.domain, **self.classes[config.domain].tags(config))
            run = self.tracker.start_run(
                arm, arm, domain_params(config), tags, run_id=self.ids["runs"].get(arm)
            )
            if run is not None:
                self.ids["runs"][arm] = run
                self._save_ids()

    def _open_seed_run(self, rec: RunRecord, unit: Unit) -> None:
        if not self.multi or unit.key in self.ids["ended"]:
            return
        from recsim.io.tracking import domain_params

        config = unit.config
        tags = rec.arm_tags(
            unit.arm, config.domain, seed=str(unit.seed), **self.classes[config.domain].tags(config)
        )
        name = f"{unit.arm} seed {unit.seed}"
        run_id = self.ids["runs"].get(unit.key)
        run = self.tracker.start_run(
            unit.key, name, domain_params(config), tags, parent=unit.arm, run_id=run_id
        )
        if run is not None:
            self.ids["runs"][unit.key] = run
            self._save_ids()

    def _close_arm(self, arm: str) -> None:
        """The arm's run: the mean over seeds of each metric per round, its config; then closed."""
        from recsim.core.stats import curves

        config = self.configs[arm]
        if self.multi:
            frame = metrics_frame(
                [row for u in self.units if u.arm == arm for row in self.results[u.key].rows]
            )
            numeric = [c for c, t in frame.schema.items() if t.is_numeric() and c not in ("seed", "round")]
            for row in curves(frame, numeric).iter_rows(named=True):
                self.tracker.log({m: row[m] for m in numeric}, step=row["round"], key=arm)
        path = self.out / "arms" / f"{safe_name(arm)}.yaml"
        path.parent.mkdir(exist_ok=True)
        write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        self.tracker.end_run(arm, [path])
        self.ids["ended"].append(arm)
        self._save_ids()

    # -- files ------------------------------------------------------------------------------------
    @property
    def ids_path(self) -> Path:
        return self.out / "tracking.json"

    def _save_ids(self) -> None:
        if self.ids["parent"] is not None:
            write_json(self.ids, self.ids_path)

    def _load(self) -> None:
        """Read back a stopped run (half-written temp files of the stopped process are removed)."""
        out = self.out
        for stale in [*out.rglob(".*.tmp-*")]:
            stale.unlink()
        if self.ids_path.exists():
            try:
                ids = json.loads(self.ids_path.read_text())
                assert isinstance(ids, dict) and {"parent", "runs", "ended"} <= set(ids)
            except (ValueError, AssertionError):
                raise CheckpointError(
                    f"{self.ids_path} is unreadable; delete it to continue in new MLflow runs"
                ) from None
            self.ids = ids

    def _write_tables(self) -> None:
        for name in sorted(self.table_names):
            parts = [
                self.results[u.key].tables[name]
                for u in self.units
                if name in self.results.get(u.key, UnitResult([])).tables
            ]
            if parts:
                write_atomic(pl.concat(parts, how="diagonal_relaxed"), self.out / f"{name}.parquet")

    def _finish(self, rec: RunRecord, frame: pl.DataFrame) -> list[Path]:
        """Figures, scenario-level results, statistics, summary.json; returns the extra artifacts."""
        from recsim.io.plots import plot_curves

        out, scenario = self.out, self.scenario
        plot_curves(frame, scenario.plot, out / "curves.png", title=scenario.name)
        results = scenario.post(frame, out)
        if results:
            self.tracker.log(results, step=0)  # on the parent run (every arm has ended); non-finite skipped
        tables = {
            n: pl.read_parquet(out / f"{n}.parquet")
            for n in sorted(self.table_names)
            if (out / f"{n}.parquet").exists()
        }
        extra = [out / f"{name}.parquet" for name in tables]
        for cls in self.classes.values():
            extra.extend(cls.figures(tables, out))
        extra.extend(write_statistics(frame, scenario, self.configs, self.study, self.tracker, out))
        rec.summary(
            arms=list(self.configs),
            seeds=list(self.study.seeds),
            rounds={a: c.loop.rounds for a, c in self.configs.items()},
            resumed=self.resume,
            **summary_fields(frame, scenario, self.configs, self.study),
            results={k: (v if math.isfinite(v) else None) for k, v in results.items()},
        )
        return extra


def study_window(
    scenario: Any, configs: dict[str, Any], window: tuple[int, int] | None
) -> tuple[int, int] | None:
    """The rounds the summary reads: ``window`` when given; else the scenario's declared number of
    final rounds (``Scenario.window``) as (last - W + 1, last) of the shortest arm's rounds, or
    from round 0 when the run is shorter than W; else None (the final round)."""
    if window is not None:
        return window
    last = getattr(scenario, "window", None)
    if not last or not configs:
        return None
    rounds = min(c.loop.rounds for c in configs.values())
    return (max(0, rounds - last), rounds - 1)


def amplification_pairs(configs: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(arm, mode, other) for every arm ``other`` whose config differs from the closed-loop arm
    ``arm``'s only in ``loop.feedback`` (= ``mode``, "open" or "random"): the pairs whose paired
    difference is the loop's amplification (``recsim run --amplification`` adds them as
    ``ARM@open`` and ``ARM@random``), in the order of ``configs``."""

    def key(config: Any) -> str:
        data = config.model_dump(mode="json")
        data["loop"].pop("feedback", None)
        return json.dumps(data, sort_keys=True, default=str)

    closed: dict[str, str] = {}
    for arm, c in configs.items():
        if c.loop.feedback == "closed":
            closed.setdefault(key(c), arm)
    return [
        (closed[key(c)], c.loop.feedback, arm)
        for arm, c in configs.items()
        if c.loop.feedback != "closed" and key(c) in closed
    ]


def summary_fields(
    frame: pl.DataFrame, scenario: Any, configs: dict[str, Any], study: Study
) -> dict[str, Any]:
    """summary.json's statistics: ``final`` (arm -> metric -> mean over seeds), ``stats`` (mean,
    sd, n, 95% interval), ``paired`` (difference to ``reference`` with interval, p, distinguishable,
    minimum detectable effect, seeds for half the difference, and ``settles``: the round from
    which the per-round difference stays on one side of zero, null if it does not)."""
    from recsim.core.stats import amplification, describe, paired, paired_rounds, settled

    reference = reference_arm(scenario, configs)
    nan_to_none = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
    stats: dict[str, dict[str, Any]] = {}
    for row in describe(frame, scenario.table, study.window).iter_rows(named=True):
        stats.setdefault(row["arm"], {})[row["metric"]] = {
            k: nan_to_none(row[k]) for k in ("mean", "sd", "n", "low", "high")
        }
    diffs: dict[str, dict[str, Any]] = {}
    keys = ("diff", "sd", "n", "low", "high", "p", "distinguishable", "mde", "seeds_for_half")
    for row in paired(frame, scenario.table, reference, study.window).iter_rows(named=True):
        diffs.setdefault(row["arm"], {})[row["metric"]] = {k: nan_to_none(row[k]) for k in keys}
    for row in settled(paired_rounds(frame, scenario.table, reference)).iter_rows(named=True):
        if row["metric"] in diffs.get(row["arm"], {}):
            diffs[row["arm"]][row["metric"]]["settles"] = row["settles"]
    final = {arm: {m: v["mean"] for m, v in ms.items()} for arm, ms in stats.items()}
    fields = {"reference": reference, "window": study.window, "final": final, "stats": stats, "paired": diffs}
    pairs = amplification_pairs(configs)
    if pairs:
        amp: dict[str, dict[str, dict[str, Any]]] = {}
        for row in amplification(frame, scenario.table, pairs, study.window).iter_rows(named=True):
            cell = {k: nan_to_none(row[k]) for k in keys}
            amp.setdefault(row["arm"], {}).setdefault(row["mode"], {})[row["metric"]] = cell
        fields["amplification"] = amp
    return fields


def metric_columns(frame: pl.DataFrame) -> list[str]:
    """The metric columns of a metrics frame (every numeric one but seed and round), in its order."""
    skip = {"arm", "seed", "domain", "round"}
    return [c for c, t in frame.schema.items() if c not in skip and t.is_numeric()]


def write_statistics(
    frame: pl.DataFrame, scenario: Any, configs: dict[str, Any], study: Study, tracker: Tracker, out: Path
) -> list[Path]:
    """summary.md (every metric: means with 95% intervals; paired differences to the reference
    with their power; the round each settles at; the amplification of every arm run closed and
    open, :func:`amplification_pairs`), intervals.png (the scenario's table metrics), paired.png
    (their per-round paired differences, with two or more seeds and arms), amplification.png
    (the per-round amplification, where there are pairs), and the
    summary table on the parent MLflow run (``summary_table.json``); returns the files written."""
    from recsim.core.stats import (
        amplification,
        amplification_rounds,
        describe,
        missing_units,
        paired,
        paired_rounds,
        settled,
    )
    from recsim.io.plots import plot_intervals, plot_paired_rounds

    reference = reference_arm(scenario, configs)
    metrics = metric_columns(frame)
    gap = missing_units(frame, metrics)
    if gap is not None:  # a value a worker could not compute: an error, not an absence
        raise LogError(f"{gap}; the units' rows are in {out / 'units'}")
    stats = describe(frame, metrics, study.window)
    diffs = paired(frame, metrics, reference, study.window)
    per_round = paired_rounds(frame, list(scenario.table), reference)
    settling = settled(per_round)
    pairs = amplification_pairs(configs)
    amp = amplification(frame, metrics, pairs, study.window)
    amp_rounds = amplification_rounds(frame, list(scenario.table), pairs)
    text = summary_markdown(stats, diffs, reference, study, settling)
    if pairs:
        text += amplification_markdown(amp, settled(amp_rounds))
    write_text(out / "summary.md", text)
    figure = plot_intervals(stats.filter(pl.col("metric").is_in(list(scenario.table))), out / "intervals.png")
    figures = [figure]
    if len(study.seeds) >= 2 and per_round.height:
        figures.append(plot_paired_rounds(per_round, out / "paired.png", reference, study.window))
    if len(study.seeds) >= 2 and amp_rounds.height:
        figures.append(plot_paired_rounds(amp_rounds, out / "amplification.png", None, study.window))
    table = stats.join(
        diffs.select("arm", "metric", "diff", "p", "distinguishable", dlow="low", dhigh="high"),
        on=["arm", "metric"],
        how="left",
    )
    tracker.log_table(table, "summary_table.json")
    return [out / "summary.md", *figures]


def summary_markdown(
    stats: pl.DataFrame,
    diffs: pl.DataFrame,
    reference: str,
    study: Study,
    settling: pl.DataFrame | None = None,
) -> str:
    """Markdown tables: arms as rows, metrics as columns (any number of arms stays readable)."""
    when = "final round" if study.window is None else f"mean of rounds {study.window[0]}-{study.window[1]}"
    lines = [f"# Summary: {when}, {len(study.seeds)} seed(s) {list(study.seeds)}", ""]
    lines += ["Mean over seeds [95% t-interval].", ""]
    lines += _markdown(stats, lambda r: _cell(r["mean"], r["low"], r["high"]))
    lines += [
        "",
        f"Paired difference to `{reference}` [95% interval]; * distinguishable from 0; p: paired t-test.",
        "",
    ]
    lines += _markdown(diffs, _diff_cell)
    lines += [
        "",
        "Power of each paired difference: minimum detectable effect (95% two-sided, 80% power) / "
        "seeds that would detect half the observed difference.",
        "",
    ]
    lines += _markdown(diffs, _power_cell)
    if settling is not None and settling.height and len(study.seeds) >= 2:
        lines += [
            "",
            "Round from which the per-round paired difference's 95% interval stays above (+) or below "
            "(-) zero through the last round; - : it does not settle (paired.png draws it).",
            "",
        ]
        lines += _markdown(settling, _settle_cell)
    return "\n".join(lines) + "\n"


def amplification_markdown(amp: pl.DataFrame, settling: pl.DataFrame) -> str:
    """The amplification section of summary.md: per arm and mode, closed - open (or random) of
    every metric with its 95% interval, then the round each settles at (amplification.png)."""
    rows = amp.with_columns(arm=pl.format("{}: closed - {}", "arm", "mode"))
    lines = [
        "",
        "Amplification: each arm on its own logs (closed loop) minus the same arm on the fixed "
        "logger's logs (open) or on random ones, paired by seed [95% interval]; * distinguishable "
        "from 0; p: paired t-test; then MDE / seeds for half.",
        "",
    ]
    lines += _markdown(rows, _diff_cell)
    lines += [""]
    lines += _markdown(rows, _power_cell)
    if settling.height:
        lines += ["", "Round from which the per-round amplification stays above (+) or below (-) zero.", ""]
        lines += _markdown(settling, _settle_cell)
    return "\n".join(lines) + "\n"


def _power_cell(r: dict[str, Any]) -> str:
    mde, need = r["mde"], r["seeds_for_half"]
    if mde is None or not math.isfinite(mde):
        return "-"
    return f"{mde:.3g} / {need if need is not None else '-'}"


def _settle_cell(r: dict[str, Any]) -> str:
    if r["settles"] is None:
        return "-"
    return f"{r['settles']} ({'+' if r['side'] > 0 else '-'})"


def _diff_cell(r: dict[str, Any]) -> str:
    text = _cell(r["diff"], r["low"], r["high"])
    if text.endswith("(no variance)") or text == "-":
        return text
    p = r["p"]
    text += " *" if r["distinguishable"] else ""
    if p is None or not math.isfinite(p):
        return text
    return text + (" (p<0.001)" if p < 0.001 else f" (p={p:.2g})")


def _cell(mean: float | None, low: float | None, high: float | None) -> str:
    """``mean [low, high]`` rounded to the interval's precision (two significant digits of its
    half-width); "no variance" where the seeds agree (to float rounding).

    >>> _cell(-0.05858, -0.1243, 0.007167)
    '-0.059 [-0.124, 0.007]'
    >>> _cell(0.5, 0.5 - 1e-16, 0.5 + 1e-16)
    '0.5 (no variance)'
    >>> _cell(123.4, 111.0, 135.8)
    '123 [111, 136]'
    """
    if mean is None or not math.isfinite(mean):
        return "-"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.4g}"
    half = (high - low) / 2
    if half <= 1e-9 * max(1.0, abs(mean)):
        return f"{mean:.4g} (no variance)"
    digits = max(0, 1 - math.floor(math.log10(half)))
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


#: Most metric columns in one summary table (wider tables do not fit a screen).
TABLE_COLUMNS = 6


def metric_groups(metrics: list[str], width: int = TABLE_COLUMNS) -> list[list[str]]:
    """``metrics`` in tables of at most ``width``: a family (names sharing their first word, three
    or more of them, e.g. ``rm_*``, ``pass_at_*``) in tables of its own, the rest in order.

    >>> metric_groups(["gold", "gap", "rm_loss", "rm_accuracy", "rm_steps", "gini"], 3)
    [['gold', 'gap', 'gini'], ['rm_loss', 'rm_accuracy', 'rm_steps']]
    """
    family = lambda m: m.split("_")[0]  # noqa: E731
    sizes: dict[str, int] = {}
    for m in metrics:
        sizes[family(m)] = sizes.get(family(m), 0) + 1
    groups: dict[str, list[str]] = {}
    for m in metrics:
        groups.setdefault(family(m) if sizes[family(m)] >= 3 else "", []).append(m)
    ordered = ([groups.pop("")] if "" in groups else []) + list(groups.values())
    return [g[i : i + width] for g in ordered for i in range(0, len(g), width)]


def _markdown(rows: pl.DataFrame, cell: Callable[[dict[str, Any]], str]) -> list[str]:
    """One markdown table per group of metrics (:func:`metric_groups`), arms as rows."""
    metrics = list(dict.fromkeys(rows["metric"].to_list())) if rows.height else []
    arms = list(dict.fromkeys(rows["arm"].to_list())) if rows.height else []
    cells = {(r["arm"], r["metric"]): cell(r) for r in rows.iter_rows(named=True)}
    out: list[str] = []
    for group in metric_groups(metrics) or [[]]:
        out += [""] if out else []
        out += ["| arm | " + " | ".join(group) + " |", "|---" * (len(group) + 1) + "|"]
        out += [
            "| " + arm + " | " + " | ".join(cells.get((arm, m), "-") for m in group) + " |" for arm in arms
        ]
    return out


def run_scenario(
    scenario: ScenarioSpec,
    configs: dict[str, Any],
    out: Path,
    tracker: Tracker | None = None,
    on_round: OnRound | None = None,
    dist: Any = None,
    resume: bool = False,
    source: str | None = None,
    study: Study | None = None,
) -> pl.DataFrame:
    """Run every arm of ``scenario`` on every seed of ``study`` into ``out``; returns the metrics.

    ``configs`` come from :meth:`recsim.scenario.Scenario.resolve` (already validated); ``study``
    (default: the configs' own seed, in this process) names the seeds, threads per unit and
    workers. After every round of a unit run here, metrics.parquet is rewritten atomically, then
    the round's checkpoint lands: a round is complete once its checkpoint is on disk. ``resume``
    continues ``out`` unit by unit from the last complete round of each: later rows and log
    partitions (of a round cut short) are dropped and redone, the MLflow runs recorded in
    ``tracking.json`` continue without repeating a step. Under ``--distributed`` (``dist``) every
    rank runs the loop and writes its own log partitions; rank 0 alone writes everything else.
    """
    study = study or Study.single(configs)
    return StudyRun(scenario, configs, out, tracker, on_round, dist, resume, study).run(source)
