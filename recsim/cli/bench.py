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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

RM_BUDGETS = ((1, 1), (8, 4))  # the ordinary reward model and llm-reasoning-rm's largest budget


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
    """Impressions per second of :func:`recsim.recsys.behavior.simulate` (PBM) on given slates."""
    from recsim.recsys.behavior import examination_curve, simulate

    g = torch.Generator().manual_seed(0)
    theta = examination_curve(torch.tensor([1.2, 0.6]), slate_size)
    device = torch.randint(2, (n_users,), generator=g)
    rel = torch.rand(n_users, slate_size, generator=g)
    sat = torch.rand(n_users, slate_size, generator=g)
    seconds = _median_time(lambda: simulate("pbm", theta, device, rel, sat, g), repeats)
    return n_users * slate_size / seconds


def bench_feedback_loop(rounds: int) -> tuple[float, float, int]:
    """(arm-rounds per second, seconds, arm-rounds) of the default scenario, tracking off."""
    from recsim.core.runner import run_scenario
    from recsim.scenario import load_scenario

    sc = load_scenario("feedback-loop")
    configs = sc.resolve(["tracking.enabled=false"], rounds=rounds)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_scenario(sc, configs, Path(tmp) / "run")
        seconds = time.perf_counter() - t0
    n = sum(c.loop.rounds for c in configs.values())
    return n / seconds, seconds, n


