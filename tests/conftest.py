"""Shared fixtures: a small world that runs in about a second per arm."""

from __future__ import annotations

import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one thread each
    import torch

    torch.set_num_threads(1)

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
