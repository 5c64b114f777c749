"""Models users logged with an earlier version still load and predict the same.

``tests/fixtures/legacy_models/`` holds MLflow models logged by the real training code of an earlier commit
(``manifest.json`` says which; ``tests/fixtures/make_legacy_models.py`` made them and says how), each with a fixed
input and what the model predicted on it at logging time (``expected.npz``). A logged model names thread_bench's
modules by the paths they had then: the pyfunc models' ``pyfunc_model.py`` imports ``thread_bench.models.pyfunc``,
and their ``artifacts/architecture.json`` names the models module (``"models"``) and the model config class
(``"config_class"``, e.g. ``thread_bench.config:ModelConfig``) that rebuild the network; the Keras model's
compile config names its training loss (see :data:`IMPORT_FIRST`). A move of a module must keep those names
working. Two formats are kept: format 1, the models of commit f1a33e2 (image tensors in, the network's outputs out;
Keras through MLflow's Keras flavor), and format 2 (``*_v2``), every framework's model one pyfunc that answers a
request table and applies its workload's preprocessing (``thread_bench.models.pyfunc`` since issue 20): a raw
16-bit patch with its ``px_per_cm``, or digits as MNIST stores them; its answer is compared as numbers, column by
column.

The fixtures deliberately lack the ``code/`` folder MLflow logged with the pyfunc models (their copy of the whole
package, which MLflow would put first on ``sys.path``): the names must be resolved by the thread_bench of this
checkout. Each fixture is loaded in a fresh ``sys.executable`` whose working directory is a temporary folder
outside the checkout and whose ``PYTHONPATH`` starts with this checkout (so an installed thread_bench elsewhere is
not what gets tested; the child reports where it imported thread_bench from). Apart from
:data:`IMPORT_FIRST`, the child imports nothing of thread_bench before ``mlflow.pyfunc.load_model(<folder>)``;
it predicts on the stored input and prints its outputs as one JSON line, which this process compares with the
stored ones: relative tolerance 1e-5, absolute 1e-6 (threads/cm or logits; for outputs near zero). The child sees
no GPU (``CUDA_VISIBLE_DEVICES=""``): devices are not what this test is about, and TF32 convolutions on a GPU
would differ by more than the tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "legacy_models"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
NAMES = sorted(MANIFEST["fixtures"])
#: What the generator leaves out of a logged model (``make_legacy_models.LEFT_OUT``).
LEFT_OUT = ("code", "input_example.json", "serving_input_example.json")
RTOL, ATOL = 1e-5, 1e-6

#: Modules the child imports before loading a fixture, and why; nothing else is imported first.
#:
#: ``thread_density_keras`` (issue 20): a fresh process that has not imported the project fails with "Could not
#: locate class 'WorkloadLoss'". MLflow's pyfunc loads a Keras model compiled, and this one was logged compiled:
#: ``keras_trainer.log_model`` logs a ``keras.models.clone_model`` copy, meant to be uncompiled, but Keras 3's
#: ``clone_model`` compiles the clone from the original's compile config, so the file holds the training loss
#: (and Adam's state). Keras looks the loss up only by its registered name ``thread_bench>WorkloadLoss``, which
#: importing ``thread_bench.training.keras_trainer`` registers; rebuilding it then imports its ``models`` module,
#: ``thread_bench.workloads.thread_density.keras_models``, by name. Models logged since are pyfuncs over their
#: weights without training state and need no such import (tests/system/test_model_products.py); this fixture
#: keeps the compiled loss in its file, so it keeps the entry. (Loaded uncompiled, as ``keras_trainer.load_model``
#: does, it needs nothing of thread_bench: checked too.)
IMPORT_FIRST: dict[str, list[str]] = {"thread_density_keras": ["thread_bench.training.keras_trainer"]}

#: The child: argv[1] is a JSON request; the last line of stdout is ``RESULT <json>``.
CHILD = """
import importlib, json, sys
import mlflow
import numpy as np

