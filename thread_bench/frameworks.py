"""The frameworks the suite compares — Keras, PyTorch and plain TensorFlow — as records, and the contract their
trainers share.

A :class:`Framework` says where a framework's trainer and entry point live, which options it takes and how to
start it in a process (Keras reads its backend from ``KERAS_BACKEND`` once, at its first import). A trainer is a
module implementing :class:`Trainer` — ``thread_bench.training.keras_trainer``, ``torch_trainer`` and
``tensorflow_trainer`` are twins with the same public names and signatures (a test compares them). The driver,
the study and the analysis take a :class:`Framework` from :data:`FRAMEWORKS` and never name a particular one.

Adding a framework: its options dataclass (``training/options.py``), its trainer module, a two-line entry point,
an MLproject entry and one line in :data:`FRAMEWORKS` (docs/DESIGN.md §8 has the exact lines), plus a models
module in each workload it should train. Its compute backend comes from :mod:`thread_bench.backends`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from thread_bench import backends, quiet, tracking
from thread_bench import cpu_isa as cpu_isa_module
from thread_bench.config import TrainConfig
from thread_bench.models.pyfunc import Product
from thread_bench.training.common import EpochCallback, TrainingData, TrainResult
from thread_bench.training.options import FrameworkOptions, KerasOptions, TensorflowOptions, TorchOptions
from thread_bench.workloads import Models


class Trainer(Protocol):
    """A framework's side of the training protocol (implemented by a module; see :data:`FRAMEWORKS`)."""

    FRAMEWORK: str

    def backend(self) -> str:
        """The compute backend in this process (a name in ``backends.NAMES``)."""
        ...

    def configure(self, options: Any, train: TrainConfig) -> dict[str, Any]:
        """Process-wide settings before any model exists; returns the knob params to log.
        Raises ``ValueError`` for a setting this machine or backend cannot honour."""
        ...

    def seed(self, seed: int) -> None:
        """Seed the framework's generators (initialisation, dropout)."""
        ...

    def versions(self) -> dict[str, str]: ...

    def environment(self) -> dict[str, Any]: ...

    def device(self) -> str:
        """Where models run in this process, as logged with an evaluation."""
        ...

    def build_model(self, models: Models, config: Any, precision: str = ..., implementation: str | None = ...) -> Any:
        """The workload's model (``models``, its module for this framework) on this process's device."""
        ...

    def compile_model(
        self, model: Any, models: Models, config: Any, train: TrainConfig, options: Any
    ) -> dict[str, Any]:
        """Make the model ready to train under ``options``; returns the resolved knobs to log. Keras compiles
        here; PyTorch sets the memory format, and ``torch.compile`` wraps the model in ``fit``, around the
        training step only (the kept best weights are the plain module's)."""
        ...

    def input_pipeline(self, config: TrainConfig, data: TrainingData) -> str:
        """``config.input_pipeline`` resolved for this machine: ``device``, ``host`` or ``staged``."""
        ...

    def fit(
        self,
        model: Any,
        data: TrainingData,
        config: TrainConfig,
        options: Any,
        *,
        models: Models,
        on_epoch_end: EpochCallback,
    ) -> TrainResult:
        """Train on ``models.loss`` with the shared protocol; the model ends with the best-validation weights."""
        ...

    def log_model(
        self, model: Any, models: Models, config: Any, precision: str, example_images: np.ndarray, product: Product
    ) -> str:
        """Log the model to the active MLflow run as what a user can call (:mod:`thread_bench.models.pyfunc`);
        returns its URI."""
        ...

    def load_model(self, uri: str) -> Any:
        """A model :func:`log_model` logged, ready for the workload's ``predict`` on this process's device."""
        ...


