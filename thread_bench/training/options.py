"""Framework-specific knobs, one frozen dataclass per framework (defaults defined here, once).

They live apart from the framework modules so that the command line can be parsed, and ``KERAS_BACKEND``
set, before Keras or PyTorch is imported. Default settings and tuned settings are different experiments
(docs/DESIGN.md §7): every knob is logged as a param.
"""

from __future__ import annotations

from dataclasses import dataclass

KERAS_BACKENDS = ("tensorflow", "jax", "torch")
JIT_COMPILE_CHOICES = ("auto", "true", "false")
#: ``torch.compile`` modes; ``reduce-overhead`` adds CUDA graphs (for launch-bound small batches on a GPU).
TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class KerasOptions:
    #: Keras backend; applied through ``KERAS_BACKEND`` before Keras is first imported.
    backend: str = "tensorflow"
    #: ``model.compile(jit_compile=...)``: ``auto`` lets Keras decide (False for TensorFlow on a CPU);
    #: the resolved value is logged.
    jit_compile: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in KERAS_BACKENDS:
            raise ValueError(f"backend must be one of {list(KERAS_BACKENDS)}, got {self.backend!r}")
        if self.jit_compile not in JIT_COMPILE_CHOICES:
            raise ValueError(f"jit_compile must be one of {list(JIT_COMPILE_CHOICES)}, got {self.jit_compile!r}")

    @property
    def jit_compile_setting(self) -> bool | str:
        """The value for ``keras.Model.compile``."""
        if self.jit_compile == "auto":
            return "auto"
        return self.jit_compile == "true"


@dataclass(frozen=True)
class TorchOptions:
    #: Train with ``torch.channels_last`` memory format (model and batches).
    channels_last: bool = False
    #: Wrap the model in ``torch.compile`` (logged as ``torch_compile``).
    compile: bool = False
    #: The ``mode`` of ``torch.compile`` (used only with ``compile``).
    compile_mode: str = "default"

    def __post_init__(self) -> None:
        if self.compile_mode not in TORCH_COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {list(TORCH_COMPILE_MODES)}, got {self.compile_mode!r}")

    @property
    def backend(self) -> str:
        """PyTorch runs its own kernels (not an option: it is not a field)."""
        return "torch"


@dataclass(frozen=True)
class TensorflowOptions:
    """Plain TensorFlow: a hand-written ``tf.GradientTape`` loop (the digits workload's low-level styles)."""

    #: Compile the training and evaluation steps with XLA (``tf.function(jit_compile=True)``); off by default,
    #: as for Keras on TensorFlow on a CPU, where XLA made the epochs slower.
    jit_compile: bool = False

    @property
    def backend(self) -> str:
        """TensorFlow runs its own kernels (not an option: it is not a field)."""
        return "tensorflow"


#: A framework's options; each has a ``backend`` (a name in ``thread_bench.backends.NAMES``).
FrameworkOptions = KerasOptions | TorchOptions | TensorflowOptions
