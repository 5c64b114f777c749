"""The analysis' model registry on a team's tracking server (PostgreSQL, proxied artifacts): the versions, their
tags and aliases live in the server's database, and ``models:/<name>@champion`` loads through the server."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from analysis import registry
from registry_helpers import log_constant_model
from thread_bench import tracking

DIGEST = "c" * 64


def test_the_champion_is_registered_on_the_server_and_loads_through_it(team_store: str) -> None:
    experiment_id = tracking.ensure_experiment("team-registry")
    candidates = []
    for framework, seed, loss in (("keras", 0, 0.05), ("torch", 0, 0.04)):
        with mlflow.start_run(experiment_id=experiment_id) as run:
            uri = log_constant_model(float(seed + (200 if framework == "torch" else 100)))
        candidates.append(
            registry.Candidate(
                group=framework,
                framework=framework,
                backend=framework,
                seed=str(seed),
                source_run_id=run.info.run_id,
                model_uri=uri,
                evaluation_run_id="e" * 32,
                dataset_digest=DIGEST,
                best_val_loss=loss,
                test_scores={tracking.TEST_LOSS: loss},
            )
        )

    first = registry.register_best(candidates, experiment="team-registry")
    again = registry.register_best(candidates, experiment="team-registry")

    assert first.lines()[0] == "@champion: set to version 2 (torch, seed 0, best_val_loss 0.04)"
    assert (
        again.lines()[0]
        == "@champion: kept version 2 (torch, seed 0, best_val_loss 0.04); it is still the best candidate"
    )
    client = MlflowClient()
    assert len(client.search_model_versions("name = 'team-registry'")) == 2
    champion = client.get_model_version_by_alias("team-registry", tracking.ALIAS_CHAMPION)
    assert champion.tags[tracking.PARAM_SOURCE_RUN_ID] == candidates[1].source_run_id
    assert mlflow.pyfunc.load_model(first.champion_uri).predict([0.0]) == [200.0]
