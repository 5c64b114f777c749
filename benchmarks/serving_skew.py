"""Does a trained thread-density model answer in use what it scored in validation? Any framework.

    python benchmarks/serving_skew.py --run_id RUN    # a finished thread-density training run of this store

A model's validation score comes from the prepared dataset; a user's request goes through the logged model's own
preprocessing (:mod:`thread_bench.workloads.thread_density.serving`). Where the two differ, the validation score
is not the model's score in use. This cuts the same unrotated windows of ``crop_px`` (1 cm) from the raw patches
of the run's validation and test paintings, labels them by counting their masks, and scores the network on them
made three ways: cut from the histogram-equalised patch (``equalisation=patch``, the reference study's
preparation), equalised on their own (``equalisation=window``), and sent as requests to the logged model, which
applies the preprocessing its metadata names; the validation split as stored is the first row. Normalised MAE
(the training loss) and the median relative error, vertical threads (the network's output).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import mlflow
import numpy as np
import pandas as pd

from thread_bench import cli, tracking
from thread_bench.data.prepared import load_prepared
from thread_bench.measure import cpu_description
from thread_bench.models import pyfunc
from thread_bench.workloads.thread_density import baseline, corpus, serving
from thread_bench.workloads.thread_density.config import DataConfig
from thread_bench.workloads.thread_density.counting import CountingError, count_threads
from thread_bench.workloads.thread_density.prepare import equalize_histogram

#: Windows cut from each raw patch of the validation and test paintings.
WINDOWS_PER_PATCH = 4


def corpus_of(run_config: dict[str, Any], manifest: dict[str, Any]) -> Path | None:
    """The raw corpus a run's dataset was prepared from, when it is on this machine (:func:`baseline.corpus_dir`);
    a run trained on a dataset directory has no data settings, so a synthetic one's come from its manifest."""
    if run_config.get("data"):
        config = DataConfig(**run_config["data"])
    elif manifest["source"]["kind"] == "synthetic":
        config = DataConfig(**{"source": "synthetic", **manifest["settings"]})
    else:
        return None  # a user's corpus, whose directory the dataset does not record
    return baseline.corpus_dir(config, Path(run_config["dataset"]["path"]).parent.parent)


def raw_windows(
    corpus_dir: Path, paintings: set[str], crop_px: int, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Unrotated windows of the paintings' raw patches: the windows, their patches equalised whole, their labels
    (vertical threads/cm, counted on the masks) and their patches' resolutions."""
    rng = np.random.default_rng(seed)
    windows, in_context, labels, resolutions = [], [], [], []
    for record in corpus.read_index(corpus_dir):
        if record.painting_id not in paintings:
            continue
        patch = corpus.load_patch(corpus_dir, record)
        height, width = patch.image.shape
        if min(height, width) < crop_px:
            continue
        equalized = equalize_histogram(patch.image)
        for _ in range(WINDOWS_PER_PATCH):
            top, left = int(rng.integers(0, height - crop_px + 1)), int(rng.integers(0, width - crop_px + 1))
            cut = np.s_[top : top + crop_px, left : left + crop_px]
            try:
                label = count_threads(patch.h_mask[cut], patch.v_mask[cut], record.px_per_cm).vertical
            except CountingError:
                continue
            windows.append(patch.image[cut])
            in_context.append(equalized[cut])
            labels.append(label)
            resolutions.append(record.px_per_cm)
    return windows, in_context, np.asarray(labels), np.asarray(resolutions)


def errors(predictions: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    relative = np.abs(np.asarray(predictions, np.float64).reshape(-1) - labels) / labels
    return float(relative.mean()), float(np.median(relative))


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_id", required=True, help="a finished thread-density training run")
    args = parser.parse_args(argv)
    try:
        run = mlflow.get_run(args.run_id)
        config = mlflow.artifacts.load_dict(f"runs:/{args.run_id}/{tracking.ARTIFACT_CONFIG}")
    except mlflow.exceptions.MlflowException as error:
        parser.error(f"--run_id {args.run_id}: not a training run of {mlflow.get_tracking_uri()} ({error.message})")
    if config.get("workload") != "thread_density":
        parser.error(f"--run_id {args.run_id}: a thread-density run is needed, not {config.get('workload')!r}")
    data = load_prepared(config["dataset"]["path"])
    settings = data.manifest["settings"]
    crop_px, size = int(settings["crop_px"]), int(settings["input_size"])
    corpus_dir = corpus_of(config, data.manifest)
    if corpus_dir is None or not (corpus_dir / corpus.INDEX).is_file():
        parser.error(f"--run_id {args.run_id}: its raw corpus {corpus_dir} is not on this machine")
    paintings = set(data.manifest["paintings"]["val"]) | set(data.manifest["paintings"]["test"])
    windows, in_context, labels, resolutions = raw_windows(corpus_dir, paintings, crop_px)
    model = pyfunc.unwrap(f"runs:/{args.run_id}/{tracking.ARTIFACT_MODEL}")

    def resized(images: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) for image in images])

    requests = pd.DataFrame({"image": windows, "px_per_cm": resolutions})
    rows = {
        "validation split as stored (rotations and flips included)": (
            model.predict_images(data.val.images),
            data.val.labels.astype(np.float64),
        ),
        "windows cut from the equalised patch (equalisation=patch)": (
            model.predict_images(resized(in_context)),
            labels,
        ),
        "windows equalised on their own (equalisation=window)": (
            model.predict_images(resized([equalize_histogram(w) for w in windows])),
            labels,
        ),
        "windows as requests (the logged model's preprocessing)": (
            model.predict(None, requests)["density_v"].to_numpy(),
            labels,
        ),
    }
    params = run.data.params
    trained = settings.get("equalisation", serving.PATCH)
    served = model.preprocessing.get("equalisation_scope", f"{serving.PATCH} (no scope in its metadata)")
    print(f"run {args.run_id} ({params.get(tracking.PARAM_FRAMEWORK)}, seed {params.get(tracking.PARAM_SEED)}, "
          f"profile {params.get(tracking.PARAM_PROFILE)}, trained with equalisation {trained}, serves with {served}); "
          f"{len(labels)} windows of {len(paintings)} paintings; {cpu_description()}")  # fmt: skip
    print("| inputs | n | nMAE | median relative error |")
    print("| --- | --- | --- | --- |")
    for label, (predictions, truth) in rows.items():
        mean, median = errors(predictions, truth)
        print(f"| {label} | {len(truth)} | {mean:.4f} | {median:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
