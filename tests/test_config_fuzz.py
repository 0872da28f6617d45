"""Property: any override, however malformed, is either accepted or refused with a ConfigError
(one line); no other exception reaches the user. Valid overrides of sizes resolve to configs whose
cross-field invariants hold."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsim.config import ConfigError, SimConfig, flatten
from recsim.scenario import load_scenario

DEFAULTS = {k: v for k, v in flatten(SimConfig()).items() if k != "seed"}
KEYS = sorted(flatten(SimConfig()).keys()) + [
    "world.colour",
    "llm",
    "arms.mf.seed",
    "arms.x.seed",
    "",
    "a..b",
]
VALUES = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["pbm", "cascade", "mmoe", "grpo", "[1, 2]", "{a: 1}", "null", "1e9", "-0"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4))
def test_any_override_is_accepted_or_refused_in_one_line(pairs):
    sc = load_scenario("exploration")
    overrides = [f"{k}={v}" for k, v in pairs]
    try:
        configs = sc.resolve(overrides)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    for config in configs.values():
        assert config.policy.slate_size <= config.world.n_items
        assert set(config.behavior.eta) == set(config.world.devices)
        assert config.metrics.panel_users <= config.world.n_users


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(sorted(DEFAULTS)), min_size=1, max_size=6, unique=True))
def test_any_field_given_its_own_default_back_is_accepted_unchanged(keys):
    """The other side of the property above: a resolver that refused everything would pass it.
    Every field's default, written as the YAML the command line reads, must resolve to itself."""
    sc = load_scenario("exploration")
    overrides = [
        f"{k}={yaml.safe_dump(DEFAULTS[k], default_flow_style=True).strip().removesuffix('...').strip()}"
        for k in keys
    ]
    resolved = flatten(sc.resolve(overrides)["mf"])
    for k in keys:
        assert resolved[k] == DEFAULTS[k], k


@settings(max_examples=100, deadline=None)
@given(
    st.integers(2, 5000), st.integers(2, 3000), st.integers(1, 50), st.one_of(st.none(), st.integers(1, 3000))
)
def test_size_overrides_resolve_or_name_the_bound(users, items, slate, candidates):
    sc = load_scenario("exploration")
    overrides = [
        f"world.n_users={users}",
        f"world.n_items={items}",
        f"policy.slate_size={slate}",
        f"policy.n_candidates={'null' if candidates is None else candidates}",
        "metrics.panel_users=2",
    ]
    try:
        configs = sc.resolve(overrides)
    except ConfigError as exc:
        assert any(name in str(exc) for name in ("slate_size", "n_candidates"))
        assert slate > items or (candidates is not None and not slate <= candidates <= items)
        return
    config = configs["mf"]
    assert config.policy.slate_size <= config.world.n_items


RUNNABLE = st.fixed_dictionaries(
    {
        "world.n_users": st.integers(16, 60),
        "world.n_items": st.integers(8, 40),
        "policy.slate_size": st.integers(1, 6),
        "policy.n_candidates": st.integers(6, 8),
        "policy.epsilon": st.floats(0, 1),
        "policy.retrieval": st.sampled_from(["uniform", "two_tower"]),
        "policy.ivf_lists": st.integers(2, 8),
        "policy.ivf_probe": st.integers(1, 2),
        "policy.explore_candidates": st.integers(0, 5),
        "ranker.name": st.sampled_from(["random", "popularity", "oracle", "mf", "mmoe", "single_task"]),
        "ranker.position": st.sampled_from(["none", "shallow_tower", "ips", "pal"]),
        "ranker.sparse_embeddings": st.booleans(),
        "metrics.panel_users": st.integers(2, 16),
        "loop.rounds": st.integers(1, 2),
    }
)
OUTCOMES: list[int] = []


@settings(max_examples=16, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(RUNNABLE)
def test_generated_configs_run_or_are_refused_in_one_line(tmp_path_factory, values):
    """Through the real CLI: a generated config either runs to the end (exit 0, every output
    written) or is refused with one line (exit 2, nothing written); never a traceback."""
    from typer.testing import CliRunner

    from recsim.cli import app

    tmp = tmp_path_factory.mktemp("gen")
    (tmp / "one.yaml").write_text("name: one\narms: {a: {}}\n")  # one arm: the generated config
    sets = [x for k, v in values.items() for x in ("--set", f"{k}={'null' if v is None else v}")]
    args = ["run", str(tmp / "one.yaml"), "--out", str(tmp / "o"), "--no-tracking", "-q", *sets]
    res = CliRunner().invoke(app, args)
    OUTCOMES.append(res.exit_code)
    if res.exit_code == 2:
        err = res.stderr.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        assert not (tmp / "o").exists()
        return
    assert res.exit_code == 0, (res.output, repr(res.exception))
    assert (tmp / "o" / "summary.json").exists() and (tmp / "o" / "metrics.parquet").exists()


def test_the_generated_configs_mostly_run():
    """The generator above is aimed at runnable configs: most of its examples must run."""
    if len(OUTCOMES) < 8:
        pytest.skip("runs only after the generated-config test in the same session")
    assert OUTCOMES.count(0) >= len(OUTCOMES) // 2, OUTCOMES
