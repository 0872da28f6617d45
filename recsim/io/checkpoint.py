"""Durable per-round checkpoints, written atomically beside the round's log partition.

``logs/round=R/arm-<ARM>.ckpt.pt`` holds the state an arm enters round R + 1 with: learner
weights and optimizer states, the world's changing part, the learner's fitted features, plus
``format``, ``arm``, ``round``, ``domain`` and ``config`` (the arm's resolved config) to check
it against. Random streams need no saving: every draw's generator derives from (seed, round,
stream). Files are written to a temporary name, fsynced and moved into place, so a checkpoint
is complete or absent; they are read with ``torch.load(weights_only=True)`` (tensors, numbers,
strings, lists and dicts only, never arbitrary objects). The newest ``loop.keep_checkpoints``
of each arm are kept.

:class:`CheckpointWriter` takes the write off the round's critical path: the state entering round
R + 1 is serialized, fsynced and moved into place on a background thread while round R + 1 acts,
observes and logs, which only read it; the loop waits for the write before it fits (the first
step that changes the learner in place), so the file holds exactly the state of its round and no
copy of it is made. One write is in flight at a time, in round order; a process that dies
mid-write leaves the previous checkpoint, from which ``--resume`` redoes the rounds after it,
exactly as when it dies before a synchronous write.
"""

from __future__ import annotations

import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from recsim.io.atomic import atomic_path
from recsim.io.logs import safe_name

FORMAT = 1
_ROUND = re.compile(r"round=(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, unreadable or does not match the run; names the file."""


class CheckpointStore:
    """The checkpoints of one run directory (``root`` is its ``logs/`` folder)."""

    def __init__(self, root: Path, keep: int = 1) -> None:
        self.root = Path(root)
        self.keep = keep

    def path(self, round_: int, arm: str) -> Path:
        return self.root / f"round={round_}" / f"arm-{safe_name(arm)}.ckpt.pt"

    def rounds(self, arm: str) -> list[int]:
        """Rounds of ``arm`` with a checkpoint on disk, ascending."""
        if not self.root.is_dir():
            return []
        name = f"arm-{safe_name(arm)}.ckpt.pt"
        found = []
        for folder in self.root.iterdir():
            m = _ROUND.search(folder.name)
            if m and (folder / name).is_file():
                found.append(int(m.group(1)))
        return sorted(found)

    def save(self, round_: int, arm: str, payload: dict[str, Any]) -> Path:
        path = self.path(round_, arm)
        with atomic_path(path, "checkpoint-write") as tmp:
            torch.save({"format": FORMAT, "arm": arm, "round": round_, **payload}, tmp)
        for old in self.rounds(arm)[: -self.keep]:
            self.path(old, arm).unlink(missing_ok=True)
        return path

    def load(self, round_: int, arm: str, domain: str, config: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint of (round, arm), checked against the arm's domain and resolved config."""
        path = self.path(round_, arm)
        if not path.is_file():
            raise CheckpointError(f"missing checkpoint {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, foreign pickle, disallowed global: all unreadable
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(
                f"checkpoint {path} is unreadable (truncated or not ours): {first[:160]}"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {path} has an unknown format (expected format {FORMAT})")
        for key, want in (("arm", arm), ("round", round_), ("domain", domain)):
            if payload.get(key) != want:
                raise CheckpointError(
                    f"checkpoint {path} is for {key}={payload.get(key)!r}, expected {want!r}"
                )
        if payload.get("config") != config:
            raise CheckpointError(f"checkpoint {path} was written under another config of arm '{arm}'")
        return payload


class CheckpointWriter:
    """:meth:`CheckpointStore.save` on a background thread, one write in flight at a time.

    ``submit`` waits for the previous write and starts the next; the payload's tensors are written
    as they are when the thread reaches them, so nothing may change them in place until ``wait``
    has returned (the loop calls it before ``fit``). ``wait`` raises what the write raised. Use as
    a context manager: leaving it waits (an exception already on its way is not masked).
    """

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future[Path] | None = None

    def submit(self, round_: int, arm: str, payload: dict[str, Any]) -> None:
        self.wait()
        self._pending = self._pool.submit(self.store.save, round_, arm, payload)

    def wait(self) -> Path | None:
        pending, self._pending = self._pending, None
        return pending.result() if pending is not None else None

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        try:
            if kind is None:
                self.wait()
            elif self._pending is not None:
                self._pending.exception()  # let it finish (or fail) before the folder is touched
        finally:
            self._pool.shutdown(wait=True)
