"""MLflow tracking: one parent run per scenario, one nested run per arm.

Per arm: the flattened config as params, tags (scenario, arm, domain, git_commit), one
``log_metrics(dict, step=round)`` per round, its resolved config as an artifact. The parent run
holds the scenario's config.yaml, metrics.parquet and curves PNG. ``mlflow`` is imported only here,
and only when tracking is on.
"""

from __future__ import annotations

import math
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
    def start(self, scenario: str, tags: dict[str, str], run_id: str | None = None) -> None: ...

    def start_arm(
        self, arm: str, config: Any, tags: dict[str, str], run_id: str | None = None
    ) -> None: ...

    def run_id(self) -> str | None: ...

    def log(self, row: dict[str, Any], step: int) -> None: ...

    def end_arm(self, artifacts: list[Path]) -> None: ...

    def end(self, artifacts: list[Path], status: str = "FINISHED") -> None: ...


class NullTracker:
    """Tracking off (``--no-tracking``): every call records nothing."""

    def start(self, scenario: str, tags: dict[str, str], run_id: str | None = None) -> None:
        return None

    def start_arm(self, arm: str, config: Any, tags: dict[str, str], run_id: str | None = None) -> None:
        return None

    def run_id(self) -> str | None:
        return None

    def log(self, row: dict[str, Any], step: int) -> None:
        return None

    def end_arm(self, artifacts: list[Path]) -> None:
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


def finite_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The numeric, finite entries of a metrics row (MLflow rejects or mangles the others)."""
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
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
    """Tracking to ``uri`` (default embedded SQLite), experiment ``experiment``."""

    def __init__(self, uri: str, experiment: str) -> None:
        import mlflow

        self.mlflow = mlflow
        self.uri = uri
        self._client: Any = None
        self.experiment = experiment
        self.parent: Any = None
        self.child: Any = None
        self.logged_upto = -1

    @property
    def client(self) -> Any:
        """The MLflow client, made on first use (a SQLite store is created then)."""
        if self._client is None:
            self._client = self.mlflow.MlflowClient(tracking_uri=self.uri)
            self.mlflow.set_tracking_uri(self.uri)
        return self._client

    def check(self) -> None:
        """Reach the tracking store once, failing fast: raise :class:`TrackingError` if it cannot
        be read or written (before any round runs, so nothing is lost to a later failure)."""
        import os

        saved = {
            k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
        }
        os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
        try:
            self.client.search_experiments(max_results=1)  # creates a SQLite store if needed
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

    def start(self, scenario: str, tags: dict[str, str], run_id: str | None = None) -> None:
        """Open the scenario's parent run, or reopen ``run_id`` (a resumed run)."""
        if self.client.get_experiment_by_name(self.experiment) is None:
            self.client.create_experiment(self.experiment, artifact_location=artifact_location(self.uri))
        exp = self.mlflow.set_experiment(self.experiment)
        if run_id is not None:
            self.parent = self._reopen(run_id)
        else:
            self.parent = self.mlflow.start_run(run_name=scenario, experiment_id=exp.experiment_id, tags=tags)
        self.logged_upto = self._last_step(self.parent.info.run_id)

    def start_arm(self, arm: str, config: Any, tags: dict[str, str], run_id: str | None = None) -> None:
        """Open an arm's nested run, or reopen ``run_id``: its logged rounds are not logged again."""
        if run_id is not None:
            self.child = self._reopen(run_id, nested=True)
            self.logged_upto = self._last_step(run_id)
            return
        self.child = self.mlflow.start_run(run_name=arm, nested=True, tags=tags)
        self.logged_upto = -1
        params = {k: "null" if v is None else str(v) for k, v in domain_params(config).items()}
        self.mlflow.log_params(params)

    def _reopen(self, run_id: str, nested: bool = False) -> Any:
        """Continue the MLflow run ``run_id`` (named in the run folder's tracking.json)."""
        try:
            self.client.get_run(run_id)
        except Exception:  # MlflowException (unknown id) or a store error
            raise TrackingError(
                f"MLflow run {run_id} named in tracking.json is not in {self.uri}; delete tracking.json "
                "to continue in new runs"
            ) from None
        return self.mlflow.start_run(run_id=run_id, nested=nested)

    def _last_step(self, run_id: str) -> int:
        """The largest step any metric of ``run_id`` was logged at (-1: none)."""
        keys = self.client.get_run(run_id).data.metrics
        steps = [m.step for key in keys for m in self.client.get_metric_history(run_id, key)]
        return max(steps, default=-1)

    def run_id(self) -> str | None:
        """The open run: the arm's while one is open, else the parent's."""
        run = self.child if self.child is not None else self.parent
        return None if run is None else run.info.run_id

    def log(self, row: dict[str, Any], step: int) -> None:
        if step <= self.logged_upto:  # logged before the run was stopped: no duplicate step
            return
        self.mlflow.log_metrics(finite_metrics(row), step=step)
        self.logged_upto = step

    def end_arm(self, artifacts: list[Path]) -> None:
        for path in artifacts:
            if path.exists():
                self.mlflow.log_artifact(str(path))
        self.mlflow.end_run()
        self.child = None
        self.logged_upto = self._last_step(self.parent.info.run_id)

    def end(self, artifacts: list[Path], status: str = "FINISHED") -> None:
        if self.child is not None:
            self.mlflow.end_run(status=status)
            self.child = None
        for path in artifacts:
            if path.exists():
                self.mlflow.log_artifact(str(path))
        self.mlflow.end_run(status=status)
