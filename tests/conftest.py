"""Shared fixtures: a small world that runs in about a second per arm."""

from __future__ import annotations

import pytest

SMALL = [
    "world.n_users=300",
    "world.n_items=200",
    "metrics.panel_users=64",
    "loop.rounds=4",
    "tracking.enabled=false",
]


@pytest.fixture
def small() -> list[str]:
    return list(SMALL)
