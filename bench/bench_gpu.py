"""Training speed of facegen's loop on the device it runs on, against a bare hand-written loop, same run.

    python bench/bench_gpu.py                              # on a GPU: flagship, ddpm-celeba64, ldm-ffhq128
    python bench/bench_gpu.py --only gan-resnet64-gpu --seconds 20 --batches 128,256,512
    python bench/bench_gpu.py --cpu                        # on the CPU: host overhead at a tiny size + data path

The bare loop is what a user would write by hand with the same settings: the same nets (copied),
the same optimizers (same class and options, fused or not), the same family loss, autocast in
the same precision, `requires_grad_` switched per GAN phase, a foreach lerp for the EMA, and one
batch already on the device (no data path at all). facegen's loop (`Loop.train_step`, fed by its
own data path) runs interleaved with it, rounds of steps each, medians reported: the ratio
bare/facegen img/s is the loop's overhead (data, accelerate, logging sums, EMA, bounds).

On CUDA each preset also reports model FLOP/s (torch.utils.flop_counter over one bare step:
forward and backward of every phase) and its share of the device's dense bf16 peak (the
datasheet figure, and a measured 8192^3 bf16 matmul beside it), and the peak memory. On the CPU
(--cpu): host overhead per step of a tiny GAN and a tiny UNet, and the data path alone, faces held
in memory (data/device.py) against today's DataLoader over the memory-mapped store, img/s.

Writes bench/results/gpu-<device>.json (--out to change).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facegen.config import load_config, on_device
from facegen.data.store import FaceStore, write_store
from facegen.train import Loop, seed_everything, use_fused

COMMON = ["tensorboard=false", "log_every=1000000", "sample_every=1000000", "checkpoint_every=1000000", "eval_every=0"]
GPU_PRESETS = {  # name: (preset, overrides)
    "gan-resnet64-gpu": ("gan-resnet64-gpu", []),
    "stylegan-ffhq64-gpu": ("stylegan-ffhq64-gpu", []),
    "ddpm-celeba64": ("ddpm-celeba64", ["batch_size=64"]),
    "ldm-ffhq128": ("ldm-ffhq128", ["model.cache_latents=false"]),  # encodes each batch with the (random) VAE
}
CPU_PRESETS = {  # tiny sizes: what is left is host overhead
    "gan-tiny16": ("dcgan-tiny32", ["resolution=16", "model.g_channels=16", "model.g_min_channels=8", "model.d_channels=8",
                                    "model.z_dim=16", "batch_size=8", "threads=1"]),
    "ddpm-tiny16": ("ddpm-tiny32", ["resolution=16", "model.block_out_channels=[8,16]", "model.layers_per_block=1",
                                    "model.attention_resolutions=[]", "batch_size=8", "threads=1"]),
}
DEFAULT_THREADS = torch.get_num_threads()
CPU_OPTION_PRESETS = {  # the CPU presets at their own size, to choose the CPU defaults
    "dcgan-tiny32": ("dcgan-tiny32", ["batch_size=32"]),
    "ddpm-tiny32": ("ddpm-tiny32", ["batch_size=16"]),
}
# Dense bf16 tensor-core peaks from the datasheets (FLOP/s), by device name.
PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "4090": 165e12}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BareLoop:
    """The same step written by hand: no accelerate, no data path, no logging sums."""

    def __init__(self, loop: Loop, images: torch.Tensor):
        self.nets = {n: copy.deepcopy(net) for n, net in loop.nets.items()}
        self.frozen = loop.built.frozen
        self.phases = []
        for phase in loop.built.phases:
            params = [p for n in phase.nets for p in self.nets[n].parameters() if p.requires_grad]
            import inspect

            accepted = inspect.signature(type(phase.optimizer)).parameters
            optimizer = type(phase.optimizer)(params, **{k: v for k, v in phase.optimizer.defaults.items()
                                                         if k in accepted and k not in ("fused", "foreach")})
            if phase.optimizer.defaults.get("fused"):
                use_fused(optimizer)
            self.phases.append((phase, optimizer))
        self.loss, self.images, self.device = loop.built.loss, images, images.device
        self.autocast = loop.accelerator.mixed_precision == "bf16"
        self.ema = {n: [p.detach().clone() for p in self.nets[n].parameters()] for n in loop.built.ema}
        self.decay = loop.cfg["ema"]["decay"]

    def step(self) -> None:
        for phase, optimizer in self.phases:
            if len(self.phases) > 1:
                for name, net in self.nets.items():
                    net.requires_grad_(name in phase.nets)
            for _ in range(phase.repeats):
                with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
                    loss, _ = self.loss(phase.name, self.nets, self.images)
                loss.mean().backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        for name, shadow in self.ema.items():
            torch._foreach_lerp_(shadow, [p.detach() for p in self.nets[name].parameters()], 1 - self.decay)


def build_loop(preset: str, overrides: list[str], store: FaceStore, out: Path) -> Loop:
    cfg = load_config(preset, COMMON + overrides)
    cfg["preset"], cfg["name"], cfg["data"] = preset, "bench", str(store.path)
    cfg["resolution"] = cfg["resolution"] or store.resolution
    return Loop(cfg, store, out, resume=False)


def interleaved(loop: Loop, bare: BareLoop, steps: int, rounds: int) -> dict:
    """img/s of each, `rounds` rounds of `steps` steps, alternating; medians."""
    device, batch = loop.accelerator.device, loop.cfg["batch_size"]
    times = {"facegen": [], "bare": []}
    for name, run in (("facegen", loop.train_step), ("bare", bare.step)):  # warm-up (compilation, autotuning)
        for _ in range(3):
            run()
    synchronize(device)
    for _ in range(rounds):
        for name, run in (("bare", bare.step), ("facegen", loop.train_step)):
            start = time.perf_counter()
            for _ in range(steps):
                run()
            if name == "facegen":
                loop.global_sums()  # the loop's own read at its log step
                loop.loss_sums = {}
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    ips = {name: steps * batch / statistics.median(t) for name, t in times.items()}
    return {"img_per_s": ips["facegen"], "bare_img_per_s": ips["bare"], "overhead_ratio": ips["bare"] / ips["facegen"],
            "step_ms": 1000 * statistics.median(times["facegen"]) / steps, "bare_step_ms": 1000 * statistics.median(times["bare"]) / steps}


def step_flops(bare: BareLoop) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        bare.step()
    return float(counter.get_total_flops())


def measured_bf16_peak(device: torch.device) -> float:
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    synchronize(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    synchronize(device)
    return 10 * 2 * 8192**3 / (time.perf_counter() - start)


def random_autoencoder(out: Path) -> Path:
    """An ae-ffhq128 export with random weights (latent scale 1): the ldm preset's frozen VAE."""
    from facegen.families import get_family

    built = get_family("ae").build(load_config("ae-ffhq128"), 128)
    vae = built.nets["vae"].vae  # the diffusers AutoencoderKL inside the family's training wrapper
    vae.register_to_config(scaling_factor=1.0)
    folder = out / "model"
    vae.save_pretrained(folder)
    (folder / "facegen.json").write_text(json.dumps({"family": "ae", "resolution": 128, "latent_scale": 1.0}))
    return out


