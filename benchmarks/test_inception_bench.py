"""Micro-benchmarks of the RegVGG building blocks in every framework (pytest-benchmark).

Cases, each timed as the framework's own user would run it:

- ``inception_forward``: one inception module in inference mode, followed by global average pooling (so
  outputs and targets are tiny and no host copy distorts the timing). torch: ``eval()`` +
  ``inference_mode``; Keras: ``predict_on_batch`` (a compiled function: tf.function / jax.jit; eager on
  the torch backend).
- ``inception_train``: the same module, forward + backward (weight gradients; the input needs none) and an
  SGD update, MSE of the pooled output against zeros. Keras: ``train_on_batch``.
- ``model_train_step``: the whole network, normalised-MAE loss, Adam(1e-3, eps 1e-7); one batch.

Shapes are those that occur in the network at the default config (``spec.modules``); the default run
takes three of them at batch 8 and a small model; ``--full`` takes all nine at batches 8 and 32 and adds
the paper's model at batch 32. Every case records its analytic FLOPs and achieved GFLOP/s in
``extra_info`` (FLOPs from ``thread_bench.models.spec``; backward counted as 1x forward here because only
weight gradients are computed, 2x in the model step).

Run all frameworks with ``python benchmarks/run_inception_bench.py`` (one process per Keras backend).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from machine_load import ForeignLoad, wait_until_quiet
from thread_bench.workloads.thread_density import spec
from thread_bench.workloads.thread_density.config import ModelConfig

WARMUP_ROUNDS = 2  # the first call traces / compiles (tf.function, XLA) or allocates
DEFAULT_SHAPES = ((200, 24, 8), (50, 96, 32), (12, 192, 64))  # (side, in_channels, filters)
DEFAULT_BATCHES = (8,)
FULL_BATCHES = (8, 32)
DEFAULT_MODELS = ((ModelConfig(base_filters=4, input_size=96, dropout=0.0), 8),)
FULL_MODELS = (*DEFAULT_MODELS, (ModelConfig(dropout=0.0), 32))
LEARNING_RATE = 1e-3
ADAM_EPSILON = 1e-7
SGD_LEARNING_RATE = 1e-2


@dataclass(frozen=True)
class InceptionCase:
    side: int
    in_channels: int
    filters: int
    batch: int

    @property
    def id(self) -> str:
        return f"side{self.side}-cin{self.in_channels}-f{self.filters}-b{self.batch}"


@dataclass(frozen=True)
class ModelCase:
    config: ModelConfig
    batch: int

    @property
    def id(self) -> str:
        return f"base{self.config.base_filters}-input{self.config.input_size}-b{self.batch}"


def network_shapes() -> tuple[tuple[int, int, int], ...]:
    """Distinct (side, in_channels, filters) of the inception modules of the default network."""
    return tuple(dict.fromkeys((m.side, m.in_channels, m.filters) for m in spec.modules(ModelConfig())))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    full = metafunc.config.getoption("--full")
    if "framework" in metafunc.fixturenames:
        selected = [f.strip() for f in metafunc.config.getoption("--frameworks").split(",") if f.strip()]
        metafunc.parametrize("framework", selected)
    if "inception_case" in metafunc.fixturenames:
        shapes = network_shapes() if full else DEFAULT_SHAPES
        batches = FULL_BATCHES if full else DEFAULT_BATCHES
        cases = [InceptionCase(*shape, batch) for shape in shapes for batch in batches]
        metafunc.parametrize("inception_case", cases, ids=[c.id for c in cases])
    if "model_case" in metafunc.fixturenames:
        cases_m = [ModelCase(config, batch) for config, batch in (FULL_MODELS if full else DEFAULT_MODELS)]
        metafunc.parametrize("model_case", cases_m, ids=[c.id for c in cases_m])


@dataclass(frozen=True)
class Timing:
    rounds: int
    wait_quiet_s: float


@pytest.fixture
def timing(request: pytest.FixtureRequest) -> Timing:
    return Timing(int(request.config.getoption("--rounds")), float(request.config.getoption("--wait-quiet")))


def _check_framework(framework: str) -> None:
    """Skip Keras frameworks whose backend is not this process's (Keras fixes it at first import)."""
    if framework.startswith("keras-"):
        import keras

        wanted = framework.removeprefix("keras-")
        if keras.backend.backend() != wanted:
            pytest.skip(f"this process runs Keras on {keras.backend.backend()}; use KERAS_BACKEND={wanted}")
    elif framework not in ("torch-eager", "torch-channels_last"):
        raise pytest.UsageError(f"unknown framework {framework!r}")


# ---------------------------------------------------------------------------------------------------------
# Step builders: each returns a zero-argument callable that runs one timed step to completion.


