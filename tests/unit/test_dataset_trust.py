"""A reused prepared dataset is verified, damage is named and rebuilt, and implausible labels never get in."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import psutil
import pytest

from corpus_helpers import grid_config, read_index_rows, write_grid_corpus, write_index
from thread_bench import lifecycle
from thread_bench.data import prepared
from thread_bench.data.prepared import MANIFEST, STAMP, DamagedDatasetError, load_prepared
from thread_bench.workloads.thread_density import prepare
from thread_bench.workloads.thread_density.config import DataConfig
from thread_bench.workloads.thread_density.prepare import ensure_prepared


def _config(source: Path, **overrides: object) -> DataConfig:
    return grid_config(source, subpatches_per_patch=4, input_size=32, **overrides)


@pytest.fixture(scope="module")
def grid_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_grid_corpus(tmp_path_factory.mktemp("corpus"), n_paintings=3, patches_per_painting=2)


@pytest.fixture
def built(grid_corpus: Path, tmp_path: Path) -> prepare.PrepareResult:
    return ensure_prepared(_config(grid_corpus), tmp_path / "data", workers=1)


def _flip_byte(file: Path, offset: int) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0xFF
    file.write_bytes(bytes(data))


def _rebuilt(grid_corpus: Path, built: prepare.PrepareResult, caplog: pytest.LogCaptureFixture) -> str:
    """Reuse the dataset again; it must be rebuilt with the original digest. Returns the warning logged."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="thread_bench.data.prepare"):
        again = ensure_prepared(_config(grid_corpus), built.dataset.path.parent.parent, workers=1)
    assert again.built
    assert again.dataset.digest == built.dataset.digest
    load_prepared(again.dataset.path)
    (warning,) = [r.getMessage() for r in caplog.records if "cannot be reused" in r.getMessage()]
    return warning


def test_flipped_image_byte_is_detected_and_rebuilt(
    grid_corpus: Path, built: prepare.PrepareResult, caplog: pytest.LogCaptureFixture
) -> None:
    _flip_byte(built.dataset.path / "train_images.npy", -10)

    warning = _rebuilt(grid_corpus, built, caplog)

    assert "content digest" in warning and "does not match the manifest's" in warning


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("header", "content digest"),
        ("truncate", "content digest"),
        ("manifest", "manifest.json missing"),
        ("array", "val_labels.npy: missing"),
    ],
)
def test_damaged_dataset_is_rebuilt(
    grid_corpus: Path, built: prepare.PrepareResult, caplog: pytest.LogCaptureFixture, damage: str, expected: str
) -> None:
    path = built.dataset.path
    if damage == "header":
        _flip_byte(path / "val_labels.npy", 12)  # inside the header's dict literal
    elif damage == "truncate":
        file = path / "train_images.npy"
        file.write_bytes(file.read_bytes()[:-100])
    elif damage == "manifest":
        (path / MANIFEST).unlink()  # made every later run fail with "Directory not empty" before
    else:
        (path / "val_labels.npy").unlink()

    assert expected in _rebuilt(grid_corpus, built, caplog)


def test_damage_without_a_stamp_is_named_when_opened_directly(built: prepare.PrepareResult) -> None:
    path = built.dataset.path
    (path / STAMP).unlink()
    file = path / "train_images.npy"
    file.write_bytes(file.read_bytes()[:-100])

    with pytest.raises(DamagedDatasetError, match=r"content digest .* does not match the manifest's"):
        load_prepared(path)
    with pytest.raises(DamagedDatasetError, match=r"train_images\.npy: not a readable \.npy array"):
        load_prepared(path, verify=False)


