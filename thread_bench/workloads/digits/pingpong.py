"""The weight ping-pong experiment (reference study 003): which behaviour does a network carry across frameworks?

Framework A trains on objective A — the digits with two classes swapped (by default 1 and 7: every training
label 1 becomes 7 and every 7 becomes 1) — and its weights go to framework B, which trains on the true labels;
its weights come back to A, which trains on the swapped labels again; and so on for ``rounds`` rounds. After
every stage (a training, or a transfer before the receiving framework has trained) the model that holds the
weights is scored on the test split against both objectives, with its confusion matrix. What it shows:

- a transfer is exact (the weights are the workload's framework-neutral canonical weights), so the receiving
  framework predicts, before it trains, exactly what the sender predicted: after A's swapped training, B
  reads a 1 as a 7;
- a few epochs on the other objective undo it, and the confusion matrices show the 1 and 7 rows moving back
  and forth round by round.

Each training is the shared protocol (the framework's trainer: same batch order, Adam, early stopping on the
validation split of the same objective) with a fresh optimizer, so neither framework carries optimizer state
from an earlier round. The run is logged in the digits experiment: per stage (step) the scores of the framework
that holds the weights, the stages as ``pingpong.csv``, the confusion matrices (JSON per stage and one figure).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from thread_bench import cli, figures, frameworks, store, tracking
from thread_bench.config import TrainConfig, resolve
from thread_bench.frameworks import Trainer
from thread_bench.metrics import accuracy, confusion_matrix
from thread_bench.training.common import ArraySplit, TrainingData, seed_host
from thread_bench.workloads import Models, digits, profiles_for
from thread_bench.workloads.digits import keys
from thread_bench.workloads.digits.config import N_CLASSES, DigitsDataConfig, DigitsModelConfig

log = logging.getLogger(__name__)

WORKLOAD = digits.WORKLOAD
#: The reference's pair: a 1 and a 7 are the digits a swap confuses least by chance (they look alike).
DEFAULT_SWAP = (1, 7)
#: Epochs per training stage: enough for the swapped objective to take hold on the 5,000-image subset.
DEFAULT_EPOCHS = 3


@dataclass(frozen=True)
class PingPongOptions:
    """The experiment's own options (the command line is generated from these fields)."""

    model: str = "cnn3"
    #: Framework A (trains on the swapped labels) then framework B (trains on the true labels).
    frameworks: str = "torch,keras"
    #: Keras' backend, when Keras is one of them.
    backend: str = "tensorflow"
    swap: str = ",".join(map(str, DEFAULT_SWAP))
    rounds: int = 2
    epochs: int = DEFAULT_EPOCHS
    seed: int = 0

    def __post_init__(self) -> None:
        config = self.model_config  # ValueError naming the models
        if len(self.pair) != 2 or len(set(self.pair)) != 2 or not all(0 <= c < N_CLASSES for c in self.pair):
            raise ValueError(f"--swap must be two different classes in [0, {N_CLASSES}), e.g. 1,7; got {self.swap!r}")
        names = self.framework_pair
        if len(names) != 2 or len(set(names)) != 2:
            raise ValueError(
                f"--frameworks must name two different frameworks, e.g. torch,keras; got {self.frameworks!r}"
            )
        for name in names:
            WORKLOAD.implementation(frameworks.get(name).name, config)
        if self.rounds < 1 or self.epochs < 1:
            raise ValueError(f"--rounds and --epochs must be >= 1, got {self.rounds} and {self.epochs}")

    @property
    def model_config(self) -> DigitsModelConfig:
        return DigitsModelConfig(model=self.model)

    @property
    def pair(self) -> tuple[int, ...]:
        try:
            return tuple(int(item) for item in self.swap.split(","))
        except ValueError as error:
            raise ValueError(f"--swap must be two class ids separated by a comma, got {self.swap!r}") from error

    @property
    def framework_pair(self) -> tuple[str, ...]:
        return tuple(item.strip() for item in self.frameworks.split(",") if item.strip())


@dataclass(frozen=True)
class Player:
    """One framework's side: its trainer, options, models module and the model it holds."""

    name: str
    trainer: Trainer
    options: Any
    models: Models
    model: Any


@dataclass(frozen=True)
class Stage:
    number: int
    round: int
    framework: str
    #: ``trained`` (after its training) or ``received`` (after a transfer, before its own training).
    event: str
    objective: str
    scores: dict[str, float]
    confusion: np.ndarray


def swapped(labels: np.ndarray, pair: tuple[int, ...]) -> np.ndarray:
    """``labels`` with the two classes of ``pair`` exchanged (same dtype)."""
    first, second = pair
    out = labels.copy()
    out[labels == first], out[labels == second] = second, first
    return out


