"""Faces held on the device (data/device.py) give exactly the DataLoader's batches, and the loop
reads tensor values only at log steps (no host sync per step)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from facegen.checkpoint import latest_checkpoint
from facegen.data.device import DeviceBatches, device_faces
from facegen.data.loader import FaceDataset
from facegen.data.prepare import prepare
from facegen.data.store import FaceStore
from facegen.data.stream import FaceStream, FlippedFaces, StreamBatches, shard_block
from facegen.train import train

GAN = ["resolution=16", "model.g_channels=16", "model.g_min_channels=8", "model.d_channels=8", "model.z_dim=16",
       "batch_size=4", "tensorboard=false", "sample_seeds=0-1", "threads=1", "ema.decay=0.9"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The same 30 faces as one store and as a store in 3 shards."""
    root = tmp_path_factory.mktemp("device")
    rng = np.random.default_rng(1)
    faces = rng.integers(0, 256, (30, 4, 4, 3)).astype(np.uint8).repeat(4, axis=1).repeat(4, axis=2)
    faces[:, :, :8] //= 2  # left half darker: a flip is visible
    photos = root / "photos"
    photos.mkdir()
    for i, face in enumerate(faces):
        Image.fromarray(face).save(photos / f"{i:03d}.png")
    one = prepare(photos, root / "one", size=16, crop="center", workers=1, progress=False)
    three = prepare(photos, root / "three", size=16, crop="center", shards=3, workers=1, progress=False)
    return one, three


def loader_batches(store: FaceStore, stream: FaceStream, m: int, start: int, rank: int, world: int, count: int) -> list:
    """The DataLoader path of train.py (data_iterator) for one process."""
    dataset = FlippedFaces(FaceDataset(store, "train"))
    loader = DataLoader(dataset, batch_sampler=StreamBatches(stream, m, start, rank, world))
    return [b for b, _ in zip(loader, range(count))]


def device_batches(store: FaceStore, stream: FaceStream, m: int, start: int, rank: int, world: int, count: int,
                   channels_last: bool = False) -> list:
    faces = device_faces(store, torch.device("cpu"), budget=1.0, channels_last=channels_last)
    return [b for b, _ in zip(DeviceBatches(faces, stream, m, start, rank, world), range(count))]


@pytest.mark.parametrize("sharded", [False, True], ids=["one-file", "3-shards"])
@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("start", [0, 18])  # 18: a resume in the middle of an epoch
def test_device_batches_equal_the_dataloaders(stores, sharded, world, start):
    store = stores[1] if sharded else stores[0]
    shards = store.shard_sizes("train")
    m = 6 // world  # 6 images per micro-step: 2 per shard
    for rank in range(world):
        expected = loader_batches(store, FaceStream(30, 7, True, shards, shard_block(6, shards)), m, start, rank, world, 23)
        got = device_batches(store, FaceStream(30, 7, True, shards, shard_block(6, shards)), m, start, rank, world, 23)
        assert len(got) == 23  # 23 x 6 images: more than 4 epochs
        for k, (a, b) in enumerate(zip(expected, got)):
            assert torch.equal(a, b), (rank, k)
    flips = FaceStream(30, 7, True).positions(0, 30)[1]
    assert 0 < flips.sum() < 30  # flips happen, and not always
    # held channels_last (the CUDA default), the batches are the same values in that memory format
    last = device_batches(store, FaceStream(30, 7, True, shards, shard_block(6, shards)), 6, start, 0, 1, 5, channels_last=True)
    plain = device_batches(store, FaceStream(30, 7, True, shards, shard_block(6, shards)), 6, start, 0, 1, 5)
    assert all(torch.equal(a, b) and a.is_contiguous(memory_format=torch.channels_last) and b.is_contiguous() for a, b in zip(last, plain))


