"""Copy the small record of each quoted run into docs/results/, so a number in the docs names
a committed file: its evaluation (eval/metrics.json), its training log (metrics.jsonl) and its
wall time: the last row's `wall_s`, or for runs made before the log kept a clock, the seconds
between the first and the last logged step in the run's own TensorBoard events.

    python scripts/collect_runs.py docs/results/tiny32-compare runs/*-tiny32-seed* runs/ddpm-tiny32-6min runs/ddpm-tiny32
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def wall_time(run: Path) -> dict | None:
    """The run's wall time from its log's clock, else from its TensorBoard events."""
    log = run / "metrics.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    rows = [r for r in rows if "wall_s" in r]
    if rows:
        return {"last_step": rows[-1]["step"], "seconds": round(rows[-1]["wall_s"], 1), "from": "metrics.jsonl wall_s"}
    if not (run / "tensorboard").exists():
        return None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags().get("scalars", [])
    if not tags:
        return None
    rows = events.Scalars(tags[0])
    return {"first_step": rows[0].step, "last_step": rows[-1].step,
            "seconds": round(rows[-1].wall_time - rows[0].wall_time, 1), "from": "tensorboard events"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder under docs/results/; one subfolder per run")
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    for run in args.runs:
        home = args.out / run.name
        home.mkdir(parents=True, exist_ok=True)
        for src, name in ((run / "eval" / "metrics.json", "metrics.json"), (run / "metrics.jsonl", "train-metrics.jsonl")):
            if src.exists():
                shutil.copyfile(src, home / name)
        wall = wall_time(run)
        if wall is not None:
            (home / "wall-time.json").write_text(json.dumps(wall, indent=2) + "\n")
        print(f"{run} -> {home}: {wall}")


if __name__ == "__main__":
    main()
