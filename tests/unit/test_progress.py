"""Progress (thread_bench.progress): a live display on a terminal, plain lines elsewhere, never a display that
outlives its work."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from thread_bench import progress


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120), out


def test_without_a_terminal_a_ticker_prints_plain_lines() -> None:
    stream = io.StringIO()
    with progress.Ticker("held_out", "model windows", 4, every_s=3600, stream=stream) as ticker:
        for _ in range(4):
            ticker.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # the first step, then the end (at most one line per every_s)
    assert lines[-1].startswith("held_out: model windows 4/4 (100%), ")
    assert "\x1b[" not in stream.getvalue()  # no terminal codes in a log


def test_on_a_terminal_a_ticker_draws_a_bar_and_stops_it_however_the_work_ends() -> None:
    console, out = _terminal()
    with pytest.raises(RuntimeError), progress.Ticker("weave_map", "FFT windows", 10, console=console) as ticker:
        ticker.advance(3)
        raise RuntimeError("a window failed")
    assert ticker._bar is None and not console.is_alt_screen
    drawn = out.getvalue()
    assert "weave_map: FFT windows" in drawn and "3/10" in drawn
    assert "\x1b[?25h" in drawn  # the cursor is shown again


def test_a_disabled_ticker_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.Ticker("weave_map", "CNN windows", 2, enabled=False) as ticker:
        ticker.advance(2)
    assert capsys.readouterr().err == ""


def test_the_epoch_line_estimates_from_the_steady_epochs_not_the_first() -> None:
    clock = progress.EpochProgress(5, "torch seed 3", console=None)
    start = clock.epoch_started
    assert clock.describe(start + 4) == "epoch 1/5: 4 s (the first epoch: tracing and warm-up)"
    clock.durations = [30.0, 10.0, 12.0]  # the first carried the warm-up
    clock.epoch_started = start
    # 4 s into epoch 4 of 5, typical epoch 12 s (median of 10 and 12 taken high): 8 s to go + 1 more epoch.
    assert clock.describe(start + 4) == "epoch 4/5: 4 s of about 12 s; at most 20 s left"
    clock.durations.append(11.0)
    clock.durations.append(11.0)
    assert clock.describe(start) == "5 epochs done; saving the best"


def test_without_a_terminal_a_training_draws_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """pytest's stderr is no terminal: the training's own line per epoch is the whole output."""
    with progress.EpochProgress(3, "keras seed 0") as clock:
        clock.epoch_done()
    assert capsys.readouterr().err == ""


def test_on_a_terminal_a_training_shows_its_live_line() -> None:
    console, out = _terminal()
    with progress.EpochProgress(3, "keras seed 0", console=console) as clock:
        clock.epoch_done()
    assert "keras seed 0" in out.getvalue() and "epoch 2/3" in out.getvalue()