def test_reuse_reads_every_byte_only_when_a_file_changed(
    built: prepare.PrepareResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = built.dataset.path
    calls: list[Path] = []
    real = prepared.content_digest

    def counting(directory: Path, manifest: dict[str, object]) -> str:
        calls.append(directory)
        return real(directory, manifest)

    monkeypatch.setattr(prepared, "content_digest", counting)
    load_prepared(path)
    assert calls == [], "the build's stamp makes the first reuse cheap"
    os.utime(path / "test_labels.npy")  # touched, same bytes: verified once in full, then cheap again
    load_prepared(path)
    load_prepared(path)
    assert len(calls) == 1


def test_stale_staging_directories_are_removed(grid_corpus: Path, built: prepare.PrepareResult) -> None:
    prepared_dir = built.dataset.path.parent
    me = psutil.Process()
    start_ms = round(lifecycle.start_since_boot(me.pid) * 1000)  # as the owner records it
    host = socket.gethostname()
    dead = prepared_dir / f".{built.dataset.path.name}.tmp-{host}-{os.getpid()}-{start_ms - 60_000}"
    live = prepared_dir / f".{built.dataset.path.name}.tmp-{host}-{os.getpid()}-{start_ms}"
    elsewhere = prepared_dir / f".{built.dataset.path.name}.tmp-another-host-{os.getpid()}-1"
    for directory in (dead, live, elsewhere):
        directory.mkdir()
        (directory / "train_images.npy").write_bytes(b"partial")

    ensure_prepared(_config(grid_corpus), prepared_dir.parent, workers=1)

    assert not dead.exists(), "left by a process that is gone (same pid, another start time)"
    assert live.exists() and elsewhere.exists(), "a live build, and one whose owner cannot be checked"
    shutil.rmtree(live)
    shutil.rmtree(elsewhere)


@pytest.mark.parametrize("px_per_cm", ["1e9", "1e-9"])
def test_implausible_resolution_names_the_row(tmp_path: Path, px_per_cm: str) -> None:
    corpus_dir = write_grid_corpus(tmp_path / "corpus", n_paintings=3, patches_per_painting=1)
    rows: list[dict[str, object]] = list(read_index_rows(corpus_dir))
    rows[1]["px_per_cm"] = px_per_cm
    write_index(corpus_dir, rows)

    with pytest.raises(ValueError, match=r"index\.csv row 2 \(patch 'p1_0'\): counted .* threads/cm at px_per_cm="):
        ensure_prepared(_config(corpus_dir), tmp_path / "data", workers=1)
    assert not list((tmp_path / "data" / "prepared").iterdir()), "nothing half-built is left"


def test_ground_truth_that_disagrees_with_the_count_is_reported(tmp_path: Path) -> None:
    corpus_dir = write_grid_corpus(tmp_path / "corpus", n_paintings=3, patches_per_painting=1)
    rows: list[dict[str, object]] = list(read_index_rows(corpus_dir))
    rows[2]["density_v"] = 2 * float(str(rows[2]["density_v"]))
    write_index(corpus_dir, rows)

    manifest = ensure_prepared(_config(corpus_dir), tmp_path / "data", workers=1).dataset.manifest

    (mismatch,) = manifest["density_mismatches"]
    assert mismatch["row"] == 3 and mismatch["column"] == "density_v"
    assert mismatch["given"] == pytest.approx(2 * 200 / 18) and mismatch["counted"] == pytest.approx(200 / 18, rel=0.03)


def test_agreeing_ground_truth_leaves_the_manifest_as_before(built: prepare.PrepareResult) -> None:
    assert "density_mismatches" not in built.dataset.manifest  # so earlier builds keep their content digest


@pytest.mark.parametrize(("value", "shown"), [(0.0, "0"), (float("nan"), "NaN"), (6.9e7, "6.9e"), (-3.0, "-3")])
def test_implausible_labels_in_a_given_dataset_are_named(
    built: prepare.PrepareResult, value: float, shown: str
) -> None:
    path = built.dataset.path
    labels = np.load(path / "val_labels.npy")
    labels[1] = value
    np.save(path / "val_labels.npy", labels)
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["content_digest"] = prepared.content_digest(
        path, {k: v for k, v in manifest.items() if k != "content_digest"}
    )
    (path / MANIFEST).write_text(json.dumps(manifest))  # a consistent dataset with a bad label in it

    with pytest.raises(DamagedDatasetError, match=rf"val_labels\.npy: 1 value\(s\) outside .* at index 1 \({shown}"):
        load_prepared(path)


def test_thread_density_manifest_keeps_its_layout_implicit(built: prepare.PrepareResult) -> None:
    """No ``workload``/``arrays``/``labels`` fields: the manifest, hence the digest of every earlier build, stays."""
    dataset = built.dataset
    assert not {"workload", "arrays", "labels"} & set(dataset.manifest)
    assert (dataset.workload, dataset.label_kind, dataset.n_classes) == ("thread_density", "density", None)
    assert dataset.test.density_h.dtype == np.float32 and dataset.test.patch_index.dtype == np.int32
