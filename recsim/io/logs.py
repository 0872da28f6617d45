"""Append-only Parquet logs, one partition per round, written atomically.

Layout: ``<out>/logs/seed=S/round=R/arm-<ARM>.parquet``, one file per (seed, round, arm); a
:class:`LogStore` holds one seed's folder. The seed and round come from the hive path, the arm is
also a column. Under ``--distributed`` each rank writes the rows of its
own users to ``arm-<ARM>.rank-<K>.parquet`` and reads back only those. A partition file is
written to a temporary name in the same folder and moved into place with ``os.replace``, so after
a crash it is complete or absent.

Schema of a recommender log row (one impression):

| column            | type    | meaning                                                     |
|-------------------|---------|-------------------------------------------------------------|
| round             | Int32   | round (from the partition path)                             |
| arm               | String  | arm of the scenario                                         |
| user              | Int64   | user id                                                     |
| item              | Int64   | item id                                                     |
| position          | Int16   | 1-based slot in the slate                                   |
| device            | String  | the user's device                                           |
| score             | Float32 | ranker score at serving time                                |
| propensity        | Float32 | P(policy shows this item at this position)                  |
| examination       | Float32 | true examination probability theta(position, device)        |
| click             | Boolean | observed click                                              |
| satisfaction      | Boolean | observed satisfaction; null where there was no click        |
| true_relevance    | Float32 | true P(click | examined) (hidden from learners)             |
| true_satisfaction | Float32 | true P(satisfied | click) (hidden from learners)            |
| exploration       | Boolean | the slate was a random (exploration) slate                  |

With ``policy.log_candidates: true`` two list columns more, on each slate's position-1 row (null on
the others): ``candidates`` (List(Int64), the slate's candidate set) and ``candidate_relevance``
(List(Float32), their true relevance at the round), for off-policy evaluation.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from recsim.io.atomic import atomic_path

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class LogError(ValueError):
    """A log partition is missing, truncated or unreadable; the message names the file."""


def unreadable(path: Path, exc: BaseException, what: str = "") -> LogError:
    """The one-line error for a damaged Parquet file: its path and the reader's first line."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
    return LogError(f"{what}{path} is unreadable (truncated or not Parquet): {first}")


def safe_name(arm: str) -> str:
    """A file-name-safe form of an arm name."""
    return _SAFE.sub("_", arm)


def write_atomic(frame: pl.DataFrame, path: Path, fault: str | None = None) -> None:
    """Write ``frame`` to ``path`` via a temporary file and ``os.replace`` (complete or absent);
    ``fault`` names the crash-injection point between the two (see :mod:`recsim.core.faults`)."""
    with atomic_path(path, fault) as tmp:
        frame.write_parquet(tmp)


