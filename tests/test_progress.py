"""Progress bars show in log files too: rich draws nothing live when stderr is a file."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import MofNCompleteColumn, TextColumn

from facegen.progress import progress


def run_bar(console: Console, interval: float, enabled: bool = True) -> str:
    with progress(TextColumn("work"), MofNCompleteColumn(), enabled=enabled, console=console, interval=interval) as bar:
        task = bar.add_task("work", total=3)
        for _ in range(3):
            bar.update(task, advance=1)
    return console.file.getvalue()


def test_a_bar_writing_to_a_file_prints_plain_lines():
    text = run_bar(Console(file=io.StringIO(), width=80), interval=0)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert lines[:3] == ["work 1/3", "work 2/3", "work 3/3"]  # one line per update at interval 0
    assert "\x1b" not in text  # no terminal control codes in the log


def test_lines_are_rate_limited_and_disabled_bars_are_silent():
    assert [line.strip() for line in run_bar(Console(file=io.StringIO()), interval=3600).splitlines() if line.strip()] == ["work 3/3"]
    assert run_bar(Console(file=io.StringIO()), interval=0, enabled=False) == ""


def test_counting_bar_counts_what_it_is_told(capsys):
    from facegen.progress import counting_bar

    with counting_bar("faces", 5) as advance:
        advance(2)
        advance(3)
    err = capsys.readouterr().err
    assert "faces" in err and "5/5" in err and "img/s" in err
