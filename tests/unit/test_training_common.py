"""The shared protocol pieces (no framework needed) and the measurement context managers."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from thread_bench import measure, tracking
from thread_bench.config import TrainConfig
from thread_bench.metrics import normalized_mae
from thread_bench.training.common import (
    EPOCH_METRICS,
    BatchSampler,
    EarlyStopping,
    EpochRecord,
    TrainResult,
    lr_at_epoch,
    steady_state,
)
from thread_bench.workloads.thread_density import mean_predictor_baseline


def test_batch_sampler_is_a_fresh_permutation_per_epoch_from_the_seed_alone() -> None:
    sampler = BatchSampler(10, 4, seed=3)
    first = sampler.batches(0)
    assert [len(b) for b in first] == [4, 4, 2] == [len(b) for b in sampler.batches(1)]
    assert sorted(np.concatenate(first).tolist()) == list(range(10))
    assert len(sampler) == 3
    # Same (seed, epoch) -> same order, whatever was asked before; another epoch or seed -> another order.
    assert all(np.array_equal(a, b) for a, b in zip(first, BatchSampler(10, 4, seed=3).batches(0), strict=True))
    assert not np.array_equal(sampler.order(0), sampler.order(1))
    assert not np.array_equal(sampler.order(0), BatchSampler(10, 4, seed=4).order(0))


def test_batch_sampler_never_leaves_a_single_sample_batch() -> None:
    sampler = BatchSampler(9, 4, seed=0)  # 4 + 4 + 1 -> 4 + 5
    assert [len(b) for b in sampler.batches(0)] == [4, 5]
    assert len(sampler) == 2
    assert [len(b) for b in BatchSampler(3, 8, seed=0).batches(0)] == [3]
    with pytest.raises(ValueError, match="at least 2 samples"):
        BatchSampler(1, 4, seed=0)


def test_early_stopping_rule() -> None:
    stopper = EarlyStopping(patience=2, min_delta=0.01)
    assert stopper.update(0, 1.0)
    assert not stopper.update(1, 0.995)  # not better by more than min_delta
    assert not stopper.should_stop
    assert stopper.update(2, 0.9)
    assert not stopper.update(3, math.nan)  # a non-finite loss is never an improvement
    assert not stopper.update(4, 0.95)
    assert stopper.should_stop
    assert (stopper.best_epoch, stopper.best_val_loss) == (2, 0.9)


def test_learning_rate_schedule() -> None:
    assert lr_at_epoch(TrainConfig(learning_rate=1e-3), 50) == 1e-3
    schedule = TrainConfig(learning_rate=1e-3, lr_schedule="inverse_time")
    assert lr_at_epoch(schedule, 0) == 1e-3
    assert lr_at_epoch(schedule, 10) == pytest.approx(5e-4)
    cosine = TrainConfig(learning_rate=1e-3, lr_schedule="cosine", epochs=5)
    rates = [lr_at_epoch(cosine, epoch) for epoch in range(5)]
    assert rates[0] == 1e-3
    assert rates == pytest.approx([1e-3, 9.045e-4, 6.545e-4, 3.455e-4, 0.955e-4], rel=1e-3)
    assert rates == sorted(rates, reverse=True) and rates[-1] > 0  # decays, never to 0: the last epoch learns


def test_normalized_mae_and_mean_baseline() -> None:
    assert normalized_mae(np.array([11.0, 18.0]), np.array([10.0, 20.0])) == pytest.approx(0.1)
    loss, mae = mean_predictor_baseline(np.array([10.0, 20.0]), np.array([10.0, 20.0]))
    assert loss == pytest.approx((0.5 + 0.25) / 2)
    assert mae == pytest.approx(5.0)


def _record(epoch: int, time_s: float, train_loss: float = 1.0) -> EpochRecord:
    return EpochRecord(epoch, train_loss, 0.5, time_s, time_s - 0.5, 0.5, 1e-3, 1000 + epoch)


def test_train_result_reports_the_first_epoch_apart(tmp_path: Path) -> None:
    history = [_record(0, 30.0), _record(1, 2.0, 0.4), _record(2, 4.0, 0.3), _record(3, 3.0, 0.2)]
    history[2].improved = True
    result = TrainResult(history, best_epoch=2, best_val_loss=0.5, n_train=100, stopped_early=True)
    metrics = result.summary_metrics()
    assert metrics[tracking.FIRST_EPOCH_TIME_S] == 30.0
    assert metrics[tracking.MEDIAN_EPOCH_TIME_S] == 3.0  # of epochs 1..3 only
    assert metrics[tracking.TOTAL_TRAIN_TIME_S] == 39.0
    assert metrics[tracking.MEDIAN_TRAIN_TIME_S] == 2.5 and metrics[tracking.MEDIAN_VAL_TIME_S] == 0.5
    assert metrics[tracking.TRAIN_SAMPLES_PER_S] == pytest.approx(100 / 2.5)
    assert metrics[tracking.MIN_TRAIN_LOSS] == 0.2
    assert metrics[tracking.HOST_RSS_PEAK_BYTES] == 1003
    assert tracking.GPU_MEM_PEAK_BYTES not in metrics and tracking.HOST_PY_ALLOC_PEAK_BYTES not in metrics
    result.write_history_csv(tmp_path / "history.csv")
    with open(tmp_path / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", *EPOCH_METRICS, "improved"]
    assert [row["improved"] for row in rows] == ["0", "0", "1", "0"]
    assert rows[0][tracking.GPU_MEM_PEAK_BYTES] == ""  # no GPU: empty, not zero


def test_steady_state_is_the_epochs_after_the_first_or_the_only_one() -> None:
    history = [_record(0, 30.0), _record(1, 2.0), _record(2, 4.0)]
    assert [r.epoch for r in steady_state(history)] == [1, 2]
    assert [r.epoch for r in steady_state(history[:1])] == [0]
    one_epoch = TrainResult(history[:1], best_epoch=0, best_val_loss=0.5, n_train=10, stopped_early=False)
    single = one_epoch.summary_metrics()
    assert single[tracking.MEDIAN_EPOCH_TIME_S] == single[tracking.FIRST_EPOCH_TIME_S] == 30.0
    assert single[tracking.MEDIAN_TRAIN_TIME_S] == 29.5
    with pytest.raises(ValueError, match="history is empty"):
        steady_state([])


def test_timer_syncs_at_both_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    """The device is synced before each clock reading, so the region holds exactly the work launched in it."""
    events: list[str] = []
    readings = iter([10.0, 12.5])

    def clock() -> float:
        events.append("clock")
        return next(readings)

    monkeypatch.setattr(measure, "time", SimpleNamespace(perf_counter=clock))
    with measure.Timer(sync=lambda: events.append("sync")) as timer:
        events.append("work")
    assert events == ["sync", "clock", "work", "sync", "clock"]
    assert timer.elapsed_s == 2.5


def test_peak_host_memory_sees_native_allocations_that_tracemalloc_misses() -> None:
    size = 200 * 2**20
    with measure.PeakHostMemory() as host, measure.PythonAllocPeak() as python_heap:
        baseline = host.peak_bytes
        block = np.ones(size, dtype=np.uint8)  # numpy's data buffer is allocated outside the Python heap...
        time.sleep(0.1)
        del block
    assert host.peak_bytes - baseline > 0.9 * size
    # The kernel's high-water mark bounds the samples (up to its own accounting granularity).
    assert host.peak_bytes <= host.maxrss_bytes + 2**20
    assert python_heap.peak_bytes > 0
    with host:  # resets on entry
        pass
    assert host.peak_bytes < baseline + 0.5 * size


def test_gpu_meter_on_a_cpu_only_machine_measures_nothing() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with measure.PeakGpuMemory("torch") as gpu:
        pass
    assert gpu.available is False and gpu.peak_bytes is None and gpu.nvml_bytes is None
    with pytest.raises(ValueError, match="backend must be one of"):
        measure.PeakGpuMemory("keras")


def test_environment_info() -> None:
    import torch

    info = measure.environment_info("torch")
    assert info["device"] == ("cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(0))
    assert info["cpu_model"] and info["torch_threads"] >= 1 and info["torch_version"]
