"""The architecture holds: the layer order of rlbench's packages, and record names defined once.

The import graph is read with ``ast`` from the sources (every import, also those inside
functions), so a lazy import that climbs a layer is caught as surely as one at the top.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlbench.tracking import schema

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rlbench", "hydra_plugins")

#: lowest first; a module may import its own layer or lower ones (prefix match, longest wins)
LAYERS: dict[str, int] = {
    "rlbench.errors": 0,
    "rlbench.config": 0,
    "rlbench.cli": 0,
    "rlbench": 1,  # the package's __init__ registers the environments, nothing else
    "rlbench.envs": 1,
    "rlbench.agents": 2,
    "rlbench.tracking": 3,
    "rlbench.run": 4,
    "rlbench.train": 4,  # old path, re-exports rlbench.run
    "rlbench.forecast": 4,
    "rlbench.results": 5,
    "rlbench.analysis": 5,  # old path, re-exports rlbench.results.analysis
    "rlbench.report": 5,  # old path, re-exports rlbench.results.stats and .plots
    "rlbench.serve": 6,
    "rlbench.offline": 6,
    "rlbench.live": 7,
}
#: what the sweeper plugin may import from rlbench (Hydra imports it at every app's start)
PLUGIN = "hydra_plugins.rlbench_optuna_sweeper"
PLUGIN_MAY_IMPORT = (
    "rlbench.errors", "rlbench.config", "rlbench.tracking", "rlbench.run.trial",
    "rlbench.run.job_checks",
)  # fmt: skip
#: every Hydra plugin of ours -> what it may import from rlbench
PLUGINS = {
    PLUGIN: PLUGIN_MAY_IMPORT,
    "hydra_plugins.rlbench_grid_sweeper": (
        "rlbench.errors",
        "rlbench.config",
        "rlbench.run.job_checks",
    ),
}
SHIMS = {"analysis.py", "train.py"}  # old import paths kept as re-exports
MAX_TOP_LEVEL_MODULES = 5


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of rlbench and the plugin."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source (most specific name:
    ``from rlbench.tracking import schema`` is an edge to ``rlbench.tracking.schema``)."""
    known = modules(root)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def layer(module: str) -> int | None:
    """The layer of an rlbench module by its longest matching prefix (the root package only
    for itself); None if it has none."""
    matches = [p for p in LAYERS if module == p or (p != "rlbench" and module.startswith(p + "."))]
    return LAYERS[max(matches, key=len)] if matches else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every edge against the layer order or the plugin's allowance, and modules without a layer."""
    bad = []
    for source, targets in sorted(graph.items()):
        plugin = next((p for p in PLUGINS if source.startswith(p)), None)
        if plugin is not None:
            may = PLUGINS[plugin]
            for target in sorted(targets):
                allowed = target.startswith(plugin) or any(
                    target == p or target.startswith(p + ".") for p in may
                )
                if not allowed:
                    bad.append(f"{source} -> {target} (the plugin may import {may})")
            continue
        mine = layer(source)
        if mine is None:
            bad.append(f"{source} has no layer: add its package to LAYERS")
            continue
        for target in sorted(targets):
            theirs = layer(target)
            if theirs is None:
                bad.append(f"{source} -> {target} (rlbench imports the sweeper plugin)")
            elif theirs > mine:
                bad.append(f"{source} (layer {mine}) -> {target} (layer {theirs})")
    return bad


def test_the_layers_hold_and_nothing_imports_in_a_circle():
    graph = import_graph(ROOT)
    assert violations(graph) == []
    assert cycles(graph) == []


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    """The checker is only as good as the graph: lazy and relative imports are edges too."""
    graph = import_graph(ROOT)
    assert "rlbench.run.resume" in graph["rlbench.run.train"]  # imported inside train()
    assert "rlbench.tracking.schema" in graph["rlbench.run.train"]
    assert f"{PLUGIN}._sweep" in graph[f"{PLUGIN}.rlbench_optuna_sweeper"]  # from ._sweep
    assert "rlbench.run.trial" in graph[f"{PLUGIN}._sweep"]


def test_the_checker_fails_on_a_climbing_import_and_on_a_cycle(tmp_path):
    """A tree with an agent that imports a run module inside a function, and a cycle."""
    files = {
        "rlbench/__init__.py": "",
        "rlbench/errors.py": "",
        "rlbench/agents/__init__.py": "def f():\n    from rlbench.run import job\n",
        "rlbench/run/__init__.py": "",
        "rlbench/run/job.py": "from . import loop\n",
        "rlbench/run/loop.py": "import rlbench.run.job\n",
        "rlbench/newthing.py": "",
        "hydra_plugins/rlbench_optuna_sweeper/__init__.py": "from rlbench.run import job\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert violations(graph) == [
        f"{PLUGIN} -> rlbench.run.job (the plugin may import {PLUGIN_MAY_IMPORT})",
        "rlbench.agents (layer 2) -> rlbench.run.job (layer 4)",
        "rlbench.newthing has no layer: add its package to LAYERS",
    ]
    assert cycles(graph) == [["rlbench.run.job", "rlbench.run.loop"]]


