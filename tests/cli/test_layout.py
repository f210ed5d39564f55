"""The command line's layout (issue 25): the flags are read in the parser, the resolver and the thin
command modules only; a stage takes its own config, never the flags nor the whole spec; the
folders import one way down.

    cli/__init__.py, parser.py     parse, dispatch
    cli/commands/                   one thin module per command (+ one_run: the stages of one run)
    cli/resolve/                    flags + data + stored config.json -> one frozen Spec
    cli/stages/                     prepare, build, fit, select, evaluate (each its own config)
    cli/store/                      the run folder: safe writes, checkpoints, reports, logs
    cli/spec.py, metrics.py, errors.py   leaves

Read from the source with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

CLI = Path(__file__).resolve().parents[2] / "src" / "fusedfocal" / "cli"
READ_ARGS = ("__init__.py", "parser.py", "resolve/", "commands/")  # where the Namespace may be read
RANK = {"errors": 0, "spec": 0, "metrics": 0, "store": 1, "stages": 2, "resolve": 3, "commands": 4, "parser": 5,
        "__init__": 5}


def _modules():
    return {p.relative_to(CLI).as_posix(): ast.parse(p.read_text()) for p in sorted(CLI.rglob("*.py"))}


def _part(rel):
    return rel.split("/")[0].removesuffix(".py")


def test_the_flags_are_read_only_by_the_parser_the_resolver_and_the_commands():
    readers = {rel for rel, tree in _modules().items()
               if any(isinstance(n, ast.Name) and n.id == "args" for n in ast.walk(tree))}
    outside = sorted(r for r in readers if not r.startswith(READ_ARGS))
    assert not outside, f"modules below the commands that read the argparse Namespace: {outside}"
    assert any(r.startswith("resolve/") for r in readers) and "__init__.py" in readers  # it sees them


def test_stages_and_the_store_take_their_own_config():
    bad = []
    for rel, tree in _modules().items():
        if _part(rel) not in ("stages", "store"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [a.arg for a in node.args.args + node.args.kwonlyargs]
                bad += [f"{rel}::{node.name}({n})" for n in names if n in ("args", "spec")]
    assert not bad, f"stage functions that take the flags or the whole spec: {bad}"


def test_the_folders_import_one_way_down():
    up = []
    for rel, tree in _modules().items():
        here = RANK[_part(rel)]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fusedfocal.cli"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                for target in targets:
                    rest = target.split(".")[2:]
                    if rest and rest[0] in RANK and RANK[rest[0]] > here:
                        up.append(f"{rel} -> {'.'.join(rest[:2])}")
    assert not up, f"imports up the layers (commands > resolve > stages > store > leaves): {sorted(set(up))}"


def test_each_command_is_a_thin_module():
    for rel, tree in _modules().items():
        if rel.startswith("commands/") and rel != "commands/__init__.py":
            lines = len((CLI / rel).read_text().splitlines())
            assert lines <= 200, f"{rel}: {lines} lines; a command parses, resolves, runs stages and reports"
