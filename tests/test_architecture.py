"""The direction of imports (docs/architecture.md): every module may import only from its own layer
or the layers below it, and no two modules import each other, counting imports inside functions.

The layers, lowest first. A new module must be placed here: the test fails on one it cannot place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pi2sim"

# (layer name, module prefixes); a module belongs to the first layer with a matching prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # the tier registry is data (names, module paths) the run configuration lists: it sits with the
    # infrastructure and imports no pi2sim module (checked below); it loads a tier only to run it
    ("infrastructure", ("pi2sim.errors", "pi2sim.units", "pi2sim.schema", "pi2sim.yamlio", "pi2sim.atomic",
                        "pi2sim.resources", "pi2sim.paths", "pi2sim.diskcache", "pi2sim.config", "pi2sim.version", "pi2sim.engine.tiers")),
    ("specs", ("pi2sim.specs",)),
    ("trace", ("pi2sim.trace",)),
    ("access", ("pi2sim.access",)),
    ("engine", ("pi2sim.engine",)),
    ("policies", ("pi2sim.policies",)),
    ("report", ("pi2sim.report",)),
    ("simulation", ("pi2sim.simulation",)),
    ("workflows", ("pi2sim.workflows",)),
    ("commands", ("pi2sim.commands", "pi2sim.cli", "pi2sim.__main__")),
    ("package", ("pi2sim",)),  # the root re-exports the public API (lazily); nothing imports it
]


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


MODULES = _modules()


def layer_of(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise KeyError(module)


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """pi2sim modules an import statement loads (a package for `from pkg import name` unless name
    is a module itself)."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES else stem for a in node.names]
    out = []
    for t in targets:
        if not (t == "pi2sim" or t.startswith("pi2sim.")):
            continue
        while t not in MODULES and "." in t:
            t = t.rsplit(".", 1)[0]
        out.append(t)
    return out


def import_graph() -> dict[str, set[str]]:
    """Every module's pi2sim imports, at any depth (module level, in functions, under TYPE_CHECKING)."""
    graph = {}
    for name, path in MODULES.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(t for t in _resolve(name, node) if t != name)
        graph[name] = deps
    return graph


GRAPH = import_graph()


def test_every_module_has_a_layer():
    unplaced = []
    for m in MODULES:
        try:
            layer_of(m)
        except KeyError:
            unplaced.append(m)
    assert not unplaced, f"place these modules in a layer of tests/test_architecture.py: {unplaced}"


def test_imports_point_down_the_pipeline():
    """commands -> workflows -> simulation -> report -> policies -> engine -> access -> trace ->
    specs -> infrastructure; a module imports only from its own layer or lower ones."""
    bad = []
    for m, deps in GRAPH.items():
        for d in deps:
            if layer_of(d) > layer_of(m):
                bad.append(f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})")
    assert not bad, "imports pointing up the pipeline:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    """Tarjan's strongly connected components over the whole graph, imports in functions included."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("lower,upper", [("pi2sim.access", "pi2sim.engine"), ("pi2sim.access", "pi2sim.policies"),
                                         ("pi2sim.access", "pi2sim.report"), ("pi2sim.engine", "pi2sim.policies"),
                                         ("pi2sim.engine", "pi2sim.report"), ("pi2sim.simulation", "pi2sim.commands"),
                                         ("pi2sim.workflows", "pi2sim.commands")])
def test_named_rules(lower, upper):
    """The rules docs/architecture.md states in words, checked by name."""
    bad = [(m, d) for m, deps in GRAPH.items() if m == lower or m.startswith(lower + ".")
           for d in deps if d == upper or d.startswith(upper + ".")]
    assert not bad, bad


@pytest.mark.parametrize("tier", ["pi2sim.engine.analytic", "pi2sim.engine.des", "pi2sim.engine.cluster", "pi2sim.engine.timeline_events"])
def test_stage_kinds_do_not_know_the_tiers(tier):
    """The tiers call the stages' methods; a stage module never imports a tier (docs/architecture.md)."""
    bad = [m for m, deps in GRAPH.items() if m.startswith("pi2sim.engine.stages") and tier in deps]
    assert not bad, bad


def test_tier_registry_is_data_only():
    assert GRAPH["pi2sim.engine.tiers"] == set()


def test_the_checker_sees_an_upward_import(tmp_path):
    """The resolver is not vacuous: a function-level relative import in an engine module that
    reached into policies would be found."""
    src = "def f():\n    from ..policies import base\n"
    node = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom))
    assert _resolve("pi2sim.engine.analytic", node) == ["pi2sim.policies.base"]
    assert layer_of("pi2sim.policies.base") > layer_of("pi2sim.engine.analytic")
