"""The ``recsim`` command: run scenarios, list them, compare tracked runs, benchmark.

Bad input (unknown scenario, invalid config, malformed ``--set``, non-empty output folder) prints
one line to stderr and exits with status 2 before any file or MLflow run is created.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from recsim.config import ConfigError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Simulate biased feedback cascading through learning loops.",
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> None:
    """One line to stderr, exit status 2."""
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def summary_table(final: dict[str, dict[str, Any]], title: str, row_label: str = "metric") -> Table:
    """Metrics as rows, arms as columns (arms side by side)."""
    metrics = list(dict.fromkeys(m for values in final.values() for m in values))
    table = Table(title=title)
    table.add_column(row_label, style="bold", no_wrap=True)
    for arm in final:
        table.add_column(arm, justify="right", overflow="fold")
    for m in metrics:
        table.add_row(m, *(_fmt(values.get(m)) for values in final.values()))
    return table


@app.command()
def run(
    scenario: Annotated[
        str | None,
        typer.Argument(
            help="Scenario name (see `recsim scenarios`) or a .yaml file [default: feedback-loop]."
        ),
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="Override loop.rounds for every arm.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the root seed for every arm.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="dotted.key=value (YAML value); arms.ARM.key=value for one arm."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder (must be new or empty); default runs/SCENARIO/TIMESTAMP."),
    ] = None,
    no_tracking: Annotated[bool, typer.Option("--no-tracking", help="Do not log to MLflow.")] = False,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default sqlite:///mlflow.db).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    device: Annotated[
        str | None, typer.Option(help="Torch device: cpu (default) or cuda (sets `device` of every arm).")
    ] = None,
    distributed: Annotated[
        bool,
        typer.Option(
            "--distributed",
            help="Under torchrun: split users across ranks, train the ranker with TorchRec DMP.",
        ),
    ] = False,
    sharding: Annotated[
        str, typer.Option(help="--distributed: TorchRec sharding of the embedding tables.")
    ] = "table_wise",
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this folder from its last complete round (same config)."),
    ] = None,
) -> None:
    """Run every arm of a scenario; write config.yaml, metrics.parquet, logs/, curves.png, summary.json."""
    from recsim.scenario import Scenario, load_run, load_scenario

    if resume is not None:
        given = {
            "--rounds": rounds is not None,
            "--seed": seed is not None,
            "--set": bool(set_),
            "--out": out is not None,
            "--device": device is not None,
            "--tracking-uri": tracking_uri is not None,
            "--no-tracking": no_tracking,
            "--distributed": distributed,
        }
        clash = [flag for flag, on in given.items() if on]
        if clash:
            fail(f"--resume continues the saved config of {resume}; drop {', '.join(clash)}")
        try:
            sc, configs, source = load_run(resume)
        except ConfigError as exc:
            fail(str(exc))
        if scenario is not None and scenario not in (source, sc.name):
            fail(f"--resume: {resume} holds a run of '{sc.name}', not '{scenario}'")
        _run(sc, configs, resume, quiet, None, True, source)
        return
    scenario = scenario or "feedback-loop"
    overrides = list(set_ or [])
    if device is not None:
        overrides.append(f"device={device}")
    if no_tracking:
        overrides.append("tracking.enabled=false")
    if tracking_uri:
        overrides.append(f"tracking.uri={tracking_uri}")
    try:
        sc = load_scenario(scenario)
        configs = sc.resolve(overrides, rounds=rounds, seed=seed)
    except ConfigError as exc:
        fail(str(exc))
    wants_cuda = any(getattr(c, "device", "cpu") == "cuda" for c in configs.values())
    if wants_cuda:
        import torch

        if not torch.cuda.is_available():
            fail("device=cuda was asked for but no CUDA GPU is visible to torch; use --device cpu")
    ctx = None
    if distributed:
        from recsim.recsys.distributed import DistributedError, check_arms, init

        if not isinstance(sc, Scenario):
            fail(f"scenario '{sc.name}' is not a loop scenario; --distributed runs those only")
        try:
            check_arms(configs)
            ctx = init("cuda" if wants_cuda else "cpu", sharding)
        except DistributedError as exc:
            fail(str(exc))
    source = str(Path(scenario).resolve()) if scenario.endswith((".yaml", ".yml")) else scenario
    if not isinstance(sc, Scenario):
        source = None  # experiments that are not round loops keep their own signature
    out = out or Path("runs") / sc.name / time.strftime("%Y%m%d-%H%M%S")
    if ctx is not None:
        out = ctx.broadcast_object(out)  # rank 0's timestamp names the folder of every rank
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(f"output folder {out} exists and is not empty; choose a new --out")
    if ctx is not None:
        ctx.barrier()  # every rank checked the folder before any writes to it
        quiet = quiet or not ctx.main
    _run(sc, configs, out, quiet, ctx, False, source)


def _run(
    sc: Any, configs: dict[str, Any], out: Path, quiet: bool, ctx: Any, resume: bool, source: str | None
) -> None:
    """Track, show progress, run, and report: shared by new and resumed runs."""
    tracking = sc.tracking(configs)
    tracker = None
    if tracking.enabled and (ctx is None or ctx.main):
        from recsim.io.tracking import MlflowTracker, TrackingError

        tracker = MlflowTracker(tracking.uri, tracking.experiment or sc.name)
        try:
            tracker.check()
        except TrackingError as exc:
            fail(str(exc))

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from recsim.core.errors import NonFiniteError
    from recsim.io.checkpoint import CheckpointError
    from recsim.io.logs import LogError
    from recsim.io.tracking import TrackingError

    total = sc.total_steps(configs)
    done = 0
    if resume and (out / "metrics.parquet").exists():
        import polars as pl

        done = pl.read_parquet(out / "metrics.parquet").height
    kwargs: dict[str, Any] = {"dist": ctx} if ctx is not None else {}
    if resume:
        kwargs["resume"] = True
    if source is not None:
        kwargs["source"] = source
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    ) as progress:
        task = progress.add_task(sc.name, total=total, completed=min(done, total))

        def on_round(arm: str, r: int, row: dict[str, Any]) -> None:
            shown = "  ".join(
                f"{k}={_fmt(row[k])}" for k in ("gold", "ndcg_truth", "gini", "test_loss") if k in row
            )
            progress.update(task, advance=1, description=f"{arm} r{r}  {shown}")

        try:
            frame = sc.run(configs, out, tracker, on_round, **kwargs)
        except KeyboardInterrupt:
            progress.stop()
            err_console.print(
                f"interrupted: every complete round is saved in {out}; "
                f"continue with: recsim run --resume {out}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(130) from None
        except (NonFiniteError, LogError, CheckpointError, TrackingError) as exc:
            progress.stop()
            err_console.print(
                f"error: {exc}; outputs so far: {out}", markup=False, highlight=False, soft_wrap=True
            )
            raise typer.Exit(1) from None
    if ctx is not None and not ctx.main:
        return
    console.print(summary_table(sc.final(frame), f"{sc.name}: final round"))
    console.print(f"outputs: {out}")
    if tracker is not None:
        console.print(f"MLflow: {tracking.uri} (experiment '{tracking.experiment or sc.name}')")


def _transpose(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{row: {col: v}} -> {col: {row: v}} (summary_table shows the inner keys as rows)."""
    out: dict[str, dict[str, Any]] = {}
    for row, cols in table.items():
        for col, value in cols.items():
            out.setdefault(col, {})[row] = value
    return out