def test_few_plain_modules_sit_at_the_top_of_the_package():
    top = sorted(p.name for p in (ROOT / "rlbench").glob("*.py") if p.name != "__init__.py")
    plain = [name for name in top if name not in SHIMS]
    assert len(plain) <= MAX_TOP_LEVEL_MODULES, plain


@pytest.mark.parametrize("package", ["envs", "agents", "tracking", "run", "results", "serve",
                                     "offline", "live", "forecast"])  # fmt: skip
def test_every_package_says_what_it_may_import(package):
    doc = ast.get_docstring(ast.parse((ROOT / "rlbench" / package / "__init__.py").read_text()))
    assert doc and re.search(r"may import|imports nothing", doc, re.IGNORECASE), package


# --------------------------------------------------------------------------- record names
#: an rlbench tag key or Optuna attribute name, e.g. "rlbench.run_key", "rlbench.best."
TAG_KEY = re.compile(r"^rlbench\.[a-z_]+(\.[a-z_]+)*\.?$")
#: a metric name or metric namespace, e.g. "eval/mean_return", "sweep/n_"
METRIC = re.compile(r"^(eval|val|test|train|sweep)/")


def _artifact_names() -> set[str]:
    """The schema's file names and artifact paths (those with a dot or a slash)."""
    return {
        value
        for key, value in vars(schema).items()
        if key.endswith(("_ARTIFACT", "_FILE")) and isinstance(value, str)
    }


def strings(path: Path) -> Iterator[tuple[int, str]]:
    """Every string literal of a source file (f-string pieces too), with its line."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def misplaced_names(root: Path) -> list[str]:
    """Record names spelled outside ``rlbench/tracking/schema.py``."""
    known = set(modules(root))
    artifacts = _artifact_names()
    found = []
    for name, path in modules(root).items():
        if name == "rlbench.tracking.schema":
            continue
        for line, text in strings(path):
            is_tag = TAG_KEY.match(text) and text.rstrip(".") not in known
            if is_tag or METRIC.match(text) or text in artifacts:
                found.append(f"{path.relative_to(root)}:{line}: {text!r}")
    return sorted(found)


def test_record_names_are_spelled_only_in_the_schema():
    assert misplaced_names(ROOT) == []


def test_the_record_name_check_finds_a_stray_tag_metric_and_artifact(tmp_path):
    (tmp_path / "rlbench" / "tracking").mkdir(parents=True)
    (tmp_path / "rlbench" / "tracking" / "schema.py").write_text('X = "rlbench.run_key"\n')
    (tmp_path / "rlbench" / "job.py").write_text(
        'import logging\nlog = logging.getLogger("rlbench.job")\n'  # a module name: fine
        'TAG = "rlbench.run_key"\n'
        'def f(k):\n    return {f"sweep/n_{k}": 1, "eval/mean_return": 2}\n'
        f"PATH = {schema.EPISODES_ARTIFACT!r}\n"
    )
    assert misplaced_names(tmp_path) == [
        "rlbench/job.py:3: 'rlbench.run_key'",
        "rlbench/job.py:5: 'eval/mean_return'",
        "rlbench/job.py:5: 'sweep/n_'",
        f"rlbench/job.py:6: {schema.EPISODES_ARTIFACT!r}",
    ]


def test_the_first_line_helper_is_defined_once():
    """One ``first_line`` (in rlbench.errors): no look-alike by name or by body elsewhere."""
    by_name, by_body = [], []
    for name, path in modules(ROOT).items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and re.fullmatch(
                r"_?(first(_line)?|one_line)", node.name
            ):
                by_name.append(f"{name}.{node.name}")
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Constant)
                and node.slice.value == 0
                and "splitlines" in ast.unparse(node.value)
            ):
                by_body.append(f"{name}:{node.lineno}")
    assert by_name == ["rlbench.errors.first_line"]
    assert [b for b in by_body if not b.startswith("rlbench.errors:")] == []


# --------------------------------------------------------------------------- old import paths
def test_old_import_paths_still_work():
    """Notebooks and users import these; they are the new modules themselves."""
    import rlbench.analysis
    import rlbench.report.plots
    import rlbench.report.stats
    import rlbench.results.analysis
    import rlbench.results.plots
    import rlbench.results.stats
    import rlbench.run.main
    import rlbench.train
    from rlbench.report import stats

    assert rlbench.analysis is rlbench.results.analysis
    assert rlbench.report.stats is rlbench.results.stats is stats
    assert rlbench.report.plots is rlbench.results.plots
    assert rlbench.train.main is rlbench.run.main.main
    assert callable(rlbench.analysis.load_runs) and callable(stats.compare)
