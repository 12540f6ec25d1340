"""The package's plan: no import circle among pipeline's modules, no module reaching up a layer, none too long.

Every import counts, at a module's top or inside a function: `import pipeline.x`, `from pipeline.x import y`,
`from pipeline import x` and relative imports.
"""

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "pipeline"
MAX_LINES = 400
# Each layer may import its own and the layers listed for it, nothing above.
LAYERS = {
    "core": {"core"},
    "training": {"core", "training"},
    "competition": {"core", "report", "competition"},  # a new score redraws the run's report page
    "report": {"core", "report"},
    "stages": {"core", "training", "report", "competition", "stages"},
    "tools": {"core", "training", "competition", "report", "stages", "tools"},
}


def module_names() -> dict[str, Path]:
    """pipeline.core.cache -> its file, for every module of the package (a package by its __init__.py)."""
    names = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The pipeline modules that one module imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # from package import module: the module; from module import name: the module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # import pipeline.a.b: the deepest module that exists
                target = target.rpartition(".")[0]
            if target.startswith("pipeline") and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules, the first repeated at the end), or None."""
    state = {}  # name -> "open" while on the path, "done" after

    def visit(name, path):
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name, [name])
            if cycle:
                return cycle
    return None


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def test_the_graph_reader_sees_every_kind_of_import():
    graph = import_graph()
    assert "pipeline.core.cache" in graph["pipeline.core.stage"]  # from pipeline.core import cache
    assert "pipeline.cli" in graph["pipeline.__main__"]  # from pipeline.cli import main as run_cli
    assert any(target.startswith("pipeline.stages.") for target in graph["pipeline.stages.chain"])


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_module_imports_a_layer_above_its_own():
    wrong = []
    for name, targets in import_graph().items():
        own = layer(name)
        if own is None:
            continue
        for target in sorted(targets):
            other = layer(target)
            if other is None or other not in LAYERS[own]:
                wrong.append(f"{name} (layer {own}) imports {target}")
    assert not wrong, "imports reaching up a layer:\n" + "\n".join(wrong)


def test_the_chain_alone_knows_the_stages_order():
    graph = import_graph()
    importers = {name for name, targets in graph.items() if "pipeline.stages.split" in targets}
    assert importers <= {"pipeline.stages.chain", "pipeline.cli"}, importers


def test_every_module_is_short_enough_to_read():
    long = {name: len(path.read_text().splitlines()) for name, path in module_names().items()}
    long = {name: lines for name, lines in long.items() if lines > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: " + ", ".join(f"{n} ({lines})" for n, lines in long.items())


def test_every_package_says_what_it_holds():
    for init in PACKAGE_DIR.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init.relative_to(PACKAGE_DIR.parent)} has no docstring"
