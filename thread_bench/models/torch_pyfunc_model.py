"""The "model from code" MLflow runs to load a logged PyTorch RegVGG (see ``torch_pyfunc``)."""

import mlflow

from thread_bench.models.torch_pyfunc import RegVGGPyfunc

mlflow.models.set_model(RegVGGPyfunc())
