"""Pilot several training recipes at equal wall time: one `facegen train` per candidate, each with
the same `time_limit`, side by side on one GPU (--parallel) or one after another (a CPU).

    python scripts/pilot.py docs/results/gan-pilots/candidates.yaml --data stores/faces64 \\
        --out runs/pilots --minutes 20                        # CPU: one after another
    python scripts/pilot.py CANDIDATES --data STORE --out runs/pilots --minutes 8 --parallel --smoke 3

CANDIDATES is YAML: `name: {preset: NAME, overrides: [key=value, ...]}` per candidate. Every
candidate gets `--set` overrides too (logging, grids). --smoke N first trains every candidate N
steps and stops at the first failure, before the clock of the real pilots starts. Each run's
log is OUT/NAME.log; OUT/pilots.json records exit codes, steps, images seen and img/s.
Evaluate the runs afterwards with the same `facegen eval` command each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml


def command(preset: str, data: Path, out: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "facegen.cli", "train", preset, "--data", str(data), "--out", str(out), *overrides]


def launch(candidates: dict, data: Path, out: Path, extra: list[str], parallel: bool, prefix: str = "") -> dict[str, int]:
    """Start every candidate (all at once, or each after the last ends); their exit codes."""
    running, codes = {}, {}
    for name, c in candidates.items():
        log = open(out / f"{prefix}{name}.log", "w")
        args = command(c["preset"], data, out / f"{prefix}{name}", [*c.get("overrides", []), *extra])
        log.write(" ".join(args) + "\n")
        log.flush()
        running[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        if not parallel:
            codes[name] = running.pop(name).wait()
    for name, process in running.items():
        codes[name] = process.wait()
    return codes


def last_row(run: Path) -> dict:
    """The last training row of the run's log (eval_every rows carry no kimg)."""
    path = run / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    rows = [row for row in rows if "kimg" in row]
    return rows[-1] if rows else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, required=True, help="training minutes per candidate (time_limit)")
    parser.add_argument("--parallel", action="store_true", help="all candidates at once (one GPU has room for several small nets)")
    parser.add_argument("--smoke", type=int, default=0, help="first train each candidate this many steps; stop at a failure")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every candidate")
    args = parser.parse_args()

    candidates = yaml.safe_load(args.candidates.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        smoke = [*args.set, f"steps={args.smoke}", f"sample_every={args.smoke}", f"checkpoint_every={args.smoke}", "log_every=1"]
        codes = launch(candidates, args.data, args.out, smoke, args.parallel, prefix="smoke-")
        failed = [n for n, code in codes.items() if code]
        if failed:
            for name in failed:
                print(f"--- smoke-{name}.log", file=sys.stderr)
                print((args.out / f"smoke-{name}.log").read_text()[-3000:], file=sys.stderr)
            sys.exit(f"smoke test failed for {', '.join(failed)}")
        print(f"smoke test passed ({args.smoke} steps each)", flush=True)

    started = time.time()
    codes = launch(candidates, args.data, args.out, [*args.set, f"time_limit={args.minutes}"], args.parallel)
    summary = {"minutes_each": args.minutes, "parallel": args.parallel, "wall_s": round(time.time() - started, 1), "runs": {}}
    for name, code in codes.items():
        row = last_row(args.out / name)
        summary["runs"][name] = {"exit_code": code, **{k: row.get(k) for k in ("step", "kimg", "img_per_s")},
                                 "candidate": candidates[name]}
        print(f"{name}: exit {code}, step {row.get('step')}, kimg {row.get('kimg')}, img/s {row.get('img_per_s')}", flush=True)
    (args.out / "pilots.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
