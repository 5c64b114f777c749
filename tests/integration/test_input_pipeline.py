"""Input pipelines: every path gives ``ArraySplit.batch``'s bytes in the sampler's order; ``auto`` resolves
to the device when the images fit, and ``device`` is refused with a clear message when they do not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import model_parity
from conftest import make_fake_prepared
from thread_bench import workloads
from thread_bench.config import TrainConfig
from thread_bench.data.prepared import load_prepared
from thread_bench.training import common, torch_trainer
from thread_bench.training.options import KerasOptions, TorchOptions
from thread_bench.workloads.thread_density.config import ModelConfig

GIB = 2**30


def _split(seed: int = 0, n: int = 21, size: int = 16) -> common.ArraySplit:
    rng = np.random.default_rng(seed)
    return common.ArraySplit(
        rng.integers(0, 256, (n, size, size), dtype=np.uint8), rng.uniform(6, 23, n).astype(np.float32)
    )


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("pipeline", ["device", "host"])
def test_torch_batches_equal_the_numpy_batches_bit_for_bit(pipeline: str, channels_last: bool) -> None:
    split = _split()
    inputs = torch_trainer.DeviceBatches(split, pipeline, channels_last)
    sampler = common.BatchSampler(len(split), 8, seed=3)
    order = [*sampler.batches(0), *sampler.batches(1), *common.in_order(len(split), 8)]
    for indices in order:
        x, y = inputs.batch(indices)
        expected_images, expected_labels = split.batch(indices)
        assert x.dtype == torch.float32 and x.shape == (len(expected_labels), 1, 16, 16)
        # One channel: NCHW and NHWC strides coincide, so only the requested layout can be checked.
        assert x.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        np.testing.assert_array_equal(x[:, 0].cpu().numpy(), expected_images)
        np.testing.assert_array_equal(y.cpu().numpy(), expected_labels)


def test_staged_batches_are_one_premade_batch_per_size() -> None:
    split = _split()
    inputs = torch_trainer.DeviceBatches(split, "staged")
    batches = common.BatchSampler(len(split), 8, seed=3).batches(0)  # sizes 8, 8, 5
    first, second, last = (inputs.batch(indices) for indices in batches)
    assert first is second and len(last[1]) == 5
    np.testing.assert_array_equal(first[0][:, 0].numpy(), split.batch(slice(0, 8))[0])


def test_keras_batches_equal_the_numpy_batches_bit_for_bit() -> None:
    # This process runs Keras on TensorFlow (host pipeline); JAX and torch backends, which also have the
    # device pipeline, run the same check in subprocesses (test_transfer.test_parity_under_other_keras_backends).
    assert model_parity.check_input_pipelines()["pipelines"] >= 1


@pytest.mark.parametrize(
    ("requested", "data_bytes", "device_bytes", "expected"),
    [
        ("auto", 10 * GIB, None, "device"),  # on a CPU the device is the host: nothing to upload
        ("auto", 1 * GIB, 80 * GIB, "device"),
        ("auto", 30 * GIB, 80 * GIB, "host"),  # more than device_data_fraction (0.25) of the GPU
        ("device", 1 * GIB, 80 * GIB, "device"),
        ("host", 1 * GIB, 80 * GIB, "host"),
        ("staged", 1 * GIB, None, "staged"),
    ],
)
def test_the_pipeline_is_resolved_from_sizes(
    requested: str, data_bytes: int, device_bytes: int | None, expected: str
) -> None:
    config = TrainConfig(input_pipeline=requested)
    assert common.resolve_input_pipeline(config, data_bytes, device_bytes) == expected


def test_device_is_refused_when_the_images_do_not_fit() -> None:
    config = TrainConfig(input_pipeline="device", device_data_fraction=0.1)
    with pytest.raises(ValueError, match=r"take 30\.00 GiB, more than device_data_fraction=0\.1 of the GPU's 80\.0"):
        common.resolve_input_pipeline(config, 30 * GIB, 80 * GIB)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_fit_feeds_the_batches_in_the_sampler_order(
    framework: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = make_fake_prepared(tmp_path, n_train=21, n_val=6, n_test=2, size=32)
    data = common.TrainingData.from_prepared(load_prepared(dataset))
    config = TrainConfig(seed=5, epochs=2, batch_size=8, patience=5, input_pipeline="device")
    trainer: Any
    if framework == "torch":
        trainer, options, inputs = torch_trainer, TorchOptions(), torch_trainer.DeviceBatches
    else:
        from thread_bench.training import keras_trainer as trainer

        options, inputs = KerasOptions(), trainer._Batches
        config = TrainConfig(seed=5, epochs=2, batch_size=8, patience=5, input_pipeline="host")
    seen: list[list[int]] = []
    original = inputs.batch

    def recording(self: Any, indices: Any) -> Any:
        if len(self.split) == len(data.train):
            seen.append(common.index_array(indices, len(self.split)).tolist())
        return original(self, indices)

    monkeypatch.setattr(inputs, "batch", recording)
    models = workloads.get("thread_density").models_for(framework)
    model_config = ModelConfig(base_filters=1, input_size=32)
    model = trainer.build_model(models, model_config)
    trainer.compile_model(model, models, model_config, config, options)
    trainer.fit(model, data, config, options, models=models, on_epoch_end=lambda record: None)
    sampler = common.BatchSampler(21, 8, seed=5)
    expected = [b.tolist() for epoch in range(2) for b in sampler.batches(epoch)]
    # Keras first peeks at a couple of batches to learn their shapes; after that it trains in order.
    assert seen[-len(expected) :] == expected
    assert all(batch in expected for batch in seen)