def _torch_inception_step(case: InceptionCase, channels_last: bool, train: bool) -> Callable[[], Any]:
    import torch

    from thread_bench.workloads.thread_density import torch_model

    module = torch_model.InceptionModule(case.in_channels, case.filters)
    x = torch.rand(case.batch, case.in_channels, case.side, case.side)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    if not train:
        module.eval()

        def forward() -> Any:
            with torch.inference_mode():
                return module(x).mean(dim=(2, 3))

        return forward

    module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=SGD_LEARNING_RATE)

    def train_step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = module(x).mean(dim=(2, 3)).square().mean()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return train_step


def _keras_inception_step(case: InceptionCase, train: bool) -> Callable[[], Any]:
    import keras

    from thread_bench.workloads.thread_density import keras_model

    inputs = keras.Input((case.side, case.side, case.in_channels))
    features = keras_model.inception_module(inputs, case.filters, name="bench")
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(data_format="channels_last")(features))
    x = np.random.default_rng(0).random((case.batch, case.side, case.side, case.in_channels), dtype=np.float32)
    if not train:
        return lambda: model.predict_on_batch(x)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=SGD_LEARNING_RATE), loss="mse")
    targets = np.zeros((case.batch, 3 * case.filters), dtype=np.float32)
    return lambda: model.train_on_batch(x, targets)


def _torch_model_step(case: ModelCase, channels_last: bool) -> Callable[[], float]:
    import torch

    from thread_bench.workloads.thread_density import torch_model, torch_models

    model = torch_model.build_model(case.config)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((case.batch, 1, case.config.input_size, case.config.input_size), np.float32))
    y = torch.from_numpy(rng.uniform(6.0, 23.0, case.batch).astype(np.float32))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, eps=ADAM_EPSILON)

    def train_step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = torch_models.loss(model(x).reshape(-1), y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return train_step


def _keras_model_step(case: ModelCase) -> Callable[[], Any]:
    import keras

    from thread_bench.workloads.thread_density import keras_model, keras_models

    model = keras_model.build_model(case.config)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE, epsilon=ADAM_EPSILON),
        loss=lambda targets, predictions: keras_models.loss(predictions, targets),  # Keras' argument order
    )
    rng = np.random.default_rng(0)
    x = rng.random((case.batch, case.config.input_size, case.config.input_size, 1), np.float32)
    y = rng.uniform(6.0, 23.0, (case.batch, 1)).astype(np.float32)
    return lambda: model.train_on_batch(x, y)


# ---------------------------------------------------------------------------------------------------------


def _run(benchmark: Any, step: Callable[[], Any], timing: Timing, flops: int, info: dict[str, Any]) -> None:
    if timing.wait_quiet_s > 0:
        wait_until_quiet(timing.wait_quiet_s)
    with ForeignLoad() as foreign:
        benchmark.pedantic(step, rounds=timing.rounds, warmup_rounds=WARMUP_ROUNDS, iterations=1)
    median_s = benchmark.stats.stats.median
    benchmark.extra_info.update(
        info, flops=flops, gflops_per_s=flops / median_s / 1e9, other_processes_cores=foreign.cores
    )


@pytest.mark.parametrize("op", ["inception_forward", "inception_train"])
def test_inception(benchmark: Any, framework: str, op: str, inception_case: InceptionCase, timing: Timing) -> None:
    _check_framework(framework)
    train = op == "inception_train"
    if framework.startswith("torch"):
        step = _torch_inception_step(inception_case, framework == "torch-channels_last", train)
    else:
        step = _keras_inception_step(inception_case, train)
    case = inception_case
    forward = spec.inception_flops(case.side, case.in_channels, case.filters, case.batch)
    # Training computes the weight gradients only (the input is data): one more convolution-sized product.
    flops = 2 * forward if train else forward
    benchmark.group = f"{op} {case.id}"
    info = {"framework": framework, "op": op, "case": case.id, "side": case.side, "in_channels": case.in_channels}
    info |= {"filters": case.filters, "batch": case.batch}
    _run(benchmark, step, timing, flops, info)


def test_model_train_step(benchmark: Any, framework: str, model_case: ModelCase, timing: Timing) -> None:
    _check_framework(framework)
    if framework.startswith("torch"):
        step = _torch_model_step(model_case, framework == "torch-channels_last")
    else:
        step = _keras_model_step(model_case)
    benchmark.group = f"model_train_step {model_case.id}"
    info = {"framework": framework, "op": "model_train_step", "case": model_case.id, "batch": model_case.batch}
    info |= {"base_filters": model_case.config.base_filters, "input_size": model_case.config.input_size}
    _run(benchmark, step, timing, spec.train_step_flops(model_case.config, model_case.batch), info)
    benchmark.extra_info["samples_per_s_median"] = model_case.batch / benchmark.stats.stats.median
