"""The "model from code" MLflow runs to load a logged PyTorch or TensorFlow model (see ``pyfunc``)."""

import mlflow

from thread_bench.models.pyfunc import WorkloadPyfunc

mlflow.models.set_model(WorkloadPyfunc())
