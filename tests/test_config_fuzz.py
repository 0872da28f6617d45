"""Property: any override, however malformed, is either accepted or refused with a ConfigError
(one line); no other exception reaches the user. Valid overrides of sizes resolve to configs whose
cross-field invariants hold."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsim.config import ConfigError, SimConfig, flatten
from recsim.scenario import load_scenario

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
@given(
    st.integers(2, 5000), st.integers(1, 3000), st.integers(1, 50), st.one_of(st.none(), st.integers(1, 3000))
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
