"""The ``study`` entry point: train N seeds x frameworks on one prepared dataset, then run the analysis.

python -m thread_bench.study [--study ID] [--seeds 3] [--frameworks keras,torch] [--backend tensorflow]
                             [--variants default,nondeterministic,tuned] [--precision fp32]
                             [--profile laptop] [--data_seed N] [--source DIR] [--epochs N] [--experiment NAME]
                             [--out DIR]

Every training run is tagged ``thread_bench.study=<ID>`` and nested under a ``study`` run. The study is
resumable: re-running the same command skips every (framework, backend, variant, seed) that already has a
FINISHED training run in the study, so an interrupted study loses at most the training in progress. Each
variant forms its own group in the analysis; one study has one precision (a comparison is made within one).

**One live process per study.** A study refuses to start while another process still works on the same
study id (a RUNNING study or training run whose process is alive, or on another machine, where it cannot be
checked), naming that run and process: two would train the same (framework, seed) twice at once and spoil
both timings. RUNNING runs whose process is gone (killed outright) are first marked KILLED. Interrupting a
study (Ctrl-C, SIGTERM) stops its training with SIGTERM, so that run ends KILLED too; a training also dies
with its study if the study is killed outright (parent-death signal, Linux).

**Each training runs in a fresh subprocess** (``python -m thread_bench.<framework>_train``), never in this
process: Keras fixes its backend at its first import; the host memory peak and the kernel's ``ru_maxrss``
are per process, so a second training in the same process would report the first one's memory; framework
caches (traced graphs, allocator pools) would make later first epochs look faster than they are; and a
crash or an out-of-memory kill ends one training, not the study. The cost is the imports, a few seconds
per training.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from thread_bench import cli, lifecycle, store, tracking
from thread_bench.config import DEFAULT_VARIANT, DataConfig, TrainConfig, profile_names, resolve, variant_names
from thread_bench.data.prepare import data_root
from thread_bench.training.options import KERAS_BACKENDS, KerasOptions

log = logging.getLogger(__name__)

FRAMEWORKS = ("keras", "torch")
DEFAULT_SEEDS = 3
#: Seconds an interrupted study gives its training to end its run (KILLED) after SIGTERM, before SIGKILL.
TRAINING_STOP_GRACE_S = 30.0


@dataclass(frozen=True)
class StudySettings:
    """What a study trains; see :func:`build_parser` for the meaning of each field."""

    study: str
    seeds: tuple[int, ...]
    frameworks: tuple[str, ...]
    backend: str
    variants: tuple[str, ...]
    precision: str
    profile: str
    data: DataConfig
    epochs: int
    epochs_given: bool
    experiment: str
    out: str | None
    data_root: Path
    analyze: bool

    def backend_of(self, framework: str) -> str:
        """The ``backend`` param a training of ``framework`` logs."""
        return self.backend if framework == "keras" else framework


#: One training of a study: (framework, variant, seed).
Training = tuple[str, str, int]


@dataclass(frozen=True)
class StudyOutcome:
    run_id: str
    trained: list[Training]
    skipped: list[Training]
    failed: list[Training]
    analysis_run_id: str | None


# -------------------------------------------------------------------------------------- resumability


def finished_runs(settings: StudySettings) -> pd.DataFrame:
    """The study's FINISHED training runs (columns ``run_id``, ``framework``, ``backend``, ``variant``, ``seed``,
    ``profile``, ``data_seed``, ``epochs``, ``precision``, ``dataset_digest``); empty when there are none yet.
    Runs logged before variants existed count as ``default``, before precision as ``fp32``.

    Raises:
        ValueError: the study already holds runs of another profile, data seed, epoch budget or precision:
            resuming it with these settings would mix two experiments under one id.
    """
    experiment = mlflow.get_experiment_by_name(settings.experiment)
    columns = ["run_id", tracking.PARAM_FRAMEWORK, tracking.PARAM_BACKEND, tracking.PARAM_VARIANT, tracking.PARAM_SEED]
    columns += [tracking.PARAM_PROFILE, tracking.PARAM_DATA_SEED, tracking.PARAM_EPOCHS, tracking.PARAM_SOURCE]
    columns += [tracking.PARAM_PRECISION, tracking.PARAM_DATASET_DIGEST]
    if experiment is None:
        return pd.DataFrame(columns=columns)
    from analysis.runs import training_filter  # the one definition of "a finished training run"

    raw = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string=training_filter(settings.study),
        output_format="pandas",
    )
    assert isinstance(raw, pd.DataFrame)
    if raw.empty:
        return pd.DataFrame(columns=columns)
    runs = pd.DataFrame(
        {
            "run_id": raw["run_id"],
            **{name: raw.get(f"params.{name}") for name in columns[1:]},
        }
    )
    runs["seed"] = pd.to_numeric(runs["seed"]).astype(int)
    runs["variant"] = runs["variant"].fillna(DEFAULT_VARIANT)
    runs["precision"] = runs["precision"].fillna(TrainConfig.precision).replace({"float32": "fp32"})
    expected = {
        "precision": settings.precision,
        "profile": settings.profile,
        "data_seed": str(settings.data.seed),
        "epochs": str(settings.epochs),
        "source": settings.data.source
        if settings.data.source == "synthetic"
        else str(Path(settings.data.source).resolve()),
    }
    for name, value in expected.items():
        other = runs[runs[name].notna() & (runs[name].astype(str) != value)]
        if not other.empty:
            found = sorted(set(other[name].astype(str)))
            raise ValueError(
                f"study {settings.study!r} already has training runs with {name}={found} (e.g. run "
                f"{other['run_id'].iloc[0]}), not {value}; use another --study id for other settings"
            )
    return runs[columns]


def pending(settings: StudySettings, done: pd.DataFrame) -> tuple[list[Training], list[Training]]:
    """(to train, already finished) as (framework, variant, seed), seeds outermost.

    Seeds outermost: an interrupted study then holds about as many runs of each framework and variant.
    """
    variants = done["variant"] if "variant" in done.columns else pd.Series(DEFAULT_VARIANT, index=done.index)
    finished = {
        (str(framework), str(backend), str(variant), int(seed))
        for framework, backend, variant, seed in zip(
            done["framework"], done["backend"], variants, done["seed"], strict=True
        )
    }
    todo: list[Training] = []
    skipped: list[Training] = []
    for seed in settings.seeds:
        for variant in settings.variants:
            for framework in settings.frameworks:
                key = (framework, settings.backend_of(framework), variant, seed)
                (skipped if key in finished else todo).append((framework, variant, seed))
    return todo, skipped


# ------------------------------------------------------------------------------------------ training


def training_command(settings: StudySettings, framework: str, variant: str, seed: int) -> list[str]:
    command = [sys.executable, "-m", f"thread_bench.{framework}_train", "--profile", settings.profile]
    command += ["--seed", str(seed), "--data_seed", str(settings.data.seed), "--experiment", settings.experiment]
    command += ["--variant", variant, "--precision", settings.precision]
    if framework == "keras":
        command += ["--backend", settings.backend]
    if settings.data.source != DataConfig.source:
        command += ["--source", settings.data.source]
    if settings.epochs_given:
        command += ["--epochs", str(settings.epochs)]
    return command


def training_environment(settings: StudySettings, study_run_id: str) -> dict[str, str]:
    """The environment of a training subprocess.

    ``MLFLOW_RUN_CONTEXT`` (MLflow's run-context provider: JSON tags added to every run the process starts)
    tags the training run with the study and nests it under the study run, without the training entry
    point needing to know about studies. ``MLFLOW_RUN_ID`` is removed: the training would take it for an
    ``mlflow run`` launch run.
    """
    environment = lifecycle.child_environment(os.environ)  # the training dies with this process
    environment.pop("MLFLOW_RUN_ID", None)
    environment["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    environment["THREAD_BENCH_DATA"] = str(settings.data_root)
    environment["MLFLOW_RUN_CONTEXT"] = json.dumps(
        {tracking.TAG_STUDY: settings.study, MLFLOW_PARENT_RUN_ID: study_run_id}
    )
    return environment


def train(settings: StudySettings, training: Training, study_run_id: str) -> bool:
    """Run one training to completion in a subprocess; True when it succeeded.

    Interrupted, the training gets SIGTERM and ``TRAINING_STOP_GRACE_S`` to end its run, then SIGKILL.
    Either way, a run the training left RUNNING (it was killed outright) is marked KILLED afterwards.
    """
    framework, variant, seed = training
    command = training_command(settings, framework, variant, seed)
    log.info("training %s (%s) seed %d: %s", framework, variant, seed, " ".join(command[1:]))
    try:
        status = lifecycle.run_child(
            command, training_environment(settings, study_run_id), grace_s=TRAINING_STOP_GRACE_S
        )
    finally:
        with lifecycle.deferred_signals():
            _reconcile_children(settings, study_run_id)
    if status != 0:
        log.error("training %s (%s) seed %d failed (exit status %d)", framework, variant, seed, status)
    return status == 0


def _reconcile_children(settings: StudySettings, study_run_id: str) -> None:
    experiment_id = tracking.ensure_experiment(settings.experiment)
    tracking.reconcile_runs([experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{study_run_id}'")


# ------------------------------------------------------------------------------ one live study process


def live_study_runs(settings: StudySettings, experiment_id: str) -> list[mlflow.entities.Run]:
    """RUNNING study and training runs of this study whose process is alive, or cannot be checked from here
    (another machine); oldest first. Call :func:`tracking.reconcile_runs` first to clear the dead ones."""
    from analysis.runs import quote

    runs = tracking.running_runs([experiment_id], f"tags.`{tracking.TAG_STUDY}` = {quote(settings.study)}")
    live = []
    for run in runs:
        if run.data.tags.get(tracking.TAG_ROLE) not in (tracking.ROLE_STUDY, tracking.ROLE_TRAIN):
            continue
        owner = tracking.process_of(run)
        if owner is None:
            log.warning(
                "run %s of study %s is RUNNING without process tags: cannot tell whether it is alive; ignored",
                run.info.run_id,
                settings.study,
            )
            continue
        if not owner.on_this_machine() or owner.alive():
            live.append(run)
    return live


def refuse_concurrent_study(settings: StudySettings, experiment_id: str, own_run_id: str | None = None) -> None:
    """Raise when another process works on this study: any live run before this study's run exists; after,
    only a study run that started before ``own_run_id`` (of two started at once, the first one goes on).

    Raises:
        ValueError: naming the other run, its role and process.
    """
    live = live_study_runs(settings, experiment_id)
    if own_run_id is not None:
        order = (mlflow.MlflowClient().get_run(own_run_id).info.start_time, own_run_id)
        live = [
            run
            for run in live
            if run.data.tags.get(tracking.TAG_ROLE) == tracking.ROLE_STUDY
            and (run.info.start_time, run.info.run_id) < order
        ]
    if live:
        other = live[0]
        owner = tracking.process_of(other)
        assert owner is not None
        where = owner.describe() if owner.on_this_machine() else f"{owner.describe()}, another machine"
        raise ValueError(
            f"study {settings.study!r} is already running: {other.data.tags.get(tracking.TAG_ROLE)} run "
            f"{other.info.run_id} ({where}) is RUNNING; wait for it or stop it (SIGTERM), then re-run this command"
        )


# --------------------------------------------------------------------------------------------- study


def run_study(settings: StudySettings) -> StudyOutcome:
    """Prepare the data, train what is missing, analyse (see the module docstring).

    Raises:
        ValueError: the study id already holds runs of other settings; nothing finished to analyse.
    """
    # Imported here: the analysis pulls in pandas/seaborn/matplotlib, which --help does not need.
    from analysis.cli import AnalysisSettings, run_analysis
    from thread_bench.preprocessing import prepare_and_log

    store.open_store()
    experiment_id = tracking.ensure_experiment(settings.experiment)
    tracking.reconcile_runs([experiment_id])
    refuse_concurrent_study(settings, experiment_id)
    done = finished_runs(settings)
    todo, skipped = pending(settings, done)
    if skipped:
        log.info("resuming study %s: %d trainings already finished, %d to go", settings.study, len(skipped), len(todo))
    tags = {tracking.TAG_ROLE: tracking.ROLE_STUDY, tracking.TAG_STUDY: settings.study}
    trained: list[Training] = []
    failed: list[Training] = []
    analysis_run_id = None
    with tracking.tracked_run(
        settings.experiment, run_name=f"study-{settings.study}", tags=tags, launch_link_tag=tracking.TAG_STUDY_RUN_ID
    ) as active:
        study_run_id = active.info.run_id
        refuse_concurrent_study(settings, experiment_id, study_run_id)  # one started at the same moment
        tracking.log_params(
            {
                tracking.PARAM_STUDY: settings.study,
                tracking.PARAM_SEEDS: ",".join(map(str, settings.seeds)),
                tracking.PARAM_FRAMEWORKS: ",".join(settings.frameworks),
                tracking.PARAM_VARIANTS: ",".join(settings.variants),
                tracking.PARAM_PRECISION: settings.precision,
                tracking.PARAM_BACKEND: settings.backend,
                tracking.PARAM_PROFILE: settings.profile,
                tracking.PARAM_DATA_SEED: settings.data.seed,
                tracking.PARAM_EPOCHS: settings.epochs,
            }
        )
        # Prepared once, here, so the trainings all reuse it (and no two of them build it at once).
        dataset = prepare_and_log(settings.data, settings.data_root, settings.experiment, profile=settings.profile)
        for training in todo:
            (trained if train(settings, training, study_run_id) else failed).append(training)
        mlflow.log_metrics(
            {tracking.N_TRAINED: len(trained), tracking.N_SKIPPED: len(skipped), tracking.N_FAILED: len(failed)}
        )
        _check_digests(settings, dataset.digest)
        if settings.analyze:
            result = run_analysis(
                AnalysisSettings(
                    experiment=settings.experiment,
                    study=settings.study,
                    out=settings.out,
                    dataset=str(dataset.path),
                    data_root=str(settings.data_root),
                )
            )
            analysis_run_id = result.run_id
            mlflow.set_tag(tracking.TAG_ANALYSIS_RUN_ID, analysis_run_id)
    return StudyOutcome(study_run_id, trained, skipped, failed, analysis_run_id)


def _check_digests(settings: StudySettings, digest: str) -> None:
    """Every training must have used the study's dataset; a mismatch is a bug worth a loud message."""
    runs = finished_runs(settings)
    other = runs[runs["dataset_digest"] != digest]
    if not other.empty:
        raise ValueError(
            f"study {settings.study!r}: runs {list(other['run_id'])} trained on another dataset than "
            f"{digest[:16]}… (the study's); the analysis would refuse them"
        )


# ------------------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m thread_bench.study",
        description="Train every framework on several seeds (one prepared dataset, each training in its own "
        "process), tag the runs with a study id, then run the analysis. Re-running the same study skips the "
        "trainings that already finished.",
    )
    parser.add_argument(
        "--study",
        default=None,
        help="study id (default: <profile>-<backend>-data<data_seed>, plus -<precision> unless fp32); reuse it "
        "to resume",
    )
    parser.add_argument("--seeds", default=None, help=f"number of seeds (default: {DEFAULT_SEEDS})")
    parser.add_argument("--first_seed", default=None, help="first training seed (default: 0)")
    parser.add_argument(
        "--frameworks", default=None, help=f"comma-separated, from {list(FRAMEWORKS)} (default: all of them)"
    )
    parser.add_argument(
        "--backend",
        default=None,
        help=f"Keras backend, one of {list(KERAS_BACKENDS)} (default: {KerasOptions.backend})",
    )
    parser.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated, from {variant_names()}; each is its own group (default: {DEFAULT_VARIANT})",
    )
    parser.add_argument(
        "--precision", default=None, help=f"fp32, tf32 or bf16, for every training (default: {TrainConfig.precision})"
    )
    cli.add_profile_option(parser)
    parser.add_argument("--data_seed", default=None, help="seed of the prepared dataset (default: the profile's)")
    parser.add_argument("--source", default=None, help="'synthetic' or a raw corpus directory (default: the profile's)")
    parser.add_argument("--epochs", default=None, help="maximum epochs per training (default: the profile's)")
    parser.add_argument(
        "--experiment", default=None, help=f"MLflow experiment (default: {tracking.DEFAULT_EXPERIMENT})"
    )
    parser.add_argument("--out", default=None, help="report folder (default: reports/<study>)")
    parser.add_argument("--data_root", default=None, help="data root (default: $THREAD_BENCH_DATA or ./data)")
    parser.add_argument("--analyze", default=None, help="run the analysis at the end: true/false (default: true)")
    parser.add_argument("--verbose", action="store_true")
    return parser


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """Resolve the options ("" = not given, as MLflow passes unset parameters).

    Raises:
        ValueError: a malformed or out-of-range option.
    """

    def given(value: str | None) -> str | None:
        return value if value not in (None, "") else None

    def integer(name: str, default: int | None) -> int | None:
        text = given(getattr(args, name))
        if text is None:
            return default
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--{name} must be an integer, got {text!r}") from None

    n_seeds = integer("seeds", DEFAULT_SEEDS)
    first_seed = integer("first_seed", 0)
    assert n_seeds is not None and first_seed is not None
    if n_seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {n_seeds}")
    if first_seed < 0 or first_seed + n_seeds > 2**32:
        raise ValueError(f"--first_seed {first_seed} with --seeds {n_seeds}: seeds must lie in [0, 2**32)")
    frameworks = tuple(f.strip() for f in (given(args.frameworks) or ",".join(FRAMEWORKS)).split(",") if f.strip())
    unknown = sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown or not frameworks:
        raise ValueError(f"--frameworks: unknown {unknown}; expected a comma-separated subset of {list(FRAMEWORKS)}")
    backend = KerasOptions(backend=given(args.backend) or KerasOptions.backend).backend  # validates it
    variants = tuple(
        dict.fromkeys(v.strip() for v in (given(args.variants) or DEFAULT_VARIANT).split(",") if v.strip())
    )
    unknown_variants = sorted(set(variants) - set(variant_names()))
    if unknown_variants or not variants:
        raise ValueError(
            f"--variants: unknown {unknown_variants}; expected a comma-separated subset of {variant_names()}"
        )
    precision = TrainConfig(precision=given(args.precision) or TrainConfig.precision).precision  # validates it
    if args.profile not in profile_names():
        raise ValueError(f"unknown profile {args.profile!r}; expected one of {profile_names()}")
    source = given(args.source)
    if source is not None and source != "synthetic":
        # Absolute, so that the trainings (and a later resume from elsewhere) log the same source param.
        source = str(Path(source).resolve())
    data = resolve(DataConfig, args.profile, {"seed": integer("data_seed", None), "source": source})
    if data.source != "synthetic" and not Path(data.source).is_dir():
        raise FileNotFoundError(f"--source {data.source!r}: no such directory (expected 'synthetic' or a corpus dir)")
    epochs_given = integer("epochs", None)
    epochs = resolve(TrainConfig, args.profile, {"epochs": epochs_given}).epochs
    study = given(args.study) or f"{args.profile}-{backend}-data{data.seed}" + (
        f"-{precision}" if precision != TrainConfig.precision else ""
    )
    return StudySettings(
        study=study,
        seeds=tuple(range(first_seed, first_seed + n_seeds)),
        frameworks=tuple(dict.fromkeys(frameworks)),
        backend=backend,
        variants=variants,
        precision=precision,
        profile=args.profile,
        data=data,
        epochs=epochs,
        epochs_given=epochs_given is not None,
        experiment=tracking.experiment_name(given(args.experiment)),
        out=given(args.out) or str(Path("reports") / study),
        data_root=data_root(given(args.data_root)).resolve(),
        analyze=cli.parse_bool(given(args.analyze) or "true"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = cli.parse(parser, argv)
    cli.configure_logging(args.verbose)
    with lifecycle.stop_on_signals():  # SIGTERM like Ctrl-C: the training is stopped, every run ends
        try:
            settings = settings_from_args(args)
            store.open_store()  # an unusable tracking store is reported before the data is prepared
            outcome = run_study(settings)
        except (ValueError, FileNotFoundError, argparse.ArgumentTypeError) as error:
            cli.fail(parser, error)
            return 2
        except KeyboardInterrupt as interrupt:
            print(
                f"interrupted ({lifecycle.describe_stop(interrupt)}): re-run the same command to resume the study",
                file=sys.stderr,
            )
            return lifecycle.exit_status(interrupt)
    print(
        f"study {settings.study}: {len(outcome.trained)} trained, {len(outcome.skipped)} already finished, "
        f"{len(outcome.failed)} failed (study run {outcome.run_id})"
    )
    if outcome.analysis_run_id:
        print(f"report: {Path(settings.out or '') / 'report.md'} (analysis run {outcome.analysis_run_id})")
    if outcome.failed:
        print(f"failed trainings: {outcome.failed}; re-run the same command to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
