"""The layering contract: no import circle anywhere, and each package imports only what its layer
may. Imports are read from the source (module level and inside functions alike); imports under
``if TYPE_CHECKING:`` are annotations only and do not count. Registries name lazily loaded
entries by a "module:attr" string, which is not an import.

| package                     | may import (besides itself, torch and third-party packages)      |
|-----------------------------|-------------------------------------------------------------------|
| towers                      | nothing of recsim                                                  |
| recsim.core base modules    | other core base modules                                            |
| recsim.io                   | core base modules                                                  |
| recsim.core engine          | core, io                                                           |
| recsim.mitigations          | core, io                                                           |
| recsim.recsys, recsim.llm   | core, io, mitigations, towers; not each other, not the composition |
| recsim.config, .scenario    | core, io, domains' config modules, mitigations (the composition)   |
| recsim.experiments, .api,   | all of the above                                                   |
| recsim.validation           |                                                                    |
| recsim.cli                  | everything                                                         |
| scenarios                   | recsim.scenario, recsim.experiments (wiring only)                  |
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("recsim", "towers", "scenarios")
CORE_BASE = {
    f"recsim.core.{m}"
    for m in ("config", "errors", "faults", "registry", "rng", "batches", "metrics", "stats")
}
COMPOSITION = ("recsim.config", "recsim.scenario")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports (resolved to modules, not names within them)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pkg import mod" imports the module; "from mod import name" the module
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                for a in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name.split(".")[0] in PACKAGES:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): imports_of(p, modules) for p in paths}
    return {mod: deps - {mod} for mod, deps in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def _in(mod: str, *prefixes: str) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def allowed(src: str, dst: str) -> bool:
    """Whether module ``src`` may import module ``dst`` (see the table above)."""
    if _in(dst, src.split(".")[0] if src.split(".")[0] != "recsim" else ".".join(src.split(".")[:2])):
        return not (src in CORE_BASE and dst.startswith("recsim.core.") and dst not in CORE_BASE)
    if _in(src, "towers"):
        return False
    if src in CORE_BASE or src == "recsim.core":
        return dst in CORE_BASE
    if _in(src, "recsim.io"):
        return dst in CORE_BASE
    if _in(src, "recsim.core"):
        return _in(dst, "recsim.core", "recsim.io")
    if _in(src, "recsim.mitigations"):
        return _in(dst, "recsim.core", "recsim.io")
    if _in(src, "recsim.recsys", "recsim.llm"):
        return _in(dst, "recsim.core", "recsim.io", "recsim.mitigations", "towers")
    if src in COMPOSITION:
        return _in(dst, "recsim.core", "recsim.io", "recsim.mitigations", *COMPOSITION) or dst in (
            "recsim.recsys.config",
            "recsim.llm.config",
            "scenarios",
        )
    if _in(src, "recsim.experiments", "recsim.api", "recsim.validation"):
        return not _in(dst, "recsim.cli", "scenarios")
    if _in(src, "recsim.cli") or src == "recsim.__main__":
        return True
    if _in(src, "scenarios"):
        return _in(dst, "recsim.scenario", "recsim.experiments")
    return _in(dst, "recsim.core", "recsim.api", "recsim.scenario")  # recsim itself (lazy API)


def violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{src} -> {dst}" for src, deps in graph.items() for dst in deps if not allowed(src, dst))


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_every_import_respects_the_layers():
    assert violations(import_graph()) == []


def test_the_graph_sees_function_level_imports_and_skips_type_checking_ones():
    graph = import_graph()
    assert "recsim.recsys.behavior" in graph["recsim.recsys.config"]  # inside a validator
    assert "recsim.config" not in graph["recsim.recsys.world"]  # only under TYPE_CHECKING
    assert graph["towers.ranking"] == {"towers.mmoe", "towers.position", "towers.torchrec_modules"}


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"x": {"x.y"}, "x.y": {"x"}}, ["x", "x.y", "x"]),
    ],
)
def test_the_cycle_finder_finds_circles(graph, expected):
    assert find_cycle(graph) == expected


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("recsim.core.runner", "recsim.recsys.domain"),  # the engine importing a domain
        ("recsim.core.loop", "recsim.cli"),
        ("recsim.recsys.domain", "recsim.llm.tasks"),  # domains importing each other
        ("recsim.llm.domain", "recsim.recsys.world"),
        ("recsim.recsys.world", "recsim.config"),  # a domain importing the composition
        ("recsim.io.logs", "recsim.core.runner"),
        ("recsim.core.rng", "recsim.io.logs"),
        ("towers.mmoe", "recsim.core.rng"),
        ("scenarios.feedback_loop", "recsim.recsys.domain"),
    ],
)
def test_the_contract_refuses(src, dst):
    assert not allowed(src, dst)
    assert violations({src: {dst}}) == [f"{src} -> {dst}"]
