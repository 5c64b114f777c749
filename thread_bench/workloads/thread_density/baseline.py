"""The thread-density workload's non-learning baseline: the spectral (FFT) thread counter scored on the test split
next to the models (:class:`thread_bench.workloads.Baseline`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from thread_bench.data.build import data_root
from thread_bench.data.prepared import PreparedDataset, Split
from thread_bench.metrics import mean_absolute_error, normalized_mae
from thread_bench.workloads import Baseline
from thread_bench.workloads.thread_density import corpus, keys, synthetic
from thread_bench.workloads.thread_density.config import DataConfig
from thread_bench.workloads.thread_density.counting import fft_count
from thread_bench.workloads.thread_density.prepare import synthetic_corpus_dir

log = logging.getLogger(__name__)


def stored_px_per_cm(dataset: PreparedDataset, split: Split, corpus_dir: Path | None) -> tuple[np.ndarray, str]:
    """Resolution of each stored sub-patch, px/cm: the source patch's px_per_cm scaled by input_size/crop_px.

    The source patch's resolution comes from the corpus index (``patch_index`` is its row) when
    ``corpus_dir`` holds one; a synthetic dataset without its corpus at hand falls back to the generator's
    fixed resolution.

    Raises:
        FileNotFoundError: a user corpus (not synthetic) whose index cannot be found.
        ValueError: the corpus index lacks rows the dataset was prepared from (the corpus changed since).
    """
    settings = dataset.manifest["settings"]
    scale = float(settings["input_size"]) / float(settings["crop_px"])
    rows = np.asarray(split.patch_index)
    if corpus_dir is not None and (corpus_dir / corpus.INDEX).is_file():
        by_row = {record.row: record.px_per_cm for record in corpus.read_index(corpus_dir)}
        missing = sorted(set(rows.tolist()) - set(by_row))
        if missing:
            raise ValueError(f"{corpus_dir / corpus.INDEX}: rows {missing[:5]} of the prepared dataset are missing")
        return np.asarray([by_row[row] for row in rows.tolist()], dtype=np.float64) * scale, "corpus index"
    if dataset.manifest["source"]["kind"] == "synthetic":
        return np.full(len(rows), synthetic.DEFAULT_PX_PER_CM * scale), "synthetic default"
    raise FileNotFoundError(
        f"the FFT baseline needs each patch's px_per_cm from the corpus index; corpus {corpus_dir} not found"
    )


def fft_baseline(split: Split, px_per_cm: np.ndarray, source: str) -> Baseline:
    """The spectral counter's vertical density for every sub-patch of ``split``, scored like the models.

    Args:
        source: where ``px_per_cm`` came from, for the report's note.
    """
    images = np.asarray(split.images)
    labels = np.asarray(split.labels, dtype=np.float64)
    estimates = np.full(len(labels), np.nan)
    for index, (image, resolution) in enumerate(zip(images, px_per_cm, strict=True)):
        try:
            estimates[index] = fft_count(image, float(resolution)).vertical
        except ValueError as error:  # CountingError included: an uncountable patch is a baseline failure
            log.debug("FFT baseline: sub-patch %d not counted: %s", index, error)
    counted = np.isfinite(estimates)
    n_counted = int(counted.sum())
    loss = normalized_mae(estimates[counted], labels[counted]) if n_counted else float("nan")
    mae = mean_absolute_error(estimates[counted], labels[counted]) if n_counted else float("nan")
    return fft_baseline_of(loss, mae, n_counted=n_counted, n_failed=len(labels) - n_counted, source=source)


def fft_baseline_of(loss: float, mae: float, *, n_counted: int, n_failed: int, source: str) -> Baseline:
    """The record of the FFT counter's scores: normalised MAE ``loss`` and ``mae`` in threads/cm over the
    ``n_counted`` sub-patches it could count (``n_failed`` not), resolutions from ``source``."""
    return Baseline(
        name="FFT baseline",
        test_loss=loss,
        metrics={
            keys.FFT_TEST_LOSS: loss,
            keys.FFT_TEST_MAE_THREADS_PER_CM: mae,
            keys.FFT_FAILED_SUBPATCHES: float(n_failed),
        },
        rows=(
            ("FFT baseline test loss (no learning)", "loss", loss),
            ("FFT baseline test MAE (no learning)", "threads/cm", mae),
        ),
        note=f"The FFT baseline counted {n_counted} test sub-patches ({n_failed} uncountable, left out); "
        f"resolution from the {source}.",
    )


def score_test_split(dataset: PreparedDataset, config: DataConfig | None, root: str | Path | None) -> Baseline:
    """The spectral counter on the test split of ``dataset`` (``Workload.baseline``), each sub-patch at the
    resolution of its source patch (:func:`stored_px_per_cm`).

    Raises:
        FileNotFoundError, ValueError: the resolutions cannot be known here (see :func:`stored_px_per_cm`).
    """
    return fft_baseline(dataset.test, *stored_px_per_cm(dataset, dataset.test, corpus_dir(config, root)))


def corpus_dir(config: DataConfig | None, root: str | Path | None = None) -> Path | None:
    """The raw corpus a dataset was prepared from, when it is on this machine (for per-patch resolutions);
    ``config``: its data settings, ``None`` when unknown."""
    if config is None:
        return None
    if config.source == "synthetic":
        directory = synthetic_corpus_dir(config, data_root(root))
        return directory if (directory / corpus.INDEX).is_file() else None
    return Path(config.source)
