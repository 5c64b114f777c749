"""A team's tracking server: MLflow's own ``mlflow server`` over a PostgreSQL backend store, with proxied
artifacts (``--serve-artifacts``: clients send and fetch artifacts and models through the server, so nothing
on their side assumes a path of the server's machine).

    python -m thread_bench.server [--dir tracking] [--host 127.0.0.1] [--port 5000] [--workers 2]
                                  [--backend_store_uri postgresql://USER:PASSWORD@HOST/DB]
                                  [--artifacts_destination DIR|s3://BUCKET/PATH] [--allowed_hosts H1,H2] [--upgrade]

Without ``--backend_store_uri`` it runs a PostgreSQL server of its own (``pgserver``: PostgreSQL's binaries
from PyPI, data in ``DIR/postgres``, reached over a Unix socket in that folder, so only this machine's
``mlflow server`` talks to it); artifacts go to ``DIR/artifacts`` unless ``--artifacts_destination`` names a
folder or an S3-compatible store (``MLFLOW_S3_ENDPOINT_URL`` and the AWS variables, read by the server).
It prints the URI to give the clients (``MLFLOW_TRACKING_URI=http://HOST:PORT``) and runs until Ctrl-C or
SIGTERM, then stops both servers.

**What it starts, it stops.** ``mlflow server`` runs in a process group of its own (its uvicorn workers are
spawned and reparented, so stopping the one process left them holding the port), and that group is ended
whole on every exit: Ctrl-C, SIGTERM, the server's own death, or the death of its PostgreSQL, which the team
server watches (each ends it with one line saying which; it does not restart them: a server that died once
is looked at before it is trusted again). A port already in use is refused before anything starts, by trying
to bind it (a ``/health`` check would be answered by whatever holds the port).

**A login.** ``--auth`` runs MLflow's own authentication (``--app-name basic-auth``): every request but
``/health`` needs a user and password (HTTP basic auth), kept in a database of their own (``mlflow_auth`` on the
team server's PostgreSQL, else ``DIR/auth/users.db``); the user ``admin`` is created at the first start with the
password in ``MLFLOW_AUTH_ADMIN_PASSWORD``, or one generated into ``DIR/auth/admin-password`` (readable by its
owner only; so is ``DIR/auth/secret-key``, which signs the login forms). Signed-in users may log to any
experiment (``default_permission = EDIT``); deleting others' work takes MANAGE, which the admin grants. Clients
set ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD`` (or ``~/.mlflow/credentials``). The server
refuses to listen beyond this machine (``--host 0.0.0.0``) without ``--auth``, unless told
``--insecure-no-auth``.

**Schema.** A database whose MLflow schema is older than this MLflow's is refused with one line that says
how to upgrade it (``mlflow db upgrade``, after a backup), unless ``--upgrade`` asks for that here; a new,
empty database gets the schema when the server starts.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from thread_bench import cli, lifecycle
from thread_bench.store import StoreError

log = logging.getLogger(__name__)

#: The database the tracking server keeps its store in, on a PostgreSQL server of its own.
DATABASE = "mlflow"
#: ... and its users and permissions, with ``--auth``.
AUTH_DATABASE = "mlflow_auth"
#: The user MLflow's authentication creates at its first start.
ADMIN_USER = "admin"
#: Seconds the tracking server may take to answer ``/health`` after its start (schema creation included).
START_TIMEOUT_S = 120.0
DEFAULT_PORT = 5000
DEFAULT_WORKERS = 2


# ---------------------------------------------------------------------------------------- PostgreSQL


@dataclass
class LocalPostgres:
    """A PostgreSQL server on a Unix socket in its data folder (pgserver's; ``server`` is its handle)."""

    data_dir: Path
    server: Any = None

    def uri(self, database: str = DATABASE) -> str:
        """The SQLAlchemy URI of ``database`` on the running server (user ``postgres``, its Unix socket).

        Raises:
            StoreError: no PostgreSQL server runs on ``data_dir``.
        """
        with warnings.catch_warnings():  # platformdirs, on import: "XDG_RUNTIME_DIR is not set, falling back to /tmp"
            warnings.simplefilter("ignore")
            from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir)
        if info is None or not info.is_running():
            raise StoreError(f"no PostgreSQL server runs on {self.data_dir}")
        # psycopg2 (pinned), named: SQLAlchemy 2's default driver for postgresql:// is psycopg 3.
        return str(info.get_uri(database=database)).replace("postgresql://", "postgresql+psycopg2://", 1)

    def create_database(self, name: str) -> None:
        """Create ``name`` unless it exists."""
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.uri("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                found = connection.execute(
                    sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
                )
                if found.first() is None:
                    connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()

    def stop(self) -> None:
        if self.server is None:
            return
        try:
            self.server.cleanup()
        except Exception as error:  # already dead (killed under us): pg_ctl's complaint is no news
            log.debug("PostgreSQL in %s: %s", self.data_dir, _one_line(error))

    def alive(self) -> bool:
        """Whether PostgreSQL still runs on ``data_dir`` (its postmaster's pid file names a live process)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir)
        return info is not None and bool(info.is_running())


def start_postgres(data_dir: Path) -> LocalPostgres:
    """Start (or reuse) the PostgreSQL server whose data lives in ``data_dir``, with the ``mlflow`` database.

    Raises:
        StoreError: pgserver is not installed, or PostgreSQL did not start.
    """
    try:
        with warnings.catch_warnings():  # platformdirs, on import: "XDG_RUNTIME_DIR is not set, falling back to /tmp"
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        raise StoreError(
            "pgserver is not installed (scripts/setup.sh installs it), or pass --backend_store_uri postgresql://…"
        ) from None
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every command line it runs at INFO
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = pgserver.get_server(data_dir.resolve(), cleanup_mode="stop")
    except Exception as error:  # pgserver raises its own errors with PostgreSQL's log in them
        raise StoreError(f"PostgreSQL in {data_dir} did not start ({_one_line(error)})") from None
    postgres = LocalPostgres(data_dir.resolve(), server)
    postgres.create_database(DATABASE)
    return postgres


# ------------------------------------------------------------------------------------------- schema


def schema_revisions(backend_uri: str) -> tuple[str | None, str]:
    """(the database's MLflow schema revision, None for a new database; this MLflow's revision)."""
    import sqlalchemy
    from mlflow.store.db.utils import _get_latest_schema_revision, _get_schema_version

    engine = sqlalchemy.create_engine(backend_uri, pool_pre_ping=True)
    try:
        return _get_schema_version(engine), str(_get_latest_schema_revision())
    finally:
        engine.dispose()


def check_schema(backend_uri: str, *, upgrade: bool = False) -> None:
    """A database with an older MLflow schema is upgraded (``upgrade``) or refused, saying how to upgrade it.

    Raises:
        StoreError: an older (or unknown, newer) schema, or a database that cannot be reached.
    """
    import mlflow
    import sqlalchemy

    shown = _hide_password(backend_uri)
    try:
        current, head = schema_revisions(backend_uri)
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise StoreError(f"backend store {shown}: cannot read it ({_one_line(error)[:300]})") from None
    if current is None or current == head:
        return
    if upgrade:
        from mlflow.store.db.utils import _upgrade_db

        log.warning("upgrading the MLflow schema of %s from %s to %s", shown, current, head)
        engine = sqlalchemy.create_engine(backend_uri)
        try:
            _upgrade_db(engine)
        finally:
            engine.dispose()
        return
    raise StoreError(
        f"backend store {shown} has MLflow schema {current}, older than MLflow {mlflow.__version__}'s ({head}) or "
        f"unknown to it: back the database up, then run `mlflow db upgrade {shown}` (or start this with --upgrade)"
    )


# ---------------------------------------------------------------------------------- tracking server


@dataclass
class TrackingServer:
    """A running ``mlflow server`` process."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path | None

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the server's whole process group, ``grace_s`` to exit, then SIGKILL to what is left of the
        group (workers that outlived their parent would keep the port)."""
        group = self.process.pid  # its own session: the group's id is its pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        lifecycle.stop_child(self.process, grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on, naming what, before anything starts.

    Raises:
        StoreError: the port is taken (or the address cannot be bound here).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as error:
            raise StoreError(
                f"port {port} on {host} is in use{_listener(port)} ({error.strerror}): stop that process or pass "
                "another --port"
            ) from None


def _listener(port: int) -> str:
    """`` by pid N (command)`` for the process listening on ``port``, when this user may see it."""
    import psutil

    try:
        for connection in psutil.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port:
                if connection.pid is None:
                    return ""
                command = " ".join(psutil.Process(connection.pid).cmdline())[:120]
                return f" by pid {connection.pid} ({command})"
    except (psutil.Error, OSError):
        pass
    return ""


@dataclass(frozen=True)
class Auth:
    """MLflow's basic-auth app for the server: its configuration file and the admin's password."""

    config_path: Path
    admin_password: str
    #: Signs the login forms' CSRF tokens (MLflow refuses to start the app without one); one per team server.
    secret_key: str

    def environment(self) -> dict[str, str]:
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(self.config_path),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key,
        }


def prepare_auth(directory: Path, database_uri: str) -> Auth:
    """Write ``directory/basic_auth.ini`` (users in ``database_uri``; signed-in users may edit) and find the admin's
    password: ``MLFLOW_AUTH_ADMIN_PASSWORD``, else ``directory/admin-password``, generated at the first start."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") or _secret(directory / "admin-password")
    secret_key = os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or _secret(directory / "secret-key")
    config = directory / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = EDIT\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {ADMIN_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    config.chmod(0o600)
    return Auth(config, password, secret_key)


def _secret(path: Path) -> str:
    """The secret kept in ``path`` (its owner's only), made at the first call."""
    if not path.is_file():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def server_command(
    backend_uri: str,
    artifacts_destination: str,
    *,
    host: str,
    port: int,
    workers: int,
    allowed_hosts: str | None = None,
    auth: bool = False,
) -> list[str]:
    """The ``mlflow server`` command line: PostgreSQL backend, proxied artifacts, with ``auth`` MLflow's login."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri]
    command += ["--serve-artifacts", "--artifacts-destination", artifacts_destination]
    command += ["--host", host, "--port", str(port), "--workers", str(workers)]
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    if auth:
        command += ["--app-name", "basic-auth"]
    return command


def start_tracking_server(
    backend_uri: str,
    artifacts_destination: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = DEFAULT_WORKERS,
    allowed_hosts: str | None = None,
    log_path: Path | None = None,
    timeout_s: float = START_TIMEOUT_S,
    auth: Auth | None = None,
) -> TrackingServer:
    """Start ``mlflow server`` and wait until it answers ``/health``.

    Raises:
        StoreError: the server exited or did not answer within ``timeout_s`` (with the end of its log).
    """
    import requests

    if "://" not in artifacts_destination:
        Path(artifacts_destination).mkdir(parents=True, exist_ok=True)
        artifacts_destination = str(Path(artifacts_destination).resolve())
    check_port_free(host, port)
    command = server_command(
        backend_uri,
        artifacts_destination,
        host=host,
        port=port,
        workers=workers,
        allowed_hosts=allowed_hosts,
        auth=auth is not None,
    )
    environment = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    environment.update(auth.environment() if auth is not None else {})
    output: IO[bytes] | None = log_path.open("ab") if log_path is not None else None
    process = subprocess.Popen(  # a session (and process group) of its own: TrackingServer.stop ends all of it
        command,
        env=environment,
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
        start_new_session=True,
    )
    if output is not None:
        output.close()  # the child holds its own descriptor
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    server = TrackingServer(process, url, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StoreError(f"mlflow server exited with status {process.returncode}{_log_tail(log_path)}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return server
        time.sleep(0.5)
    server.stop()
    raise StoreError(f"mlflow server at {url} did not answer within {timeout_s:.0f} s{_log_tail(log_path)}")


def _log_tail(path: Path | None) -> str:
    if path is None or not path.is_file():
        return ""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return f" (its log, {path}: {' | '.join(lines[-3:])[:600]})" if lines else ""


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _hide_password(uri: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
    except Exception:  # not a database URL: shown as given
        return uri
    return str(url.render_as_string(hide_password=True)) if url.password else uri


# ---------------------------------------------------------------------------------------- the team


@dataclass
class TeamServer:
    """The tracking server and, unless the backend store is an existing database, its own PostgreSQL."""

    tracking: TrackingServer
    postgres: LocalPostgres | None
    backend_uri: str
    artifacts: str
    auth: Auth | None = None

    def stop(self) -> None:
        try:
            self.tracking.stop()
        finally:
            if self.postgres is not None:
                self.postgres.stop()


def start_team_server(
    directory: Path,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = DEFAULT_WORKERS,
    backend_uri: str | None = None,
    artifacts_destination: str | None = None,
    allowed_hosts: str | None = None,
    upgrade: bool = False,
    auth: bool = False,
) -> TeamServer:
    """PostgreSQL (unless ``backend_uri``), the schema check, then ``mlflow server`` (log in
    ``directory/mlflow-server.log``).

    Raises:
        StoreError: one line: PostgreSQL did not start, an old schema, the server did not start.
    """
    check_port_free(host, port)  # before PostgreSQL starts for nothing
    directory.mkdir(parents=True, exist_ok=True)
    postgres = None if backend_uri else start_postgres(directory / "postgres")
    try:
        uri = backend_uri or (postgres.uri() if postgres else "")
        check_schema(uri, upgrade=upgrade)
        login = None
        if auth:
            if postgres is not None:
                postgres.create_database(AUTH_DATABASE)
            users_file = (directory / "auth" / "users.db").resolve()
            users = postgres.uri(AUTH_DATABASE) if postgres else f"sqlite:///{users_file}"
            login = prepare_auth(directory / "auth", users)
        artifacts = artifacts_destination or str(directory / "artifacts")
        tracking = start_tracking_server(
            uri,
            artifacts,
            host=host,
            port=port,
            workers=workers,
            allowed_hosts=allowed_hosts,
            log_path=directory / "mlflow-server.log",
            auth=login,
        )
    except BaseException:
        if postgres is not None:
            postgres.stop()
        raise
    return TeamServer(tracking, postgres, uri, artifacts, login)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(
        prog="python -m thread_bench.server",
        description="Run a team's MLflow tracking server: PostgreSQL backend store (its own, unless "
        "--backend_store_uri), artifacts proxied through the server. Clients set MLFLOW_TRACKING_URI=http://HOST:PORT.",
    )
    parser.add_argument("--dir", default="tracking", help="folder of the PostgreSQL data, artifacts and server log")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="server worker processes")
    parser.add_argument("--backend_store_uri", default=None, help="an existing database (postgresql://…)")
    parser.add_argument(
        "--artifacts_destination", default=None, help="folder or s3://bucket/path (default: DIR/artifacts)"
    )
    parser.add_argument(
        "--allowed_hosts",
        default=None,
        help="Host headers the server accepts besides localhost and private addresses (its DNS-rebinding guard)",
    )
    parser.add_argument("--upgrade", action="store_true", help="upgrade an older MLflow schema (after a backup!)")
    parser.add_argument(
        "--auth",
        action="store_true",
        help="require a login (MLflow's basic-auth app; the admin's password in DIR/auth/admin-password)",
    )
    parser.add_argument(
        "--insecure-no-auth",
        dest="insecure_no_auth",
        action="store_true",
        help="listen beyond this machine without a login (anyone who reaches the port may write and delete)",
    )
    cli.add_verbose_option(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = cli.start(parser, argv)
    if not is_loopback(args.host) and not args.auth and not args.insecure_no_auth:
        cli.fail(
            parser,
            ValueError(
                f"--host {args.host} serves every machine that can reach this one, and without a login anyone "
                "could write and delete runs: add --auth, or --insecure-no-auth on a network you trust"
            ),
        )
    with lifecycle.stop_on_signals():
        team = None
        try:
            try:
                team = start_team_server(
                    Path(args.dir),
                    host=args.host,
                    port=args.port,
                    workers=args.workers,
                    backend_uri=args.backend_store_uri,
                    artifacts_destination=args.artifacts_destination,
                    allowed_hosts=args.allowed_hosts,
                    upgrade=args.upgrade,
                    auth=args.auth,
                )
            except StoreError as error:
                cli.fail(parser, error)
                return 2
            login = (
                f"; login: user {ADMIN_USER}, password in {team.auth.config_path.parent / 'admin-password'} (or "
                "MLFLOW_AUTH_ADMIN_PASSWORD); clients also export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
                if team.auth is not None
                else ""
            )
            print(
                f"tracking server {team.tracking.url} (backend {_hide_password(team.backend_uri)}, artifacts "
                f"{team.artifacts}); clients: export MLFLOW_TRACKING_URI={team.tracking.url}{login}",
                flush=True,
            )
            print(watch(team), file=sys.stderr)
            return 1
        except KeyboardInterrupt as interrupt:
            print(f"stopping ({lifecycle.describe_stop(interrupt)})", file=sys.stderr)
            return lifecycle.exit_status(interrupt)
        finally:
            if team is not None:
                with lifecycle.deferred_signals():
                    team.stop()


#: How often the team server looks at its two servers.
WATCH_INTERVAL_S = 1.0


def watch(team: TeamServer, interval_s: float = WATCH_INTERVAL_S) -> str:
    """Wait until the tracking server exits or its PostgreSQL dies; return the line that says which (the caller
    then stops what is left)."""
    while True:
        status = team.tracking.process.poll()
        if status is not None:
            return f"mlflow server exited with status {status}{_log_tail(team.tracking.log_path)}; stopping"
        if team.postgres is not None and not team.postgres.alive():
            return (
                f"PostgreSQL ({team.postgres.data_dir}) stopped under the tracking server: stopping it too; "
                f"clients get a refused connection, not a server answering 503 (start the team server again)"
            )
        time.sleep(interval_s)


@contextlib.contextmanager
def running_team_server(directory: Path, **options: Any) -> Iterator[TeamServer]:
    """:func:`start_team_server` for the span of a block (tests, benchmarks)."""
    team = start_team_server(directory, **options)
    try:
        yield team
    finally:
        team.stop()


if __name__ == "__main__":
    raise SystemExit(main())
