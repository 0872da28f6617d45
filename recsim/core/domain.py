"""The Domain protocol: what a domain implements to run on the loop, and the registry of domains.

A domain is found by the arm's ``domain`` field in :data:`DOMAINS` (lazy ``"module:Class"``
entries, so the engine names no domain module); its class is built as
``Class(config, dist, cache)``: ``cache`` (a :class:`recsim.io.cache.SharedCache` on the run's
``cache/`` folder, or None) holds set-ups that arms of one seed share and compute once.
Besides the numbered steps, a domain tells the engine what it adds to a run: the per-round tables
it writes beside ``metrics.parquet`` (:attr:`Domain.table_names`), the figures drawn from them
(:meth:`Domain.figures`), the losses that must be finite (:attr:`Domain.finite_keys`), and the
tags of its arms in MLflow (:meth:`Domain.tags`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

import polars as pl

from recsim.core.registry import Registry
from recsim.io.logs import LogStore


class Domain(Protocol):
    """One arm of a domain on the loop (see :class:`recsim.recsys.domain.RecsysDomain` and
    :class:`recsim.llm.domain.LlmDomain`). State is explicit: each step takes the round's state
    and returns new records or a new state."""

    name: ClassVar[str]
    table_names: ClassVar[tuple[str, ...]]
    finite_keys: ClassVar[tuple[str, ...]]

    def initial_state(self) -> Any:
        """The state entering round 0 (the world, the untrained or base learner)."""
        ...

    def act(self, state: Any, round_: int) -> Any:
        """1. The learner decides: slates for the round's users / rollouts for its prompts.

        Steps 1-3 read ``state`` and never change it in place: the checkpoint of the round before
        is being written meanwhile (the loop waits for it before ``fit``)."""
        ...

    def feedback(self, state: Any, batch: Any, round_: int) -> Any:
        """2. What the platform observes (biased) and the hidden truth beside it."""
        ...

    def log_frame(self, state: Any, batch: Any, fb: Any) -> pl.DataFrame:
        """3. The round as rows of the Parquet log (the learner's training data)."""
        ...

    def fit(self, state: Any, logs: LogStore, arm: str, round_: int) -> Any:
        """4. Retrain the learner on the logs its own decisions produced; returns the new state."""
        ...

    def measure(self, state: Any, batch: Any, fb: Any, round_: int) -> tuple[dict[str, float], Any]:
        """5. Metrics of the round against the truth (shared names mean one thing in every domain).

        A domain with an open loop also has ``logged(state, round_) -> (batch, fb) | None``: the
        fixed logger's decisions and their feedback when ``loop.feedback`` is not "closed" (None
        when it is); the loop then logs, fits on and evolves with those, and passes them to
        ``measure`` as ``logged=``, which still measures the learner's ``batch``."""
        ...

    def evolve(self, state: Any, batch: Any, fb: Any, round_: int) -> Any:
        """7. The world's reaction before the next round (e.g. interest drift)."""
        ...

    def tables(self, state: Any, round_: int) -> dict[str, pl.DataFrame]:
        """Per-round tables (names among :attr:`table_names`) appended beside the metrics."""
        ...

    @classmethod
    def tags(cls, config: Any) -> dict[str, str]:
        """MLflow tags of an arm with ``config`` beyond scenario and arm name: mitigation, bias, ..."""
        ...

    def checkpoint(self, state: Any) -> dict[str, Any]:
        """What changes between rounds, as tensors and plain values (the state entering r + 1)."""
        ...

    def restore(self, payload: dict[str, Any]) -> Any:
        """The state a :meth:`checkpoint` payload describes."""
        ...

    @classmethod
    def memory_bytes(cls, config: Any) -> int:
        """A lower bound of the memory one arm with ``config`` holds at once (checked before a run
        writes anything)."""
        ...

    @classmethod
    def figures(cls, tables: dict[str, pl.DataFrame], out: Path) -> list[Path]:
        """Figures drawn at the end of a run from its tables; returns their paths."""
        ...


#: domain name -> its class (``"module:Class"`` until first use).
DOMAINS: Registry[type] = Registry("domain")


def domain_class(name: str) -> Any:
    """The class registered for ``name`` (a ValueError naming the known domains)."""
    return DOMAINS.get(name)


def make_domain(config: Any, dist: Any = None, cache: Any = None) -> Domain:
    """The domain of ``config.domain`` for one arm (``dist``: this process's rank, or None;
    ``cache``: the study's :class:`recsim.io.cache.SharedCache`, or None)."""
    return domain_class(config.domain)(config, dist, cache)
