"""The one training loop, shared by every family (STYLE G6/G7/G8).

    facegen train ddpm-tiny32 --data stores/celeba32 --out runs/tiny32 --steps 2000
    train("ddpm-tiny32", "stores/celeba32", "runs/tiny32", overrides=["lr=2e-4"])

It builds a family's nets, optimizers and loss (`Family.build`), then for each step runs the
family's phases (one for diffusion, "D" then "G" for a GAN), with gradient accumulation,
clipping, lr warm-up, EMA, mixed precision and accelerate's device handling (DDP, or FSDP2,
whose shards it gathers for checkpoints, grids and the export). It writes
checkpoints (checkpoint.py), metrics, loss.png and sample grids (run_log.py), optionally KID
(and FID) of the EMA weights every `eval_every` steps (eval.png), and exports RUN/model/ with
the EMA weights at the end. It knows nothing family-specific.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from facegen.checkpoint import latest_checkpoint, load_checkpoint, read_state, rng_state, rotate_checkpoints, save_checkpoint, set_rng_state
from facegen.config import load_config, on_device, per_process_batch, read_run_config, save_config
from facegen.data.store import FaceStore
from facegen.distributed import accelerator, full_state
from facegen.families import get_family
from facegen.families.base import Diverged
from facegen.run_checks import check_eval_reference, check_same_run, out_of_memory_advice, preset_id, record_resume, resumed_config
from facegen.run_log import MetricsLog, plot_eval, plot_losses, save_samples
from facegen.utils import FacegenError, atomic_dir, parse_seeds

# The training-time evaluation samples seeds EVAL_FIRST_SEED + 0..eval_samples-1: fixed, and
# apart from the grids' sample_seeds and from the 0..N-1 that `facegen eval` samples.
EVAL_FIRST_SEED = 1_000_000


def train(preset_or_yaml: str | Path, data: str | Path, out: str | Path, overrides: list[str] | None = None,
          steps: int | None = None, resume: bool = False, dry_run: bool = False) -> dict:
    """Resolve the config, then train (or, with dry_run, only return the resolved config)."""
    out = Path(out)
    overrides = [*(overrides or []), *([f"steps={steps}"] if steps else [])]
    changed = {}
    if resume:  # the run's own config, its earlier resumes' changes, then the overrides (never the model: run_checks.py)
        saved = read_run_config(out)
        check_same_run(out, saved, preset_or_yaml, data)
        cfg, changed = resumed_config(out, saved, overrides)
    else:
        cfg = load_config(preset_or_yaml, overrides)
    cfg["preset"] = cfg["preset"] or preset_id(preset_or_yaml)
    store = FaceStore(data)
    cfg["resolution"] = cfg["resolution"] or store.resolution
    cfg["name"] = cfg["name"] or out.name
    cfg["data"] = str(store.path)  # recorded in the run; a family may read data at export (the ae latent scale)
    if cfg["resolution"] != store.resolution:
        raise FacegenError(f"{store.path} holds {store.resolution}px faces but the config asks for {cfg['resolution']}px; "
                           f"prepare a store with --size {cfg['resolution']} or set resolution={store.resolution}")
    if cfg["eval_every"]:
        check_eval_reference(store, cfg["eval_every"])
    if dry_run:
        return cfg
    last = latest_checkpoint(out / "checkpoints")
    if resume and last is None:
        raise FacegenError(f"{out}/checkpoints has no checkpoint to resume from; start again without --resume")
    if not resume and last is not None:
        raise FacegenError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and read_state(last)["step"] >= cfg["steps"]:  # nothing would train: leave model/ as it is
        at = read_state(last)["step"]
        raise FacegenError(f"{out} is already at step {at} (checkpoint {last.name}); pass --steps N with N > {at} to train on")
    try:
        Loop(cfg, store, out, resume, changed).fit()
    except torch.cuda.OutOfMemoryError:
        raise FacegenError(out_of_memory_advice(cfg)) from None
    return cfg


class Loop:
    def __init__(self, cfg: dict, store: FaceStore, out: Path, resume: bool, changed: dict | None = None):
        from accelerate.utils import DistributedType
        from diffusers.training_utils import EMAModel

        self.cfg, self.out, self.family = cfg, out, get_family(cfg["family"])
        mixed = cfg["mixed_precision"] if cfg["mixed_precision"] != "auto" else ("bf16" if torch.cuda.is_available() else "no")
        # a multi-process launch on a machine without CUDA trains on the CPU with gloo, FSDP included (docs/scaling.md)
        self.accelerator = acc = accelerator(mixed_precision=mixed, log_with="tensorboard" if cfg["tensorboard"] else None, project_dir=out)
        self.is_main = acc.is_main_process
        self.sharded = acc.distributed_type == DistributedType.FSDP
        if self.sharded and not acc.is_fsdp2:
            raise FacegenError("facegen trains with FSDP version 2 only (fully_shard): set fsdp_version: 2 in the accelerate config "
                               "(docs/accelerate/fsdp-sd.yaml)")
        self.micro_batch = per_process_batch(cfg, acc.num_processes)
        set_numerics(cfg)

        # Build with the same seed on every process, then give each process its own noise.
        seed_everything(cfg["seed"])
        self.built = built = self.family.build(cfg, cfg["resolution"])
        self.nets = built.nets  # unwrapped, un-compiled (under FSDP: sharded in place); what checkpoints and EMA see
        cuda = acc.device.type == "cuda"
        self.channels_last = on_device(cfg, "channels_last", cuda)
        for net in self.nets.values():
            net.to(memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
        if on_device(cfg, "fused_optimizer", cuda):
            for phase in built.phases:
                use_fused(phase.optimizer)
        for net in built.frozen.values():
            net.to(acc.device).eval().requires_grad_(False)
        self.trainable = {name: [p.requires_grad for p in net.parameters()] for name, net in self.nets.items()}
        # Under FSDP every process holds a shard of each weight; the main process keeps one
        # unsharded copy (on the CPU) to gather the weights into for checkpoints, grids and export.
        self.full_copies = {n: copy.deepcopy(net).cpu() for n, net in self.nets.items()} if self.sharded and self.is_main else {}
        names = list(self.nets)
        prepared = acc.prepare(*[self.nets[n] for n in names], *[p.optimizer for p in built.phases])
        self.wrapped = dict(zip(names, prepared[: len(names)]))
        self.optimizers = {p.name: o for p, o in zip(built.phases, prepared[len(names):])}
        # What train_step steps. accelerate's optimizer wrapper looks for the lomo package on disk
        # (importlib find_spec) twice per step() and inspects zero_grad's signature per call: 0.2 ms
        # per optimizer step, 10% of a tiny GAN step (BENCHMARKS.md). Without a grad scaler (fp16)
        # or XLA it only forwards to the torch optimizer, so the loop calls that one directly.
        direct = acc.scaler is None and acc.distributed_type != DistributedType.XLA
        self.stepped = {n: o.optimizer if direct else o for n, o in self.optimizers.items()}
        # Each phase's forward and loss as one function: compiled as a whole, so the loss's own
        # arithmetic (noise, augmentation, objective) fuses with the nets' kernels.
        compile_mode = on_device(cfg, "compile", cuda)
        self.phase_losses = {p.name: functools.partial(built.loss, p.name) for p in built.phases}
        for phase in built.phases if compile_mode else ():
            if phase.compilable:  # (a loss that differentiates its own gradient, R1 or WGAN-GP, is not: see Phase)
                self.phase_losses[phase.name] = torch.compile(self.phase_losses[phase.name], mode=compile_mode)
        warmup = cfg["warmup_steps"]
        self.lr_schedules = {p.name: torch.optim.lr_scheduler.LambdaLR(p.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
                             for p in built.phases}
        e = cfg["ema"]
        # Under FSDP each process averages its own shard (DTensors); saving gathers them. foreach
        # is off there: DTensor has no rule for the _foreach_copy_ that swaps the weights in.
        self.emas = {n: EMAModel(self.nets[n].parameters(), decay=e["decay"], use_ema_warmup=e["warmup"], inv_gamma=e["inv_gamma"],
                                 power=e["power"], update_after_step=e["update_after_step"], foreach=not self.sharded) for n in built.ema}

        self.step, self.position = 0, 0  # optimizer steps done; stream positions consumed (all processes)
        self.wall_before = 0.0  # seconds the run took in earlier sessions (resumes add up; pauses between them do not)
        self.session_start = time.perf_counter()  # restoring and starting up count too: a user waits for them
        self.metrics = MetricsLog(out / "metrics.jsonl")
        if resume:
            folder = latest_checkpoint(out / "checkpoints")
            self.restore(folder)
            if self.is_main:
                print(f"resuming from {folder} (step {self.step} of {cfg['steps']})", file=sys.stderr)
                record_resume(out, self.step, folder.name, changed or {})
        else:
            seed_everything(cfg["seed"] + acc.process_index)
            if self.is_main:  # the values the run starts with; a resume records its changes beside it (run_checks.py)
                save_config(cfg, out / "config.yaml")
        if cfg["tensorboard"]:
            acc.init_trackers("tensorboard")
        self.batches = self.data_iterator(store)
        self.loss_sums: dict[str, torch.Tensor] = {}
        self.worst_losses: dict[str, torch.Tensor] = {}  # phase -> worst |loss| since the last check, on the device
        # The evaluation's reference features, before the first step and on every process
        # (store_features splits the work under a launcher); computed once per store, then cached.
        self.eval_reference = self.reference_features(store) if cfg["eval_every"] else None
        self.evaluated_at = self.step  # a resumed run's log already holds the rows up to its checkpoint
        self.stop_requested, self.time_up, self.deadline = False, False, None

    # ---- data -------------------------------------------------------------------------

    def data_iterator(self, store: FaceStore):
        """Endless micro-batches on the device: gathered from the training split held on the device
        when it fits cfg["data_on_device"] of its memory (data/device.py), else a DataLoader over
        the memory-mapped store. Both yield the same faces in the same order (data/stream.py)."""
        from accelerate.utils import send_to_device
        from torch.utils.data import DataLoader

        from facegen.data.device import DeviceBatches, device_faces
        from facegen.data.loader import FaceDataset
        from facegen.data.stream import FaceStream, FlippedFaces, StreamBatches, shard_block

        acc, m, world = self.accelerator, self.micro_batch, self.accelerator.num_processes
        # a family may train on something derived from the faces (cached latents): its own dataset, the DataLoader path
        own = getattr(self.built, "dataset", None)
        dataset = own or FlippedFaces(FaceDataset(store, "train", hflip=False))  # flips come from the stream
        # A sharded store: every micro-step takes a block from each shard, so each process reads only its shards.
        shards = store.shard_sizes("train") if len(dataset) == len(store) else [len(dataset)]
        stream = FaceStream(len(dataset), self.cfg["seed"], self.cfg["hflip"], shards, shard_block(m * world, shards))
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        faces = None if own is not None else device_faces(store, acc.device, self.cfg["data_on_device"], self.cfg["hflip"], self.channels_last)
        self.data_path = "device" if faces is not None else "dataloader"
        if faces is not None:
            for batch in DeviceBatches(faces, stream, m, self.position, acc.process_index, world):
                self.position += m * world
                yield batch
        sampler = StreamBatches(stream, m, self.position, acc.process_index, world)
        workers = self.cfg["num_workers"]
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=acc.device.type == "cuda",
                            worker_init_fn=_ignore_sigint if workers else None, persistent_workers=workers > 0,
                            generator=torch.Generator())  # own RNG: starting an iterator must not draw from the training RNG
        for batch in loader:
            self.position += m * world
            if isinstance(batch, torch.Tensor):
                yield batch.to(acc.device, non_blocking=True).contiguous(memory_format=memory_format)
            else:  # a family's own dataset may yield tuples or dicts
                yield send_to_device(batch, acc.device, non_blocking=True)

    # ---- one optimizer step of every phase ----------------------------------------------

    def train_step(self) -> None:
        acc, accum, cfg = self.accelerator, self.cfg["grad_accum"], self.cfg
        for phase in self.built.phases:
            if len(self.built.phases) > 1:  # only this phase's nets get gradients
                self.select_trainable(phase.nets)
            optimizer = self.stepped[phase.name]
            for _ in range(phase.repeats):
                for micro in range(accum):
                    images = next(self.batches)
                    with contextlib.ExitStack() as no_sync:
                        if micro < accum - 1:  # all-reduce gradients only on the last micro-batch
                            for name in phase.nets:
                                no_sync.enter_context(acc.no_sync(self.wrapped[name]))
                        loss, logs = self.phase_losses[phase.name](self.wrapped, images)
                        loss = loss.mean()
                        acc.backward(loss / accum)
                    key = "loss" if len(self.built.phases) == 1 else f"loss_{phase.name}"
                    self.accumulate({key: loss.detach(), **logs}, 1 / (accum * phase.repeats))
                    if phase.loss_bound is not None:  # the worst |loss| stays on the device until a log step
                        worst = self.worst_losses.get(phase.name)
                        self.worst_losses[phase.name] = loss.detach().abs() if worst is None else torch.maximum(worst, loss.detach().abs())
                clip = phase.grad_clip if phase.grad_clip is not None else cfg["grad_clip"]
                if clip:
                    acc.clip_grad_norm_([p for n in phase.nets for p in self.nets[n].parameters() if p.grad is not None], clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if phase.after_step:
                    phase.after_step()
            self.lr_schedules[phase.name].step()
        if len(self.built.phases) > 1:  # every net trainable again: EMA averages only trainable params
            self.select_trainable(list(self.nets))
        for name, ema in self.emas.items():
            ema.step(self.nets[name].parameters())
        self.step += 1

    def select_trainable(self, phase_nets: list[str]) -> None:
        for name, net in self.nets.items():
            for p, trainable in zip(net.parameters(), self.trainable[name]):
                p.requires_grad_(trainable and name in phase_nets)

    def accumulate(self, logs: dict, weight: float) -> None:
        # Sums stay on the device: no .item() sync per step (read every log_every steps).
        for key, value in logs.items():
            value = torch.as_tensor(value, dtype=torch.float32, device=self.accelerator.device).detach() * weight
            self.loss_sums[key] = self.loss_sums.get(key, 0) + value

    # ---- the loop ---------------------------------------------------------------------

    def due(self, step: int) -> set[str]:
        """The one schedule: what happens after optimizer step `step` ("log", "grid", "eval",
        "save"), each at its cadence and all of them at the last step."""
        cfg, last = self.cfg, step == self.cfg["steps"]
        every = {"log": cfg["log_every"], "grid": cfg["sample_every"], "eval": cfg["eval_every"], "save": cfg["checkpoint_every"]}
        return {name for name, n in every.items() if n and (step % n == 0 or last)}

    def fit(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        total = cfg["steps"]
        previous_handler = signal.signal(signal.SIGINT, self.request_stop) if _in_main_thread() else None
        # img/s counts training time only: the stretches between grids, evaluations and checkpoints
        start_step, tick_step, stretch_start, train_seconds = self.step, self.step, time.perf_counter(), 0.0
        self.deadline = time.monotonic() + 60 * cfg["time_limit"] if cfg["time_limit"] else None
        try:
            with progress_bar(self.is_main, start_step, total) as (bar, task):
                while self.step < total and not self.stop_agreed(synchronise=self.step == start_step or "log" in self.due(self.step)):
                    self.train_step()
                    due, row = self.due(self.step), None
                    if "log" in due:  # the only reads of values computed on the device (one sync per log_every steps)
                        sums = self.global_sums()  # waits for the device: its work on these steps is done
                        train_seconds += time.perf_counter() - stretch_start
                        row = self.log(sums, (self.step - tick_step) * cfg["batch_size"] / max(train_seconds, 1e-9))
                        tick_step, train_seconds = self.step, 0.0
                        bar.update(task, loss=" ".join(f"{k} {row[k]:.4f}" for k in row if k.startswith("loss")), ips=f"{row['img_per_s']:.1f}")
                    elif due:
                        train_seconds += time.perf_counter() - stretch_start
                    bar.update(task, completed=self.step)
                    if "grid" in due:
                        self.sample_grid()
                    if "eval" in due:
                        self.evaluate(bar.console.print)
                    if "save" in due:
                        self.save()
                        if self.is_main:
                            losses = " ".join(f"{k} {v:.4f}" for k, v in (row or {}).items() if k.startswith("loss"))
                            bar.console.print(f"step {self.step}/{total}  kimg {self.step * cfg['batch_size'] / 1000:.1f}  {losses}  checkpoint saved")
                    if due:
                        stretch_start = time.perf_counter()
            if self.time_up and not self.stop_requested and self.step < total:
                # Out of time: end like a finished run (log line, grid, checkpoint, export); --resume continues.
                if self.step > tick_step:
                    sums = self.global_sums()
                    train_seconds += time.perf_counter() - stretch_start
                    self.log(sums, (self.step - tick_step) * cfg["batch_size"] / max(train_seconds, 1e-9))
                self.sample_grid()
                if cfg["eval_every"] and self.evaluated_at != self.step:  # the exported weights get their row too
                    self.evaluate()
                self.save()
                if self.is_main:
                    print(f"time limit of {cfg['time_limit']:g} min reached at step {self.step}/{total}; "
                          f"checkpoint saved, model exported; continue with --resume", file=sys.stderr)
            elif self.stop_agreed():
                self.save()
                message = f"stopped at step {self.step}; checkpoint saved in {self.out / 'checkpoints'}; continue with --resume"
                if self.is_main:
                    print(message, file=sys.stderr)  # the CLI itself only prints "interrupted"
                raise KeyboardInterrupt(message)
            with self.ema_view() as built:
                if self.is_main:
                    with atomic_dir(self.out / "model", overwrite=True) as tmp:
                        self.family.export(built, cfg, tmp)
            acc.wait_for_everyone()  # every process returns once model/ exists; none leaves the group early
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            acc.end_training()

    def request_stop(self, signum, frame) -> None:
        if self.stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.stop_requested = True
        print("\nCtrl-C: finishing this step, saving a checkpoint, then stopping (Ctrl-C again to abort)")

    def log(self, sums: dict[str, float], images_per_second: float) -> dict:
        """One metrics row from the loss sums since the last log (read by global_sums: the sync)."""
        self.loss_sums = {}
        count = (self.step - 1) % self.cfg["log_every"] + 1
        row = {"step": self.step, "kimg": self.step * self.cfg["batch_size"] / 1000, **{k: v / count for k, v in sums.items()},
               "lr": self.lr_schedules[self.built.phases[0].name].get_last_lr()[0], "img_per_s": images_per_second,
               "wall_s": self.wall_seconds()}
        if not all(np.isfinite(v) for v in sums.values()):
            self.fail(f"loss became {', '.join(f'{k}={v}' for k, v in sums.items() if not np.isfinite(v))} between steps {self.step - count} and {self.step}")
        self.check_bounds()
        if self.is_main:
            self.metrics.append(row)
        self.accelerator.log({k: v for k, v in row.items() if k != "step"}, step=self.step)
        return row

    def wall_seconds(self) -> float:
        """Wall time of the run so far (training, grids, evaluations, checkpoints), over all its
        sessions: the clock for comparing recipes at equal time."""
        return self.wall_before + time.perf_counter() - self.session_start

    def global_sums(self) -> dict[str, float]:
        """The loss sums averaged over all processes (each saw its share of the global batch), so
        the logged loss is the global batch's whatever the number of processes."""
        keys = sorted(self.loss_sums)
        if self.accelerator.num_processes == 1 or not keys:
            return {k: float(v) for k, v in self.loss_sums.items()}
        values = self.accelerator.reduce(torch.stack([self.loss_sums[k] for k in keys]), reduction="mean")
        return dict(zip(keys, values.tolist()))

    def stop_agreed(self, synchronise: bool = True) -> bool:
        """Whether any process was asked to stop (Ctrl-C) or ran out of its time limit: Ctrl-C reaches
        processes at different moments (or only one machine), and clocks differ, but all must stop
        at the same step to save the checkpoint together. Processes agree only when `synchronise`
        (the loop asks at log steps: no collective, no host sync, on the other steps)."""
        if self.accelerator.num_processes > 1 and not synchronise:
            return False
        self.time_up = self.deadline is not None and time.monotonic() >= self.deadline
        if self.accelerator.num_processes > 1:
            asked = torch.tensor([float(self.stop_requested), float(self.time_up)], device=self.accelerator.device)
            self.stop_requested, self.time_up = (bool(v) for v in self.accelerator.reduce(asked, reduction="sum").tolist())
        return self.stop_requested or self.time_up

    def fail(self, reason: str) -> None:
        last = latest_checkpoint(self.out / "checkpoints")
        keep = f"the last good checkpoint is {last} (continue from it with --resume, e.g. with a lower lr)" if last else "no checkpoint was written"
        raise Diverged(f"training stopped: {reason}; {keep}")

    # ---- artefacts --------------------------------------------------------------------

    def full_nets(self) -> dict:
        """The trained nets with their full weights, for the main process to save or export. Under
        FSDP every process must call it: the shards are gathered into the main process's copies."""
        if not self.sharded:
            return self.nets
        for name, net in self.nets.items():
            weights = full_state(net.state_dict(), keep=self.is_main)
            if self.is_main:
                self.full_copies[name].load_state_dict(weights)
        return self.full_copies

    @contextlib.contextmanager
    def ema_view(self, generator: bool = False):
        """The EMA weights, full, on the training device, for the main process: the Built (what the
        export writes) or, with generator=True, a Generator on it (grids, evaluations). Every process
        must enter it (under FSDP the shards are gathered); the others get None. On exit the training
        weights and the training RNG are back as they were."""
        from facegen.sample import load_generator

        swap = self.sharded or self.is_main  # without FSDP only the main process needs the EMA weights
        rng = rng_state()
        if swap:
            for name, ema in self.emas.items():
                ema.store(self.nets[name].parameters())
                ema.copy_to(self.nets[name].parameters())
        nets = self.full_nets()
        moved = self.sharded and self.is_main  # the gathered copies wait on the CPU; sampling needs them beside the frozen nets
        try:
            for net in nets.values() if moved else ():
                net.to(self.accelerator.device)
            built = dataclasses.replace(self.built, nets=nets)
            if not self.is_main:
                yield None
            elif not generator:
                yield built
            elif hasattr(self.family, "generator"):  # in memory
                yield self.family.generator(built, self.cfg)
            else:  # through an export
                with tempfile.TemporaryDirectory() as tmp:
                    self.family.export(built, self.cfg, Path(tmp))
                    yield load_generator(tmp, device=str(self.accelerator.device))
        finally:
            for net in nets.values() if moved else ():
                net.cpu()
            if swap:
                for name, ema in self.emas.items():
                    ema.restore(self.nets[name].parameters())
            set_rng_state(rng)

    def sample_grid(self) -> None:
        from facegen.sample import generate

        self.check_finite()
        with self.ema_view(generator=True) as generator:
            if self.is_main:
                seeds = parse_seeds(self.cfg["sample_seeds"])
                images = generate(generator, seeds, batch_size=len(seeds), **self.cfg["sample_options"])
                save_samples(self.out / "samples", self.step, images)
                plot_losses(self.metrics.rows(), self.out / "loss.png")
        self.accelerator.wait_for_everyone()

    def reference_features(self, store: FaceStore) -> np.ndarray:
        """Inception features of min(eval_samples, holdout) held-out faces, evenly spaced over the
        holdout (all of it: the cache entry `facegen eval` uses too)."""
        from facegen.metrics.inception import store_features

        held_out = len(store.split("holdout"))
        count = min(self.cfg["eval_samples"], held_out)
        return store_features(store, "holdout", count, progress=self.is_main, spread=count < held_out)

    def evaluate(self, say=print) -> None:
        """KID of the EMA weights on the fixed seeds against the held-out faces (and FID when both
        sets hold FID_MIN_SAMPLES): one metrics.jsonl row and eval.png. Like the grids, only the main
        process samples, and the training RNG is left as it was; every process must call it."""
        from facegen.distributed import cpu_threads
        from facegen.evaluate import FID_MIN_SAMPLES
        from facegen.metrics.inception import extract_features
        from facegen.metrics.registry import measure
        from facegen.sample import generate

        self.check_finite()
        start, n, ref = time.perf_counter(), self.cfg["eval_samples"], self.eval_reference
        with self.ema_view(generator=True) as generator:
            if self.is_main:
                # a training micro-batch always fits: sampling holds no gradients
                images = generate(generator, range(EVAL_FIRST_SEED, EVAL_FIRST_SEED + n), batch_size=self.micro_batch,
                                  **self.cfg["sample_options"])
        if self.is_main:
            features = extract_features(images, threads=self.cfg["threads"] or cpu_threads(), device=str(self.accelerator.device),
                                        progress=False)
            # `facegen eval`'s KID and FID (metrics/registry.py), FID without its bootstrap interval;
            # below FID_MIN_SAMPLES the 2048-d covariance is singular (evaluate refuses it too)
            names = ["kid", "fid"] if min(n, len(ref)) >= FID_MIN_SAMPLES else ["kid"]
            scores = measure(names, features, ref, fid={"bootstrap_rounds": 0})  # seeded subsets: no training RNG
            kid, kid_std = scores["kid"]["value"], scores["kid"]["std"]
            row = {"step": self.step, "kid": kid, "kid_std": kid_std}
            if "fid" in scores:
                row["fid"] = scores["fid"]["value"]
            row |= {"eval_samples": n, "eval_reference": len(ref), "eval_seconds": time.perf_counter() - start}
            self.metrics.append(row)
            plot_eval(self.metrics.rows(), self.out / "eval.png")
            self.accelerator.log({f"eval/{k}": row[k] for k in ("kid", "fid") if k in row}, step=self.step)
            fid = f"  FID {row['fid']:.2f}" if "fid" in row else ""
            say(f"step {self.step}/{self.cfg['steps']}  KID {kid:.4f} ± {kid_std:.4f}{fid}  "
                f"({n} samples vs {len(ref)} held-out faces, {row['eval_seconds']:.0f} s)")
        self.evaluated_at = self.step
        self.accelerator.wait_for_everyone()

    def check_finite(self) -> None:
        """Stop before a NaN/inf or a loss past its bound reaches a checkpoint or a grid (one sync)."""
        bad = {k: v for k, v in self.global_sums().items() if not np.isfinite(v)}
        if bad:
            self.fail(f"loss became {', '.join(f'{k}={v}' for k, v in bad.items())} before step {self.step}")
        self.check_bounds()

    def check_bounds(self) -> None:
        """Diverged once a phase's worst |loss| since the last check passed its Phase.loss_bound."""
        if not self.worst_losses:
            return
        names = sorted(self.worst_losses)
        worst = torch.stack([self.worst_losses[n] for n in names])
        if self.accelerator.num_processes > 1:
            worst = _all_max(worst)  # accelerate's reduce knows only sum and mean
        self.worst_losses = {}
        bounds = {p.name: p for p in self.built.phases}
        for name, value in zip(names, worst.tolist()):
            phase = bounds[name]
            if not value <= phase.loss_bound:  # NaN too
                self.fail(f"{name} loss {value:.3g} is past the bound {phase.loss_bound:g} ({phase.bound_key}) "
                          f"by step {self.step}: lower the learning rate or raise the bound")

    def save(self) -> None:
        from accelerate.utils import gather_object

        self.check_finite()

        acc = self.accelerator
        rngs = gather_object([rng_state()]) if acc.num_processes > 1 else [rng_state()]
        # Full tensors (gathered from every process's shard under FSDP), so a checkpoint is the
        # same files with or without FSDP and loads on any number of processes.
        nets = self.full_nets()
        emas = {n: full_state(ema.state_dict(), keep=self.is_main) for n, ema in self.emas.items()}
        optimizers = {n: full_state(o.state_dict(), keep=self.is_main) for n, o in self.optimizers.items()}
        if self.is_main:
            state = {"step": self.step, "images_seen": self.step * self.cfg["batch_size"], "data_position": self.position,
                     "world_size": acc.num_processes, "fsdp": self.sharded, "time": time.time(), "wall_s": self.wall_seconds()}
            lr = {n: schedule.state_dict() for n, schedule in self.lr_schedules.items()}
            save_checkpoint(self.out / "checkpoints", state, nets, emas, optimizers, lr, rngs)
            rotate_checkpoints(self.out / "checkpoints", self.cfg["keep_checkpoints"])
            plot_losses(self.metrics.rows(), self.out / "loss.png")
        acc.wait_for_everyone()

    def restore(self, folder: Path) -> None:
        acc = self.accelerator
        configured = {n: list(schedule.base_lrs) for n, schedule in self.lr_schedules.items()}  # this config's lr, not the saved one
        state, rng = load_checkpoint(folder, self.nets, self.emas, self.optimizers, self.lr_schedules, acc.process_index)
        for name, schedule in self.lr_schedules.items():  # a resume may change lr (run_checks.py): the schedule continues from it
            schedule.base_lrs = configured[name]
            groups = self.optimizers[name].param_groups
            for group, base, factor in zip(groups, configured[name], schedule.lr_lambdas):
                group["initial_lr"], group["lr"] = base, base * factor(schedule.last_epoch)
            schedule._last_lr = [group["lr"] for group in groups]
        for ema in self.emas.values():
            ema.to(acc.device)
        self.step, self.position = state["step"], state["data_position"]
        self.wall_before = state.get("wall_s", 0.0)  # 0 for checkpoints made before the run kept its clock
        if state["fresh_optimizers"] and self.is_main:
            print(f"{folder} holds no optimizer state for {', '.join(state['fresh_optimizers'])} (a packed checkpoint): "
                  f"its moments start again from zero", file=sys.stderr)
        if rng is not None and state["world_size"] == acc.num_processes:
            set_rng_state(rng)
        else:  # a different process count: same data order and weights, fresh noise streams
            seed_everything(self.cfg["seed"] + 1000003 * self.step + acc.process_index)
        if self.is_main:
            self.metrics.truncate_after(self.step)


def use_fused(optimizer: torch.optim.Optimizer) -> None:
    """Switch a torch Adam or AdamW to its fused kernel (one launch for all parameters instead
    of a few per tensor); the update is the same. Other optimizers are left as they are."""
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        for group in (optimizer.defaults, *optimizer.param_groups):
            group["fused"], group["foreach"] = True, False


def _all_max(values: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_numerics(cfg: dict) -> None:
    """The one place numerics are set (STYLE G6): TF32 on for GPU matmuls/convs, cudnn autotuning, CPU threads."""
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


def _ignore_sigint(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; workers ignore it so the main process can
    # finish its step and checkpoint with the data it still needs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def progress_bar(enabled: bool, start: int, total: int):
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from facegen.progress import progress

    columns = [TextColumn("step {task.completed}/{task.total}"), BarColumn(), TextColumn("{task.fields[loss]}"),
               TextColumn("{task.fields[ips]} img/s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with progress(*columns, enabled=enabled) as bar:
        yield bar, bar.add_task("train", total=total, completed=start, loss="loss -", ips="-")


def resolved_yaml(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
