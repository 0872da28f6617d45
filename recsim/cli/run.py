"""``recsim run``: resolve a scenario (or a stopped run to resume), track it, show progress, run it,
and print its final table. Bad input exits with status 2 before any file is written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from recsim.cli.common import app, console, err_console, fail, fmt, summary_table
from recsim.core.config import ConfigError

ScenarioArg = Annotated[
    str | None,
    typer.Argument(help="Scenario name (see `recsim scenarios`) or a .yaml file [default: feedback-loop]."),
]
Rounds = Annotated[int | None, typer.Option(help="Override loop.rounds for every arm.")]
Seed = Annotated[int | None, typer.Option(help="Override the root seed for every arm.")]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="dotted.key=value (YAML value); arms.ARM.key=value for one arm."),
]
Out = Annotated[
    Path | None, typer.Option(help="Output folder (must be new or empty); default runs/SCENARIO/TIMESTAMP.")
]
NoTracking = Annotated[bool, typer.Option("--no-tracking", help="Do not log to MLflow.")]
TrackingUri = Annotated[str | None, typer.Option(help="MLflow tracking URI (default sqlite:///mlflow.db).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Device = Annotated[
    str | None, typer.Option(help="Torch device: cpu (default) or cuda (sets `device` of every arm).")
]
Distributed = Annotated[
    bool,
    typer.Option(
        "--distributed", help="Under torchrun: split users across ranks, train the ranker with TorchRec DMP."
    ),
]
Sharding = Annotated[str, typer.Option(help="--distributed: TorchRec sharding of the embedding tables.")]
Resume = Annotated[
    Path | None,
    typer.Option(help="Continue the run in this folder from its last complete round (same config)."),
]


@app.command()
def run(
    scenario: ScenarioArg = None,
    rounds: Rounds = None,
    seed: Seed = None,
    set_: Sets = None,
    out: Out = None,
    no_tracking: NoTracking = False,
    tracking_uri: TrackingUri = None,
    quiet: Quiet = False,
    device: Device = None,
    distributed: Distributed = False,
    sharding: Sharding = "table_wise",
    resume: Resume = None,
) -> None:
    """Run every arm of a scenario; write config.yaml, metrics.parquet, logs/, curves.png, summary.json."""
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
        _resume(scenario, resume, [flag for flag, on in given.items() if on], quiet)
        return
    scenario = scenario or "feedback-loop"
    overrides = list(set_ or [])
    overrides += [f"device={device}"] if device is not None else []
    overrides += ["tracking.enabled=false"] if no_tracking else []
    overrides += [f"tracking.uri={tracking_uri}"] if tracking_uri else []
    sc, configs = _resolve(scenario, overrides, rounds, seed)
    wants_cuda = any(getattr(c, "device", "cpu") == "cuda" for c in configs.values())
    ctx = _distributed(sc, configs, "cuda" if wants_cuda else "cpu", sharding) if distributed else None
    source = _source(sc, scenario)
    out = out or Path("runs") / sc.name / time.strftime("%Y%m%d-%H%M%S")
    if ctx is not None:
        out = ctx.broadcast_object(out)  # rank 0's timestamp names the folder of every rank
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(f"output folder {out} exists and is not empty; choose a new --out")
    if ctx is not None:
        ctx.barrier()  # every rank checked the folder before any writes to it
        quiet = quiet or not ctx.main
    _run(sc, configs, out, quiet, ctx, False, source)


def _resume(scenario: str | None, folder: Path, clash: list[str], quiet: bool) -> None:
    """``--resume FOLDER``: continue a stopped run with its own saved config."""
    from recsim.scenario import load_run

    if clash:
        fail(f"--resume continues the saved config of {folder}; drop {', '.join(clash)}")
    try:
        sc, configs, source = load_run(folder)
    except ConfigError as exc:
        fail(str(exc))
    if scenario is not None and scenario not in (source, sc.name):
        fail(f"--resume: {folder} holds a run of '{sc.name}', not '{scenario}'")
    _run(sc, configs, folder, quiet, None, True, source)


def _resolve(scenario: str, overrides: list[str], rounds: int | None, seed: int | None) -> tuple[Any, dict]:
    """The scenario and every arm's validated config (one line and exit 2 on bad input)."""
    from recsim.scenario import load_scenario

    try:
        sc = load_scenario(scenario)
        configs = sc.resolve(overrides, rounds=rounds, seed=seed)
    except ConfigError as exc:
        fail(str(exc))
    if any(getattr(c, "device", "cpu") == "cuda" for c in configs.values()):
        import torch

        if not torch.cuda.is_available():
            fail("device=cuda was asked for but no CUDA GPU is visible to torch; use --device cpu")
    return sc, configs


