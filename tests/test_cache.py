"""Set-ups shared by the units of a study: computed once, identical for every arm that asks."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import polars as pl
import torch

import recsim
from recsim.config import validate
from recsim.io.cache import SharedCache, clear_memory
from recsim.llm.domain import LlmDomain

WARMUP = {"sft_steps": 20, "n_prompts": 256, "n_eval_prompts": 64}


def _domain(tmp: Path, seed: int = 0, **llm: object) -> tuple[LlmDomain, SharedCache]:
    clear_memory()  # as a fresh worker process starts
    cache = SharedCache(tmp / "cache")
    cfg = validate({"domain": "llm", "seed": seed, "llm": {**WARMUP, **llm}})
    return LlmDomain(cfg, cache=cache), cache


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_arms_of_a_seed_share_one_warm_up_that_runs_once(tmp_path: Path) -> None:
    first, c1 = _domain(tmp_path, optimizer="grpo")
    # another arm of the seed, in another process: settings the warm-up does not read differ
    second, c2 = _domain(tmp_path, optimizer="best_of_n", label_prompts=64, rm_passes=2)
    assert len(c1.computed) == 1 and c2.computed == []  # trained once, read by the second
    assert _same(first.reference, second.reference)
    # computing it afresh, without the folder, gives the same weights bit for bit
    clear_memory()
    fresh = LlmDomain(validate({"domain": "llm", "seed": 0, "llm": {**WARMUP, "optimizer": "grpo"}}))
    assert _same(first.reference, fresh.reference)
    # what the warm-up reads makes another entry: another seed, other warm-up steps
    other_seed, c3 = _domain(tmp_path, seed=1)
    longer, c4 = _domain(tmp_path, sft_steps=21)
    assert len(c3.computed) == 1 and len(c4.computed) == 1
    assert not _same(first.reference, other_seed.reference) and not _same(first.reference, longer.reference)
    assert len(list((tmp_path / "cache").glob("base-policy-*.pt"))) == 3


def test_an_unreadable_entry_is_computed_again(tmp_path: Path) -> None:
    first, _ = _domain(tmp_path)
    (path,) = (tmp_path / "cache").glob("base-policy-*.pt")
    path.write_bytes(path.read_bytes()[:100])  # cut short
    again, cache = _domain(tmp_path)
    assert len(cache.computed) == 1 and _same(first.reference, again.reference)
    assert torch.load(path, weights_only=True).keys() == first.reference.state_dict().keys()


def _slow_entry(root: str, out: mp.Queue) -> None:
    def compute() -> dict[str, torch.Tensor]:
        time.sleep(0.5)  # long enough for the other process to ask meanwhile
        return {"w": torch.arange(4.0)}

    cache = SharedCache(root)
    value = cache.get("entry", ("k", 1), compute)
    out.put((len(cache.computed), value["w"].tolist()))


def test_processes_asking_at_once_compute_once(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_slow_entry, args=(str(tmp_path), out)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(n for n, _ in got) == [0, 1]  # one computed, the other waited and read
    assert all(w == [0.0, 1.0, 2.0, 3.0] for _, w in got)


def _first_fit_study(out: Path, arms: dict[str, dict]) -> pl.DataFrame:
    clear_memory()  # as a fresh study starts
    base = {
        "domain": "llm",
        "llm": {
            **WARMUP,
            "rm_refit": False,
            "reward": "reward_model",
            "label_prompts": 16,
            "initial_prompts": 128,
        },
        "loop": {"rounds": 2},
        "metrics": {"panel_users": 8},
    }
    result = recsim.run({"name": "first-fit", "base": base, "arms": arms}, seeds=[0], out=out, tracking=False)
    return result.metrics


def test_arms_with_the_same_first_pairs_fit_once_and_match_a_fit_of_their_own(tmp_path: Path) -> None:
    arms = {
        "bon": {"llm": {"optimizer": "best_of_n"}},
        "grpo": {"llm": {"optimizer": "grpo"}},
        "biased": {"llm": {"optimizer": "grpo", "length_bias": 3.0}},  # other labels: its own fit
    }
    both = _first_fit_study(tmp_path / "all", arms)
    entries = list((tmp_path / "all" / "cache").glob("rm-first-fit-*.pt"))
    assert len(entries) == 2  # bon and grpo share one fit; the biased labeler's pairs have another
    # grpo fitted alone (nothing to share) gives the same run, to the last bit
    alone = _first_fit_study(tmp_path / "alone", {"grpo": arms["grpo"]})
    pick = lambda m: m.filter(pl.col("arm") == "grpo").drop("seconds", strict=False)  # noqa: E731
    assert pick(both).equals(pick(alone))
    first = dict(both.filter(pl.col("round") == 0).select("arm", "rm_heldout_loss").iter_rows())
    assert first["bon"] == first["grpo"] != first["biased"]
    curve = pl.read_parquet(tmp_path / "all" / "rm_fit.parquet").drop("seed")
    by_arm = {arm: curve.filter(pl.col("arm") == arm).drop("arm") for arm in arms}
    assert by_arm["bon"].height > 0 and by_arm["bon"].equals(by_arm["grpo"])  # the curve travels too