def bench_gemm_peak(n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 GEMM throughput (GFLOP/s): an n x n by n x n product, 2 n^3 FLOPs."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    return 2 * n**3 / _median_time(lambda: a @ b, repeats) / 1e9


def synthetic_rows(
    world: Any, n: int, history_len: int, gen: torch.Generator, click_rate: float = 0.2, slate_size: int = 10
) -> Any:
    """``n`` random impressions of ``world`` as a :class:`~recsim.recsys.rankers.multitask_loss.TrainBatch`
    (history [n, L] of random items, no IPS or sample weights); satisfied = clicked with probability 1/2."""
    from recsim.recsys.rankers.multitask_loss import TrainBatch

    users = torch.randint(world.n_users, (n,), generator=gen)
    items = torch.randint(world.n_items_total, (n,), generator=gen)
    positions = torch.randint(1, slate_size + 1, (n,), generator=gen)
    devices = world.user_device[users]
    clicks = (torch.rand(n, generator=gen) < click_rate).float()
    satisfied = (torch.rand(n, generator=gen) < 0.5).float() * clicks
    history = torch.randint(-1, world.n_items_total, (n, history_len), generator=gen)
    cells = 1 + devices * slate_size + positions - 1
    dense = torch.rand(n, 2, generator=gen)
    return TrainBatch(
        users=users,
        devices=devices,
        history=history,
        items=items,
        category=world.item_category[items],
        dense=dense,
        cells=cells,
        positions=positions,
        clicks=clicks,
        satisfied=satisfied,
    )


def bench_mmoe(n_examples: int) -> dict[str, float]:
    """Training and scoring throughput of the default MMoE ranker of the feedback-loop world.

    Training: ``MultiTaskRanker._train`` (KJT building, embedding bags, MMoE, Adam) on
    ``n_examples`` impressions, one epoch at the default batch size. FLOPs are counted from the
    dense layers' shapes: 2 x multiply-accumulates forward, twice that backward (6 x MACs per
    example); embedding lookups count none. Scoring: 1,000 users x 1,000 candidates.
    """
    from recsim.config import validate
    from recsim.recsys.rankers.multitask import MultiTaskRanker
    from recsim.recsys.world import World
    from towers.ranking import TrainStreams

    config = validate({"ranker": {"name": "mmoe", "epochs": 1}})
    world = World.create(config)
    ranker = MultiTaskRanker(config, world)
    g = torch.Generator().manual_seed(0)
    n = n_examples
    data = synthetic_rows(world, n, config.ranker.history_len, g)
    ranker._train(data, TrainStreams.seeded(1))  # warm-up
    seconds = _median_time(lambda: ranker._train(data, TrainStreams.seeded(1)), 3)
    flops = 6 * ranker.model_.dense_macs_per_example() * n
    score_users = torch.arange(1000)
    cands = torch.randint(world.n_items_total, (1000, 1000), generator=g)
    score_s = _median_time(lambda: ranker.score(world, score_users, cands, 1), 3)
    bf16 = MultiTaskRanker(validate({"ranker": {"name": "mmoe", "serve_bf16": True}}), world)
    bf16.model_.load_state_dict(ranker.model_.state_dict())
    score_bf16_s = _median_time(lambda: bf16.score(world, score_users, cands, 1), 3)
    return {
        "examples_per_s": n / seconds,
        "gflops": flops / seconds / 1e9,
        "batch": config.ranker.batch,
        "score_s": score_s,
        # per pair only the network above the shared layer runs (its user and item halves are
        # computed once per user and once per item)
        "score_gflops": 2 * ranker.model_.net.macs_per_example(ranker.spec.hidden) * 1e6 / score_s / 1e9,
        "score_bf16_s": score_bf16_s,
    }


def bench_llm(n_prompts: int, steps: int, kind: str = "chain") -> dict[str, float]:
    """LLM-reward domain, task ``kind``: sampled tokens per second (all prompts x group at once)
    and GRPO steps per second (sampling, reward-model scoring, policy and reference passes, Adam)
    at the default sizes (64 prompts x 8 samples per step)."""
    from recsim.config import validate
    from recsim.llm.domain import LlmDomain

    llm = {"policy_steps": steps, "sft_steps": 20, "task": {"kind": kind}}
    domain = LlmDomain(validate({"domain": "llm", "llm": llm}))
    state = domain.initial_state()
    prompts = domain.pool.take(torch.arange(n_prompts))
    g = torch.Generator().manual_seed(0)
    group = domain.cfg.optimization.group_size
    seconds = _median_time(lambda: domain.sample(state.policy, prompts, group, g), 3)
    rollouts = domain.sample(state.policy, prompts, group, g)
    tokens = float((rollouts.tokens != domain.fmt.eos).sum() + len(rollouts.prompt))  # EOS counted once
    grpo_s = _median_time(lambda: domain._optimize_policy(state, 0), 3)
    return {
        "tokens_per_s": tokens / seconds,
        "grpo_steps_per_s": steps / grpo_s,
        "sequences": n_prompts * group,
    }


def bench_rm_judgments(n: int, budgets: tuple[tuple[int, int], ...]) -> dict[tuple[int, int], float]:
    """Reward-model judgments (responses scored) per second at each (passes, votes) budget, ``n``
    responses of the default task per call, under inference mode."""
    from recsim.config import validate
    from recsim.llm.domain import LlmDomain
    from towers.reward_model import RewardModel

    domain = LlmDomain(validate({"domain": "llm", "llm": {"sft_steps": 20}}))
    fmt, hidden = domain.fmt, domain.cfg.policy.hidden
    prompts = domain.pool.take(torch.arange(n) % len(domain.pool))
    r = domain.sample(domain.reference, prompts, 1, torch.Generator().manual_seed(0))
    out = {}
    for m, k in budgets:
        rm = RewardModel(fmt.prompt_vocab, fmt.vocab, hidden, torch.Generator().manual_seed(0), m, k).eval()
        out[(m, k)] = n / _median_time(lambda rm=rm: domain.score(rm, r), 3)
    return out


def bench_scale(quick: bool) -> dict[str, float]:
    """The ``scale`` scenario (``--quick``: its quick preset) run as ``recsim run`` in a child
    process, tracking off: wall seconds, rounds and impressions per second, and the child's peak
    resident memory (``getrusage(RUSAGE_CHILDREN).ru_maxrss``, the largest child so far)."""
    import resource

    from recsim.scenario import load_scenario

    sc = load_scenario("scale")
    overrides = list(sc.quick) if quick else []
    config = next(iter(sc.resolve(overrides).values()))
    seconds = time_recsim_run("scale", tuple(a for o in overrides for a in ("--set", o)))
    rounds = config.loop.rounds
    impressions = rounds * (config.loop.active_users or config.world.n_users) * config.policy.slate_size
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6  # kB on Linux
    return {
        "seconds": seconds,
        "rounds_per_s": rounds / seconds,
        "impressions_per_s": impressions / seconds,
        "peak_rss_gb": peak_gb,
        "users": config.world.n_users,
        "items": config.world.n_items,
        "active": config.loop.active_users,
        "rounds": rounds,
    }


def train_throughput(n_rows: int, n_users: int, n_items: int) -> dict[str, float]:
    """MMoE (shallow tower, sparse tables) training examples per second on ``n_rows`` synthetic
    impressions, one epoch; sharded with TorchRec DMP when launched under torchrun (each rank
    trains on its own ``n_rows / N``, the global batch is the same)."""
    from recsim.config import validate
    from recsim.recsys.rankers.multitask import MultiTaskRanker
    from recsim.recsys.world import World
    from towers.ranking import TrainStreams

    ctx = None
    if "WORLD_SIZE" in os.environ:
        from recsim.recsys.distributed import init

        ctx = init("cpu", os.environ.get("RECSIM_SHARDING", "table_wise"))
    config = validate(
        {
            "world": {"n_users": n_users, "n_items": n_items, "n_clusters": 64},
            "ranker": {"name": "mmoe", "position": "shallow_tower", "sparse_embeddings": True, "epochs": 1},
        }
    )
    world = World.create(config)
    ranker = MultiTaskRanker(config, world, ctx)
    ws, rank = (1, 0) if ctx is None else (ctx.world_size, ctx.rank)
    n = n_rows // ws
    data = synthetic_rows(world, n, config.ranker.history_len, torch.Generator().manual_seed(rank))
    ranker._train(data, TrainStreams.seeded(1))  # warm-up (and the DMP build)
    t0 = time.perf_counter()
    ranker._train(data, TrainStreams.seeded(2))
    seconds = time.perf_counter() - t0
    return {"examples_per_s": n * ws / seconds, "ranks": ws, "rank": rank}


def bench_sharded_training(quick: bool) -> dict[str, float]:
    """2-process sharded (torchrun, gloo, table-wise) vs single-process training throughput."""
    import subprocess
    import sys

    size = ["131072", "100000", "10000"] if quick else ["524288", "1000000", "100000"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}

    def run(cmd: list[str]) -> dict[str, float]:
        res = subprocess.run(cmd + size, check=True, capture_output=True, text=True, env=env)
        return json.loads([line for line in res.stdout.splitlines() if line.startswith("{")][0])

    single = run([sys.executable, "-m", "recsim.cli.bench"])
    dist = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    sharded = run([*dist, "-m", "recsim.cli.bench"])
    return {
        "single": single["examples_per_s"],
        "sharded": sharded["examples_per_s"],
        "rows": int(size[0]),
        "users": int(size[1]),
    }


def bench_study(quick: bool) -> dict[str, float]:
    """Study throughput: units (arm, seed) of a small ``exploration`` study per second, one after
    the other here vs on a local Ray with one worker per core (one torch thread per unit in both,
    so the two write the same bytes); Ray's start-up is included."""
    from recsim.core.runner import Study, run_scenario
    from recsim.scenario import load_scenario

    sc = load_scenario("exploration")
    users, items, rounds = (400, 200, 3) if quick else (1000, 500, 8)
    size = [f"world.n_users={users}", f"world.n_items={items}", f"loop.rounds={rounds}"]
    configs = sc.resolve([*size, "metrics.panel_users=32", "tracking.enabled=false"])
    seeds = tuple(range(2 if quick else 4))
    cores = os.cpu_count() or 1
    seconds = {}
    for workers in (0, cores):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            run_scenario(sc, configs, Path(tmp) / "run", study=Study(seeds=seeds, threads=1, workers=workers))
            seconds[workers] = time.perf_counter() - t0
    units = len(configs) * len(seeds)
    return {"units": units, "workers": cores, "one": units / seconds[0], "all": units / seconds[cores]}


#: the benchmark groups, in the order a full ``recsim bench`` runs them
GROUPS = ("peer", "startup", "loop", "scale", "sharded", "core", "study")


def run_benchmarks(
    quick: bool = False, only: str | None = None, peer_python: str | None = None
) -> Iterator[str]:
    """Yield one JSON line per benchmark (``only``: one group of :data:`GROUPS`; ``peer_python``: a
    Python with T-RECS installed, for the ``peer`` group's ratios)."""
    machine = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "quick": quick,
    }
    groups = {
        "peer": lambda: _peer_lines(quick, machine, peer_python),
        "startup": lambda: _startup_lines(quick, machine),
        "loop": lambda: _loop_lines(quick, machine),
        "scale": lambda: _scale_lines(quick, machine),
        "sharded": lambda: _sharded_lines(quick, machine),
        "core": lambda: _core_lines(quick, machine),
        "study": lambda: _study_lines(quick, machine),
    }
    for group in GROUPS:
        if only is None or group == only:
            yield from groups[group]()


