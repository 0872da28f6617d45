"""Units of a study in parallel on Ray Core: a local Ray started on demand, or an existing cluster.

Each unit is one Ray task that runs :func:`recsim.core.units.run_unit` on the run folder (which
every node must see: a local folder for a local Ray, shared storage for a cluster) and returns
its rows and tables. A task asks Ray for ``threads`` CPUs and sets torch to that many threads, so
workers x threads <= cores on every node; at most ``workers`` tasks are in flight. The driver
merges units in the study's order whatever order they finish in, so the result does not depend
on the number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsim.core.units import Unit, UnitResult, run_unit


class ParallelError(RuntimeError):
    """Ray could not be started or reached, or a unit failed there; the message is one line."""


def threads_per_unit(workers: int, threads: int | None) -> int:
    """The torch threads of each parallel unit: ``threads``, else the cores shared among workers."""
    return threads if threads is not None else max(1, (os.cpu_count() or 1) // max(workers, 1))


def _task(unit: Unit, out: str, resume: bool, threads: int) -> UnitResult:
    os.environ.setdefault("MKL_DYNAMIC", "FALSE")
    return run_unit(unit, Path(out), resume=resume, threads=threads)


def run_on_ray(
    units: list[Unit], out: Path, resume: bool, study: Any, on_done: Callable[[Unit, UnitResult], None]
) -> None:
    """Run ``units`` as Ray tasks, at most ``study.workers`` at once; ``on_done(unit, result)``
    is called in the driver as each finishes."""
    import ray

    threads = threads_per_unit(study.workers, study.threads)
    _init(ray, study.ray_address, study.workers * threads)
    task = ray.remote(num_cpus=threads, max_retries=0)(_task)
    queue = list(units)
    running: dict[Any, Unit] = {}
    try:
        while queue or running:
            while queue and len(running) < study.workers:
                unit = queue.pop(0)
                running[task.remote(unit, str(out.resolve()), resume, threads)] = unit
            done, _ = ray.wait(list(running), num_returns=1)
            unit = running.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as exc:  # the task raised, or its worker died
                cause = getattr(exc, "cause", None) or exc
                first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
                raise ParallelError(
                    f"unit {unit.key} failed on Ray ({type(cause).__name__}): {first}"
                ) from None
            on_done(unit, result)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)


#: Seconds to wait for a Ray head's port before refusing ``--ray-address`` (``RECSIM_RAY_TIMEOUT``).
RAY_CONNECT_TIMEOUT = 30.0


def check_ray_address(address: str, timeout: float | None = None) -> None:
    """Refuse, within ``timeout`` seconds (default ``RECSIM_RAY_TIMEOUT`` or 30), an address
    ("HOST:PORT" or "ray://HOST:PORT") where nothing accepts a connection, before a study writes
    anything: a ConfigError in one line. ("auto" and other forms are left to Ray.)"""
    import socket

    from recsim.core.config import ConfigError

    if timeout is None:
        timeout = float(os.environ.get("RECSIM_RAY_TIMEOUT", RAY_CONNECT_TIMEOUT))
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        if target == "auto":
            return
        raise ConfigError(f"--ray-address expects HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = (
            f"no answer within {timeout:g} s"
            if isinstance(exc, TimeoutError)
            else (exc.strerror or type(exc).__name__).lower()
        )
        raise ConfigError(
            f"--ray-address {address}: no Ray head answers there ({reason}); "
            "start one with `ray start --head` or drop --ray-address"
        ) from None


def _init(ray: Any, address: str | None, cpus: int) -> None:
    """Join the cluster at ``address``, or start a local Ray with ``cpus`` CPUs (no dashboard)."""
    if ray.is_initialized():
        return
    import logging

    env = {"env_vars": {"MKL_DYNAMIC": "FALSE"}}
    try:
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(
                num_cpus=cpus,
                include_dashboard=False,
                runtime_env=env,
                log_to_driver=False,
                logging_level=logging.WARNING,
                _node_ip_address="127.0.0.1",
            )
    except Exception as exc:  # ConnectionError, RuntimeError, ...: one line that names the address
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ParallelError(f"cannot start or reach {where}: {first}") from None
