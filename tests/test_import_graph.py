"""The package's import graph runs one way: ops -> losses -> _registry ->
keras/legacy (cli above, data beside): no arrow back up, and no circle anywhere,
cli/ included (its commands sit on its stage modules, and no submodule imports
its package's ``__init__``).

Read from the source with ``ast`` (module-level and lazy imports alike).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = {"_version": 0, "ops": 0, "data": 0, "metrics_xmc": 0, "losses": 1, "_registry": 2, "_keras_common": 2, "_head_common": 2, "_head_optim": 2, "_head_storage": 2, "_head_shards": 2, "_head_replicas": 2, "_head_shard_io": 2,
          "keras": 3, "legacy": 3, "profiling": 3, "hub": 3, "distributed": 3, "cli": 4, "__main__": 5}


def _graph():
    mods = {}
    for p in SRC.joinpath("fusedfocal").rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    edges = {}
    for m, p in mods.items():
        out = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                         for a in node.names]
            else:
                continue
            out.update(n for n in names if n in mods and n not in (m, "fusedfocal"))
        edges[m] = out
    return edges


def _layer(m):
    return LAYERS.get(m.split(".")[1] if "." in m else m, 9)


def test_no_arrow_runs_up():
    up = [f"{a} -> {b}" for a, out in _graph().items() for b in out
          if a.split(".")[:2] != b.split(".")[:2] and _layer(b) > _layer(a)]
    assert not up, up


def test_no_circle():
    edges = _graph()

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for b in edges.get(todo.pop(), ()):
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    circles = sorted(a for a in edges if a in reach(a))
    assert not circles, circles


def test_no_cli_module_imports_its_package():
    back = sorted(a for a, out in _graph().items() if a.startswith("fusedfocal.cli.") and "fusedfocal.cli" in out)
    assert not back, back