#: T-RECS 0.2.1's ContentFiltering at the size of its own examples: 1,000 users x 1,000 items,
#: 20 attributes, slates of 10, STARTUP random steps then STEPS steps retrained after each one.
TRECS_SCRIPT = """
import sys
from trecs.models import ContentFiltering
startup, steps = int(sys.argv[1]), int(sys.argv[2])
cf = ContentFiltering(num_users=1000, num_items=1000, num_attributes=20, num_items_per_iter=10, seed=0)
cf.startup_and_train(timesteps=startup)
cf.run(timesteps=steps, train_between_steps=True, disable_tqdm=True)
"""


def peer_scenario(ranker: dict[str, Any], startup: int, steps: int) -> dict[str, Any]:
    """The same size as :data:`TRECS_SCRIPT` in recsim: every user active every round, every item
    scored, ``startup`` rounds of random slates then ``steps`` rounds, every default metric, log
    and checkpoint on."""
    return {
        "name": "peer-size",
        "description": "T-RECS ContentFiltering's size",
        "base": {
            "world": {"n_users": 1000, "n_items": 1000},
            "policy": {"slate_size": 10, "startup_rounds": startup},
            "loop": {"rounds": startup + steps},
        },
        "arms": {ranker["name"]: {"ranker": ranker}},
    }


