"""The MLflow names: one constant each in thread_bench.tracking or a workload's keys, and the config params equal
to their fields.

What the runs actually log is checked where runs are made: tests/integration/test_training.py (training, preprocessing)
and tests/integration/test_analysis.py (evaluation, analysis).
"""

from __future__ import annotations

import dataclasses

from conftest import tracking_constants
from thread_bench import tracking
from thread_bench.config import TrainConfig


def test_every_protocol_field_is_logged_under_its_constant() -> None:
    """A field's name is its param's name: ``tracking.PARAM_<FIELD>`` must be it (a renamed field fails here). The
    workloads' config fields have no constants: their params are derived from the dataclasses (conftest's
    ``config_params``, analysis.runs.knob_params)."""
    for config in (TrainConfig,):
        for field in dataclasses.fields(config):
            constant = f"PARAM_{field.name.upper()}"
            assert getattr(tracking, constant, None) == field.name, f"{config.__name__}.{field.name}: {constant}"


def test_no_two_constants_name_one_key() -> None:
    """Within a kind: a param and a metric may share a name (``learning_rate``), they are different keys."""
    by_key: dict[tuple[str, str], list[str]] = {}
    for name, value in tracking_constants().items():
        constant = name.rsplit(".", 1)[-1]
        kind = next((prefix for prefix in ("PARAM_", "TAG_") if constant.startswith(prefix)), "metric or artifact")
        by_key.setdefault((kind, value), []).append(name)
    assert {key: names for key, names in by_key.items() if len(names) > 1} == {}
