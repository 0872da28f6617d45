"""``recsim run``: resolve a scenario (or a stopped run to resume), track it, show progress, run it,
and print its final table. Bad input exits with status 2 before any file is written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from recsim.cli.common import app, console, err_console, fail, fmt, summary_table
from recsim.core.config import ConfigError
from recsim.core.registry import load_plugins
from recsim.io.paths import check_output_folder

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
Seeds = Annotated[
    str | None,
    typer.Option(help="Run every arm on several seeds: N (seeds 0..N-1) or a list, e.g. 3,7,11."),
]
Workers = Annotated[
    int, typer.Option(help="Units (arm, seed) run at once on Ray; 0 = one after the other here.")
]
RayAddress = Annotated[
    str | None, typer.Option(help="Join this Ray cluster (HOST:PORT) instead of starting a local Ray.")
]
Threads = Annotated[
    int | None,
    typer.Option(
        help="Torch threads per unit (results are bit-identical across --workers at equal --threads)."
    ),
]
Window = Annotated[
    str | None, typer.Option(help="Summarize the mean of rounds FIRST-LAST instead of the final round.")
]
Quick = Annotated[
    bool, typer.Option("--quick", help="The scenario's small preset (its `quick` overrides, then --set).")
]
Amplification = Annotated[
    bool,
    typer.Option(
        "--amplification",
        help="Beside every arm, the same learner on a fixed logger's logs (ARM@open) and on random "
        "ones (ARM@random, recommender): the summary gives closed - open, the loop's amplification.",
    ),
]
Plugins = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated modules to import first: they register rankers, click models, metrics "
        "or scenarios (found from the working directory; Ray workers import them too)."
    ),
]
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
    seeds: Seeds = None,
    workers: Workers = 0,
    ray_address: RayAddress = None,
    threads: Threads = None,
    window: Window = None,
    quick: Quick = False,
    amplification: Amplification = False,
    plugins: Plugins = None,
    resume: Resume = None,
) -> None:
    """Run every arm of a scenario on every seed; write config.yaml, metrics.parquet, logs/,
    curves.png, summary.json and summary.md (means with 95% intervals, paired differences)."""
    parallel = {"workers": workers, "ray_address": ray_address, "window": _window(window)}
    try:
        load_plugins((plugins or "").split(","))
    except ConfigError as exc:
        fail(str(exc))
    if resume is not None:
        given = {
            "--rounds": rounds is not None,
            "--seed": seed is not None,
            "--seeds": seeds is not None,
            "--threads": threads is not None,
            "--set": bool(set_),
            "--out": out is not None,
            "--device": device is not None,
            "--tracking-uri": tracking_uri is not None,
            "--no-tracking": no_tracking,
            "--distributed": distributed,
            "--quick": quick,
            "--amplification": amplification,
        }
        _resume(scenario, resume, [flag for flag, on in given.items() if on], quiet, parallel)
        return
    scenario = scenario or "feedback-loop"
    overrides = list(set_ or [])
    overrides += [f"device={device}"] if device is not None else []
    overrides += ["tracking.enabled=false"] if no_tracking else []
    overrides += [f"tracking.uri={tracking_uri}"] if tracking_uri else []
    sc, configs = _resolve(scenario, overrides, rounds, seed, quick, amplification)
    study = _study(sc, configs, seeds, seed, threads, distributed, **parallel)
    wants_cuda = any(getattr(c, "device", "cpu") == "cuda" for c in configs.values())
    ctx = _distributed(sc, configs, "cuda" if wants_cuda else "cpu", sharding) if distributed else None
    source = _source(sc, scenario)
    out = out or Path("runs") / sc.name / time.strftime("%Y%m%d-%H%M%S")
    if ctx is not None:
        out = ctx.broadcast_object(out)  # rank 0's timestamp names the folder of every rank
    try:
        check_output_folder(out)
    except ConfigError as exc:
        fail(str(exc))
    if ctx is not None:
        ctx.barrier()  # every rank checked the folder before any writes to it
        quiet = quiet or not ctx.main
    _run(sc, configs, out, quiet, ctx, False, source, study)


def _resume(
    scenario: str | None, folder: Path, clash: list[str], quiet: bool, parallel: dict[str, Any]
) -> None:
    """``--resume FOLDER``: continue a stopped run with its own saved config, seeds and threads
    (units may run on another number of workers: the result does not depend on it)."""
    from recsim.core.runner import Study
    from recsim.scenario import load_run

    if clash:
        fail(f"--resume continues the saved config of {folder}; drop {', '.join(clash)}")
    try:
        sc, configs, source, saved = load_run(folder)
    except ConfigError as exc:
        fail(str(exc))
    if scenario is not None and scenario not in (source, sc.name):
        fail(f"--resume: {folder} holds a run of '{sc.name}', not '{scenario}'")
    if parallel["window"] is None:
        parallel = {**parallel, "window": saved["window"]}
    study = Study(seeds=saved["seeds"], threads=saved["threads"], **parallel)
    _check_workers(study)
    _run(sc, configs, folder, quiet, None, True, source, study)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"3"`` -> (0, 1, 2); ``"3,7,11"`` -> (3, 7, 11). ValueError on anything else.

    >>> parse_seeds("3"), parse_seeds("3,7,11")
    ((0, 1, 2), (3, 7, 11))
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        n = int(parts[0])
        if n < 1:
            raise ValueError("--seeds N needs N >= 1")
        return tuple(range(n))
    seeds = tuple(int(p) for p in parts)
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError("--seeds lists distinct non-negative integers")
    return seeds


def _window(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        first, _, last = text.partition("-")
        window = (int(first), int(last))
        if not 0 <= window[0] <= window[1]:
            raise ValueError
    except ValueError:
        fail(f"--window expects FIRST-LAST rounds with 0 <= FIRST <= LAST, got {text!r}")
    return window


def _study(
    sc: Any,
    configs: dict[str, Any],
    seeds: str | None,
    seed: int | None,
    threads: int | None,
    distributed: bool,
    workers: int,
    ray_address: str | None,
    window: tuple[int, int] | None,
) -> Any:
    """The study the flags ask for (one line and exit 2 on a bad combination)."""
    from recsim.core.runner import Study, study_window
    from recsim.scenario import Scenario

    loop = isinstance(sc, Scenario)
    if not loop and (seeds is not None or workers or threads is not None or window is not None):
        fail(
            f"scenario '{sc.name}' is not a round loop; --seeds, --workers, --threads and --window "
            "are for loops"
        )
    if seeds is not None and seed is not None:
        fail("give --seed or --seeds, not both")
    if distributed and (workers or (seeds is not None and seeds.strip() != "1")):
        fail("--distributed runs one seed in one process group; drop --seeds and --workers")
    try:
        picked = parse_seeds(seeds) if seeds is not None else (next(iter(configs.values())).seed,)
    except ValueError as exc:
        fail(
            str(exc)
            if "--seeds" in str(exc)
            else f"--seeds expects N or a comma-separated list, got {seeds!r}"
        )
    if threads is not None and threads < 1:
        fail(f"--threads must be >= 1, got {threads}")
    if workers < 0:
        fail(f"--workers must be >= 0, got {workers}")
    if ray_address and not workers:
        fail("--ray-address needs --workers N (units run at once on the cluster)")
    if ray_address:
        from recsim.core.parallel import check_ray_address

        try:
            check_ray_address(ray_address)
        except ConfigError as exc:
            fail(str(exc))
    rounds = max(c.loop.rounds for c in configs.values()) if loop else 0
    if window is not None and window[1] >= rounds:
        fail(f"--window {window[0]}-{window[1]} reaches past the last round ({rounds - 1})")
    window = study_window(sc, configs, window) if loop else None
    study = Study(seeds=picked, threads=threads, workers=workers, ray_address=ray_address, window=window)
    _check_workers(study)
    if loop:
        _check_memory(configs, study)
    return study


def _check_workers(study: Any) -> None:
    """A local Ray must fit the machine: workers x threads <= cores."""
    import os

    from recsim.core.parallel import threads_per_unit

    if study.workers and not study.ray_address:
        cores = os.cpu_count() or 1
        per = threads_per_unit(study.workers, study.threads)
        if study.workers * per > cores:
            fail(f"--workers {study.workers} x --threads {per} exceeds the {cores} cores here; lower either")
    try:
        study.plugins()  # what Ray workers must import: refused here if they cannot
    except ConfigError as exc:
        fail(str(exc))


def _check_memory(configs: dict[str, Any], study: Any) -> None:
    """Refuse before anything is written when the units that run at once need more memory than the
    machine has (each domain estimates its own; the estimate is a lower bound)."""
    import os

    from recsim.core.domain import domain_class

    need = max(domain_class(c.domain).memory_bytes(c) for c in configs.values()) * max(study.workers, 1)
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        fail(
            f"this run needs at least {need / 2**30:.1f} GiB at once (largest arm x {max(study.workers, 1)} "
            f"unit(s)), more than the {have / 2**30:.1f} GiB here; shrink the world or run fewer --workers"
        )


def _resolve(
    scenario: str,
    overrides: list[str],
    rounds: int | None,
    seed: int | None,
    quick: bool = False,
    amplification: bool = False,
) -> tuple[Any, dict]:
    """The scenario (with its open-loop arms under ``amplification``) and every arm's validated
    config (one line and exit 2 on bad input)."""
    from recsim.scenario import load_scenario

    try:
        sc = load_scenario(scenario)
        if quick and not getattr(sc, "quick", ()):
            fail(f"scenario '{sc.name}' has no --quick preset")
        if amplification:
            if not hasattr(sc, "amplified"):
                fail(f"scenario '{sc.name}' is not a round loop; --amplification is for loops")
            sc = sc.amplified()
        overrides = [*sc.quick, *overrides] if quick else overrides
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
    sc: Any,
    configs: dict[str, Any],
    out: Path,
    quiet: bool,
    ctx: Any,
    resume: bool,
    source: str | None,
    study: Any = None,
) -> None:
    """Track, show progress, run, and report: shared by new and resumed runs."""
    import polars as pl
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tracker = _tracker(sc, configs, ctx)
    total = sc.total_steps(configs) * (len(study.seeds) if study is not None else 1)
    done = (
        pl.read_parquet(out / "metrics.parquet").height
        if resume and (out / "metrics.parquet").exists()
        else 0
    )
    kwargs: dict[str, Any] = {"dist": ctx} if ctx is not None else {}
    kwargs.update({"resume": True} if resume else {})
    kwargs.update({"source": source} if source is not None else {})
    kwargs.update({"study": study} if study is not None and source is not None else {})
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
    if study is not None and source is not None:
        print_study(frame, sc, configs, study, out)
    else:
        console.print(summary_table(sc.final(frame), f"{sc.name}: final round"))
    console.print(f"outputs: {out}")
    if tracker is not None:
        tracking = sc.tracking(configs)
        console.print(f"MLflow: {tracking.uri} (experiment '{tracking.experiment or sc.name}')")
        if tracking.uri.startswith("sqlite:///"):
            console.print(
                f"browse: mlflow ui --backend-store-uri {tracking.uri} --host 127.0.0.1, then open "
                f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}?workflowType=machine_learning",
                soft_wrap=True,
            )


def _guarded(work: Any, progress: Any, out: Path) -> Any:
    """``work()``; Ctrl-C says how to resume (exit 130), a run error says where its outputs are (1)."""
    from recsim.core.errors import NonFiniteError
    from recsim.core.parallel import ParallelError
    from recsim.io.atomic import WriteError
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
    except WriteError as exc:  # a full disk or a file-size limit: every complete round is kept
        progress.stop()
        err_console.print(
            f"error: {exc}; every complete round is kept in {out}: free space and continue with "
            f"recsim run --resume {out}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    except (NonFiniteError, LogError, CheckpointError, TrackingError, ParallelError) as exc:
        progress.stop()
        err_console.print(
            f"error: {exc}; outputs so far: {out}", markup=False, highlight=False, soft_wrap=True
        )
        raise typer.Exit(1) from None


def print_study(frame: Any, sc: Any, configs: dict[str, Any], study: Any, out: Path) -> None:
    """The scenario's table metrics, arms as rows: means with 95% intervals, then the paired
    differences to the reference arm (* = distinguishable from 0). As many metric columns as the
    terminal fits; every metric of every arm is in summary.md."""
    from recsim.core.runner import reference_arm
    from recsim.core.stats import describe, paired

    metrics = [m for m in sc.table if m in frame.columns]
    n = len(study.seeds)
    when = "final round" if study.window is None else f"rounds {study.window[0]}-{study.window[1]}"
    cells = {
        (r["arm"], r["metric"]): _interval_cell(r, "mean")
        for r in describe(frame, metrics, study.window).iter_rows(named=True)
    }
    title = f"{sc.name}: {when}, mean over {n} seed(s)" + (" [95% interval]" if n > 1 else "")
    shown = _fit_table(title, list(configs), metrics, cells)
    if n >= 2 and len(configs) >= 2:
        reference = reference_arm(sc, configs)
        diffs = paired(frame, metrics, reference, study.window)
        cells = {(r["arm"], r["metric"]): _interval_cell(r, "diff") for r in diffs.iter_rows(named=True)}
        title = f"paired difference to {reference} [95% interval], * distinguishable from 0"
        _fit_table(title, [a for a in configs if a != reference], metrics, cells)
    if shown < len(metrics) or n > 1:
        console.print(f"every metric: {out / 'summary.md'}")


def _fit_table(title: str, arms: list[str], metrics: list[str], cells: dict[tuple[str, str], str]) -> int:
    """Print arms x metrics, keeping the metric columns that fit the console; returns how many."""
    from rich.table import Table

    arm_width = max([len(a) for a in arms] + [3]) + 3
    room, shown = console.width - arm_width, []
    for m in metrics:
        width = max([len(m)] + [len(cells.get((a, m), "-")) for a in arms]) + 3
        if room - width < 0 and shown:
            break
        room -= width
        shown.append(m)
    table = Table(
        title=title
        + (f" ({len(metrics) - len(shown)} more in summary.md)" if len(shown) < len(metrics) else "")
    )
    table.add_column("arm", style="bold", no_wrap=True)
    for m in shown:
        table.add_column(m, justify="right", no_wrap=True)
    for arm in arms:
        table.add_row(arm, *(cells.get((arm, m), "-") for m in shown))
    console.print(table)
    return len(shown)


def _interval_cell(row: dict[str, Any] | None, key: str) -> str:
    if row is None or row[key] is None or row[key] != row[key]:
        return "-"
    text = fmt(row[key])
    if row["low"] is not None and row["low"] == row["low"]:
        text += f" [{fmt(row['low'])}, {fmt(row['high'])}]"
    return text + (" *" if row.get("distinguishable") else "")
