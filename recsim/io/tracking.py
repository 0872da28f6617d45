"""MLflow tracking: one run per scenario, one per arm beside it, and nested under each arm one per seed.

Per arm: the flattened config as params, tags (scenario, arm, domain, git_commit, mitigation,
bias, and ``recsim.scenario_run``: the scenario run's id), the mean over seeds of every metric per
round, its resolved config as an artifact; per seed (when a study has several), nested beneath the
arm: the same with that seed's values. The scenario run holds the summary table with intervals
(``summary_table.json``), config.yaml, metrics.parquet and the figures. Arm runs are not nested
under the scenario run, so the UI shows every arm's curves at once.
``mlflow`` is imported only here, and only when tracking is on.
"""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path
from typing import Any, Protocol

from recsim.core.config import flatten


def git_commit() -> str:
    """The commit of the working directory's git checkout, or ``"unknown"``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


class Tracker(Protocol):
    """Where a run's metrics go. One parent run per scenario; child runs keyed by a name of the
    caller's (an arm, or an arm's seed under it), logged to in any order (parallel units finish
    in any order). ``key=None`` is the parent."""

    def start(self, scenario: str, tags: dict[str, str], run_id: str | None = None) -> None:
        """Open the scenario's parent run, or continue ``run_id``."""
        ...

    def start_run(
        self,
        key: str,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        parent: str | None = None,
        run_id: str | None = None,
    ) -> str | None:
        """Open child run ``key`` (nested under child ``parent``; None: beside the scenario run,
        linked to it by a tag), or continue ``run_id``; returns its id (None: not tracked)."""
        ...

    def run_id(self, key: str | None = None) -> str | None:
        """The id of run ``key`` (None: the parent), if tracked."""
        ...

    def log(self, row: dict[str, Any], step: int, key: str | None = None) -> None:
        """The finite numbers of ``row`` at ``step`` (a step logged before is skipped)."""
        ...

    def log_table(self, frame: Any, name: str, key: str | None = None) -> None:
        """A table (polars) as an MLflow table artifact ``name`` (.json)."""
        ...

    def end_run(self, key: str, artifacts: list[Path], status: str = "FINISHED") -> None:
        """Close child run ``key`` after attaching ``artifacts``."""
        ...

    def end(self, artifacts: list[Path], status: str = "FINISHED") -> None:
        """Close every open run, the parent last with ``artifacts``."""
        ...


class NullTracker:
    """Tracking off (``--no-tracking``): every call records nothing."""

    def start(self, scenario: str, tags: dict[str, str], run_id: str | None = None) -> None:
        return None

    def start_run(
        self,
        key: str,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        parent: str | None = None,
        run_id: str | None = None,
    ) -> str | None:
        return None

    def run_id(self, key: str | None = None) -> str | None:
        return None

    def log(self, row: dict[str, Any], step: int, key: str | None = None) -> None:
        return None

    def log_table(self, frame: Any, name: str, key: str | None = None) -> None:
        return None

    def end_run(self, key: str, artifacts: list[Path], status: str = "FINISHED") -> None:
        return None

    def end(self, artifacts: list[Path], status: str = "FINISHED") -> None:
        return None


RECSYS_SECTIONS = ("world.", "behavior.", "ranker.", "policy.", "metrics.")


def domain_params(config: Any) -> dict[str, Any]:
    """Flattened config without the sections of the other domain (MLflow params)."""
    flat = flatten(config)
    domain = flat.get("domain")
    if domain == "recsys":
        return {k: v for k, v in flat.items() if not k.startswith("llm.")}
    if domain == "llm":
        return {k: v for k, v in flat.items() if not k.startswith(RECSYS_SECTIONS)}
    return flat


_NOT_IN_KEY = re.compile(r"[^\w\-. :/]")


def metric_key(name: str) -> str:
    """``name`` as an MLflow metric key: MLflow takes alphanumerics, ``_ - . : /`` and spaces, so
    any other character becomes ``_`` (``llm/none@open.gold`` is logged as ``llm/none_open.gold``)."""
    return _NOT_IN_KEY.sub("_", name)


