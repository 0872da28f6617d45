"""Plugins: components registered in one's own module reach `recsim run` (--plugins), a resumed run
(config.yaml records them), installed packages (the `recsim.plugins` entry points) and Ray workers;
a registration Ray workers could not import is refused instead of silently missing."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from recsim.core import registry
from recsim.core.config import ConfigError
from recsim.core.runner import Study
from recsim.recsys.measures import METRICS

TESTS = Path(__file__).resolve().parent
PLUGIN = """
from recsim.recsys.config import RANKERS
from recsim.recsys.measures import METRICS

RANKERS.register("category", "extensions.category_ranker:KIND")


def served_relevance(view):
    return {"served_relevance": float(view.fb.true_relevance.mean())}


METRICS.register("served_relevance", served_relevance)
"""
STUDY = {
    "name": "plugged",
    "base": {
        "world": {"n_users": 80, "n_items": 40, "n_clusters": 4},
        "policy": {"slate_size": 5},
        "metrics": {"panel_users": 8},
        "loop": {"rounds": 2},
    },
    "arms": {
        "category": {"ranker": {"name": "category", "prior": 0.3}},
        "random": {"ranker": {"name": "random"}},
    },
}


def recsim_run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "RAY_ADDRESS": ""}  # tests/extensions importable
    cmd = [sys.executable, "-m", "recsim", "run", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "myplug.py").write_text(PLUGIN)
    (tmp_path / "plugged.yaml").write_text(yaml.safe_dump(STUDY))
    return tmp_path


def test_a_plugin_module_named_on_the_command_line_registers_a_ranker_and_a_metric(project: Path) -> None:
    plain = recsim_run(project, "plugged.yaml", "--no-tracking", "-q", "--out", "without")
    assert plain.returncode == 2 and "category" in plain.stderr and not (project / "without").exists()
    run = recsim_run(project, "plugged.yaml", "--plugins", "myplug", "--no-tracking", "-q", "--out", "o")
    assert run.returncode == 0, run.stderr[-800:]
    metrics = pl.read_parquet(project / "o" / "metrics.parquet")
    assert metrics["served_relevance"].is_finite().all() and metrics.height == 4
    assert yaml.safe_load((project / "o" / "config.yaml").read_text())["plugins"] == ["myplug"]
    # --resume reads the plugins from config.yaml: the arms resolve again without --plugins
    again = recsim_run(project, "--resume", "o", "-q")
    assert again.returncode == 0, again.stderr[-800:]
    missing = recsim_run(project, "plugged.yaml", "--plugins", "nosuchplug", "--no-tracking", "--out", "x")
    assert (
        missing.returncode == 2 and "nosuchplug" in missing.stderr and len(missing.stderr.splitlines()) == 1
    )


def test_a_registration_in_the_running_script_is_refused_on_ray_not_lost() -> None:
    namespace = {"__name__": "__main__", "METRICS": METRICS}
    exec("METRICS.register('from_script', lambda view: {})", namespace)  # as a script's top level does
    try:
        assert registry.plugin_registrations()[-1] == ("metric", "from_script", "__main__")
        assert "__main__" not in Study(workers=0).plugins()  # in this process it is simply there
        with pytest.raises(ConfigError, match="metric 'from_script' registered in the running script"):
            Study(workers=2).plugins()
    finally:
        METRICS.unregister("from_script")
    assert ("metric", "from_script", "__main__") not in registry.plugin_registrations()


def test_installed_packages_register_through_the_entry_point_group(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "installed_plug.py").write_text(
        "from recsim.recsys.measures import METRICS\nMETRICS.register('installed', lambda view: {})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    point = importlib.metadata.EntryPoint("mine", "installed_plug", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group: [point] if group == point.group else []
    )
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", None)
    try:
        registry.load_plugins()
        assert "installed" in METRICS and "installed_plug" in registry.plugin_modules()
    finally:
        METRICS.unregister("installed")
        sys.modules.pop("installed_plug", None)
