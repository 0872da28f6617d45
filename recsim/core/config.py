"""Config building blocks shared by every domain: the frozen section base, run-level sections (loop,
metrics, tracking), and the helpers that build configs from nested dicts and ``--set`` overrides.

Each domain keeps its own sections (:mod:`recsim.recsys.config`, :mod:`recsim.llm.config`); the arm's
config that composes them is :class:`recsim.config.SimConfig`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ConfigError(ValueError):
    """Invalid user input (config, override or scenario name); the message is one line."""


def refuse_unknown(names: Sequence[str], known: Sequence[str], what: str = "metric") -> None:
    """A :class:`ConfigError` (one line) naming the first of ``names`` not in ``known`` and its
    close matches.

    >>> refuse_unknown(["gold", "gini"], ["gold", "gini", "gap"])
    >>> refuse_unknown(["gni"], ["gold", "gini", "gap"])
    Traceback (most recent call last):
    ...
    recsim.core.config.ConfigError: unknown metric 'gni' (did you mean gini?)
    """
    unknown = [n for n in names if n not in set(known)]
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], list(known), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(known)[:12])}"
    more = f"; also unknown: {', '.join(repr(n) for n in unknown[1:])}" if len(unknown) > 1 else ""
    raise ConfigError(f"unknown {what} {unknown[0]!r} ({hint}){more}")


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that repeats a key (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base loader says so
                break
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {first} and {line})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    r"""Parse YAML text safely; a mapping that repeats a key is a ``yaml.YAMLError`` naming the key
    and both lines.

    >>> load_yaml("arms: {a: 1, b: 2}")
    {'arms': {'a': 1, 'b': 2}}
    >>> load_yaml("a: 1\na: 2")
    Traceback (most recent call last):
    ...
    yaml.constructor.ConstructorError: key 'a' appears twice (lines 1 and 2)
      in "<unicode string>", line 2, column 1:
        a: 2
        ^
    """
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: its problem and, where known, the line it is on."""
    problem = getattr(exc, "problem", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None and "line" not in problem else ""
    return f"{where}{problem}"


class Section(BaseModel):
    """Base of every config section: unknown keys refused, frozen, one docstring per field; no
    float field takes NaN or an infinity (none gives them a meaning)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        validate_default=True,
        allow_inf_nan=False,
    )


class LoopConfig(Section):
    """The multi-round loop (see :mod:`recsim.core.loop`)."""

    rounds: int = Field(20, gt=0)
    """Rounds to simulate."""
    active_users: int | None = Field(None, gt=0)
    """Users sampled to act each round (B); None = every user."""
    keep_checkpoints: int = Field(1, gt=0)
    """Per-round checkpoints kept per arm, newest first (``--resume`` needs only the last)."""
    feedback: Literal["closed", "open", "random"] = "closed"
    """Whose decisions are logged, reach the users and train the learner: ``closed``, the
    learner's own (the feedback loop); ``open``, those of one fixed logger shared by every arm of a
    seed (``policy.logger``), so the learner's decisions never reach its data; ``random``,
    uniformly random ones. Every metric reads the learner's own decisions in every mode (under
    ``open`` and ``random`` they are measured against the same users and truth and not logged),
    so closed - open of a metric is what the loop itself adds to it: its amplification
    (an arm with ``loop.feedback=open`` beside the closed one, paired by seed; ``recsim run
    --amplification`` adds both to every arm). In the llm domain ``open`` retrains the reward
    model on the base policy's samples instead of the current policy's (``random`` is the
    recommender's only)."""


class MetricsConfig(Section):
    """Evaluation settings (see :mod:`recsim.core.metrics`)."""

    panel_users: int = Field(256, gt=1)
    """Size of the fixed evaluation panel (P) on which ndcg_truth, homogenization and
    rank_stability score every available item (or the ``panel_items`` sample)."""
    panel_items: int | None = Field(None, gt=1)
    """Items the panel scores: None = every available item; n = a fixed uniform sample of n items
    of the first round's catalogue, drawn once per seed (for catalogues too large to score whole
    for every panel user)."""
    ece_bins: int = Field(10, gt=0)
    """Equal-width bins of the expected calibration error."""


class TrackingConfig(Section):
    """MLflow tracking (see :mod:`recsim.io.tracking`)."""

    enabled: bool = True
    """Log one parent run per scenario and one nested run per arm."""
    uri: str = "sqlite:///mlflow.db"
    """Tracking URI; the default is an embedded SQLite file in the working directory."""
    experiment: str | None = None
    """MLflow experiment name; None = the scenario's name."""


# --- building configs from nested dicts and overrides ------------------------------------------


def deep_merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``delta`` merged in recursively (delta wins)."""
    out = dict(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"policy.epsilon=0.1"`` -> ``(["policy", "epsilon"], 0.1)``; values are parsed as YAML.

    >>> parse_override("loop.rounds=5")
    (['loop', 'rounds'], 5)
    >>> parse_override("world.devices={a: 1.0}")
    (['world', 'devices'], {'a': 1.0})
    """
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({yaml_problem(exc)})") from None
    return path, value


def nest(path: list[str], value: Any) -> dict[str, Any]:
    """``(["a", "b"], 1)`` -> ``{"a": {"b": 1}}``."""
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``data`` with each ``dotted.key=value`` override merged in, in order."""
    for text in overrides:
        path, value = parse_override(text)
        data = deep_merge(data, nest(path, value))
    return data


def _allowed_keys(loc: tuple[Any, ...], model: Any) -> list[str]:
    """Field names allowed at the parent of ``loc`` in ``model`` (a pydantic model class)."""
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def _format_error(err: dict[str, Any], model: Any) -> str:
    loc = tuple(p for p in err["loc"] if p != "__root__")
    where = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc, model) if model is not None else []
        return f"{where}: unknown key (allowed: {', '.join(allowed)})"
    msg = err["msg"].removeprefix("Value error, ")
    if not where or msg.startswith(f"{where}."):  # a section's own check names its fields itself
        return msg
    return f"{where}: {msg} (got {err.get('input')!r})"


def describe_errors(exc: ValidationError, model: Any = None) -> str:
    """All of a pydantic error's problems on one line (an unknown key lists the keys allowed
    there in ``model``, the validated model class)."""
    return "; ".join(_format_error(e, model) for e in exc.errors(include_url=False))


def flatten(config: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values (for MLflow params and tables)."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("devices", "eta"):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
