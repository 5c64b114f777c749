"""Progress of long work, on stderr: a live bar on a terminal (rich), plain lines everywhere else.

On a terminal (stderr is a TTY and ``TERM`` is not ``dumb``) :class:`Ticker` and :class:`EpochProgress` draw a
rich progress display that refreshes itself; anything printed meanwhile goes above it. In a log file, a pipe,
CI or a test there is no display: :class:`Ticker` prints a line at most every few seconds
(``<prefix>: <what> done/total (pct), N s elapsed, about M s left``) and a training prints its own line per epoch,
as it always does. Neither looks inside the timed loop: an epoch's progress is its elapsed time against the
epochs before it, so a progress display cannot change what the benchmark measures.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


def duration(seconds: float) -> str:
    """``42 s``, ``7 min`` or ``1.5 h``: as precise as a person reading a progress line needs."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether progress can be drawn live: ``stream`` (default stderr) is a terminal that can redraw a line."""
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM", "") != "dumb"


def _console(console: Console | None) -> Console | None:
    """The console to draw on: the one given, else stderr's when it is a terminal, else none (plain lines)."""
    if console is not None:
        return console
    return Console(stderr=True) if on_terminal() else None


@dataclass
class Ticker:
    """``done/total`` of a long piece of work: a live bar on a terminal, else a line at most every ``every_s``
    seconds (and once at the end), the time left extrapolated from the rate so far. Use it as a context manager
    so that the bar is closed however the work ends."""

    prefix: str
    what: str
    total: int
    every_s: float = 2.0
    #: Where the plain lines go (default: ``sys.stderr`` as it is when a line is printed).
    stream: TextIO | None = None
    #: False: no output at all (a caller that reports otherwise).
    enabled: bool = True
    #: Draw on this console (tests); default: stderr's, when it is a terminal.
    console: Console | None = None
    done: int = 0
    started_at: float = field(default_factory=time.monotonic)
    _last: float = field(default=-math.inf)  # the first step is always said
    _bar: Progress | None = field(default=None, repr=False)

    def __enter__(self) -> Ticker:
        console = _console(self.console) if self.enabled and self.stream is None else None
        if console is not None:
            self._bar = Progress(
                TextColumn(f"{self.prefix}: {self.what}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.completed:,}/{task.total:,}"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=console,
            )
            self._task = self._bar.add_task(self.what, total=self.total)
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def advance(self, count: int = 1) -> None:
        self.done += count
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        now = time.monotonic()
        if self.done >= self.total or now - self._last >= self.every_s:
            self._last = now
            print(self.line(now), file=self.stream or sys.stderr, flush=True)

    def line(self, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self.started_at
        share = self.done / self.total if self.total else 1.0
        parts = [f"{self.what} {self.done:,}/{self.total:,} ({share:.0%})", f"{duration(elapsed)} elapsed"]
        if 0 < self.done < self.total:
            parts.append(f"about {duration(elapsed * (self.total - self.done) / self.done)} left")
        return f"{self.prefix}: " + ", ".join(parts)


class _EpochColumn(ProgressColumn):
    """``epoch 3/15: 12 s of about 37 s; at most 7 min left``, computed when drawn (the display's own refresh)."""

    def render(self, task: Task) -> Text:
        clock: EpochProgress = task.fields["clock"]
        return Text(clock.describe(time.monotonic()))


class EpochProgress:
    """A training's live line on a terminal: the epoch running, its time so far against the typical epoch's, and
    at most how long the training has left (early stopping may end it sooner). Nothing without a terminal: the
    training's own line per epoch is the plain output. Told only of each epoch's end (:meth:`epoch_done`),
    outside the timed regions."""

    def __init__(self, epochs: int, label: str, console: Console | None = None) -> None:
        self.epochs, self.label = epochs, label
        self.durations: list[float] = []
        self.epoch_started = time.monotonic()
        self._console = _console(console)
        self._bar: Progress | None = None

    def __enter__(self) -> EpochProgress:
        if self._console is not None:
            self._bar = Progress(TextColumn(self.label), _EpochColumn(), console=self._console, refresh_per_second=2)
            self._bar.add_task(self.label, total=None, clock=self)
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def epoch_done(self, *_: Any) -> None:
        now = time.monotonic()
        self.durations.append(now - self.epoch_started)
        self.epoch_started = now

    def describe(self, now: float) -> str:
        done = len(self.durations)
        if done >= self.epochs:
            return f"{self.epochs} epochs done; saving the best"
        elapsed = now - self.epoch_started
        text = f"epoch {done + 1}/{self.epochs}: {duration(elapsed)}"
        steady = self.durations[1:] or self.durations  # the first epoch carries tracing and warm-up
        if not steady:
            return f"{text} (the first epoch: tracing and warm-up)"
        typical = sorted(steady)[len(steady) // 2]
        left = max(typical - elapsed, 0.0) + typical * (self.epochs - done - 1)
        return f"{text} of about {duration(typical)}; at most {duration(left)} left"
