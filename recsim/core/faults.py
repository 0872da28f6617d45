"""Crash injection for recovery tests: ``RECSIM_FAULT=POINT:N`` kills the process with SIGKILL the
N-th time (1-based) execution reaches the named point, as a power cut or an OOM kill would.

Points: ``log-write`` (a log partition written to its temporary name, not yet moved into place),
``fit`` (a round's log is on disk, the learner is about to train), ``train-step`` (an optimizer
step of the ranker or the LLM policy has just been taken: mid-training), ``metrics`` (the round's
metrics row is on disk, MLflow has not seen it), ``mlflow`` (MLflow has logged the round, its
checkpoint is not written), ``checkpoint-write`` (a checkpoint written to its temporary name).
Unset: no effect.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def point(name: str) -> None:
    """Count a pass through ``name``; die by SIGKILL on the pass that ``RECSIM_FAULT`` names."""
    spec = os.environ.get("RECSIM_FAULT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
