"""Where does a training step spend its time? Per op class, per framework.

    python benchmarks/profile_train_step.py --framework torch-eager
    python benchmarks/profile_train_step.py --framework keras-tensorflow --onednn
    python benchmarks/profile_train_step.py --framework torch-channels_last --profile paper
    python benchmarks/profile_train_step.py --framework torch-eager --base-filters 8 --input-size 200 --batch 32

The model and batch are a training profile's (``--profile``, the suite's default: the laptop's base-2 model on
72 px images, batch 32), so a step here is a step of the epoch ``cpu_epoch.py`` times; ``--base-filters``,
``--input-size`` and ``--batch`` override one of them.

PyTorch (eager, channels_last, and Keras on the torch backend) is profiled with ``torch.profiler`` (self CPU
time per aten op); Keras on TensorFlow with the TF profiler (op events of the executor threads, read from
the XPlane it writes). Ops are grouped into the same classes for both. TensorFlow runs independent ops
(the three branches of a module) concurrently on its inter-op threads, so its op times can add up to more
than the wall time (``ops / wall``).

``--onednn`` reruns the same steps with ``ONEDNN_VERBOSE=1`` (timestamped, to keep only the steps) and sums
the oneDNN primitives (convolution implementation and ISA, layout reorders): the two frameworks share that
library, so this shows whether they get the same kernels. ``--wait-quiet`` waits for idle cores before each
step (shared machines: PyTorch's OpenMP threads slow down many-fold when other processes compete).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from machine_load import ForeignLoad, wait_until_quiet
from thread_bench import cli, config
from thread_bench.backends import tensorflow_backend

FRAMEWORKS = ("torch-eager", "torch-channels_last", "keras-tensorflow", "keras-torch")
ONEDNN_MARKER = "=== thread_bench profiled steps ==="

#: (class, regular expression on the aten op name or the TF op type), first match wins.
OP_CLASSES = (
    ("conv forward", r"mkldnn_convolution$|^aten::_convolution$|^aten::conv2d$|Conv2D$|FusedConv2D"),
    ("conv backward", r"convolution_backward|Conv2DBackprop"),
    ("batchnorm", r"batch_norm|BatchNorm|^(Mean|SquaredDifference|Rsqrt|Sum|Square)$"),
    ("relu", r"relu|clamp_min|threshold_backward|Relu"),
    ("concat / slice", r"aten::cat|aten::slice|aten::narrow|ConcatV2|^Slice$|ConcatOffset"),
    ("max-pool", r"max_pool|MaxPool"),
    ("dense", r"aten::(mm|addmm|linear|matmul)$|MatMul"),
    ("layout copies", r"aten::(copy_|contiguous|clone|_to_copy|to)$|Transpose|_MklToTf|Reorder"),
    ("optimizer", r"lerp_|addcmul_|addcdiv_|aten::sqrt$|_foreach|Adam|Assign(Add|Sub)?VariableOp|Pow|Sqrt$"),
)  # fmt: skip


def classify(name: str) -> str:
    for label, pattern in OP_CLASSES:
        if re.search(pattern, name):
            return label
    return "other elementwise / misc"


def shapes(profile: str, base_filters: int | None, input_size: int | None, batch: int | None) -> tuple[Any, int]:
    """The profile's model config and batch size, with the options given instead of its values."""
    from thread_bench.workloads.thread_density.config import PROFILES, ModelConfig

    overrides = {"base_filters": base_filters, "input_size": input_size}
    model = config.resolve(ModelConfig, profile, overrides, profiles=PROFILES)
    train = config.resolve(config.TrainConfig, profile, {"batch_size": batch}, profiles=PROFILES)
    return model, train.batch_size


