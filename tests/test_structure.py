"""The import graph of src/rnnkit, read from the source (function-local imports included):
no circles, and the dependency direction the design asks for; every module imports alone."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "rnnkit"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    b = ".".join(base + ([node.module] if node.module else []))
                else:
                    b = node.module or ""
                targets = [f"{b}.{a.name}" if f"{b}.{a.name}" in mods else b for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            edges[m] |= {t for t in targets if t in mods and t != m}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_the_checker_sees_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_dependency_direction():
    g = _graph()

    def reach(m: str) -> set[str]:
        seen, todo = set(), [m]
        while todo:
            for n in g[todo.pop()]:
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    assert reach("rnnkit.cells") <= {"rnnkit.errors"}
    for m in g:
        if m.startswith("rnnkit.kernels"):
            bad = {n for n in g[m] if not n.startswith("rnnkit.kernels")} - {"rnnkit.cells"}
            assert not bad, (m, bad)
    forbidden = {"rnnkit.train", "rnnkit.io", "rnnkit.planner", "rnnkit.fold",
                 "rnnkit.fastpaths"} | {m for m in g if m.startswith("rnnkit.kernels")}
    for m in ("rnnkit.layers", "rnnkit.recurrent"):
        assert not reach(m) & forbidden, (m, reach(m) & forbidden)
    for m in g:
        if m.startswith("rnnkit.tasks"):
            assert not {n for n in reach(m) if n.startswith("rnnkit.cli")}, m


def test_every_module_imports_alone():
    """Each module with no rnnkit module loaded before it (one interpreter: torch stays)."""
    mods = sorted(m for m in _modules() if m != "rnnkit.__main__")
    code = (
        "import importlib, sys, torch\n"
        f"failed = []\nfor m in {mods!r}:\n"
        "    for k in [k for k in sys.modules if k == 'rnnkit' or k.startswith('rnnkit.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n        importlib.import_module(m)\n"
        "    except ImportError as e:\n"
        "        if 'rnnkit' in str(e):\n"
        "            failed.append((m, repr(e)))\n"
        "    except Exception as e:\n        failed.append((m, repr(e)))\n"
        "print(failed)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:]
