"""The code's frame, checked: imports run downhill through named layers with no cycle, functions stay
short, and multiprocessing's private names are used only where they were read."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bench"

# Lower layers never import higher ones; a module may import its own layer (no cycle allowed).
LAYERS: dict[int, list[str]] = {
    0: ["bench", "bench.errors", "bench.atomic", "bench._freeze", "bench.gpu", "bench.cache", "bench.machine_lock",
        "bench.bundle_runner",  # standalone: copied into bundles, runs where bench is not installed
        "bench.models", "bench.models.flops", "bench.models.graph", "bench.models.weights", "bench.models.blocks", "bench.models.onnx_zoo", "bench.models.torch_zoo", "bench.backends.tvm_tuning", "bench.process",
        "bench.mp_private", "bench.profiling"],
    1: ["bench.options"],
    2: ["bench.registry"],
    3: ["bench.config", "bench.environment", "bench.models.zoo"],
    4: ["bench.models.freeze", "bench.models.prepare", "bench.models.describe", "bench.inputs", "bench.timing",
        "bench.precision", "bench.goldens", "bench.results"],
    5: ["bench.history", "bench.backends.base", "bench.backends", "bench.backends.ort", "bench.backends.tvm", "bench.backends.tvm_cuda",
        "bench.backends.tensorrt", "bench.validate", "bench.layers"],
    6: ["bench.loadgen", "bench.scenarios", "bench.scenarios.base", "bench.scenarios.single_stream",
        "bench.scenarios.loadgen_base", "bench.scenarios.offline", "bench.scenarios.server", "bench.scenarios.multi_stream",
        "bench.scenarios.max_qps", "bench.report_layers", "bench.report_html"],
    7: ["bench.jobs"],
    8: ["bench.worker", "bench.executors"],
    9: ["bench.references", "bench.rundir", "bench.runner", "bench.verdicts", "bench.ab", "bench.merge", "bench.export", "bench.report",
        "bench.bundle"],
    10: ["bench.cli", "bench.__main__"],
}
LAYER = {m: n for n, mods in LAYERS.items() for m in mods}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skip |= {id(n) for n in ast.walk(node)}
    return skip


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every bench module `name` imports, at module level or inside functions (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            if t in modules:
                found.add(t)
            elif t.rpartition(".")[0] in modules and t.startswith("bench"):
                found.add(t.rpartition(".")[0])
    found.discard(name)
    return found


def test_every_module_has_a_layer():
    unmapped = sorted(set(_modules()) - set(LAYER))
    assert not unmapped, f"put these in tests/test_structure.py LAYERS: {unmapped}"


def test_imports_run_downhill():
    modules = _modules()
    uphill = []
    for name, path in modules.items():
        for target in _imports(name, path, modules):
            if target == "bench":
                continue  # the package itself holds only the version
            if LAYER.get(target, 99) > LAYER.get(name, -1):
                uphill.append(f"{name} (layer {LAYER.get(name)}) imports {target} (layer {LAYER.get(target)})")
    assert not uphill, "\n".join(uphill)


def test_no_import_cycle():
    modules = _modules()
    graph = {n: _imports(n, p, modules) - {"bench"} for n, p in modules.items()}
    seen: dict[str, int] = {}
    cycles = []

    def visit(n: str, stack: list[str]) -> None:
        seen[n] = 1
        for m in graph.get(n, ()):
            if seen.get(m) == 1:
                cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            elif m not in seen:
                visit(m, stack + [m])
        seen[n] = 2

    for n in sorted(graph):
        if n not in seen:
            visit(n, [n])
    assert not cycles, "\n".join(cycles)


LONG = "# longer than 60 lines:"


def test_functions_are_short_or_say_why():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                body = lines[node.lineno - 1:node.end_lineno]
                if size >= 60 and not any(LONG in line for line in body):
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({size} lines)")
    assert not long, "\n".join(long)


def test_private_multiprocessing_names_are_known_here():
    from bench import mp_private

    if not mp_private.version_known():
        pytest.fail(f"bench.mp_private was read on Python {sorted(mp_private.KNOWN)}, not {sys.version_info[:2]}: "
                    "check each private name it uses against this version's multiprocessing, then add it to KNOWN")
    assert mp_private.check() == []