def _timed_process(cmd: list[str]) -> float:
    """Wall seconds of a child process, its start included (raises if it fails). It runs in a
    temporary folder: T-RECS writes ``trecs.log`` into its working directory."""
    return _timed_output(cmd)[0]


def _timed_output(cmd: list[str]) -> tuple[float, str]:
    """:func:`_timed_process`, with the child's standard output."""
    import subprocess

    with tempfile.TemporaryDirectory() as cwd:
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
        seconds = time.perf_counter() - t0
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({res.returncode}): {tail}")
    return seconds, res.stdout


def time_recsim_run(
    scenario: dict[str, Any] | str, extra: tuple[str, ...] = (), out: Path | None = None
) -> float:
    """Wall seconds of ``recsim run SCENARIO --no-tracking -q EXTRA`` in a child process, process
    start included: ``scenario`` a built-in name, or a mapping written to a YAML file first. The
    run writes into ``out`` (None: a temporary folder, removed after)."""
    import sys

    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(scenario, dict):
            path = Path(tmp) / "scenario.yaml"
            path.write_text(yaml.safe_dump(scenario))
            scenario = str(path)
        run = str(out) if out is not None else f"{tmp}/run"
        cmd = [sys.executable, "-m", "recsim", "run", scenario, "--no-tracking", "-q", "--out", run]
        return _timed_process([*cmd, *extra])


def _peer_lines(quick: bool, machine: dict[str, Any], peer_python: str | None) -> Iterator[str]:
    startup, steps = (10, 10) if quick else (10, 50)
    size = {"users": 1000, "items": 1000, "slate": 10, "startup": startup, "steps": steps}
    mf = time_recsim_run(peer_scenario({"name": "mf"}, startup, steps))
    ranker = {"name": "mmoe", "window": 5}
    mmoe_scenario = peer_scenario(ranker, startup, steps)
    mmoe = time_recsim_run(mmoe_scenario)
    # the same run with the first layer's products in bfloat16, in scoring and in training
    bf16 = {"serve_bf16": True, "train_bf16": True}
    mmoe_bf16 = time_recsim_run(peer_scenario({**ranker, **bf16}, startup, steps))
    yield _line("peer_size_recsim_mf_s", mf, "s", **size, **machine)
    yield _line("peer_size_recsim_mmoe_s", mmoe, "s", window=5, **size, **machine)
    yield _line("peer_size_recsim_mmoe_bf16_s", mmoe_bf16, "s", window=5, **bf16, **size, **machine)
    # the MMoE run's dense products (counted in a second, in-process run) at the GEMM peak: no
    # run of these rounds with float32 products takes less time on this machine
    dense = sum(v for k, v in _scenario_flops(mmoe_scenario, "mmoe").items() if k != "setup") / 1e9
    peak = bench_gemm_peak()
    at_peak = dense / peak
    yield _line("peer_size_mmoe_dense_gflop", dense, "GFLOP", window=5, **size, **machine)
    yield _line(
        "peer_size_mmoe_at_gemm_peak_s", at_peak, "s", gemm_peak_gflops=round(peak, 1), **size, **machine
    )
    yield _line("peer_size_mmoe_gemm_peak_share", at_peak / mmoe, "ratio", **size, **machine)
    if peer_python is None:
        return
    trecs = _timed_process([peer_python, "-c", TRECS_SCRIPT, str(startup), str(steps)])
    yield _line("peer_size_trecs_s", trecs, "s", model="ContentFiltering", **size, **machine)
    yield _line("peer_mf_speedup_vs_trecs", trecs / mf, "ratio", target=5, **size, **machine)
    yield _line("peer_mmoe_time_vs_trecs", mmoe / trecs, "ratio", target=1.5, **size, **machine)
    yield _line(
        "peer_mmoe_bf16_time_vs_trecs", mmoe_bf16 / trecs, "ratio", target=1.5, **bf16, **size, **machine
    )
    yield _line("peer_mmoe_time_vs_trecs_at_gemm_peak", at_peak / trecs, "ratio", **size, **machine)


