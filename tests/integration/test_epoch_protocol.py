"""The one epoch protocol (``common.EpochProtocol``): its decisions without a framework, the explicit loop that
drives it, and Keras' ``fit`` and PyTorch's loop following it alike."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from thread_bench import frameworks, workloads
from thread_bench.config import TrainConfig
from thread_bench.training.common import (
    ArraySplit,
    EpochProtocol,
    EpochRecord,
    ExplicitLoop,
    TrainingData,
    TrainResult,
    lr_at_epoch,
    run_epochs,
)


class _RecordingMeter:
    """An :class:`EpochMeter` stand-in that needs no backend: it notes the calls, and times nothing."""

    maxrss_bytes = 123

    def __init__(self) -> None:
        self.calls: list[str] = []

    def begin_epoch(self) -> None:
        self.calls.append("begin_epoch")

    def begin_validation(self) -> None:
        self.calls.append("begin_validation")

    def end_validation(self) -> None:
        self.calls.append("end_validation")

    def end_epoch(self) -> None:
        self.calls.append("end_epoch")

    def record(self, epoch: int, train_loss: float, val_loss: float, learning_rate: float) -> EpochRecord:
        self.calls.append("record")
        return EpochRecord(epoch, train_loss, val_loss, 0.0, 0.0, 0.0, learning_rate, 0)


#: Validation losses and what the rule makes of them with patience 3 and min_delta 0.01: epochs 0, 1 and 4
#: improve (0.899 is not better than 0.9 by more than min_delta; NaN never is); 5, 6, 7 do not, so it stops
#: after epoch 7 with the weights of epoch 4, though epoch 8 would have improved.
VAL_LOSSES = [1.0, 0.9, 0.95, 0.899, 0.85, math.nan, 0.86, 0.845, 0.7, 0.6]
IMPROVED = [True, True, False, False, True, False, False, False]


def _config(tracemalloc: bool = False) -> TrainConfig:
    return TrainConfig(
        epochs=len(VAL_LOSSES),
        patience=3,
        min_delta=0.01,
        learning_rate=1e-3,
        lr_schedule="inverse_time",
        tracemalloc=tracemalloc,
    )


def test_the_epoch_protocol_decides_stop_best_epoch_and_learning_rate_without_a_framework() -> None:
    meter, reported, restored = _RecordingMeter(), [], []
    weights = {"now": "initial"}
    protocol = EpochProtocol(
        _config(), meter, reported.append, snapshot=lambda: weights["now"], restore=restored.append
    )
    stopped_at = None
    with protocol.measuring():
        for epoch, val_loss in enumerate(VAL_LOSSES):
            assert protocol.learning_rate(epoch) == pytest.approx(1e-3 / (1 + epoch / 10))
            protocol.begin_epoch()
            weights["now"] = f"weights after epoch {epoch}"
            protocol.begin_validation()
            protocol.end_validation()
            if protocol.end_epoch(epoch, 2.0 - epoch / 10, val_loss):
                stopped_at = epoch
                break
    assert stopped_at == 7
    assert meter.calls == ["begin_epoch", "begin_validation", "end_validation", "end_epoch", "record"] * 8
    assert [record.improved for record in protocol.history] == IMPROVED
    assert reported == protocol.history  # each record reported once, in order
    assert [r.learning_rate for r in protocol.history] == [lr_at_epoch(protocol.config, e) for e in range(8)]
    assert restored == []  # the best weights go back only when asked
    protocol.restore_best()
    assert restored == ["weights after epoch 4"]
    result = protocol.result(n_train=50)
    assert (result.best_epoch, result.best_val_loss, result.stopped_early) == (4, 0.85, True)
    assert (result.n_train, result.maxrss_bytes, result.py_alloc_peak_bytes) == (50, 123, None)
    assert math.isnan(result.history[5].val_loss)


def test_the_explicit_loop_runs_the_protocol() -> None:
    """``run_epochs``: the scheduled learning rate reaches the training pass, it stops where the protocol says,
    the best weights are restored, and the tracemalloc peak is taken when asked."""
    config = _config(tracemalloc=True)
    val_losses = iter(VAL_LOSSES)
    seen_rates: list[float] = []
    state = {"weights": -1, "epoch": -1}

    def train_epoch(epoch: int, learning_rate: float) -> float:
        seen_rates.append(learning_rate)
        state["weights"] = state["epoch"] = epoch
        return 1.0

    def restore(weights: int) -> None:
        state["weights"] = weights

    loop = ExplicitLoop(train_epoch, lambda: next(val_losses), snapshot=lambda: state["weights"], restore=restore)
    meter = _RecordingMeter()
    result = run_epochs(loop, config, 40, meter, lambda record: None)
    assert seen_rates == [lr_at_epoch(config, epoch) for epoch in range(8)]
    assert [r.improved for r in result.history] == IMPROVED
    assert (result.best_epoch, result.stopped_early, len(result.history)) == (4, True, 8)
    assert state == {"weights": 4, "epoch": 7}
    assert result.py_alloc_peak_bytes is not None and result.py_alloc_peak_bytes > 0


def test_the_protocol_refuses_a_diverged_training_and_keeps_nothing_without_improvement() -> None:
    restored: list[Any] = []
    protocol = EpochProtocol(TrainConfig(patience=2), _RecordingMeter(), lambda r: None, lambda: "w", restored.append)
    assert not protocol.end_epoch(0, 1.0, math.nan)
    assert protocol.end_epoch(1, 1.0, math.inf)  # two epochs without a finite improvement: patience 2 is up
    protocol.restore_best()
    assert restored == [] and protocol.result(10).best_epoch == -1
    with pytest.raises(FloatingPointError, match="train_loss is nan at epoch 2: training diverged"):
        protocol.end_epoch(2, math.nan, 0.5)


def _fake_split(rng: np.random.Generator, n: int, size: int = 32) -> ArraySplit:
    return ArraySplit(rng.integers(0, 256, (n, size, size), dtype=np.uint8), rng.uniform(6, 23, n).astype(np.float32))


def _fit_on_fake_validation_losses(
    framework: str, data: TrainingData, monkeypatch: pytest.MonkeyPatch
) -> tuple[TrainResult, list[list[np.ndarray]], list[np.ndarray]]:
    """``framework``'s real ``fit`` (Keras: ``model.fit`` and its callback; PyTorch: the explicit loop) on the
    thread-density model, each epoch's validation loss replaced by ``VAL_LOSSES[epoch]`` where the framework
    hands it to the protocol. Returns the result, the weights after each epoch and the weights it ends with."""
    original = EpochProtocol.end_epoch

    def end_epoch(self: EpochProtocol, epoch: int, train_loss: float, val_loss: float) -> bool:
        return original(self, epoch, train_loss, VAL_LOSSES[epoch])

    monkeypatch.setattr(EpochProtocol, "end_epoch", end_epoch)
    entry = frameworks.get(framework)
    trainer, options = entry.load_trainer(entry.default_backend), entry.options()
    workload = workloads.get("thread_density")
    models, model_config = workload.models_for(framework), workload.model_config(base_filters=1, input_size=32)
    config = dataclasses.replace(_config(), batch_size=8)
    config = dataclasses.replace(config, input_pipeline=trainer.input_pipeline(config, data))
    model = trainer.build_model(models, model_config)
    trainer.compile_model(model, models, model_config, config, options)

    def weights() -> list[np.ndarray]:
        if framework == "torch":
            return [tensor.detach().cpu().numpy().copy() for tensor in model.state_dict().values()]
        return [np.array(value) for value in model.get_weights()]

    after_epoch: list[list[np.ndarray]] = []
    result = trainer.fit(
        model, data, config, options, models=models, on_epoch_end=lambda record: after_epoch.append(weights())
    )
    return result, after_epoch, weights()


def _same(first: list[np.ndarray], second: list[np.ndarray]) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_keras_and_torch_stop_at_the_same_epoch_given_the_same_validation_losses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keras' callbacks and PyTorch's loop drive the same protocol: the same validation losses give the same
    improvements, the same early stop and the same best epoch, whose weights each model ends with."""
    rng = np.random.default_rng(0)
    data = TrainingData(train=_fake_split(rng, 16), val=_fake_split(rng, 6))
    histories = {}
    for framework in ("keras", "torch"):
        result, after_epoch, final = _fit_on_fake_validation_losses(framework, data, monkeypatch)
        assert (len(result.history), result.best_epoch, result.best_val_loss) == (8, 4, 0.85), framework
        assert result.stopped_early, framework
        assert _same(final, after_epoch[4]) and not _same(final, after_epoch[-1]), framework
        histories[framework] = result.history
    for field in ("epoch", "improved", "learning_rate"):
        assert [getattr(r, field) for r in histories["keras"]] == [getattr(r, field) for r in histories["torch"]]
    assert [r.improved for r in histories["torch"]] == IMPROVED
