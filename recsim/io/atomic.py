"""Every file a run writes is written whole or not at all, and a write that fails says which file.

:func:`atomic_path` gives a temporary name beside the target; once the writer is done the file is
fsynced and moved into place with ``os.replace``, so after a crash, a full disk or a file-size
limit the target is its old self or absent, never a prefix. Any failure while writing (``OSError``
from a full disk or a size limit, or the ``RuntimeError`` that torch's zip writer turns it into) is
a :class:`WriteError` naming the target; the temporary file is removed.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recsim.core import faults


class WriteError(OSError):
    """A file could not be written (disk full, file-size limit, I/O error); the message names it."""

    def __str__(self) -> str:
        return str(self.strerror)


def _reason(exc: BaseException, tmp: Path) -> str:
    """Why a write failed, in words: from the OSError, or (torch's writer reports a failed write
    as a RuntimeError) from the file-size limit and the free space."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "file too large (a file-size limit)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and tmp.exists() and tmp.stat().st_size >= limit:
            return "file too large (a file-size limit)"
        free = os.statvfs(tmp.parent)
        if free.f_bavail * free.f_frsize < 1 << 20:
            return "no space left on the device"
    except (ImportError, OSError):
        pass
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]


@contextmanager
def atomic_path(path: Path, fault: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; then fsync it and move it into place.
    ``fault`` names the crash-injection point between the two (:mod:`recsim.core.faults`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        except (OSError, RuntimeError) as exc:
            if isinstance(exc, WriteError):
                raise
            code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
            raise WriteError(code, f"cannot write {path}: {_reason(exc, tmp)}") from None
        if fault is not None:
            faults.point(fault)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_with(path: Path, write: Callable[[Path], Any], fault: str | None = None) -> Path:
    """``write(tmp)`` under :func:`atomic_path`; returns ``path``."""
    with atomic_path(path, fault) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    """``text`` at ``path``, atomically."""
    return write_with(path, lambda p: p.write_text(text))


def write_json(data: Any, path: Path) -> Path:
    """``data`` as indented JSON (no NaN) at ``path``, atomically."""
    return write_text(path, json.dumps(data, indent=2, allow_nan=False, default=str))
