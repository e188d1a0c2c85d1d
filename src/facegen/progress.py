"""Progress bars on stderr that also show in log files.

In a terminal rich redraws one live bar. Written to a file (nohup, CI, a job scheduler)
rich draws nothing until the bar closes, so a day-long run would log nothing; there the
bar is printed as a plain line every `LOG_INTERVAL_S` seconds instead. `counting_bar` is
the bar of every job that counts pictures (preparing, caching latents, features, face checks).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import Progress, ProgressColumn, TaskID

LOG_INTERVAL_S = 30.0


class _LoggedProgress(Progress):
    """A Progress that prints its current line at most every `interval` seconds."""

    def __init__(self, *columns: ProgressColumn | str, interval: float, **kwargs):
        super().__init__(*columns, **kwargs)
        self._interval, self._last_line = interval, time.monotonic()

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        if time.monotonic() - self._last_line >= self._interval:
            self._last_line = time.monotonic()
            self.console.print(self.make_tasks_table(self.tasks))


def progress(*columns: ProgressColumn | str, enabled: bool = True, console: Console | None = None,
             interval: float | None = None) -> Progress:
    """A rich Progress on stderr: live in a terminal, a line per `interval` seconds in a file."""
    if console is None:
        console = Console(stderr=True)
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console = Console(stderr=True, width=160)  # rich's 80 for a file would wrap the loss columns
    if console.is_terminal or not enabled:
        return Progress(*columns, console=console, disable=not enabled)
    return _LoggedProgress(*columns, console=console, interval=LOG_INTERVAL_S if interval is None else interval)


@contextlib.contextmanager
def counting_bar(label: str, total: int, enabled: bool = True, done: int = 0) -> Iterator[Callable[[int], None]]:
    """Yields advance(n): a bar with count, images/s, elapsed time and ETA on stderr.

    `done`: already counted (a resumed job): the bar starts there, the rate counts only new work."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn(f"{label:<22}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with progress(*columns, enabled=enabled) as bar:
        task = bar.add_task(label, total=total, completed=done, rate="")
        started, new = time.perf_counter(), 0

        def advance(n: int) -> None:
            nonlocal new
            new += n
            bar.update(task, advance=n, rate=f"{new / max(time.perf_counter() - started, 1e-9):,.1f} img/s")

        yield advance
