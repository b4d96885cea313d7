"""The agreed shape of the code: imports run one way and Prefect stays at the edges.

deployments -> flows -> tasks/<stage> -> tasks/{storage,tracking,runtime} -> models; no stage
imports another stage; ``models`` is torch only; only the flows, the deployments and each
stage's ``tasks.py`` (its thin ``@task`` wrappers) import Prefect.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "train", "infer", "evaluate", "pipeline", "demo")
SHARED = ("storage", "tracking", "runtime")


def _modules() -> list[Path]:
    return sorted(
        p
        for folder in ("flows", "tasks", "models", "deployments")
        for p in (ROOT / folder).rglob("*.py")
    )


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _room(path: Path) -> tuple[str, ...]:
    """('tasks', 'train') for tasks/train/loop.py, ('flows',) for flows/cli.py, ..."""
    parts = path.relative_to(ROOT).parts
    return parts[:2] if parts[0] == "tasks" and len(parts) > 2 else parts[:1]


def _allowed(room: tuple[str, ...], target: tuple[str, ...]) -> bool:
    if room == target:
        return True
    top, target_top = room[0], target[0]
    if top == "models":
        return False
    if top == "tasks":
        if target_top != "tasks" and target_top != "models":
            return False
        if target_top == "models":
            return True
        if room[1] in SHARED:
            return target[1] in SHARED and (room[1], target[1]) != ("storage", "tracking")
        return target[1] in SHARED
    if top == "flows":
        return target_top in ("flows", "tasks", "models")
    return True  # deployments may import anything below them


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path):
    room = _room(path)
    wrong = []
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] in ("flows", "tasks", "models", "deployments"):
            wrong.append(f"{name} (outside the segflow namespace)")
        elif parts[0] == "segflow" and len(parts) > 1:
            target = tuple(parts[1:3]) if parts[1] == "tasks" and len(parts) > 2 else (parts[1],)
            if not _allowed(room, target):
                wrong.append(name)
    assert not wrong, f"{'/'.join(room)} must not import {wrong}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_prefect_only_at_the_edges(path):
    room = _room(path)
    edge = room[0] in ("flows", "deployments") or (room[0] == "tasks" and path.name == "tasks.py")
    uses = {n for n in _imports(path) if n.split(".")[0] == "prefect"}
    assert edge or not uses, f"{path.relative_to(ROOT)} imports {sorted(uses)}"


def test_models_import_torch_and_the_standard_library_only():
    third_party = {"numpy", "prefect", "mlflow", "dask", "distributed", "zarr", "skimage"}
    for path in (ROOT / "models").rglob("*.py"):
        assert not {n.split(".")[0] for n in _imports(path)} & third_party, path
