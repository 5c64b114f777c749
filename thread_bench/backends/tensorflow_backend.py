"""TensorFlow as a compute backend (Keras on TensorFlow; see :mod:`thread_bench.backends`)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any

from thread_bench import tracking
from thread_bench.backends import Sync, no_sync

NAME = "tensorflow"
KNOBS: tuple[str, ...] = (tracking.PARAM_TF_MEMORY_GROWTH, tracking.PARAM_TF_ONEDNN)

log = logging.getLogger(__name__)

#: TensorFlow's switch for its oneDNN kernels (convolutions, pooling, batch norm), read once at start-up.
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
#: :data:`ONEDNN_VARIABLE` unless the user set it: on.
ONEDNN_DEFAULT = "1"


def startup_environment(deterministic: bool, threads: int) -> dict[str, str]:
    """TensorFlow's oneDNN kernels on, on every x86 processor; TensorFlow's start-up INFO notices hidden (not its
    warnings). A value the user set wins for both.

    TensorFlow turns oneDNN on by itself only on processors with AVX512-VNNI, AVX512-BF16 or AMX; elsewhere (every
    AMD EPYC, Intel before Cascade Lake) it runs its Eigen kernels, 3.5-4.6x slower on this model (a laptop epoch
    of Keras on TensorFlow: 247 s against 54-70 s on an AMD EPYC Zen 3, README "CPU performance"). On also makes
    the same code path run on both processor families, which a ``cpu_isa`` cap can then pin (Eigen ignores it).
    """
    return {
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1"),
        ONEDNN_VARIABLE: os.environ.get(ONEDNN_VARIABLE, ONEDNN_DEFAULT),
    }


def prefer_onednn() -> None:
    """Where TensorFlow has not started in this process yet, let it start with the oneDNN kernels the training
    used (:func:`startup_environment`), unless the user set :data:`ONEDNN_VARIABLE`: a model loaded to answer
    requests computes as it trained, and as fast."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault(ONEDNN_VARIABLE, ONEDNN_DEFAULT)


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs its oneDNN kernels (what it read from ``TF_ENABLE_ONEDNN_OPTS`` and
    the processor at start-up)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def versions() -> dict[str, str]:
    import tensorflow as tf

    return {"tensorflow": tf.__version__}


def environment() -> dict[str, Any]:
    import tensorflow as tf

    return {
        "tensorflow_version": tf.__version__,
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def _gpus() -> list[Any]:
    import tensorflow as tf

    return list(tf.config.list_physical_devices("GPU"))


def gpu_available() -> bool:
    return bool(_gpus())


def gpu_count() -> int:
    return len(_gpus())


def _details() -> dict[str, Any] | None:
    import tensorflow as tf

    gpus = _gpus()
    return dict(tf.config.experimental.get_device_details(gpus[0])) if gpus else None


def gpu_name() -> str | None:
    details = _details()
    return None if details is None else str(details.get("device_name", _gpus()[0].name))


def gpu_compute_capability() -> tuple[int, int] | None:
    found = (_details() or {}).get("compute_capability")
    return (int(found[0]), int(found[1])) if found else None


def device_memory_bytes() -> int | None:
    return None  # TensorFlow reports no device total (and Keras on TensorFlow keeps no data on the device)


def device_sync() -> Sync:
    import tensorflow as tf

    return tf.test.experimental.sync_devices if gpu_available() else no_sync


def reset_gpu_peak() -> None:
    import tensorflow as tf

    tf.config.experimental.reset_memory_stats("GPU:0")


def gpu_peak_bytes() -> int:
    import tensorflow as tf

    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])


def prepare_memory() -> dict[str, Any]:
    """Memory growth on every GPU: without it TensorFlow reserves nearly all of the GPU's memory at start, and
    its memory figure would say nothing about the model (docs/DESIGN.md §7).

    Logged as ``tf_memory_growth``: ``true``, ``false`` (TensorFlow had started without it), ``no_gpu``; with it
    ``tf_onednn``, whether the oneDNN kernels run (:func:`startup_environment`): a 3.5-4.6x difference in speed
    on an AMD EPYC Zen 3.
    """
    import tensorflow as tf

    gpus = _gpus()
    growth = "true" if gpus else "no_gpu"
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            # The GPU was initialised earlier in this process; report what is actually in force.
            if not tf.config.experimental.get_memory_growth(gpu):
                log.warning("TensorFlow already started on %s without memory growth", gpu.name)
                growth = "false"
                break
    return {tracking.PARAM_TF_MEMORY_GROWTH: growth, tracking.PARAM_TF_ONEDNN: onednn_enabled()}


def set_threads(threads: int) -> None:
    """TensorFlow accepts this only before its runtime starts."""
    import tensorflow as tf

    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as error:  # the runtime already started in this process
        raise RuntimeError(f"cannot set threads={threads}: TensorFlow is already running ({error})") from error


def set_deterministic(enabled: bool) -> None:
    import tensorflow as tf

    if enabled:
        tf.config.experimental.enable_op_determinism()
    else:
        with contextlib.suppress(AttributeError):  # older TensorFlow has no way back
            tf.config.experimental.disable_op_determinism()


def set_precision(precision: str) -> dict[str, Any]:
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(precision == "tf32")
    enabled = bool(tf.config.experimental.tensor_float_32_execution_enabled())
    return {
        tracking.PARAM_TF32_MATMUL: enabled,
        tracking.PARAM_TF32_CONV: enabled,
        tracking.PARAM_TF_TENSOR_FLOAT_32: enabled,
    }