def test_the_chunked_copy_of_rows_does_not_change_the_order(stores, monkeypatch):
    """Rows go to the device in chunks of micro-batches; a chunk edge inside an epoch changes nothing."""
    import facegen.data.device as device

    store = stores[0]
    whole = device_batches(store, FaceStream(30, 3, True), 4, 0, 0, 1, 20)
    monkeypatch.setattr(device, "CHUNK_IMAGES", 12)  # 3 micro-batches per copy
    for world in (1, 2):
        chunked = [device_batches(store, FaceStream(30, 3, True), 4 // world, 0, r, world, 20) for r in range(world)]
        joined = [torch.cat(parts) for parts in zip(*chunked)]
        assert all(torch.equal(a, b) for a, b in zip(whole, joined))


def test_training_on_device_faces_is_the_dataloaders_training(stores, tmp_path):
    """Same weights after 5 GAN steps whichever path fed the loop; a split over the budget takes the DataLoader."""
    store = stores[0]
    runs = {}
    for name, budget in (("device", "0.25"), ("loader", "0")):
        runs[name] = tmp_path / name
        train("dcgan-tiny32", store.path, runs[name], GAN + [f"data_on_device={budget}", "log_every=2"], steps=5)
    a, b = (latest_checkpoint(runs[n] / "checkpoints") for n in ("device", "loader"))
    for net in ("G", "D"):
        for key, value in load_file(a / "nets" / f"{net}.safetensors").items():
            assert torch.equal(load_file(b / "nets" / f"{net}.safetensors")[key], value), (net, key)
    # a split past the budget (or a budget of 0) is left to the DataLoader
    assert device_faces(store, torch.device("cpu"), budget=1e-12) is None and device_faces(store, torch.device("cpu"), 0) is None
    assert device_faces(store, torch.device("cpu"), budget=0.25).shape == (60, 3, 16, 16)  # and their mirror images
    assert device_faces(store, torch.device("cpu"), budget=0.25, hflip=False).shape == (30, 3, 16, 16)


READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__")


def count_reads(monkeypatch) -> list:
    """Every read of a tensor's value into Python (what forces a host sync on a GPU), except torch's
    optimizers reading their step counters: those live on the host (state["step"] is a CPU tensor
    unless the optimizer is fused or capturable), so reading them waits for nothing."""
    reads = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
            if "/torch/optim/" not in caller:
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


@pytest.mark.parametrize("preset", ["dcgan-tiny32", "ddpm-tiny32-v"])
def test_tensor_reads_do_not_grow_with_the_steps_between_logs(stores, tmp_path, monkeypatch, preset):
    """4 steps with one log vs 12 steps with one log: the same number of reads (the divergence
    bound, NaN checks and loss logging are read at log steps only)."""
    extra = ["model.diverge_above=1e6"] if preset.startswith("dcgan") else \
        ["model.block_out_channels=[8,16]", "model.layers_per_block=1", "model.attention_resolutions=[]", "sample_options={sampler: ddim, steps: 2}"]
    counts = {}
    for steps in (4, 12):
        reads = count_reads(monkeypatch)
        run = tmp_path / f"{preset}-{steps}"
        train(preset, stores[0].path, run, GAN[:1] + GAN[5:] + ["batch_size=4", f"log_every={steps}", "sample_every=1000",
                                                               "checkpoint_every=1000"] + (GAN[1:5] if "dcgan" in preset else []) + extra,
              steps=steps)
        monkeypatch.undo()
        counts[steps] = len(reads)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [steps]
    assert counts[4] == counts[12] and counts[4] > 0, counts


def test_compiled_phase_losses_train_and_export(stores, tmp_path):
    """compile=true (the CUDA default) on the CPU: each phase's forward and loss is compiled (graphs
    captured), training runs, its losses stay finite and the model is exported."""
    from torch._dynamo.utils import counters

    counters.clear()
    run = tmp_path / "compiled"
    train("dcgan-tiny32", stores[0].path, run, GAN + ["compile=true", "log_every=1", "model.objective=hinge", "model.spectral_norm=true",
                                                      "model.augment=[color,translation]"], steps=3)
    assert counters["stats"]["unique_graphs"] >= 2  # at least the D and the G phase
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["loss_D"]) and np.isfinite(r["loss_G"]) for r in rows)
    assert (run / "model" / "generator.safetensors").is_file()


def test_a_loss_that_differentiates_a_gradient_is_left_uncompiled(stores, tmp_path):
    """R1 (and WGAN-GP) take autograd.grad(create_graph=True) inside the D loss, which AOTAutograd
    cannot differentiate again: with compile on, that phase runs eagerly and the run trains."""
    from torch._dynamo.utils import counters

    counters.clear()
    run = tmp_path / "r1"
    train("dcgan-tiny32", stores[0].path, run, GAN + ["compile=true", "log_every=1", "model.r1_gamma=1.0"], steps=2)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["r1"]) for r in rows)
    assert counters["stats"]["unique_graphs"] >= 1  # G's phase still compiled
