"""What units of one study share: a result that is a pure function of its key, computed once.

Arms of one seed often need the same expensive, deterministic set-up (the LLM domain's supervised
base policy, and its reward model's first fit on that policy's pairs). :class:`SharedCache`
computes it once per key and hands every later asker a copy:

- in this process, from a small least-recently-used table (units run arms outer, seeds inner);
- with a folder (a run's ``cache/``), across processes too: one file per key,
  ``NAME-<sha256 of the key>.pt``, written under an exclusive lock on ``NAME-<hash>.lock`` (the
  first worker computes, the others wait and read) to a temporary name and moved into place, so a
  file is complete or absent. A file that cannot be read is computed again and replaced.

The key must hold everything the result depends on (the settings, the seed, torch's thread count
where float sums depend on it); its ``repr`` is hashed, so it is built of plain values, frozen
dataclasses and :func:`content_digest` of the data a result is computed from.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl
import torch

from recsim.io.atomic import atomic_path

#: Entries kept in each process (~0.5 MB per base policy).
MEMORY_ENTRIES = 16
_MEMORY: OrderedDict[str, dict[str, Any]] = OrderedDict()


def key_hash(key: Any) -> str:
    """First 16 hex digits of the SHA-256 of ``repr(key)``."""
    return hashlib.sha256(repr(key).encode()).hexdigest()[:16]


def content_digest(value: pl.DataFrame | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a frame's schema and rows, or of a ``state_dict``'s names, dtypes, shapes and
    bytes: a key part for a result computed from that data."""
    h = hashlib.sha256()
    if isinstance(value, pl.DataFrame):
        h.update(repr(value.schema).encode())
        h.update(value.hash_rows(seed=0).to_numpy().tobytes())
        return h.hexdigest()
    for name, t in value.items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class SharedCache:
    """Tensors (a ``state_dict``-like mapping) by key, in memory and, with ``root``, on disk."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else None
        #: Keys this object computed (not found in memory or on disk), for tests and logs.
        self.computed: list[str] = []

    def path(self, name: str, key: Any) -> Path | None:
        return self.root / f"{name}-{key_hash(key)}.pt" if self.root is not None else None

    def get(
        self, name: str, key: Any, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """The tensors of (``name``, ``key``): from memory, else the folder, else ``compute()``
        (then kept in both). Callers get the shared tensors: copy before changing them in place."""
        tag = f"{name}-{key_hash(key)}"
        if tag in _MEMORY:
            _MEMORY.move_to_end(tag)
            return _MEMORY[tag]
        value = self._from_disk(name, key, compute) if self.root is not None else None
        if value is None:
            value = compute()
            self.computed.append(tag)
        _MEMORY[tag] = value
        while len(_MEMORY) > MEMORY_ENTRIES:
            _MEMORY.popitem(last=False)
        return value

    def _from_disk(
        self, name: str, key: Any, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        path = self.path(name, key)
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if path.is_file():
                try:
                    return torch.load(path, map_location="cpu", weights_only=True)
                except Exception:  # noqa: BLE001 - unreadable (cut short elsewhere): compute again
                    pass
            value = compute()
            self.computed.append(f"{name}-{key_hash(key)}")
            with atomic_path(path) as tmp:
                torch.save(value, tmp)
            return value


def clear_memory() -> None:
    """Forget this process's entries (as a fresh worker would start)."""
    _MEMORY.clear()
