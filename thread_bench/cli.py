"""Command-line options generated from the configuration dataclasses.

Each option defaults to ``None`` ("not given"), so that the profile supplies the value; the default itself
lives only in its dataclass (:mod:`thread_bench.config`, or a workload's ``config``). MLflow passes an unset
parameter as an empty string, which also means "not given".
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from thread_bench import lifecycle, tracking
from thread_bench.config import DEFAULT_PROFILE, DEFAULT_VARIANT, VARIANTS, profile_names, variant_names
from thread_bench.tracking import DEFAULT_EXPERIMENT

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def _optional(convert: Any) -> Any:
    """Wrap a converter so that an empty string (MLflow's unset parameter) means "not given"."""

    def parse(text: str) -> Any:
        if text.strip() == "":
            return None
        try:
            return convert(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"expected {convert.__name__}, got {text!r}") from error

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


_CONVERTERS: dict[str, Any] = {"int": int, "float": float, "str": str, "bool": parse_bool}


def add_profile_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        choices=profile_names(),
        help=f"named set of defaults (default: {DEFAULT_PROFILE})",
    )


def add_variant_option(parser: argparse.ArgumentParser) -> None:
    described = []
    for name in variant_names():
        knobs = [f"{key}={value}" for overrides in VARIANTS[name].values() for key, value in overrides.items()]
        described.append(f"{name} ({', '.join(knobs) or 'the protocol as written'})")
    parser.add_argument(
        "--variant",
        default=DEFAULT_VARIANT,
        help=f"named set of knobs applied on top of the profile: {'; '.join(described)} (default: {DEFAULT_VARIANT})",
    )


def add_dataclass_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    prefix: str = "",
    helps: Mapping[str, str] | None = None,
) -> list[str]:
    """Add ``--<prefix><field>`` for each field of ``cls``; returns the destination names added. A field whose
    option the parser has already (the same name in two workloads' configs) is left to the first.

    Args:
        helps: field -> what it means, for options whose default is the field's own (not the profile's).
    """
    wanted = set(include) if include is not None else None
    skipped = set(exclude)
    added = []
    for field in dataclasses.fields(cls):
        if (wanted is not None and field.name not in wanted) or field.name in skipped:
            continue
        type_name = field.type if isinstance(field.type, str) else field.type.__name__
        if type_name not in _CONVERTERS:
            raise TypeError(f"{cls.__name__}.{field.name}: unsupported option type {type_name}")
        dest = f"{prefix}{field.name}"
        if f"--{dest}" in parser._option_string_actions:
            continue
        described = (helps or {}).get(field.name)
        parser.add_argument(
            f"--{dest}",
            dest=dest,
            type=_optional(_CONVERTERS[type_name]),
            default=None,
            help=_described(described, field.default)
            if described
            else f"{cls.__name__}.{field.name} ({type_name}; default from the profile: {field.default!r})",
        )
        added.append(dest)
    return added


def _described(meaning: str, default: Any) -> str:
    """Help text with the default appended, unless the meaning says what an empty default stands for."""
    if default == "":
        return meaning
    return f"{meaning} (default: {str(default).lower() if isinstance(default, bool) else default})"


def add_data_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
) -> None:
    """The data config options (``cls``: a workload's) of a command that also trains: ``seed`` is
    ``--data_seed`` there (the training's own seed is ``--seed``); see :func:`pick_data`."""
    wanted, skipped = (set(include) if include is not None else None), set(exclude)
    names = [f.name for f in dataclasses.fields(cls) if (wanted is None or f.name in wanted)]
    for name in (name for name in names if name not in skipped):
        prefix = tracking.data_param(name).removesuffix(name)  # "data_" for the seed
        add_dataclass_options(parser, cls, include=(name,), prefix=prefix)


def data_options(cls: type) -> dict[str, str]:
    """The data config's fields -> their option (destination) names in a command that also trains."""
    return {f.name: tracking.data_param(f.name) for f in dataclasses.fields(cls)}


def pick_data(namespace: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The values of ``cls``'s options :func:`add_data_options` added (``None`` = not given)."""
    values = vars(namespace)
    return {name: values[option] for name, option in data_options(cls).items() if option in values}


def add_experiment_option(parser: argparse.ArgumentParser, default: str = DEFAULT_EXPERIMENT) -> None:
    parser.add_argument(
        "--experiment",
        default=None,
        help=f"MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else {default})",
    )


def add_data_root_option(parser: argparse.ArgumentParser, name: str = "--data_root") -> None:
    parser.add_argument(name, default=None, help="data root (default: $THREAD_BENCH_DATA or ./data)")


def add_verbose_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def given(namespace: argparse.Namespace, cls: type, *, prefix: str = "") -> dict[str, Any]:
    """The options of ``namespace`` that belong to ``cls`` and were given (not ``None``, not MLflow's ``''``)."""
    return {name: value for name, value in pick(namespace, cls, prefix=prefix).items() if value not in (None, "")}


def pick(namespace: argparse.Namespace, cls: type, *, prefix: str = "") -> dict[str, Any]:
    """The options of ``namespace`` that belong to ``cls`` (``None`` = not given), without the prefix."""
    values = vars(namespace)
    return {f.name: values[f"{prefix}{f.name}"] for f in dataclasses.fields(cls) if f"{prefix}{f.name}" in values}


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


#: The exceptions an entry point reports as one line (bad input, a missing file), never as a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, argparse.ArgumentTypeError)


def guarded(parser: argparse.ArgumentParser, work: Callable[[], T], *, interrupted: str = "") -> tuple[int, T | None]:
    """Run an entry point's ``work`` the way every entry point does: SIGTERM handled like Ctrl-C (the runs end
    KILLED), bad input reported as one line with exit status 2 (:data:`USER_ERRORS`, through :func:`fail`), an
    interruption as one line. Returns (0, what ``work`` returned), or (the interruption's exit status, None).

    Args:
        interrupted: appended to the interruption's line (what to do next).
    """
    with lifecycle.stop_on_signals():
        try:
            return 0, work()
        except USER_ERRORS as error:
            fail(parser, error)
            raise  # fail exits; for the type checker
        except KeyboardInterrupt as interrupt:
            print(f"{parser.prog}: interrupted ({lifecycle.describe_stop(interrupt)}){interrupted}", file=sys.stderr)
            return lifecycle.exit_status(interrupt), None


def fail(parser: argparse.ArgumentParser, error: Exception) -> None:
    """Report a user error as one clear line and exit with status 2 (no traceback)."""
    parser.exit(2, f"{parser.prog}: error: {error}\n")


def start(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """An entry point's first step: parse ``argv`` (exit 2 with argparse's line on a malformed option) and set
    up logging (``--verbose``)."""
    args = parse(parser, argv)
    configure_logging(args.verbose)
    return args


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    return parser.parse_args(list(argv) if argv is not None else None)
