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

pack_checkpoint / unpack_checkpoint move a checkpoint through a channel that limits file
sizes (a lent GPU machine's 16 MiB per file, an upload form): a tar cut into parts, with the
digest of the whole, optionally without the optimizer state, the largest part. A checkpoint
without optimizers/ resumes with fresh optimizer moments (said on resume).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_model

from facegen.distributed import is_sharded, shard_like
from facegen.utils import FacegenError, atomic_dir, atomic_write_json

STATE = "state.json"
PACK_MANIFEST = "checkpoint-pack.json"


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
    fresh = []
    for name, optimizer in optimizers.items():
        path = folder / "optimizers" / f"{name}.pt"
        if not path.is_file():  # packed without it (pack_checkpoint): the moments start again from zero
            fresh.append(name)
            continue
        optimizer.load_state_dict(torch.load(path, weights_only=True))
        for param, moments in optimizer.state.items():  # Adam's moments have the shape of their parameter
            moments.update({k: shard_like(v, param) for k, v in moments.items()})
    for name, schedule in lr_schedules.items():
        schedule.load_state_dict(torch.load(folder / "lr" / f"{name}.pt", weights_only=True))
    rng_file = folder / "rng" / f"process{rank}.pt"
    rng = torch.load(rng_file, weights_only=False) if rng_file.is_file() else None
    return {**read_state(folder), "fresh_optimizers": fresh}, rng


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


def pack_checkpoint(folder: Path, out: Path, part_mib: float = 16, optimizers: bool = False, half: bool = False) -> list[Path]:
    """Write checkpoint `folder` to `out` as NAME.tar.partNN files of at most part_mib MiB each
    and a manifest (PACK_MANIFEST: parts, sizes, sha256 of the whole tar); return the parts.

    optimizers=False leaves optimizers/ out: with Adam it is twice the weights it trains, and the
    moments it holds are short-lived (the GAN presets' beta2 = 0.9 averages about 10 steps), so a
    resume from the pack costs a few steps of re-estimation, not the run. half=True stores the
    float32 weights of nets/ and ema/ as float16 (half the bytes: what a repository can hold;
    unpack turns them back into float32, within float16's rounding, 2^-11 relative). Everything
    else (lr schedule, RNG, state) travels bit for bit."""
    folder, out = Path(folder), Path(out)
    if not (folder / STATE).is_file():
        raise FacegenError(f"{folder}: not a complete checkpoint ({STATE} missing); pass RUN/checkpoints/step-XXXXXX")
    part_bytes = int(part_mib * 2**20)
    if part_bytes < 1:
        raise FacegenError(f"part size {part_mib} MiB: pass a positive size")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if not path.is_file() or (not optimizers and relative.parts[0] == "optimizers"):
                continue
            if half and relative.parts[0] in ("nets", "ema"):
                data = _recast(path, torch.float32, torch.float16)
                info = tarfile.TarInfo(str(relative))
                info.size, info.mtime = len(data), int(path.stat().st_mtime)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.add(path, arcname=str(relative), recursive=False)
    data = buffer.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for index, start in enumerate(range(0, len(data), part_bytes)):
        part = out / f"{folder.name}.tar.part{index:02d}"
        part.write_bytes(data[start : start + part_bytes])
        parts.append(part)
    manifest = {"checkpoint": folder.name, "step": read_state(folder)["step"], "optimizers": optimizers, "half": half,
                "parts": [p.name for p in parts], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_json(out / PACK_MANIFEST, manifest)  # last: parts without a manifest are never unpacked
    return parts


def unpack_checkpoint(pack: Path, root: Path) -> Path:
    """Rebuild the checkpoint packed in folder `pack` (pack_checkpoint) under `root` (a run's
    checkpoints/ folder), atomically, after checking every part and the digest; return it."""
    pack, root = Path(pack), Path(root)
    manifest_file = pack / PACK_MANIFEST
    if not manifest_file.is_file():
        raise FacegenError(f"{pack}: no {PACK_MANIFEST}; pass the folder pack_checkpoint wrote (all of it)")
    manifest = json.loads(manifest_file.read_text())
    missing = [name for name in manifest["parts"] if not (pack / name).is_file()]
    if missing:
        raise FacegenError(f"{pack}: parts missing ({', '.join(missing)}); copy every part the manifest names")
    data = b"".join((pack / name).read_bytes() for name in manifest["parts"])
    if len(data) != manifest["bytes"] or hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise FacegenError(f"{pack}: the parts do not add up to the packed checkpoint (size or sha256 differs); copy them again")
    final = root / manifest["checkpoint"]
    with atomic_dir(final) as tmp:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            # "data": no links out, no absolute paths (the filter exists from Python 3.10.12 / 3.11.4)
            tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        if manifest.get("half"):  # the weights back in float32: training (and the EMA) continue in full precision
            for path in [*Path(tmp).glob("nets/*"), *Path(tmp).glob("ema/*")]:
                path.write_bytes(_recast(path, torch.float16, torch.float32))
    return final


def _recast(path: Path, source: torch.dtype, target: torch.dtype) -> bytes:
    """The bytes of a safetensors file or a torch-saved EMA state with its `source` tensors cast to `target`."""
    cast = lambda t: t.to(target) if isinstance(t, torch.Tensor) and t.dtype == source else t  # noqa: E731
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file, save

        return save({k: cast(v).contiguous() for k, v in load_file(path).items()})
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: [cast(t) for t in v] if isinstance(v, list) else cast(v) for k, v in state.items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
