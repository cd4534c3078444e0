"""The package layout of docs/architecture.md holds: the import-linter contracts in pyproject.toml are
kept, no module takes part in an import circle (imports inside functions count), and the top of the
package holds only the public doors, the leaves and the one-release forwards of moved names."""

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
DOORS_AND_LEAVES = {"__init__", "__main__", "api", "errors", "files", "console", "interrupts"}
FORWARDS = {"schema", "build_folder"}  # moved names documented in docs/API_REFERENCE.md, kept one release
PACKAGES = {"config", "adapters", "models", "formats", "quantization", "build", "records", "process", "cli"}


def test_the_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout and "broken" in done.stdout


def _circles(graph: "grimp.ImportGraph") -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_is_part_of_an_import_circle():
    graph = grimp.build_graph("exporter", cache_dir=None)
    assert "exporter.cli.app" in graph.modules and graph.find_modules_directly_imported_by("exporter.cli.app")
    assert _circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    graph = grimp.ImportGraph()
    for module in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(module)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.z")
    graph.add_import(importer="a.z", imported="a.x")
    assert _circles(graph) == [["a.x", "a.y", "a.z"]]


def test_the_top_of_the_package_holds_only_doors_leaves_and_packages():
    top = ROOT / "src" / "exporter"
    modules = {p.stem for p in top.glob("*.py")}
    packages = {p.name for p in top.iterdir() if (p / "__init__.py").is_file()}
    assert modules == DOORS_AND_LEAVES | FORWARDS
    assert packages == PACKAGES


def test_a_moved_name_still_works_and_says_where_it_went():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from exporter.build_folder import BuildLocked
        from exporter.schema import QuantizationConfig
    from exporter.build.folder import BuildLocked as moved_lock
    from exporter.config.schema import QuantizationConfig as moved_config

    assert BuildLocked is moved_lock and QuantizationConfig is moved_config
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any("exporter.build.folder.BuildLocked" in m for m in messages)
    assert any("exporter.config.schema.QuantizationConfig" in m for m in messages)
