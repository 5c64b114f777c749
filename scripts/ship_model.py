"""Make the model shipped with thread_bench: the one ``weave_map`` uses when the store has no champion.

    .venv/bin/python scripts/ship_model.py                      # train it (≈ 3 min), in a store of its own
    .venv/bin/python scripts/ship_model.py --model_uri runs:/<run_id>/model   # or ship a model already logged

Training runs the README's main command (``torch_train``, ``laptop`` profile, seed 3) in a temporary tracking store
and data root, so the user's store and data are left alone. The logged model's two files, ``architecture.json``
and ``state_dict.pt`` (no code, no training state), are copied to ``thread_bench/workloads/thread_density/
shipped_model/`` with ``SOURCE.json``: where they came from, the training's params and its validation scores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "thread_bench" / "workloads" / "thread_density" / "shipped_model"
FILES = ("architecture.json", "state_dict.pt")
TRAINING = [sys.executable, "-m", "thread_bench.torch_train", "--profile", "laptop", "--seed", "3"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--model_uri", default="", help="ship this logged model instead of training one")
    parser.add_argument("--tracking_uri", default="", help="the store of --model_uri (default: MLflow's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ship-model-") as scratch:
        if args.model_uri:
            uri, tracking_uri = args.model_uri, args.tracking_uri or None
        else:
            tracking_uri = f"sqlite:///{scratch}/mlflow.db"
            environment = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "THREAD_BENCH_DATA": f"{scratch}/data"}
            print("training:", " ".join(TRAINING[1:]), flush=True)
            subprocess.run(TRAINING, check=True, cwd=scratch, env=environment)
            uri = ""
        return ship(uri, tracking_uri, Path(scratch), trained=not args.model_uri)


def ship(uri: str, tracking_uri: str | None, scratch: Path, *, trained: bool) -> int:
    import mlflow

    from thread_bench import tracking

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    if not uri:
        experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
        assert experiment is not None, "the training logged no experiment"
        (run,) = client.search_runs([experiment.experiment_id], tracking.training_filter(), max_results=1)
        uri = f"runs:/{run.info.run_id}/{tracking.ARTIFACT_MODEL}"
    model_dir = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(scratch / "model")))
    found = {name: next(model_dir.rglob(name)) for name in FILES}
    info = mlflow.models.get_model_info(uri)
    run = client.get_run(info.run_id) if info.run_id else None
    SHIPPED.mkdir(exist_ok=True)
    for name, path in found.items():
        shutil.copyfile(path, SHIPPED / name)
    source = {
        "made_by": "scripts/ship_model.py" + ("" if run is None else f" from run {run.info.run_id}"),
        "model_uri": uri,
        "training": "python " + " ".join(TRAINING[1:]) if trained else "",
        "params": {} if run is None else dict(sorted(run.data.params.items())),
        "metrics": {} if run is None else {k: round(v, 6) for k, v in sorted(run.data.metrics.items()) if "val" in k},
    }
    (SHIPPED / "SOURCE.json").write_text(json.dumps(source, indent=1) + "\n")
    sizes = ", ".join(f"{name} {(SHIPPED / name).stat().st_size / 1e6:.2f} MB" for name in FILES)
    print(f"shipped {uri} to {SHIPPED.relative_to(ROOT)}: {sizes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
