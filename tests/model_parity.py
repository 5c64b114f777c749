"""Parity machinery shared by the tests, and a script that runs every parity check under the active backend.

``KERAS_BACKEND=jax python tests/model_parity.py`` checks the transfer both ways, the round trip and one
training step under that Keras backend and prints the largest deviations as JSON; the tests run it in a
subprocess because Keras fixes its backend when it is first imported.

Tolerances (float32 throughout) are constants here, each with what was achieved on the 2-core dev machine.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras

from thread_bench.workloads.thread_density import keras_model, spec, torch_model, transfer
from thread_bench.workloads.thread_density.config import ModelConfig

#: Eval-mode outputs after a transfer, small configs, random BatchNorm statistics (outputs of magnitude
#: 0.05-3). Achieved over 14 seeds and three backends: max abs difference 5.2e-6, i.e. 1e-7 .. 7e-7 of the
#: largest flattened activation: a few float32 ulps after 13 inception modules summed in different orders.
OUTPUT_RTOL, OUTPUT_ATOL = 1e-5, 2e-5
#: The same at the default config (13 modules, 10 M parameters). Achieved: 7.5e-6 abs (2 seeds).
DEFAULT_CONFIG_OUTPUT_RTOL, DEFAULT_CONFIG_OUTPUT_ATOL = 1e-4, 5e-5

#: One-step parity. Loss: achieved 1.2e-7 relative (one float32 ulp; 0 under JAX and torch backends).
LOSS_RTOL = 1e-6
#: Gradients: max |g_keras - g_torch| per tensor, relative to that tensor's max |g|. Achieved: 1.8e-5
#: (TF), 9e-6 (JAX), 1.7e-5 (torch backend); 1.4e-4 for one BatchNorm gamma at input 32.
GRADIENT_TOL = 5e-4
#: A conv bias feeds a training-mode BatchNorm, so its gradient is analytically zero; both frameworks
#: return rounding noise. Achieved: |g_bias| <= 4e-6 x max |g| of the conv kernel.
CONV_BIAS_GRADIENT_TOL = 1e-5
#: Weights after one Adam step against that framework's own Adam formula with its own gradients.
#: Achieved: 1.2e-7 (float32 rounding of w - update).
ADAM_FORMULA_ATOL = 2e-7
#: Gradients below this are rounding noise or nearly so (|g| of real signals here is 1e-4 .. 1e-1); Adam's
#: first step is about -lr * sign(g), so for them only |update| <= lr is meaningful in a comparison.
GRADIENT_NOISE_FLOOR = 1e-4
#: Cross-framework weights after one step, on top of the epsilon-convention bound. Achieved: the
#: difference uses at most 0.94 of the bound.
CROSS_WEIGHT_ATOL = 1e-6
#: Cross-framework weights after one step when torch uses Keras' effective epsilon. Achieved: 1.2e-7.
EQUIVALENT_EPSILON_WEIGHT_ATOL = 1e-6
#: BatchNorm running statistics after one step (mean; variance after the n / (n - 1) correction).
#: Achieved: 5e-8 (mean), 1.2e-7 (variance), all three backends.
RUNNING_STATS_ATOL = 1e-5

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
    """Every weight and statistic of a Keras model, named and laid out as in the torch twin.

    Uses the transfer itself (tested separately) to do the renaming and transposing.
    """
    twin = torch_model.build_model(config)
    transfer.keras_to_torch(keras_source, twin)
    return {name: t.detach().numpy().copy() for name, t in twin.state_dict().items() if "num_batches" not in name}


def torch_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: t.detach().numpy().copy() for name, t in model.state_dict().items() if "num_batches" not in name}


# ---------------------------------------------------------------------------------------------------------
# One training step


def normalised_mae_keras(y_true: Any, y_pred: Any) -> Any:
    """mean(|y_pred - y| / y) (docs/DESIGN.md §4), shape-robust."""
    y_true = keras.ops.reshape(y_true, (-1,))
    y_pred = keras.ops.reshape(y_pred, (-1,))
    return keras.ops.mean(keras.ops.abs(y_pred - y_true) / y_true)


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


def run_one_step(
    config: ModelConfig = STEP_CONFIG, batch: int = STEP_BATCH, seed: int = 0, run_eagerly: bool = True
) -> StepResult:
    """Same weights, same batch, dropout off: one Keras ``train_on_batch`` and one torch Adam step."""
    if config.dropout != 0.0:
        raise ValueError("one-step parity needs dropout=0 (the two frameworks draw different masks)")
    seed_frameworks(seed)
    rng = np.random.default_rng(seed)
    images = random_images(rng, batch, config.input_size)
    targets = rng.uniform(6.0, 23.0, batch).astype(np.float32)  # thread densities, threads/cm

    k_model = keras_model.build_model(config)
    randomise_keras_state(k_model, rng)  # random moving statistics also test the momentum convention
    t_model = torch_model.build_model(config)
    transfer.keras_to_torch(k_model, t_model)
    before = torch_state(t_model)

    loss_keras, grads = keras_loss_and_gradients(k_model, images, targets)
    gradient_holder = keras_model.build_model(config)
    holder_variables = {v.path: v for v in gradient_holder.trainable_variables}
    for variable, gradient in zip(k_model.trainable_variables, grads, strict=True):
        holder_variables[variable.path].assign(gradient)
    gradients_keras = keras_state_in_torch_layout(gradient_holder, config)

    k_model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=LEARNING_RATE, beta_1=ADAM_BETA_1, beta_2=ADAM_BETA_2, epsilon=ADAM_EPSILON
        ),
        loss=normalised_mae_keras,
        # Tracing the compiled train step costs 15-50 s on 2 cores (TF) and more under XLA (JAX); the eager
        # step runs the same Trainer.train_step and optimizer code in seconds.
        run_eagerly=run_eagerly,
    )
    loss_keras_train_on_batch = float(k_model.train_on_batch(images[..., np.newaxis], targets[:, np.newaxis]))
    after_keras = keras_state_in_torch_layout(k_model, config)

    t_equivalent = copy.deepcopy(t_model)
    loss_torch, gradients_torch, after_torch = _torch_step(t_model, images, targets, ADAM_EPSILON)
    _, _, after_equivalent = _torch_step(t_equivalent, images, targets, KERAS_EFFECTIVE_EPSILON_STEP1)

    counts = {
        f"{spec.torch_module_path(m.name)}.bn{k}": batch * m.side * m.side
        for m in spec.modules(config)
        for k in spec.KERNEL_SIZES
    }
    return StepResult(
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
    )


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


def adam_first_step(gradient: np.ndarray, epsilon: float) -> np.ndarray:
    """The update of Adam's first step: m_hat = g, v_hat = g**2."""
    return LEARNING_RATE * gradient / (np.abs(gradient) + epsilon)


