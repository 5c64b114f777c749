"""``precision``: the settings each framework reports back, and cross-framework parity under each precision.

Tolerances and achieved deviations are the constants of ``model_parity``; the other Keras backends run the
same bf16 check in a subprocess (``test_transfer.test_parity_under_other_keras_backends``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import pytest
import torch

import isa_helpers
import model_parity
from thread_bench import backends, tracking
from thread_bench.training import common


@pytest.fixture
def restore_float32_settings() -> Iterator[None]:
    """A backend's set_precision changes process-wide settings; put this process's back afterwards."""
    import jax
    import tensorflow as tf

    torch_backends: Any = torch.backends
    saved = (
        torch_backends.cuda.matmul.fp32_precision,
        torch_backends.cudnn.conv.fp32_precision,
        torch_backends.mkldnn.fp32_precision,
        tf.config.experimental.tensor_float_32_execution_enabled(),
        jax.config.jax_default_matmul_precision,  # type: ignore[attr-defined]
    )
    yield
    torch_backends.cuda.matmul.fp32_precision, torch_backends.cudnn.conv.fp32_precision = saved[:2]
    torch_backends.mkldnn.fp32_precision = saved[2]
    tf.config.experimental.enable_tensor_float_32_execution(saved[3])
    jax.config.update("jax_default_matmul_precision", saved[4])


@pytest.mark.usefixtures("restore_float32_settings")
@pytest.mark.parametrize("framework", ["torch", "tensorflow", "jax"])
def test_each_precision_sets_and_reports_the_same_float32_rules(framework: str) -> None:
    # The frameworks' own defaults differ (PyTorch: TF32 for convolutions only; TensorFlow and JAX: TF32 for
    # both on a GPU), so every precision sets both explicitly, and the run logs what the framework reports.
    for precision, tf32 in (("fp32", False), ("tf32", True), ("bf16", False)):
        flags = backends.get(framework).set_precision(precision)
        assert flags[tracking.PARAM_TF32_MATMUL] is tf32, (framework, precision, flags)
        assert flags[tracking.PARAM_TF32_CONV] is tf32, (framework, precision, flags)
    torch_backends: Any = torch.backends
    if framework == "torch":
        assert torch_backends.cuda.matmul.fp32_precision == torch_backends.cudnn.conv.fp32_precision == "ieee"
        assert "cudnn.conv=ieee" in flags[tracking.PARAM_TORCH_FP32_PRECISION]
    elif framework == "jax":
        assert flags[tracking.PARAM_JAX_MATMUL_PRECISION] == "highest"
    else:
        assert flags[tracking.PARAM_TF_TENSOR_FLOAT_32] is False


def test_bf16_models_agree_across_frameworks_and_are_not_float32() -> None:
    isa_helpers.skip_unless_bf16_runs(keras.backend.backend())
    deviations = model_parity.check_bf16_parity()
    assert deviations["cross"] <= model_parity.BF16_OUTPUT_RTOL


@pytest.mark.usefixtures("restore_float32_settings")
def test_tf32_models_agree_across_frameworks() -> None:
    for framework in ("torch", "tensorflow"):
        backends.get(framework).set_precision("tf32")
    if torch.cuda.is_available():
        tolerance = {"rtol": model_parity.TF32_GPU_OUTPUT_RTOL, "atol": model_parity.TF32_GPU_OUTPUT_RTOL}
    else:  # no TF32 arithmetic on a CPU: the float32 tolerances hold
        tolerance = {"rtol": model_parity.OUTPUT_RTOL, "atol": model_parity.OUTPUT_ATOL}
    model_parity.check_transfer_both_ways(model_parity.SMALL_CONFIGS[0], **tolerance)


def test_bf16_compute_shows_in_the_torch_model() -> None:
    from thread_bench.workloads.thread_density import torch_model

    model = torch_model.build_model(model_parity.SMALL_CONFIGS[0], "bfloat16").eval()
    seen: list[torch.dtype] = []
    model.stage1.module1.conv3.register_forward_hook(lambda m, i, o: seen.append(o.dtype) and None)
    with torch.no_grad():
        output = model(torch.zeros(2, 1, 64, 64))
    assert seen == [torch.bfloat16] and output.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32


def test_bf16_is_refused_on_a_gpu_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    torch_backend, jax_backend = backends.get("torch"), backends.get("jax")
    monkeypatch.setattr(torch_backend, "gpu_compute_capability", lambda: (7, 5))
    monkeypatch.setattr(torch_backend, "gpu_name", lambda: "Tesla T4")
    with pytest.raises(ValueError, match=r"Tesla T4 has compute capability 7\.5; bfloat16 needs 8\.0"):
        common.bf16_hardware("torch")
    monkeypatch.setattr(jax_backend, "gpu_compute_capability", lambda: (9, 0))
    assert common.bf16_hardware("jax") == "native"


@pytest.mark.parametrize(("has_bf16", "expected"), [(True, "native"), (False, "emulated")])
def test_bf16_on_a_cpu_is_logged_as_native_or_emulated(
    monkeypatch: pytest.MonkeyPatch, has_bf16: bool, expected: str
) -> None:
    monkeypatch.setattr(backends.get("tensorflow"), "gpu_compute_capability", lambda: None)
    monkeypatch.setattr(common, "cpu_has_bf16", lambda: has_bf16)
    assert common.bf16_hardware("tensorflow") == expected


def test_pixel_values_are_the_division_by_255() -> None:
    from thread_bench.workloads.thread_density import spec

    pixels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(spec.PIXEL_VALUES[pixels], pixels.astype(np.float32) / np.float32(255.0))
