"""The training protocol shared by every framework (docs/DESIGN.md §4), in one place.

Both framework modules take from here the batch order, the early-stopping rule, the learning-rate schedule,
the per-epoch measurements and the result type, so that the only difference between a Keras run and a
PyTorch run is the framework.

**Loss.** The workload's (``thread_bench.workloads``): the normalised MAE of thread densities, the
cross-entropy of digit logits; defined once in NumPy in :mod:`thread_bench.metrics`, which the frameworks'
losses (the workloads' models modules) are tested against. A batch's loss is the mean over its samples; an
epoch's ``train_loss`` is the sample-weighted mean of the batch losses seen while the weights changed (what
Keras' ``fit`` reports); ``val_loss`` is the mean over the whole validation split in inference mode (BatchNorm
running statistics, no dropout).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import random
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thread_bench import backends, tracking
from thread_bench.config import TrainConfig
from thread_bench.data.prepared import PreparedDataset
from thread_bench.measure import (
    PeakGpuMemory,
    PeakHostMemory,
    PythonAllocPeak,
    Sync,
    Timer,
    cpu_has_bf16,
)
from thread_bench.models import inputs

log = logging.getLogger(__name__)

#: The per-epoch metric keys, in the order of ``history.csv``.
EPOCH_METRICS = tracking.EPOCH_METRICS

#: Independent stream of ``numpy.random.default_rng((seed, stream, epoch))`` for the batch order.
_SHUFFLE_STREAM = 7


# ------------------------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class ArraySplit:
    """One split held in memory: uint8 images ``(N, S, S)`` and float32 labels ``(N,)`` (the workload's target:
    threads/cm, or a class id held exactly in float32, which every input pipeline moves alike)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, indices: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        """Images as float32 in [0, 1] ``(B, S, S)`` and labels ``(B, 1)``; the same bytes for every framework
        and for every input pipeline (the device pipelines convert through the same ``inputs.PIXEL_VALUES``)."""
        return inputs.PIXEL_VALUES[self.images[indices]], self.labels[indices].reshape(-1, 1)

    def batches_in_order(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for indices in in_order(len(self), batch_size):
            yield self.batch(indices)

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes + self.labels.nbytes)


