"""The suite's command lines (thread_bench.cli.Parser): no prefix matching, a misspelled option refused with
the closest valid name, ``--help`` showing the values the run will use, and ``--verbose`` as MLflow passes it."""

from __future__ import annotations

import dataclasses

import pytest

from thread_bench import cli, frameworks, workloads
from thread_bench.config import TrainConfig, resolve
from thread_bench.training import driver
from thread_bench.workloads.thread_density.config import DataConfig, ModelConfig


def _torch_parser() -> cli.Parser:
    parser = driver.build_parser(frameworks.get("torch"))
    assert isinstance(parser, cli.Parser)
    return parser


def _refusal(parser: cli.Parser, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(argv)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines  # one line, not argparse's screen of usage
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "closest"),
    [
        (["--epoch", "2"], "--epochs"),  # what `mlflow run -P epoch=2` passes; argparse took it for --epochs
        (["--epoch=2"], "--epochs"),
        (["--learning", "0.1"], "--learning_rate"),  # a prefix is not an option either
        (["--batchsize", "8"], "--batch_size"),
        (["--seed", "1", "--preciison", "bf16"], "--precision"),
    ],
)
def test_a_misspelled_or_shortened_option_is_refused_with_the_closest_name(
    argv: list[str], closest: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _refusal(_torch_parser(), argv, capsys)
    unknown = next(token for token in argv if token.startswith("--") and token.split("=")[0] != "--seed")
    assert line.startswith(f"python -m thread_bench.torch_train: error: unknown option {unknown.split('=')[0]} ")
    assert line.endswith(f"did you mean {closest}?")


def test_an_option_nothing_resembles_points_to_help(capsys: pytest.CaptureFixture[str]) -> None:
    line = _refusal(_torch_parser(), ["--zzz", "1"], capsys)
    assert "unknown option --zzz" in line and "--help` lists the options" in line


def test_a_stray_value_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    line = _refusal(_torch_parser(), ["--seed", "1", "2"], capsys)
    assert "unexpected argument(s): 2" in line


def test_the_full_names_still_parse() -> None:
    args = _torch_parser().parse_args(["--epochs", "2", "--learning_rate=0.01", "--deterministic", ""])
    assert (args.epochs, args.learning_rate, args.deterministic) == (2, 0.01, None)


def _help(parser: cli.Parser, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args([*argv, "--help"])
    assert stopped.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("profile", ["laptop", "paper", "smoke"])
def test_help_shows_the_values_the_chosen_profile_runs_with(profile: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(_torch_parser(), ["--profile", profile], capsys)
    profiles = workloads.WORKLOADS[workloads.DEFAULT].profiles
    train = resolve(TrainConfig, profile, None, profiles=profiles)
    data = resolve(DataConfig, profile, None, profiles=profiles)
    model = resolve(ModelConfig, profile, None, profiles=profiles)
    assert f"({profile} profile: {train.epochs})" in text
    assert f"({profile} profile: {data.n_patches})" in text
    assert f"({profile} profile: {model.base_filters})" in text
    # The profiles differ where it matters: the help is not the dataclass' defaults.
    if profile != "paper":
        assert train.epochs != TrainConfig().epochs


def test_help_follows_the_variant_and_the_workload(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(_torch_parser(), ["--variant", "tuned", "--workload", "digits"], capsys)
    digits = workloads.get("digits")
    epochs = resolve(TrainConfig, "laptop", None, variant="tuned", profiles=digits.profiles).epochs
    assert f"(laptop profile, tuned variant: {epochs})" in text
    assert "Deterministic kernels and seeded shuffling" in text  # the field's own documentation
    assert "(laptop profile, tuned variant: false)" in text  # deterministic, as the tuned variant sets it


def test_help_with_a_variant_the_run_refuses_shows_the_fields_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` still prints (the run itself refuses the variant, naming it)."""
    text = _help(_torch_parser(), ["--variant", "nope"], capsys)
    assert f"(default: {TrainConfig().epochs})" in text and "laptop profile" not in text


@pytest.mark.parametrize(("argv", "verbose"), [([], False), (["--verbose"], True), (["--verbose", "true"], True)])
def test_verbose_alone_or_with_a_value(argv: list[str], verbose: bool) -> None:
    assert bool(_torch_parser().parse_args(argv).verbose) is verbose


def test_verbose_as_mlflow_passes_it_unset() -> None:
    assert not _torch_parser().parse_args(["--verbose", ""]).verbose


def test_field_doc_is_the_first_sentence_of_the_fields_comment() -> None:
    assert (
        cli.field_doc(TrainConfig, "threads")
        == "CPU threads of the framework's kernels; 0 keeps the framework's default (one per core)"
    )
    assert (
        cli.field_doc(DataConfig, "source")
        == '"synthetic" (the built-in corpus generator) or a directory in the raw-corpus format'
    )


def test_every_config_option_of_a_training_has_a_documented_meaning() -> None:
    """No option's help is a bare ``Class.field``: each field of the configs a training exposes has a ``#:``."""
    parser = _torch_parser()
    bare = [
        action.dest
        for action in parser._actions
        if getattr(action, "config_field", None) and action.help and action.help.count(" ") == 0
    ]
    assert not bare, f"fields without a `#:` comment: {bare}"
    assert all(dataclasses.is_dataclass(cls) for cls in (TrainConfig, DataConfig, ModelConfig))
