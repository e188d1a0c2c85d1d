"""Resumable training state: RUN/checkpoints/step-XXXXXX/ (STYLE G7).

A checkpoint folder holds
    state.json               step, images seen, data position, world size, fsdp (written last)
    nets/<name>.safetensors  every trained net (unwrapped, un-compiled, full weights under FSDP too)
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
from safetensors.torch import load_file, load_model, save_model

from facegen.distributed import is_sharded, shard_like
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


def save_checkpoint(root: Path, state: dict, nets: dict, ema_states: dict, optimizer_states: dict, lr_states: dict,
                    rng_states: list[dict]) -> Path:
    """Write step-XXXXXX/ under `root` atomically; `state` must hold "step". The nets are modules
    with their full weights; EMA, optimizer and lr schedule come as full state dicts (under FSDP
    only the loop, with every process taking part, can gather them: distributed.full_state)."""
    final = Path(root) / f"step-{state['step']:06d}"
    with atomic_dir(final, overwrite=True) as tmp:
        for folder in ("nets", "ema", "optimizers", "lr", "rng"):
            (tmp / folder).mkdir()
        for name, net in nets.items():
            save_model(net, str(tmp / "nets" / f"{name}.safetensors"))
        for folder, states in (("ema", ema_states), ("optimizers", optimizer_states), ("lr", lr_states)):
            for name, saved in states.items():
                torch.save(saved, tmp / folder / f"{name}.pt")
        for rank, rng in enumerate(rng_states):
            torch.save(rng, tmp / "rng" / f"process{rank}.pt")
        atomic_write_json(tmp / STATE, state)  # last: a folder without it is never used
    return final


def load_checkpoint(folder: Path, nets: dict, emas: dict, optimizers: dict, lr_schedules: dict, rank: int = 0) -> tuple[dict, dict | None]:
    """Load everything in place, every process the full checkpoint; a process whose nets FSDP
    shards keeps its shard of each weight, EMA and optimizer tensor (the same files load with
    or without FSDP, on any number of processes). Return (state, this process's RNG state or
    None if absent)."""
    folder = Path(folder)
    for name, net in nets.items():
        path = folder / "nets" / f"{name}.safetensors"
        if is_sharded(net):
            current = net.state_dict()
            net.load_state_dict({k: shard_like(v, current[k]) for k, v in load_file(path).items()})
        else:
            load_model(net, str(path))
    for name, ema in emas.items():
        like = ema.shadow_params  # sharded as the net's parameters are
        ema.load_state_dict(torch.load(folder / "ema" / f"{name}.pt", weights_only=True))
        ema.shadow_params = [shard_like(s, p) for s, p in zip(ema.shadow_params, like)]
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(torch.load(folder / "optimizers" / f"{name}.pt", weights_only=True))
        for param, moments in optimizer.state.items():  # Adam's moments have the shape of their parameter
            moments.update({k: shard_like(v, param) for k, v in moments.items()})
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
