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