@dataclass(frozen=True)
class Framework:
    """One framework: its name (the ``framework`` param), options, trainer and entry point."""

    name: str
    options: type[FrameworkOptions]
    #: The module implementing :class:`Trainer`; imported only once the process is set up for it.
    trainer_module: str
    #: ``python -m <entry_module>`` trains one run (``keras_train`` / ``torch_train``).
    entry_module: str
    #: The package whose first import fixes the backend in a process.
    package: str
    #: The environment variable that picks the backend before ``package`` is imported, if it has one.
    backend_variable: str | None = None
    #: The params its trainer logs for its options (a framework's own knobs: the analysis groups runs by them).
    knobs: tuple[str, ...] = ()

    @property
    def default_backend(self) -> str:
        return self.options().backend

    @property
    def backend_is_option(self) -> bool:
        """Whether the backend is chosen (``--backend``) or fixed by the framework."""
        return "backend" in {field.name for field in dataclasses.fields(self.options)}

    def running_backend(self) -> str | None:
        """The backend the framework already runs on in this process; ``None`` before its first import."""
        if self.package not in sys.modules:
            return None
        return self._import_trainer().backend()

    def startup_environment(
        self, backend: str, *, deterministic: bool = False, threads: int = 0, cpu_isa: str = cpu_isa_module.NATIVE
    ) -> dict[str, str]:
        """What the process environment needs before the framework's first import."""
        environment = backends.get(backend).startup_environment(deterministic, threads)
        environment.update(cpu_isa_module.environment(cpu_isa, {**os.environ, **environment}))
        if self.backend_variable is not None:
            environment[self.backend_variable] = backend
        return environment

    def can_start(self, backend: str) -> bool:
        """Whether this process can run the framework on ``backend`` (it has not started on another one)."""
        running = self.running_backend()
        return running is None or running == backend

    def load_trainer(
        self, backend: str, *, deterministic: bool = False, threads: int = 0, cpu_isa: str = cpu_isa_module.NATIVE
    ) -> Trainer:
        """Set the process up for ``backend`` and import the trainer.

        Raises:
            ValueError: the framework already runs on another backend in this process, ``backend`` cannot
                honour ``threads``, the processor lacks the ``cpu_isa`` cap's instructions, or a framework
                already started in this process without that cap.
        """
        cpu_isa_module.check_available(cpu_isa)
        cpu_isa_module.check_can_apply(cpu_isa)
        if not self.can_start(backend):
            raise ValueError(
                f"--backend {backend}: {self.name} is already running on {self.running_backend()} in this "
                "process and cannot switch; start a fresh process"
            )
        os.environ.update(
            self.startup_environment(backend, deterministic=deterministic, threads=threads, cpu_isa=cpu_isa)
        )
        return self._import_trainer()

    def _import_trainer(self) -> Trainer:
        return cast(Trainer, quiet.framework_import(self.trainer_module))  # TensorFlow's start-up notices hidden


#: The frameworks, by the name runs log as ``framework``. The one place a framework is registered.
FRAMEWORKS: dict[str, Framework] = {
    "keras": Framework(
        "keras",
        KerasOptions,
        "thread_bench.training.keras_trainer",
        "thread_bench.keras_train",
        package="keras",
        backend_variable="KERAS_BACKEND",
        knobs=(tracking.PARAM_JIT_COMPILE,),
    ),
    "torch": Framework(
        "torch",
        TorchOptions,
        "thread_bench.training.torch_trainer",
        "thread_bench.torch_train",
        package="torch",
        knobs=(tracking.PARAM_TORCH_COMPILE, tracking.PARAM_COMPILE_MODE, tracking.PARAM_CHANNELS_LAST),
    ),
    # Plain TensorFlow with a GradientTape loop; its Keras-layers style needs Keras on TensorFlow, hence the variable.
    "tensorflow": Framework(
        "tensorflow",
        TensorflowOptions,
        "thread_bench.training.tensorflow_trainer",
        "thread_bench.tensorflow_train",
        package="tensorflow",
        backend_variable="KERAS_BACKEND",
        knobs=(tracking.PARAM_JIT_COMPILE,),
    ),
}
NAMES = tuple(FRAMEWORKS)


def get(name: str) -> Framework:
    if name not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {list(NAMES)}, got {name!r}")
    return FRAMEWORKS[name]


if TYPE_CHECKING:  # mypy checks each trainer module against the protocol
    from thread_bench.training import keras_trainer, tensorflow_trainer, torch_trainer

    _TRAINERS: tuple[Trainer, ...] = (keras_trainer, torch_trainer, tensorflow_trainer)
