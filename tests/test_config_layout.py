"""Per-kind config sections keep every path that worked before the split.

``data/resolved_before.json.gz`` holds every built-in scenario resolved by the single-section
config (flat ``llm`` fields, one ``ranker`` section with every kind's fields), at its defaults and
at a small preset given with the flat paths. Resolved now, every value must be the same at its
new place; the only keys that may be gone are fields of other ranker kinds. (One deliberate
change since: the default world of ``feedback-loop`` is 1,000 users x 500 items, so that ``make
run`` shows three seeds in about two minutes; the file holds that.) The LLM task's default is now
the multi-step chain; with ``llm.task.kind=sum`` every earlier value is back at its place, and the
only new keys are the fields the chain task added (:data:`CHAIN_FIELDS`). Two more deliberate
changes, to keep each LLM scenario under four minutes a seed (:data:`CHANGED`): the binary-reward
``llm-negative-reinforcement`` no longer refits its reward model (it only feeds proxy metrics, as
in ``llm-critique``), and ``llm-critique`` labels 512 prompts a round instead of 1,024. Fields added
since, whose defaults keep the earlier behaviour, are :data:`ADDED` (with those defaults).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from recsim.config import ConfigError, SimConfig, canonical, flatten, validate
from recsim.llm.config import ALIASES
from recsim.recsys.config import RANKERS
from recsim.scenario import builtin_scenarios

BEFORE = json.load(gzip.open(Path(__file__).parent / "data" / "resolved_before.json.gz", "rt"))
TINY_LOOP = [
    "world.n_users=80",
    "world.n_items=60",
    "policy.n_candidates=30",
    "metrics.panel_users=16",
    "loop.rounds=2",
    "tracking.enabled=false",
    "llm.n_prompts=64",
    "llm.n_eval_prompts=16",
    "llm.label_prompts=8",
    "llm.initial_prompts=8",
    "llm.batch_prompts=8",
    "llm.pass_k_samples=8",
    "llm.sft_steps=5",
    "llm.policy_steps=1",
    "ranker.hidden=32",
    "llm.rm_window=2",
]
TINY_MA = ["n_train=200", "n_test=100", "repeats=2", "epochs=2", "tracking.enabled=false"]
TINY_SCALE = TINY_LOOP + [
    "loop.active_users=40",
    "policy.ivf_lists=8",
    "policy.ivf_probe=2",
    "policy.explore_candidates=10",
    "metrics.panel_items=40",
]
CHAIN_FIELDS = {
    "llm.task.kind",
    "llm.task.n_values",
    "llm.task.max_steps",
    "llm.task.concepts",
    "llm.policy.sft_sycophancy",
    "llm.labeler.concept_bias",
    "llm.labeler.discrimination_bias",
    "llm.labeler.gold_checks",
    "mitigations.gate_consistency",
}
ADDED = {
    "policy.repeat_consumption": True,  # items may be shown and clicked again, as before
    "ranker.negatives": "impressions",  # mf learns clicks against its logged impressions, as before
    "ranker.negatives_per_click": 4,
    "world.source": None,  # a drawn world, as before
    "policy.log_candidates": False,  # the log's columns as before
    "ranker.train_bf16": False,  # the MMoE trains in float32, as before
    "loop.feedback": "closed",  # the learner's own slates are logged, as before
    "policy.logger": "popularity",  # read only with loop.feedback=open
}
CHANGED = {
    # past the loop's transient: the position grid's effects are read over rounds 10-15 of 16
    "position-bias/default": {"loop.rounds": 16},
    "llm-negative-reinforcement/default": {"llm.rm_refit": False},
    "llm-negative-reinforcement/tiny": {"llm.rm_refit": False},
    "llm-critique/default": {"llm.label_prompts": 512},
    # binary and RLCR rewards: the reward model only feeds proxy metrics, fitted once
    "llm-calibration/default": {"llm.rm_refit": False},
    "llm-calibration/tiny": {"llm.rm_refit": False},
}
# the reward model's first preference set: 4,096 of the base policy's prompts in every LLM
# scenario (the tiny preset sets it to its label_prompts); unset elsewhere
INITIAL = "llm.initial_prompts"  # its old-style alias, as the layout is compared
# the proxy reward model's fit since: at most 60 epochs, stopping early on a held-out share of its
# pairs (REFIT: the changed default; FIT_FIELDS: the fields added with it, at their defaults),
# and the verifier's checks (read only by reward models of passes > 1 and by process rewards)
REFIT = {"llm.rm_epochs": 60}
FIT_FIELDS = {
    "llm.reward_model.heldout_share": 0.2,
    "llm.reward_model.patience": 10,
    "llm.reward_model.refit_patience": 2,
    "llm.reward_model.batch_size": 256,
    "llm.reward_model.checks": True,
    "llm.reward_model.check_error": 0.1,
}
# arms added since: the cross-domain row of the loop's amplification (each domain's open loop)
ADDED_ARMS = {"cross-domain": {"recsys/none@open", "llm/none@open"}}
NEW_TO_OLD = {f"llm.{section}.{field}": f"llm.{old}" for old, (section, field) in ALIASES.items()}
RANKER_FIELDS = {f"ranker.{f}" for _, kind in RANKERS.items() for f in kind.config.model_fields}


def _tiny(name: str) -> list[str]:
    if name in ("mmoe-tasks", "utility-weighted"):
        return TINY_MA
    return TINY_SCALE if name == "scale" else TINY_LOOP


@pytest.mark.parametrize("key", sorted(BEFORE))
def test_every_builtin_scenario_resolves_to_the_same_values(key):
    name, preset = key.split("/")
    overrides = [] if preset == "default" else _tiny(name)
    loop = name not in ("mmoe-tasks", "utility-weighted")
    configs = builtin_scenarios()[name].resolve(overrides + (["llm.task.kind=sum"] if loop else []))
    before = BEFORE[key]
    added = ADDED_ARMS.get(name, set())
    assert set(configs) - added == set(before) and added <= set(configs)
    for arm, config in configs.items():
        if arm in added:
            continue
        if not hasattr(config, "model_dump"):
            assert repr(config) == before[arm]
            continue
        now = {NEW_TO_OLD.get(k, k): v for k, v in flatten(config).items()}
        refit = {k: v for k, v in REFIT.items() if k in before[arm]}
        old = {**before[arm], **refit, **CHANGED.get(key, {})}
        assert {k: now[k] for k in now if k in old} == {k: old[k] for k in now if k in old}, arm
        new = set(now) - set(old)
        known = CHAIN_FIELDS | set(ADDED) | set(FIT_FIELDS) | {INITIAL}
        assert new <= known, f"{arm}: new keys {new - known}"
        assert {k: now[k] for k in new & set(ADDED)} == {k: ADDED[k] for k in new & set(ADDED)}
        assert {k: now[k] for k in new & set(FIT_FIELDS)} == {k: FIT_FIELDS[k] for k in new & set(FIT_FIELDS)}
        tiny = next((int(o.split("=")[1]) for o in overrides if o.startswith("llm.initial_prompts=")), None)
        assert now.get(INITIAL) == (
            tiny if tiny is not None else 4096 if now.get("domain") == "llm" else None
        ), arm
        gone = set(old) - set(now)
        assert gone <= RANKER_FIELDS, f"{arm}: lost {gone - RANKER_FIELDS}"


def test_new_paths_and_old_aliases_set_the_same_field():
    sc = builtin_scenarios()["llm-calibration"]
    by_alias = sc.resolve(["llm.group_size=6", "llm.critique=cot", "llm.rm_passes=2"])
    by_path = sc.resolve(
        ["llm.optimization.group_size=6", "llm.critique.kind=cot", "llm.reward_model.passes=2"]
    )
    assert by_alias == by_path
    arm = next(iter(by_path.values()))
    assert (arm.llm.optimization.group_size, arm.llm.critique.kind, arm.llm.reward_model.passes) == (
        6,
        "cot",
        2,
    )
    # the later override wins, whichever spelling each uses
    later = sc.resolve(["llm.group_size=6", "llm.optimization.group_size=4"])
    assert {c.llm.optimization.group_size for c in later.values()} == {4}


def test_canonical_moves_aliases_into_their_sections():
    assert canonical({"llm": {"rm_lr": 0.1, "reward_model": {"epochs": 2}}}) == {
        "llm": {"reward_model": {"lr": 0.1, "epochs": 2}}
    }
    assert canonical({"llm": {"critique": {"kind": "binary"}}}) == {"llm": {"critique": {"kind": "binary"}}}


def test_the_ranker_section_is_its_kinds_own():
    mf = validate({"ranker": {"name": "mf", "hidden": 64}})  # a multi-task field: ignored for mf
    assert type(mf.ranker).__name__ == "MFConfig" and not hasattr(mf.ranker, "hidden")
    mmoe = validate({"ranker": {"name": "mmoe", "hidden": 64}})
    assert mmoe.ranker.hidden == 64 and mmoe.ranker.batch == 4096 and mmoe.ranker.multitask
    assert SimConfig().ranker.name == "mf" and SimConfig().ranker.batch == 1024
    with pytest.raises(
        ConfigError, match=r"ranker.colour: unknown key for ranker.name=mf \(allowed: .*epochs"
    ):
        validate({"ranker": {"colour": 1}})
    with pytest.raises(ConfigError, match="ranker.name must be one of random, popularity, oracle, mf, mmoe"):
        validate({"ranker": {"name": "xgboost"}})
    with pytest.raises(ConfigError, match=r"ranker.epochs: Input should be greater than 0 \(got 0\)"):
        validate({"ranker": {"name": "mmoe", "epochs": 0}})
    dumped = mmoe.model_dump(mode="json")["ranker"]
    assert dumped["hidden"] == 64 and validate({"ranker": dumped}) == mmoe
