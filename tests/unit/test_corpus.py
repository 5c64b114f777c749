"""Reading a raw corpus: every bad input gets an error naming the file/row and what was expected."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from corpus_helpers import COLUMNS, read_index_rows, write_grid_corpus, write_index
from thread_bench.workloads.thread_density import corpus


@pytest.fixture
def grid_corpus(tmp_path: Path) -> Path:
    return write_grid_corpus(tmp_path / "corpus", n_paintings=3, patches_per_painting=1)


def _load_all(directory: Path) -> list[corpus.Patch]:
    return [corpus.load_patch(directory, record) for record in corpus.read_index(directory)]


def test_valid_corpus_loads(grid_corpus: Path) -> None:
    patches = _load_all(grid_corpus)
    assert [p.record.patch_id for p in patches] == ["p0_0", "p1_0", "p2_0"]
    assert patches[0].image.dtype == np.uint8
    assert patches[0].h_mask.dtype == bool and patches[0].h_mask.shape == patches[0].image.shape
    assert patches[0].record.density_v == pytest.approx(200 / 14)


def test_sixteen_bit_tiff_is_read_as_uint16(tmp_path: Path) -> None:
    directory = write_grid_corpus(tmp_path / "c", n_paintings=3, patches_per_painting=2)
    patch = next(p for p in _load_all(directory) if p.record.image.endswith(".tif"))
    assert patch.image.dtype == np.uint16


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        corpus.read_index(tmp_path / "nowhere")


def test_missing_index(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"index\.csv: missing.*painting_id"):
        corpus.read_index(tmp_path / "empty")


def test_missing_column(grid_corpus: Path) -> None:
    rows = read_index_rows(grid_corpus)
    write_index(grid_corpus, rows, columns=[c for c in COLUMNS if c != "px_per_cm"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['px_per_cm'\]"):
        corpus.read_index(grid_corpus)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("px_per_cm", "0", r"row 2: px_per_cm must be a number > 0, got '0'"),
        ("px_per_cm", "-5", r"row 2: px_per_cm must be a number > 0"),
        ("px_per_cm", "two hundred", r"row 2: column 'px_per_cm' must be a number, got 'two hundred'"),
        ("px_per_cm", "nan", r"row 2: column 'px_per_cm' must be finite"),
        ("density_v", "abc", r"row 2: column 'density_v' must be a number"),
        ("patch_id", "", r"row 2: column 'patch_id' is empty"),
        ("patch_id", "p0_0", r"row 2: patch_id 'p0_0' repeats row 1"),
        ("image", "/abs/path.png", r"row 2: column 'image' must be a path inside the corpus directory"),
        ("image", "../other/images/x.png", r"row 2: column 'image' must be a path inside the corpus directory"),
        ("v_mask", "masks/../../x.png", r"row 2: column 'v_mask' must be a path inside the corpus directory"),
        ("h_mask", "gone.png", r"row 2 \(h_mask\): file .*gone\.png not found"),
    ],
)
def test_malformed_rows(grid_corpus: Path, column: str, value: str, message: str) -> None:
    rows: list[dict[str, object]] = list(read_index_rows(grid_corpus))
    rows[1][column] = value
    write_index(grid_corpus, rows)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        corpus.read_index(grid_corpus)


def test_image_and_mask_of_different_sizes(grid_corpus: Path) -> None:
    cv2.imwrite(str(grid_corpus / "p1_0_v.png"), np.full((280, 300), 255, np.uint8))
    with pytest.raises(ValueError, match=r"row 2 \(patch 'p1_0'\): v_mask p1_0_v\.png is 300x280 px but the image"):
        _load_all(grid_corpus)


def test_non_binary_mask(grid_corpus: Path) -> None:
    mask = cv2.imread(str(grid_corpus / "p0_0_h.png"), cv2.IMREAD_UNCHANGED)
    mask[0, :10] = 128
    cv2.imwrite(str(grid_corpus / "p0_0_h.png"), mask)
    with pytest.raises(ValueError, match=r"h_mask p0_0_h\.png is not binary.*expected 0 and 255"):
        _load_all(grid_corpus)


def test_empty_mask(grid_corpus: Path) -> None:
    cv2.imwrite(str(grid_corpus / "p2_0_v.png"), np.zeros((300, 300), np.uint8))
    with pytest.raises(ValueError, match=r"row 3 \(patch 'p2_0'\): v_mask p2_0_v\.png is empty"):
        _load_all(grid_corpus)


def test_colour_image_refused(grid_corpus: Path) -> None:
    cv2.imwrite(str(grid_corpus / "p0_0.png"), np.zeros((300, 300, 3), np.uint8))
    with pytest.raises(ValueError, match=r"p0_0\.png has 3 channels; expected a single-channel grayscale"):
        _load_all(grid_corpus)


def test_unreadable_image(grid_corpus: Path) -> None:
    (grid_corpus / "p0_0.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"p0_0\.png is not a readable PNG/TIFF image"):
        _load_all(grid_corpus)


def test_source_digest_changes_with_one_pixel(grid_corpus: Path) -> None:
    records = corpus.read_index(grid_corpus)
    before = corpus.source_digest(grid_corpus, records)
    assert corpus.source_digest(grid_corpus, records) == before
    image = cv2.imread(str(grid_corpus / "p0_0.png"), cv2.IMREAD_UNCHANGED)
    image[5, 5] ^= 1
    cv2.imwrite(str(grid_corpus / "p0_0.png"), image)
    assert corpus.source_digest(grid_corpus, records) != before


def test_paths_that_stay_inside_are_accepted(grid_corpus: Path) -> None:
    (grid_corpus / "sub").mkdir()
    (grid_corpus / "p0_0.png").rename(grid_corpus / "sub" / "p0_0.png")
    rows: list[dict[str, object]] = list(read_index_rows(grid_corpus))
    rows[0]["image"] = "sub/../sub/./p0_0.png"
    write_index(grid_corpus, rows)
    assert corpus.read_index(grid_corpus)[0].image == "sub/../sub/./p0_0.png"


def test_byte_order_mark_is_accepted(grid_corpus: Path) -> None:
    index = grid_corpus / corpus.INDEX
    index.write_bytes(b"\xef\xbb\xbf" + index.read_bytes())  # "CSV UTF-8" as spreadsheet programs save it
    assert [r.painting_id for r in corpus.read_index(grid_corpus)] == ["painting0", "painting1", "painting2"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)) * 4, r"index\.csv: not UTF-8 text \(byte 0x80 at offset 128\); save it as CSV in UTF-8"),
        (b"painting_id," + b"x" * 200_000, r"index\.csv: not a readable CSV file \(field larger than field limit"),
        ("painting_id;patch_id\nä;b\n".encode("latin-1"), r"index\.csv: not UTF-8 text \(byte 0xe4"),
    ],
)
def test_binary_or_foreign_index_is_named(grid_corpus: Path, content: bytes, message: str) -> None:
    (grid_corpus / corpus.INDEX).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        corpus.read_index(grid_corpus)
