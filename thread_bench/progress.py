"""Progress lines for long commands: how far, how long so far, and about how long is left."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


def duration(seconds: float) -> str:
    """``42 s``, ``7 min`` or ``1.5 h``: as precise as a person reading a progress line needs."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class Ticker:
    """Prints ``<prefix>: <what> done/total (pct), N s elapsed, about M s left`` at most every ``every_s`` seconds
    (and once at the end), the time left extrapolated from the rate so far."""

    prefix: str
    what: str
    total: int
    every_s: float = 2.0
    #: Where the lines go (default: ``sys.stderr`` as it is when a line is printed).
    stream: TextIO | None = None
    done: int = 0
    started_at: float = field(default_factory=time.monotonic)
    _last: float = field(default=-1.0)

    def advance(self, count: int = 1) -> None:
        self.done += count
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
