"""Quiet by default (thread_bench.quiet): the frameworks' notices written to file descriptor 2 are held back,
their warnings and errors are not, and ``--verbose`` shows everything."""

from __future__ import annotations

import logging
import os

import pytest

from thread_bench import quiet

NOTICES = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1796622120.716140   10121 port.cc:153] oneDNN custom operations are on.\n"
    b"E0000 00:00:1796622148.266985   10121 node_def_util.cc:682] NodeDef mentions attribute use_unbounded_threadpool"
    b" which is not in the op definition: Op<name=MapDataset>\n"
)
KEPT = (
    b"W0000 00:00:1796622120.716140   10121 gpu.cc:1] a warning that matters\n"
    b"E0000 00:00:1796622120.716140   10121 kernel.cc:2] an error that matters\n"
)


@pytest.fixture
def root_level() -> object:
    root = logging.getLogger()
    level = root.level
    yield root
    root.setLevel(level)


def test_notices_are_held_back_and_the_rest_written_in_order(
    capfd: pytest.CaptureFixture[str], root_level: logging.Logger
) -> None:
    root_level.setLevel(logging.INFO)
    with quiet.native_notices_hidden():
        os.write(2, NOTICES[:90])  # native code writes in pieces, not lines
        os.write(2, NOTICES[90:] + KEPT)
    assert capfd.readouterr().err == KEPT.decode()


def test_verbose_shows_every_line(capfd: pytest.CaptureFixture[str], root_level: logging.Logger) -> None:
    root_level.setLevel(logging.DEBUG)
    with quiet.native_notices_hidden():
        os.write(2, NOTICES)
    assert capfd.readouterr().err == NOTICES.decode()


def test_what_was_caught_is_written_back_when_the_block_fails(
    capfd: pytest.CaptureFixture[str], root_level: logging.Logger
) -> None:
    root_level.setLevel(logging.INFO)
    with pytest.raises(RuntimeError), quiet.native_notices_hidden():
        os.write(2, KEPT)
        raise RuntimeError("import failed")
    assert capfd.readouterr().err == KEPT.decode()
    os.write(2, b"after\n")  # the descriptor is the terminal's again
    assert capfd.readouterr().err == "after\n"


def test_library_machinery_is_shown_only_with_verbose() -> None:
    tables = logging.getLogger("mlflow.store.db.utils")
    monitor = logging.getLogger("mlflow.system_metrics.system_metrics_monitor")
    try:
        quiet.quiet_loggers(False)
        assert not tables.isEnabledFor(logging.INFO) and tables.isEnabledFor(logging.WARNING)
        assert not monitor.isEnabledFor(logging.WARNING) and monitor.isEnabledFor(logging.ERROR)
        quiet.quiet_loggers(True)
        assert tables.level == monitor.level == logging.NOTSET  # the level of their parents again
    finally:
        quiet.quiet_loggers(True)


def test_urllib3s_retries_are_one_line(caplog: pytest.LogCaptureFixture) -> None:
    connections = logging.getLogger("urllib3.connectionpool")
    try:
        quiet.quiet_loggers(False)
        with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
            for left in range(5):
                connections.warning("Retrying (%s) after connection broken by %r: %s", left, "refused", "/api")
            connections.warning("Connection pool is full, discarding connection")  # not a retry: kept
        messages = [record.getMessage() for record in caplog.records]
        assert len(messages) == 2 and messages[1] == "Connection pool is full, discarding connection"
        assert messages[0].startswith("a request to the tracking server failed; retrying (")
    finally:
        quiet.quiet_loggers(True)


def test_mlflows_logged_copy_of_a_raised_sql_error_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    tables = logging.getLogger("mlflow.store.db.utils")
    caught = "SQLAlchemy database error. The following exception is caught.\n%s"
    try:
        quiet.quiet_loggers(False)
        with caplog.at_level(logging.WARNING, logger="mlflow.store.db.utils"):
            tables.error(caught, "(sqlite3.OperationalError) database or disk is full")
            tables.warning("SQLAlchemy engine could not be created. The following exception is caught.")  # kept
        assert [record.getMessage() for record in caplog.records] == [
            "SQLAlchemy engine could not be created. The following exception is caught."
        ]
        caplog.clear()
        quiet.quiet_loggers(True)
        with caplog.at_level(logging.WARNING, logger="mlflow.store.db.utils"):
            tables.error(caught, "database or disk is full")
        assert len(caplog.records) == 1  # --verbose: everything
    finally:
        quiet.quiet_loggers(True)
