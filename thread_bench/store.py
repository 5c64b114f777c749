"""The tracking store, checked and opened once per process before any work.

Two failure modes this exists for:

- **Many processes opening a new SQLite store at once.** MLflow creates the schema on first open by running
  its migrations, unguarded: four trainings started together against a fresh ``mlflow.db`` all died in the
  migration (``duplicate column name: step``, ``table _alembic_tmp_latest_metrics already exists``) and left
  the store half-migrated for good. Here the first open is serialised by a lock on the database's directory;
  later processes find the schema complete and only verify it.
- **A store broken by a race it did not see.** ``mlflow run``'s launcher opens the store before any of the
  project's code runs, so several launches at once on a new file can still break it (tables left half
  migrated, ``_alembic_tmp_*`` leftovers). The refusal says so and how to repair it:
  ``python -m thread_bench.store repair [URI]`` (:func:`repair`) backs the file up, then makes a store with no
  runs new again, or drops the leftovers of one with runs and completes its migrations.
- **A store that cannot be used.** Unreachable servers cost minutes of MLflow's own retries and then several
  chained tracebacks; a read-only database fails only at the first write. Here a quick probe (no retries, a
  short wait for the connection; a real write inside a transaction that is rolled back) says in one line which
  URI failed and why, before any data is prepared or any model is built. A server that accepts the connection
  is given as long to answer as any call: busy is not absent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import sqlalchemy
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import make_url

from thread_bench import diskspace, lifecycle

log = logging.getLogger(__name__)

#: Seconds a probe may wait for a connection to an HTTP store, or for a busy SQLite file's lock. A server that
#: has accepted the connection is then given as long to answer as any other call (MLFLOW_HTTP_REQUEST_TIMEOUT,
#: :func:`answer_timeout_s`): a server busy with a team's trainings starting at once is slow, not absent (eight
#: trainings on two cores kept one waiting more than 5 s for its first answer).
PROBE_TIMEOUT_S = 5.0
_PROBE_TABLE = "thread_bench_write_probe"

#: URIs already checked and opened by this process.
_opened: set[str] = set()

#: MLflow's HTTP retry settings for a tracking server, unless the user set them: MLflow's own (7 retries, the
#: back-off doubling up to 2 min, 120 s per attempt) keep a client of a dead server silent for 10 minutes. With
#: these, a server that refuses connections or answers 5xx is given up after about 30 s (waits of 0, 2, 4, 8 and
#: 16 s), which still rides out a restart of the server; one that accepts and never answers, after 6 attempts
#: of 30 s each.
HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
#: The settings while a run is ended after a stop signal or a lost server: one retry, 5 s an attempt, so that
#: SIGTERM ends the process within seconds even when the server is gone.
QUICK_HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


class StoreError(ValueError):
    """The tracking store cannot be used; the message names the URI and the cause in one line."""


def open_store(uri: str | None = None) -> str:
    """Check that the store at ``uri`` (default: MLflow's tracking URI) is reachable and writable, create its
    schema if it is new (serialised between processes), and return the URI. Cheap after the first call.

    Raises:
        StoreError: unreachable, refused, read-only or damaged; the message names the URI and the cause.
    """
    uri = uri or mlflow.get_tracking_uri()
    if uri in _opened:
        return uri
    started = time.monotonic()
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        for name, value in HTTP_RETRIES.items():
            os.environ.setdefault(name, value)  # MLflow reads them at each request; children inherit them
        _probe_http(uri)
    elif scheme == "sqlite":
        _open_sqlite(uri)
    _opened.add(uri)
    log.debug("tracking store %s checked in %.2f s", uri, time.monotonic() - started)
    return uri


def absolute_uri(uri: str) -> str:
    """``uri`` as another process started elsewhere reads it: a relative SQLite path made absolute."""
    if urlparse(uri).scheme != "sqlite":
        return uri
    url = make_url(uri)
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or Path(database).is_absolute():
        return uri
    return str(url.set(database=str(Path(database).absolute())).render_as_string(hide_password=False))


def check_artifact_location(uri: str, location: str) -> None:
    """A local artifact location must be writable (else the run would fail at its first artifact, after
    the work). Remote locations are left to MLflow.

    Raises:
        StoreError: the location, or the folder it would be created in, is not writable.
    """
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return
    path = Path(unquote(parsed.path))
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise StoreError(f"tracking store {uri}: artifact location {location} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise StoreError(
            f"tracking store {uri}: artifact location {location} is not writable ({error.strerror} in {existing})"
        ) from None


# ---------------------------------------------------------------------------------------------- HTTP


def answer_timeout_s() -> float:
    """Seconds a call to the tracking server may wait for its answer once connected: MLflow's
    ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (set from :data:`HTTP_RETRIES` unless the user set it)."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT

    try:
        return float(MLFLOW_HTTP_REQUEST_TIMEOUT.get())
    except ValueError:
        raw = os.environ.get(MLFLOW_HTTP_REQUEST_TIMEOUT.name)
        raise StoreError(f"{MLFLOW_HTTP_REQUEST_TIMEOUT.name}={raw!r}: expected a whole number of seconds") from None


def _probe_timeouts() -> tuple[float, float]:
    """The probe's (connect, answer) timeouts, as ``requests`` takes them."""
    return PROBE_TIMEOUT_S, answer_timeout_s()


def _probe_http(uri: str) -> None:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    endpoint = "/api/2.0/mlflow/experiments/search"
    try:
        response = http_request(
            get_default_host_creds(uri),
            endpoint,
            "GET",
            max_retries=0,
            timeout=_probe_timeouts(),
            raise_on_status=False,
            params={"max_results": 1},
        )
    except MlflowException as error:
        raise StoreError(
            f"tracking store {uri} is unreachable ({_root_cause(str(error))}); start the tracking server or "
            "point MLFLOW_TRACKING_URI elsewhere"
        ) from None
    if response.status_code == 401:
        given = (
            "the login in MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD was refused"
            if os.environ.get("MLFLOW_TRACKING_USERNAME")
            else "export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or write ~/.mlflow/credentials)"
        )
        raise StoreError(f"tracking store {uri} asks for a login (HTTP 401): {given}")
    if response.status_code != 200:
        text = " ".join(response.text.split())[:200]
        raise StoreError(f"tracking store {uri} answered HTTP {response.status_code} to {endpoint} ({text})")
    _check_server_version(uri)


def _check_server_version(uri: str) -> None:
    """A server of an older MLflow release than this client keeps an older database schema than the client
    expects (new tables and columns come with minor releases): refused, saying how to upgrade it. A server
    that does not say its version (a proxy in front of it) is let through."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request
    from packaging.version import InvalidVersion, Version

    try:
        response = http_request(
            get_default_host_creds(uri),
            "/version",
            "GET",
            max_retries=0,
            timeout=_probe_timeouts(),
            raise_on_status=False,
        )
        server = Version(response.text.strip()) if response.status_code == 200 else None
    except (MlflowException, InvalidVersion):
        return
    client = Version(mlflow.__version__)
    if server is None or server.release[:2] >= client.release[:2]:
        return
    raise StoreError(
        f"tracking server {uri} runs MLflow {server}, older than this client's {client}, so its database schema is "
        f"older than this client expects: upgrade it (pip install mlflow=={client} on the server; back up the "
        "database, run `mlflow db upgrade <its backend store URI>`, restart it)"
    )


@contextlib.contextmanager
def quick_calls() -> Iterator[None]:
    """MLflow's HTTP calls in the block try :data:`QUICK_HTTP_RETRIES` (a user's own settings are put back)."""
    saved = {name: os.environ.get(name) for name in QUICK_HTTP_RETRIES}
    os.environ.update(QUICK_HTTP_RETRIES)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_API_FAILURE = re.compile(r"API request to (https?://[^/\s]+)\S* failed with exception (.*)", re.DOTALL)


def unreachable(error: BaseException) -> str | None:
    """One line for an error that means the tracking server stopped answering (MLflow gave up its retries on a
    refused connection, a timeout or 5xx answers, e.g. its database died); None for any other error."""
    for current in diskspace.causes(error):
        found = _API_FAILURE.search(str(current)) if isinstance(current, MlflowException) else None
        if found:
            server, detail = found.groups()
            cause = re.search(r"too many (\d{3}) error responses", detail)
            why = f"it answered HTTP {cause.group(1)} again and again" if cause else _root_cause(detail)
            retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLflow's default")
            return f"the tracking server {server} stopped answering ({why}; given up after {retries} retries)"
    return None


_TIMED_OUT = re.compile(r"\((connect|read) timeout=([\d.]+)\)")


def _root_cause(message: str) -> str:
    """The operating system's words from a requests/urllib3 error chain (``[Errno 111] Connection refused``), or
    which wait ran out: the connection's, or the answer's on a connection the server accepted."""
    found = re.findall(r"\[Errno -?\d+\] [^'\")]+", message)
    if found:
        return found[-1].strip()
    timed_out = _TIMED_OUT.search(message)
    if timed_out:
        phase, seconds = timed_out.group(1), float(timed_out.group(2))
        if phase == "connect":
            return f"no connection within {seconds:g} s"
        return f"it accepted the connection but sent no answer within {seconds:g} s"
    if "timed out" in message.lower() or "timeout" in message.lower():
        return "no answer in time"
    return " ".join(message.split())[:200]


# -------------------------------------------------------------------------------------------- SQLite


def _open_sqlite(uri: str) -> None:
    database = make_url(uri).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return  # in-memory or URI-style: private to this process, nothing to guard
    path = Path(database).absolute()  # relative to the working directory, as SQLAlchemy resolves it
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # MLflow would create it too
    except OSError as error:
        raise StoreError(f"tracking store {uri}: cannot create the folder {path.parent} ({error.strerror})") from None
    with lifecycle.directory_lock(path.parent):
        _probe_sqlite_write(uri, path)
        try:
            # Creates MLflow's schema when the file is new; inside the lock, so exactly one process migrates.
            mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except (MlflowException, sqlalchemy.exc.SQLAlchemyError) as error:
            cause = " ".join(str(error).split())[:300]
            hint = ""
            if _migration_leftovers(path) or re.search(r"already exists|duplicate column|out-of-date", cause):
                hint = (
                    "; its schema was left half made, as by several processes creating it at once: "
                    f"python -m thread_bench.store repair {uri}"
                )
            raise StoreError(f"tracking store {uri}: cannot open it ({cause}){hint}") from None


def _migration_leftovers(path: Path) -> list[str]:
    """The ``_alembic_tmp_*`` tables a migration that died left in the SQLite file ``path``."""
    if not path.is_file():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=PROBE_TIMEOUT_S)) as db:
        names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return sorted(name for name in names if name.startswith("_alembic_tmp_"))


def _count(db: sqlite3.Connection, table: str) -> int:
    """Rows of ``table`` (0 when the table is missing)."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone():
        return 0
    return int(db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])


