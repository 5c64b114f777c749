"""The run around ``fit``, shared by both entry points: configs, validation, dataset, MLflow logging.

The framework comes as a :class:`~thread_bench.frameworks.Framework`; its trainer (a module implementing
:class:`~thread_bench.frameworks.Trainer`) is imported once the options are parsed and the process is set up for
its backend. What is learned comes as a :class:`~thread_bench.workloads.Workload` (``--workload``): its configs,
its dataset, its models in that framework and its scores. Nothing here names a particular framework or workload.

**Precision and variants.** ``precision`` (TrainConfig) is applied by the framework module's ``configure``
(float32 rules, read back and logged) and ``build_model`` (bfloat16 compute); ``variant`` picks a named set
of knobs (``config.VARIANTS``) between the profile and the explicit options, and is logged.

**Seeds.** ``seed`` (TrainConfig) drives initialisation, dropout and the batch order; ``data_seed``
(DataConfig.seed) drives the prepared dataset (synthetic corpus, augmentation, split). Runs with different
``seed`` and the same ``data_seed`` share one dataset (one digest), which the analysis requires when it
compares runs across seeds.

**Under ``mlflow run``.** MLflow creates a run for the launch and logs every MLproject parameter there as
given, an unset one as ``''``. MLflow params cannot be changed afterwards, so the resolved values cannot be
logged into that run under the same names. The training is therefore logged in a run of its own in the
workload's experiment (``thread-density``, ``digits``; or ``-P experiment``), nested under the launch run when
both are in the same experiment; the two are linked by tags both ways.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from thread_bench import cli, cpu_isa, frameworks, lifecycle, measure, progress, quiet, store, tracking, workloads
from thread_bench.config import DEFAULT_VARIANT, PREDICT_BATCH_SIZE, TrainConfig, resolve
from thread_bench.data.prepared import DamagedDatasetError, PreparedDataset, load_prepared
from thread_bench.frameworks import Framework, Trainer
from thread_bench.models import pyfunc
from thread_bench.preparation import PreparationError, prepare_and_log
from thread_bench.training.common import EpochRecord, TrainingData, TrainResult, seed_host
from thread_bench.training.options import FrameworkOptions
from thread_bench.workloads import Models, Workload

log = logging.getLogger(__name__)

#: Images used for the model signature and input example.
_EXAMPLE_IMAGES = 4


@dataclass(frozen=True)
class TrainRequest:
    """Everything a training run needs, resolved and validated before any work starts."""

    framework: str
    profile: str
    #: The workload's data and model configs (``Workload.data_config``, ``Workload.model_config``).
    data: Any
    model: Any
    train: TrainConfig
    options: FrameworkOptions
    variant: str = DEFAULT_VARIANT
    workload: str = workloads.DEFAULT
    experiment: str | None = None
    #: A prepared dataset directory to train on as is, instead of preparing one from ``data``.
    dataset_dir: Path | None = None
    run_name: str | None = None


# ---------------------------------------------------------------------------------- the command line


def build_parser(framework: Framework) -> argparse.ArgumentParser:
    """Options of ``python -m <framework.entry_module>``, generated from the config dataclasses."""
    parser = cli.Parser(
        prog=f"python -m {framework.entry_module}",
        description=f"Train a workload's model with {framework.name} under the shared protocol and log the run to "
        "MLflow. Every option defaults to the profile's value (an empty string also means 'from the profile'); "
        "a workload's options are refused with another workload.",
    )
    workloads.add_option(parser)
    cli.add_profile_option(parser, workloads.profiles_for(workloads.default_for(framework.name)))
    cli.add_variant_option(parser)
    cli.add_dataclass_options(parser, TrainConfig)
    for workload in workloads.WORKLOADS.values():
        cli.add_dataclass_options(parser, workload.model_config)  # input_size: the data's and the model's
        cli.add_data_options(parser, workload.data_config, exclude=("input_size",))
    cli.add_dataclass_options(parser, framework.options)
    cli.add_experiment_option(parser)
    parser.add_argument(
        "--run_name",
        default=None,
        help="MLflow run name (default: [<workload>-<model>-]<framework>-<backend>-seed<seed>)",
    )
    parser.add_argument(
        "--dataset", default=None, help="train on this prepared dataset directory as is (skips preparation)"
    )
    cli.add_verbose_option(parser)
    return parser


def request_from_args(args: argparse.Namespace, framework: Framework) -> TrainRequest:
    """Resolve the profile and the given options; raises ``ValueError``/``FileNotFoundError`` for bad input."""
    workload = workloads.get(args.workload) if args.workload else workloads.default_for(framework.name)
    workloads.check_options(args, workload)
    return resolve_request(
        framework,
        workload,
        args.profile,
        variant=args.variant or DEFAULT_VARIANT,
        data=cli.pick_data(args, workload.data_config),
        model=cli.pick(args, workload.model_config),
        train=cli.pick(args, TrainConfig),
        options=cli.pick(args, framework.options),
        experiment=args.experiment or None,
        dataset_dir=Path(args.dataset) if args.dataset else None,
        run_name=args.run_name or None,
    )


def resolve_request(
    framework: Framework,
    workload: Workload,
    profile: str,
    *,
    variant: str = DEFAULT_VARIANT,
    data: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    experiment: str | None = None,
    dataset_dir: Path | None = None,
    run_name: str | None = None,
) -> TrainRequest:
    """The validated request for the values given to each config (field -> value; ``None`` = not given) over
    the defaults, the profile's and the variant's: how a training resolves its command line, and how a study
    checks the settings it will hand to each training before it starts any.

    Raises:
        ValueError, FileNotFoundError: a bad value, naming the parameter; a bad ``dataset_dir`` or source.
    """

    def settings(cls: type, given: Mapping[str, Any] | None) -> Any:
        return resolve(cls, profile, given, variant=variant, profiles=workload.profiles)

    request = TrainRequest(
        workload=workload.name,
        framework=framework.name,
        profile=profile,
        data=settings(workload.data_config, data),
        model=settings(workload.model_config, model),
        train=settings(TrainConfig, train),
        options=settings(framework.options, options),
        variant=variant,
        experiment=experiment,
        dataset_dir=dataset_dir,
        run_name=run_name,
    )
    validate(request)
    return request


def validate(request: TrainRequest) -> None:
    """Checks that need more than one config (each dataclass validates its own fields)."""
    workload = workloads.get(request.workload)
    workload.implementation(request.framework, request.model)  # the workload has the model in that framework
    if request.dataset_dir is not None:
        dataset = load_prepared(request.dataset_dir)
        if dataset.workload != workload.name:
            raise ValueError(
                f"--dataset {request.dataset_dir} was prepared for the {dataset.workload} workload, not {workload.name}"
            )
        if dataset.input_size != request.model.input_size:
            raise ValueError(
                f"--dataset {request.dataset_dir} holds {dataset.input_size} px images but the model's "
                f"input_size is {request.model.input_size}; pass --input_size {dataset.input_size}"
            )
        return
    if request.data.input_size != request.model.input_size:  # a request built in code; the command line can't
        raise ValueError(
            f"the data's input_size={request.data.input_size} differs from the model's "
            f"input_size={request.model.input_size}; they must be equal"
        )
    workload.check_source(request.data)


# ------------------------------------------------------------------------------------------ the run


def run(request: TrainRequest, trainer: Trainer, knobs: dict[str, Any] | None = None) -> str:
    """Train and log one run; returns its MLflow run id. The run ends FINISHED, FAILED or KILLED.

    Args:
        knobs: what ``trainer.configure`` returned, when the caller configured the process already (to
            refuse unsupported settings before any run starts); configured here otherwise.
    """
    if knobs is None:
        knobs = trainer.configure(request.options, request.train)
    workload = workloads.get(request.workload)
    models = workload.models_for(request.framework)
    implementation = workload.implementation(request.framework, request.model)
    tags = {tracking.TAG_ROLE: tracking.ROLE_TRAIN, tracking.TAG_FRAMEWORK: trainer.FRAMEWORK}
    with tracking.tracked_run(
        tracking.experiment_name(request.experiment, workload.experiment),
        run_name=request.run_name or _run_name(request),
        tags=tags,
        log_system_metrics=True,
        launch_link_tag=tracking.TAG_TRAINING_RUN_ID,
    ) as active:
        run_id = active.info.run_id
        dataset = _dataset(request, workload)
        data = TrainingData.from_prepared(dataset)
        train = dataclasses.replace(request.train, input_pipeline=trainer.input_pipeline(request.train, data))
        seed_host(train.seed)
        trainer.seed(train.seed)
        model = trainer.build_model(models, request.model, train.precision, implementation)
        knobs = {
            **knobs,
            **trainer.compile_model(model, models, request.model, train, request.options),
            tracking.PARAM_WORKLOAD: workload.name,
            tracking.PARAM_N_PARAMS: models.count_parameters(model),
        }
        resolved_model = request.model  # with the implementation style resolved, where the workload has styles
        if hasattr(request.model, tracking.PARAM_IMPLEMENTATION):
            knobs[tracking.PARAM_IMPLEMENTATION] = implementation
            resolved_model = dataclasses.replace(request.model, implementation=implementation)
        environment = trainer.environment()
        # What the model will need to answer a user's raw inputs: known before the work, so a failure is early.
        serving = importlib.import_module(workload.serving)
        preprocessing = serving.describe(dataset, request.data if request.dataset_dir is None else None, None)
        _log_setup(request, train, trainer, dataset, knobs, environment)
        print(
            f"{trainer.FRAMEWORK} ({knobs[tracking.PARAM_BACKEND]}, {train.precision}, variant "
            f"{request.variant}, {train.input_pipeline} input) on {environment['device']}: "
            f"{len(data.train)} train / {len(data.val)} val images of {data.input_size} px, run {run_id}",
            flush=True,
        )
        if train.input_pipeline == "staged":
            log.warning(
                "input_pipeline=staged: every step sees one pre-made batch; the timings hold, the losses do not"
            )
        label = f"{trainer.FRAMEWORK} seed {train.seed}"
        with progress.EpochProgress(train.epochs, label) as live:  # a live line on a terminal only

            def on_epoch_end(record: EpochRecord) -> None:
                live.epoch_done()
                _report_epoch(record)

            result = trainer.fit(model, data, train, request.options, models=models, on_epoch_end=on_epoch_end)
        with quiet.native_notices_hidden():  # TensorFlow's notices of scoring and saving (seconds, no output)
            _add_validation_scores(result, workload, models, model, data, check=train.input_pipeline != "staged")
            _log_result(result)
            product = pyfunc.Product(workload.name, workload.serving, preprocessing, step=result.best_epoch)
            uri = trainer.log_model(
                model, models, resolved_model, train.precision, data.val.images[:_EXAMPLE_IMAGES], product
            )
        _link_model_metrics(result, uri)
    _print_summary(result, workload, run_id)
    return run_id


def _run_name(request: TrainRequest) -> str:
    """``[<workload>-<model>-<implementation>-]<framework>[-<backend>][-<precision>][-<variant>]-seed<seed>``;
    the defaults are left out (the default workload's runs keep the names they always had)."""
    backend = request.options.backend if frameworks.get(request.framework).backend_is_option else None
    precision = request.train.precision if request.train.precision != TrainConfig.precision else None
    variant = request.variant if request.variant != DEFAULT_VARIANT else None
    workload = (
        (request.workload, getattr(request.model, "model", None)) if request.workload != workloads.DEFAULT else ()
    )
    implementation = getattr(request.model, "implementation", workloads.DEFAULT_IMPLEMENTATION)
    style = implementation if implementation != workloads.DEFAULT_IMPLEMENTATION else None
    parts = (*workload, style, request.framework, backend, precision, variant, f"seed{request.train.seed}")
    return "-".join(part for part in parts if part)


def _dataset(request: TrainRequest, workload: Workload) -> PreparedDataset:
    if request.dataset_dir is not None:
        return load_prepared(request.dataset_dir)
    # Inside the active training run: a dataset built now gets its own preprocess run, nested under it.
    experiment = tracking.experiment_name(request.experiment, workload.experiment)
    return prepare_and_log(request.data, None, experiment, profile=request.profile, workload=workload)


def config_params(train: TrainConfig, model: Any, data: Mapping[str, Any]) -> dict[str, Any]:
    """The params a training logs from its configs: every field under its own name, the data settings under
    their param names (:func:`tracking.data_param`), ``input_size`` once (the model's). The study compares a
    finished run's params with these."""
    settings = {tracking.data_param(name): value for name, value in data.items() if name != "input_size"}
    return {**dataclasses.asdict(train), **dataclasses.asdict(model), **settings}


def _data_settings(request: TrainRequest, dataset: PreparedDataset) -> dict[str, Any]:
    """The data settings of the run: the data config's, or a given prepared directory's (from its manifest)."""
    if request.dataset_dir is None:
        return dataclasses.asdict(request.data)
    return {**dataset.manifest.get("settings", {}), "source": str(request.dataset_dir)}


def _log_setup(
    request: TrainRequest,
    train: TrainConfig,
    trainer: Trainer,
    dataset: PreparedDataset,
    knobs: dict[str, Any],
    environment: dict[str, Any],
) -> None:
    """Params, tags, the dataset input and the resolved config; all before the first epoch.

    ``train`` is ``request.train`` with ``input_pipeline`` resolved (what this run used).
    """
    params = {
        tracking.PARAM_FRAMEWORK: trainer.FRAMEWORK,
        tracking.PARAM_PROFILE: request.profile,
        tracking.PARAM_VARIANT: request.variant,
        **config_params(train, request.model, _data_settings(request, dataset)),
        tracking.PARAM_DATASET_DIGEST: dataset.digest,
        tracking.PARAM_DATASET_KEY: dataset.manifest.get("key", dataset.path.name),
        tracking.PARAM_N_TRAIN: len(dataset.train),
        tracking.PARAM_N_VAL: len(dataset.val),
        tracking.PARAM_N_TEST: len(dataset.test),
        **knobs,
    }
    tracking.log_params(params)
    versions = trainer.versions()
    mlflow.set_tags(
        {
            tracking.TAG_FRAMEWORK_VERSION: " ".join(f"{name}=={version}" for name, version in versions.items()),
            tracking.TAG_DEVICE: environment["device"],
            tracking.TAG_CPU: measure.cpu_description(environment["cpu_model"], environment["cpu_signature"]),
            tracking.TAG_CPU_ISA: environment["cpu_isa"],
            tracking.TAG_DATASET_DIGEST: dataset.digest,
        }
    )
    # The prepared dataset as the run's input (MLflow's Datasets panel: name, digest, folder).
    tracking.log_dataset_input(str(dataset.path.resolve()), params[tracking.PARAM_DATASET_KEY], dataset.digest[:16])
    config = {
        "framework": trainer.FRAMEWORK,
        "workload": request.workload,
        "profile": request.profile,
        "variant": request.variant,
        "train": dataclasses.asdict(train),
        "train_requested": dataclasses.asdict(request.train),
        "model": dataclasses.asdict(request.model),
        "data": dataclasses.asdict(request.data) if request.dataset_dir is None else None,
        "options": dataclasses.asdict(request.options),
        "resolved_knobs": knobs,
        "dataset": {"path": str(dataset.path), "digest": dataset.digest, "manifest": dataset.manifest},
        "environment": environment,
        "versions": versions,
    }
    mlflow.log_dict(config, tracking.ARTIFACT_CONFIG)


def _report_epoch(record: EpochRecord) -> None:
    """Log the epoch's metrics and print its line; called by ``fit`` outside the timed regions."""
    mlflow.log_metrics(record.metrics(), step=record.epoch)
    gpu = f"  gpu {record.gpu_mem_peak_bytes / 2**30:.2f} GiB" if record.gpu_mem_peak_bytes is not None else ""
    print(
        f"epoch {record.epoch:3d}  train_loss {record.train_loss:.4f}  val_loss {record.val_loss:.4f}"
        f"{' *' if record.improved else '  '}  {record.epoch_time_s:6.1f} s (train {record.train_time_s:.1f}, "
        f"val {record.val_time_s:.1f})  lr {record.learning_rate:.2e}  rss {record.host_rss_peak_bytes / 2**30:.2f} GiB"
        f"{gpu}",
        flush=True,
    )


def _add_validation_scores(
    result: TrainResult, workload: Workload, models: Models, model: Any, data: TrainingData, *, check: bool = True
) -> None:
    """Score the restored best model on the validation split with the workload's metrics and baselines; its
    tables (a confusion matrix) are logged as JSON artifacts.

    Args:
        check: warn when the rescored loss differs from the best epoch's (off for staged runs, whose epoch
            losses were computed on a pre-made batch).
    """
    outputs = models.predict(model, data.val.images, PREDICT_BATCH_SIZE)
    scores = workload.score(outputs, data.val.labels, data.train.labels)
    result.extra.update(scores.metrics)
    for name, table in scores.tables.items():
        mlflow.log_dict(table, name)
    if check and abs(scores.loss - result.best_val_loss) > 1e-3 * max(1.0, result.best_val_loss):
        log.warning(
            "the restored model scores %.5f on validation, the best epoch scored %.5f",
            scores.loss,
            result.best_val_loss,
        )


def _log_result(result: TrainResult) -> None:
    # At the last epoch's step: where a summary shares its key with a per-epoch metric (host_rss_peak_bytes,
    # gpu_mem_peak_bytes), the summary (the maximum) is logged last and is the run's value for that key.
    mlflow.log_metrics(result.summary_metrics(), step=result.history[-1].epoch)
    with tempfile.TemporaryDirectory() as directory:
        history = Path(directory) / tracking.ARTIFACT_HISTORY
        result.write_history_csv(history)
        mlflow.log_artifact(str(history))


def _link_model_metrics(result: TrainResult, uri: str) -> None:
    """Give the logged model (the best epoch's weights) the scores it has: MLflow links the run's metrics at the
    model's step (the best epoch: its ``val_loss``, its time) to it; the summary (``best_val_loss``, the
    validation scores of the restored model) is logged at the last epoch's step, so where the best epoch is an
    earlier one, the scores that describe the model are linked to it explicitly."""
    if result.best_epoch == result.history[-1].epoch or not uri.startswith("models:/"):
        return
    metrics = result.summary_metrics()
    scores = {key: metrics[key] for key in (tracking.BEST_VAL_LOSS, tracking.BEST_EPOCH, *result.extra)}
    mlflow.log_metrics(scores, step=result.best_epoch, model_id=uri.removeprefix("models:/"))


def _print_summary(result: TrainResult, workload: Workload, run_id: str) -> None:
    metrics = result.summary_metrics()
    print(
        f"best val_loss {result.best_val_loss:.4f} at epoch {result.best_epoch} ({workload.summary(metrics)}). "
        f"{len(result.history)} epochs in {metrics[tracking.TOTAL_TRAIN_TIME_S]:.0f} s "
        f"(first {metrics[tracking.FIRST_EPOCH_TIME_S]:.1f} s, then median "
        f"{metrics[tracking.MEDIAN_EPOCH_TIME_S]:.1f} s). MLflow run {run_id}",
        flush=True,
    )


@dataclass(frozen=True)
class EntryPoint:
    """``python -m thread_bench.<framework>_train``: the parser and ``main`` of one framework's training, as the
    thin entry modules expose them (``build_parser()``, ``main(argv)``)."""

    framework: Framework

    def build_parser(self) -> argparse.ArgumentParser:
        return build_parser(self.framework)

    def main(self, argv: Sequence[str] | None = None) -> int:
        return main(argv, self.framework)


def entry_point(name: str) -> EntryPoint:
    return EntryPoint(frameworks.get(name))


def main(argv: Sequence[str] | None, framework: Framework) -> int:
    """Parse, validate (exit 2 with one line on bad input, before any work), then train."""
    parser = build_parser(framework)
    args = cli.start(parser, argv)
    # SIGTERM like Ctrl-C: the run ends KILLED, never RUNNING; a study's training also dies with the study.
    with lifecycle.stop_on_signals():
        lifecycle.die_with_parent_from_environment()
        try:
            try:
                request = request_from_args(args, framework)
                cpu_isa.check_available(request.train.cpu_isa)  # the processor's: before the store is touched
                cpu_isa.check_precision(request.train.cpu_isa, request.train.precision, request.options.backend)
                store.open_store()  # an unusable tracking store: one line now, not tracebacks after the work
                trainer = framework.load_trainer(
                    request.options.backend,
                    deterministic=request.train.deterministic,
                    threads=request.train.threads,
                    cpu_isa=request.train.cpu_isa,
                )
                knobs = trainer.configure(request.options, request.train)
            except DamagedDatasetError as error:
                cli.fail(parser, ValueError(f"{error}; delete it and prepare it again (thread_bench.preprocessing)"))
                return 2
            except (ValueError, FileNotFoundError) as error:
                cli.fail(parser, error)
                return 2
            try:
                run(request, trainer, knobs)
            except FloatingPointError as error:  # diverged: the run is marked FAILED; the cause is one line
                print(f"{parser.prog}: {error}; the run is marked FAILED", file=sys.stderr)
                return 1
            except PreparationError as error:  # bad data, found while the run's dataset was prepared
                print(f"{parser.prog}: error: {error}; the run is marked FAILED", file=sys.stderr)
                return 2
            except Exception as error:
                if not cli.report_fault(parser, error):
                    raise
                return 1
        except KeyboardInterrupt as interrupt:
            print(f"interrupted ({lifecycle.describe_stop(interrupt)}): {tracking.ending_note()}", file=sys.stderr)
            return lifecycle.exit_status(interrupt)
    return 0
