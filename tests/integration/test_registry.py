"""The analysis registers the best models and points ``@champion`` and ``best-<framework>`` at them.

The models are trivial pyfunc models that predict a constant of their own (tests/registry_helpers.py), logged once
for the module; each test registers into a registered model of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from analysis import cli as analysis_cli
from analysis import evaluate, registry
from conftest import make_fake_prepared, names_not_in_tracking, private_store
from registry_helpers import log_constant_model
from thread_bench import tracking
from thread_bench.data.prepared import load_prepared
from thread_bench.workloads.thread_density import keys as thread_density_keys

DIGEST = "a" * 64
OTHER_DIGEST = "b" * 64

# seaborn 0.13's boxplot passes matplotlib's deprecated ``vert``; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:vert. bool was deprecated:matplotlib.MatplotlibDeprecationWarning")


@dataclass(frozen=True)
class Trained:
    framework: str
    seed: int
    best_val_loss: float
    run_id: str
    model_uri: str

    @property
    def prediction(self) -> float:
        return prediction_of(self.framework, self.seed)


def prediction_of(framework: str, seed: int) -> float:
    return {"keras": 100.0, "torch": 200.0}[framework] + seed


#: (framework, seed) -> best_val_loss of the module's runs.
LOSSES = {("keras", 0): 0.05, ("torch", 0): 0.04, ("torch", 1): 0.03, ("keras", 1): 0.06}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One private store for the module (creating an MLflow SQLite schema takes seconds)."""
    with private_store(tmp_path_factory.mktemp("registry-store")) as uri:
        yield uri


@pytest.fixture(scope="module")
def trained(store: str) -> dict[tuple[str, int], Trained]:
    """Training runs with a model each (no training: the registry reads only the model and the candidate)."""
    experiment_id = tracking.ensure_experiment("registry-trainings")
    made = {}
    for (framework, seed), loss in LOSSES.items():
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{framework}-{seed}") as run:
            uri = log_constant_model(prediction_of(framework, seed))
        made[framework, seed] = Trained(framework, seed, loss, run.info.run_id, uri)
    return made


def candidate(run: Trained, digest: str = DIGEST) -> registry.Candidate:
    return registry.Candidate(
        group=run.framework,
        framework=run.framework,
        backend="tensorflow" if run.framework == "keras" else "torch",
        seed=str(run.seed),
        source_run_id=run.run_id,
        model_uri=run.model_uri,
        evaluation_run_id=f"evaluation-of-{run.run_id}",
        dataset_digest=digest,
        best_val_loss=run.best_val_loss,
        test_scores={tracking.TEST_LOSS: run.best_val_loss + 0.01, thread_density_keys.TEST_MAE_THREADS_PER_CM: 0.3},
    )


@pytest.fixture
def experiment(store: str, request: pytest.FixtureRequest) -> str:
    """The experiment an analysis compared, and so the registered model: one per test."""
    return f"registry-{request.node.name}"