def _scenario_flops(scenario: dict[str, Any], arm: str) -> dict[str, int]:
    """:func:`count_dense_flops` of one arm of a scenario mapping, tracking off."""
    import yaml

    from recsim.core.units import Unit
    from recsim.scenario import load_scenario

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.yaml"
        path.write_text(yaml.safe_dump(scenario))
        config = load_scenario(str(path)).resolve(["tracking.enabled=false"])[arm]
    return count_dense_flops(Unit(arm, config.seed, config))


#: What a one-round run of the default scenario costs whatever its rounds do: a Python process that
#: imports torch, TorchRec's embedding modules (the MMoE arms' tables), the config and scenario
#: modules and matplotlib, and draws the run's three figures from its finished tables, as the run
#: draws them, then ends as ``recsim run`` does. Prints the seconds of each step as JSON.
STARTUP_FLOOR_SCRIPT = """
import json, os, sys, time
from pathlib import Path
t = [time.perf_counter()]
import torch
t.append(time.perf_counter())
from towers.torchrec_modules import load
load()
t.append(time.perf_counter())
import polars as pl
from recsim.core.domain import domain_class
from recsim.core.runner import metric_columns
from recsim.core.stats import describe
from recsim.scenario import load_scenario
sc = load_scenario(sys.argv[3])
domains = {c.domain: domain_class(c.domain) for c in sc.resolve(["tracking.enabled=false"]).values()}
t.append(time.perf_counter())
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot
from recsim.io.plots import plot_curves, plot_intervals
t.append(time.perf_counter())
run, out = Path(sys.argv[1]), Path(sys.argv[2])
frame = pl.read_parquet(run / "metrics.parquet")
plot_curves(frame, sc.plot, out / "curves.png", title=sc.name)
tables = {p.stem: pl.read_parquet(p) for p in run.glob("*.parquet") if p.stem != "metrics"}
for cls in domains.values():
    cls.figures(tables, out)
stats = describe(frame, metric_columns(frame))
plot_intervals(stats.filter(pl.col("metric").is_in(list(sc.table))), out / "intervals.png")
t.append(time.perf_counter())
steps = ("torch_s", "torchrec_s", "recsim_s", "matplotlib_s", "figures_s")
print(json.dumps({k: round(b - a, 3) for k, a, b in zip(steps, t, t[1:])}), flush=True)
os._exit(0)  # no interpreter teardown, as `recsim run` ends (recsim.cli.exit_process)
"""


def _startup_lines(quick: bool, machine: dict[str, Any]) -> Iterator[str]:
    """One round, 300 users, process start included: an MF world, and the default scenario; then
    the default scenario's floor (:data:`STARTUP_FLOOR_SCRIPT` on that run's outputs)."""
    import sys

    mf = peer_scenario({"name": "mf"}, 1, 0)
    mf["base"]["world"]["n_users"] = 300
    mf["base"]["loop"]["rounds"] = 1
    yield _line("startup_one_round_mf_s", time_recsim_run(mf), "s", users=300, target=2.5, **machine)
    with tempfile.TemporaryDirectory() as tmp:
        run, figures = Path(tmp) / "run", Path(tmp) / "figures"
        figures.mkdir()
        extra = ("--rounds", "1", "--set", "world.n_users=300")
        seconds = time_recsim_run("feedback-loop", extra, out=run)
        yield _line("startup_one_round_feedback_loop_s", seconds, "s", users=300, target=2.5, **machine)
        cmd = [sys.executable, "-c", STARTUP_FLOOR_SCRIPT, str(run), str(figures), "feedback-loop"]
        floor, printed = _timed_output(cmd)
        steps = json.loads(printed.strip().splitlines()[-1])
        yield _line("startup_feedback_loop_floor_s", floor, "s", users=300, target=2.5, **steps, **machine)


