"""Command-line options generated from the configuration dataclasses.

Each option defaults to ``None`` ("not given"), so that the profile supplies the value; the default itself
lives only in its dataclass (:mod:`thread_bench.config`, or a workload's ``config``). MLflow passes an unset
parameter as an empty string, which also means "not given".
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import inspect
import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from thread_bench import diskspace, lifecycle, quiet, store, tracking
from thread_bench.config import (
    DEFAULT_PROFILE,
    DEFAULT_VARIANT,
    VARIANTS,
    profile_names,
    resolve,
    variant_names,
)
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


def optional(convert: Any) -> Any:
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

#: A workload's profiles for a config class, given what the command line says so far (``--workload``): how
#: ``--help`` shows the values a run will use (:meth:`Parser.format_help`).
ProfilesFor = Callable[[argparse.Namespace, type], Mapping[str, Mapping[str, Mapping[str, Any]]]]


class Parser(argparse.ArgumentParser):
    """Every command line of the suite: argparse without its two surprises.

    - **No prefix matching**, and an unknown option is refused with the closest valid name: ``mlflow run -P
      epoch=2`` reaches the entry point as ``--epoch 2``, which argparse would take as ``--epochs``; here it
      is "unknown option --epoch (did you mean --epochs?)".
    - **``--help`` shows the values the run will use**: an option generated from a config field
      (:func:`add_dataclass_options`) is shown with its value under the ``--profile``, ``--variant`` and
      ``--workload`` on the same command line (``--profile paper --help``), not the dataclass' default.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        #: Set by :func:`add_profile_option`: where a config class' profiles come from.
        self.profiles_for: ProfilesFor | None = None
        self._argv: list[str] = []

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._argv, namespace)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self.refusal(extras))
        return parsed

    def refusal(self, extras: Sequence[str]) -> str:
        """The line that refuses what the parser did not recognise, with the closest valid option."""
        unknown = next((token for token in extras if token.startswith("-")), None)
        if unknown is None:
            return f"unexpected argument(s): {' '.join(extras)} (every value belongs to an --option)"
        name = unknown.split("=", 1)[0]
        known = sorted(option for option in self._option_string_actions if option.startswith("--"))
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
        hint = f"; did you mean {close[0]}?" if close else f"; `{self.prog} --help` lists the options"
        bare = name.lstrip("-")
        return f"unknown option {name} (under `mlflow run`: the parameter -P {bare}=…){hint}"

    def format_help(self) -> str:
        shown = self._shown_values()
        saved = {action: action.help for action in self._actions}
        try:
            for action in self._actions:
                if shown.get(action.dest) and action.help is not None:
                    action.help = f"{action.help} {shown[action.dest]}"
            return super().format_help()
        finally:
            for action, text in saved.items():
                action.help = text

    def _shown_values(self) -> dict[str, str]:
        """Option -> "(<profile> profile: <value>)" for the options generated from config fields, or
        "(default: <value>)" where the command has no profiles."""
        preview = self._preview()
        profile = getattr(preview, "profile", None) or DEFAULT_PROFILE
        variant = getattr(preview, "variant", None) or DEFAULT_VARIANT
        label = f"{profile} profile" + (f", {variant} variant" if variant != DEFAULT_VARIANT else "")
        resolved: dict[type, Any] = {}
        shown = {}
        for action in self._actions:
            field = getattr(action, "config_field", None)
            if field is None:
                continue
            cls, name = field
            if cls not in resolved:
                resolved[cls] = self._resolved(cls, preview, profile, variant)
            if resolved[cls] is None:
                value = next(f.default for f in dataclasses.fields(cls) if f.name == name)
                shown[action.dest] = "" if value == "" else f"(default: {_shown(value)})"
            else:
                shown[action.dest] = f"({label}: {_shown(getattr(resolved[cls], name))})"
        return shown

    def _resolved(self, cls: type, preview: argparse.Namespace, profile: str, variant: str) -> Any:
        """``cls`` under the profile and variant, or ``None`` (no profiles here, or a name the run refuses)."""
        if self.profiles_for is None:
            return None
        try:
            return resolve(cls, profile, None, variant=variant, profiles=self.profiles_for(preview, cls))
        except ValueError:
            return None

    def _preview(self) -> argparse.Namespace:
        """The options on the command line being parsed, help aside (defaults where they do not parse)."""
        preview = argparse.ArgumentParser(prog=self.prog, add_help=False, allow_abbrev=False)
        for option in ("--profile", "--variant", "--workload"):
            if option in self._option_string_actions:
                preview.add_argument(option, default=None)
        known, _ = preview.parse_known_args([token for token in self._argv if token not in ("-h", "--help")])
        return known

    def error(self, message: str) -> NoReturn:
        """One line and exit status 2, without argparse's screen of usage (``--help`` has it)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value == "":
        return "''"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def add_profile_option(parser: argparse.ArgumentParser, profiles_for: ProfilesFor | None = None) -> None:
    """``--profile``; with ``profiles_for`` (and a :class:`Parser`), ``--help`` shows each config option's value
    under the profile given on the command line."""
    if profiles_for is not None and isinstance(parser, Parser):
        parser.profiles_for = profiles_for
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
        helps: field -> what it means (default: the field's ``#:`` comment, :func:`field_doc`, else
            ``<Class>.<field>``); ``--help`` appends the value.
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
        action = parser.add_argument(
            f"--{dest}",
            dest=dest,
            type=optional(_CONVERTERS[type_name]),
            default=None,
            # The value follows in --help: the profile's (Parser.format_help), else the field's default.
            help=(helps or {}).get(field.name) or field_doc(cls, field.name) or f"{cls.__name__}.{field.name}",
        )
        action.config_field = (cls, field.name)  # type: ignore[attr-defined]
        added.append(dest)
    return added


def field_doc(cls: type, name: str) -> str:
    """The first sentence of the ``#:`` comment above field ``name`` of ``cls`` (its documentation in the
    source, where Sphinx also finds it), without reST markup; ``""`` when it has none."""
    text = _field_docs(cls).get(name, "")
    first = re.split(r"(?<=[a-z)\]`]\.)\s+", text, maxsplit=1)[0]
    return first.replace("``", "").removesuffix(".")


@functools.cache
def _field_docs(cls: type) -> dict[str, str]:
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # built in an interpreter session: no source
        return {}
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        declared = re.match(r"(\w+)\s*:", stripped)
        if declared and pending:
            docs[declared.group(1)] = " ".join(pending)
        pending = []
    return docs


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
    """``--verbose`` alone, or with a value (``--verbose true``, ``--verbose ''``): MLflow passes one."""
    parser.add_argument(
        "--verbose",
        nargs="?",
        const=True,
        default=False,
        type=optional(parse_bool),
        help="debug logging, and the frameworks' own notices (default: false)",
    )


def given(namespace: argparse.Namespace, cls: type, *, prefix: str = "") -> dict[str, Any]:
    """The options of ``namespace`` that belong to ``cls`` and were given (not ``None``, not MLflow's ``''``)."""
    return {name: value for name, value in pick(namespace, cls, prefix=prefix).items() if value not in (None, "")}


def pick(namespace: argparse.Namespace, cls: type, *, prefix: str = "") -> dict[str, Any]:
    """The options of ``namespace`` that belong to ``cls`` (``None`` = not given), without the prefix."""
    values = vars(namespace)
    return {f.name: values[f"{prefix}{f.name}"] for f in dataclasses.fields(cls) if f"{prefix}{f.name}" in values}


def configure_logging(verbose: bool = False) -> None:
    """INFO lines of the suite's own (DEBUG with ``verbose``); the libraries' notices only with ``verbose``
    (:mod:`thread_bench.quiet`)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    quiet.quiet_loggers(bool(verbose))


#: The exceptions an entry point reports as one line (bad input, a missing file), never as a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, argparse.ArgumentTypeError)


def guarded(parser: argparse.ArgumentParser, work: Callable[[], T], *, interrupted: str = "") -> tuple[int, T | None]:
    """Run an entry point's ``work`` the way every entry point does: SIGTERM handled like Ctrl-C (the runs end
    KILLED; under ``mlflow run``, also when its launcher is stopped:
    :func:`lifecycle.die_with_parent_from_environment`), bad input reported as one line with exit status 2
    (:data:`USER_ERRORS`, through :func:`fail`), an interruption as one line. Returns (0, what ``work``
    returned), or (the interruption's exit status, None).

    Args:
        interrupted: appended to the interruption's line (what to do next).
    """
    with lifecycle.stop_on_signals():
        lifecycle.die_with_parent_from_environment()
        try:
            return 0, work()
        except USER_ERRORS as error:
            fail(parser, error)
            raise  # fail exits; for the type checker
        except KeyboardInterrupt as interrupt:
            print(f"{parser.prog}: interrupted ({lifecycle.describe_stop(interrupt)}){interrupted}", file=sys.stderr)
            if tracking.UNENDED:
                print(f"{parser.prog}: {tracking.ending_note()}", file=sys.stderr)
            return lifecycle.exit_status(interrupt), None
        except Exception as error:
            if not report_fault(parser, error):
                raise
            return 1, None


def report_fault(parser: argparse.ArgumentParser, error: BaseException) -> bool:
    """Print one line when ``error`` is a fault of the machines, not of the code: the tracking server stopped
    answering (:func:`store.unreachable`), the machines running the work are gone (``lifecycle.WorkLost``) or a
    disk is full (:func:`diskspace.disk_full`), with what became of the runs; False (nothing printed) for any
    other error."""
    line = store.unreachable(error)
    if line is None and isinstance(error, lifecycle.WorkLost):
        line = f"error: {error}"
    if line is None:
        full = diskspace.disk_full(error) if isinstance(error, Exception) else None
        line = f"error: {full}" if full is not None else None
    if line is None:
        return False
    note = f"; {tracking.ending_note()}" if tracking.STARTED else ""  # nothing to say of runs never started
    print(f"{parser.prog}: {line}{note}", file=sys.stderr)
    return True


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
