"""Every logged model is a product (docs/DESIGN.md §9): it loads and answers in a fresh process that never imported
the project, outside the checkout, whatever its framework and backend; through ``mlflow models predict`` and
``mlflow models serve`` too; it takes raw radiograph patches and applies the training's preprocessing itself; it
is the best epoch's, with that step; and the loader's settings are honoured or refused by name.

The models are trained once for the module on the smoke profile: thread density in PyTorch and in Keras on each
backend (TensorFlow in this process, JAX and torch in their own processes, as Keras picks its backend once per
process), digits in plain TensorFlow. Each fresh process (:data:`CHILD`) starts in an empty
temporary folder with no ``PYTHONPATH``; it checks that nothing of thread_bench is imported before the model is
loaded and reports where thread_bench came from (the model's own copy of the package, which MLflow puts first on
``sys.path``), which Keras backend it ran on, and its answers, compared here with this process's answers to the
same request (relative 1e-5; 1e-4 where this process runs a Keras model on another backend than the child).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import free_port, private_store
from thread_bench import tracking
from thread_bench.models import pyfunc
from thread_bench.workloads.thread_density import synthetic

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["--profile", "smoke", "--seed", "3", "--epochs", "3"]

#: A fresh process: argv[1] a JSON request {"models": {name: uri}, "request": path of a pandas JSON request per
#: name, "model_config": {...}}; the last line of stdout is ``RESULT <json>``.
CHILD = """
import json, sys
import mlflow
import pandas as pd

task = json.loads(sys.argv[1])
before = sorted(m for m in sys.modules if m.partition(".")[0] == "thread_bench")
answers = {}
for name, uri in task["models"].items():
    model = mlflow.pyfunc.load_model(uri, model_config=task.get("model_config"))
    request = pd.read_json(task["requests"][name], orient="split", dtype={"px_per_cm": "float64"})
    answers[name] = model.predict(request).to_json(orient="split")
