"""Parity machinery shared by the tests, and a script that runs every parity check under the active backend.

``KERAS_BACKEND=jax python tests/model_parity.py`` checks the transfer both ways, the round trip and one
training step under that Keras backend and prints the largest deviations as JSON; the tests run it in a
subprocess because Keras fixes its backend when it is first imported.

Tolerances are constants here, each with what was achieved on the 2-core dev machine. Those of one training step
(``FLOAT64``, ``FLOAT32``) come from an error model, not from one processor's rounding: the twins are compared
in float64, and each framework's float32 step against float64 with the same discrete decisions (ReLU sides, max
pooling picks), so they hold under every instruction set a processor may have (``test_instruction_sets``).
``python tests/model_parity.py step`` runs just that check.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if os.environ.get("KERAS_BACKEND") == "jax":
    os.environ.setdefault("JAX_ENABLE_X64", "1")  # the float64 reference step; float32 work is unaffected

import keras

from thread_bench import cpu_isa
from thread_bench.workloads.thread_density import keras_model, spec, torch_model, transfer
from thread_bench.workloads.thread_density.config import ModelConfig

#: Eval-mode outputs after a transfer, small configs, random BatchNorm statistics (outputs of magnitude
#: 0.05-3). Achieved over 14 seeds and three backends: max abs difference 5.2e-6, i.e. 1e-7 .. 7e-7 of the
#: largest flattened activation: a few float32 ulps after 13 inception modules summed in different orders.
OUTPUT_RTOL, OUTPUT_ATOL = 1e-5, 2e-5
#: The same at the default config (13 modules, 10 M parameters). Achieved: 7.5e-6 abs (2 seeds).
DEFAULT_CONFIG_OUTPUT_RTOL, DEFAULT_CONFIG_OUTPUT_ATOL = 1e-4, 5e-5


#: One training step is checked twice (see ``check_step``): the twins against each other in float64, and each
#: framework's float32 step against its float64 step. Nothing below is a property of one processor.
@dataclass(frozen=True)
class StepTolerances:
    """Bounds of one precision's one-step checks."""

    #: |loss - reference| / |reference|.
    loss_rtol: float
    #: Per tensor, max |g - g_reference| / max |g_reference|.
    gradient_rtol: float
    #: A conv bias feeds a training-mode BatchNorm, so its gradient is analytically zero; both frameworks
    #: return rounding noise: max |g_bias| / max |g_kernel| of the same conv.
    conv_bias_gradient: float
    #: Weights after one Adam step against that framework's own Adam formula with its own gradients.
    adam_formula_atol: float
    #: Cross-framework weights after one step, on top of the epsilon-convention bound.
    cross_weight_atol: float
    #: Cross-framework weights after one step when torch uses Keras' effective epsilon.
    equivalent_epsilon_atol: float
    #: BatchNorm running statistics after one step (mean; variance after the n / (n - 1) correction).
    running_stats_atol: float


#: The twins against each other, both in float64 (unit roundoff 1.1e-16), on Keras' TensorFlow backend (on JAX and
#: torch Keras computes BatchNormalization in float32: ``keras_computes_float64``). With a float64 step's
#: decisions taken from float64 values, none sits within rounding of a switch (about 1e6 activations of
#: magnitude ~1: the chance of one within 1e-13 of zero is ~1e-7), so every difference between the twins is
#: float64 rounding or a real difference of formula. Achieved: loss 1.1e-16, gradients 2.4e-14, Adam 2.8e-17
#: off its formula, 2.2e-16 with the equivalent epsilon, statistics 2.1e-16; the same under every
#: instruction-set cap (float64 does not run through oneDNN). The bounds keep >= 100x margin and stay 1e4x below
#: float32 rounding, so a float32 constant anywhere in a step (Keras on TensorFlow casts beta_2 through float32:
#: ``keras_adam_alpha``) cannot hide in them.
FLOAT64 = StepTolerances(
    loss_rtol=1e-12,
    gradient_rtol=1e-10,
    conv_bias_gradient=1e-10,
    adam_formula_atol=1e-14,
    cross_weight_atol=1e-12,
    equivalent_epsilon_atol=1e-12,
    running_stats_atol=1e-12,
)

#: Each framework's float32 step against the float64 step from the same weights and batch. Two things separate
#: them. Decisions: a ReLU input within float32 rounding of zero can land on either side, and max pooling can
#: pick either of two elements within rounding of each other; which one depends on the kernels' order of
#: summation, hence on the processor and its instruction set, and one switched decision moves the gradients by
#: a finite amount (seen: up to 0.11 of a tensor's largest element, 2 % of the whole gradient, from one pool
#: near-tie in the last stage). So the float64 reference takes the float32 step's own decisions (``Decisions``,
#: recorded from each framework's forward), and what is left is rounding: a float32 sum of n products is off by
#: at most n * u times the sum of their magnitudes (u = 6e-8), typically sqrt(n) * u. The step's longest sums
#: (a conv kernel's gradient over N * H * W = 32,768 positions) give n * u = 2e-3 of the magnitudes, more
#: relative to a tensor whose terms cancel (a BatchNorm beta sums gradients of both signs). Bounds: the worst
#: tensor 1e-2 of its largest element, the median tensor 1e-4; losses and BatchNorm statistics (forward only)
#: 1e-5. Achieved over seeds 0-5 and every instruction-set cap here: worst 6.6e-4 (Keras on TensorFlow; PyTorch
#: 1.4e-5), median 1.7e-5, loss 4.3e-7, statistics 1.6e-7. The float32 difference between the frameworks is
#: at most the sum of their errors against float64 plus what their decisions differ by, so it needs no bound.
FLOAT32 = StepTolerances(
    loss_rtol=1e-5,
    gradient_rtol=1e-2,
    conv_bias_gradient=1e-4,  # rounding noise, up to 1.1e-5; a real bias gradient is of the kernel's order
    adam_formula_atol=2e-7,
    cross_weight_atol=float("nan"),  # not compared across frameworks in float32 (see above)
    equivalent_epsilon_atol=float("nan"),
    running_stats_atol=1e-5,
)
#: The median tensor's float32 gradient error against float64 (rounding only).
FLOAT32_MEDIAN_GRADIENT_RTOL = 1e-4
#: Gradients below this are rounding noise or nearly so (|g| of real signals here is 1e-4 .. 1e-1); Adam's
#: first step is about -lr * sign(g), so for them only |update| <= lr is meaningful in a comparison.
GRADIENT_NOISE_FLOOR = 1e-4