def build_step(framework: str, model_config: Any, batch: int) -> Callable[[], Any]:
    """One training step (forward, loss, backward, Adam update) of ``model_config``'s model on a random batch."""
    input_size = model_config.input_size
    rng = np.random.default_rng(0)
    images = rng.random((batch, input_size, input_size), np.float32)
    targets = rng.uniform(6.0, 23.0, batch).astype(np.float32)
    if framework.startswith("keras"):
        import keras

        from thread_bench.workloads.thread_density import keras_model, keras_models

        model = keras_model.build_model(model_config)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7),
            loss=lambda targets, predictions: keras_models.loss(predictions, targets),  # Keras' argument order
        )
        x, y = images[..., np.newaxis], targets[:, np.newaxis]
        return lambda: model.train_on_batch(x, y)

    import torch

    from thread_bench.workloads.thread_density import torch_model, torch_models

    net = torch_model.build_model(model_config)
    xt, yt = torch.from_numpy(images).unsqueeze(1), torch.from_numpy(targets)
    if framework == "torch-channels_last":
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        xt = xt.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = torch_models.loss(net(xt).reshape(-1), yt)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def profile_torch(step: Callable[[], Any]) -> dict[str, float]:
    """Self CPU ms of each aten op during one step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    totals: dict[str, float] = collections.defaultdict(float)
    for event in prof.key_averages():
        totals[event.key] += event.self_cpu_time_total / 1e3  # microseconds -> ms
    return dict(totals)


def profile_tensorflow(step: Callable[[], Any]) -> dict[str, float]:
    """ms of each TF op type on the executor threads during one step."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        step()
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        space = xplane_pb2.XSpace()
        with open(path, "rb") as handle:
            space.ParseFromString(handle.read())
    totals: dict[str, float] = collections.defaultdict(float)
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue  # executor threads; 'python' holds the enclosing host events
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:  # "<node name>:<op type>" are op kernels
                    totals[name.rsplit(":", 1)[1]] += event.duration_ps / 1e9
    return dict(totals)


def summarise_onednn(lines: list[str], windows: list[tuple[float, float]]) -> str:
    """Sum the oneDNN primitives executed inside the step windows (epoch ms, ONEDNN_VERBOSE_TIMESTAMP)."""
    totals: dict[tuple[str, ...], list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for line in lines:
        fields = line.strip().split(",")
        if len(fields) < 12 or fields[3:5] != ["primitive", "exec"]:
            continue
        if not any(begin <= float(fields[2]) <= end for begin, end in windows):
            continue
        kind, implementation, propagation = fields[6], fields[7], fields[8]
        layout = re.sub(r"::f0|f32:|:p:|:ap:|:a:", ":", fields[9])[:60] if kind == "reorder" else ""
        entry = totals[(kind, implementation, propagation, layout)]
        entry[0] += 1
        entry[1] += float(fields[-1])
    steps = max(len(windows), 1)
    rows = [f"{'ms/step':>9} {'calls':>6}  oneDNN primitive"]
    for key, (count, total_ms) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:12]:
        rows.append(f"{total_ms / steps:9.1f} {count // steps:6d}  {' '.join(k for k in key if k)}")
    return "\n".join(rows)


