"""``recsim world fit``: a world fitted to an interaction log, with its fit report.

Bad input (a missing or unreadable log, an unknown preset or column, an option out of range, an
output folder that exists) prints one line and exits with status 2 before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsim.cli.common import app, console, fail

world_app = typer.Typer(no_args_is_help=True, help="Worlds fitted to interaction logs.")
app.add_typer(world_app, name="world")


def _columns(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        fail(
            f"--columns takes ours=theirs pairs separated by commas (user=userId,item=movieId), got {text!r}"
        )
    return {k.strip(): v.strip() for k, v in pairs}


@world_app.command("fit")
def fit(
    log: Annotated[Path, typer.Argument(help="The interaction log: Parquet or CSV, or a MovieLens file.")],
    out: Annotated[Path, typer.Option(help="The world folder to write (must not exist).")],
    preset: Annotated[
        str, typer.Option(help="generic, or movielens (the recbole wheel, a RecBole .inter, or u.data).")
    ] = "generic",
    columns: Annotated[
        str | None,
        typer.Option(help="generic: our column names = the file's, e.g. user=userId,item=movieId."),
    ] = None,
    dim: Annotated[int, typer.Option(help="Dimension of the fitted factors.")] = 16,
    epochs: Annotated[int, typer.Option(help="Full-batch Adam steps of each fit.")] = 300,
    satisfied_at: Annotated[float, typer.Option(help="A rating >= this is a satisfied consumption.")] = 4.0,
    click_rate: Annotated[
        float | None, typer.Option(help="Mean true relevance over all pairs [default: the log's density].")
    ] = None,
    activity: Annotated[str, typer.Option(help="A user's activity: interactions or days.")] = "interactions",
    clusters: Annotated[int, typer.Option(help="k-means categories when the log has none.")] = 16,
    holdout: Annotated[
        float, typer.Option(help="Share of each user's latest pairs held out (0: none).")
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the fit, the k-means and the report's simulation.")] = 0,
    report: Annotated[bool, typer.Option(help="Write the fit report (simulates the world).")] = True,
    report_rounds: Annotated[int, typer.Option(help="Rounds of the report's simulation.")] = 50,
) -> None:
    """Fit a world to an interaction log; write it (world.pt, users/items.parquet, card.json) and
    its fit report (report.md, report.json, report.png). Run it with --set world.source=OUT."""
    from recsim.recsys.datasets import LogError, read_log
    from recsim.recsys.worldfit import FitOptions, fit_world, save_world

    if out.exists():
        fail(f"--out {out} exists; choose a new folder")
    if report_rounds < 1:
        fail(f"--report-rounds must be >= 1, got {report_rounds}")
    try:
        options = FitOptions(
            dim=dim,
            epochs=epochs,
            satisfied_at=satisfied_at,
            click_rate=click_rate,
            activity=activity,
            clusters=clusters,
            holdout=holdout,
            seed=seed,
        )
        data = read_log(log, preset, _columns(columns))
        fitted = fit_world(data, options)
    except (LogError, ValueError) as exc:
        fail(str(exc).splitlines()[0])
    save_world(fitted, out)
    card = fitted.card
    console.print(
        f"world: {out} ({card['n_users']} users x {card['n_items']} items, {card['n_interactions']} "
        f"interactions; a={card['affinity_scale']:.2f}, b={card['base_logit']:.2f})",
        highlight=False,
    )
    if report:
        from recsim.core.config import ConfigError
        from recsim.experiments.fitted import fit_report

        try:
            fit_report(out, data, rounds=report_rounds, seed=seed)
        except ConfigError as exc:
            fail(f"the world is in {out}, but its fit report cannot run: {exc}")
        console.print((out / "report.md").read_text(), highlight=False, markup=False)
