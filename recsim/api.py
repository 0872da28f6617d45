"""The Python API for scenario scripts and Jupyter: run a study, load one, read it back.

>>> import recsim
>>> result = recsim.run("exploration", seeds=2, rounds=2, tracking=False,
...                     overrides={"world": {"n_users": 120, "n_items": 60}, "metrics.panel_users": 8})
>>> result.metrics.select("arm", "seed").unique().height   # 5 arms x 2 seeds
10
>>> result.summary(["gold"]).columns
['arm', 'metric', 'mean', 'sd', 'n', 'low', 'high']
>>> result.compare(reference="random", metrics=["gold"]).filter(arm="oracle")["distinguishable"].item()
True
>>> recsim.load(result.out).metrics.equals(result.metrics)
True
>>> result.close()
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from recsim.core.config import ConfigError, Section, load_yaml, refuse_unknown
from recsim.io.logs import LogError, unreadable
from recsim.io.paths import check_output_folder
from recsim.scenario import Scenario, _from_mapping, load_scenario

__all__ = ["Result", "load", "run", "scenarios"]


def run(
    scenario: str | Path | Scenario | Mapping[str, Any],
    *,
    seeds: int | Sequence[int] | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    rounds: int | None = None,
    out: str | Path | None = None,
    workers: int = 0,
    threads: int | None = None,
    ray_address: str | None = None,
    window: tuple[int, int] | None = None,
    tracking: bool | None = None,
    quick: bool = False,
    amplification: bool = False,
    plugins: Sequence[str] = (),
) -> Result:
    """Run every arm of ``scenario`` on every seed; returns the :class:`Result`.

    Args:
        scenario: a built-in name, a YAML path, a :class:`~recsim.scenario.Scenario`, or a mapping
            with its keys (``name``, ``arms``, and optionally ``description``, ``base``, ``plot``,
            ``table``, ``reference``).
        seeds: n (seeds 0..n-1) or a list; None: the configs' own seed.
        overrides: for every arm, a mapping (nested, or with dotted keys; a value may be a config
            section object such as ``WorldConfig(...)``), or ``"dotted.key=value"`` strings.
            ``{"arms": {ARM: {...}}}`` overrides one arm. Bad ones raise :class:`ConfigError`.
        rounds: override ``loop.rounds``.
        out: the run folder (new or empty); None: a temporary folder the Result owns (removed by
            :meth:`Result.close`).
        workers, threads, ray_address, window: as ``recsim run`` (see
            :class:`recsim.core.runner.Study`).
        tracking: log to MLflow (None: the configs' ``tracking.enabled``).
        quick: apply the scenario's small preset (its ``quick`` overrides) before ``overrides``.
        amplification: add each arm's open-loop companions (``ARM@open``, ``ARM@random``: see
            :meth:`recsim.scenario.Scenario.amplified`); :meth:`Result.amplification` reads them.
        plugins: modules to import first (they register components; as ``recsim run --plugins``).
            Every module that registered a component, these and any other, is imported again by
            each Ray worker; a registration made in the running script itself cannot be, so with
            ``workers`` it is refused.
    """
    from recsim.core.registry import load_plugins
    from recsim.core.runner import Study, study_window

    load_plugins(plugins)
    sc = _scenario(scenario)
    if amplification:
        if not hasattr(sc, "amplified"):
            raise ConfigError(f"scenario '{sc.name}' is not a round loop; amplification is for loops")
        sc = sc.amplified()
    texts = _override_strings(overrides)
    if quick:
        if not getattr(sc, "quick", ()):
            raise ConfigError(f"scenario '{sc.name}' has no quick preset")
        texts = [*sc.quick, *texts]
    if tracking is not None:
        texts.append(f"tracking.enabled={str(tracking).lower()}")
    configs = sc.resolve(texts, rounds=rounds)
    if isinstance(seeds, int):
        seeds = tuple(range(seeds))
    picked = tuple(seeds) if seeds is not None else (next(iter(configs.values())).seed,)
    if not picked or len(set(picked)) != len(picked):
        raise ConfigError(f"seeds must be distinct, got {list(picked)}")
    if ray_address:
        from recsim.core.parallel import check_ray_address

        check_ray_address(ray_address)
    study = Study(
        seeds=picked,
        threads=threads,
        workers=workers,
        ray_address=ray_address,
        window=study_window(sc, configs, window),
    )
    study.plugins()  # what Ray workers must import: refused before anything is written
    owned = None
    if out is None:
        owned = tempfile.TemporaryDirectory(prefix=f"recsim-{sc.name}-")
        out = Path(owned.name) / "run"
    out = Path(out)
    check_output_folder(out, "out")
    tracker = None
    settings = sc.tracking(configs)
    if settings.enabled:
        from recsim.io.tracking import MlflowTracker

        tracker = MlflowTracker(settings.uri, settings.experiment or sc.name)
        tracker.check()
    sc.run(configs, out, tracker, study=study, source=sc.name)
    return Result(out, _owner=owned)


def scenarios() -> dict[str, Scenario]:
    """Every built-in and registered scenario by name (``recsim scenarios`` lists them)."""
    from recsim.scenario import builtin_scenarios

    return builtin_scenarios()


def load(folder: str | Path) -> Result:
    """The :class:`Result` of a run folder written by ``recsim run`` or :func:`run`."""
    folder = Path(folder)
    if not (folder / "config.yaml").is_file() or not (folder / "metrics.parquet").is_file():
        raise ConfigError(f"{folder} is not a run folder (no config.yaml and metrics.parquet)")
    return Result(folder)


class Result:
    """A run folder, read back.

    Attributes:
        out: the folder.
        config: what ``config.yaml`` holds (scenario, seeds, reference, every arm's config).
    """

    def __init__(self, out: Path, _owner: Any = None) -> None:
        self.out = Path(out)
        self._owner = _owner
        path = self.out / "config.yaml"
        try:
            config = load_yaml(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise LogError(f"{path} is unreadable (damaged or not ours): {first}") from None
        if config is not None and not isinstance(config, dict):
            raise LogError(f"{path} is not a run's config (a mapping of scenario, seeds and arms)")
        self.config: dict[str, Any] = config or {}
        self._metrics: pl.DataFrame | None = None

    def __repr__(self) -> str:
        arms, seeds = list(self.config.get("arms", {})), self.config.get("seeds", [])
        return f"Result({self.config.get('scenario')!r}, arms={arms}, seeds={seeds}, out={str(self.out)!r})"

    @property
    def metrics(self) -> pl.DataFrame:
        """metrics.parquet: one row per arm, seed and round."""
        if self._metrics is None:
            path = self.out / "metrics.parquet"
            try:
                self._metrics = pl.read_parquet(path)
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise unreadable(path, exc) from None
        return self._metrics

    @property
    def table(self) -> list[str]:
        """The scenario's summary metrics."""
        return [m for m in self.config.get("table", []) if m in self.metrics.columns]

    @property
    def reference(self) -> str:
        """The arm the others are compared with."""
        return self.config.get("reference") or self.metrics["arm"][0]

    @property
    def window(self) -> tuple[int, int] | None:
        """The rounds (first, last) the run's summary read (None: the final round): ``--window``,
        or the scenario's declared final rounds."""
        window = self.config.get("window")
        return (int(window[0]), int(window[1])) if window else None

    def _names(self, metrics: Sequence[str] | None, default: Sequence[str] | None = None) -> list[str]:
        """``metrics`` (or the default), each a metric of this run: an unknown name is a
        :class:`ConfigError` naming its close matches, and so is a metric some units have and
        others lack (a value a worker could not compute is an error, not an absence)."""
        if isinstance(metrics, str):
            raise ConfigError(f"metrics must be a list of names, got the string {metrics!r}")
        names = list(metrics) if metrics is not None else list(default if default is not None else self.table)
        frame = self.metrics
        known = [c for c in frame.columns if c not in ("arm", "seed", "domain", "round")]
        refuse_unknown(names, known)
        from recsim.core.stats import missing_units

        gap = missing_units(frame, names)
        if gap is not None:
            raise ConfigError(gap)
        return names

    def summary(
        self, metrics: Sequence[str] | None = None, window: tuple[int, int] | None = None
    ) -> pl.DataFrame:
        """Per arm and metric: mean over seeds, sd, n and the 95% t-interval (``low``, ``high``) of
        the mean over the rounds ``window`` (None: the run's own :attr:`window`)."""
        from recsim.core.stats import describe

        return describe(self.metrics, self._names(metrics), window or self.window)

    def compare(
        self,
        reference: str | None = None,
        metrics: Sequence[str] | None = None,
        window: tuple[int, int] | None = None,
    ) -> pl.DataFrame:
        """Per arm but ``reference`` and metric: the paired difference to ``reference`` over seeds
        (each seed's mean over ``window``, None: the run's own :attr:`window`), its 95% interval,
        the paired t-test's p, whether it is distinguishable from 0, the design's minimum
        detectable effect (``mde``) and the seeds that would detect half the difference."""
        from recsim.core.stats import paired

        return paired(self.metrics, self._names(metrics), self._reference(reference), window or self.window)

    def rounds(self, reference: str | None = None, metrics: Sequence[str] | None = None) -> pl.DataFrame:
        """The per-round paired difference to ``reference`` (arm, metric, round, diff, sd, n, low,
        high) and, per arm and metric, ``settles``: the round from which its 95% interval stays
        on one side of zero through the last round (null: it does not settle)."""
        from recsim.core.stats import paired_rounds, settled

        per_round = paired_rounds(self.metrics, self._names(metrics), self._reference(reference))
        return per_round.join(settled(per_round), on=["arm", "metric"], how="left")

    def amplification(
        self, metrics: Sequence[str] | None = None, window: tuple[int, int] | None = None
    ) -> pl.DataFrame:
        """The loop's amplification: per closed-loop arm, feedback ``mode`` of its open-loop
        companion (an arm that differs from it only in ``loop.feedback``, as ``amplification=True``
        adds) and metric, closed - open paired by seed over ``window`` (None: the run's own), with
        the columns of :meth:`compare`. Empty when the run has no such pairs."""
        from recsim.config import validate
        from recsim.core.runner import amplification_pairs
        from recsim.core.stats import amplification

        configs = {arm: validate(raw, arm) for arm, raw in self.config.get("arms", {}).items()}
        pairs = amplification_pairs(configs)
        return amplification(self.metrics, self._names(metrics), pairs, window or self.window)

    def _reference(self, reference: str | None) -> str:
        reference = reference or self.reference
        if reference not in set(self.metrics["arm"]):
            raise ConfigError(
                f"reference must be one of the arms {sorted(set(self.metrics['arm']))}, got {reference!r}"
            )
        return reference

    def plot(self, metrics: Sequence[str] | None = None, path: str | Path | None = None) -> Path:
        """Mean curves over seeds with 95% bands, one panel per metric; returns the PNG."""
        from recsim.io.plots import plot_curves

        path = Path(path) if path is not None else self.out / "curves-api.png"
        names = self._names(
            metrics, [m for m in self.config.get("plot", self.table) if m in self.metrics.columns]
        )
        return plot_curves(self.metrics, names, path)

    def logs(self) -> pl.LazyFrame:
        """Every log partition as one lazy frame (``seed`` and ``round`` from the path)."""
        from recsim.io.logs import scan_logs

        return scan_logs(self.out / "logs")

    def summary_json(self) -> dict[str, Any]:
        """summary.json as written by the run."""
        return json.loads((self.out / "summary.json").read_text())

    def close(self) -> None:
        """Remove the folder if the Result owns it (``out=None``)."""
        if self._owner is not None:
            self._owner.cleanup()
            self._owner = None


def _scenario(scenario: Any) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, Mapping):
        return _from_mapping(dict(scenario), str(scenario.get("name", "scenario")))
    if isinstance(scenario, str | Path):
        return load_scenario(str(scenario))
    raise ConfigError(
        f"scenario must be a name, a YAML path, a Scenario or a mapping, got {type(scenario).__name__}"
    )


def _override_strings(overrides: Any) -> list[str]:
    """``dotted.key=value`` strings of a mapping (nested or dotted; sections dumped) or list."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise ConfigError("overrides must be a mapping or a list of 'dotted.key=value' strings, got a string")
    if not isinstance(overrides, Mapping):
        return [str(o) for o in overrides]
    out: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Section):
            value = value.model_dump(mode="json", exclude_unset=True)
        if isinstance(value, Mapping) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            out.append(f"{prefix}={json.dumps(value)}")

    walk("", overrides)
    return out
