"""Output folders: checked before a run writes anything, so an unusable path is one line, not a
traceback after the first round."""

from __future__ import annotations

import os
from pathlib import Path

from recsim.core.config import ConfigError

#: Room the run's own files need below its folder (``logs/seed=S/round=R/arm-A.ckpt.pt``, ...).
_ROOM = 200


def check_output_folder(out: Path | str, flag: str = "--out") -> Path:
    """``out`` if a run can write there: a new or empty folder under a writable one. Raises
    :class:`ConfigError` (one line) for a path that exists and is not an empty folder, one that goes
    through a file, a name longer than the file system allows, or a parent the process may not
    write to. Creates nothing."""
    out = Path(out)
    absolute = out.absolute()
    limit = 255  # NAME_MAX on Linux and macOS file systems
    for part in absolute.parts:
        if len(os.fsencode(part)) > limit:
            raise ConfigError(f"{flag} {out}: the name {part[:40]}... is longer than {limit} bytes")
    if len(os.fsencode(str(absolute))) > 4095 - _ROOM:  # PATH_MAX, less the run's own files
        raise ConfigError(f"{flag} {out}: the path is too long for the run's files")
    try:
        if out.exists():
            if not out.is_dir():
                raise ConfigError(f"{flag} {out} exists and is not a folder; choose a new {flag}")
            if any(out.iterdir()):
                raise ConfigError(f"output folder {out} exists and is not empty; choose a new {flag}")
        base = absolute
        while not base.exists():  # the nearest part of the path that exists
            base = base.parent
    except OSError as exc:
        raise ConfigError(f"{flag} {out}: {exc.strerror or exc}") from None
    if not base.is_dir():
        raise ConfigError(f"{flag} {out} goes through {base}, which is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {out}: cannot write to {base} (permission denied)")
    return out
