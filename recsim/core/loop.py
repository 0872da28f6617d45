"""The domain-agnostic multi-round loop.

Per round, in order (one function, top to bottom: :func:`run_arm`):

    1. act       the learner decides (slates for active users / rollouts for prompts)
    2. feedback  users or labelers respond: the platform's biased observations, and the hidden truth
    3. log       the round is appended to the Parquet log (partition round=R)
    4. fit       the learner retrains on the logs its own decisions produced
    5. measure   cascade metrics against the truth of this round (same names in every domain)
    6. track     the row goes to metrics.parquet, MLflow and the progress display
    7. evolve    the world reacts to what was consumed (interest drift) before the next round

Open loop (``loop.feedback`` "open" or "random", a domain with ``logged``): after 2, the domain's
fixed logger decides for the same users and they respond to it; its decisions, not the learner's,
are logged (3), trained on (4) and consumed (7), while 5 still measures the learner's own
decisions. The learner's decisions then never reach its data: closed - open is the loop's part.

What a domain implements is :class:`recsim.core.domain.Domain`; the run folder around the loop is
written by :mod:`recsim.core.runner`.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import polars as pl

from recsim.core import faults
from recsim.core.domain import DOMAINS, Domain, make_domain
from recsim.core.errors import NonFiniteError, check_finite
from recsim.io.logs import LogStore

__all__ = ["DOMAINS", "STAGES", "Domain", "OnRound", "StageTimes", "make_domain", "metrics_frame", "run_arm"]

OnRound = Callable[[str, int, dict[str, Any]], None]

#: the stages of a round, in order, as :class:`StageTimes` names them (``checkpoint``: ``save``)
STAGES = ("act", "feedback", "log", "fit", "measure", "track", "evolve", "checkpoint")


class StageTimes:
    """Wall seconds of each stage of each round (``recsim bench --profile``): ``rounds[i]`` maps
    ``round`` and every name of :data:`STAGES` to its seconds in that round; ``setup`` is the
    seconds from this timer's creation to the start of the first round it saw.

    ``usage`` maps each stage to what the process spent in it over all rounds, from
    ``getrusage``: ``cpu_user_s`` and ``cpu_sys_s`` (CPU seconds of every thread, so up to the
    thread count times the wall seconds) and ``minor_faults`` (pages the kernel mapped in: memory
    touched for the first time since the allocator got it from the system, zeroed by the kernel
    in system time).
    """

    def __init__(self) -> None:
        self.rounds: list[dict[str, float]] = []
        self.usage: dict[str, dict[str, float]] = {
            s: {"cpu_user_s": 0.0, "cpu_sys_s": 0.0, "minor_faults": 0} for s in STAGES
        }
        self.setup: float | None = None
        self._created = time.perf_counter()

    def start(self, round_: int) -> None:
        if self.setup is None:
            self.setup = time.perf_counter() - self._created
        self.rounds.append({"round": round_, **dict.fromkeys(STAGES, 0.0)})

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.rounds[-1][name] += time.perf_counter() - t0
            after, usage = resource.getrusage(resource.RUSAGE_SELF), self.usage[name]
            usage["cpu_user_s"] += after.ru_utime - before.ru_utime
            usage["cpu_sys_s"] += after.ru_stime - before.ru_stime
            usage["minor_faults"] += after.ru_minflt - before.ru_minflt


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
    timer: StageTimes | None = None,
    before_fit: Callable[[], object] | None = None,
) -> list[dict[str, Any]]:
    """Run one arm up to ``rounds`` rounds; returns its metric rows (``arm``, ``seed`` when given,
    ``domain``, ``round``, then the domain's metrics).

    ``start`` = (first round, state entering it) continues a checkpointed arm; ``on_tables``
    receives each round's domain tables; ``save(r, state)`` checkpoints the state entering r + 1;
    ``timer`` records each stage's wall time; ``before_fit()`` runs before each fit (the background
    checkpoint write of the round before must be done before the learner changes in place; its
    wait counts as ``checkpoint`` time). Act, feedback and log only read the state.
    """
    first, state = start if start is not None else (0, domain.initial_state())
    logged = getattr(domain, "logged", None)
    stage = timer.stage if timer is not None else lambda name: nullcontext()
    rows = []
    for r in range(first, rounds):
        if timer is not None:
            timer.start(r)
        try:
            with stage("act"):
                batch = domain.act(state, r)  # 1
            with stage("feedback"):
                fb = domain.feedback(state, batch, r)  # 2
            with stage("act"):
                opened = logged(state, r) if logged is not None else None  # the fixed logger's
            shown, shown_fb = opened if opened is not None else (batch, fb)
            with stage("log"):
                logs.append(r, arm, domain.log_frame(state, shown, shown_fb))  # 3
            faults.point("fit")
            if before_fit is not None:
                with stage("checkpoint"):
                    before_fit()
            with stage("fit"):
                state = domain.fit(state, logs, arm, r)  # 4
            with stage("measure"):
                extra = {"logged": shown} if opened is not None else {}
                row, state = domain.measure(state, batch, fb, r, **extra)  # 5
            for key in domain.finite_keys:
                if key in row:
                    check_finite(key, row[key])
        except NonFiniteError as exc:
            raise NonFiniteError(f"round {r}, arm '{arm}': {exc}; rounds before {r} are complete") from None
        head = {"arm": arm} if seed is None else {"arm": arm, "seed": seed}
        row = {**head, "domain": domain.name, "round": r, **row}
        with stage("track"):
            if on_tables is not None:
                on_tables(
                    r,
                    {n: t.with_columns(pl.lit(arm).alias("arm")) for n, t in domain.tables(state, r).items()},
                )
            on_round(arm, r, row)  # 6
        rows.append(row)
        with stage("evolve"):
            state = domain.evolve(state, shown, shown_fb, r)  # 7: what the users were shown
        if save is not None:
            with stage("checkpoint"):
                save(r, state)  # the round is complete once its checkpoint is on disk
    return rows


def metrics_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows -> frame with ``arm``, ``domain``, ``round`` first, then metrics in first-seen order."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    frame = pl.DataFrame(rows, schema_overrides={"round": pl.Int32}, infer_schema_length=None)
    return frame.select(list(names))
