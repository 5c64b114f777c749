"""Run the model micro-benchmarks in every framework, then print the ratio table.

    python benchmarks/run_inception_bench.py            # default sizes, ~6-10 min on 2 cores
    python benchmarks/run_inception_bench.py --full     # every network shape, batches 8 and 32, paper model

Keras fixes its backend at import, so each Keras backend gets its own pytest process; PyTorch runs in a
process of its own too, without TensorFlow or JAX loaded. Results: ``benchmarks/results/<UTC time>/*.json``
(pytest-benchmark JSON, one file per process); ``ratio_table.py`` prints the table again from them.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

from thread_bench import cli

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ratio_table  # noqa: E402

#: (result file stem, --frameworks value, KERAS_BACKEND)
PROCESSES = (
    ("torch", "torch-eager,torch-channels_last", None),
    ("keras-tensorflow", "keras-tensorflow", "tensorflow"),
    ("keras-jax", "keras-jax", "jax"),
    ("keras-torch", "keras-torch", "torch"),
)


def main() -> None:
    parser = cli.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="all shapes and batches (about 1 h on 2 cores)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per case (default 5)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each case wait up to SECONDS for other processes to leave the cores idle",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated subset of: " + ", ".join(stem for stem, _, _ in PROCESSES)
    )
    parser.add_argument("--out", type=Path, help="result directory (default benchmarks/results/<UTC time>)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = parser.parse_args()

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or HERE / "results" / stamp
    out.mkdir(parents=True, exist_ok=True)
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    for stem, frameworks, backend in PROCESSES:
        if wanted and stem not in wanted:
            continue
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # log verbosity only
        if backend is not None:
            env["KERAS_BACKEND"] = backend
        command = [
            sys.executable, "-m", "pytest", str(HERE / "test_inception_bench.py"),
            "-p", "no:cacheprovider", "-q", "-m", "", f"--frameworks={frameworks}",
            f"--rounds={args.rounds}", f"--wait-quiet={args.wait_quiet}",
            f"--benchmark-json={out / (stem + '.json')}", "--benchmark-columns=median,iqr,rounds",
            "--benchmark-sort=name", *(["--full"] if args.full else []), *args.pytest_args,
        ]  # fmt: skip
        print(f"\n=== {stem}: {' '.join(command[3:])}", flush=True)
        completed = subprocess.run(command, env=env, cwd=HERE.parent, check=False)
        if completed.returncode != 0:
            print(f"!!! {stem} exited with {completed.returncode}; its results may be incomplete", flush=True)
    print(f"\nResults in {out}\n")
    ratio_table.main([str(out)])


if __name__ == "__main__":
    main()
