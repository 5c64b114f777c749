"""Same numbers on any x86-64 processor (``thread_bench/cpu_isa.py``), shown on one machine by emulating smaller
ones: every instruction-set cap this processor can run under stands for a processor whose best it is.

- The parity checks hold under each cap: their tolerances come from an error model, not from this processor's
  rounding (``model_parity.FLOAT64`` / ``FLOAT32``).
- ``cpu_isa=avx2`` gives this machine the numbers of an AVX2 machine: a run with it logs, bit for bit, the
  losses of a ``native`` run on an emulated AVX2 machine, where the two ``native`` runs differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from thread_bench import cpu_isa, tracking

ROOT = Path(__file__).resolve().parents[2]
PARITY_SCRIPT = ROOT / "tests" / "model_parity.py"
#: What ``torch.backends.cpu.get_cpu_capability()`` reports under each cap.
ATEN_REPORTS = {"avx512": "AVX512", "avx2": "AVX2", "sse41": "DEFAULT"}


def _needs(cap: str) -> None:
    missing = cpu_isa.missing_flags(cap)
    if missing:
        pytest.skip(f"this processor cannot emulate {cap}: it lacks {', '.join(missing)}")


def _environment(**extra: str) -> dict[str, str]:
    return {**cpu_isa.uncapped(dict(os.environ)), **extra}


@pytest.mark.parametrize("cap", list(cpu_isa.CAPS))
def test_parity_holds_under_every_instruction_set_cap(cap: str) -> None:
    """One training step (float64 twins, float32 against float64), the transfer and (where TensorFlow can run
    it: ``cpu_isa.TENSORFLOW_BF16_CAPS``) bf16 parity, with Keras on TensorFlow and PyTorch both capped."""
    _needs(cap)
    environment = _environment(**cpu_isa.environment(cap, {}), KERAS_BACKEND="tensorflow")
    checks = ["step", "transfer", *(["bf16"] if cap in cpu_isa.TENSORFLOW_BF16_CAPS else [])]
    completed = subprocess.run(
        [sys.executable, str(PARITY_SCRIPT), *checks],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["cpu_isa"]["aten_capability_used"] == ATEN_REPORTS[cap]  # the cap took effect
    assert report["cpu_isa"]["ONEDNN_MAX_CPU_ISA"] == cpu_isa.CAPS[cap].onednn
    assert set(report["step"]["float32_against_float64"]) == {"keras", "torch", "adam"}


def _train(framework: str, cpu_isa_setting: str, machine: str, store: str, data: Path) -> list[float]:
    """One smoke-profile training through the entry point; ``machine`` is the cap that emulates the processor
    (``native``: this one). Returns its logged losses: train, then validation (one epoch: that is where the
    processors part; later epochs only amplify it)."""
    emulated = cpu_isa.environment(machine, {}) if machine != cpu_isa.NATIVE else {}
    environment = _environment(**emulated, MLFLOW_TRACKING_URI=store, THREAD_BENCH_DATA=str(data))
    name = f"{framework}-{cpu_isa_setting}-on-{machine}"
    command = [sys.executable, "-m", f"thread_bench.{framework}_train", "--profile", "smoke", "--seed", "1"]
    command += ["--epochs", "1", "--experiment", "isa", "--run_name", name, "--cpu_isa", cpu_isa_setting]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    mlflow.set_tracking_uri(store)
    try:
        [run] = mlflow.search_runs(
            experiment_names=["isa"], filter_string=f"tags.mlflow.runName = '{name}'", output_format="list"
        )
        assert run.data.params["cpu_isa"] == cpu_isa_setting
        assert run.data.tags[tracking.TAG_CPU_ISA].startswith(cpu_isa_setting if machine == "native" else machine)
        client = mlflow.MlflowClient()
        return [m.value for key in ("train_loss", "val_loss") for m in client.get_metric_history(run.info.run_id, key)]
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data root for the module's trainings: the first prepares the smoke dataset, the rest reuse it."""
    return tmp_path_factory.mktemp("data")


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_cpu_isa_avx2_gives_the_numbers_of_an_avx2_machine(framework: str, smoke_data: Path, tmp_path: Path) -> None:
    _needs("avx2")
    if cpu_isa.native_level() == "avx2":
        pytest.skip("this processor is an AVX2 machine: there is no larger one to pin down")
    store, data = f"sqlite:///{tmp_path / 'mlflow.db'}", smoke_data
    on_avx2_machine = _train(framework, "native", "avx2", store, data)
    pinned_here = _train(framework, "avx2", "native", store, data)
    assert pinned_here == on_avx2_machine  # bit for bit, every epoch
    if framework == "torch":
        # ... where without the pin this processor's numbers are its own (so the emulation is real).
        assert _train(framework, "native", "native", store, data) != on_avx2_machine