@app.command()
def scenarios() -> None:
    """List the built-in scenarios."""
    from recsim.scenario import builtin_scenarios

    table = Table(show_header=True)
    table.add_column("scenario", style="bold")
    table.add_column("arms", justify="right")
    table.add_column("description")
    for name, sc in builtin_scenarios().items():
        table.add_row(name, str(len(sc.arms)), sc.description)
    console.print(table)


@app.command()
def compare(
    experiment: Annotated[
        str, typer.Option(help="MLflow experiment (a scenario name by default).")
    ] = "feedback-loop",
    tracking_uri: Annotated[str, typer.Option(help="MLflow tracking URI.")] = "sqlite:///mlflow.db",
    metrics: Annotated[
        str, typer.Option(help="Comma-separated metrics for the table and figure.")
    ] = "gold,gap,spurious_share,gini,ece,ndcg_truth,accuracy",
    out: Annotated[Path, typer.Option(help="PNG of the metrics over rounds.")] = Path("compare.png"),
    parent: Annotated[
        str | None, typer.Option(help="Parent run id; default: the latest finished one.")
    ] = None,
) -> None:
    """Table of the latest run of an experiment (arms side by side) and a PNG of metrics over rounds."""
    from recsim.io.compare import CompareError, load_comparison

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    try:
        result = load_comparison(tracking_uri, experiment, names, parent)
    except CompareError as exc:
        fail(str(exc))
    from recsim.io.plots import plot_curves

    console.print(summary_table(result.final, f"{experiment}: run {result.parent_id[:8]}, final round"))
    if len({domain for domain, _ in result.tags.values()}) > 1:  # a cross-domain run: domain x mitigation
        for m in names:
            console.print(summary_table(_transpose(result.by_domain(m)), f"final {m}", "mitigation"))
    plot_curves(result.curves, names, out, title=experiment)
    console.print(f"figure: {out}")


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes (each group under a minute).")] = False,
    only: Annotated[
        str | None, typer.Option(help="Run one group: scale, sharded (2-process training) or core.")
    ] = None,
) -> None:
    """Print benchmark results, one JSON object per line."""
    from recsim.cli.bench import run_benchmarks

    if only is not None and only not in ("scale", "sharded", "core"):
        fail(f"--only must be scale, sharded or core, got {only!r}")
    for line in run_benchmarks(quick, only):
        print(line, flush=True)


def main() -> None:
    # Same seed, same machine, same numbers: keep MKL from changing its thread count (and so its
    # summation order) with the machine's load. Set before torch loads MKL.
    os.environ.setdefault("MKL_DYNAMIC", "FALSE")
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
