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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(ValueError, KeyError):
    """A name no entry is registered under (a ValueError for callers that validate input)."""

    def __str__(self) -> str:
        return str(self.args[0])  # the message as given (KeyError would quote it)


class Registry(Generic[T]):
    """Name -> entry, in registration order (the order is kept: metric columns follow it)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, entry: T | str, *, replace: bool = False) -> None:
        """Add ``entry`` (or a lazy ``"module:attr"`` path) under ``name``."""
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} '{name}' is registered already")
        self._entries[name] = entry

    def __call__(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`register`."""

        def deco(entry: T) -> T:
            self.register(name, entry)
            return entry

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register toy components clean up with it)."""
        self._entries.pop(name, None)

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