def _distributed(sc: Any, configs: dict[str, Any], device: str, sharding: str) -> Any:
    """This process's rank under torchrun, after checking that every arm can run sharded."""
    from recsim.recsys.distributed import DistributedError, check_arms, init
    from recsim.scenario import Scenario

    if not isinstance(sc, Scenario):
        fail(f"scenario '{sc.name}' is not a loop scenario; --distributed runs those only")
    try:
        check_arms(configs)
        return init(device, sharding)
    except DistributedError as exc:
        fail(str(exc))


def _source(sc: Any, scenario: str) -> str | None:
    """Where the scenario came from, as config.yaml records it (None: not a round loop)."""
    from recsim.scenario import Scenario

    if not isinstance(sc, Scenario):
        return None  # experiments that are not round loops keep their own signature
    return str(Path(scenario).resolve()) if scenario.endswith((".yaml", ".yml")) else scenario


def _tracker(sc: Any, configs: dict[str, Any], ctx: Any) -> Any:
    """The MLflow tracker of the run (None: tracking off, or not rank 0), its store checked."""
    tracking = sc.tracking(configs)
    if not tracking.enabled or (ctx is not None and not ctx.main):
        return None
    from recsim.io.tracking import MlflowTracker, TrackingError

    tracker = MlflowTracker(tracking.uri, tracking.experiment or sc.name)
    try:
        tracker.check()
    except TrackingError as exc:
        fail(str(exc))
    return tracker


def _run(
    sc: Any, configs: dict[str, Any], out: Path, quiet: bool, ctx: Any, resume: bool, source: str | None
) -> None:
    """Track, show progress, run, and report: shared by new and resumed runs."""
    import polars as pl
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tracker = _tracker(sc, configs, ctx)
    total = sc.total_steps(configs)
    done = (
        pl.read_parquet(out / "metrics.parquet").height
        if resume and (out / "metrics.parquet").exists()
        else 0
    )
    kwargs: dict[str, Any] = {"dist": ctx} if ctx is not None else {}
    kwargs.update({"resume": True} if resume else {})
    kwargs.update({"source": source} if source is not None else {})
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, disable=quiet, transient=False) as progress:
        task = progress.add_task(sc.name, total=total, completed=min(done, total))

        def on_round(arm: str, r: int, row: dict[str, Any]) -> None:
            shown = "  ".join(
                f"{k}={fmt(row[k])}" for k in ("gold", "ndcg_truth", "gini", "test_loss") if k in row
            )
            progress.update(task, advance=1, description=f"{arm} r{r}  {shown}")

        frame = _guarded(lambda: sc.run(configs, out, tracker, on_round, **kwargs), progress, out)
    if ctx is not None and not ctx.main:
        return
    console.print(summary_table(sc.final(frame), f"{sc.name}: final round"))
    console.print(f"outputs: {out}")
    if tracker is not None:
        tracking = sc.tracking(configs)
        console.print(f"MLflow: {tracking.uri} (experiment '{tracking.experiment or sc.name}')")


def _guarded(work: Any, progress: Any, out: Path) -> Any:
    """``work()``; Ctrl-C says how to resume (exit 130), a run error says where its outputs are (1)."""
    from recsim.core.errors import NonFiniteError
    from recsim.io.checkpoint import CheckpointError
    from recsim.io.logs import LogError
    from recsim.io.tracking import TrackingError

    try:
        return work()
    except KeyboardInterrupt:
        progress.stop()
        err_console.print(
            f"interrupted: every complete round is saved in {out}; continue with: recsim run --resume {out}",
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
