"""TensorFlow, imported as the suite imports a framework, prints none of its start-up notices; imported plainly,
it does (so the test can tell)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTICE = "All log messages before absl::InitializeLog() is called"


def _import_tensorflow(code: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300, check=True
    )
    return result.stderr


def test_the_suites_framework_import_hides_tensorflows_start_up_notices() -> None:
    assert NOTICE in _import_tensorflow("import tensorflow")  # TensorFlow 2.21 prints it, whatever the env says
    hidden = _import_tensorflow(
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from thread_bench import quiet; quiet.framework_import('tensorflow')"
    )
    assert NOTICE not in hidden and "port.cc" not in hidden, hidden
