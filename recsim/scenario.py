"""Named, runnable experiments: a base config, arms as config deltas, and what to show.

A scenario is a Python module in ``scenarios/`` exposing ``SCENARIO``, or a YAML file with the same
keys (``name``, ``description``, ``base``, ``arms``, ``plot``, ``table``, ``reference``,
``quick``, ``window``). Overrides given as
``dotted.key=value`` apply to every arm; ``arms.NAME.dotted.key=value`` to one arm only.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from recsim.config import (
    ConfigError,
    SimConfig,
    TrackingConfig,
    canonical,
    deep_merge,
    nest,
    parse_override,
    validate,
)
from recsim.core.config import load_yaml, yaml_problem
from recsim.core.registry import Registry, load_plugins
from recsim.llm.config import QUICK

#: the LLM scenarios' small preset (``recsim run NAME --quick``), see :data:`recsim.llm.config.QUICK`.
LLM_QUICK = QUICK

DEFAULT_PLOT = ("gold", "ndcg_truth", "gini", "gap")
DEFAULT_TABLE = (
    "gold",
    "gold_satisfaction",
    "regret",
    "ndcg_truth",
    "gini",
    "coverage",
    "homogenization",
    "ece",
)


AMPLIFICATION_MODES = {"recsys": ("open", "random"), "llm": ("open",)}
"""The open-loop arms :meth:`Scenario.amplified` adds to a closed-loop arm, per domain."""


@dataclass(frozen=True)
class Scenario:
    """A named experiment.

    Attributes:
        name: what ``recsim run NAME`` takes.
        description: one line for ``recsim scenarios``.
        arms: arm name -> config delta (nested dict) applied on top of ``base``.
        base: config shared by every arm (nested dict of :class:`recsim.config.SimConfig` fields).
        plot: metrics drawn over rounds in the run's PNG.
        table: metrics of the final-round summary table.
        reference: the arm the others are compared with, paired by seed (None: the first arm).
        quick: ``--set`` overrides of a small preset for checks and tests (``recsim run --quick``),
            applied before the caller's own; empty: the scenario has none.
        window: the number of final rounds whose mean is each seed's value in the summary (the
            window is declared before the run, past the loop's transient); None: the final round.
            ``--window FIRST-LAST`` replaces it for one run.
    """

    name: str
    description: str
    arms: dict[str, dict[str, Any]]
    base: dict[str, Any] = field(default_factory=dict)
    plot: tuple[str, ...] = DEFAULT_PLOT
    table: tuple[str, ...] = DEFAULT_TABLE
    reference: str | None = None
    quick: tuple[str, ...] = ()
    window: int | None = None

    def resolve(
        self,
        overrides: list[str] | tuple[str, ...] = (),
        *,
        rounds: int | None = None,
        seed: int | None = None,
    ) -> dict[str, SimConfig]:
        """Validated config of every arm, raising :class:`ConfigError` (one line) on bad input."""
        if not self.arms:
            raise ConfigError(f"scenario '{self.name}' has no arms")
        common: dict[str, Any] = {}
        per_arm: dict[str, dict[str, Any]] = {arm: {} for arm in self.arms}
        for text in overrides:
            path, value = parse_override(text)
            if path[0] == "arms":
                if len(path) < 3 or path[1] not in self.arms:
                    raise ConfigError(
                        f"--set {'.'.join(path)}: expected arms.ARM.key with ARM one of "
                        f"{', '.join(self.arms)}"
                    )
                if path[2] == "tracking":
                    raise ConfigError(
                        f"--set {'.'.join(path)}: tracking is a run-level setting; set tracking.KEY for the "
                        "whole run"
                    )
                per_arm[path[1]] = deep_merge(per_arm[path[1]], canonical(nest(path[2:], value)))
            else:
                common = deep_merge(common, canonical(nest(path, value)))
        if rounds is not None:
            common = deep_merge(common, {"loop": {"rounds": rounds}})
        if seed is not None:
            common = deep_merge(common, {"seed": seed})
        configs = {}
        for arm, delta in self.arms.items():
            data = deep_merge(deep_merge(canonical(self.base), canonical(delta)), common)
            data = deep_merge(data, per_arm[arm])
            configs[arm] = validate(data, arm)
        if len({c.tracking for c in configs.values()}) > 1:
            raise ConfigError(f"scenario '{self.name}': arms differ in tracking, a run-level setting")
        return configs

    def amplified(self) -> Scenario:
        """This scenario with the loop's amplification study: beside every closed-loop arm A, the
        same arm on the fixed logger's logs (``A@open``) and, in the recommender domain, on
        uniformly random logs (``A@random``) (``loop.feedback``). The summary pairs each with A
        (closed - open, closed - random: :func:`recsim.core.stats.amplification`)."""
        arms: dict[str, dict[str, Any]] = {}
        for arm, delta in self.arms.items():
            arms[arm] = delta
            data = deep_merge(canonical(self.base), canonical(delta))
            if data.get("loop", {}).get("feedback", "closed") != "closed":
                continue
            for mode in AMPLIFICATION_MODES[data.get("domain", "recsys")]:
                if f"{arm}@{mode}" not in self.arms:
                    arms[f"{arm}@{mode}"] = deep_merge(canonical(delta), {"loop": {"feedback": mode}})
        return replace(self, arms=arms)

    def total_steps(self, configs: dict[str, SimConfig]) -> int:
        """Rounds over all arms (for progress displays)."""
        return sum(c.loop.rounds for c in configs.values())

    def tracking(self, configs: dict[str, SimConfig]) -> TrackingConfig:
        """The tracking settings of the run (run-level: every arm has the same)."""
        return next(iter(configs.values())).tracking

    def run(
        self,
        configs: dict[str, SimConfig],
        out: Path,
        tracker: Any = None,
        on_round: Any = None,
        dist: Any = None,
        resume: bool = False,
        source: str | None = None,
        study: Any = None,
    ) -> Any:
        """Run every arm on every seed of ``study`` into ``out`` (see
        :func:`recsim.core.runner.run_scenario`); returns the metrics frame."""
        from recsim.core.runner import run_scenario

        return run_scenario(self, configs, out, tracker, on_round, dist, resume, source, study)

    def post(self, frame: Any, out: Path) -> dict[str, float]:
        """Scenario-level results computed from all arms (logged on the parent run); none here."""
        return {}

    def final(self, frame: Any) -> dict[str, dict[str, float | None]]:
        """arm -> the ``table`` metrics in the arm's last round."""
        from recsim.core.runner import final_table

        return final_table(frame, self.table)


