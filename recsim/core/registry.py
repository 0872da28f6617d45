"""Registries: the extension points of the simulator (domains, rankers, click models, metrics).

A :class:`Registry` maps a name to an entry. An entry is any object, or a lazy ``"module:attr"``
string resolved on first use, so that a registration line costs no import (the command line
stays fast, and the engine can name a domain without importing it).

>>> shapes = Registry("shape")
>>> shapes.register("square", lambda side: side * side)
>>> shapes.get("square")(3)
9
>>> shapes.get("circle")
Traceback (most recent call last):
...
recsim.core.registry.UnknownName: unknown shape 'circle' (known: square)
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from recsim.core.config import ConfigError

T = TypeVar("T")


class UnknownName(ValueError, KeyError):
    """A name no entry is registered under (a ValueError for callers that validate input)."""

    def __str__(self) -> str:
        return str(self.args[0])  # the message as given (KeyError would quote it)


#: Packages of the simulator itself: their registrations need no plugin to reach a worker.
BUILTIN_PACKAGES = ("recsim", "scenarios", "towers")
#: Entry-point group of installed plugins: each entry names a module that registers components.
ENTRY_POINT_GROUP = "recsim.plugins"
_REGISTRIES: list[Registry[Any]] = []


def _caller_module() -> str:
    """The module that called into this one (past ``contextlib``, for :meth:`Registry.temporarily`)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") in (__name__, "contextlib"):
        frame = frame.f_back  # type: ignore[assignment]
    return frame.f_globals.get("__name__", "__main__") if frame is not None else "__main__"


class Registry(Generic[T]):
    """Name -> entry, in registration order (the order is kept: metric columns follow it). Each
    entry remembers the module that registered it (:func:`plugin_modules`)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._origins: dict[str, str] = {}
        _REGISTRIES.append(self)

    def register(self, name: str, entry: T | str, *, replace: bool = False) -> None:
        """Add ``entry`` (or a lazy ``"module:attr"`` path) under ``name``."""
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} '{name}' is registered already")
        self._entries[name] = entry
        self._origins[name] = _caller_module()

    def __call__(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`register`."""

        def deco(entry: T) -> T:
            self.register(name, entry)
            return entry

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register toy components clean up with it)."""
        self._entries.pop(name, None)
        self._origins.pop(name, None)

    def origin(self, name: str) -> str:
        """The module that registered ``name``."""
        return self._origins[name]

    @contextmanager
    def temporarily(self, name: str, entry: T | str) -> Iterator[None]:
        """``entry`` registered under ``name`` inside the ``with`` block only."""
        self.register(name, entry)
        try:
            yield
        finally:
            self.unregister(name)

    def get(self, name: str) -> T:
        """The entry of ``name`` (a lazy path is imported now), or :class:`UnknownName` naming the
        known ones."""
        if name not in self._entries:
            raise UnknownName(f"unknown {self.kind} '{name}' (known: {', '.join(self._entries)})")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def items(self) -> list[tuple[str, Any]]:
        """(name, entry) pairs with lazy entries resolved."""
        return [(name, self.get(name)) for name in self._entries]


def _builtin(module: str) -> bool:
    return module.split(".")[0] in BUILTIN_PACKAGES


def plugin_registrations() -> list[tuple[str, str, str]]:
    """(kind, name, module) of every current entry registered from outside the simulator's own
    packages, in registration order."""
    return [
        (r.kind, name, module)
        for r in _REGISTRIES
        for name, module in r._origins.items()
        if not _builtin(module)
    ]


def plugin_modules() -> list[str]:
    """The modules outside the simulator that registered a current entry (``__main__`` included):
    what a worker process must import to see the same components."""
    return list(dict.fromkeys(module for _, _, module in plugin_registrations()))


class PluginError(ConfigError):
    """A plugin module that cannot be imported; the message is one line (exit status 2)."""


_ENTRY_POINTS_LOADED: list[str] | None = None


def load_plugins(modules: Sequence[str] = (), entry_points: bool = True) -> list[str]:
    """Import ``modules`` (each registers its components when imported; the working directory is
    on the path, as for ``python -m``) and, once per process, every module of the
    ``recsim.plugins`` entry-point group. Returns the modules imported by name."""
    global _ENTRY_POINTS_LOADED
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # inherited by Ray workers with the driver's path
    names = [m.strip() for m in modules if m and m.strip() and m.strip() != "__main__"]
    if entry_points and _ENTRY_POINTS_LOADED is None:
        from importlib.metadata import entry_points as installed

        _ENTRY_POINTS_LOADED = []
        for ep in installed(group=ENTRY_POINT_GROUP):
            _import(ep.value.partition(":")[0], f"entry point {ep.name!r} of {ENTRY_POINT_GROUP}")
            _ENTRY_POINTS_LOADED.append(ep.value)
    for name in names:
        _import(name, "plugin module")
    return names


def _import(module: str, what: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure while importing: one line that names it
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise PluginError(f"{what} {module!r} cannot be imported ({type(exc).__name__}: {first})") from None
