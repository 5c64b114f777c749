"""A full disk, in one line: which path, how much room is left there and, where the suite knows it, how much the
write needs.

The suite writes in three places that can fill up: the data root (the synthetic corpus, the prepared datasets),
the tracking store (a SQLite database) and the artifact store (the logged models). Where it knows a write's size
beforehand, the write is refused before it starts (:func:`check_room`), so nothing is half-written and the store
keeps the room to record that the run FAILED. Where the disk fills anyway (another process took the room, or the
size was not known), the operating system's error, however deep in MLflow, SQLAlchemy or a worker process it was
raised, becomes a :class:`DiskFullError` (:func:`disk_full`) that every entry point reports as one line.
"""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: ``errno`` values that mean "no room": no space left on the device, a disk quota exceeded.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
#: What SQLite (and so SQLAlchemy and MLflow, which quote it) says when its database cannot grow.
_SQLITE_FULL = "database or disk is full"
#: What a remote tracking server's answer says when its own disk is full.
_NO_SPACE_TEXT = re.compile(r"No space left on device|Disk quota exceeded|database or disk is full", re.IGNORECASE)
#: Room kept free beyond a write's own size when it is checked beforehand: the store must still record the end
#: of the run (SQLite writes a journal) after the write.
MARGIN_BYTES = 1 << 20
_STORE = "the tracking store"


class DiskFullError(OSError):
    """No room to write ``path``: a one-line message naming the path, the room left on its file system (read
    when the message is made) and, when known, the room the write needs. An ``OSError`` with ``errno.ENOSPC``,
    so that code which handles a full disk by its errno handles this one too; picklable, so that it crosses
    from a worker process whole."""

    def __init__(
        self, path: str | Path, needed: int | None = None, what: str = "", *, local: bool = True, spare: int = 0
    ) -> None:
        self.path, self.needed, self.what, self.local, self.spare = str(path), needed, what, local, spare
        super().__init__(errno.ENOSPC, "No space left on device", self.path)

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (self.path, self.needed, self.what, self.local, self.spare)

    def __str__(self) -> str:
        return self._message()

    def _message(self) -> str:
        writing = f" {self.what}" if self.what else ""
        if not self.path:
            return f"disk full: cannot write{writing} (no space left on the device); free some space and run again"
        if not self.local:
            return f"disk full: the tracking server {self.path} has no room to write{writing}; free some space there"
        left, mount = room(self.path)  # when said: after the half-written files are gone
        free = f"{size(left)} free on {mount}" if left is not None else "the room left is unknown"
        need = f"; it needs {size(self.needed)}" if self.needed is not None else ""
        need += f" plus {size(self.spare)} kept free" if self.needed is not None and self.spare else ""
        return f"disk full: cannot write{writing} to {self.path} ({free}{need}); free some space and run again"


def _rebuild(path: str, needed: int | None, what: str, local: bool, spare: int) -> DiskFullError:
    return DiskFullError(path, needed, what, local=local, spare=spare)


def size(nbytes: int) -> str:
    """``nbytes`` for a person: ``512 B``, ``1.4 MB``, ``2.3 GB`` (decimal units, as ``df -H`` prints)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def room(path: str | Path) -> tuple[int | None, str]:
    """(bytes free to this user, the mount point) of the file system that holds ``path`` or, when ``path`` does
    not exist yet, its nearest existing parent; (None, the path) when neither can be read."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return None, str(path)
    return free, str(_mount_point(existing))


def _mount_point(path: Path) -> Path:
    while not path.is_mount() and path != path.parent:
        path = path.parent
    return path


def check_room(path: str | Path, needed: int, what: str) -> None:
    """Refuse a write of ``needed`` bytes to ``path`` before it starts when its file system lacks the room for it
    and :data:`MARGIN_BYTES` to spare (the error says both).

    Raises:
        DiskFullError: naming ``path``, the room left and ``needed``.
    """
    free, _ = room(path)
    if free is not None and free < needed + MARGIN_BYTES:
        raise DiskFullError(path, needed, what, spare=MARGIN_BYTES)


def directory_bytes(directory: str | Path) -> int:
    """The bytes of the files under ``directory`` (what copying it somewhere needs)."""
    return sum(file.stat().st_size for file in Path(directory).rglob("*") if file.is_file())


@contextlib.contextmanager
def writing(path: str | Path, what: str, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk met while writing ``what`` into ``path`` (however deep the error was raised, see
    :func:`disk_full`) into one :class:`DiskFullError` naming them: ``write`` raises an ``OSError`` that names
    no file. A full tracking store met on the way stays named as such."""
    try:
        yield
    except Exception as error:
        full = disk_full(error)
        if full is None:
            raise
        if full.what or not full.local:
            raise full from None  # said already, or the tracking store's
        inside = not full.path or Path(full.path).absolute().is_relative_to(Path(path).absolute())
        raise DiskFullError(path if inside else full.path, needed, what) from None


def disk_full(error: BaseException) -> DiskFullError | None:
    """The :class:`DiskFullError` that ``error`` means, wherever in its chain of causes the full disk was met
    (an ``OSError`` with ``ENOSPC`` from a copy, SQLite's "database or disk is full" under SQLAlchemy and MLflow,
    a tracking server's error answer quoting either); None when it is not a full disk. SQLite's error names no
    file: the tracking store's database is named (the one the tracking URI gives)."""
    chain = causes(error)
    for current in chain:  # a named file first: SQLite's complaint may only follow it (MLflow's own cleanup)
        if isinstance(current, DiskFullError):
            return current
        if isinstance(current, OSError) and current.errno in _NO_ROOM and _written_path(current):
            return DiskFullError(_written_path(current) or "", None)
    for current in chain:
        if isinstance(current, OSError) and current.errno in _NO_ROOM:
            return DiskFullError("", None)  # no file named: the caller names it (:func:`writing`)
        if _SQLITE_FULL in str(current):
            return _store_full()
    if _NO_SPACE_TEXT.search(str(error)):  # a remote server's answer: its disk
        return _store_full()
    return None


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and the causes (else contexts) it was raised from, outermost first, each once."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _store_full() -> DiskFullError:
    """The tracking store has no room: its SQLite database, or the tracking server's disk."""
    import mlflow
    from sqlalchemy.engine import make_url

    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:"):
        database = make_url(uri).database
        if database and database != ":memory:":
            return DiskFullError(Path(database).absolute(), None, f"{_STORE}'s database")
    if uri.startswith(("http:", "https:")):
        return DiskFullError(uri, None, "", local=False)
    return DiskFullError(uri, None, _STORE)


def _written_path(error: OSError) -> str | None:
    """The path a failed write was writing: a copy's destination (``filename2``) before its source."""
    for name in (error.filename2, error.filename):
        if name:
            return str(name)
    return None