request = json.loads(sys.argv[1])
stored = np.load(request["expected"])
inputs = stored["inputs"] if "inputs" in stored.files else None
result = {}
if request["keras"]:
    import mlflow.keras

    model = mlflow.keras.load_model(request["model"], load_model_kwargs={"compile": False})
    result["uncompiled_outputs"] = np.asarray(model.predict(inputs, verbose=0), dtype=np.float32).tolist()
for name in request["import_first"]:
    importlib.import_module(name)
result["imported_before_load"] = sorted(m for m in sys.modules if m.partition(".")[0] == "thread_bench")
model = mlflow.pyfunc.load_model(request["model"])
if inputs is not None:  # format 1: image tensors in, the network's outputs out
    result["outputs"] = np.asarray(model.predict(inputs), dtype=np.float32).tolist()
else:  # format 2: a request table in, an answer table out (flattened as make_legacy_models.answer_rows does)
    import pandas as pd

    columns = {"image": list(stored["images"])}
    if "px_per_cm" in stored.files:
        columns["px_per_cm"] = stored["px_per_cm"].astype(np.float64)
    answer = model.predict(pd.DataFrame(columns))
    result["outputs"] = [
        np.concatenate([np.ravel(np.asarray(value, np.float64)) for value in row]).tolist()
        for row in answer.itertuples(index=False)
    ]
import thread_bench

result["thread_bench"] = thread_bench.__file__
print("RESULT " + json.dumps(result))
"""


def _child_env() -> dict[str, str]:
    """A copy of this process' environment for the child (``os.environ`` is left alone)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        KERAS_BACKEND="tensorflow",  # the backend the Keras fixture was logged with
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONDONTWRITEBYTECODE="1",  # pyfunc_model.py is run from the fixture folder: write nothing there
    )
    return env


def _load_in_fresh_process(name: str, tmp_path: Path) -> dict[str, Any]:
    fixture = FIXTURES / name
    request = {
        "model": str(fixture / "model"),
        "expected": str(fixture / "expected.npz"),
        # Format 1's Keras model is MLflow's Keras flavor, also loaded as such; format 2's is a pyfunc like the rest.
        "keras": MANIFEST["fixtures"][name]["framework"] == "keras"
        and MANIFEST["fixtures"][name].get("format", 1) == 1,
        "import_first": IMPORT_FIRST.get(name, []),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(request)],
        cwd=tmp_path,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        pytest.fail(f"{name} did not load (exit {done.returncode}):\n{done.stderr[-4000:]}", pytrace=False)
    return dict(json.loads(lines[-1].removeprefix("RESULT ")))


def test_the_manifest_lists_every_fixture_and_none_carries_the_logged_code() -> None:
    folders = sorted(path.name for path in FIXTURES.iterdir() if path.is_dir())
    assert folders == NAMES
    for name in NAMES:
        assert (FIXTURES / name / "model" / "MLmodel").is_file(), name
        assert (FIXTURES / name / "expected.npz").is_file(), name
        assert not [left for left in LEFT_OUT if (FIXTURES / name / "model" / left).exists()], name
        assert len(MANIFEST["fixtures"][name]["commit"]) == 40, name


@pytest.mark.parametrize("name", NAMES)
def test_a_legacy_model_loads_in_a_fresh_process_and_predicts_as_logged(name: str, tmp_path: Path) -> None:
    result = _load_in_fresh_process(name, tmp_path)

    assert Path(result["thread_bench"]).resolve() == ROOT / "thread_bench" / "__init__.py"
    # Nothing of thread_bench was imported before the load but what IMPORT_FIRST pulls in.
    assert bool(result["imported_before_load"]) == bool(IMPORT_FIRST.get(name)), result["imported_before_load"]
    with np.load(FIXTURES / name / "expected.npz") as stored:
        expected = stored["outputs"]
    outputs = np.asarray(result["outputs"], dtype=np.float32)
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)
    if "uncompiled_outputs" in result:
        np.testing.assert_allclose(np.asarray(result["uncompiled_outputs"]), expected, rtol=RTOL, atol=ATOL)
