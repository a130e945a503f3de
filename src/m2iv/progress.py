"""Progress lines that a terminal redraws and a log file reads: one line per job, with an estimate of the time left.

    bar = Progress("eval", [("queries", 100)])             # one phase
    job = Progress("train", [("teacher", 448), ("steps", 200)], hint={"steps": ("teacher", 24.0)})
    job.update("teacher", 4); job.skip("teacher", 64)      # 64 items came from the cache: no time spent

To a terminal the line is redrawn in place (at most 5 times a second). To a file or a pipe it is printed as a
plain line (no carriage return) at most every `M2IV_PROGRESS_SECONDS` seconds (default 30) and when a phase ends,
so a log file holds a readable history. The time left is each phase's remaining units times its measured seconds
per unit; a phase not yet started is estimated from another's rate times a hint (a training step costs about as
much as `batch x 3` teacher items) until it has measured its own.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import TextIO


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@dataclass
class _Phase:
    name: str
    total: int
    done: int = 0
    worked: int = 0  # units done by work (not skipped), over `busy` seconds
    busy: float = 0.0
    last: float | None = None  # time of the last update, None before the phase starts

    def rate(self) -> float | None:
        return self.busy / self.worked if self.worked else None


class Progress:
    def __init__(self, desc: str, phases: list[tuple[str, int]], initial: dict[str, int] | None = None,
                 hint: dict[str, tuple[str, float]] | None = None, disable: bool = False,
                 stream: TextIO | None = None) -> None:
        self.desc = desc
        self.phases = {name: _Phase(name, int(total)) for name, total in phases}
        for name, n in (initial or {}).items():
            self.phases[name].done = n
        self.hint = dict(hint or {})
        self.stream = stream or sys.stderr
        self.disable = disable
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.2 if self.tty else float(os.environ.get("M2IV_PROGRESS_SECONDS", "30"))
        self.t0 = time.monotonic()
        self.shown = 0.0
        self.postfix = ""
        self.drawn = False
        self.last_state: tuple | None = None

    # -- counting ---------------------------------------------------------------------------------------------
    def start(self, name: str) -> None:
        """The phase begins now (its first unit's time counts from here)."""
        self.phases[name].last = time.monotonic()
        self._show(force=True)

    def update(self, name: str, n: int = 1) -> None:
        """`n` units of phase `name` done by work since the last update."""
        p, now = self.phases[name], time.monotonic()
        if p.last is not None:
            p.busy += now - p.last
            p.worked += n
        p.last, p.done = now, p.done + n
        self._show(force=p.done >= p.total)

    def skip(self, name: str, n: int) -> None:
        """`n` units of phase `name` that needed no work (cached): progress without a rate."""
        p = self.phases[name]
        p.done += n
        p.last = time.monotonic()
        self._show(force=p.done >= p.total)

    def set_postfix(self, **values: object) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    # -- the estimate -----------------------------------------------------------------------------------------
    def _rate(self, p: _Phase) -> float | None:
        own = p.rate()
        if own is not None:
            return own
        if p.name in self.hint:
            other, factor = self.hint[p.name]
            base = self.phases[other].rate() if other in self.phases else None
            return None if base is None else base * factor
        return None

    def remaining(self) -> float | None:
        """Seconds left for the whole job, or None while some phase with work left has no rate yet."""
        total = 0.0
        for p in self.phases.values():
            left = max(0, p.total - p.done)
            if not left:
                continue
            rate = self._rate(p)
            if rate is None:
                return None
            total += left * rate
        return total

    def line(self) -> str:
        parts = [f"{p.name} {p.done}/{p.total}" for p in self.phases.values()]
        left = self.remaining()
        eta = "done" if left == 0 else "~?" if left is None else f"~{_clock(left)} left"
        tail = f" | {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {' | '.join(parts)} | {_clock(time.monotonic() - self.t0)} elapsed, {eta}{tail}"

    # -- output -----------------------------------------------------------------------------------------------
    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.disable or (not force and now - self.shown < self.interval):
            return
        state = (tuple(p.done for p in self.phases.values()), self.postfix)
        if not self.tty and state == self.last_state:  # a log file gets no repeated line
            return
        self.shown, self.last_state = now, state
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.drawn = True
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def write(self, message: str) -> None:
        """A message on a line of its own (the bar, on a terminal, is redrawn below it)."""
        if self.tty and self.drawn:
            self.stream.write("\r\x1b[K")
        print(message, file=self.stream, flush=True)
        if self.tty and self.drawn and not self.disable:
            self._show(force=True)

    def close(self) -> None:
        if not self.disable:
            self._show(force=True)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
        self.disable = True


class Bar:
    """A one-phase `Progress` with tqdm's three calls (`update`, `set_postfix`, `close`)."""

    def __init__(self, total: int, desc: str, initial: int = 0, disable: bool = False, unit: str = "done") -> None:
        self.unit = unit
        self.progress = Progress(desc, [(unit, total)], initial={unit: initial}, disable=disable)
        self.progress.start(unit)

    def update(self, n: int = 1) -> None:
        self.progress.update(self.unit, n)

    def skip(self, n: int) -> None:
        self.progress.skip(self.unit, n)

    def set_postfix(self, **values: object) -> None:
        self.progress.set_postfix(**values)

    def write(self, message: str) -> None:
        self.progress.write(message)

    def close(self) -> None:
        self.progress.close()
