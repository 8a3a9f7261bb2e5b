"""No import cycles between the project's own modules (h2crop_core and pipelines): every import counts, also
those inside functions and under ``TYPE_CHECKING``. And the library stays free of Ray."""

import ast
from pathlib import Path

import h2crop_core
import pipelines

PACKAGES = [Path(h2crop_core.__file__).parent, Path(pipelines.__file__).parent]


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            parts = path.relative_to(package.parent).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {target for target in _imported(path) if target in modules and target != name}
        for name, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its modules in order), or None."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        trail.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return trail[trail.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = "done"
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_itself_through_others():
    graph = _import_graph()
    assert (
        "h2crop_core.data.synth.world" in graph
        and "h2crop_core.mapping.region" in graph["h2crop_core.data.synth.region"]
    )
    assert "pipelines.training.steps" in graph["pipelines.training.worker"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_library_does_not_import_ray():
    offenders = {
        name: [n for n in _imported(path) if n == "ray" or n.startswith("ray.")]
        for name, path in _modules().items()
        if name.startswith("h2crop_core")
    }
    assert not {name: found for name, found in offenders.items() if found}


def test_the_architecture_page_names_every_module_of_the_pipelines():
    """docs/architecture.md is the map of the tree: every pipelines module and package is on it."""
    doc = (Path(pipelines.__file__).parents[1] / "docs" / "architecture.md").read_text()
    package = Path(pipelines.__file__).parent
    missing = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py") and path.name not in doc
    ]
    missing += [
        f"{p.name}/" for p in package.iterdir() if p.is_dir() and p.name != "__pycache__" and f"{p.name}/" not in doc
    ]
    assert not missing, f"docs/architecture.md does not name {missing}"
