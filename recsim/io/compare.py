"""Read a scenario's runs back from MLflow: final values per arm and per-round curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsim.core.config import ConfigError, refuse_unknown


class CompareError(ValueError):
    """Nothing to compare (no experiment, no finished run); the message is one line."""


@dataclass(frozen=True)
class Comparison:
    """parent_id: the scenario run; final: arm -> {metric: last value}; curves: arm, round, metrics."""

    parent_id: str
    final: dict[str, dict[str, float | None]]
    curves: pl.DataFrame
    tags: dict[str, tuple[str, str]]  # arm -> (domain, mitigation)

    def by_domain(self, metric: str) -> dict[str, dict[str, float | None]]:
        """row -> {domain: final value of ``metric``} (the cross-domain table). Rows are the arm
        names after "DOMAIN/" when arms are named that way, else the mitigation tags."""
        table: dict[str, dict[str, float | None]] = {}
        for arm, (domain, mitigation) in self.tags.items():
            row = arm.split("/", 1)[1] if arm.startswith(f"{domain}/") else mitigation
            table.setdefault(row, {})[domain] = self.final[arm].get(metric)
        return table


def load_comparison(
    uri: str, experiment: str, metrics: list[str], parent: str | None = None, strict: bool = True
) -> Comparison:
    """The arms (nested runs) of the latest finished parent run of ``experiment``, or of ``parent``.
    A metric no arm logged is refused naming its close matches (``strict=False``: left out, for a
    default list that spans both domains)."""
    import mlflow

    prefix = "sqlite:///"
    if uri.startswith(prefix) and not Path(uri[len(prefix) :]).is_file():
        raise CompareError(f"no MLflow store at {uri} (nothing has been tracked there)")
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise CompareError(
            f"no MLflow experiment '{experiment}' at {uri} (found: {', '.join(names) or 'none'})"
        )
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_ids=[exp.experiment_id], output_format="pandas")
    if runs.empty:
        raise CompareError(f"experiment '{experiment}' has no runs")
    parent_col = "tags.mlflow.parentRunId"
    scenario_col = "tags.recsim.scenario_run"  # arm runs beside their scenario run
    is_parent = runs[parent_col].isna() if parent_col in runs else runs["run_id"].notna()
    if scenario_col in runs:
        is_parent &= runs[scenario_col].isna()
    parents = runs[is_parent & (runs["status"] == "FINISHED")].sort_values("start_time")
    if parent is None:
        if parents.empty:
            raise CompareError(f"experiment '{experiment}' has no finished scenario run")
        parent = str(parents.iloc[-1]["run_id"])
    elif parent not in set(runs["run_id"]):
        raise CompareError(f"run '{parent}' is not in experiment '{experiment}'")
    arm_of = runs[scenario_col] if scenario_col in runs else runs.get(parent_col)
    children = runs[arm_of == parent].sort_values("start_time")
    if children.empty:
        raise CompareError(f"run '{parent}' has no arms")
    logged = [c[len("metrics.") :] for c in children.columns if c.startswith("metrics.")]
    logged = [m for m in logged if children[f"metrics.{m}"].notna().any()]
    if strict:
        try:
            refuse_unknown(metrics, logged)
        except ConfigError as exc:
            raise CompareError(f"{exc} in the arms of run {parent[:8]}") from None
    else:
        metrics = [m for m in metrics if m in logged]
    final: dict[str, dict[str, float | None]] = {}
    tags: dict[str, tuple[str, str]] = {}
    rows: list[dict[str, object]] = []
    for _, child in children.iterrows():
        arm = str(child.get("tags.arm") or child.get("tags.mlflow.runName"))
        tags[arm] = (str(child.get("tags.domain")), str(child.get("tags.mitigation", "none")))
        final[arm] = {m: _finite(child.get(f"metrics.{m}")) for m in metrics}
        seeds = runs[runs.get(parent_col) == child["run_id"]] if parent_col in runs else runs.iloc[:0]
        # the seed runs beneath the arm (a study): their curves give the bands; else the arm's own
        sources = [(int(s.get("tags.seed", 0)), s["run_id"]) for _, s in seeds.iterrows()]
        rows += _histories(client, arm, sources or [(0, child["run_id"])], metrics)
    if rows:
        index = ["arm", "seed", "round"]
        curves = pl.DataFrame(rows).pivot(on="metric", index=index, values="value").sort(index)
    else:
        curves = pl.DataFrame(schema={"arm": pl.String, "seed": pl.Int64, "round": pl.Int64})
    return Comparison(parent, final, curves, tags)


def _finite(value: object) -> float | None:
    return None if value is None or value != value else float(value)  # type: ignore[arg-type]


def _histories(client: object, arm: str, sources: list[tuple[int, str]], metrics: list[str]) -> list[dict]:
    """Rows (arm, seed, round, metric, value) of every metric's history in each (seed, run id)."""
    return [
        {"arm": arm, "seed": seed, "round": point.step, "metric": m, "value": point.value}
        for seed, run_id in sources
        for m in metrics
        for point in client.get_metric_history(run_id, m)  # type: ignore[attr-defined]
    ]