def repair(uri: str) -> str:
    """Repair a SQLite store whose schema was left half made; returns what was done, in one line.

    Under the store's lock, the file is first copied to ``<name>.backup-<UTC time>``. A store that holds no run,
    no registered model and no experiment but MLflow's Default is made new (nothing is lost); one with work in it
    loses its migrations' leftover ``_alembic_tmp_*`` tables and has its migrations completed (``mlflow db
    upgrade``'s). A store that opens already is left alone.

    Raises:
        StoreError: not a SQLite file, or the migrations cannot be completed (the backup is named).
    """
    database = make_url(uri).database if urlparse(uri).scheme == "sqlite" else None
    if not database or database == ":memory:":
        raise StoreError(f"{uri}: repair knows SQLite files only (sqlite:///path/to/mlflow.db)")
    path = Path(database).absolute()
    if not path.is_file():
        raise StoreError(f"{uri}: no such file {path}")
    with lifecycle.directory_lock(path.parent):
        try:
            mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
            if not _migration_leftovers(path):
                return f"{uri} opens and has no migration leftovers: nothing to repair"
        except (MlflowException, sqlalchemy.exc.SQLAlchemyError):
            pass
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        backup = path.with_name(f"{path.name}.backup-{stamp}")
        shutil.copy2(path, backup)
        with contextlib.closing(sqlite3.connect(path, timeout=PROBE_TIMEOUT_S)) as db:
            work = _count(db, "runs") + _count(db, "registered_models") + max(_count(db, "experiments") - 1, 0)
            leftovers = _migration_leftovers(path)
            if work:
                for table in leftovers:
                    db.execute(f'DROP TABLE "{table}"')
                db.commit()
        if not work:
            path.unlink()
            _opened.discard(uri)
            _new_schema(uri)
            return f"{uri} held no runs: made new (the broken file is kept as {backup})"
        from mlflow.store.db.utils import _upgrade_db

        engine = sqlalchemy.create_engine(f"sqlite:///{path}")
        try:
            _upgrade_db(engine)
        except Exception as error:  # alembic's and SQLite's errors alike: the backup is the way back
            cause = " ".join(str(error).split())[:300]
            raise StoreError(
                f"{uri}: its migrations could not be completed ({cause}); the file before this attempt is {backup}"
            ) from None
        finally:
            engine.dispose()
        dropped = f", dropped {', '.join(leftovers)}" if leftovers else ""
        return f"{uri} holds {work} runs, models or experiments: migrations completed{dropped} (backup: {backup})"


