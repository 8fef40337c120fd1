"""Layers one way, and functions of one job. No module imports a module of a higher layer, at the top of the file or inside
a function (a function-local import is still an import; hiding an upward import in a function
does not make it legal). The layers, bottom to top:

0. methods     the model zoo and the method contract (imports nothing of the harness)
1. core        uwmbench/{errors, config, schemas, rows, run_dir, fileio, lease, store}: config spine, rows,
               run folders, leases, the results store
2. benchmarks  data, training, LIBERO, the evaluator, speed benchmarks, per-run tools
3. sweeps      protocol runs, grids, stage graphs, launchers, tuning;
   analysis    tables, statistics, figures, the report (beside sweeps: neither imports the other)
4. app         uwmbench/{cli, quickstart, __main__}: entry points that compose the layers below
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("methods", "benchmarks", "sweeps", "analysis", "configs")   # the subpackages of uwmbench/
APP = {"cli", "quickstart", "__main__"}
RANK = {"methods": 0, "configs": 0, "core": 1, "benchmarks": 2, "sweeps": 3, "analysis": 3, "app": 4}


def module_name(path: Path) -> str:
    """The import name of a module: its path (no remap; tests/test_packaging.py checks that)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) < 2:
        return "core"
    if parts[1] in FOLDERS:
        return parts[1]
    return "app" if parts[1] in APP else "core"


def imports(path: Path, mod: str | None = None):
    """(line, imported module) of every import of a uwmbench module in ``path`` (module ``mod``)."""
    mod = mod or module_name(path)
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                targets = [".".join(base + ([node.module] if node.module else []))]
            else:
                targets = [node.module or ""]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            if t == "uwmbench" or t.startswith("uwmbench."):
                yield node.lineno, t


def project_files() -> list[Path]:
    return sorted(p for p in (ROOT / "uwmbench").rglob("*.py") if "__pycache__" not in p.parts)


def test_layer_table_covers_every_module():
    names = {layer(module_name(p)) for p in project_files()}
    assert names <= set(RANK), names
    assert {"methods", "core", "benchmarks", "sweeps", "analysis", "app"} <= names


def test_no_module_imports_a_higher_layer():
    bad = []
    for path in project_files():
        src = layer(module_name(path))
        for line, target in imports(path):
            dst = layer(target)
            if RANK[dst] > RANK[src] or (RANK[dst] == RANK[src] and dst != src):
                bad.append(f"{path.relative_to(ROOT)}:{line} ({src}) imports {target} ({dst})")
    assert not bad, "imports against the layers (see this file's docstring):\n" + "\n".join(bad)


def test_the_checker_sees_function_local_and_relative_imports(tmp_path):
    """The rule cannot pass vacuously: an upward import inside a function, and a relative one, are found."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from uwmbench.sweeps.protocol import run_protocol\n    from ..sweeps import grids\n")
    found = [t for _, t in imports(probe, "uwmbench.benchmarks.probe")]
    assert found == ["uwmbench.sweeps.protocol", "uwmbench.sweeps"]
    assert all(RANK[layer(t)] > RANK["benchmarks"] for t in found)


def test_no_function_reaches_100_lines():
    """A function of 100 lines or more is several jobs in one: split it (the evaluator's core was 322)."""
    long = []
    for path in project_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n >= 100:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "\n".join(long)


# import cycles left, counting function-local imports: none (the method registry loads the method
# modules by name; the latent cache's command lives apart from the cache the data loader uses)
KNOWN_CYCLES: list[set[str]] = []


def _module_graph() -> dict[str, set[str]]:
    files = project_files()
    mods = {module_name(p): p for p in files}

    def owner(target: str) -> str:   # `from pkg import name`: the module pkg.name if it is one, else pkg
        while target and target not in mods:
            target = target.rsplit(".", 1)[0] if "." in target else ""
        return target

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for _, t in imports(p, m):
            o = owner(t)
            if o and o != m:
                graph[m].add(o)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_new_import_cycles():
    """Cycles are removed, not hidden in function-local imports: none beyond the known ones."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]   # the finder finds
    new = [sorted(c) for c in _cycles(_module_graph()) if c not in KNOWN_CYCLES]
    assert not new, f"import cycles (function-local imports count): {new}"