#: ``precision=bf16``: eval-mode outputs of the two frameworks' bf16 models built from the same float32 weights
#: (small config, seed 0, random BatchNorm statistics), relative to the largest |output| of the float32
#: model. Achieved at seed 0: 0.007 (TensorFlow), 0.013 (JAX), 0.023 (Keras on torch); over seeds 0-2 and
#: both small configs up to 0.09 (JAX) and 0.2 (Keras on torch, one ill-conditioned case): bfloat16 keeps 8
#: bits of mantissa, and each framework's outputs are as far from the float32 outputs as from each other.
BF16_OUTPUT_RTOL = 0.05
#: ... and each bf16 model is further than this from float32 (also relative): it did compute in bfloat16, it
#: is not a float32 run under a bf16 label. Achieved: 0.005 .. 0.05.
BF16_MIN_DEVIATION = 1e-3
#: ``precision=tf32`` on a GPU with TF32 (10-bit mantissa in matmuls and convolutions). On a CPU there is no
#: TF32 arithmetic, and tf32 runs are held to the float32 tolerances.
TF32_GPU_OUTPUT_RTOL = 1e-2

LEARNING_RATE = 1e-3
ADAM_EPSILON = 1e-7
ADAM_BETA_1, ADAM_BETA_2 = 0.9, 0.999
#: Keras applies epsilon to sqrt(v) before the bias correction: its update is
#: lr * m_hat / (sqrt(v_hat) + eps / sqrt(1 - beta_2**t)). PyTorch adds eps after the correction, so the same
#: nominal eps is effectively larger in Keras early in training: 3.16e-6 instead of 1e-7 at step 1.
KERAS_EFFECTIVE_EPSILON_STEP1 = ADAM_EPSILON / math.sqrt(1.0 - ADAM_BETA_2)

SMALL_CONFIGS = (ModelConfig(base_filters=2, input_size=64), ModelConfig(base_filters=3, input_size=100))
STEP_CONFIG = ModelConfig(base_filters=2, input_size=64, dropout=0.0)
STEP_BATCH = 8


def seed_frameworks(seed: int) -> None:
    keras.utils.set_random_seed(seed)  # Python, NumPy and the backend
    torch.manual_seed(seed)