def synthetic_store(root: Path, size: int, count: int) -> FaceStore:
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (count, size // 8, size // 8, 3), dtype=np.uint8)
    return write_store(root / f"faces{size}", {"train": low.repeat(8, axis=1).repeat(8, axis=2)}, {"size": size, "source": "synthetic"})


def bench_preset(name: str, preset: str, overrides: list[str], stores: dict, root: Path, steps: int, rounds: int, flops: bool) -> dict:
    cfg = load_config(preset, overrides)
    size = cfg["resolution"] or (128 if cfg["family"] == "ldm" else 64)
    if cfg["family"] == "ldm":
        overrides = overrides + [f"model.autoencoder={random_autoencoder(root / 'ae')}"]
    if size not in stores:
        stores[size] = synthetic_store(root, size, 4096)
    store = stores[size]
    seed_everything(0)
    loop = build_loop(preset, overrides, store, root / f"run-{name}")
    device = loop.accelerator.device
    images = next(loop.batches).clone()
    bare = BareLoop(loop, images)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {"preset": preset, "overrides": overrides, "batch_size": loop.cfg["batch_size"], "data_path": loop.data_path,
              "mixed_precision": loop.accelerator.mixed_precision, "channels_last": loop.channels_last,
              "fused_optimizer": on_device(loop.cfg, "fused_optimizer", device.type == "cuda"), "compile": on_device(loop.cfg, "compile", device.type == "cuda"),
              "steps_per_round": steps, "rounds": rounds, **interleaved(loop, bare, steps, rounds)}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if flops:
        per_step = step_flops(bare)
        result["flop_per_step"] = per_step
        result["model_flop_per_s"] = per_step * result["img_per_s"] / loop.cfg["batch_size"]
    print(json.dumps({name: result}), flush=True)
    return result


def option_speedups(stores: dict, root: Path, steps: int, rounds: int) -> dict:
    """On this device, img/s with each of channels_last and fused_optimizer on against off (the
    rest at the device's defaults), interleaved in rounds: what the `auto` defaults rest on."""
    result = {}
    for name, (preset, overrides) in CPU_OPTION_PRESETS.items():
        for option in ("channels_last", "fused_optimizer"):
            seed_everything(0)
            size = load_config(preset, overrides)["resolution"]
            if size not in stores:
                stores[size] = synthetic_store(root, size, 4096)
            loops = {value: build_loop(preset, overrides + [f"{option}={value}"], stores[size], root / f"opt-{name}-{option}-{value}")
                     for value in ("true", "false")}
            times = {value: [] for value in loops}
            for loop in loops.values():
                loop.train_step()
            for _ in range(rounds):
                for value, loop in loops.items():
                    start = time.perf_counter()
                    for _ in range(steps):
                        loop.train_step()
                    times[value].append(time.perf_counter() - start)
            result[f"{name}:{option}"] = {"on_over_off_img_per_s": statistics.median(times["false"]) / statistics.median(times["true"]),
                                          "on_step_ms": 1000 * statistics.median(times["true"]) / steps,
                                          "off_step_ms": 1000 * statistics.median(times["false"]) / steps}
            print(json.dumps({f"{name}:{option}": result[f"{name}:{option}"]}), flush=True)
    return result


def data_path(store: FaceStore, micro_batch: int, seconds: float) -> dict:
    """img/s of the data path alone, through the loop's own code for each."""
    from torch.utils.data import DataLoader

    from facegen.data.device import DeviceBatches, device_faces
    from facegen.data.loader import FaceDataset
    from facegen.data.stream import FaceStream, FlippedFaces, StreamBatches

    def rate(batches) -> float:
        it, count = iter(batches), 0
        next(it)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            next(it)
            count += micro_batch
        return count / (time.perf_counter() - start)

    n = len(store.split("train"))
    start = time.perf_counter()
    faces = device_faces(store, torch.device("cpu"), budget=1.0)
    load_s = time.perf_counter() - start
    loader = DataLoader(FlippedFaces(FaceDataset(store, "train")), batch_sampler=StreamBatches(FaceStream(n, 0, True), micro_batch))
    streamed = rate(loader)
    held = rate(DeviceBatches(faces, FaceStream(n, 0, True), micro_batch))
    return {"faces": n, "resolution": store.resolution, "micro_batch": micro_batch, "device_img_per_s": held,
            "dataloader_img_per_s": streamed, "ratio": held / streamed, "copy_to_memory_s": load_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the CPU benchmark (host overhead and data path), even where CUDA is present")
    parser.add_argument("--only", default=None, help="comma-separated names of the presets to run")
    parser.add_argument("--batches", default=None, help="also sweep the flagship's batch size, e.g. 128,256,512 (GPU)")
    parser.add_argument("--store", type=Path, default=None, help="a 64 px face store for the data path (default: synthetic faces)")
    parser.add_argument("--steps", type=int, default=None, help="steps per round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per data-path measurement")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for every preset, e.g. compile=false")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.cuda.get_device_name() if cuda else f"cpu-{torch.get_num_threads()}threads"
    out = args.out or Path(__file__).parent / "results" / ("gpu-" + device.split()[-1].lower() + ".json" if cuda else "gpu-cpu.json")
    record = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "device": device,
              "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(), "presets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root, stores = Path(tmp), {}
        if args.store:
            stores[FaceStore(args.store).resolution] = FaceStore(args.store)
        if cuda:
            peak = next((v for k, v in PEAKS.items() if k in device), None)
            record["bf16_peak_datasheet"], record["bf16_peak_measured"] = peak, measured_bf16_peak(torch.device("cuda"))
            presets = {k: v for k, v in GPU_PRESETS.items() if not args.only or k in args.only.split(",")}
            for name, (preset, overrides) in presets.items():
                try:
                    r = bench_preset(name, preset, overrides + args.set, stores, root, args.steps or 20, args.rounds or 3, True)
                except Exception as e:  # one preset's failure (out of memory, ...) must not lose the others' figures
                    r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
                if "model_flop_per_s" in r:
                    r["mfu_datasheet"] = r["model_flop_per_s"] / peak if peak else None
                    r["mfu_measured_peak"] = r["model_flop_per_s"] / record["bf16_peak_measured"]
                record["presets"][name] = r
                write(out, record)
                torch.cuda.empty_cache()
            for batch in (args.batches.split(",") if args.batches else []):
                name = f"gan-resnet64-gpu@{batch}"
                try:
                    record["presets"][name] = bench_preset(name, "gan-resnet64-gpu", [f"batch_size={batch}", *args.set], stores, root,
                                                           args.steps or 20, args.rounds or 3, False)
                except Exception as e:
                    record["presets"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
                write(out, record)
                torch.cuda.empty_cache()
        else:
            presets = {k: v for k, v in CPU_PRESETS.items() if not args.only or k in args.only.split(",")}
            for name, (preset, overrides) in presets.items():
                record["presets"][name] = bench_preset(name, preset, overrides + args.set, stores, root, args.steps or 30, args.rounds or 7, False)
            torch.set_num_threads(DEFAULT_THREADS)  # the tiny presets set 1 thread
            if not args.only:
                record["cpu_options"] = option_speedups(stores, root, args.steps or 30, 3)
            torch.set_num_threads(DEFAULT_THREADS)
            store = stores.get(64) or synthetic_store(root, 64, 8192)
            record["data_path"] = data_path(store, 64, args.seconds)
            print(json.dumps({"data_path": record["data_path"]}), flush=True)
    write(out, record)
    print(f"wrote {out}")


def write(out: Path, record: dict) -> None:
    """The record so far (after each GPU preset: a time limit or a crash keeps what was measured)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
