"""``recsim bench``: throughput numbers, one JSON object per line ({"name", "value", "unit", ...}).

Timings are wall-clock medians over repeats, on whatever machine runs them; compare ratios
between runs on the same machine rather than absolute values across machines.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _line(name: str, value: float, unit: str, **extra: object) -> str:
    return json.dumps({"name": name, "value": round(value, 4), "unit": unit, **extra})


def bench_behavior(n_users: int, slate_size: int, repeats: int) -> float:
    """Impressions per second of :func:`recsim.behavior.simulate` (PBM) on given slates."""
    from recsim.behavior import examination_curve, simulate

    g = torch.Generator().manual_seed(0)
    theta = examination_curve(torch.tensor([1.2, 0.6]), slate_size)
    device = torch.randint(2, (n_users,), generator=g)
    rel = torch.rand(n_users, slate_size, generator=g)
    sat = torch.rand(n_users, slate_size, generator=g)
    seconds = _median_time(lambda: simulate("pbm", theta, device, rel, sat, g), repeats)
    return n_users * slate_size / seconds


def bench_feedback_loop(rounds: int) -> tuple[float, float, int]:
    """(arm-rounds per second, seconds, arm-rounds) of the default scenario, tracking off."""
    from recsim.loop import run_scenario
    from recsim.scenario import load_scenario

    sc = load_scenario("feedback-loop")
    configs = sc.resolve(["tracking.enabled=false"], rounds=rounds)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_scenario(sc, configs, Path(tmp) / "run")
        seconds = time.perf_counter() - t0
    n = sum(c.loop.rounds for c in configs.values())
    return n / seconds, seconds, n


def run_benchmarks(quick: bool = False) -> Iterator[str]:
    """Yield one JSON line per benchmark."""
    machine = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "quick": quick,
    }
    n_users = 100_000 if quick else 1_000_000
    rate = bench_behavior(n_users, 10, repeats=3 if quick else 5)
    yield _line(
        "behavior_impressions_per_s", rate, "impressions/s", users=n_users, slate=10, model="pbm", **machine
    )
    rounds = 5 if quick else 20
    per_s, seconds, n = bench_feedback_loop(rounds)
    yield _line(
        "feedback_loop_rounds_per_s",
        per_s,
        "arm-rounds/s",
        arm_rounds=n,
        seconds=round(seconds, 2),
        scenario="feedback-loop",
        **machine,
    )