def _cores(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _gated_steps(run: Callable[[], Any], steps: int, wait_quiet_s: float) -> tuple[list[Any], list[float], float]:
    """Run ``steps`` times, each after waiting for idle cores; results, wall ms each, max foreign cores."""
    results, walls_ms, foreign_max = [], [], 0.0
    for _ in range(steps):
        if wait_quiet_s > 0:
            wait_until_quiet(wait_quiet_s)
        with ForeignLoad() as foreign:
            start = time.perf_counter()
            results.append(run())
            walls_ms.append((time.perf_counter() - start) * 1e3)
        foreign_max = max(foreign_max, foreign.cores or 0.0)
    return results, walls_ms, foreign_max


def main() -> None:
    parser = cli.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=FRAMEWORKS, default="torch-eager")
    parser.add_argument(
        "--profile", choices=config.PROFILE_NAMES, default=config.DEFAULT_PROFILE, help="the model and batch size"
    )
    parser.add_argument("--base-filters", type=int, help="instead of the profile's")
    parser.add_argument("--input-size", type=int, help="the images' side, instead of the profile's")
    parser.add_argument("--batch", type=int, help="instead of the profile's batch size")
    parser.add_argument("--steps", type=int, default=3, help="timed and profiled steps (after 2 warm-up steps)")
    parser.add_argument("--onednn", action="store_true", help="also sum oneDNN primitives (ONEDNN_VERBOSE)")
    parser.add_argument(
        "--wait-quiet", type=float, default=0.0, metavar="SECONDS", help="wait for idle cores before each step"
    )
    parser.add_argument("--onednn-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.framework.startswith("keras"):
        backend = args.framework.removeprefix("keras-")
        if os.environ.get("KERAS_BACKEND", backend) != backend:
            raise SystemExit(f"KERAS_BACKEND={os.environ['KERAS_BACKEND']} contradicts --framework {args.framework}")
        os.environ["KERAS_BACKEND"] = backend  # this is a script, not library code: it picks its own backend
        if backend == "tensorflow":
            tensorflow_backend.prefer_onednn()  # as the suite trains it (TF_ENABLE_ONEDNN_OPTS=0 measures Eigen)
    try:
        model_config, batch = shapes(args.profile, args.base_filters, args.input_size, args.batch)
    except ValueError as error:
        parser.error(str(error))
    step = build_step(args.framework, model_config, batch)
    for _ in range(2):
        step()

    if args.onednn_child:

        def windowed_step() -> tuple[float, float]:
            begin = time.time() * 1e3
            step()
            return begin, time.time() * 1e3

        windows, _, _ = _gated_steps(windowed_step, args.steps, args.wait_quiet)
        print(ONEDNN_MARKER + json.dumps(windows), flush=True)
        return

    _, walls_ms, foreign = _gated_steps(step, args.steps, args.wait_quiet)
    profile_step = profile_tensorflow if args.framework == "keras-tensorflow" else profile_torch
    per_step_ops, profiled_walls_ms, foreign_profiled = _gated_steps(
        lambda: profile_step(step), args.steps, args.wait_quiet
    )
    per_op: dict[str, float] = collections.defaultdict(float)
    for ops in per_step_ops:
        for name, total_ms in ops.items():
            per_op[name] += total_ms / args.steps
    by_class: dict[str, float] = collections.defaultdict(float)
    for name, ms in per_op.items():
        by_class[classify(name)] += ms
    busy = sum(by_class.values())
    wall_ms, profiled_wall_ms = statistics.median(walls_ms), statistics.median(profiled_walls_ms)
    print(f"{args.framework}: profile {args.profile}, base {model_config.base_filters}, "
          f"input {model_config.input_size}, batch {batch}")  # fmt: skip
    print(f"wall time {wall_ms:.0f} ms/step, median of {args.steps} ({batch / wall_ms * 1e3:.1f} samples/s); "
          f"other processes used up to {_cores(foreign)} cores meanwhile")  # fmt: skip
    print(f"profiled: wall {profiled_wall_ms:.0f} ms/step, op time {busy:.0f} ms/step (ops / wall "
          f"{busy / profiled_wall_ms:.2f}); other processes used up to {_cores(foreign_profiled)} cores")  # fmt: skip
    print(f"{'ms/step':>9} {'share':>6}  op class")
    for label, ms in sorted(by_class.items(), key=lambda kv: -kv[1]):
        print(f"{ms:9.1f} {ms / busy:6.1%}  {label}")
    print(f"\n{'ms/step':>9}  top ops")
    for name, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:12]:
        print(f"{ms:9.1f}  {name}")

    if args.onednn:
        env = {**os.environ, "ONEDNN_VERBOSE": "1", "ONEDNN_VERBOSE_TIMESTAMP": "1"}
        child = [sys.executable, __file__, *sys.argv[1:], "--onednn-child"]
        output = subprocess.run(child, env=env, capture_output=True, text=True, check=True).stdout
        marker_line = next(line for line in output.splitlines() if line.startswith(ONEDNN_MARKER))
        windows = [(float(b), float(e)) for b, e in json.loads(marker_line.removeprefix(ONEDNN_MARKER))]
        print("\n" + summarise_onednn(output.splitlines(), windows))


if __name__ == "__main__":
    main()