def _loop_lines(quick: bool, machine: dict[str, Any]) -> Iterator[str]:
    """Rounds per second early (rounds 10-14) and late (the last five) in a long run at the peer
    size (MF, a 5-round window), and the late / early cost ratio."""
    from recsim.core.units import Unit
    from recsim.scenario import Scenario

    rounds = 30 if quick else 100
    sc = Scenario(**peer_scenario({"name": "mf", "window": 5}, 10, rounds - 10))
    config = sc.resolve(["tracking.enabled=false"])["mf"]
    prof = profile_unit(Unit("mf", config.seed, config))
    by_round = {r["round"]: sum(v for k, v in r.items() if k != "round") for r in prof["rounds"]}
    early = sum(by_round[r] for r in range(10, 15)) / 5
    late = sum(by_round[r] for r in range(rounds - 5, rounds)) / 5
    extra = {"rounds": rounds, "window": 5, "ranker": "mf"}
    yield _line("loop_rounds_per_s_early", 1 / early, "rounds/s", averaged="10-14", **extra, **machine)
    last = f"{rounds - 5}-{rounds - 1}"
    yield _line("loop_rounds_per_s_late", 1 / late, "rounds/s", averaged=last, **extra, **machine)
    yield _line("loop_late_vs_early_round_cost", late / early, "ratio", target=1.0, **extra, **machine)


def _scale_lines(quick: bool, machine: dict[str, Any]) -> Iterator[str]:
    sc = bench_scale(quick)
    extra = {k: sc[k] for k in ("users", "items", "active", "rounds")}
    yield _line("scale_impressions_per_s", sc["impressions_per_s"], "impressions/s", **extra, **machine)
    seconds = round(sc["seconds"], 1)
    target = {} if quick else {"target_seconds": 160}  # half of the 320 s it once took here
    yield _line(
        "scale_rounds_per_s", sc["rounds_per_s"], "rounds/s", seconds=seconds, **target, **extra, **machine
    )
    yield _line("scale_peak_rss_gb", sc["peak_rss_gb"], "GB", target=4, **extra, **machine)


def _sharded_lines(quick: bool, machine: dict[str, Any]) -> Iterator[str]:
    sh = bench_sharded_training(quick)
    extra = {"rows": sh["rows"], "users": sh["users"], "sharding": "table_wise"}
    yield _line("sharded_train_examples_per_s", sh["sharded"], "examples/s", ranks=2, **extra, **machine)
    yield _line("single_train_examples_per_s", sh["single"], "examples/s", ranks=1, **extra, **machine)
    yield _line("sharded_vs_single_train_ratio", sh["sharded"] / sh["single"], "ratio", **extra, **machine)


def _study_lines(quick: bool, machine: dict[str, Any]) -> Iterator[str]:
    st = bench_study(quick)
    extra = {"units": st["units"], "threads_per_unit": 1, "scenario": "exploration"}
    yield _line("study_units_per_s_1_worker", st["one"], "units/s", workers=1, **extra, **machine)
    yield _line(
        "study_units_per_s_all_cores", st["all"], "units/s", workers=st["workers"], **extra, **machine
    )
    yield _line(
        "study_parallel_speedup", st["all"] / st["one"], "ratio", workers=st["workers"], **extra, **machine
    )


