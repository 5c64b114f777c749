"""The Ray executor's scheduling tax: the same smoke study with ``--executor local`` and ``--executor ray`` on a
local 2-CPU Ray cluster, side by side in one run, into one tracking server (PostgreSQL, proxied artifacts).

    python benchmarks/ray_vs_local.py                     # 2 frameworks x 2 seeds, 1 epoch, 2 repeats each
    python benchmarks/ray_vs_local.py --repeats 3 --epochs 2 --analyze

Modes, interleaved (local, ray-serial, ray-parallel, local, …), each a fresh study id on the same prepared
dataset (prepared before the clock starts):

- ``local``: today's study, one training after another;
- ``ray 1-at-a-time``: Ray tasks asking for 2 CPUs each, so one runs at a time, as ``local`` does: the
  difference is what going through Ray costs (connecting, task submission, the worker's subprocess);
- ``ray 2-at-a-time``: the default, 1 CPU each: two trainings at once on the 2-CPU cluster.

Each wall time is the study command's, from start to exit (interpreter start and imports included). The
target: ``ray 1-at-a-time`` within 15 % of ``local``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from thread_bench import cli


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_team_server(directory: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "thread_bench.server", "--dir", str(directory), "--port", str(free_port())]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("tracking server http://"):
        raise SystemExit(f"the tracking server did not start: {line}")
    return process, line.split()[2]


#: The benchmark cluster's own token (Ray 2.60 authenticates drivers by default), for it and its drivers.
RAY_TOKEN = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}


def start_ray(directory: Path, cpus: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log_path = directory / "ray-start.log"
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--port", str(port)]
    command += ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--num-gpus", "0"]
    command += ["--temp-dir", str(directory), "--include-dashboard", "false", "--disable-usage-stats"]
    command += ["--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port())]
    command += ["--metrics-export-port", str(free_port()), "--object-store-memory", str(200 * 2**20)]
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **RAY_TOKEN, "RAY_USAGE_STATS_ENABLED": "0"},
        )
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"ray start failed: {log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    return process, f"127.0.0.1:{port}"


def main() -> None:
    parser = cli.Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--analyze", action="store_true", help="include the analysis in every study")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="tbbench"))
    root.chmod(0o755)
    server, url = start_team_server(root / "team")
    ray_dir = root / "ray"
    ray_dir.mkdir()
    ray, address = start_ray(ray_dir, args.cpus)
    environment = {**os.environ, **RAY_TOKEN, "MLFLOW_TRACKING_URI": url, "THREAD_BENCH_DATA": str(root / "data")}
    common = ["--profile", "smoke", "--seeds", str(args.seeds), "--epochs", str(args.epochs), "--experiment", "bench"]
    common += ["--analyze", "true" if args.analyze else "false"]
    modes = {
        "local": ["--executor", "local"],
        "ray 1-at-a-time": ["--executor", "ray", "--ray_address", address, "--cpus_per_training", str(args.cpus)],
        "ray 2-at-a-time": ["--executor", "ray", "--ray_address", address, "--cpus_per_training", "1"],
    }
    try:
        subprocess.run(
            [sys.executable, "-m", "thread_bench.preprocessing", "--profile", "smoke", "--experiment", "bench"],
            env=environment,
            check=True,
            capture_output=True,
        )
        walls: dict[str, list[float]] = {mode: [] for mode in modes}
        for repeat in range(args.repeats):
            for mode, options in modes.items():
                study_id = f"bench-{mode.split()[0]}-{options[-1]}-{repeat}-{time.time_ns()}"
                command = [sys.executable, "-m", "thread_bench.study", *common, "--study", study_id, *options]
                load_before = os.getloadavg()[0]
                started = time.perf_counter()
                done = subprocess.run(command, env=environment, capture_output=True, text=True)
                wall = time.perf_counter() - started
                if done.returncode != 0:
                    raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
                walls[mode].append(wall)
                print(
                    f"repeat {repeat + 1} {mode:16s} {wall:6.1f} s  (load average before: {load_before:.2f})",
                    flush=True,
                )
    finally:
        ray.send_signal(signal.SIGTERM)
        server.send_signal(signal.SIGTERM)
        ray.wait(timeout=60)
        server.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)

    local = statistics.median(walls["local"])
    print(
        f"\nsmoke study, {args.seeds} seeds x 2 frameworks, {args.epochs} epoch(s), {args.repeats} repeats, "
        f"local Ray cluster of {args.cpus} CPUs, PostgreSQL-backed tracking server"
    )
    print("| executor | wall s (median) | min–max | ratio to local |")
    print("| --- | --- | --- | --- |")
    for mode, values in walls.items():
        median = statistics.median(values)
        print(f"| {mode} | {median:.1f} | {min(values):.1f}–{max(values):.1f} | {median / local:.2f} |")


if __name__ == "__main__":
    main()