def finite_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The numeric, finite entries of a metrics row (MLflow rejects or mangles the others), keyed
    by :func:`metric_key`; the seed is the run's identity, not a metric."""
    return {
        metric_key(k): float(v)
        for k, v in row.items()
        if k != "seed" and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite-tracked experiment go to ``mlartifacts/`` beside the database file
    (not into the working directory); other stores keep their default."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return (Path(uri[len(prefix) :]).resolve().parent / "mlartifacts").as_uri()


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or written; the message is one line."""


class MlflowTracker:
    """Tracking to ``uri`` (default embedded SQLite), experiment ``experiment``, through the
    MLflow client (runs are addressed by id, so units finishing in any order log correctly).

    The experiment is tagged ``mlflow.experimentKind=custom_model_development`` so that the UI
    opens it on the model-training view (runs and their metric charts)."""

    def __init__(self, uri: str, experiment: str) -> None:
        import mlflow

        self.mlflow = mlflow
        self.uri = uri
        self._client: Any = None
        self.experiment = experiment
        self.experiment_id: str | None = None
        self.runs: dict[str | None, str] = {}  # key -> run id (None: the parent)
        self.logged_upto: dict[str | None, int] = {}
        self.open: list[str | None] = []

    @property
    def client(self) -> Any:
        """The MLflow client, made on first use (a SQLite store is created then)."""
        if self._client is None:
            self._client = self.mlflow.MlflowClient(tracking_uri=self.uri)
        return self._client

    def check(self) -> None:
        """Reach the tracking store once, failing fast: raise :class:`TrackingError` if it cannot
        be read or written (before any round runs, so nothing is lost to a later failure). A new
        SQLite store is created under a file lock: several runs started at once on one new store
        would otherwise race to create its tables."""
        import os

        saved = {
            k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
        }
        os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
        try:
            with _store_lock(self.uri):
                self.client.search_experiments(max_results=1)  # creates a SQLite store if needed
                self._experiment_id()
        except Exception as exc:  # any store error: the message below names the way out
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrackingError(
                f"MLflow tracking URI {self.uri} cannot be used ({first[:200]}); "
                "start the server, choose --tracking-uri, or run with --no-tracking"
            ) from None
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _experiment_id(self) -> str:
        """The experiment's id, creating it (tagged for the model-training view) if new."""
        if self.experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                try:
                    self.experiment_id = self.client.create_experiment(
                        self.experiment,
                        artifact_location=artifact_location(self.uri),
                        tags={"mlflow.experimentKind": "custom_model_development"},
                    )
                except Exception:  # another process created it a moment ago
                    exp = self.client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
                    self.experiment_id = exp.experiment_id
            else:
                self.experiment_id = exp.experiment_id
        return self.experiment_id

    def start(self, scenario: str, tags: dict[str, str], run_id: str | None = None) -> None:
        """Open the scenario's parent run, or reopen ``run_id`` (a resumed run)."""
        self._open(None, scenario, {}, tags, None, run_id)

    def start_run(
        self,
        key: str,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        parent: str | None = None,
        run_id: str | None = None,
    ) -> str | None:
        """Open child run ``key`` under ``parent`` (a child key: nested beneath it), or, with
        ``parent=None``, a top-level run tagged ``recsim.scenario_run`` with the scenario's run id
        (arm runs stay unfolded in the UI, so their charts are compared at once)."""
        if parent is None:
            link = {"recsim.scenario_run": self.runs[None]}
        else:
            link = {"mlflow.parentRunId": self.runs[parent]}
        return self._open(key, name, params, {**tags, **link}, parent, run_id)

    def _open(
        self,
        key: str | None,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        parent: Any,
        run_id: Any,
    ) -> str:
        from mlflow.entities import Param

        if run_id is not None:
            try:
                self.client.get_run(run_id)
            except Exception:  # MlflowException (unknown id) or a store error
                raise TrackingError(
                    f"MLflow run {run_id} named in tracking.json is not in {self.uri}; delete tracking.json "
                    "to continue in new runs"
                ) from None
            self.client.update_run(run_id, status="RUNNING")
            self.logged_upto[key] = self._last_step(run_id)
        else:
            run = self.client.create_run(self._experiment_id(), run_name=name, tags=tags)
            run_id = run.info.run_id
            self.logged_upto[key] = -1
            values = [Param(k, "null" if v is None else str(v)) for k, v in params.items()]
            for start in range(0, len(values), 100):  # the store takes 100 params a request
                self.client.log_batch(run_id, params=values[start : start + 100])
        self.runs[key] = run_id
        self.open.append(key)
        return run_id

    def _last_step(self, run_id: str) -> int:
        """The largest step any metric of ``run_id`` was logged at (-1: none)."""
        keys = self.client.get_run(run_id).data.metrics
        steps = [m.step for key in keys for m in self.client.get_metric_history(run_id, key)]
        return max(steps, default=-1)

    def run_id(self, key: str | None = None) -> str | None:
        return self.runs.get(key)

    def log(self, row: dict[str, Any], step: int, key: str | None = None) -> None:
        import time

        from mlflow.entities import Metric

        if step <= self.logged_upto.get(key, -1):  # logged before the run was stopped: no duplicate
            return
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in finite_metrics(row).items()]
        self.client.log_batch(self.runs[key], metrics=metrics)
        self.logged_upto[key] = step

    def log_table(self, frame: Any, name: str, key: str | None = None) -> None:
        self.client.log_table(self.runs[key], data=frame.to_pandas(), artifact_file=name)

    def end_run(self, key: str, artifacts: list[Path], status: str = "FINISHED") -> None:
        for path in artifacts:
            if path.exists():
                self.client.log_artifact(self.runs[key], str(path))
        self.client.set_terminated(self.runs[key], status=status)
        self.open.remove(key)

    def end(self, artifacts: list[Path], status: str = "FINISHED") -> None:
        for key in [k for k in self.open if k is not None]:
            self.end_run(key, [], status=status)
        if None in self.runs:
            for path in artifacts:
                if path.exists():
                    self.client.log_artifact(self.runs[None], str(path))
            self.client.set_terminated(self.runs[None], status=status)
            self.open = []


def _store_lock(uri: str) -> Any:
    """A file lock beside a SQLite store (a no-op for other stores)."""
    from contextlib import nullcontext

    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return nullcontext()
    from filelock import FileLock

    path = Path(uri[len(prefix) :]).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=120)