@dataclass(frozen=True)
class TrainingData:
    train: ArraySplit
    val: ArraySplit

    @classmethod
    def from_prepared(cls, dataset: PreparedDataset) -> TrainingData:
        """Read the train and validation splits into memory (uint8; converted to float per batch)."""

        def load(split: str) -> ArraySplit:
            part = dataset.split(split)
            return ArraySplit(np.array(part.images, dtype=np.uint8), np.array(part.labels, dtype=np.float32))

        return cls(train=load("train"), val=load("val"))

    @property
    def input_size(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def nbytes(self) -> int:
        """What keeping both splits on the device takes (uint8 images, float32 labels)."""
        return self.train.nbytes + self.val.nbytes


def in_order(n_samples: int, batch_size: int) -> list[slice]:
    """The batches of a split in file order (validation and prediction)."""
    return [slice(start, min(start + batch_size, n_samples)) for start in range(0, n_samples, batch_size)]


def index_array(indices: np.ndarray | slice, n_samples: int) -> np.ndarray:
    """The sample indices of a batch given as an index array or as a slice of a split of ``n_samples``."""
    return np.arange(*indices.indices(n_samples)) if isinstance(indices, slice) else np.asarray(indices)


def staged_batch(
    cache: dict[int, Any], indices: np.ndarray | slice, n_samples: int, gather: Callable[[slice], Any]
) -> Any:
    """The ``staged`` pipeline's batch for ``indices``: the split's first samples, as many as the batch has,
    gathered once per size by ``gather`` and kept in ``cache``."""
    size = len(index_array(indices, n_samples))
    if size not in cache:
        cache[size] = gather(slice(0, size))
    return cache[size]


class BatchSource:
    """A split as an explicit training loop reads it (PyTorch, plain TensorFlow): :meth:`batch` gathers the
    samples of an index batch (the subclass' ``_gather``: on the device or the host, see
    ``TrainConfig.input_pipeline``), or with the ``staged`` pipeline returns one pre-made batch per size."""

    def __init__(self, split: ArraySplit, pipeline: str) -> None:
        self.split = split
        self.pipeline = pipeline
        self._staged: dict[int, Any] = {}

    def batch(self, indices: np.ndarray | slice) -> Any:
        if self.pipeline == "staged":
            return staged_batch(self._staged, indices, len(self.split), self._gather)
        return self._gather(indices)

    def batches(self, index_batches: Iterable[np.ndarray | slice]) -> Iterator[Any]:
        for indices in index_batches:
            yield self.batch(indices)

    def _gather(self, indices: np.ndarray | slice) -> Any:
        raise NotImplementedError


def resolve_input_pipeline(config: TrainConfig, data_bytes: int, device_bytes: int | None) -> str:
    """``config.input_pipeline`` made concrete: ``device``, ``host`` or ``staged`` (never ``auto``).

    Args:
        data_bytes: what the resident train and validation splits take (``TrainingData.nbytes``).
        device_bytes: the GPU's memory; ``None`` when training on the CPU, where the device is the host and
            the "device-resident" split is the one already in memory (nothing is uploaded).

    Raises:
        ValueError: ``device`` was asked for but the images do not fit in ``device_data_fraction`` of the GPU.
    """
    requested = config.input_pipeline
    if requested in ("host", "staged") or device_bytes is None:
        return "device" if requested == "auto" else requested
    budget = config.device_data_fraction * device_bytes
    if data_bytes <= budget:
        return "device"
    if requested == "device":
        raise ValueError(
            f"input_pipeline=device: the train and validation images take {data_bytes / 2**30:.2f} GiB, more "
            f"than device_data_fraction={config.device_data_fraction} of the GPU's {device_bytes / 2**30:.1f} "
            "GiB; raise device_data_fraction or use input_pipeline=host"
        )
    return "host"


def input_pipeline_on(backend: str, config: TrainConfig, data: TrainingData) -> str:
    """:func:`resolve_input_pipeline` for ``data`` and the device of ``backend`` (a GPU's memory, or the host)."""
    return resolve_input_pipeline(config, data.nbytes, backends.get(backend).device_memory_bytes())


class BatchSampler:
    """The order in which every framework sees the training samples: a fresh permutation per epoch, drawn
    from ``(seed, epoch)`` alone, so it does not depend on the framework or on what ran before.

    The last batch may be smaller; a remainder of a single sample joins the previous batch instead, because
    BatchNorm needs at least two samples in training mode.
    """

    def __init__(self, n_samples: int, batch_size: int, seed: int) -> None:
        if n_samples < 2:
            raise ValueError(f"the training split needs at least 2 samples, got {n_samples}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.seed = seed

    def __len__(self) -> int:
        full, remainder = divmod(self.n_samples, self.batch_size)
        count = full + (1 if remainder else 0)
        return count - 1 if remainder == 1 and count > 1 else count

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, _SHUFFLE_STREAM, epoch)).permutation(self.n_samples)

    def batches(self, epoch: int) -> list[np.ndarray]:
        order = self.order(epoch)
        batches = [order[start : start + self.batch_size] for start in range(0, self.n_samples, self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2:] = [np.concatenate(batches[-2:])]
        return batches


# ------------------------------------------------------------------------------------- the protocol


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (from 0): constant, ``learning_rate / (1 + epoch / 10)``, or a half cosine
    over ``epochs`` (it never reaches 0: the last epoch still learns)."""
    if config.lr_schedule == "none":
        return config.learning_rate
    if config.lr_schedule == "inverse_time":
        return config.learning_rate / (1.0 + epoch / 10.0)
    if config.lr_schedule == "cosine":
        return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
    raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}")


class EarlyStopping:
    """Stop when ``val_loss`` has not improved by more than ``min_delta`` for ``patience`` epochs; the
    caller keeps the weights of the epoch for which :meth:`update` returned True (the best so far).

    The same rule as ``keras.callbacks.EarlyStopping(patience, min_delta, restore_best_weights=True)``,
    implemented once so that every framework stops at the same epoch given the same losses. A non-finite
    ``val_loss`` never counts as an improvement.
    """

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best_val_loss = math.inf
        self.best_epoch = -1
        self.epochs_without_improvement = 0

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record ``epoch``'s validation loss; True when it is the new best."""
        if math.isfinite(val_loss) and val_loss < self.best_val_loss - self.min_delta:
            self.best_val_loss = val_loss
            self.best_epoch = epoch
            self.epochs_without_improvement = 0
            return True
        self.epochs_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.epochs_without_improvement >= self.patience


def check_finite_loss(epoch: int, train_loss: float) -> None:
    if not math.isfinite(train_loss):
        raise FloatingPointError(
            f"train_loss is {train_loss} at epoch {epoch}: training diverged (try a lower learning_rate)"
        )


def seed_host(seed: int) -> None:
    """Seed Python's and NumPy's global generators (the framework's own: ``Trainer.seed``)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global RNG, for third-party code that uses it


def bf16_hardware(backend: str) -> str:
    """Whether the device ``backend`` trains on computes bfloat16 natively: ``native`` or ``emulated``.

    Raises:
        ValueError: a GPU without bfloat16 (compute capability below 8.0): a ``bf16`` run there would not be
            bf16, so it is refused rather than logged as such.
    """
    compute = backends.get(backend)
    capability = compute.gpu_compute_capability()
    if capability is not None:
        if capability < (8, 0):
            raise ValueError(
                f"precision=bf16: the GPU {compute.gpu_name()} has compute capability "
                f"{capability[0]}.{capability[1]}; bfloat16 needs 8.0 (Ampere) or newer. Use fp32 or tf32"
            )
        return "native"
    # A CPU without bfloat16 instructions still computes in bfloat16 (converting in software): the numbers
    # are bf16's, the speed is not; logged so that such a run is not read as a bf16 speed measurement.
    return "native" if cpu_has_bf16() else "emulated"


def configure_backend(backend: str, train: TrainConfig) -> dict[str, Any]:
    """The process-wide settings of the protocol on ``backend``, before any model exists: memory
    reservation off, threads, deterministic kernels, the precision's float32 rules. Returns the params to
    log, read back from the backend; says so in the log when the backend sees no GPU (training on the CPU).

    Raises:
        ValueError: bf16 on a GPU without it.
    """
    compute = backends.get(backend)
    compute.set_threads(train.threads)  # first: TensorFlow accepts it only before its runtime starts
    knobs: dict[str, Any] = {tracking.PARAM_BACKEND: backend, **compute.prepare_memory()}
    compute.set_deterministic(train.deterministic)
    knobs.update(compute.set_precision(train.precision))
    knobs[tracking.PARAM_BF16_HARDWARE] = bf16_hardware(backend) if train.precision == "bf16" else "unused"
    if not compute.gpu_available():
        log.info("no GPU visible to the %s backend: training on the CPU", backend)
    return knobs


def device_label(backend: str) -> str:
    """Where a model on ``backend`` runs, as logged with an evaluation: ``<backend>:<GPU name or cpu>``."""
    return f"{backend}:{backends.get(backend).gpu_name() or 'cpu'}"


def pinned_requirements(versions: dict[str, str]) -> list[str]:
    """The pip requirements of a logged model: each package of ``versions`` (``Trainer.versions``) pinned at its
    release, without a local build suffix (``2.13.0+cpu``); TensorFlow as the CPU build this project pins (on a
    GPU machine use ``tensorflow[and-cuda]`` instead)."""
    return [
        f"{'tensorflow-cpu' if name == 'tensorflow' else name}=={version.split('+')[0]}"
        for name, version in versions.items()
    ]


# -------------------------------------------------------------------------------- measuring an epoch


class EpochMeter:
    """Times one epoch and its training and validation parts (device synced at each edge) and samples the
    memory peaks over the epoch. Callback-friendly: four calls in this order per epoch."""

    def __init__(self, backend: str, sync: Sync) -> None:
        self.epoch_timer = Timer(sync)
        self.train_timer = Timer(sync)
        self.val_timer = Timer(sync)
        self.host_memory = PeakHostMemory()
        self.gpu_memory = PeakGpuMemory(backend)

    @classmethod
    def on(cls, backend: str) -> EpochMeter:
        """The meter of a training on ``backend``, synced with that backend's device."""
        return cls(backend, backends.get(backend).device_sync())

    def begin_epoch(self) -> None:
        self.host_memory.start()
        self.gpu_memory.start()
        self.epoch_timer.start()
        self.train_timer.start()

    def begin_validation(self) -> None:
        self.train_timer.stop()
        self.val_timer.start()

    def end_validation(self) -> None:
        self.val_timer.stop()

    def end_epoch(self) -> None:
        self.epoch_timer.stop()
        self.gpu_memory.stop()
        self.host_memory.stop()

    def record(self, epoch: int, train_loss: float, val_loss: float, learning_rate: float) -> EpochRecord:
        return EpochRecord(
            epoch=epoch,
            train_loss=float(train_loss),
            val_loss=float(val_loss),
            epoch_time_s=self.epoch_timer.elapsed_s,
            train_time_s=self.train_timer.elapsed_s,
            val_time_s=self.val_timer.elapsed_s,
            learning_rate=float(learning_rate),
            host_rss_peak_bytes=self.host_memory.peak_bytes,
            gpu_mem_peak_bytes=self.gpu_memory.peak_bytes,
            gpu_mem_nvml_bytes=self.gpu_memory.nvml_bytes,
        )

    @property
    def maxrss_bytes(self) -> int:
        return self.host_memory.maxrss_bytes


def python_alloc_meter(enabled: bool) -> contextlib.AbstractContextManager[PythonAllocPeak | None]:
    return PythonAllocPeak() if enabled else contextlib.nullcontext()


class EpochProtocol:
    """The protocol's decisions around a framework's epochs, written once (docs/DESIGN.md §4): the scheduled
    learning rate, the meter's edges, the epoch's record, the early-stopping rule, the best weights kept and
    restored, and the :class:`TrainResult`.

    A framework only trains and validates; it drives this object from its own loop. The explicit loops
    (PyTorch, plain TensorFlow) do it in :func:`run_epochs`; Keras from a ``fit`` callback
    (``keras_trainer``). Per epoch, in this order: :meth:`learning_rate` (to apply), :meth:`begin_epoch`,
    the training pass, :meth:`begin_validation`, the validation pass, :meth:`end_validation`,
    :meth:`end_epoch` (stop when it returns True); after the last epoch :meth:`restore_best`, and
    :meth:`result` once :meth:`measuring` has closed.

    Args:
        meter: the epoch's timers and memory peaks (:class:`EpochMeter`).
        on_epoch_end: given each epoch's record, outside the timed regions.
        snapshot: a copy of the model's weights as they are now; ``restore`` puts such a copy back.
    """

    def __init__(
        self,
        config: TrainConfig,
        meter: EpochMeter,
        on_epoch_end: EpochCallback,
        snapshot: Callable[[], Any],
        restore: Callable[[Any], None],
    ) -> None:
        self.config = config
        self.meter = meter
        self.report = on_epoch_end
        self.snapshot = snapshot
        self.restore = restore
        self.stopper = EarlyStopping(config.patience, config.min_delta)
        self.history: list[EpochRecord] = []
        self.best_weights: Any = None
        self.py_alloc_peak_bytes: int | None = None

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Around the whole training: the optional Python-heap peak (``config.tracemalloc``)."""
        with python_alloc_meter(self.config.tracemalloc) as alloc:
            yield
        self.py_alloc_peak_bytes = alloc.peak_bytes if alloc is not None else None

    def learning_rate(self, epoch: int) -> float:
        """The schedule's learning rate for ``epoch``, for the framework to apply before :meth:`begin_epoch`."""
        return lr_at_epoch(self.config, epoch)

    def begin_epoch(self) -> None:
        self.meter.begin_epoch()

    def begin_validation(self) -> None:
        self.meter.begin_validation()

    def end_validation(self) -> None:
        self.meter.end_validation()

    def end_epoch(self, epoch: int, train_loss: float, val_loss: float) -> bool:
        """Close ``epoch``: stop its meters, refuse a diverged ``train_loss``, record the epoch, apply the
        early-stopping rule (a copy of the weights when they are the best so far) and report the record;
        returns whether training stops after this epoch."""
        self.meter.end_epoch()
        check_finite_loss(epoch, train_loss)
        record = self.meter.record(epoch, train_loss, val_loss, self.learning_rate(epoch))
        record.improved = self.stopper.update(epoch, val_loss)
        if record.improved:
            self.best_weights = self.snapshot()
        self.history.append(record)
        self.report(record)
        return self.stopper.should_stop

    def restore_best(self) -> None:
        """Put the best epoch's weights back into the model (none kept: nothing to do)."""
        if self.best_weights is not None:
            self.restore(self.best_weights)

    def result(self, n_train: int) -> TrainResult:
        return TrainResult(
            history=self.history,
            best_epoch=self.stopper.best_epoch,
            best_val_loss=self.stopper.best_val_loss,
            n_train=n_train,
            stopped_early=len(self.history) < self.config.epochs,
            maxrss_bytes=self.meter.maxrss_bytes,
            py_alloc_peak_bytes=self.py_alloc_peak_bytes,
        )


@dataclass(frozen=True)
class ExplicitLoop:
    """What a framework with its own training loop (PyTorch, plain TensorFlow) supplies to :func:`run_epochs`."""

    #: ``train_epoch(epoch, learning_rate) -> train_loss``: one pass over that epoch's batches.
    train_epoch: Callable[[int, float], float]
    #: ``evaluate() -> val_loss``: the validation split in inference mode.
    evaluate: Callable[[], float]
    #: ``snapshot()`` -> a copy of the weights; ``restore(copy)`` puts them back.
    snapshot: Callable[[], Any]
    restore: Callable[[Any], None]


def run_epochs(
    loop: ExplicitLoop, config: TrainConfig, n_train: int, meter: EpochMeter, on_epoch_end: EpochCallback
) -> TrainResult:
    """The protocol's epochs around a framework's own loop: each epoch trained at the scheduled learning rate and
    validated between the meter's edges, until :class:`EpochProtocol` says stop; then the best weights restored.
    Keras drives the same :class:`EpochProtocol` from a ``fit`` callback (``keras_trainer``)."""
    protocol = EpochProtocol(config, meter, on_epoch_end, loop.snapshot, loop.restore)
    with protocol.measuring():
        for epoch in range(config.epochs):
            learning_rate = protocol.learning_rate(epoch)
            protocol.begin_epoch()
            train_loss = loop.train_epoch(epoch, learning_rate)
            protocol.begin_validation()
            val_loss = loop.evaluate()
            protocol.end_validation()
            if protocol.end_epoch(epoch, train_loss, val_loss):
                break
    protocol.restore_best()
    return protocol.result(n_train)


# ---------------------------------------------------------------------------------------- the result


@dataclass
class EpochRecord:
    """One row of the history: the per-epoch metrics of docs/DESIGN.md §5 (``step`` = ``epoch``)."""

    epoch: int
    train_loss: float
    val_loss: float
    epoch_time_s: float
    train_time_s: float
    val_time_s: float
    learning_rate: float
    host_rss_peak_bytes: int
    gpu_mem_peak_bytes: int | None = None
    gpu_mem_nvml_bytes: int | None = None
    #: Whether this epoch's weights are the best so far (set by the early-stopping rule).
    improved: bool = False

    def metrics(self) -> dict[str, float]:
        values: dict[str, float | int | None] = {
            tracking.TRAIN_LOSS: self.train_loss,
            tracking.VAL_LOSS: self.val_loss,
            tracking.EPOCH_TIME_S: self.epoch_time_s,
            tracking.TRAIN_TIME_S: self.train_time_s,
            tracking.VAL_TIME_S: self.val_time_s,
            tracking.LEARNING_RATE: self.learning_rate,
            tracking.HOST_RSS_PEAK_BYTES: self.host_rss_peak_bytes,
            tracking.GPU_MEM_PEAK_BYTES: self.gpu_mem_peak_bytes,
            tracking.GPU_MEM_NVML_BYTES: self.gpu_mem_nvml_bytes,
        }
        return {key: float(value) for key, value in values.items() if value is not None}


#: Called after each epoch, outside the timed regions (logging, console output).
EpochCallback = Callable[[EpochRecord], None]


def steady_state(history: Sequence[EpochRecord]) -> Sequence[EpochRecord]:
    """The epochs that measure the steady state: every epoch after the first, which carries tracing,
    compilation and allocator warm-up (docs/DESIGN.md §7); the only epoch when there is one.

    Raises:
        ValueError: ``history`` is empty.
    """
    if not history:
        raise ValueError("history is empty: a training has at least one epoch")
    return history[1:] or history


@dataclass
class TrainResult:
    """What ``fit`` returns in every framework; the model itself holds the best-validation weights."""

    history: list[EpochRecord]
    best_epoch: int
    best_val_loss: float
    n_train: int
    stopped_early: bool
    #: Kernel-reported lifetime peak RSS of the process at the end of training (cross-check of the samples).
    maxrss_bytes: int = 0
    py_alloc_peak_bytes: int | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def summary_metrics(self) -> dict[str, float]:
        """The summary metrics of docs/DESIGN.md §5, plus the first epoch apart from the steady state."""
        times = [r.epoch_time_s for r in self.history]
        steady = steady_state(self.history)
        median_train_time_s = statistics.median(r.train_time_s for r in steady)
        metrics = {
            tracking.BEST_VAL_LOSS: self.best_val_loss,
            tracking.BEST_EPOCH: self.best_epoch,
            tracking.MIN_TRAIN_LOSS: min(r.train_loss for r in self.history),
            tracking.EPOCHS_TRAINED: len(self.history),
            tracking.TOTAL_TRAIN_TIME_S: sum(times),
            tracking.FIRST_EPOCH_TIME_S: times[0],
            tracking.MEDIAN_EPOCH_TIME_S: statistics.median(r.epoch_time_s for r in steady),
            tracking.MEDIAN_TRAIN_TIME_S: median_train_time_s,
            tracking.MEDIAN_VAL_TIME_S: statistics.median(r.val_time_s for r in steady),
            tracking.TRAIN_SAMPLES_PER_S: self.n_train / median_train_time_s,
            tracking.HOST_RSS_PEAK_BYTES: max(r.host_rss_peak_bytes for r in self.history),
            tracking.HOST_MAXRSS_BYTES: self.maxrss_bytes,
        }
        gpu_peaks = [r.gpu_mem_peak_bytes for r in self.history if r.gpu_mem_peak_bytes is not None]
        if gpu_peaks:
            metrics[tracking.GPU_MEM_PEAK_BYTES] = max(gpu_peaks)
        if self.py_alloc_peak_bytes is not None:
            metrics[tracking.HOST_PY_ALLOC_PEAK_BYTES] = self.py_alloc_peak_bytes
        metrics.update(self.extra)
        return {key: float(value) for key, value in metrics.items()}

    def write_history_csv(self, path: Path) -> None:
        """One row per epoch: ``epoch``, the per-epoch metrics (GPU columns empty on a CPU), ``improved``."""
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["epoch", *EPOCH_METRICS, "improved"], restval="")
            writer.writeheader()
            for record in self.history:
                writer.writerow({"epoch": record.epoch, **record.metrics(), "improved": int(record.improved)})
