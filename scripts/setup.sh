#!/usr/bin/env bash
# Create (or reuse) the project's environment in .venv: every pinned dependency plus the dev tools.
# Idempotent: a complete .venv is left alone. Override the interpreter with PYTHON=/path/to/python3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if .venv/bin/python -c "import thread_bench, torch, keras, tensorflow, jax, mlflow, pytest, ray, pgserver, psycopg2, tifffile, imagecodecs, flask_wtf" 2>/dev/null; then
    exit 0
fi
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, found {sys.version}"'
"$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch==2.13.0 is pinned in pyproject.toml; on a machine without a local CPU wheel, PyPI serves the CUDA build.
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/python -m pip check