def _new_schema(uri: str) -> None:
    """MLflow's schema in the new file at ``uri``, made by MLflow as any first open makes it, in a process of its
    own: this one's MLflow keeps the store it opened before (cached by URI, on the file just removed)."""
    code = "import sys, mlflow; mlflow.MlflowClient(tracking_uri=sys.argv[1]).search_experiments(max_results=1)"
    done = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise StoreError(f"{uri}: a new schema could not be made ({lines[-1] if lines else done.returncode})")


def main(argv: list[str] | None = None) -> int:
    """``python -m thread_bench.store repair [URI]``: :func:`repair` (URI default: MLflow's tracking URI)."""
    from thread_bench import cli

    parser = cli.Parser(prog="python -m thread_bench.store", description="Repair a tracking store (SQLite).")
    parser.add_argument("action", choices=["repair"], help="repair: a store whose schema was left half made")
    parser.add_argument("uri", nargs="?", default=None, help="the store (default: $MLFLOW_TRACKING_URI, else MLflow's)")
    args = parser.parse_args(argv)
    cli.configure_logging(False)
    try:
        print(repair(args.uri or mlflow.get_tracking_uri()))
    except StoreError as error:
        cli.fail(parser, error)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _probe_sqlite_write(uri: str, path: Path) -> None:
    """A real write (a table created in a transaction that is rolled back): it needs the file and its
    folder to be writable (the rollback journal lives there), and leaves nothing behind."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=rwc", uri=True, timeout=PROBE_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as error:
        raise StoreError(f"tracking store {uri}: cannot open {path} ({error}{_sqlite_hint(path, error)})") from None
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(f"CREATE TABLE {_PROBE_TABLE} (x)")
        connection.execute("ROLLBACK")
    except sqlite3.Error as error:
        raise StoreError(f"tracking store {uri}: cannot write {path} ({error}{_sqlite_hint(path, error)})") from None
    finally:
        connection.close()


def _sqlite_hint(path: Path, error: sqlite3.Error) -> str:
    name = getattr(error, "sqlite_errorname", "")
    if name == "SQLITE_READONLY":
        return f"; the file or its folder {path.parent} is read-only"
    if name == "SQLITE_CANTOPEN":
        return f"; is the folder {path.parent} writable?"
    if name == "SQLITE_BUSY":
        return f"; another process held it locked for {PROBE_TIMEOUT_S:.0f} s"
    return ""
