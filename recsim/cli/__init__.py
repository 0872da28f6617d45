"""The ``recsim`` command: run scenarios, list them, compare tracked runs, benchmark.

Bad input (unknown scenario, invalid config, malformed ``--set``, non-empty output folder) prints
one line to stderr and exits with status 2 before any file or MLflow run is created.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from recsim.cli import export as _export_command  # noqa: F401  (registers `recsim export obp`)
from recsim.cli import run as _run_command  # noqa: F401  (registers `recsim run`)
from recsim.cli import validate as _validate_command  # noqa: F401  (registers `recsim validate`)
from recsim.cli import world as _world_command  # noqa: F401  (registers `recsim world fit`)
from recsim.cli.common import app, console, err_console, fail, summary_table

__all__ = ["app", "fail", "main", "summary_table"]


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


#: ``recsim compare``'s metrics when none are named: those of them the runs logged.
COMPARE_METRICS = "gold,gap,spurious_share,gini,ece,ndcg_truth,accuracy"


@app.command()
def compare(
    experiment: Annotated[
        str, typer.Option(help="MLflow experiment (a scenario name by default).")
    ] = "feedback-loop",
    tracking_uri: Annotated[str, typer.Option(help="MLflow tracking URI.")] = "sqlite:///mlflow.db",
    metrics: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated metrics for the table and figure (each must have been logged); "
            "default: those of gold, gap, spurious_share, gini, ece, ndcg_truth, accuracy the runs have."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="PNG of the metrics over rounds.")] = Path("compare.png"),
    parent: Annotated[
        str | None, typer.Option(help="Parent run id; default: the latest finished one.")
    ] = None,
) -> None:
    """Table of the latest run of an experiment (arms side by side) and a PNG of metrics over rounds."""
    from recsim.io.compare import CompareError, load_comparison

    given = metrics is not None
    names = [m.strip() for m in (metrics or COMPARE_METRICS).split(",") if m.strip()]
    try:
        result = load_comparison(tracking_uri, experiment, names, parent, strict=given)
    except CompareError as exc:
        fail(str(exc))
    names = [m for m in names if any(m in values for values in result.final.values())]
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
        str | None,
        typer.Option(help="Run one group: peer, loop, startup, scale, sharded, core or study."),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="Instead: run one arm of this scenario (name or .yaml) on one seed and print where "
            "its rounds' time goes, stage by stage (act, feedback, log, fit, measure, track, evolve, "
            "checkpoint)."
        ),
    ] = None,
    arm: Annotated[str | None, typer.Option(help="--profile: the arm (default: the first).")] = None,
    rounds: Annotated[int | None, typer.Option(help="--profile: override loop.rounds.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="--profile: dotted.key=value overrides.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="--profile: torch threads.")] = None,
    flops: Annotated[
        bool,
        typer.Option(
            "--flops",
            help="--profile: run the arm a second time counting each stage's dense-product FLOPs, "
            "and print them against the GEMM peak measured in the same process.",
        ),
    ] = False,
    peer_python: Annotated[
        str | None,
        typer.Option(help="peer: a Python with T-RECS installed, to time it beside recsim on this machine."),
    ] = None,
) -> None:
    """Print benchmark results, one JSON object per line."""
    from recsim.cli.bench import GROUPS, run_benchmarks

    if profile is not None:
        _profile(profile, arm, rounds, set_ or [], threads, flops)
        return
    if flops:
        fail("--flops counts the FLOPs of a --profile run: give --profile SCENARIO")
    if only is not None and only not in GROUPS:
        fail(f"--only must be one of {', '.join(GROUPS)}, got {only!r}")
    if peer_python is not None:
        _check_peer(peer_python)
    for line in run_benchmarks(quick, only, peer_python):
        print(line, flush=True)


def _check_peer(python: str) -> None:
    """--peer-python must run and import T-RECS (one line and exit 2 otherwise)."""
    import subprocess
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as cwd:  # nothing T-RECS writes lands here
            res = subprocess.run(
                [python, "-c", "import trecs.models"], capture_output=True, text=True, timeout=120, cwd=cwd
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(f"--peer-python {python}: cannot run it ({exc})")
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        fail(f"--peer-python {python} cannot import T-RECS (pip install trecs there): {last}")


def _profile(
    scenario: str, arm: str | None, rounds: int | None, overrides: list[str], threads: int | None, flops: bool
) -> None:
    from recsim.cli.bench import profile_lines, profile_unit
    from recsim.cli.run import _resolve
    from recsim.core.units import Unit
    from recsim.scenario import Scenario

    sc, configs = _resolve(scenario, ["tracking.enabled=false", *overrides], rounds, None)
    if not isinstance(sc, Scenario):
        fail(f"scenario '{sc.name}' is not a loop scenario; --profile times round loops")
    name = arm if arm is not None else next(iter(configs))
    if name not in configs:
        fail(f"--arm {name!r} is not an arm of '{sc.name}' (arms: {', '.join(configs)})")
    config = configs[name]
    unit = Unit(name, config.seed, config)
    label = {"scenario": sc.name, "arm": name, "threads": threads}
    for line in profile_lines(profile_unit(unit, threads, flops), label):
        print(line, flush=True)


def main() -> None:
    # Same seed, same machine, same numbers: keep MKL from changing its thread count (and so its
    # summation order) with the machine's load. Set before torch loads MKL.
    os.environ.setdefault("MKL_DYNAMIC", "FALSE")
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        exit_process(130)
    except SystemExit as exc:
        exit_process(exc.code)
    exit_process(0)


def exit_process(code: int | str | None) -> None:
    """End the ``recsim`` process with ``code`` (``sys.exit``'s meaning), skipping the interpreter's
    teardown once nothing is left for it to do.

    Tearing down the interpreter frees every module and object one by one: 0.3 s after ``import
    torch`` alone and about 1 s after torch, TorchRec, fbgemm and tensordict here, against a
    one-round run of about 2.5 s. Every file a command writes is written whole and closed before
    it returns (``write_atomic``), so that teardown is waste. What the normal exit still owes is
    run first: the ``atexit`` handlers (MLflow, logging, Ray, ``weakref.finalize`` of temporary
    folders) and a flush of stdout and stderr. A thread other than a daemon still running means
    work the normal exit would wait for, so then it is the normal exit.
    """
    import atexit
    import threading

    if any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the message to stderr, status 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()  # noqa: SLF001  (the handlers, as the normal exit runs them)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing to deliver
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
