"""The house's shape: every workload is a folder of its own, and the core never imports a particular one."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import thread_bench
from thread_bench import workloads

ROOT = Path(__file__).resolve().parents[2]
#: Entry points of one workload's own experiment: thin shells at the top, importing downwards on purpose.
WORKLOAD_ENTRY_POINTS = {
    "thread_bench/pingpong.py",
    "thread_bench/weave_map.py",
    "thread_bench/weave_compare.py",
    "thread_bench/held_out.py",
}
#: The registry, the one place that knows the built-in workloads.
REGISTRY = "thread_bench/workloads/__init__.py"


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _core_files() -> list[Path]:
    files = sorted((ROOT / "thread_bench").rglob("*.py")) + sorted((ROOT / "analysis").rglob("*.py"))
    return [
        path
        for path in files
        if not path.relative_to(ROOT).as_posix().startswith("thread_bench/workloads/")
        and path.relative_to(ROOT).as_posix() not in WORKLOAD_ENTRY_POINTS
    ]


def test_the_core_imports_no_particular_workload() -> None:
    """Training, frameworks, backends, measurement, tracking, store, the study and the analysis take a workload
    from the registry and never import one (only the registry knows them)."""
    names = tuple(f"thread_bench.workloads.{name}" for name in workloads.names())
    offenders = {
        path.relative_to(ROOT).as_posix(): sorted(m for m in _imported_modules(path) if m.startswith(names))
        for path in _core_files()
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}


def test_only_the_registry_names_the_builtin_workloads() -> None:
    imported = _imported_modules(ROOT / REGISTRY)
    assert "thread_bench.workloads.thread_density.WORKLOAD" in imported
    assert "thread_bench.workloads.digits.WORKLOAD" in imported


@pytest.mark.parametrize("name", ["thread_density", "digits"])
def test_every_workload_is_a_folder_with_the_same_parts(name: str) -> None:
    folder = ROOT / "thread_bench" / "workloads" / name
    assert {"__init__.py", "config.py", "keys.py", "keras_models.py", "torch_models.py"} <= {
        path.name for path in folder.iterdir()
    }
    assert workloads.get(name).models["torch"] == f"thread_bench.workloads.{name}.torch_models"


@pytest.mark.parametrize(("old", "new"), sorted(thread_bench.MOVED_MODULES.items()))
def test_old_module_names_are_the_moved_modules(old: str, new: str) -> None:
    """Code and models from before the move import the very same module under its old name."""
    assert importlib.import_module(old) is importlib.import_module(new)


def test_old_config_names_still_import() -> None:
    from thread_bench.config import DataConfig, ModelConfig  # type: ignore[attr-defined]
    from thread_bench.workloads.thread_density import config

    assert (DataConfig, ModelConfig) == (config.DataConfig, config.ModelConfig)


def test_every_test_lives_in_a_role_folder() -> None:
    """``tests/<role>/test_*.py`` only: a test file at the top would carry no role marker."""
    from conftest import ROLES

    tests = ROOT / "tests"
    assert sorted(path.name for path in tests.glob("test_*.py")) == []
    assert {path.parent.name for path in tests.rglob("test_*.py")} <= set(ROLES)


def test_an_old_module_name_still_runs_as_a_command(tmp_path: Path) -> None:
    """``python -m thread_bench.data.synthetic`` (README's command before the move) runs the moved module."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "thread_bench.data.synthetic", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m thread_bench.workloads.thread_density.synthetic")
