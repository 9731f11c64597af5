"""Progress of long work: a Rich bar on an interactive terminal, plain rate-bounded lines anywhere else.

    with stage("inference", total=n_batches, unit="batches") as advance:
        for view in views:
            advance.detail(f"[{view.name}]")
            for batch in ...:
                ...
                advance()

Off a terminal (CI logs, ``| tee``, a notebook, ``TERM=dumb``, ``TTY_INTERACTIVE=0``) a stage writes plain
lines to stderr -- no ANSI codes, no carriage returns -- so a log shows what ran and for how long::

    assay: inference started (152 batches)
    assay: inference [gaussian_noise/3] 40/152 batches, 5.0 s elapsed, ETA 14.0 s
    assay: inference done in 12.1 s (152 batches)

a start line, then at most one progress line per ``interval`` (5 s) with the elapsed time and a linear
ETA, then a done line (or "stopped after" when the work raised). A stage opened inside another one says
where it runs (``assay: auditing variants [fp16] > inference started (...)``). On an interactive terminal (Rich's
``Console.is_interactive``: a TTY that is not dumb; ``FORCE_COLOR``/``TTY_INTERACTIVE`` as Rich reads them)
the stage is a Rich progress bar; stages opened inside another one join its display as extra rows and
vanish when they end, so only top-level stages leave their final bar.

The bar has no refresh thread (``auto_refresh=False``): it is redrawn when work advances, at most 10 times a
second, so nothing else runs while the latency harness times a call between two advances.

Whether a stage shows at all: ``stage(enabled=...)``; ``enabled=None`` (the default) follows the innermost
:func:`scope` (off outside any scope), so a command's ``--quiet`` reaches stages deep in code that takes no
``progress`` parameter. Progress goes to stderr; standard output stays for results.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["DEFAULT_INTERVAL_S", "Advance", "format_seconds", "scope", "shown", "stage", "track"]

T = TypeVar("T")

DEFAULT_INTERVAL_S = 5.0
"""Plain mode: at most one progress line per this many seconds (start and done lines come on top)."""
_REDRAW_S = 0.1  # terminal mode: at most 10 redraws a second

_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar("assay_progress_enabled", default=False)


@contextlib.contextmanager
def scope(enabled: bool) -> Iterator[None]:
    """Stages opened inside (with ``enabled=None``) show progress iff ``enabled``."""
    token = _enabled.set(bool(enabled))
    try:
        yield
    finally:
        _enabled.reset(token)


def shown(enabled: bool | None = None) -> bool:
    """Whether a stage opened here with ``enabled`` would show: the explicit value, else the scope's."""
    return _enabled.get() if enabled is None else bool(enabled)


