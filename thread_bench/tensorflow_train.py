"""The ``tensorflow_train`` entry point: ``python -m thread_bench.tensorflow_train [--model cnn3] [--seed N] ...``.

Trains a workload's model in plain TensorFlow — a ``tf.GradientTape`` loop, no ``keras.Model.fit`` — under the
shared protocol and logs the run to MLflow (see :mod:`thread_bench.training.driver`); ``--help`` lists every
option. Only the digits workload has TensorFlow models (``--implementation lowlevel|keras_layers``), so it is the
default here.
"""

from __future__ import annotations

from thread_bench.training import driver

ENTRY = driver.entry_point("tensorflow")
FRAMEWORK = ENTRY.framework
build_parser = ENTRY.build_parser
main = ENTRY.main

if __name__ == "__main__":
    raise SystemExit(main())