import thread_bench
keras = sys.modules.get("keras")
print("RESULT " + json.dumps({
    "imported_before_load": before,
    "thread_bench": thread_bench.__file__,
    "keras_backend": keras.backend.backend() if keras else None,
    "answers": answers,
}))
"""


def fresh_environment(store: str, **extra: str) -> dict[str, str]:
    """The environment of a user's shell with the virtual environment active (``mlflow models serve`` runs
    ``uvicorn`` from ``PATH``): the store, no PYTHONPATH, no Keras backend chosen, no GPU."""
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND", "MLFLOW_RUN_ID")}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**environment, "PATH": path, "MLFLOW_TRACKING_URI": store, "CUDA_VISIBLE_DEVICES": "", **extra}


@dataclasses.dataclass
class Products:
    store: str
    directory: Path
    #: name -> the model URI (``models:/<id>``) of its training run.
    uris: dict[str, str]
    runs: dict[str, mlflow.entities.Run]


def _train_in_subprocess(store: str, data: Path, backend: str, directory: Path) -> None:
    command = [sys.executable, "-m", "thread_bench.keras_train", *SMOKE, "--backend", backend]
    environment = {**fresh_environment(store), "THREAD_BENCH_DATA": str(data), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=directory, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Products]:
    from thread_bench import keras_train, tensorflow_train, torch_train

    directory = tmp_path_factory.mktemp("products")
    data = directory / "data"
    with private_store(directory) as store, pytest.MonkeyPatch.context() as patch:
        patch.setenv("THREAD_BENCH_DATA", str(data))
        assert torch_train.main(SMOKE) == 0
        assert keras_train.main(SMOKE) == 0
        # Digits in plain TensorFlow, the one framework thread density lacks (tests/integration/test_digits_workload.py
        # has every digits framework's model answer in this process).
        assert tensorflow_train.main(["--workload", "digits", "--profile", "smoke", "--epochs", "1"]) == 0
        for backend in ("jax", "torch"):
            _train_in_subprocess(store, data, backend, directory)
        uris, runs = {}, {}
        for run in mlflow.search_runs(
            search_all_experiments=True, filter_string=f"tags.`{tracking.TAG_ROLE}` = 'train'", output_format="list"
        ):
            params = run.data.params
            name = f"{params['workload']}-{params['framework']}-{params['backend']}"
            (model,) = run.outputs.model_outputs
            uris[name], runs[name] = f"models:/{model.model_id}", run
        assert len(uris) == 5, sorted(uris)
        yield Products(store, directory, uris, runs)


def thread_density_request(seed: int = 5, *, bit_depth: int = 16, size_px: int = 260) -> pd.DataFrame:
    """A raw synthetic patch as a scanner stores it (16-bit by default), 1.3 cm at 200 px/cm."""
    rng = np.random.default_rng(seed)
    canvas = synthetic.CanvasParams.random(rng)
    imaging = dataclasses.replace(synthetic.ImagingParams.random(rng), bit_depth=bit_depth)
    patch = synthetic.generate_patch(rng, canvas, imaging=imaging, size_px=size_px)
    return pd.DataFrame({"image": [patch.image], "px_per_cm": [patch.px_per_cm]})


def digits_request() -> pd.DataFrame:
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28))
    return pd.DataFrame({"image": list(images)})


def request_for(name: str) -> pd.DataFrame:
    return thread_density_request() if name.startswith("thread_density") else digits_request()


def answers_here(products: Products, name: str) -> pd.DataFrame:
    return mlflow.pyfunc.load_model(products.uris[name], model_config={"device": "cpu"}).predict(request_for(name))


def run_child(products: Products, names: list[str], tmp_path: Path, **environment: str) -> dict[str, Any]:
    requests = {}
    for name in names:
        requests[name] = str(tmp_path / f"{name}.json")
        request_for(name).to_json(requests[name], orient="split")
    task = {"models": {name: products.uris[name] for name in names}, "requests": requests}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(task)],
        cwd=tmp_path,
        env=fresh_environment(products.store, **environment),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1].removeprefix("RESULT ")))


def assert_same_answers(answer: pd.DataFrame, expected: pd.DataFrame, rtol: float) -> None:
    assert list(answer.columns) == list(expected.columns)
    for column in expected.columns:
        pd.testing.assert_series_equal(
            answer[column].apply(np.asarray).apply(np.sum), expected[column].apply(np.asarray).apply(np.sum), rtol=rtol
        )


@pytest.mark.parametrize(
    ("names", "backend"),
    [
        (
            ["thread_density-torch-torch", "thread_density-keras-tensorflow", "digits-tensorflow-tensorflow"],
            "tensorflow",
        ),
        (["thread_density-keras-jax"], "jax"),
        (["thread_density-keras-torch"], "torch"),
    ],
)
def test_every_model_loads_and_answers_in_a_fresh_process_outside_the_checkout(
    products: Products, names: list[str], backend: str, tmp_path: Path
) -> None:
    result = run_child(products, names, tmp_path)

    assert result["imported_before_load"] == []
    # thread_bench came with the model (MLflow's copy of the package next to its artifacts), not from the checkout.
    assert not Path(result["thread_bench"]).is_relative_to(ROOT) and "/code/thread_bench/" in result["thread_bench"]
    if any("-keras-" in name for name in names):
        assert result["keras_backend"] == backend  # the backend the model was trained on
    for name in names:
        answer = pd.read_json(io.StringIO(result["answers"][name]), orient="split")
        assert_same_answers(answer, answers_here(products, name), rtol=1e-5 if backend == "tensorflow" else 1e-4)


def test_the_model_answers_what_the_training_pipeline_gives_on_the_same_patch(products: Products) -> None:
    """A raw patch of one window through the pyfunc, and the same patch through the preparation's own functions
    and the network: the same densities."""
    from corpus_helpers import training_window
    from thread_bench.training import torch_trainer
    from thread_bench.workloads.thread_density import torch_models

    name = "thread_density-torch-torch"
    patch = np.asarray(thread_density_request(7, bit_depth=8, size_px=200).loc[0, "image"])
    answer = mlflow.pyfunc.load_model(products.uris[name]).predict({"image": patch, "px_per_cm": 200.0})

    window = training_window(patch, 0, 0, crop_px=200, size=32)  # the smoke profile: 200 px resized to 32
    network = torch_trainer.load_model(products.uris[name])
    vertical, horizontal = torch_models.predict(network, np.stack([window, np.rot90(window)]))
    assert answer.loc[0, "density_v"] == pytest.approx(vertical, rel=1e-6)
    assert answer.loc[0, "density_h"] == pytest.approx(horizontal, rel=1e-6)


@pytest.mark.parametrize("name", ["thread_density-torch-torch", "thread_density-keras-tensorflow"])
def test_a_16_bit_patch_and_its_8_bit_version_agree_within_the_quantisation(products: Products, name: str) -> None:
    """The same synthetic patch imaged at 16 and at 8 bit (only the stored levels differ): the equalised windows
    differ by the 8-bit rounding only, and so do the answers."""
    model = mlflow.pyfunc.load_model(products.uris[name])
    wide, narrow = (model.predict(thread_density_request(9, bit_depth=bits, size_px=400)) for bits in (16, 8))
    for column in ("density_v", "density_h"):
        assert narrow.loc[0, column] == pytest.approx(wide.loc[0, column], rel=0.02)


def test_the_preprocessing_is_part_of_the_model_metadata(products: Products) -> None:
    info = mlflow.models.get_model_info(products.uris["thread_density-torch-torch"])
    assert info.metadata["thread_bench"]["workload"] == "thread_density"
    artifacts = Path(mlflow.artifacts.download_artifacts(products.uris["thread_density-torch-torch"]))
    architecture = json.loads((artifacts / "artifacts" / "architecture.json").read_text())
    preprocessing = architecture["preprocessing"]
    # The smoke profile: the synthetic corpus at 200 px/cm, 200 px crops resized to 32 px: 32 px per cm.
    assert (preprocessing["model_px_per_cm"], preprocessing["window_cm"], preprocessing["input_size"]) == (
        32.0,
        1.0,
        32,
    )
    assert preprocessing["resolution_from"] in {"corpus index", "synthetic default"}
    assert "equalisation" in preprocessing and "density_h" in preprocessing
    assert preprocessing["equalisation_scope"] == "window"  # the dataset's setting, as the manifest records it
    example = json.loads((artifacts / "input_example.json").read_text())
    assert example["columns"] == ["image", "px_per_cm"]
    assert [str(column) for column in info.signature.inputs.input_names()] == ["image", "px_per_cm"]


def test_the_logged_model_is_the_best_epoch_s_with_its_scores(products: Products) -> None:
    client = mlflow.MlflowClient()
    for name, uri in products.uris.items():
        run = products.runs[name]
        model = client.get_logged_model(uri.removeprefix("models:/"))
        best = int(run.data.metrics[tracking.BEST_EPOCH])
        linked = {metric.key: metric for metric in model.metrics}
        assert {metric.step for metric in model.metrics} == {best}, name
        assert linked[tracking.VAL_LOSS].value == pytest.approx(run.data.metrics[tracking.BEST_VAL_LOSS]), name
        assert linked[tracking.BEST_VAL_LOSS].value == run.data.metrics[tracking.BEST_VAL_LOSS], name
        architecture = mlflow.models.get_model_info(uri).metadata["thread_bench"]
        assert architecture["step"] == best, name


def test_the_loader_s_settings_are_honoured_or_refused_by_name(products: Products) -> None:
    torch_uri = products.uris["thread_density-torch-torch"]
    keras_uri = products.uris["thread_density-keras-jax"]

    network = pyfunc.load_model(torch_uri, device="cpu")
    assert {str(p.device) for p in network.parameters()} == {"cpu"}
    with pytest.raises(ValueError, match=r"model_config device='cuda': torch sees no such GPU"):
        mlflow.pyfunc.load_model(torch_uri, model_config={"device": "cuda"})
    with pytest.raises(ValueError, match=r"model_config device='tpu': expected 'cpu', 'cuda' or 'gpu'"):
        mlflow.pyfunc.load_model(torch_uri, model_config={"device": "tpu"})
    with pytest.raises(ValueError, match=r"keras_backend='jax': this is a torch model, not a Keras one"):
        mlflow.pyfunc.load_model(torch_uri, model_config={"keras_backend": "jax"})
    with pytest.raises(ValueError, match=r"keras_backend='jax': Keras already runs on 'tensorflow' in this process"):
        mlflow.pyfunc.load_model(keras_uri, model_config={"keras_backend": "jax"})
    with pytest.raises(ValueError, match=r"keras_backend='theano': expected one of"):
        mlflow.pyfunc.load_model(keras_uri, model_config={"keras_backend": "theano"})
    with pytest.raises(ValueError, match=r"model_config \['devise'\] is not a setting of this model"):
        pyfunc.unwrap(torch_uri, {"devise": "cpu"})  # MLflow alone would drop it with a warning


def test_mlflow_models_predict_answers_a_raw_16_bit_patch(products: Products, tmp_path: Path) -> None:
    request = thread_density_request()
    body = tmp_path / "request.json"
    body.write_text(json.dumps({"dataframe_split": json.loads(request.to_json(orient="split"))}))
    for name in ("thread_density-torch-torch", "thread_density-keras-tensorflow"):
        output = tmp_path / f"{name}.json"
        command = [str(Path(sys.executable).with_name("mlflow")), "models", "predict", "-m", products.uris[name]]
        command += ["-i", str(body), "-t", "json", "-o", str(output), "--env-manager", "local"]
        done = subprocess.run(
            command, cwd=tmp_path, env=fresh_environment(products.store), capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        answer = pd.DataFrame(json.loads(output.read_text())["predictions"])
        assert_same_answers(answer, answers_here(products, name), rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "alias"), [("thread_density-torch-torch", "champion"), ("thread_density-keras-tensorflow", "best-keras")]
)
def test_mlflow_models_serve_answers_over_http(products: Products, name: str, alias: str, tmp_path: Path) -> None:
    """Served by its registered alias, as the analysis registers them (tests/integration/test_registry.py)."""
    client = mlflow.MlflowClient()
    registered = f"products-{alias}"
    version = mlflow.register_model(products.uris[name], registered).version
    client.set_registered_model_alias(registered, alias, version)
    port = free_port()
    command = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", f"models:/{registered}@{alias}"]
    command += ["-h", "127.0.0.1", "-p", str(port), "--env-manager", "local", "-w", "1"]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(command, cwd=tmp_path, env=fresh_environment(products.store), stdout=log, stderr=log)
    try:
        request = thread_density_request()
        body = json.dumps({"dataframe_split": json.loads(request.to_json(orient="split"))}).encode()
        answer = _post_when_up(f"http://127.0.0.1:{port}/invocations", body, server, tmp_path / "serve.log")
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert_same_answers(pd.DataFrame(answer["predictions"]), answers_here(products, name), rtol=1e-5)


def _post_when_up(url: str, body: bytes, server: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + 120
    while True:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        except (ConnectionError, urllib.error.URLError):
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow models serve did not answer:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.5)
