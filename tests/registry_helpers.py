"""Trivial models to register: what the registry tests need is a logged model, not a trained one (the trainings'
model format is tested with the trainers)."""

from __future__ import annotations

from typing import Any

import mlflow

from thread_bench import tracking


class Constant(mlflow.pyfunc.PythonModel):
    """Predicts ``value`` for every item: which model a URI loaded is told by what it predicts."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, context: Any, model_input: list[float], params: Any = None) -> list[float]:
        return [self.value] * len(model_input)


def log_constant_model(value: float) -> str:
    """Log a :class:`Constant` model in the active run, named as a training names its model; returns its URI."""
    # No requirement inference (a subprocess that loads the model): seconds saved per model.
    info = mlflow.pyfunc.log_model(name=tracking.ARTIFACT_MODEL, python_model=Constant(value), pip_requirements=[])
    return str(info.model_uri)
