"""Any YAML shape a scenario file can take is loaded and resolved, or refused with one line (a
ConfigError): never another exception (property-based: Hypothesis over YAML values)."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsim.config import ConfigError
from recsim.scenario import load_scenario

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2000),
    st.floats(-10, 10, allow_nan=False),
    st.sampled_from(["mf", "mmoe", "llm", "recsys", "popularity", "x", ""]),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["ranker", "name", "world", "n_users", "loop", "rounds", "z"]), inner, max_size=3
        ),
    ),
    max_leaves=8,
)
_config = st.fixed_dictionaries(
    {},
    optional={
        "ranker": st.one_of(
            _value, st.fixed_dictionaries({"name": st.sampled_from(["mf", "random", "nope"])})
        ),
        "world": st.one_of(_value, st.fixed_dictionaries({"n_users": _leaf, "n_items": _leaf})),
        "loop": st.one_of(_value, st.fixed_dictionaries({"rounds": _leaf})),
        "domain": _value,
    },
)
_scenario = st.fixed_dictionaries(
    {},
    optional={
        "name": _value,
        "description": _value,
        "base": st.one_of(_config, _value),
        "arms": st.one_of(
            st.dictionaries(st.sampled_from(["a", "b", "c"]), st.one_of(_config, _value), max_size=3), _value
        ),
        "plot": _value,
        "table": _value,
        "reference": _value,
        "quick": _value,
        "window": _value,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(_scenario, _value))
def test_every_scenario_shape_loads_or_is_refused_in_one_line(tmp_path: Path, data: object) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        load_scenario(str(path)).resolve([])
    except ConfigError as exc:
        assert "\n" not in str(exc).strip(), str(exc)
