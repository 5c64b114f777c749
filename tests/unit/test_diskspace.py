"""A full disk is recognised wherever in an error's chain it was met, and said in one line that names the path, the
room left there and, when known, the room the write needs."""

from __future__ import annotations

import errno
import pickle
import sqlite3
from pathlib import Path

import pytest

from thread_bench import diskspace
from thread_bench.diskspace import DiskFullError


def _chained(outer: Exception, *causes: BaseException) -> Exception:
    """``outer`` raised while handling ``causes[0]``, itself raised from ``causes[1]``…, as Python chains them."""
    current: BaseException = outer
    for cause in causes:
        current.__context__ = cause
        current = cause
    return outer


def test_a_copy_that_ran_out_of_room_names_its_destination(tmp_path: Path) -> None:
    copy = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "src.pt"), None, str(tmp_path / "dst.pt"))
    assert diskspace.disk_full(RuntimeError("outer")) is None  # an unrelated error is not a full disk
    full = diskspace.disk_full(_chained(RuntimeError("cleanup failed: database or disk is full"), copy))
    assert full is not None and full.path == str(tmp_path / "dst.pt")  # the named file wins over SQLite's words
    message = str(full)
    assert message.startswith(f"disk full: cannot write to {tmp_path / 'dst.pt'} (")
    assert " free on " in message and message.endswith("free some space and run again")
    assert "\n" not in message


def test_sqlite_out_of_room_names_the_tracking_store_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    error = _chained(
        RuntimeError("(sqlalchemy.exc.OperationalError) ..."), sqlite3.OperationalError("database or disk is full")
    )
    full = diskspace.disk_full(error)
    assert full is not None
    assert f"cannot write the tracking store's database to {tmp_path / 'mlflow.db'} (" in str(full)


def test_a_tracking_server_out_of_room_is_named_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    full = diskspace.disk_full(RuntimeError("INTERNAL_ERROR: [Errno 28] No space left on device: '/srv/mlruns/x'"))
    assert full is not None
    assert (
        str(full) == "disk full: the tracking server http://127.0.0.1:5999 has no room to write; free some space there"
    )


@pytest.mark.parametrize("code", [errno.EACCES, errno.EIO, errno.ENOENT])
def test_other_operating_system_errors_are_not_a_full_disk(code: int) -> None:
    assert diskspace.disk_full(OSError(code, "other", "/x")) is None


def test_a_write_that_names_no_file_is_named_by_the_writer(tmp_path: Path) -> None:
    with pytest.raises(DiskFullError) as raised, diskspace.writing(tmp_path, "the synthetic corpus"):
        raise OSError(errno.ENOSPC, "No space left on device")  # what write() raises: no file name
    assert raised.value.path == str(tmp_path)
    assert str(raised.value).startswith(f"disk full: cannot write the synthetic corpus to {tmp_path} (")
    assert raised.value.__suppress_context__  # one line: the framework's chain is not shown


def test_a_file_inside_the_written_folder_is_named_by_the_folder_and_one_outside_by_itself(tmp_path: Path) -> None:
    inside = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".staging-1" / "a.png"))
    with pytest.raises(DiskFullError) as raised, diskspace.writing(tmp_path, "the corpus", 10):
        raise inside
    assert (raised.value.path, raised.value.needed) == (str(tmp_path), 10)
    outside = OSError(errno.ENOSPC, "No space left on device", "/elsewhere/model.pt")
    with pytest.raises(DiskFullError) as raised, diskspace.writing(tmp_path, "the model", 10):
        raise outside
    assert raised.value.path == "/elsewhere/model.pt" and "cannot write the model to /elsewhere/model.pt" in str(
        raised.value
    )


def test_writing_lets_every_other_error_through(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), diskspace.writing(tmp_path, "the corpus"):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))


def test_a_write_larger_than_the_room_is_refused_before_it_starts(tmp_path: Path) -> None:
    free, _ = diskspace.room(tmp_path)
    assert free is not None
    diskspace.check_room(tmp_path, 1000, "a little")  # fits
    with pytest.raises(DiskFullError) as raised:
        diskspace.check_room(tmp_path / "not" / "yet", free + 1, "the model")
    assert (raised.value.needed, raised.value.spare) == (free + 1, diskspace.MARGIN_BYTES)
    message = str(raised.value)
    assert f"it needs {diskspace.size(free + 1)} plus 1.0 MB kept free)" in message
    assert message.startswith(f"disk full: cannot write the model to {tmp_path / 'not' / 'yet'} (")


def test_the_error_crosses_from_a_worker_process_whole(tmp_path: Path) -> None:
    error = DiskFullError(tmp_path, 123, "the prepared dataset", spare=4)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is DiskFullError and str(again) == str(error) and again.errno == errno.ENOSPC


@pytest.mark.parametrize(
    ("nbytes", "said"), [(0, "0 B"), (999, "999 B"), (1500, "1.5 kB"), (2_600_000, "2.6 MB"), (3 * 10**9, "3.0 GB")]
)
def test_sizes_are_said_in_decimal_units(nbytes: int, said: str) -> None:
    assert diskspace.size(nbytes) == said


def test_directory_bytes_counts_the_files_below(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 5)
    assert diskspace.directory_bytes(tmp_path) == 15