def _core_lines(quick: bool, machine: dict[str, Any]) -> Iterator[str]:
    n_users = 100_000 if quick else 1_000_000
    rate = bench_behavior(n_users, 10, repeats=3 if quick else 5)
    yield _line(
        "behavior_impressions_per_s", rate, "impressions/s", users=n_users, slate=10, model="pbm", **machine
    )
    peak = bench_gemm_peak()
    yield _line("gemm_peak_gflops", peak, "GFLOP/s", n=2048, dtype="float32", **machine)
    mmoe = bench_mmoe(40_960 if quick else 163_840)
    batch = mmoe["batch"]
    yield _line("mmoe_train_examples_per_s", mmoe["examples_per_s"], "examples/s", batch=batch, **machine)
    gflops = round(mmoe["gflops"], 2)
    ratio = mmoe["gflops"] / peak
    yield _line(
        "mmoe_train_peak_ratio", ratio, "ratio", train_gflops=gflops, batch=batch, target=0.5, **machine
    )
    yield _line("mmoe_score_1000x1000_s", mmoe["score_s"], "s", pairs=1_000_000, dtype="float32", **machine)
    score_gflops = round(mmoe["score_gflops"], 2)
    yield _line(
        "mmoe_score_peak_ratio",
        mmoe["score_gflops"] / peak,
        "ratio",
        score_gflops=score_gflops,
        target=0.5,
        **machine,
    )
    bf16 = mmoe["score_bf16_s"]
    yield _line("mmoe_score_1000x1000_bf16_s", bf16, "s", pairs=1_000_000, dtype="bfloat16", **machine)
    for kind, suffix in (("chain", ""), ("sum", "_sum_task")):  # the chain policy beside the old one
        llm = bench_llm(256 if quick else 1024, 4 if quick else 16, kind)
        tokens = llm["tokens_per_s"]
        n = llm["sequences"]
        yield _line(
            f"llm_rollout_tokens_per_s{suffix}", tokens, "tokens/s", sequences=n, task=kind, **machine
        )
        grpo = llm["grpo_steps_per_s"]
        shape = {"prompts": 64, "group": 8, "task": kind}
        yield _line(f"llm_grpo_steps_per_s{suffix}", grpo, "steps/s", **shape, **machine)
    judged = bench_rm_judgments(4096 if quick else 16384, RM_BUDGETS)
    for (m, k), per_s in judged.items():
        yield _line(f"rm_judgments_per_s_budget_{m}x{k}", per_s, "judgments/s", passes=m, votes=k, **machine)
    yield _line("rm_budget_cost_ratio", judged[RM_BUDGETS[0]] / judged[RM_BUDGETS[-1]], "ratio", **machine)
    per_s, seconds, n = bench_feedback_loop(5 if quick else 20)
    yield _line(
        "feedback_loop_rounds_per_s",
        per_s,
        "arm-rounds/s",
        arm_rounds=n,
        seconds=round(seconds, 2),
        scenario="feedback-loop",
        **machine,
    )


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere)."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start = float(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start


def profile_unit(unit: Any, threads: int | None = None, flops: bool = False) -> dict[str, Any]:
    """Run ``unit`` (one arm, one seed) as ``recsim run --no-tracking`` runs it, in a temporary
    folder, timing every stage of every round (:class:`recsim.core.loop.StageTimes`).

    Returns ``rounds`` (one dict per round: ``round`` and each stage's seconds), ``usage`` (each
    stage's CPU seconds and minor page faults over all rounds: :class:`StageTimes`), ``setup``
    (seconds from the call to round 0: the domain, world and learner built), ``total`` (the call's
    wall seconds) and ``before`` (seconds from process start to the call: interpreter, imports,
    config). With ``flops``, also ``flops`` (:func:`count_dense_flops` of a second run of the
    unit) and ``gemm_peak_gflops`` (:func:`bench_gemm_peak` at the run's thread count).
    """
    from recsim.core.loop import StageTimes
    from recsim.core.units import run_unit

    before = process_age()
    with tempfile.TemporaryDirectory() as tmp:
        timer = StageTimes()
        t0 = time.perf_counter()
        run_unit(unit, Path(tmp), threads=threads, timer=timer)
        total = time.perf_counter() - t0
    setup = timer.setup if timer.setup is not None else total
    result = {"rounds": timer.rounds, "usage": timer.usage, "setup": setup, "total": total, "before": before}
    if flops:
        result["flops"] = count_dense_flops(unit, threads)
        saved = torch.get_num_threads()
        torch.set_num_threads(threads or saved)
        try:
            result["gemm_peak_gflops"] = bench_gemm_peak()
        finally:
            torch.set_num_threads(saved)
    return result


