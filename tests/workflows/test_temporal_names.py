"""The names Temporal knows the code by stay as they are, so runs in flight keep working.

A recorded history and a running run refer to workflows, activities, updates, queries and
signals by name, and callers match failures by `ApplicationError.type`; renaming any of them
in code would strand what is already running (an update's name is what a pause or cancel of a
running run is sent as). Every such name is written explicitly in its decorator, and this test
compares what the workers register, and every `ApplicationError` type raised in workflows/ and
activities/, with the committed snapshot temporal_names.json beside it.

A new name is an addition to the snapshot, a changed one a break. After adding a workflow,
activity, handler or error type on purpose, regenerate the snapshot and commit it:

    PENNANT_UPDATE_TEMPORAL_NAMES=1 .venv/bin/python -m pytest -q tests/workflows/test_temporal_names.py
"""

from __future__ import annotations

import ast
import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers.registry import activity_definitions, workflow_definitions
from tests.helpers.stack import ROOT
from workers.tenant_workers import WORKFLOWS

SNAPSHOT = Path(__file__).with_name("temporal_names.json")
# The code whose names Temporal records: workflow code and the activities it schedules.
PACKAGES = ("workflows", "activities")
# Decorators whose name is recorded in histories or sent by callers, so must be explicit.
NAMED_DECORATORS = {("workflow", "defn"), ("workflow", "query"), ("workflow", "update"), ("workflow", "signal"),
                    ("activity", "defn")}  # fmt: skip


def _modules() -> Iterator[tuple[str, ast.Module]]:
    """Every module of PACKAGES, by dotted name, parsed."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            yield dotted, ast.parse(path.read_text(), filename=str(path))


def _decorator_key(node: ast.expr) -> tuple[str, str] | None:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
        return target.value.id, target.attr
    return None


def _error_types() -> tuple[list[str], list[str]]:
    """The `type` of every `ApplicationError(...)` in PACKAGES, and the calls whose type is not a
    string or a module-level constant (a type worked out at run time cannot be snapshotted)."""
    types: set[str] = set()
    unresolved: list[str] = []
    for dotted, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called != "ApplicationError":
                continue
            arg = next((k.value for k in node.keywords if k.arg == "type"), None)
            if arg is None:
                continue  # an untyped error: nothing matches on it
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                types.add(arg.value)
            elif isinstance(arg, ast.Name) and isinstance(getattr(importlib.import_module(dotted), arg.id, None), str):
                types.add(getattr(importlib.import_module(dotted), arg.id))
            else:
                unresolved.append(f"{dotted}:{node.lineno}")
    return sorted(types), unresolved


async def _current() -> dict[str, Any]:
    """What the workers register (workers.tenant_workers.WORKFLOWS, workers.main.build_activities)
    and the error types, in the snapshot's shape."""
    workflows: dict[str, Any] = {}
    for defn in workflow_definitions():
        assert defn.name is not None, f"{defn.cls.__name__} is a dynamic workflow"
        workflows[defn.name] = {
            "queries": sorted(name for name in defn.queries if name is not None),
            "signals": sorted(name for name in defn.signals if name is not None),
            "updates": sorted(name for name in defn.updates if name is not None),
        }
    names = [defn.name for defn in await activity_definitions()]
    assert len(names) == len(set(names)), f"an activity registered twice: {names}"
    error_types, _ = _error_types()
    return {"workflows": workflows, "activities": sorted(names), "application_error_types": error_types}


async def test_registered_names_match_the_snapshot() -> None:
    current = await _current()
    if os.environ.get("PENNANT_UPDATE_TEMPORAL_NAMES"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    committed = json.loads(SNAPSHOT.read_text())
    assert current == committed, (
        "a Temporal name or ApplicationError type changed; a rename strands runs in flight (keep the old "
        "name in the decorator). If only names were added on purpose, regenerate the snapshot as the "
        "module docstring says.\n"
        f"committed: {json.dumps(committed, indent=2)}\ncurrent: {json.dumps(current, indent=2)}"
    )


def test_every_name_is_written_in_its_decorator() -> None:
    """A name Temporal records is never inferred from a Python identifier, which a refactor may rename."""
    implicit: list[str] = []
    for dotted, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            for deco in node.decorator_list:
                if _decorator_key(deco) not in NAMED_DECORATORS:
                    continue
                named = isinstance(deco, ast.Call) and any(k.arg == "name" for k in deco.keywords)
                if not named:
                    implicit.append(f"{dotted}:{deco.lineno} {node.name}")
    assert implicit == [], f"decorators without name=: {implicit}"


def test_every_workflow_is_registered_and_every_error_type_is_a_constant() -> None:
    """The snapshot covers every workflow class in workflows/ (a worker registers each), and every
    error type can be read without running the code."""
    defined = {
        (dotted, node.name)
        for dotted, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(_decorator_key(d) == ("workflow", "defn") for d in node.decorator_list)
    }
    registered = {(cls.__module__, cls.__name__) for cls in WORKFLOWS}
    assert defined == registered, f"workflow classes not registered by workers: {sorted(defined - registered)}"
    _, unresolved = _error_types()
    assert unresolved == [], f"ApplicationError type is neither a string nor a module constant at {unresolved}"