# ---------------------------------------------------------------------------------------------------------
# Checks (raise AssertionError with a message); used by the tests and by the script below.


def check_loss(result: StepResult) -> float:
    np.testing.assert_allclose(result.loss_keras, result.loss_torch, rtol=LOSS_RTOL)
    np.testing.assert_allclose(result.loss_keras_train_on_batch, result.loss_torch, rtol=LOSS_RTOL)
    return abs(result.loss_keras - result.loss_torch) / abs(result.loss_torch)


def check_gradients(result: StepResult) -> float:
    assert set(result.gradients_keras) == set(result.gradients_torch)
    worst = 0.0
    for name, g_torch in result.gradients_torch.items():
        g_keras = result.gradients_keras[name]
        if is_conv_bias(name):
            kernel_scale = np.abs(result.gradients_torch[name.replace(".bias", ".weight")]).max()
            for label, g in (("keras", g_keras), ("torch", g_torch)):
                assert np.abs(g).max() <= CONV_BIAS_GRADIENT_TOL * kernel_scale, (name, label, np.abs(g).max())
            continue
        deviation = np.abs(g_keras - g_torch).max() / max(np.abs(g_torch).max(), 1e-30)
        assert deviation <= GRADIENT_TOL, f"{name}: gradient deviation {deviation:.2e} > {GRADIENT_TOL}"
        worst = max(worst, float(deviation))
    return worst


