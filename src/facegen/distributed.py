"""Several processes (GPUs, machines) under one launcher: who am I, split the work, gather it.

    accelerate launch --multi_gpu --num_processes 8 -m facegen.cli sample runs/x --n 50000 --out faces
    accelerate launch --multi_gpu --num_processes 8 -m facegen.cli eval runs/x --ref stores/celeba64 --n 50000

With one process (no launcher) every function here is a no-op that imports nothing, so
`facegen sample` and `facegen eval` behave exactly as before. Under a launcher each process
takes its share (batches r, r+W, ... of the seeds; a contiguous block of pictures for features), the
results are gathered, and only the main process writes shared files.

On a machine without CUDA a launch with several processes runs on the CPU with the gloo
backend (`use_cpu`): accelerate would otherwise start W independent single-process jobs.
Under FSDP (`accelerator`) each process holds a shard of every trained weight; `full_state`
gathers state dicts for saving and `shard_like` cuts loaded full tensors back into shards.
See docs/scaling.md.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import numpy as np


def launched_processes() -> int:
    """The number of processes the launcher started (torchrun / accelerate launch set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def use_cpu() -> bool:
    """Several processes and no GPU: ask accelerate for a CPU (gloo) process group."""
    import torch

    return launched_processes() > 1 and not torch.cuda.is_available()


def accelerator(**kwargs):
    """accelerate's Accelerator for this launch: CPU processes with gloo where there is no CUDA.

    With an FSDP config on CPU processes accelerate would silently train with DDP instead: it
    applies FSDP only to GPU-type process groups. FSDP2 (`fully_shard`) runs on the CPU with
    gloo as well, so the state is switched to FSDP here; that is how CI tests the loop's sharded
    paths (tests/test_distributed.py). The plugin is read from the launcher's environment, as
    accelerate reads it on a GPU machine.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if launched_processes() > 1:  # one process has no group: nothing to import or close
        before_process_group()
    acc = Accelerator(cpu=use_cpu(), **kwargs)
    if use_cpu() and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        acc.state.distributed_type = DistributedType.FSDP
    return acc


def full_state(obj: Any, keep: bool = True) -> Any:
    """A state dict (nested dicts, lists) with every FSDP shard (a DTensor) gathered into the full
    tensor, on the CPU; anything else as it is, so without FSDP this changes nothing. Every
    process must call it: each gather is a collective. keep=False (a process that writes
    nothing) drops each gathered tensor at once instead of holding the whole model."""
    from torch.distributed.tensor import DTensor

    if isinstance(obj, DTensor):
        full = obj.full_tensor().cpu()  # one full tensor at a time on the device, never the whole model
        return full if keep else None
    if isinstance(obj, dict):
        return {k: full_state(v, keep) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(full_state(v, keep) for v in obj)
    return obj


def shard_like(value: Any, like: Any) -> Any:
    """`value`, a full tensor, held the way `like` is: this process's shard if `like` is an FSDP
    DTensor of the same shape, else `value` itself. Every process holds the full value (all
    read the same checkpoint), so each cuts out its own shard without communicating."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(like, DTensor) or isinstance(value, DTensor) or value.shape != like.shape:
        return value
    return distribute_tensor(value.to(like.device), like.device_mesh, like.placements, src_data_rank=None)


def is_sharded(module) -> bool:
    """Whether FSDP holds `module`'s weights as shards (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


@functools.cache
def before_process_group() -> None:
    """Run before accelerate creates the process group, so that the group can be freed at exit.

    A group still alive when the interpreter finalises can abort the process ("terminate called
    without an active exception"): a gloo worker thread dropping a finished collective's tensors
    needs the GIL, and a thread that asks for it during finalisation is killed. The group is
    destroyed at exit, but that frees it (and joins its threads) only if nothing else holds it,
    and torch.distributed.fsdp's ShardedGradScaler takes `process_group=dist.group.WORLD` as a
    default argument: imported after the group exists (diffusers and accelerate import it), it
    holds the group for good. Imported first, that default is None.
    """
    import atexit

    import torch.distributed.fsdp  # noqa: F401

    atexit.register(close_process_group)


@functools.lru_cache(maxsize=1)
def state():
    """accelerate's PartialState (initialises the process group once); only under a launcher."""
    from accelerate import PartialState

    before_process_group()
    return PartialState(cpu=use_cpu())


def close_process_group() -> None:
    """Destroy the default process group, if there is one (at exit: see before_process_group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_world() -> tuple[int, int]:
    if launched_processes() == 1:
        return 0, 1
    return state().process_index, state().num_processes


def is_main() -> bool:
    return rank_world()[0] == 0


def device() -> str | None:
    """This process's device under a launcher (cuda:LOCAL_RANK); None without one (the caller's default)."""
    return str(state().device) if launched_processes() > 1 else None


def wait() -> None:
    """Barrier: every process gets here before any goes on (no-op with one process)."""
    if launched_processes() > 1:
        state().wait_for_everyone()


def gather_objects(obj: Any) -> list:
    """[obj of process 0, obj of process 1, ...] on every process (picklable objects)."""
    if launched_processes() == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def everyone(flag: bool) -> bool:
    """True on every process if it is True on all of them."""
    return all(gather_objects(bool(flag)))


def cpu_threads() -> int:
    """CPU threads per process: the cores shared among the processes of this machine."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (os.cpu_count() or 1) // local)


def block(n: int, unit: int = 1) -> range:
    """This process's contiguous share of n items, in whole units (batches) of `unit` items,
    in rank order: gathering keeps the order, and the batches are those of one process."""
    rank, world = rank_world()
    units = -(-n // unit)
    return range(min(n, rank * units // world * unit), min(n, (rank + 1) * units // world * unit))


class Rows:
    """A read-only view of some items of a sequence (an array, memmap or ImageFolder)."""

    def __init__(self, items, indices: range):
        self.items, self.indices = items, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.items[self.indices[i]]


def sharded_rows(compute: Callable[..., np.ndarray], items, **kwargs) -> np.ndarray:
    """compute(items, **kwargs) -> (n, ...) array, with the rows split across processes (in
    whole batches of kwargs["batch_size"], if given) and gathered in order on every process.
    Every process must call it (it is a collective)."""
    rank, world = rank_world()
    if world == 1:
        return compute(items, **kwargs)
    mine = compute(Rows(items, block(len(items), kwargs.get("batch_size", 1))), **kwargs)
    return np.concatenate(gather_objects(mine))
