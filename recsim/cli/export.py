"""``recsim export obp``: a run's logs as Open Bandit Pipeline bandit feedback
(:mod:`recsim.experiments.obp`).

Bad input (not a run folder, an unknown arm, seed or round, an output that exists) prints one line
and exits with status 2 before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsim.cli.common import app, console, err_console, fail

export_app = typer.Typer(no_args_is_help=True, help="Write a run's logs in other tools' layouts.")
app.add_typer(export_app, name="export")


@export_app.command("obp")
def obp(
    run: Annotated[Path, typer.Argument(help="The run folder (written by recsim run).")],
    arm: Annotated[str, typer.Option(help="The arm whose logs to export.")],
    out: Annotated[Path, typer.Option(help="The .npz to write (its schema card beside it).")],
    seed: Annotated[int | None, typer.Option(help="The seed [default: the run's first].")] = None,
    round_: Annotated[int | None, typer.Option("--round", help="One round [default: every round].")] = None,
) -> None:
    """Write ARM's logged impressions in the Open Bandit Pipeline's bandit-feedback layout, with the
    simulator's truth (expected rewards) and each round's logging policy, plus a schema card."""
    from recsim.core.config import ConfigError
    from recsim.experiments.obp import export_obp
    from recsim.io.logs import LogError

    try:
        card = export_obp(run, arm, out, seed, round_)
    except ConfigError as exc:
        fail(str(exc))
    except LogError as exc:  # a damaged run folder: status 1, the file named
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(
        f"{out}: {len(card['rounds'])} round(s) of arm '{arm}', seed {card['seed']}; "
        f"keys {', '.join(card['keys'])}",
        highlight=False,
    )
    for note in card["notes"]:
        console.print(f"note: {note}", highlight=False)