def score(logits: np.ndarray, labels: np.ndarray, pair: tuple[int, ...]) -> tuple[dict[str, float], np.ndarray]:
    """Accuracy on both objectives, the pair's cross-predictions, and the confusion matrix (true labels)."""
    matrix = confusion_matrix(logits, labels)
    first, second = pair
    scores = {
        keys.PINGPONG_ACCURACY_ORIGINAL: accuracy(logits, labels),
        keys.PINGPONG_ACCURACY_SWAPPED: accuracy(logits, swapped(labels, pair)),
        keys.PINGPONG_FIRST_AS_SECOND: float(matrix[first, second] / max(1, matrix[first].sum())),
        keys.PINGPONG_SECOND_AS_FIRST: float(matrix[second, first] / max(1, matrix[second].sum())),
    }
    return scores, matrix


def run_pingpong(
    options: PingPongOptions, profile: str, data_config: DigitsDataConfig, experiment: str | None
) -> list[Stage]:
    """Prepare the data, set both frameworks up, play the rounds and log them; returns the stages."""
    from thread_bench.preparation import prepare_and_log

    train = dataclasses.replace(
        resolve(TrainConfig, profile, {"epochs": options.epochs, "seed": options.seed}, profiles=WORKLOAD.profiles),
        input_pipeline="host",
    )
    players = [_player(name, options, train) for name in options.framework_pair]
    name = f"pingpong-{options.model}-{'-'.join(options.framework_pair)}-swap{options.swap.replace(',', '')}"
    experiment = tracking.experiment_name(experiment, WORKLOAD.experiment)
    tags = {tracking.TAG_ROLE: tracking.ROLE_PINGPONG}
    with tracking.tracked_run(experiment, run_name=name, tags=tags) as active:
        dataset = prepare_and_log(data_config, None, experiment, profile=profile, workload=WORKLOAD)
        tracking.log_params(_params(options, profile, data_config, dataset.digest))
        test = dataset.test
        stages = _play(
            options, train, players, TrainingData.from_prepared(dataset), np.array(test.images), np.asarray(test.labels)
        )
        _log_stages(stages, options)
        print(f"ping-pong run {active.info.run_id}", flush=True)
    return stages


def _player(name: str, options: PingPongOptions, train: TrainConfig) -> Player:
    framework = frameworks.get(name)
    backend = options.backend if framework.backend_is_option else framework.default_backend
    values = {"backend": backend} if framework.backend_is_option else {}
    framework_options = framework.options(**values)  # type: ignore[arg-type]
    trainer = framework.load_trainer(backend, deterministic=train.deterministic, threads=train.threads)
    trainer.configure(framework_options, train)
    models = WORKLOAD.models_for(name)
    seed_host(train.seed)
    trainer.seed(train.seed)
    model = trainer.build_model(models, options.model_config, train.precision, None)
    return Player(name, trainer, framework_options, models, model)


def _play(
    options: PingPongOptions,
    train: TrainConfig,
    players: list[Player],
    data: TrainingData,
    images: np.ndarray,
    labels: np.ndarray,
) -> list[Stage]:
    objectives = {players[0].name: "swapped", players[1].name: "original"}
    swapped_data = TrainingData(
        train=ArraySplit(data.train.images, swapped(data.train.labels, options.pair)),
        val=ArraySplit(data.val.images, swapped(data.val.labels, options.pair)),
    )
    stages: list[Stage] = []

    def record(player: Player, round_number: int, event: str) -> None:
        logits = player.models.predict(player.model, images)
        scores, matrix = score(logits, labels, options.pair)
        stage = Stage(len(stages), round_number, player.name, event, objectives[player.name], scores, matrix)
        stages.append(stage)
        mlflow.log_metrics({keys.pingpong_metric(player.name, k): v for k, v in scores.items()}, step=stage.number)
        print(
            f"stage {stage.number} round {round_number} {player.name:>10} {event:>8}: accuracy on the true labels "
            f"{scores[keys.PINGPONG_ACCURACY_ORIGINAL]:.3f}, "
            f"on the swapped {scores[keys.PINGPONG_ACCURACY_SWAPPED]:.3f}; "
            f"{options.pair[0]}s read as {options.pair[1]}: {scores[keys.PINGPONG_FIRST_AS_SECOND]:.1%}",
            flush=True,
        )

    for round_number in range(options.rounds):
        for index, player in enumerate(players):
            if round_number or index:  # receives the other's weights (the very first training starts fresh)
                sender = players[1 - index]
                player.models.set_weights(player.model, sender.models.get_weights(sender.model))  # type: ignore[attr-defined]
                record(player, round_number, "received")
            player.trainer.compile_model(player.model, player.models, options.model_config, train, player.options)
            chosen = swapped_data if objectives[player.name] == "swapped" else data
            player.trainer.fit(
                player.model, chosen, train, player.options, models=player.models, on_epoch_end=lambda r: None
            )
            record(player, round_number, "trained")
    return stages


