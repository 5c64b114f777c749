"""The project files agree with the code: MLproject with the command-line parsers, conda.yaml with pyproject."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MLPROJECT = yaml.safe_load((ROOT / "MLproject").read_text())
ENTRY_POINTS = sorted(MLPROJECT["entry_points"])


def _parser_options(module_name: str) -> dict[str, Any]:
    module = importlib.import_module(module_name)
    parser = module.build_parser()
    return {option: action for action in parser._actions for option in action.option_strings}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_entry_point_matches_its_parser(entry: str) -> None:
    spec = MLPROJECT["entry_points"][entry]
    command = " ".join(spec["command"].split())
    match = re.match(r"python -m (thread_bench\.\w+|analysis(?:\.\w+)?)\b", command)
    assert match, f"{entry}: command must be `python -m thread_bench.<module> ...`, got {command!r}"
    options = _parser_options(match.group(1))
    used = dict(re.findall(r"(--[\w-]+) \{(\w+)\}", command))
    assert set(used.values()) == set(spec["parameters"]), f"{entry}: every parameter is passed, once"
    unreachable = sorted(set(options) - set(used) - {"-h", "--help"})
    assert not unreachable, f"{entry}: options `mlflow run -P` cannot set (add them to MLproject): {unreachable}"
    for option, param in used.items():
        assert option in options, f"{entry}: {option} is not an option of {match.group(1)}"
        default = str(spec["parameters"][param].get("default"))
        parser_default = options[option].default
        # One definition of every default: "" defers to the profile/config; anything else must be the same value.
        assert default == "" or default == str(parser_default), (
            f"{entry}: parameter {param} defaults to {default!r} in MLproject but {parser_default!r} in the code"
        )


def test_conda_env_pins_equal_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = set(pyproject["project"]["dependencies"])
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert set(pip_section) == pins
    assert all("==" in pin for pin in pins), "every runtime dependency is pinned exactly"
    assert "python=3.11" in conda["dependencies"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_entry_point_parses_its_defaults_as_mlflow_passes_them(entry: str) -> None:
    """``mlflow run . -e <entry>`` with no ``-P`` passes every parameter's default, an unset one as ``''``: the
    parser must take that (a ``type=float`` option does not)."""
    spec = MLPROJECT["entry_points"][entry]
    command = " ".join(spec["command"].split())
    module = re.match(r"python -m ([\w.]+)", command)
    assert module
    argv = []
    for option, param in re.findall(r"(--[\w-]+) \{(\w+)\}", command):
        argv += [option, str(spec["parameters"][param].get("default", ""))]
    importlib.import_module(module.group(1)).build_parser().parse_args(argv)
