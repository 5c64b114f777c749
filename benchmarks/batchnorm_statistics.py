"""Do BatchNorm's running statistics cost a trained thread-density model its accuracy? PyTorch models.

    python benchmarks/batchnorm_statistics.py --run_id RUN    # a finished PyTorch training run of this store

A network in evaluation mode normalises with the running statistics that training kept as an exponential
average of its last batches' (Keras momentum 0.9: about the last ten), while the weights went on changing. This
recomputes every BatchNorm layer's statistics over the whole training split, as a cumulative average of batch
statistics in training mode (dropout off; "precise BatchNorm"), and scores the model before and after: normalised
MAE on the training and validation splits and on the held-out-style windows (``held_out.make_windows``), the FFT
counter beside it. A third row recomputes them from batches that each hold one painting's patches, the split's
stored order: how much the statistics' source matters, since batches of one density carry little of the
variance the network was trained to see.

PyTorch only: the question is whether the trained network's statistics are stale, which one framework answers;
the model's dataset is read from the run's ``config.json``.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence

import mlflow
import numpy as np
import torch
from torch import nn

from thread_bench import cli, tracking
from thread_bench.data.prepared import PreparedDataset, Split, load_prepared
from thread_bench.measure import cpu_description
from thread_bench.models import pyfunc
from thread_bench.workloads.thread_density import held_out, torch_models
from thread_bench.workloads.thread_density.spec import as_model_input

#: Recomputation batch: the profiles' training batch size.
BATCH = 32


def recompute(model: nn.Module, images: np.ndarray, order: np.ndarray) -> None:
    """Every BatchNorm layer's running mean and variance: the average over batches of ``images[order]`` of its
    batch statistics, computed in training mode with dropout off."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        raise ValueError("the model has no BatchNorm layer")
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average, not an exponential one
    model.eval()
    for layer in layers:
        layer.train()
    x = as_model_input(images, images.shape[1])[order]
    with torch.no_grad():
        for first in range(0, len(x), BATCH):
            model(torch.from_numpy(x[first : first + BATCH]).unsqueeze(1))
    model.eval()


def split_nmae(model: nn.Module, split: Split) -> float:
    """The training loss (the workload's normalised MAE) on ``split``, in evaluation mode."""
    predictions = torch.from_numpy(torch_models.predict(model, split.images))
    return float(torch_models.loss(predictions, torch.from_numpy(split.labels.reshape(-1))))


def score(
    wrapped: pyfunc.WorkloadPyfunc, data: PreparedDataset, windows: held_out.Windows, fft: np.ndarray
) -> dict[str, float]:
    """nMAE on the training and validation splits and on the held-out windows, the FFT's there beside it."""
    estimates = held_out.cnn_estimates(lambda frame: wrapped.predict(None, frame), windows)
    shared = held_out.common(held_out.samples(windows, {"cnn": estimates, "fft": fft}), ["cnn", "fft"])
    return {
        "train": split_nmae(wrapped.model, data.train),
        "val": split_nmae(wrapped.model, data.val),
        "held-out": float(shared["err_cnn"].mean()),
        "held-out FFT": float(shared["err_fft"].mean()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_id", required=True, help="a finished PyTorch thread-density training run")
    parser.add_argument("--windows", type=int, default=held_out.DEFAULT_WINDOWS, help="held-out-style windows")
    args = parser.parse_args(argv)
    try:
        run = mlflow.get_run(args.run_id)
    except mlflow.exceptions.MlflowException as error:
        parser.error(f"--run_id {args.run_id}: not found in {mlflow.get_tracking_uri()} ({error.message})")
    if run.data.params.get(tracking.PARAM_FRAMEWORK) != "torch":
        parser.error(f"--run_id {args.run_id}: a PyTorch run is needed, this one's framework is "
                     f"{run.data.params.get(tracking.PARAM_FRAMEWORK)!r}")  # fmt: skip
    config = mlflow.artifacts.load_dict(f"runs:/{args.run_id}/{tracking.ARTIFACT_CONFIG}")
    data = load_prepared(config["dataset"]["path"])
    windows = held_out.make_windows(args.windows)
    fft = held_out.fft_estimates(windows)
    logged = pyfunc.unwrap(f"runs:/{args.run_id}/{tracking.ARTIFACT_MODEL}")
    rows = {"as logged (training's running average)": score(logged, data, windows, fft)}
    shuffled = np.random.default_rng(0).permutation(len(data.train))
    for label, order in (
        ("recomputed: whole training split, shuffled batches", shuffled),
        ("recomputed: batches of one painting (stored order)", np.arange(len(data.train))),
    ):
        wrapped = copy.copy(logged)
        wrapped.model = copy.deepcopy(logged.model)
        recompute(wrapped.model, data.train.images, order)
        rows[label] = score(wrapped, data, windows, fft)
    params = run.data.params
    print(f"run {args.run_id} (seed {params.get(tracking.PARAM_SEED)}, profile {params.get(tracking.PARAM_PROFILE)}), "
          f"{len(windows.images)} held-out windows; {cpu_description()}")  # fmt: skip
    print("| BatchNorm statistics | train nMAE | val nMAE | held-out nMAE | FFT held-out nMAE |")
    print("| --- | --- | --- | --- | --- |")
    for label, values in rows.items():
        print(f"| {label} | {' | '.join(f'{v:.4f}' for v in values.values())} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
