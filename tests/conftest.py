"""Shared fixtures: a small world that runs in about a second per arm."""

from __future__ import annotations

import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one thread each
    import torch

    torch.set_num_threads(1)
    # and so do the processes its tests start (the CLI, Ray workers, torchrun): more threads than
    # cores makes torch's small kernels wait on each other, several times slower
    os.environ["OMP_NUM_THREADS"] = "1"

SMALL = [
    "world.n_users=300",
    "world.n_items=200",
    "metrics.panel_users=64",
    "loop.rounds=4",
    "tracking.enabled=false",
]


#: The reward model's fit as it was before early stopping (3 epochs over every pair), for tests
#: whose subject is not the fit: their bounds were set with it, and it costs a few steps, not up
#: to 60 epochs a round. The fit's own tests (test_reward_fit.py) use the defaults.
SHORT_RM_FIT = ["llm.reward_model.epochs=3", "llm.reward_model.heldout_share=0"]


@pytest.fixture
def small() -> list[str]:
    return list(SMALL)