class LogStore:
    """The round-partitioned log of one run directory.

    A partition is read from disk once: :meth:`read` keeps what it read for the next call and
    drops the rounds before the window it was asked for (windows only move forward), so a round's
    fit reads one new partition whatever the window's length. Partitions are immutable once
    written (:meth:`drop_after` forgets what it removes).
    """

    def __init__(self, root: Path, rank: int = 0, world_size: int = 1) -> None:
        self.root = Path(root)
        self.rank, self.world_size = rank, world_size
        self._latest: dict[str, tuple[int, pl.DataFrame]] = {}
        self._read: dict[tuple[str, int], pl.DataFrame] = {}  # (arm, round) -> as read from disk

    def path(self, round_: int, arm: str) -> Path:
        part = f".rank-{self.rank}" if self.world_size > 1 else ""
        return self.root / f"round={round_}" / f"arm-{safe_name(arm)}{part}.parquet"

    def append(self, round_: int, arm: str, frame: pl.DataFrame) -> Path:
        """Write the partition of (round, arm): this rank's users' rows (all rows in one process).
        A log is append-only: an existing partition is an error."""
        path = self.path(round_, arm)
        if path.exists():
            raise FileExistsError(f"log partition {path} already exists; logs are append-only")
        frame = frame.with_columns(pl.lit(arm).alias("arm"))
        self._latest[arm] = (round_, frame)
        if self.world_size > 1:
            frame = frame.filter(pl.col("user") % self.world_size == self.rank)
        write_atomic(frame, path, fault="log-write")
        return path

    def drop_after(self, arm: str, last_round: int) -> list[Path]:
        """Remove ``arm``'s partitions (and temporary files) of rounds after ``last_round``: what
        a run stopped mid-round left; the round is redone on resume."""
        removed = []
        part = f".rank-{self.rank}" if self.world_size > 1 else ""
        name = f"arm-{safe_name(arm)}{part}.parquet"
        for folder in self.root.glob("round=*"):
            try:
                r = int(folder.name.split("=", 1)[1])
            except ValueError:
                continue
            if r <= last_round:
                continue
            self._read.pop((arm, r), None)
            for path in [folder / name, *folder.glob(f".{name}.tmp-*")]:
                if path.exists():
                    path.unlink()
                    removed.append(path)
        return removed

    def latest(self, arm: str, round_: int) -> pl.DataFrame:
        """Every row of (round, arm), all ranks' users, as appended by this process (with ``round``)."""
        cached = self._latest.get(arm)
        if cached is None or cached[0] != round_:
            if self.world_size > 1:
                raise LogError(f"round {round_} of arm '{arm}' was not appended by this process")
            return self.read(arm, round_, round_)
        return cached[1].with_columns(pl.lit(round_, dtype=pl.Int32).alias("round"))

    def read(self, arm: str, first_round: int, last_round: int) -> pl.DataFrame:
        """All impressions of ``arm`` in rounds ``[first_round, last_round]``, in round order."""
        frames = []
        for r in range(first_round, last_round + 1):
            frame = self._read.get((arm, r))
            if frame is None:
                frame = self._read_partition(r, arm)
            frames.append(frame)
        for key in [k for k in self._read if k[0] == arm and not first_round <= k[1] <= last_round]:
            del self._read[key]
        self._read.update(
            {(arm, r): f for r, f in zip(range(first_round, last_round + 1), frames, strict=True)}
        )
        # The newest partition was written by this run a moment ago: every other must match it.
        want = frames[-1].schema
        for r, frame in zip(range(first_round, last_round + 1), frames, strict=True):
            if frame.schema != want:
                diff = sorted(set(frame.schema.items()) ^ set(want.items()), key=str)[:2]
                raise LogError(
                    f"log partition {self.path(r, arm)} does not match the log's schema "
                    f"(differs in {', '.join(f'{k}: {v}' for k, v in diff)}); was it written by another "
                    "version or edited?"
                )
        try:
            return pl.concat(frames)
        except pl.exceptions.PolarsError as exc:
            raise LogError(
                f"log partitions of arm '{arm}' in {self.root} disagree in schema: {exc}"
            ) from None

    def _read_partition(self, round_: int, arm: str) -> pl.DataFrame:
        path = self.path(round_, arm)
        if not path.exists():
            raise LogError(f"missing log partition {path}")
        try:
            frame = pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise LogError(
                f"log partition {path} is unreadable (truncated or not Parquet): {first}"
            ) from None
        return frame.with_columns(pl.lit(round_, dtype=pl.Int32).alias("round"))

    def scan(self) -> pl.LazyFrame:
        """Every partition of every arm as one lazy frame (for analysis)."""
        return scan_logs(self.root)


def scan_logs(root: Path | str) -> pl.LazyFrame:
    """Lazy frame over a run's logs with ``seed`` and ``round`` from the hive path: ``root`` is the
    run's ``logs`` folder (``seed=S/round=R/*.parquet``) or one seed's (``round=R/*.parquet``).
    Every partition's footer is read first, so a damaged one is a :class:`LogError` naming it
    here, not an error from polars when the frame is collected."""
    root = Path(root)
    schema = {"seed": pl.Int64, "round": pl.Int32}
    if any(root.glob("seed=*")):
        pattern = root / "seed=*" / "round=*" / "*.parquet"
    else:
        pattern = root / "round=*" / "*.parquet"
        if not root.name.startswith("seed="):
            schema = {"round": pl.Int32}
    partitions = sorted(root.glob(str(pattern.relative_to(root))))
    if not partitions:
        raise LogError(f"{root} holds no log partitions")
    for path in partitions:
        try:
            pl.read_parquet_schema(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise LogError(
                f"log partition {path} is unreadable (truncated or not Parquet): {first}"
            ) from None
    return pl.scan_parquet(pattern, hive_partitioning=True, hive_schema=schema)
