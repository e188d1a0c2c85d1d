"""Resumable training state: RUN/checkpoints/step-XXXXXX/ (STYLE G7).

A checkpoint folder holds
    state.json               step, images seen, data position, world size (written last)
    nets/<name>.safetensors  every trained net (unwrapped, un-compiled)
    ema/<name>.pt            EMA state (shadow weights, decay warm-up step)
    optimizers/<phase>.pt    optimizer state per phase
    lr/<phase>.pt            lr schedule state per phase
    rng/process<r>.pt        python, numpy, torch (and CUDA) RNG states of process r
It is written under a temporary name and renamed when complete (utils.atomic_dir), so a
killed save leaves the previous checkpoints as they were. The step is read from state.json,
never from the folder name.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from facegen.utils import atomic_dir, atomic_write_json

STATE = "state.json"


def rng_state() -> dict:
    """This process's RNG states, as plain tensors/lists (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(root: Path, state: dict, nets: dict, emas: dict, optimizers: dict, lr_schedules: dict, rng_states: list[dict]) -> Path:
    """Write step-XXXXXX/ under `root` atomically; `state` must hold "step"."""
    final = Path(root) / f"step-{state['step']:06d}"
    with atomic_dir(final, overwrite=True) as tmp:
        for folder in ("nets", "ema", "optimizers", "lr", "rng"):
            (tmp / folder).mkdir()
        for name, net in nets.items():
            save_model(net, str(tmp / "nets" / f"{name}.safetensors"))
        for name, ema in emas.items():
            torch.save(ema.state_dict(), tmp / "ema" / f"{name}.pt")
        for name, optimizer in optimizers.items():
            torch.save(optimizer.state_dict(), tmp / "optimizers" / f"{name}.pt")
        for name, schedule in lr_schedules.items():
            torch.save(schedule.state_dict(), tmp / "lr" / f"{name}.pt")
        for rank, rng in enumerate(rng_states):
            torch.save(rng, tmp / "rng" / f"process{rank}.pt")
        atomic_write_json(tmp / STATE, state)  # last: a folder without it is never used
    return final


def load_checkpoint(folder: Path, nets: dict, emas: dict, optimizers: dict, lr_schedules: dict, rank: int = 0) -> tuple[dict, dict | None]:
    """Load everything in place; return (state, this process's RNG state or None if absent)."""
    folder = Path(folder)
    for name, net in nets.items():
        load_model(net, str(folder / "nets" / f"{name}.safetensors"))
    for name, ema in emas.items():
        ema.load_state_dict(torch.load(folder / "ema" / f"{name}.pt", weights_only=True))
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(torch.load(folder / "optimizers" / f"{name}.pt", weights_only=True))
    for name, schedule in lr_schedules.items():
        schedule.load_state_dict(torch.load(folder / "lr" / f"{name}.pt", weights_only=True))
    rng_file = folder / "rng" / f"process{rank}.pt"
    rng = torch.load(rng_file, weights_only=False) if rng_file.is_file() else None
    return read_state(folder), rng


def read_state(folder: Path) -> dict:
    return json.loads((Path(folder) / STATE).read_text())


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` as (step, folder), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(read_state(d)["step"], d) for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and (d / STATE).is_file()]
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def rotate_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints (by stored step); return what was deleted."""
    found = list_checkpoints(root)
    doomed = [folder for _, folder in found[: max(0, len(found) - keep)]]
    for folder in doomed:
        shutil.rmtree(folder)
    return doomed