def _from_mapping(data: Any, source: str) -> Scenario:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a scenario must be a mapping with name, description and arms")
    keys = ("name", "description", "base", "arms", "plot", "table", "reference", "quick", "window")
    unknown = set(data) - set(keys)
    if unknown:
        raise ConfigError(f"{source}: unknown scenario key(s) {sorted(unknown)} (allowed: {', '.join(keys)})")
    window = data.get("window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ConfigError(
            f"{source}: window is the number of final rounds read, an integer >= 1; got {window!r}"
        )
    if not isinstance(data.get("arms"), dict) or not all(isinstance(v, dict) for v in data["arms"].values()):
        raise ConfigError(f"{source}: 'arms' must map each arm name to a config delta")
    if not data["arms"]:
        raise ConfigError(f"{source}: 'arms' is empty; a scenario needs at least one arm")
    if data.get("base") is not None and not isinstance(data["base"], dict):
        raise ConfigError(f"{source}: 'base' must be a config mapping, got {type(data['base']).__name__}")
    for key in ("plot", "table", "quick"):
        value = data.get(key)
        if key in data and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{source}: '{key}' must be a list of names, got {value!r}")
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str | int | float):
            raise ConfigError(f"{source}: '{key}' must be text, got {data[key]!r}")
    ref = data.get("reference")
    if ref is not None and (
        not isinstance(ref, str | int) or isinstance(ref, bool) or str(ref) not in map(str, data["arms"])
    ):
        raise ConfigError(f"{source}: reference {ref!r} is not one of the arms")
    return Scenario(
        name=str(data.get("name", Path(source).stem)),
        description=str(data.get("description", "")),
        arms={str(k): v for k, v in data["arms"].items()},
        base=data.get("base") or {},
        plot=tuple(data.get("plot", DEFAULT_PLOT)),
        table=tuple(data.get("table", DEFAULT_TABLE)),
        reference=str(ref) if ref is not None else None,
        quick=tuple(str(o) for o in data.get("quick") or ()),
        window=window,
    )


#: scenarios registered from Python (a user's module): name -> scenario. The built-in ones are
#: found as modules of the ``scenarios`` package that define ``SCENARIO``.
SCENARIOS: Registry[Any] = Registry("scenario")


