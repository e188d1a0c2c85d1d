"""Copy the small record of each quoted run into docs/results/, so a number in the docs names
a committed file: its evaluation (eval/metrics.json), its training log (metrics.jsonl) and its
wall time (first and last logged step and the seconds between them, from the run's own
TensorBoard events: the training log rows carry no clock).

    python scripts/collect_runs.py docs/results/tiny32-compare runs/*-tiny32-seed* runs/ddpm-tiny32
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def wall_time(run: Path) -> dict | None:
    """Seconds between the first and the last logged step, from the TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags().get("scalars", [])
    if not tags:
        return None
    rows = events.Scalars(tags[0])
    return {"first_step": rows[0].step, "last_step": rows[-1].step,
            "seconds": round(rows[-1].wall_time - rows[0].wall_time, 1)}


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
        wall = wall_time(run) if (run / "tensorboard").exists() else None
        if wall is not None:
            (home / "wall-time.json").write_text(json.dumps(wall, indent=2) + "\n")
        print(f"{run} -> {home}: {wall}")


if __name__ == "__main__":
    main()
