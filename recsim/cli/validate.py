"""``recsim validate``: run the claims registry (:mod:`recsim.validation`) and write its report.
Bad input (an unknown claim, a README without the validation block) exits with status 2 before
anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsim.cli.common import app, console, fail
from recsim.core.config import ConfigError


@app.command()
def validate(
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Each study's first setting at small sizes, 2 seeds: checks the machinery."
        ),
    ] = False,
    only: Annotated[
        str | None, typer.Option(help="Comma-separated claim or study ids (default: every claim).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Report folder; its finished studies are re-used [default: validation, validation-quick]."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Units (arm, seed) run at once on Ray; 0 = one after the other.")
    ] = 0,
    threads: Annotated[int | None, typer.Option(help="Torch threads per unit.")] = None,
    no_tracking: Annotated[
        bool, typer.Option("--no-tracking", help="Do not log the report to MLflow.")
    ] = False,
    tracking_uri: Annotated[str, typer.Option(help="MLflow tracking URI.")] = "sqlite:///mlflow.db",
    readme: Annotated[
        Path | None, typer.Option(help="Rewrite this README's validation table (between its markers).")
    ] = None,
    list_claims: Annotated[bool, typer.Option("--list", help="List the claims and exit.")] = False,
) -> None:
    """Test the simulator against the papers it implements: every claim over a grid of world
    settings and seeds; report.md, report.json and one PNG per claim, logged to MLflow."""
    from recsim.io.tracking import TrackingError
    from recsim.validation.claims import CLAIMS
    from recsim.validation.suite import validate as run_validation

    if list_claims:
        for c in CLAIMS.values():
            console.print(f"{c.id}  [dim]({c.paper}; study {c.study})[/dim]  {c.claim}", highlight=False)
        return
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    folder = out or Path("validation-quick" if quick else "validation")
    try:
        report = run_validation(
            folder,
            only=names,
            quick=quick,
            workers=workers,
            threads=threads,
            tracking_uri=None if no_tracking else tracking_uri,
            readme=readme,
            log=lambda line: console.print(line, highlight=False),
        )
    except (ConfigError, TrackingError) as exc:
        fail(str(exc))
    held = sum(c["held"] == len(c["settings"]) for c in report["claims"])
    console.print(
        f"{len(report['claims'])} claims; {held} hold in every setting; report: {folder / 'report.md'}",
        highlight=False,
    )