def builtin_scenarios() -> dict[str, Scenario]:
    """Every scenario shipped in the ``scenarios`` package (modules with ``SCENARIO``: a
    :class:`Scenario`, or an object with the same ``resolve``/``run`` interface such as
    :class:`recsim.experiments.ma.MaScenario`), and those in :data:`SCENARIOS`."""
    import scenarios

    found: dict[str, Scenario] = {}
    for info in pkgutil.iter_modules(scenarios.__path__):
        module = importlib.import_module(f"scenarios.{info.name}")
        scenario = getattr(module, "SCENARIO", None)
        if all(hasattr(scenario, a) for a in ("name", "description", "arms", "resolve", "run", "final")):
            found[scenario.name] = scenario
    found.update(SCENARIOS.items())
    return dict(sorted(found.items()))


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a scenario YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"scenario file {path} does not exist")
        try:
            data = load_yaml(path.read_text())
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file (a scenario is YAML text)") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({yaml_problem(exc)})") from None
        return _from_mapping(data, str(path))
    known = builtin_scenarios()
    if name_or_path not in known:
        raise ConfigError(
            f"unknown scenario '{name_or_path}' (known: {', '.join(known)}; or a path to a .yaml file)"
        )
    return known[name_or_path]


def load_run(folder: Path) -> tuple[Scenario, dict[str, SimConfig], str, dict[str, Any]]:
    """What ``recsim run --resume FOLDER`` continues: the scenario, every arm's config (validated
    again from the folder's ``config.yaml``), where the scenario came from, and the study's
    ``seeds`` and ``threads``. Raises :class:`ConfigError` (one line) when the folder is not a
    resumable run."""
    path = Path(folder) / "config.yaml"
    if not Path(folder).is_dir():
        raise ConfigError(f"--resume: {folder} is not a folder")
    if not path.is_file():
        raise ConfigError(
            f"--resume: {folder} has no config.yaml, so it is not a run folder (or it never started)"
        )
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"--resume: {path} is not valid YAML ({yaml_problem(exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("arms"), dict) or "scenario" not in data:
        raise ConfigError(f"--resume: {path} lacks 'scenario' and 'arms'; it was not written by recsim run")
    if "distributed" in data:
        raise ConfigError(f"--resume: {folder} was a --distributed run; sharded runs cannot be resumed")
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(m, str) for m in plugins):
        raise ConfigError(f"--resume: {path}: 'plugins' is not a list of module names")
    load_plugins(plugins)  # the components the run's arms were resolved with
    configs = {}
    for arm, raw in data["arms"].items():
        if not isinstance(raw, dict):
            raise ConfigError(f"--resume: {path}: arm '{arm}' is not a config mapping")
        configs[str(arm)] = validate(raw, str(arm))
    source = str(data.get("source", data["scenario"]))
    known = builtin_scenarios()
    if source in known:
        sc = known[source]
        if not isinstance(sc, Scenario):
            raise ConfigError(f"--resume: scenario '{source}' is not a round loop and cannot be resumed")
        if set(sc.arms) != set(configs) and set(sc.amplified().arms) == set(configs):
            sc = sc.amplified()  # a run of --amplification
        if set(sc.arms) != set(configs):
            raise ConfigError(
                f"--resume: {path} names arms {sorted(configs)}, scenario '{source}' has {sorted(sc.arms)}"
            )
    else:  # a scenario file: what the run needs of it is in config.yaml
        sc = Scenario(
            name=str(data["scenario"]),
            description="",
            arms={a: {} for a in configs},
            plot=tuple(data.get("plot", DEFAULT_PLOT)),
            table=tuple(data.get("table", DEFAULT_TABLE)),
            reference=data.get("reference"),
        )
    seeds = data.get("seeds") or [next(iter(configs.values())).seed]
    threads = data.get("threads")
    if not all(isinstance(s, int) for s in seeds) or not (threads is None or isinstance(threads, int)):
        raise ConfigError(f"--resume: {path}: 'seeds' must be a list of integers and 'threads' an integer")
    window = data.get("window")
    if window is not None and not (
        isinstance(window, list) and len(window) == 2 and all(isinstance(r, int) for r in window)
    ):
        raise ConfigError(f"--resume: {path}: 'window' must be [FIRST, LAST] rounds or null")
    saved = {"seeds": tuple(seeds), "threads": threads, "window": tuple(window) if window else None}
    return sc, configs, source, saved