def random_images(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    return rng.random((n, side, side), dtype=np.float32)


def randomise_keras_state(model: Any, rng: np.random.Generator) -> None:
    """Give biases, BatchNorm parameters and moving statistics non-default values, so that a transfer that
    forgot one of them (they start at 0 / 1 in both frameworks) cannot pass."""
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(
                [
                    _random_like(transfer._short_name(variable), value, rng)
                    for variable, value in zip(layer.weights, layer.get_weights(), strict=True)
                ]
            )


def randomise_torch_state(model: torch.nn.Module, rng: np.random.Generator) -> None:
    """The torch twin of ``randomise_keras_state``."""
    batchnorm_names = {
        "weight": "gamma",
        "bias": "beta",
        "running_mean": "moving_mean",
        "running_var": "moving_variance",
    }
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                names = batchnorm_names
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                names = {"weight": "kernel", "bias": "bias"}
            else:
                continue
            for torch_name, keras_name in names.items():
                tensor = getattr(module, torch_name)
                tensor.copy_(torch.from_numpy(_random_like(keras_name, tensor.numpy(), rng)))


def _random_like(name: str, value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if name == "kernel":
        return value  # already random: the framework's initialiser
    if name in ("gamma", "moving_variance"):
        return rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
    return rng.normal(0.0, 0.1, value.shape).astype(np.float32)  # bias, beta, moving_mean


def keras_outputs(model: Any, images: np.ndarray) -> np.ndarray:
    outputs = model(images[..., np.newaxis], training=False)
    return np.asarray(keras.ops.convert_to_numpy(outputs)).reshape(-1)


def torch_outputs(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(images).unsqueeze(1)).reshape(-1).numpy()


def keras_state_in_torch_layout(keras_source: Any, config: ModelConfig) -> dict[str, np.ndarray]:
    """Every weight and statistic of a Keras model, named and laid out as in the torch twin, in its dtype.

    Uses the transfer itself (tested separately) to do the renaming and transposing.
    """
    twin = torch_model.build_model(config)
    if keras_source.weights[0].dtype == "float64":
        twin = twin.double()
    transfer.keras_to_torch(keras_source, twin)
    return {name: t.detach().numpy().copy() for name, t in twin.state_dict().items() if "num_batches" not in name}


def torch_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: t.detach().numpy().copy() for name, t in model.state_dict().items() if "num_batches" not in name}


def keras_as_float64(model: Any) -> Any:
    """A float64 copy of a float32 Keras model: its config with every dtype policy set to float64, then its
    weights. (``build_model`` offers the precisions a run may train in; float64 is a test's reference only.)"""

    def to_float64(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy":
                return {**node, "config": {**node["config"], "name": "float64"}}
            return {k: "float64" if k == "dtype" and v == "float32" else to_float64(v) for k, v in node.items()}
        if isinstance(node, list):
            return [to_float64(v) for v in node]
        return node

    copy64 = keras.Model.from_config(to_float64(model.get_config()))
    copy64.set_weights([np.asarray(w, np.float64) for w in model.get_weights()])
    assert {str(w.dtype) for w in copy64.weights} == {"float64"}, "a layer kept a float32 weight"
    return copy64


# ---------------------------------------------------------------------------------------------------------
# One training step


def normalised_mae_keras(y_true: Any, y_pred: Any) -> Any:
    """mean(|y_pred - y| / y) (docs/DESIGN.md §4), shape-robust."""
    y_true = keras.ops.reshape(y_true, (-1,))
    y_pred = keras.ops.reshape(y_pred, (-1,))
    return keras.ops.mean(keras.ops.abs(y_pred - y_true) / y_true)


class NormalisedMae(keras.losses.Loss):
    """:func:`normalised_mae_keras` as a Keras loss: per-sample terms, averaged by the default reduction."""

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true = keras.ops.reshape(y_true, (-1,))
        return keras.ops.abs(keras.ops.reshape(y_pred, (-1,)) - y_true) / y_true


def normalised_mae_torch(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    return ((y_pred.reshape(-1) - y_true.reshape(-1)).abs() / y_true.reshape(-1)).mean()


def keras_loss_and_gradients(model: Any, images: np.ndarray, targets: np.ndarray) -> tuple[float, list[Any]]:
    """Training-mode loss and gradients (in ``model.trainable_variables`` order) without mutating the model.

    ``stateless_call`` keeps BatchNorm's moving statistics untouched; only the differentiation is
    backend-specific.
    """
    backend = keras.backend.backend()
    non_trainable = [v.value for v in model.non_trainable_variables]
    x = images[..., np.newaxis]

    def loss_of(trainable: list[Any]) -> Any:
        predictions, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        return normalised_mae_keras(targets, predictions)

    if backend == "tensorflow":
        import tensorflow as tf

        trainable = [tf.convert_to_tensor(v.value) for v in model.trainable_variables]
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            loss = loss_of(trainable)
        return float(loss), [g.numpy() for g in tape.gradient(loss, trainable)]
    if backend == "jax":
        import jax

        loss, grads = jax.value_and_grad(loss_of)([v.value for v in model.trainable_variables])
        return float(loss), [np.asarray(g) for g in grads]
    if backend == "torch":
        trainable = [v.value.detach().clone().requires_grad_(True) for v in model.trainable_variables]
        loss = loss_of(trainable)
        loss.backward()
        return float(loss.detach()), [t.grad.detach().cpu().numpy() for t in trainable]
    raise ValueError(f"unsupported Keras backend {backend!r}")


@dataclass
class StepResult:
    """Everything one training step produced in both frameworks, in torch names and layouts."""

    dtype: str
    images: np.ndarray
    targets: np.ndarray
    loss_keras: float
    loss_keras_train_on_batch: float
    loss_torch: float
    gradients_keras: dict[str, np.ndarray]
    gradients_torch: dict[str, np.ndarray]
    before: dict[str, np.ndarray]
    after_keras: dict[str, np.ndarray]
    after_torch: dict[str, np.ndarray]
    #: torch stepped with eps = KERAS_EFFECTIVE_EPSILON_STEP1 instead of ADAM_EPSILON.
    after_torch_equivalent_epsilon: dict[str, np.ndarray]
    #: elements per channel that each BatchNorm averaged over (N * H * W), by torch module path.
    batchnorm_counts: dict[str, int] = field(default_factory=dict)
    #: The discrete choices of each framework's training-mode forward: see ``Decisions``.
    decisions_keras: Decisions | None = None
    decisions_torch: Decisions | None = None


def run_one_step(
    config: ModelConfig = STEP_CONFIG,
    batch: int = STEP_BATCH,
    seed: int = 0,
    run_eagerly: bool = True,
    dtype: str = "float32",
) -> StepResult:
    """Same weights, same batch, dropout off: one Keras ``train_on_batch`` and one torch Adam step.

    The weights and the batch are drawn in float32 whatever ``dtype``, so the float32 and float64 steps of
    one seed start from the same values.
    """
    if config.dropout != 0.0:
        raise ValueError("one-step parity needs dropout=0 (the two frameworks draw different masks)")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    seed_frameworks(seed)
    rng = np.random.default_rng(seed)
    images = random_images(rng, batch, config.input_size).astype(dtype)
    targets = rng.uniform(6.0, 23.0, batch).astype(np.float32).astype(dtype)  # thread densities, threads/cm

    k_model = keras_model.build_model(config)
    randomise_keras_state(k_model, rng)  # random moving statistics also test the momentum convention
    t_model = torch_model.build_model(config)
    transfer.keras_to_torch(k_model, t_model)
    gradient_holder = keras_model.build_model(config)
    if dtype == "float64":
        k_model, t_model, gradient_holder = (
            keras_as_float64(k_model),
            t_model.double(),
            keras_as_float64(gradient_holder),
        )
    before = torch_state(t_model)

    loss_keras, grads = keras_loss_and_gradients(k_model, images, targets)
    holder_variables = {v.path: v for v in gradient_holder.trainable_variables}
    for variable, gradient in zip(k_model.trainable_variables, grads, strict=True):
        holder_variables[variable.path].assign(gradient)
    gradients_keras = keras_state_in_torch_layout(gradient_holder, config)
    decisions_keras = keras_decisions(k_model, images)

    k_model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=LEARNING_RATE, beta_1=ADAM_BETA_1, beta_2=ADAM_BETA_2, epsilon=ADAM_EPSILON
        ),
        # Keras computes a loss in its dtype (floatx, float32, unless given): float64 here in a float64 step.
        loss=NormalisedMae(dtype=dtype),
        # Tracing the compiled train step costs 15-50 s on 2 cores (TF) and more under XLA (JAX); the eager
        # step runs the same Trainer.train_step and optimizer code in seconds.
        run_eagerly=run_eagerly,
    )
    loss_keras_train_on_batch = float(k_model.train_on_batch(images[..., np.newaxis], targets[:, np.newaxis]))
    after_keras = keras_state_in_torch_layout(k_model, config)

    t_equivalent = copy.deepcopy(t_model)
    with recording_decisions() as decisions_torch:
        loss_torch, gradients_torch, after_torch = _torch_step(t_model, images, targets, ADAM_EPSILON)
    _, _, after_equivalent = _torch_step(t_equivalent, images, targets, KERAS_EFFECTIVE_EPSILON_STEP1)

    counts = {
        f"{spec.torch_module_path(m.name)}.bn{k}": batch * m.side * m.side
        for m in spec.modules(config)
        for k in spec.KERNEL_SIZES
    }
    return StepResult(
        dtype=dtype,
        images=images,
        targets=targets,
        loss_keras=loss_keras,
        loss_keras_train_on_batch=loss_keras_train_on_batch,
        loss_torch=loss_torch,
        gradients_keras={k: v for k, v in gradients_keras.items() if k in gradients_torch},
        gradients_torch=gradients_torch,
        before=before,
        after_keras=after_keras,
        after_torch=after_torch,
        after_torch_equivalent_epsilon=after_equivalent,
        batchnorm_counts=counts,
        decisions_keras=decisions_keras,
        decisions_torch=decisions_torch,
    )


@dataclass
class Decisions:
    """The discrete choices of a training-mode forward, in the torch model's call order: which side of zero
    each ReLU input fell on (module by module, kernel sizes in order, then the hidden dense layers; NCHW), and
    which element of each 2x2 window max pooling took (flat indices into each channel's H * W, as torch's
    ``return_indices``). A gradient is a smooth function of the rounding only while these stay fixed."""

    relu: list[np.ndarray] = field(default_factory=list)
    pool: list[np.ndarray] = field(default_factory=list)

    def differences(self, other: Decisions) -> int:
        pairs = [*zip(self.relu, other.relu, strict=True), *zip(self.pool, other.pool, strict=True)]
        return sum(int(np.sum(mine != theirs)) for mine, theirs in pairs)


@contextlib.contextmanager
def _patched(name: str, replacement: Any) -> Iterator[None]:
    original = getattr(torch.nn.functional, name)
    setattr(torch.nn.functional, name, replacement)
    try:
        yield
    finally:
        setattr(torch.nn.functional, name, original)


@contextlib.contextmanager
def recording_decisions() -> Iterator[Decisions]:
    """Records the torch model's decisions (its ``F.relu`` and ``F.max_pool2d`` calls) while in the block."""
    decisions = Decisions()
    relu, max_pool2d = torch.nn.functional.relu, torch.nn.functional.max_pool2d

    def recording_relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        decisions.relu.append((x > 0).detach().numpy().copy())
        return relu(x, inplace=inplace)

    def recording_pool(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        output, indices = max_pool2d(x, *args, **{**kwargs, "return_indices": True})
        decisions.pool.append(indices.detach().numpy().copy())
        return output

    with _patched("relu", recording_relu), _patched("max_pool2d", recording_pool):
        yield decisions


@contextlib.contextmanager
def forcing_decisions(decisions: Decisions) -> Iterator[None]:
    """Makes the torch model take the given decisions: its i-th ReLU is ``x * relu[i]`` (it differs from
    relu(x) only where a decision differs, by |x|, which is within rounding of zero there) and its i-th max
    pooling picks the elements ``pool[i]`` names (they differ from the maxima only at a near-tie)."""
    relus, pools = iter(decisions.relu), iter(decisions.pool)

    def forced_relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        mask = next(relus)
        assert mask.shape == tuple(x.shape), (mask.shape, tuple(x.shape))
        return x * torch.from_numpy(mask).to(x.dtype)

    def forced_pool(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        indices = torch.from_numpy(next(pools))
        return x.flatten(2).gather(2, indices.flatten(2)).view(indices.shape)

    with _patched("relu", forced_relu), _patched("max_pool2d", forced_pool):
        yield
    assert next(relus, None) is None and next(pools, None) is None, "the model took fewer decisions than given"


def keras_decisions(model: Any, images: np.ndarray) -> Decisions:
    """A Keras twin's decisions in training mode, in torch's layout and order (see ``Decisions``).

    Read from a probe of the same layers: ReLU outputs (relu(z) > 0 exactly when z > 0) and the pooling
    layers' inputs, whose argmax per window is the element the pooling took.
    """
    relus = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    relus += [model.get_layer(name) for name in spec.DENSE_NAMES[:-1]]
    pools = [model.get_layer(spec.pool_name(stage)) for stage in range(1, len(spec.STAGE_MODULES) + 1)]
    probe = keras.Model(model.inputs, [layer.output for layer in relus] + [layer.input for layer in pools])
    outputs, _ = probe.stateless_call(  # stateless: training mode must not move the moving statistics
        [v.value for v in probe.trainable_variables],
        [v.value for v in probe.non_trainable_variables],
        [images[..., np.newaxis]],  # the structure of the model's inputs: one named input
        training=True,
    )
    values = [np.asarray(keras.ops.convert_to_numpy(output)) for output in outputs]
    values = [v.transpose(0, 3, 1, 2) if v.ndim == 4 else v for v in values]  # NHWC -> NCHW
    decisions = Decisions(relu=[v > 0 for v in values[: len(relus)]])
    for x in values[len(relus) :]:
        decisions.pool.append(_window_argmax(x, spec.POOL_SIZE))
    return decisions


def _window_argmax(x: np.ndarray, size: int) -> np.ndarray:
    """Flat H * W indices of each size x size window's maximum (windows that fit; torch's floor mode)."""
    n, c, height, width = x.shape
    rows, cols = height // size, width // size
    windows = x[:, :, : rows * size, : cols * size].reshape(n, c, rows, size, cols, size)
    windows = windows.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, rows, cols, size * size)
    offset = windows.argmax(axis=-1)
    row = np.arange(rows)[:, None] * size + offset // size
    col = np.arange(cols)[None, :] * size + offset % size
    return (row * width + col).astype(np.int64)


def _torch_step(
    model: torch.nn.Module, images: np.ndarray, targets: np.ndarray, epsilon: float
) -> tuple[float, dict[str, np.ndarray], dict[str, np.ndarray]]:
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, betas=(ADAM_BETA_1, ADAM_BETA_2), eps=epsilon)
    optimizer.zero_grad()
    loss = normalised_mae_torch(model(torch.from_numpy(images).unsqueeze(1)), torch.from_numpy(targets))
    loss.backward()
    gradients = {name: p.grad.detach().numpy().copy() for name, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    return float(loss.detach()), gradients, torch_state(model)


def is_conv_bias(name: str) -> bool:
    return ".conv" in name and name.endswith(".bias")


def keras_adam_alpha(dtype: str) -> float:
    """Keras Adam's step size at step 1, lr * sqrt(1 - beta_2) / (1 - beta_1), as Keras computes it for a
    variable of ``dtype``.

    Keras keeps the learning rate in a float32 variable and casts beta_1 and beta_2 to the variable's dtype
    for the bias correction; on TensorFlow a cast of a Python float passes through float32. So in a float64
    step Keras on TensorFlow uses float32(0.999) there (and float32(1e-3)): a step 6.6e-6 shorter (relative)
    than the formula's, invisible in float32, 6.7e-9 in a float64 weight.
    """

    def as_keras_casts(value: float) -> float:
        return float(keras.ops.convert_to_numpy(keras.ops.cast(value, dtype)))

    beta_1, beta_2 = as_keras_casts(ADAM_BETA_1), as_keras_casts(ADAM_BETA_2)
    return float(np.float32(LEARNING_RATE)) * math.sqrt(1.0 - beta_2) / (1.0 - beta_1)


#: The same with the formula's exact constants.
ADAM_ALPHA = LEARNING_RATE * math.sqrt(1.0 - ADAM_BETA_2) / (1.0 - ADAM_BETA_1)


def adam_first_step(gradient: np.ndarray, epsilon: float, alpha: float = ADAM_ALPHA) -> np.ndarray:
    """Adam's first update: alpha * m / (sqrt(v) + epsilon) with m = (1 - beta_1) g, v = (1 - beta_2) g**2,
    computed in the gradient's dtype. With PyTorch's convention (epsilon after the bias correction) pass
    ``epsilon * sqrt(1 - beta_2)``: that is ``lr * g / (|g| + eps)``."""
    m = gradient * (1.0 - ADAM_BETA_1)
    v = np.square(gradient) * (1.0 - ADAM_BETA_2)
    return alpha * m / (np.sqrt(v) + epsilon)


def torch_adam_first_step(gradient: np.ndarray, epsilon: float) -> np.ndarray:
    """PyTorch's first update: lr * g / (|g| + eps)."""
    return LEARNING_RATE * gradient / (np.abs(gradient) + epsilon)


# ---------------------------------------------------------------------------------------------------------
# Checks (raise AssertionError with a message); used by the tests and by the script below.


def relative_deviation(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| / max |expected|."""
    return float(np.abs(got - expected).max() / max(float(np.abs(expected).max()), 1e-300))


def check_loss(result: StepResult, tolerances: StepTolerances = FLOAT64) -> float:
    """Both frameworks' losses (Keras' twice: differentiated and ``train_on_batch``) agree.

    ``train_on_batch`` reports the loss through Keras' loss tracker, a float32 ``Mean`` metric whatever the
    model's dtype, so that one is held to float32 rounding (relative 2**-24) on top of the tolerance.
    """
    np.testing.assert_allclose(result.loss_keras, result.loss_torch, rtol=tolerances.loss_rtol)
    tracker_rtol = tolerances.loss_rtol + float(np.finfo(np.float32).eps) / 2
    np.testing.assert_allclose(result.loss_keras_train_on_batch, result.loss_torch, rtol=tracker_rtol)
    return abs(result.loss_keras - result.loss_torch) / abs(result.loss_torch)


def check_conv_bias_gradients(gradients: dict[str, np.ndarray], tolerance: float, label: str) -> float:
    """Conv biases before a training-mode BatchNorm get rounding noise only; returns the largest, relative."""
    worst = 0.0
    for name, gradient in gradients.items():
        if is_conv_bias(name):
            kernel_scale = np.abs(gradients[name.replace(".bias", ".weight")]).max()
            noise = float(np.abs(gradient).max() / kernel_scale)
            assert noise <= tolerance, f"{label} {name}: conv bias gradient {noise:.2e} > {tolerance} of the kernel's"
            worst = max(worst, noise)
    return worst


def gradient_deviations(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> dict[str, float]:
    """Per tensor (conv biases left out: see ``check_conv_bias_gradients``), :func:`relative_deviation`."""
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))
    return {name: relative_deviation(got[name], g) for name, g in expected.items() if not is_conv_bias(name)}


def global_relative_deviation(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> float:
    """||got - expected|| / ||expected|| over every tensor but the conv biases, as one vector."""
    names = [name for name in expected if not is_conv_bias(name)]
    difference = math.sqrt(sum(float(np.sum((got[n] - expected[n]) ** 2)) for n in names))
    return difference / math.sqrt(sum(float(np.sum(expected[n] ** 2)) for n in names))


def check_gradients(result: StepResult, tolerances: StepTolerances = FLOAT64) -> float:
    """Keras' gradients against torch's, per tensor; returns the worst relative deviation."""
    for label, gradients in (("keras", result.gradients_keras), ("torch", result.gradients_torch)):
        check_conv_bias_gradients(gradients, tolerances.conv_bias_gradient, label)
    deviations = gradient_deviations(result.gradients_keras, result.gradients_torch)
    name = max(deviations, key=deviations.__getitem__)
    assert deviations[name] <= tolerances.gradient_rtol, (
        f"{name}: gradient deviation {deviations[name]:.2e} > {tolerances.gradient_rtol}"
    )
    return deviations[name]


def check_own_adam_formulas(result: StepResult, tolerances: StepTolerances) -> dict[str, float]:
    """Each framework's weights after one step follow its own Adam formula applied to its own gradients, and
    no weight moved by more than the learning rate."""
    keras_alpha = keras_adam_alpha(result.dtype)
    worst = {"keras_formula": 0.0, "torch_formula": 0.0}
    for name, w0 in result.before.items():
        if name not in result.gradients_torch:
            continue  # BatchNorm running statistics: see check_running_statistics
        g_keras, g_torch = result.gradients_keras[name], result.gradients_torch[name]
        cases = (
            ("keras", result.after_keras[name], adam_first_step(g_keras, ADAM_EPSILON, keras_alpha)),
            ("torch", result.after_torch[name], torch_adam_first_step(g_torch, ADAM_EPSILON)),
        )
        for label, w, update in cases:
            step = np.abs(w - w0).max()
            assert step <= LEARNING_RATE * (1 + 1e-6) + tolerances.adam_formula_atol, f"{name}: {label} step {step}"
            if is_conv_bias(name):
                continue  # noise gradients: |update| <= lr is all that is meaningful
            off = float(np.abs(w - (w0 - update)).max())
            assert off <= tolerances.adam_formula_atol, f"{name}: {label} step off its formula by {off:.2e}"
            worst[f"{label}_formula"] = max(worst[f"{label}_formula"], off)
    return worst


def check_adam_step(result: StepResult, tolerances: StepTolerances = FLOAT64) -> dict[str, float]:
    """Each framework follows its own Adam formula; the two differ only by the epsilon convention."""
    worst = {**check_own_adam_formulas(result, tolerances), "cross_over_bound": 0.0, "equivalent_epsilon": 0.0}
    alpha_ratio = ADAM_ALPHA / keras_adam_alpha(result.dtype)
    for name in result.before:
        if name not in result.gradients_torch or is_conv_bias(name):
            continue
        g_torch, w0 = result.gradients_torch[name], result.before[name]
        signal = np.abs(g_torch) >= GRADIENT_NOISE_FLOOR
        if not signal.any():
            continue
        w_torch = result.after_torch[name]
        # Keras' step with the formula's constants (see keras_adam_alpha): the epsilon convention is the only
        # difference left.
        w_keras = w0 + (result.after_keras[name] - w0) * alpha_ratio
        g_signal = np.abs(g_torch[signal])
        bound = LEARNING_RATE * (KERAS_EFFECTIVE_EPSILON_STEP1 - ADAM_EPSILON) / g_signal + tolerances.cross_weight_atol
        cross = float((np.abs(w_keras - w_torch)[signal] / bound).max())
        equivalent = float(np.abs(w_keras - result.after_torch_equivalent_epsilon[name])[signal].max())
        assert cross <= 1.0, f"{name}: weights differ beyond the epsilon-convention bound ({cross:.2f} x)"
        assert equivalent <= tolerances.equivalent_epsilon_atol, f"{name}: {equivalent:.2e} with equivalent eps"
        worst["cross_over_bound"] = max(worst["cross_over_bound"], cross)
        worst["equivalent_epsilon"] = max(worst["equivalent_epsilon"], equivalent)
    return worst


def batchnorm_increments(
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
    counts: dict[str, int],
    unbiased: bool,
    config: ModelConfig = STEP_CONFIG,
) -> dict[str, np.ndarray]:
    """What one step added to each running statistic, in Keras' convention: new - momentum * old. PyTorch's
    variance increment (``unbiased``) is scaled by (n - 1) / n to the biased one Keras uses."""
    momentum = config.batchnorm_momentum
    increments = {}
    for path, n in counts.items():
        for statistic in ("running_mean", "running_var"):
            key = f"{path}.{statistic}"
            increment = after[key] - momentum * before[key]
            increments[key] = increment * (n - 1) / n if unbiased and statistic == "running_var" else increment
    return increments


def step_increments(result: StepResult, framework: str) -> dict[str, np.ndarray]:
    after = result.after_keras if framework == "keras" else result.after_torch
    return batchnorm_increments(result.before, after, result.batchnorm_counts, unbiased=framework == "torch")


def check_running_statistics(result: StepResult, tolerances: StepTolerances = FLOAT64) -> dict[str, float]:
    """Momentum conventions agree; the variance differs by PyTorch's unbiased n / (n - 1) factor only."""
    keras_increments, torch_increments = (step_increments(result, f) for f in ("keras", "torch"))
    worst = {"mean": 0.0, "variance": 0.0}
    for key, keras_increment in keras_increments.items():
        deviation = float(np.abs(torch_increments[key] - keras_increment).max())
        assert deviation <= tolerances.running_stats_atol, f"{key}: {deviation:.2e}"
        kind = "mean" if key.endswith("running_mean") else "variance"
        worst[kind] = max(worst[kind], deviation)
    return worst


@dataclass
class Reference:
    """PyTorch's float64 step from a float32 step's weights and batch: the float32 steps' reference.

    Torch's, not Keras': in float64 the twins agree to 2e-14 (``check_step``), and Keras is float64 only on
    TensorFlow; on JAX and torch its BatchNormalization computes in float32 whatever the input
    (``keras_computes_float64``).
    """

    loss: float
    gradients: dict[str, np.ndarray]
    running_statistics: dict[str, np.ndarray]


def torch_float64_reference(step: StepResult, decisions: Decisions | None = None) -> Reference:
    """PyTorch's float64 step from ``step``'s weights and batch; with ``decisions``, taking those."""
    before = {name: w.astype(np.float64) for name, w in step.before.items()}
    model = torch_model.build_model(STEP_CONFIG).double()
    model.load_state_dict({name: torch.from_numpy(w) for name, w in before.items()}, strict=False)
    images, targets = step.images.astype(np.float64), step.targets.astype(np.float64)
    with forcing_decisions(decisions) if decisions is not None else contextlib.nullcontext():
        loss, gradients, after = _torch_step(model, images, targets, ADAM_EPSILON)
    return Reference(loss, gradients, batchnorm_increments(before, after, step.batchnorm_counts, unbiased=True))


def keras_computes_float64() -> bool:
    """Whether a float64 Keras model computes in float64 under this backend. Keras' BatchNormalization
    computes in ``result_type(input dtype, "float32")``, which is float32 for float64 inputs on JAX and torch."""
    return keras.backend.result_type("float64", "float32") == "float64"


def check_float32_against_float64(float32: StepResult) -> dict[str, dict[str, float]]:
    """Each framework's float32 step against the float64 step from the same weights and batch that takes the
    same ReLU decisions (the error model is in the comment of ``FLOAT32``); returns the deviations and how
    many decisions float32 took differently from float64."""
    assert float32.dtype == "float32"
    with recording_decisions() as exact:
        torch_float64_reference(float32)
    tolerances = FLOAT32
    report: dict[str, dict[str, float]] = {}
    for framework in ("keras", "torch"):
        decisions = getattr(float32, f"decisions_{framework}")
        reference = torch_float64_reference(float32, decisions)
        gradients = getattr(float32, f"gradients_{framework}")
        deviations = gradient_deviations(gradients, reference.gradients)
        worst_name = max(deviations, key=deviations.__getitem__)
        losses = [getattr(float32, f"loss_{framework}")]
        if framework == "keras":
            losses.append(float32.loss_keras_train_on_batch)
        loss = max(abs(value - reference.loss) for value in losses) / abs(reference.loss)
        increments = step_increments(float32, framework)
        statistics = max(float(np.abs(increments[k] - reference.running_statistics[k]).max()) for k in increments)
        label = f"{framework} float32"
        assert loss <= tolerances.loss_rtol, f"{label}: loss off float64 by {loss:.2e} (relative)"
        assert deviations[worst_name] <= tolerances.gradient_rtol, (
            f"{label} {worst_name}: gradient off float64 by {deviations[worst_name]:.2e} > {tolerances.gradient_rtol}"
        )
        median = float(np.median(list(deviations.values())))
        assert median <= FLOAT32_MEDIAN_GRADIENT_RTOL, f"{label}: median gradient deviation {median:.2e}"
        assert statistics <= tolerances.running_stats_atol, f"{label}: running statistics off by {statistics:.2e}"
        report[framework] = {
            "loss": loss,
            "gradient_worst": deviations[worst_name],
            "gradient_median": median,
            "conv_bias": check_conv_bias_gradients(gradients, tolerances.conv_bias_gradient, label),
            "running_statistics": statistics,
            "switched_decisions": float(decisions.differences(exact)),
        }
    report["adam"] = check_own_adam_formulas(float32, tolerances)
    return report


def check_step(seed: int = 0) -> dict[str, Any]:
    """The one-step parity: the twins in float64 (where Keras computes in float64), then each framework's
    float32 step against float64."""
    report: dict[str, Any] = {"float32_against_float64": check_float32_against_float64(run_one_step(seed=seed))}
    if keras_computes_float64():
        float64 = run_one_step(seed=seed, dtype="float64")
        report["float64"] = {
            "loss": check_loss(float64),
            "gradients": check_gradients(float64),
            "adam": check_adam_step(float64),
            "running_statistics": check_running_statistics(float64),
        }
    else:
        report["float64"] = f"not run: Keras on {keras.backend.backend()} computes BatchNormalization in float32"
    return report


# ---------------------------------------------------------------------------------------------------------
# Transfer checks


def check_transfer_both_ways(
    config: ModelConfig, seed: int = 0, rtol: float = OUTPUT_RTOL, atol: float = OUTPUT_ATOL
) -> dict[str, float]:
    """Keras -> torch and torch -> Keras: eval-mode outputs agree; keras -> torch -> keras is exact."""
    seed_frameworks(seed)
    rng = np.random.default_rng(seed)
    images = random_images(rng, 4, config.input_size)

    source_keras = keras_model.build_model(config)
    randomise_keras_state(source_keras, rng)
    target_torch = torch_model.build_model(config)
    transfer.keras_to_torch(source_keras, target_torch)
    expected, got = keras_outputs(source_keras, images), torch_outputs(target_torch, images)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
    keras_to_torch = float(np.abs(got - expected).max())

    round_trip = keras_model.build_model(config)
    transfer.torch_to_keras(target_torch, round_trip)
    for original, returned in zip(source_keras.weights, round_trip.weights, strict=True):
        assert original.path == returned.path
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(returned), keras.ops.convert_to_numpy(original), err_msg=original.path
        )

    source_torch = torch_model.build_model(config)
    randomise_torch_state(source_torch, rng)
    target_keras = keras_model.build_model(config)
    transfer.torch_to_keras(source_torch, target_keras)
    expected, got = torch_outputs(source_torch, images), keras_outputs(target_keras, images)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
    return {"keras_to_torch": keras_to_torch, "torch_to_keras": float(np.abs(got - expected).max())}


def check_bf16_parity(config: ModelConfig = SMALL_CONFIGS[0], seed: int = 0) -> dict[str, float]:
    """Both frameworks' ``bfloat16`` models, given one float32 model's weights: their eval-mode outputs agree
    within ``BF16_OUTPUT_RTOL`` and each differs from the float32 outputs by more than
    ``BF16_MIN_DEVIATION`` (relative to the float32 outputs' largest magnitude)."""
    seed_frameworks(seed)
    rng = np.random.default_rng(seed)
    images = random_images(rng, 4, config.input_size)
    reference = keras_model.build_model(config)
    randomise_keras_state(reference, rng)
    keras_bf16 = keras_model.build_model(config, "bfloat16")
    keras_bf16.set_weights(reference.get_weights())
    torch_bf16 = torch_model.build_model(config, "bfloat16")
    transfer.keras_to_torch(reference, torch_bf16)
    expected = keras_outputs(reference, images)
    scale = float(np.abs(expected).max())
    keras_got, torch_got = keras_outputs(keras_bf16, images), torch_outputs(torch_bf16, images)
    deviations = {
        "cross": float(np.abs(keras_got - torch_got).max()) / scale,
        "keras_vs_float32": float(np.abs(keras_got - expected).max()) / scale,
        "torch_vs_float32": float(np.abs(torch_got - expected).max()) / scale,
    }
    assert deviations["cross"] <= BF16_OUTPUT_RTOL, deviations
    assert min(deviations["keras_vs_float32"], deviations["torch_vs_float32"]) >= BF16_MIN_DEVIATION, deviations
    return deviations


def check_input_pipelines(seed: int = 0) -> dict[str, float]:
    """Keras' batches (``_Batches``) through every input pipeline this backend offers equal
    ``ArraySplit.batch`` bit for bit, in the sampler's order; ``staged`` repeats one batch per size."""
    from thread_bench.training import common
    from thread_bench.training import keras_trainer as trainer

    rng = np.random.default_rng(seed)
    split = common.ArraySplit(
        rng.integers(0, 256, (21, 16, 16), dtype=np.uint8), rng.uniform(6, 23, 21).astype(np.float32)
    )
    sampler = common.BatchSampler(len(split), 8, seed)
    pipelines = ["host"] if keras.backend.backend() == "tensorflow" else ["host", "device"]
    for pipeline in pipelines:
        batches = trainer._Batches(split, 8, pipeline, sampler)
        for epoch in range(2):
            batches.set_epoch(epoch)
            for index, indices in enumerate(sampler.batches(epoch)):
                images, labels = (keras.ops.convert_to_numpy(t) for t in batches[index])
                expected_images, expected_labels = split.batch(indices)
                np.testing.assert_array_equal(images[..., 0], expected_images, err_msg=pipeline)
                np.testing.assert_array_equal(labels, expected_labels, err_msg=pipeline)
    staged = trainer._Batches(split, 8, "staged", sampler)
    first, again = staged[0], staged[1]
    assert first[0] is again[0], "staged batches of one size are one batch"
    return {"pipelines": float(len(pipelines))}


def check_transfer() -> dict[str, float]:
    # One config (2x2 final maps, so the dense1 permutation counts): under JAX every eager op is compiled
    # once per shape, and each extra config costs 20-40 s on 2 cores.
    return check_transfer_both_ways(SMALL_CONFIGS[0])


CHECKS = {
    "transfer": check_transfer,
    "step": check_step,
    "bf16": check_bf16_parity,
    "input_pipelines": check_input_pipelines,
}


def main(names: list[str]) -> None:
    """Runs the named checks (all when none is named) and prints their deviations as one JSON line."""
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise SystemExit(f"model_parity.py: unknown check(s) {unknown}; choose from {sorted(CHECKS)}")
    report: dict[str, Any] = {"backend": keras.backend.backend(), "cpu_isa": cpu_isa.in_effect()}
    for name in names or CHECKS:
        report[name] = CHECKS[name]()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
