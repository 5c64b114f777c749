"""One training step in both frameworks from the same weights and batch, dropout off.

Loss mean(|y_hat - y| / y), Adam(lr 1e-3, eps 1e-7) in both. The step runs twice: in float64, where the
twins must agree to float64 rounding (so any difference of formula shows), and in float32, where each
framework must stay within float32's error model of its own float64 step (``model_parity.FLOAT32`` says
what that model is and why it holds on any processor and instruction set). Findings this test pins down:

- loss and gradients are the same function in both frameworks (float64: 1e-16 and 2e-14 relative);
- each framework's update follows its own Adam formula, and the two formulas differ: Keras adds eps to
  sqrt(v) before the bias correction, so its effective eps at step 1 is 1e-7 / sqrt(1 - 0.999) = 3.2e-6.
  The weights differ by exactly that and agree to float64 rounding once torch uses the equivalent eps;
- Keras on TensorFlow takes a step 6.6e-6 shorter (relative) than the formula in float64: it casts beta_2
  through float32 in the bias correction (``model_parity.keras_adam_alpha``);
- BatchNorm running means agree; running variances differ by PyTorch's unbiased n / (n - 1) factor;
- in float32 a ReLU input within rounding of zero can switch sides (one unit, z = 2.7e-7 of a layer whose
  largest is 5.9, switches here on AVX-512 and not under an AVX2 cap), which moves a few gradient tensors
  by up to 5e-3: the reason float32 gradients cannot be compared across frameworks with a rounding bound.
"""

from __future__ import annotations

import numpy as np
import pytest

import model_parity


@pytest.fixture(scope="module")
def float64() -> model_parity.StepResult:
    return model_parity.run_one_step(dtype="float64")


@pytest.fixture(scope="module")
def float32() -> model_parity.StepResult:
    return model_parity.run_one_step()


def test_the_reference_step_is_float64(float64: model_parity.StepResult) -> None:
    for state in (float64.before, float64.gradients_keras, float64.gradients_torch, float64.after_keras):
        assert {value.dtype for value in state.values()} == {np.dtype(np.float64)}


def test_loss_is_the_same(float64: model_parity.StepResult) -> None:
    assert model_parity.check_loss(float64) <= model_parity.FLOAT64.loss_rtol


def test_gradients_are_the_same(float64: model_parity.StepResult) -> None:
    assert model_parity.check_gradients(float64) <= model_parity.FLOAT64.gradient_rtol


def test_weights_after_one_adam_step(float64: model_parity.StepResult) -> None:
    worst = model_parity.check_adam_step(float64)
    assert worst["cross_over_bound"] > 0.5  # the epsilon convention is visible, not hidden by a loose bound
    assert worst["equivalent_epsilon"] <= model_parity.FLOAT64.equivalent_epsilon_atol


def test_batchnorm_running_statistics_after_one_step(float64: model_parity.StepResult) -> None:
    worst = model_parity.check_running_statistics(float64)
    assert max(worst.values()) <= model_parity.FLOAT64.running_stats_atol


def test_float32_steps_stay_within_float32_error_of_float64(float32: model_parity.StepResult) -> None:
    report = model_parity.check_float32_against_float64(float32)
    for framework in ("keras", "torch"):
        assert report[framework]["gradient_median"] <= model_parity.FLOAT32_MEDIAN_GRADIENT_RTOL


def test_torch_float64_reference_is_the_float64_step(
    float32: model_parity.StepResult, float64: model_parity.StepResult
) -> None:
    """The float32 steps' reference, recomputed from the float32 step's weights and batch, is the float64
    step that ``float64`` took in both frameworks (so it is Keras' float64 step too)."""
    reference = model_parity.torch_float64_reference(float32)
    assert reference.loss == float64.loss_torch
    for name, gradient in reference.gradients.items():
        np.testing.assert_array_equal(gradient, float64.gradients_torch[name], err_msg=name)


def test_a_wrong_formula_is_caught_in_float64(float64: model_parity.StepResult) -> None:
    """The float64 bounds see what float32 rounding would hide: one weight nudged by a float32 ulp of the
    learning rate (1e-10) fails."""
    name = "stage1.module1.conv3.weight"
    nudged = {**float64.after_torch, name: float64.after_torch[name] + np.float64(np.spacing(np.float32(1e-3)))}
    broken = model_parity.StepResult(**{**vars(float64), "after_torch": nudged})
    with pytest.raises(AssertionError, match="torch step off its formula"):
        model_parity.check_adam_step(broken)