def count_dense_flops(unit: Any, threads: int | None = None) -> dict[str, int]:
    """FLOPs of the dense products (``mm``, ``addmm``, ``bmm``, ``baddbmm``, convolutions,
    attention; forward and backward) in each stage of a run of ``unit``, as
    ``torch.utils.flop_counter.FlopCounterMode`` counts them from the operands' shapes (2 per
    multiply-accumulate, whatever the dtype). Embedding lookups and elementwise ops count none.

    The run is a second one, under the counter: every op goes through its Python dispatch, which
    costs time but not values, so its stage times are not the profile's. Returns each name of
    :data:`recsim.core.loop.STAGES` with its FLOPs over all rounds, and ``setup``: those outside
    the rounds (building the learner, pre-training).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from recsim.core.loop import STAGES
    from recsim.core.units import run_unit

    counter = FlopCounterMode(display=False)
    timer = _StageFlops(counter)
    with tempfile.TemporaryDirectory() as tmp, counter:
        run_unit(unit, Path(tmp), threads=threads, timer=timer)
    counted = {stage: timer.flops.get(stage, 0) for stage in STAGES}
    return {**counted, "setup": counter.get_total_flops() - sum(counted.values())}


class _StageFlops:
    """A :class:`recsim.core.loop.StageTimes` stand-in that records the FLOPs ``counter`` counts
    inside each stage instead of the seconds."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self.flops: dict[str, int] = {}

    def start(self, round_: int) -> None:
        """Nothing to record: the counts are totals over all rounds."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        before = self.counter.get_total_flops()
        try:
            yield
        finally:
            self.flops[name] = self.flops.get(name, 0) + self.counter.get_total_flops() - before


def profile_lines(profile: dict[str, Any], label: dict[str, Any]) -> Iterator[str]:
    """One JSON line per stage: total seconds, share of the rounds' time, mean milliseconds per
    round, the milliseconds at round 10 (or the first) and at the last round, and the stage's CPU
    seconds (user and system, every thread) and minor page faults; then the set-up.

    With FLOPs counted (``profile_unit(..., flops=True)``) each stage's line adds its dense GFLOP
    and their rate as a share of the GEMM peak, and four lines follow: the peak, the rounds' dense
    GFLOP (and the set-up's), the seconds those would take at the peak (a lower bound on these
    rounds with float32 products on this machine) and that time as a share of the rounds' time."""
    from recsim.core.loop import STAGES

    rounds = profile["rounds"]
    in_rounds = sum(sum(r[s] for s in STAGES) for r in rounds)
    early = rounds[min(10, len(rounds) - 1)]
    last = rounds[-1]
    flops, peak = profile.get("flops"), profile.get("gemm_peak_gflops")
    for stage in STAGES:
        total = sum(r[stage] for r in rounds)
        at = {f"ms_round_{r['round']}": round(1e3 * r[stage], 2) for r in (early, last)}
        dense = {}
        if flops is not None:
            dense = {"dense_gflop": round(flops[stage] / 1e9, 3)}
            dense["gemm_peak_share"] = round(flops[stage] / 1e9 / total / peak, 4) if total else None
        yield _line(
            f"profile_{stage}_s",
            total,
            "s",
            share=round(total / in_rounds, 4) if in_rounds else None,
            ms_per_round=round(1e3 * total / len(rounds), 2),
            **at,
            **{k: round(v, 3) for k, v in profile["usage"][stage].items()},
            **dense,
            **label,
        )
    per_round = {r["round"]: sum(r[s] for s in STAGES) for r in rounds}
    at = {f"round_{r['round']}": round(1 / per_round[r["round"]], 3) for r in (early, last)}
    yield _line("profile_rounds_per_s", len(rounds) / in_rounds, "rounds/s", **at, **label)
    yield _line("profile_setup_s", profile["setup"], "s", **label)
    if profile["before"] is not None:
        yield _line("profile_process_start_to_run_s", profile["before"], "s", **label)
    yield _line("profile_total_s", profile["total"], "s", rounds=len(rounds), **label)
    if flops is not None:
        dense = sum(flops[stage] for stage in STAGES) / 1e9
        yield _line("profile_gemm_peak_gflops", peak, "GFLOP/s", n=2048, dtype="float32", **label)
        setup = round(flops["setup"] / 1e9, 3)
        yield _line("profile_dense_gflop", dense, "GFLOP", setup_gflop=setup, **label)
        # the rounds' dense products at the float32 peak: a lower bound for these rounds computed
        # in float32 on this machine (bfloat16 products can run faster than it)
        yield _line("profile_rounds_at_gemm_peak_s", dense / peak, "s", rounds_s=round(in_rounds, 3), **label)
        yield _line("profile_rounds_gemm_peak_share", dense / peak / in_rounds, "ratio", **label)


if __name__ == "__main__":  # python -m recsim.cli.bench ROWS USERS ITEMS (under torchrun: sharded)
    import sys

    result = train_throughput(*(int(a) for a in sys.argv[1:4]))
    if result["rank"] == 0:
        print(json.dumps(result), flush=True)