def versions(name: str) -> list[Any]:
    return sorted(MlflowClient().search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


def aliases(name: str) -> dict[str, str]:
    return {alias: str(number) for alias, number in MlflowClient().get_registered_model(name).aliases.items()}


def test_the_name_is_the_experiments_and_the_aliases_are_mlflows_kind() -> None:
    assert tracking.registered_model_name("thread-density") == "thread-density"
    assert tracking.registered_model_name(" /Users/me:runs?x ") == "Users-me-runs-x"
    with pytest.raises(ValueError, match="experiment '/': no registered model name"):
        tracking.registered_model_name("/")
    assert [tracking.best_alias(f) for f in ("torch", "keras")] == ["best-torch", "best-keras"]
    assert tracking.best_alias("my.frame work") == "best-my-frame-work"
    assert tracking.alias_uri("digits") == "models:/digits@champion"


def test_the_first_analysis_sets_the_champion_and_each_frameworks_best_with_the_evaluations_tags(
    experiment: str, trained: dict[tuple[str, int], Trained]
) -> None:
    keras, torch = trained["keras", 0], trained["torch", 0]

    done = registry.register_best([candidate(keras), candidate(torch)], experiment=experiment)

    assert done.name == experiment
    assert {group: version.number for group, version in done.versions.items()} == {"keras": "1", "torch": "2"}
    assert aliases(experiment) == {"champion": "2", "best-keras": "1", "best-torch": "2"}
    assert done.lines() == [
        "@champion: set to version 2 (torch, seed 0, best_val_loss 0.04)",
        "@best-keras: set to version 1 (keras, seed 0, best_val_loss 0.05)",
        "@best-torch: set to version 2 (torch, seed 0, best_val_loss 0.04)",
    ]
    first = MlflowClient().get_model_version(experiment, "1")
    assert first.run_id == keras.run_id and first.source == keras.model_uri
    assert first.tags == {
        tracking.PARAM_FRAMEWORK: "keras",
        tracking.PARAM_BACKEND: "tensorflow",
        tracking.PARAM_GROUP: "keras",
        tracking.PARAM_SEED: "0",
        tracking.PARAM_SOURCE_RUN_ID: keras.run_id,
        tracking.VERSION_TAG_EVALUATION_RUN_ID: f"evaluation-of-{keras.run_id}",
        tracking.PARAM_DATASET_DIGEST: DIGEST,
        tracking.BEST_VAL_LOSS: "0.05",
        tracking.TEST_LOSS: "0.060000000000000005",
        thread_density_keys.TEST_MAE_THREADS_PER_CM: "0.3",
    }
    assert done.run_tags() == {
        tracking.TAG_REGISTERED_MODEL: experiment,
        tracking.TAG_CHAMPION_VERSION: "2",
        tracking.TAG_CHAMPION_URI: f"models:/{experiment}@champion",
    }
    assert done.summary() == f"models:/{experiment}@champion = version 2 (torch, seed 0, best_val_loss 0.04)"
    assert "best_val_loss" in MlflowClient().get_registered_model(experiment).description


def test_a_rerun_with_the_same_runs_changes_nothing(experiment: str, trained: dict[tuple[str, int], Trained]) -> None:
    chosen = [candidate(trained["keras", 0]), candidate(trained["torch", 0])]
    registry.register_best(chosen, experiment=experiment)
    before = [(v.version, v.tags, v.last_updated_timestamp) for v in versions(experiment)]

    again = registry.register_best(chosen, experiment=experiment)

    assert [(v.version, v.tags, v.last_updated_timestamp) for v in versions(experiment)] == before
    assert aliases(experiment) == {"champion": "2", "best-keras": "1", "best-torch": "2"}
    assert again.lines() == [
        "@champion: kept version 2 (torch, seed 0, best_val_loss 0.04); it is still the best candidate",
        "@best-keras: kept version 1 (keras, seed 0, best_val_loss 0.05); it is still the best candidate",
        "@best-torch: kept version 2 (torch, seed 0, best_val_loss 0.04); it is still the best candidate",
    ]


def test_a_better_run_moves_the_alias_and_a_worse_one_does_not(
    experiment: str, trained: dict[tuple[str, int], Trained]
) -> None:
    registry.register_best([candidate(trained["keras", 0]), candidate(trained["torch", 0])], experiment=experiment)

    better = registry.register_best(
        [candidate(trained["keras", 0]), candidate(trained["torch", 1])], experiment=experiment
    )
    worse = registry.register_best([candidate(trained["keras", 1])], experiment=experiment)

    assert better.lines() == [
        "@champion: version 3 (torch, seed 1, best_val_loss 0.03) replaces version 2 (torch, seed 0, best_val_loss "
        "0.04)",
        "@best-keras: kept version 1 (keras, seed 0, best_val_loss 0.05); it is still the best candidate",
        "@best-torch: version 3 (torch, seed 1, best_val_loss 0.03) replaces version 2 (torch, seed 0, best_val_loss "
        "0.04)",
    ]
    assert worse.lines() == [
        "@champion: kept version 3 (torch, seed 1, best_val_loss 0.03); best candidate version 4 (keras, seed 1, "
        "best_val_loss 0.06) is not better",
        "@best-keras: kept version 1 (keras, seed 0, best_val_loss 0.05); best candidate version 4 (keras, seed 1, "
        "best_val_loss 0.06) is not better",
    ]
    assert aliases(experiment) == {"champion": "3", "best-keras": "1", "best-torch": "3"}
    assert len(versions(experiment)) == 4  # every analysed group's best is a version; only the best hold aliases


def test_a_holder_trained_on_another_dataset_keeps_its_alias_unless_promote(
    experiment: str, trained: dict[tuple[str, int], Trained]
) -> None:
    registry.register_best([candidate(trained["keras", 0]), candidate(trained["torch", 0])], experiment=experiment)
    on_other_data = [candidate(trained["keras", 1], OTHER_DIGEST), candidate(trained["torch", 1], OTHER_DIGEST)]

    kept = registry.register_best(on_other_data, experiment=experiment)

    assert aliases(experiment) == {"champion": "2", "best-keras": "1", "best-torch": "2"}
    (line, *_) = kept.lines()
    assert line == (
        "@champion: kept version 2 (torch, seed 0, best_val_loss 0.04); best candidate version 4 (torch, seed 1, "
        "best_val_loss 0.03) not compared: the holder was trained on another dataset, digest aaaaaaaaaaaaaaaa… "
        "against this analysis' bbbbbbbbbbbbbbbb…, and validation losses compare only on one dataset (--promote "
        "moves the alias anyway)"
    )
    assert all(decision.outcome == "incomparable" for decision in kept.decisions)

    promoted = registry.register_best(on_other_data, experiment=experiment, promote=True)

    # Losses on two datasets do not compare: promote moves every alias to this analysis' best, worse-looking or not.
    assert aliases(experiment) == {"champion": "4", "best-keras": "3", "best-torch": "4"}
    assert promoted.lines()[0] == (
        "@champion: version 4 (torch, seed 1, best_val_loss 0.03) replaces version 2 (torch, seed 0, best_val_loss "
        "0.04) (--promote: the holder was trained on another dataset, digest aaaaaaaaaaaaaaaa… against this "
        "analysis' bbbbbbbbbbbbbbbb…)"
    )
    assert len(versions(experiment)) == 4


def test_the_champion_uri_loads_the_champions_model(experiment: str, trained: dict[tuple[str, int], Trained]) -> None:
    chosen = [trained["keras", 0], trained["torch", 1]]
    done = registry.register_best([candidate(run) for run in chosen], experiment=experiment)
    best = trained["torch", 1]

    by_alias = MlflowClient().get_model_version_by_alias(experiment, tracking.ALIAS_CHAMPION)
    model = mlflow.pyfunc.load_model(done.champion_uri)
    keras_model = mlflow.pyfunc.load_model(tracking.alias_uri(experiment, tracking.best_alias("keras")))

    assert (by_alias.run_id, by_alias.source) == (best.run_id, best.model_uri)
    assert model.predict([0.0, 1.0]) == [best.prediction, best.prediction]
    assert keras_model.predict([0.0]) == [trained["keras", 0].prediction]
    with pytest.raises(ValueError, match="one candidate per group"):
        registry.register_best([candidate(trained["torch", 0]), candidate(best)], experiment=experiment)


def test_ties_do_not_move_an_alias_and_a_holder_without_records_is_not_compared() -> None:
    holder = registry.Version("1", "torch", "0", 0.04, DIGEST)
    tie = registry.Version("2", "torch", "1", 0.04, DIGEST)
    by_hand = registry.Version("7")

    assert registry.decide("champion", tie, holder, digest=DIGEST, promote=False).outcome == "not_better"
    assert registry.decide("champion", tie, holder, digest=DIGEST, promote=True).outcome == "not_better"
    unknown = registry.decide("champion", tie, by_hand, digest=DIGEST, promote=False)
    assert (unknown.outcome, unknown.after) == ("incomparable", by_hand)
    assert "version 7 (no records); best candidate version 2" in unknown.line
    assert "the holder records no dataset digest" in unknown.line
    assert registry.decide("champion", tie, by_hand, digest=DIGEST, promote=True).after == tie


def test_a_store_that_refuses_costs_one_warning_and_a_programming_error_still_stops(
    experiment: str,
    trained: dict[tuple[str, int], Trained],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise MlflowException("the model registry is not supported by this\nstore")

    monkeypatch.setattr(mlflow, "register_model", refuse)
    chosen = [candidate(trained["torch", 0])]

    with caplog.at_level(logging.WARNING, logger=registry.__name__):
        done = registry.try_register_best(chosen, experiment=experiment)

    assert done.error == "the model registry is not supported by this store"
    assert (done.lines(), done.run_tags(), done.champion) == ([], {}, None)
    assert done.summary() == "not registered (the model registry is not supported by this store)"
    (warning,) = [record.getMessage() for record in caplog.records if record.name == registry.__name__]
    assert warning.startswith("models not registered in sqlite:") and "\n" not in warning

    monkeypatch.setattr(mlflow, "register_model", lambda *args, **kwargs: None)  # a bug: no version back
    with pytest.raises(AttributeError):
        registry.try_register_best(chosen, experiment=experiment)


# ---------------------------------------------------------------------- the analysis, end to end


def training_run(experiment: str, framework: str, seed: int, best_val_loss: float, digest: str) -> str:
    """A FINISHED training run with the names training logs (what the analysis selects by) and a model."""
    tags = {tracking.TAG_ROLE: tracking.ROLE_TRAIN, tracking.TAG_FRAMEWORK: framework}
    experiment_id = tracking.ensure_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{framework}-{seed}", tags=tags) as run:
        params = {"framework": framework, "backend": framework, "seed": seed, "dataset_digest": digest}
        mlflow.log_params({**params, "profile": "smoke", "batch_size": 8})
        for epoch, loss in enumerate((2 * best_val_loss, best_val_loss)):
            metrics = {tracking.TRAIN_LOSS: loss, tracking.VAL_LOSS: loss, tracking.EPOCH_TIME_S: 1.0}
            mlflow.log_metrics({**metrics, tracking.TRAIN_TIME_S: 0.9, tracking.VAL_TIME_S: 0.1}, step=epoch)
        mlflow.log_metrics(
            {
                tracking.BEST_VAL_LOSS: best_val_loss,
                tracking.BEST_EPOCH: 1,
                tracking.MIN_TRAIN_LOSS: best_val_loss,
                tracking.EPOCHS_TRAINED: 2,
                tracking.TOTAL_TRAIN_TIME_S: 2.0,
                tracking.FIRST_EPOCH_TIME_S: 1.0,
                tracking.MEDIAN_EPOCH_TIME_S: 1.0,
                tracking.TRAIN_SAMPLES_PER_S: 8.0,
                tracking.HOST_RSS_PEAK_BYTES: 1e9,
            }
        )
        log_constant_model(prediction_of(framework, seed))
    return str(run.info.run_id)


def test_the_analysis_registers_prints_a_line_per_alias_and_records_the_champion(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = load_prepared(make_fake_prepared(tmp_path, n_train=4, n_val=4, n_test=6, size=8))
    experiment = "registry-analysis"
    keras = training_run(experiment, "keras", 0, 0.05, dataset.digest)
    torch = training_run(experiment, "torch", 0, 0.04, dataset.digest)

    def evaluate_run(source: Any, data: Any, **kwargs: Any) -> tuple[evaluate.Evaluation, str]:
        """No framework: the registry needs an evaluation, not a real one."""
        n_test = len(data.test)
        evaluation = evaluate.Evaluation(
            predictions=np.full(n_test, 12.0, dtype=np.float32),
            test_loss=float(source[tracking.BEST_VAL_LOSS]) + 0.01,
            scores={thread_density_keys.TEST_MAE_THREADS_PER_CM: 0.3},
            predict_time_s=0.1,
            predict_first_time_s=0.2,
            predict_samples_per_s=n_test / 0.1,
            n_test=n_test,
            device="cpu",
        )
        return evaluation, evaluate.model_uri(str(source["run_id"]))

    monkeypatch.setattr(evaluate, "evaluate_run", evaluate_run)
    command = ["--experiment", experiment, "--dataset", str(dataset.path), "--fft_baseline", "false"]
    command += ["--out", str(tmp_path / "report"), "--repeats", "1"]

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise MlflowException("registry unsupported")

    with monkeypatch.context() as refusing:
        refusing.setattr(mlflow, "register_model", refuse)
        assert analysis_cli.main(command) == 0
    refused = capsys.readouterr().out
    assert "@champion" not in refused and "report: " in refused  # the analysis went on; the warning is logged

    assert analysis_cli.main([*command, "--promote", "false"]) == 0

    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if line.startswith("@")] == [
        "@champion: set to version 2 (torch, seed 0, best_val_loss 0.04)",
        "@best-keras: set to version 1 (keras, seed 0, best_val_loss 0.05)",
        "@best-torch: set to version 2 (torch, seed 0, best_val_loss 0.04)",
    ]
    champion_line = f"champion: models:/{experiment}@champion = version 2 (torch, seed 0, best_val_loss 0.04)"
    assert champion_line in printed
    analyses = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string=f"tags.`{tracking.TAG_ROLE}` = '{tracking.ROLE_ANALYSIS}'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    assert isinstance(analyses, list) and len(analyses) == 2
    latest, first = analyses
    assert tracking.TAG_CHAMPION_VERSION not in first.data.tags
    assert latest.data.tags[tracking.TAG_REGISTERED_MODEL] == experiment
    assert latest.data.tags[tracking.TAG_CHAMPION_VERSION] == "2"
    assert latest.data.tags[tracking.TAG_CHAMPION_URI] == f"models:/{experiment}@champion"
    assert latest.data.params[tracking.PARAM_PROMOTE] == "False"
    assert names_not_in_tracking(latest) == set()
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"**champion**: models:/{experiment}@champion = version 2" in report
    registered = {v.tags[tracking.PARAM_SOURCE_RUN_ID]: v.tags for v in versions(experiment)}
    assert set(registered) == {keras, torch}
    evaluations = mlflow.get_run(registered[torch][tracking.VERSION_TAG_EVALUATION_RUN_ID])
    assert evaluations.data.tags[tracking.TAG_SOURCE_RUN_ID] == torch
    assert registered[torch][tracking.TEST_LOSS] == repr(0.04 + 0.01)