def check_adam_step(result: StepResult) -> dict[str, float]:
    """Each framework follows its own Adam formula; the two differ only by the epsilon convention."""
    worst = {"keras_formula": 0.0, "torch_formula": 0.0, "cross_over_bound": 0.0, "equivalent_epsilon": 0.0}
    for name, w0 in result.before.items():
        if name not in result.gradients_torch:
            continue  # BatchNorm running statistics: see check_running_statistics
        g_torch, g_keras = result.gradients_torch[name], result.gradients_keras[name]
        w_keras, w_torch = result.after_keras[name], result.after_torch[name]
        w_equivalent = result.after_torch_equivalent_epsilon[name]
        for label, w in (("keras", w_keras), ("torch", w_torch)):
            assert np.abs(w - w0).max() <= LEARNING_RATE + ADAM_FORMULA_ATOL, f"{name}: {label} Adam step exceeds lr"
        signal = np.abs(g_torch) >= GRADIENT_NOISE_FLOOR
        if is_conv_bias(name) or not signal.any():
            continue
        torch_formula = np.abs(w_torch - (w0 - adam_first_step(g_torch, ADAM_EPSILON))).max()
        keras_expected = w0 - adam_first_step(g_keras, KERAS_EFFECTIVE_EPSILON_STEP1)
        keras_formula = np.abs(w_keras - keras_expected)[signal].max()
        g_signal = np.abs(g_torch[signal])
        bound = LEARNING_RATE * (KERAS_EFFECTIVE_EPSILON_STEP1 - ADAM_EPSILON) / g_signal + CROSS_WEIGHT_ATOL
        cross = (np.abs(w_keras - w_torch)[signal] / bound).max()
        equivalent = np.abs(w_keras - w_equivalent)[signal].max()
        assert torch_formula <= ADAM_FORMULA_ATOL, f"{name}: torch step off its formula by {torch_formula:.2e}"
        assert keras_formula <= ADAM_FORMULA_ATOL, f"{name}: Keras step off its formula by {keras_formula:.2e}"
        assert cross <= 1.0, f"{name}: weights differ beyond the epsilon-convention bound ({cross:.2f} x)"
        assert equivalent <= EQUIVALENT_EPSILON_WEIGHT_ATOL, f"{name}: {equivalent:.2e} with equivalent eps"
        for key, value in zip(worst, (keras_formula, torch_formula, cross, equivalent), strict=True):
            worst[key] = max(worst[key], float(value))
    return worst


def check_running_statistics(result: StepResult, config: ModelConfig = STEP_CONFIG) -> dict[str, float]:
    """Momentum conventions agree; the variance differs by PyTorch's unbiased n / (n - 1) factor.

    Keras updates moving_variance with the biased batch variance, PyTorch running_var with the unbiased
    one: torch_new - m * old = (keras_new - m * old) * n / (n - 1), with m the Keras momentum.
    """
    momentum = config.batchnorm_momentum
    worst = {"mean": 0.0, "variance": 0.0}
    for path, n in result.batchnorm_counts.items():
        mean_key, var_key = f"{path}.running_mean", f"{path}.running_var"
        mean_deviation = np.abs(result.after_keras[mean_key] - result.after_torch[mean_key]).max()
        old = result.before[var_key]
        keras_increment = result.after_keras[var_key] - momentum * old
        torch_increment = result.after_torch[var_key] - momentum * old
        variance_deviation = np.abs(torch_increment - keras_increment * n / (n - 1)).max()
        assert mean_deviation <= RUNNING_STATS_ATOL, f"{mean_key}: {mean_deviation:.2e}"
        assert variance_deviation <= RUNNING_STATS_ATOL, f"{var_key}: {variance_deviation:.2e}"
        worst["mean"] = max(worst["mean"], float(mean_deviation))
        worst["variance"] = max(worst["variance"], float(variance_deviation))
    return worst


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


def main() -> None:
    report: dict[str, Any] = {"backend": keras.backend.backend()}
    # One config (2x2 final maps, so the dense1 permutation counts): under JAX every eager op is compiled
    # once per shape, and each extra config costs 20-40 s on 2 cores.
    config = SMALL_CONFIGS[0]
    report[f"transfer_base{config.base_filters}_input{config.input_size}"] = check_transfer_both_ways(config)
    result = run_one_step()
    report["loss_relative"] = check_loss(result)
    report["gradient_relative"] = check_gradients(result)
    report["adam_step"] = check_adam_step(result)
    report["running_statistics"] = check_running_statistics(result)
    report["bf16"] = check_bf16_parity()
    report["input_pipelines"] = check_input_pipelines()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