def _params(options: PingPongOptions, profile: str, data: DigitsDataConfig, digest: str) -> dict[str, Any]:
    return {
        tracking.PARAM_WORKLOAD: WORKLOAD.name,
        keys.PARAM_MODEL: options.model,
        tracking.PARAM_FRAMEWORKS: options.frameworks,
        tracking.PARAM_BACKEND: options.backend,
        keys.PARAM_SWAP: options.swap,
        keys.PARAM_ROUNDS: options.rounds,
        tracking.PARAM_EPOCHS: options.epochs,
        tracking.PARAM_SEED: options.seed,
        tracking.PARAM_PROFILE: profile,
        tracking.PARAM_DATA_SEED: data.seed,
        tracking.PARAM_SOURCE: data.source,
        keys.PARAM_N_SAMPLES: data.n_samples,
        tracking.PARAM_DATASET_DIGEST: digest,
    }


def stage_table(stages: Sequence[Stage]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "stage": s.number,
                "round": s.round,
                "framework": s.framework,
                "event": s.event,
                "objective": s.objective,
                **s.scores,
            }
            for s in stages
        ]
    )


def _log_stages(stages: Sequence[Stage], options: PingPongOptions) -> None:
    mlflow.log_text(stage_table(stages).to_csv(index=False), keys.ARTIFACT_PINGPONG_TABLE)
    for stage in stages:
        name = f"confusion/stage{stage.number}_{stage.framework}_{stage.event}.json"
        mlflow.log_dict(stage.confusion.tolist(), name)
    titles = [f"{s.number}: {s.framework} {s.event} (round {s.round})" for s in stages]
    grid = figures.confusion_grid([s.confusion for s in stages], titles)
    mlflow.log_figure(grid, keys.ARTIFACT_PINGPONG_FIGURE)
    table = stage_table(stages)
    lines = {
        "accuracy on the true labels": table[keys.PINGPONG_ACCURACY_ORIGINAL],
        "accuracy on the swapped labels": table[keys.PINGPONG_ACCURACY_SWAPPED],
        f"{options.pair[0]}s read as {options.pair[1]}": table[keys.PINGPONG_FIRST_AS_SECOND],
    }
    labels = [f"{s.number}\n{s.framework}\n{s.event}" for s in stages]
    mlflow.log_figure(
        figures.stage_lines(labels, lines, "ping-pong: who holds the weights, and what they do"),
        keys.ARTIFACT_PINGPONG_ACCURACY,
    )


# ------------------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(
        prog="python -m thread_bench.pingpong",
        description="Weight ping-pong on the digits: framework A trains on labels with two classes swapped, its "
        "weights go to framework B, which trains on the true labels, and back, for several rounds; every stage "
        "is scored on both objectives and logged to MLflow with its confusion matrix.",
    )
    cli.add_profile_option(parser, profiles_for(WORKLOAD))
    cli.add_dataclass_options(
        parser,
        PingPongOptions,
        helps={
            "model": "the digits model: cnn3, cnn5 or mlp",
            "frameworks": "framework A (swapped labels) then framework B (true labels)",
            "backend": "Keras' backend, when Keras plays",
            "swap": "the two classes swapped in A's labels",
            "rounds": "rounds of A-trains, B-receives-and-trains, A-receives",
            "epochs": "epochs per training stage",
            "seed": "seed of the initialisation and the batch order",
        },
    )
    cli.add_data_options(parser, DigitsDataConfig)
    cli.add_experiment_option(parser)
    cli.add_verbose_option(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = cli.start(parser, argv)
    status, stages = cli.guarded(parser, lambda: _run(args))
    if stages is not None:
        print(stage_table(stages).to_markdown(index=False, floatfmt=".3f"))
    return status


def _run(args: argparse.Namespace) -> list[Stage]:
    options = PingPongOptions(**cli.given(args, PingPongOptions))
    given = {k: v for k, v in cli.pick_data(args, DigitsDataConfig).items() if v not in (None, "")}
    data_config = resolve(DigitsDataConfig, args.profile, given, profiles=WORKLOAD.profiles)
    WORKLOAD.check_source(data_config)
    store.open_store()  # an unusable tracking store: one line, before any training
    return run_pingpong(options, args.profile, data_config, args.experiment or None)


if __name__ == "__main__":
    raise SystemExit(main())
