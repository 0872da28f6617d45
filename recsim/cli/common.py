"""What every command shares: the typer app, the consoles, the one-line failure, the tables."""

from __future__ import annotations

import math
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

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


def fmt(value: Any) -> str:
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
        table.add_row(m, *(fmt(values.get(m)) for values in final.values()))
    return table