def format_seconds(seconds: float) -> str:
    """``3.1 s``, ``2 min 05 s``, ``1 h 02 min``: short, and never in a unit that hides the size."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


class Advance:
    """What a stage yields: call it to record finished steps; :meth:`detail` says what is running now."""

    def __init__(self, name: str, total: float | None, unit: str, clock: Callable[[], float]) -> None:
        self.name, self.total, self.unit, self.clock = name, total, unit, clock
        self.completed = 0.0
        self.current = ""
        self.started = clock()

    def __call__(self, steps: float = 1) -> None:
        self.completed += steps
        self._changed()

    def detail(self, text: str) -> None:
        """What the stage is on now (``[clean]``, ``[batch 32]``), shown after its name."""
        self.current = text
        self._changed()

    def label(self) -> str:
        return f"{self.name} {self.current}" if self.current else self.name

    def elapsed(self) -> float:
        return self.clock() - self.started

    def eta(self) -> float | None:
        """Linear extrapolation of the time per step so far; None before the first step or without a total."""
        if self.total is None or self.completed <= 0:
            return None
        return self.elapsed() / self.completed * max(self.total - self.completed, 0.0)

    def _changed(self) -> None:  # the display's hook
        pass

    def _finish(self, failed: bool) -> None:
        pass


class _Silent(Advance):
    pass


class _PlainLines(Advance):
    """Plain lines: start, at most one progress line per ``interval`` seconds, done (see the module docstring)."""

    def __init__(self, name: str, total: float | None, unit: str, clock: Callable[[], float], file: IO[str],
                 interval: float, note: str | None) -> None:
        super().__init__(name, total, unit, clock)
        self.file, self.interval = file, interval
        about = ", ".join(x for x in (f"{_count(total)} {unit}" if total is not None else "", note) if x)
        self._write(f"{name} started" + (f" ({about})" if about else ""))
        self.last_line = self.started

    def _write(self, text: str) -> None:
        self.file.write(f"assay: {text}\n")
        self.file.flush()

    def _changed(self) -> None:
        now = self.clock()
        if now - self.last_line < self.interval or (self.total is not None and self.completed >= self.total):
            return  # the done line reports a finished stage
        self.last_line = now
        count = _count(self.completed) + (f"/{_count(self.total)}" if self.total is not None else "")
        eta = self.eta()
        self._write(f"{self.label()} {count} {self.unit}, {format_seconds(now - self.started)} elapsed"
                    + (f", ETA {format_seconds(eta)}" if eta is not None else ""))

    def _finish(self, failed: bool) -> None:
        took = format_seconds(self.elapsed())
        done = f" ({_count(self.completed)} {self.unit})" if self.completed else ""
        self._write(f"{self.name} stopped after {took}{done}" if failed else f"{self.name} done in {took}{done}")


class _Bars:
    """The one Rich display that every stage open on the terminal draws into (Rich allows one live display
    per console); it stops when its outermost stage ends."""

    def __init__(self, console: Console, clock: Callable[[], float]) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, auto_refresh=False, transient=False, get_time=clock)
        self.clock = clock
        self.depth = 0
        self.last_redraw = -math.inf
        self.progress.start()

    def redraw(self, force: bool = False) -> None:
        now = self.clock()
        if force or now - self.last_redraw >= _REDRAW_S:
            self.last_redraw = now
            self.progress.refresh()


class _Bar(Advance):
    def __init__(self, name: str, total: float | None, unit: str, bars: _Bars, note: str | None) -> None:
        super().__init__(name, total, unit, bars.clock)
        self.bars, self.note = bars, note
        self.top = bars.depth == 0
        bars.depth += 1
        self.task: TaskID = bars.progress.add_task(self._description(), total=total, unit=unit)
        bars.redraw(force=True)

    def _description(self) -> str:
        text = self.label() + (f" ({self.note})" if self.note else "")
        return escape(text)

    def _changed(self) -> None:
        self.bars.progress.update(self.task, completed=self.completed, description=self._description())
        self.bars.redraw()

    def _finish(self, failed: bool) -> None:
        self.bars.depth -= 1
        if self.top:  # the stage's own bar stays, named after the stage
            self.current = ""
            suffix = " (stopped)" if failed else ""
            self.bars.progress.update(self.task, description=escape(self.name) + suffix)
            if self.total is None and not failed:  # a full bar, not a pulsing one, for work of unknown size
                steps = max(self.completed, 1.0)
                self.bars.progress.update(self.task, total=steps, completed=steps)
        else:
            self.bars.progress.remove_task(self.task)
        self.bars.redraw(force=True)


_bars: _Bars | None = None
_open_lines: list[_PlainLines] = []  # plain stages open now, innermost last: a nested stage's lines name its parent
_bars_lock = threading.Lock()


@contextlib.contextmanager
def stage(name: str, total: float | None = None, *, unit: str = "steps", enabled: bool | None = None,
          note: str | None = None, console: Console | None = None, clock: Callable[[], float] = time.monotonic,
          interval: float = DEFAULT_INTERVAL_S) -> Iterator[Advance]:
    """Show the progress of one stage of long work (see the module docstring); yields an :class:`Advance`.

    ``total``: steps expected (None: unknown; no ETA). ``unit``: what a step is ("batches", "epochs").
    ``note``: said up front, after the amount ("usually ~10 s", "76 views"). ``enabled``: show it or not
    (None: the enclosing :func:`scope`). ``console``: where it goes (default: stderr); ``clock`` (seconds)
    and ``interval`` (plain mode, seconds between progress lines) are seams for tests.
    """
    global _bars
    if not shown(enabled):
        yield _Silent(name, total, unit, clock)
        return
    with _bars_lock:
        bars = _bars
        if bars is None:
            console = console or Console(stderr=True)
            if console.is_interactive:
                bars = _bars = _Bars(console, clock)
    if bars is not None:
        advance: Advance = _Bar(name, total, unit, bars, note)
    else:
        file = (console or Console(stderr=True)).file
        within = f"{_open_lines[-1].label()} > " if _open_lines else ""  # what the enclosing stage is on
        advance = _PlainLines(within + name, total, unit, clock, file, interval, note)
        _open_lines.append(advance)
    failed = True
    try:
        yield advance
        failed = False
    finally:
        advance._finish(failed)
        if isinstance(advance, _PlainLines):
            _open_lines.remove(advance)
        if bars is not None and bars.depth == 0:
            with _bars_lock:
                bars.progress.stop()
                _bars = None


def track(items: Iterable[T], name: str, *, unit: str = "steps", enabled: bool | None = None,
          label: Callable[[T], str] | None = None, note: str | None = None) -> Iterator[T]:
    """``items`` one by one inside ``stage(name, total=len(items))``: one step each, ``label(item)`` shown as
    the detail while it is worked on. For loops too long to re-indent under a ``with``; the stage ends
    when the loop does (a ``break`` or an exception closes the generator, CPython closes it at once)."""
    items = list(items)
    with stage(name, total=len(items), unit=unit, enabled=enabled, note=note) as advance:
        for item in items:
            if label is not None:
                advance.detail(f"[{label(item)}]")
            yield item
            advance()
