"""`import sonodiff` is light and the package has no import cycles (DESIGN.md rule 13; issue 13)."""

import ast
import subprocess
import sys
from pathlib import Path

import sonodiff

PKG = Path(sonodiff.__file__).resolve().parent
HEAVY = ("transformers", "librosa", "matplotlib", "tensorboard")


def test_import_sonodiff_loads_no_heavy_dependency():
    code = ("import sys, sonodiff; print(','.join(m for m in %r if m in sys.modules or "
            "any(k.startswith(m + '.') for k in sys.modules)))" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"`import sonodiff` imported {out}"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """sonodiff modules imported anywhere in ``path`` (top level or inside functions), resolved to modules."""
    out = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.split(".")[: -node.level] if path.name != "__init__.py" else name.split(".")[: len(name.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t.startswith("sonodiff"):
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    out.add(t)
    return out


def _package_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    modules = set(files)
    return {m: _imports(p, m, modules) for m, p in files.items()}


def _cycle(graph: dict[str, set[str]], nodes: set[str]) -> list[str] | None:
    """A cycle among ``nodes`` (edges restricted to them), or None."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        colour[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if v not in nodes:
                continue
            if colour.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in colour:
                found = visit(v)
                if found:
                    return found
        stack.pop()
        colour[u] = 2
        return None

    for n in sorted(nodes):
        if n not in colour:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycle_between_modules():
    """No module imports (directly or through others) a module that imports it back; package ``__init__``
    files are left out, since importing ``a.b`` runs ``a/__init__`` by design, not by a dependency."""
    graph = _package_graph()
    nodes = {m for m in graph if (PKG.parent / (m.replace(".", "/") + ".py")).is_file()}
    assert _cycle(graph, nodes) is None, f"import cycle: {' -> '.join(_cycle(graph, nodes))}"


def test_no_import_cycle_between_subpackages():
    """sonodiff.<sub> packages form a DAG (e.g. training may use pipelines or the reverse, never both)."""
    graph = _package_graph()
    subs: dict[str, set[str]] = {}
    for m, deps in graph.items():
        parts = m.split(".")
        if len(parts) < 2:
            continue
        a = parts[1]
        for d in deps:
            dp = d.split(".")
            if len(dp) >= 2 and dp[1] != a:
                subs.setdefault(a, set()).add(dp[1])
    nodes = set(subs) | {d for ds in subs.values() for d in ds}
    nodes.discard("cli")
    assert _cycle(subs, nodes) is None, f"import cycle between subpackages: {' -> '.join(_cycle(subs, nodes))}"
