"""Quiet by default: the frameworks' start-up notices hidden unless ``--verbose``, their warnings still shown.

TensorFlow (2.21) writes its start-up notices from C++ straight to file descriptor 2, before its own logging is
set up, so ``TF_CPP_MIN_LOG_LEVEL`` does not reach them: the line ``WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR`` and informational lines such as ``I0000 … port.cc:153]
oneDNN custom operations are on…``, twice per process. :func:`framework_import` imports a framework with the
descriptor caught and lets through every line but those (a ``W``arning, an ``E``rror or a Python traceback
passes); ``--verbose`` (the root logger at DEBUG, :func:`thread_bench.cli.configure_logging`) shows them all.
MLflow's informational lines about its own machinery (creating the store's tables, starting and stopping the
system-metrics monitor, checking an input example) are held back the same way (:func:`quiet_loggers`), and
urllib3's warning per retry becomes one line; MLflow's other lines (a run's link on a tracking server) and its
warnings still show.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

#: Lines a framework writes that tell a user nothing they can act on: absl's notice that logging is not yet set
#: up, absl/glog informational lines (``I<mmdd> <time> <thread> <file>:<line>] …``), and one known false error.
NOTICE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR|I\d{4} "
    # TensorFlow 2.21 logs its own tf.data graphs as wrong when a Keras model is scored or saved: an error
    # line about an attribute its Python side sets and its op registry lacks, with no effect on the result.
    rb"|E\d{4} .*\] NodeDef mentions attribute use_unbounded_threadpool which is not in the op definition)"
)


def verbose() -> bool:
    """Whether the command runs with ``--verbose`` (its root logger at DEBUG)."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def native_notices_hidden() -> Iterator[None]:
    """Catch what native code writes to file descriptor 2 while the block runs, and write it back afterwards
    without the :data:`NOTICE` lines (all of it with ``--verbose``). Python's own writes to ``sys.stderr`` in the
    block are caught too and written back in order, after the block: keep the block short (an import)."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True) if not NOTICE.match(line)]
            if kept:
                os.write(2, b"".join(kept))


def framework_import(name: str) -> ModuleType:
    """``importlib.import_module(name)``, its start-up notices hidden (:func:`native_notices_hidden`); a module
    imported already is returned as is."""
    if name in sys.modules:
        return sys.modules[name]
    with native_notices_hidden():
        return importlib.import_module(name)


#: Loggers whose lines below the level given are about the library's machinery, not the user's work (the
#: system-metrics thread warns on every sample it cannot send to a server that is gone).
NOTICE_LOGGERS = {
    "alembic": logging.WARNING,
    "mlflow.store.db.utils": logging.WARNING,
    "mlflow.system_metrics.system_metrics_monitor": logging.ERROR,
    "mlflow.pyfunc": logging.WARNING,
    "mlflow.models.model": logging.WARNING,
}


class _FirstRetryOnly(logging.Filter):
    """urllib3 warns once per retry of every request (a dozen lines while MLflow gives a dead server up): the
    first becomes one line saying what is going on, the others are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Retrying"):
            return True
        if self.said:
            return False
        self.said = True
        retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLflow's default number of")
        record.msg, record.args = f"a request to the tracking server failed; retrying ({retries} retries at most)", ()
        return True


_RETRIES = _FirstRetryOnly()


class _RaisedAnyway(logging.Filter):
    """MLflow's SQL store logs every ``OperationalError`` with its traceback ("SQLAlchemy database error. The
    following exception is caught.") and then raises it as an ``MlflowException``: the command reports that
    exception in one line (a full disk, a locked database), so the logged copy only repeats it at length."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SQLAlchemy database error. The following exception is caught.")


_REPEATS = _RaisedAnyway()


def quiet_loggers(verbose_run: bool) -> None:
    """:data:`NOTICE_LOGGERS` at their levels, urllib3's retries as one line and MLflow's logged copies of the
    SQL errors it raises dropped; or everything with ``--verbose``."""
    for name, level in NOTICE_LOGGERS.items():
        logging.getLogger(name).setLevel(logging.NOTSET if verbose_run else level)
    _RETRIES.said = False
    for name, shortened in (("urllib3.connectionpool", _RETRIES), ("mlflow.store.db.utils", _REPEATS)):
        if verbose_run:
            logging.getLogger(name).removeFilter(shortened)
        else:
            logging.getLogger(name).addFilter(shortened)
