"""``benchmarks/cpu_epoch.py``'s own logic: which settings run, refusals, and the ratio within a cell (the script
itself runs at its smallest setting in tests/system/test_benchmarks.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import cpu_epoch

pytestmark = pytest.mark.unit


def _args(*argv: str) -> argparse.Namespace:
    return cpu_epoch.build_parser().parse_args(list(argv))


def test_the_layout_engine_is_left_out_of_tuned_which_is_channels_last_already() -> None:
    chosen = cpu_epoch.settings(_args("--engines", "torch,torch-channels_last", "--precisions", "fp32"))
    assert ("torch-channels_last", "fp32", "default") in chosen
    assert ("torch", "fp32", "tuned") in chosen
    assert ("torch-channels_last", "fp32", "tuned") not in chosen
    assert len(chosen) == len(set(chosen)) == 5


def test_an_unknown_name_is_refused_naming_the_option_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"--engines: unknown \['keras-mxnet'\]; expected some of \['torch'"):
        cpu_epoch.settings(_args("--engines", "torch,keras-mxnet"))
    with pytest.raises(ValueError, match="--precisions: unknown"):
        cpu_epoch.settings(_args("--precisions", "fp64"))


def test_the_ratio_is_taken_against_torch_in_the_same_cell() -> None:
    table = pd.DataFrame(
        [
            {"engine": "torch", "precision": "fp32", "variant": "default", "steady epoch s": 20.0},
            {"engine": "keras-jax", "precision": "fp32", "variant": "default", "steady epoch s": 10.0},
            {"engine": "torch", "precision": "fp32", "variant": "tuned", "steady epoch s": 5.0},
            {"engine": "keras-jax", "precision": "fp32", "variant": "tuned", "steady epoch s": 10.0},
            {"engine": "keras-jax", "precision": "bf16", "variant": "tuned", "steady epoch s": 9.0},
        ]
    )
    ratios = cpu_epoch.add_torch_ratio(table)["x torch"].tolist()
    assert ratios[:4] == [1.0, 0.5, 1.0, 2.0]
    assert pd.isna(ratios[4]), "no PyTorch row in that cell: no ratio, not another cell's"


def test_the_result_is_handed_over_after_every_training_so_a_stopped_grid_keeps_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each training's row is in the result handed to ``on_update`` as soon as it ends (``complete`` false until
    the last); a failed setting is listed once tried, not before."""
    from types import SimpleNamespace

    monkeypatch.setattr(
        cpu_epoch, "ensure_prepared", lambda data, root: SimpleNamespace(dataset=SimpleNamespace(path=tmp_path))
    )
    monkeypatch.setattr(cpu_epoch.mlflow, "set_tracking_uri", lambda uri: None)  # no store is made or left set
    outcomes = iter(["run-a", None, "run-c", "run-d"])
    monkeypatch.setattr(cpu_epoch, "train", lambda *args, **kwargs: next(outcomes))
    monkeypatch.setattr(
        cpu_epoch,
        "row",
        lambda engine, precision, variant, run_ids, *rest: {
            "engine": engine,
            "precision": precision,
            "variant": variant,
            "steady epoch s": 1.0,
        },
    )
    updates: list[dict[str, object]] = []
    args = _args("--engines", "torch,keras-jax", "--precisions", "fp32", "--variants", "default,tuned")
    final = cpu_epoch.run(args, on_update=updates.append)

    assert [len(update["rows"]) for update in updates] == [1, 1, 2, 3]  # type: ignore[arg-type]
    assert [update["failed"] for update in updates[:2]] == [[], [["keras-jax", "fp32", "default"]]]
    assert [update["complete"] for update in updates] == [False] * 4 and final["complete"] is True
    assert len(final["rows"]) == 3 and final["failed"] == [["keras-jax", "fp32", "default"]]  # type: ignore[arg-type]


def test_the_json_file_is_whole_or_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written beside its path and renamed over it: a write cut short (a full disk) leaves the last whole file."""
    import json

    path = tmp_path / "out" / "cpu_epoch.json"
    cpu_epoch.write_json(path, {"rows": [1]})
    assert json.loads(path.read_text()) == {"rows": [1]}

    real_write = Path.write_text

    def cut_short(self: Path, text: str, *args: object, **kwargs: object) -> int:
        real_write(self, text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", cut_short)
    with pytest.raises(OSError, match="No space left"):
        cpu_epoch.write_json(path, {"rows": [1, 2]})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"rows": [1]}
