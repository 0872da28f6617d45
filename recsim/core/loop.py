"""The domain-agnostic multi-round loop.

Per round, in order (one function, top to bottom: :func:`run_arm`):

    1. act       the learner decides (slates for active users / rollouts for prompts)
    2. feedback  users or labelers respond: the platform's biased observations, and the hidden truth
    3. log       the round is appended to the Parquet log (partition round=R)
    4. fit       the learner retrains on the logs its own decisions produced
    5. measure   cascade metrics against the truth of this round (same names in every domain)
    6. track     the row goes to metrics.parquet, MLflow and the progress display
    7. evolve    the world reacts to what was consumed (interest drift) before the next round

What a domain implements is :class:`recsim.core.domain.Domain`; the run folder around the loop is
written by :mod:`recsim.core.runner`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from recsim.core import faults
from recsim.core.domain import DOMAINS, Domain, make_domain
from recsim.core.errors import NonFiniteError, check_finite
from recsim.io.logs import LogStore

__all__ = ["DOMAINS", "Domain", "OnRound", "make_domain", "metrics_frame", "run_arm"]

OnRound = Callable[[str, int, dict[str, Any]], None]


def run_arm(
    domain: Domain,
    arm: str,
    rounds: int,
    logs: LogStore,
    on_round: OnRound,
    start: tuple[int, Any] | None = None,
    on_tables: Callable[[int, dict[str, pl.DataFrame]], None] | None = None,
    save: Callable[[int, Any], None] | None = None,
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """Run one arm up to ``rounds`` rounds; returns its metric rows (``arm``, ``seed`` when given,
    ``domain``, ``round``, then the domain's metrics).

    ``start`` = (first round, state entering it) continues a checkpointed arm; ``on_tables``
    receives each round's domain tables; ``save(r, state)`` checkpoints the state entering r + 1.
    """
    first, state = start if start is not None else (0, domain.initial_state())
    rows = []
    for r in range(first, rounds):
        try:
            batch = domain.act(state, r)  # 1
            fb = domain.feedback(state, batch, r)  # 2
            logs.append(r, arm, domain.log_frame(state, batch, fb))  # 3
            faults.point("fit")
            state = domain.fit(state, logs, arm, r)  # 4
            row, state = domain.measure(state, batch, fb, r)  # 5
            for key in domain.finite_keys:
                if key in row:
                    check_finite(key, row[key])
        except NonFiniteError as exc:
            raise NonFiniteError(f"round {r}, arm '{arm}': {exc}; rounds before {r} are complete") from None
        head = {"arm": arm} if seed is None else {"arm": arm, "seed": seed}
        row = {**head, "domain": domain.name, "round": r, **row}
        if on_tables is not None:
            on_tables(
                r, {n: t.with_columns(pl.lit(arm).alias("arm")) for n, t in domain.tables(state, r).items()}
            )
        on_round(arm, r, row)  # 6
        rows.append(row)
        state = domain.evolve(state, batch, fb, r)  # 7
        if save is not None:
            save(r, state)  # the round is complete once its checkpoint is on disk
    return rows


def metrics_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows -> frame with ``arm``, ``domain``, ``round`` first, then metrics in first-seen order."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    frame = pl.DataFrame(rows, schema_overrides={"round": pl.Int32}, infer_schema_length=None)
    return frame.select(list(names))
