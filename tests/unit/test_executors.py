"""How a Ray task's end becomes an attempt's :class:`~thread_bench.executors.Ending`: an error raised in the task
is one line naming the worker's exception (never Ray's traceback); a lost worker or node is a lost attempt."""

from __future__ import annotations

import traceback
from types import SimpleNamespace
from typing import Any

import pytest
from ray.exceptions import NodeDiedError, RayTaskError

from thread_bench import executors

JOB = executors.Job(("torch", "default", 0), "torch (default) seed 0", ("python", "-m", "thread_bench.torch_train"))


def _ray_raising(error: BaseException) -> Any:
    def get(reference: Any) -> Any:
        raise error

    return SimpleNamespace(get=get)


def _task_error() -> BaseException:
    """What ``ray.get`` raises for a task whose body raised: ``RayTaskError(ValueError)``, Ray's traceback in it."""
    try:
        raise ValueError("embedded null byte")
    except ValueError as error:
        return RayTaskError("run_training_task", traceback.format_exc(), error).as_instanceof_cause()


def test_an_error_raised_in_the_task_is_one_line_naming_the_workers_exception() -> None:
    ending = executors.RayExecutor._ending(_ray_raising(_task_error()), object(), JOB, 1, 0.0)
    assert not ending.succeeded and not ending.lost and ending.status is None
    assert ending.reason == "the Ray task failed: ValueError: embedded null byte"
    assert (
        ending.describe()
        == "torch (default) seed 0 (attempt 1) on ?: the Ray task failed: ValueError: embedded null byte"
    )


def test_a_dead_node_is_a_lost_attempt_to_retry() -> None:
    error = NodeDiedError("node 1352c2 is dead")
    ending = executors.RayExecutor._ending(_ray_raising(error), object(), JOB, 2, 0.0)
    assert ending.lost and ending.attempt == 2
    assert ending.reason is not None and ending.reason.startswith("lost with its Ray worker or node (NodeDiedError: ")
    assert "\n" not in ending.reason


@pytest.mark.parametrize("status", [0, 2])
def test_a_task_that_returned_gives_the_trainings_exit_status(status: int) -> None:
    ray = SimpleNamespace(get=lambda reference: (status, "worker-1", 12.5))
    ending = executors.RayExecutor._ending(ray, object(), JOB, 1, 0.0)
    assert (ending.status, ending.host, ending.duration_s, ending.succeeded) == (status, "worker-1", 12.5, status == 0)
