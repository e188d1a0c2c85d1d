"""One rich progress bar for the slow parts of an evaluation (features, face checks)."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator


@contextlib.contextmanager
def progress_bar(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yields advance(n): a bar with count, images/s, elapsed time and ETA on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from facegen.progress import progress

    columns = [TextColumn(f"{label:<22}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with progress(*columns, enabled=enabled) as bar:
        task = bar.add_task(label, total=total, rate="")
        started, done = time.perf_counter(), 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            bar.update(task, advance=n, rate=f"{done / max(time.perf_counter() - started, 1e-9):,.1f} img/s")

        yield advance
