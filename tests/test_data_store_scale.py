"""Face stores at any size (issue 19): the streaming writer gives the very store the in-memory one
gave, a killed prepare continues to the same store, a half-built store is refused, and a store
in shards is read by each process in its own part. Synthetic photos only (made here), seconds."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegen.data.prepare import prepare
from facegen.data.store import FaceStore, partial_dir
from facegen.utils import FacegenError


def smooth_photo(rng: np.random.Generator, height: int, width: int, mode: str = "RGB") -> Image.Image:
    """A smooth random picture: coarse noise enlarged (compresses like a photo, unlike white noise)."""
    coarse = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BILINEAR).convert(mode)


def golden_photos(root: Path) -> Path:
    """30 PNG photos (lossless: their pixels cannot change with the JPEG library), a grey one,
    an exact duplicate and a file that is no image."""
    (root / "grey").mkdir(parents=True)
    rng = np.random.default_rng(19)
    for i in range(30):
        smooth_photo(rng, 40, 32).save(root / f"{i:05d}.png")
    smooth_photo(rng, 36, 36, "L").save(root / "grey" / "g.png")
    (root / "00030.png").write_bytes((root / "00007.png").read_bytes())
    (root / "00031.png").write_bytes(b"not an image")
    return root


def golden_celeba(root: Path) -> Path:
    """The CelebA layout: img_align_celeba/ and list_eval_partition.txt (train, val, test)."""
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    rng = np.random.default_rng(20)
    lines = []
    for i in range(14):
        smooth_photo(rng, 44, 36).save(images / f"{i:06d}.png")
        lines.append(f"{i:06d}.png {0 if i < 10 else 1 if i < 12 else 2}")
    smooth_photo(rng, 44, 36).save(images / "unlisted.png")
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root


def jpeg_photos(root: Path, n: int, seed: int = 0) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        smooth_photo(rng, 40, 32).save(root / f"{i:05d}.jpg", quality=90)
    (root / "dup.jpg").write_bytes((root / "00003.jpg").read_bytes())
    return root


# Computed with the in-memory writer this issue replaced (facegen at commit 3b5c68f): content
# hash and sha256 of each .npy file. (Its 10k CelebA store, 64 px, holdout 1000, hashed
# 699593bf..., and so does the streaming writer: bench/results/prepare.json.)
GOLDEN = {
    "photos": ("0a4adb082561563d92aa0492851aa74656e462c936c7749bdc0a718e9c98a4d6", {
        "holdout.npy": "f51aaf18857507facb6cd2517875808a601234be885b1278c6a3c040595c00b3",
        "train.npy": "d678a229f32de9d1921e8a2b574ec597e379f0dd5332ff18afffa2a9c80d08c3"}),
    "celeba": ("6e987d8521369fa395bee8ef6d1d6e0d29d3f81b08a358063b3a3565edf6e2b9", {
        "holdout.npy": "d822164205da2d975d9a23e44f2b8fdb580c7c3e0e5a0e37d4fbbbb1a51d3084",
        "test.npy": "81e2911c105af82aed2081d44fd2c931c2dcd5add09dd19808cbf9e2fcafe5ee",
        "train.npy": "a2a3e0ff9af5a694b0396b23aa0c563ff370f69a40cc30d5ddde96b00385f84d",
        "val.npy": "a1ea045a41e1792b16ef62bc307a5da76e989f66110095952d6157a28997bf77"}),
}


@pytest.mark.parametrize("workers", [1, 2])
def test_the_streaming_writer_writes_the_in_memory_writers_store_byte_for_byte(tmp_path, workers):
    photos = prepare(golden_photos(tmp_path / "photos"), tmp_path / "a", size=16, crop="center", holdout=5, seed=3,
                     workers=workers, progress=False)
    celeba = prepare(golden_celeba(tmp_path / "celeba"), tmp_path / "b", size=16, crop="celeba", holdout=2,
                     workers=workers, progress=False)
    for store, (content, files) in zip((photos, celeba), GOLDEN.values()):
        assert store.content_hash == content
        assert {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in store.path.glob("*.npy")} == files
    assert celeba.manifest["counts"] == {"files": 15, "faces": 14, "skipped": 1, "duplicates": 0}
    assert photos.manifest["skipped"] == [{"file": "00030.png", "reason": "exact duplicate of 00007.png"},
                                          {"file": "00031.png", "reason": "not an image (unrecognised file format)"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "celeba", "photos"]  # no work folder left


# ---- killed, interrupted, resumed -----------------------------------------------------------

# Runs prepare in a fresh Python that SIGKILLs itself at the n-th call of one function: a kill at
# an exact point of the job, every time (a kill from outside lands wherever the clock says).
KILLER = """
import os, signal, sys
import facegen.data.partial as partial, facegen.data.prepare as prepare, facegen.data.store as store
target, n = sys.argv[1].rsplit(":", 1)
module, name = target.split(".")
owner = {"Partial": partial.Partial, "store": store, "prepare": prepare}[module]
original, calls = getattr(owner, name), [0]
def wrapped(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(owner, name, wrapped)
partial.CHECKPOINT_S = 0.0  # a checkpoint after every file: kills land between any two
store.COPY_CHUNK_BYTES = 7 * 16 * 16 * 3  # the store written 7 faces at a time
prepare.prepare(sys.argv[2], sys.argv[3], size=16, crop="center", holdout=4, shards=int(sys.argv[4]), workers=1, progress=False)
"""

KILL_POINTS = [
    "Partial.add:1",  # before the first file is journalled
    "Partial.add:23",  # mid-decoding
    "Partial.checkpoint:12",  # faces of file 12 written, its journal line not
    "store._read_rows:3",  # mid-way through writing the store's files
    "prepare.replace_dir:1",  # store written, not yet in place
    "Partial.remove:1",  # store in place, work folder not yet removed
]


@pytest.fixture(scope="module")
def photos40(tmp_path_factory) -> tuple[Path, dict]:
    """40 JPEGs + a duplicate, and the content hashes of their uninterrupted stores (1 and 2 shards)."""
    root = tmp_path_factory.mktemp("kill")
    src = jpeg_photos(root / "photos", 40)
    hashes = {shards: prepare(src, root / f"whole{shards}", size=16, crop="center", holdout=4, shards=shards,
                              workers=1, progress=False).content_hash for shards in (1, 2)}
    assert hashes[1] == hashes[2]  # sharding does not change the faces
    return src, hashes


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_prepare_killed_anywhere_continues_to_the_same_store(photos40, tmp_path, point):
    src, hashes = photos40
    out = tmp_path / "store"
    shards = 2 if "read_rows" in point else 1
    killed = subprocess.run([sys.executable, "-c", KILLER, point, str(src), str(out), str(shards)], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if point != "Partial.remove:1":
        with pytest.raises(FacegenError, match="is not finished.*run the same `facegen data prepare` again"):
            FaceStore(out)
        store = prepare(src, out, size=16, crop="center", holdout=4, shards=shards, workers=1, progress=False)
    else:  # killed after the store was in place: it is complete, and a re-run cleans up the work folder
        store = FaceStore(out)
        with pytest.raises(FacegenError, match="already exists"):
            prepare(src, out, size=16, crop="center", holdout=4, workers=1, progress=False)
    assert store.content_hash == hashes[1] and store.num_shards == shards
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_a_prepare_killed_from_outside_continues_to_the_same_store(photos40, tmp_path):
    """SIGKILL to the whole process group (main process and decoding workers), as a scheduler does."""
    src, hashes = photos40
    out = tmp_path / "store"
    code = ("import sys; from facegen.data import partial, prepare; partial.CHECKPOINT_S = 0.0\n"
            "prepare.prepare(sys.argv[1], sys.argv[2], size=16, crop='center', holdout=4, workers=2, progress=False)")
    job = subprocess.Popen([sys.executable, "-c", code, str(src), str(out)], start_new_session=True)
    journal = partial_dir(out) / "files.jsonl"
    while job.poll() is None and not (journal.exists() and journal.stat().st_size > 0):
        time.sleep(0.01)  # until the first files are journalled
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    store = prepare(src, out, size=16, crop="center", holdout=4, workers=2, progress=False)
    assert store.content_hash == hashes[1]


def test_a_torn_journal_and_extra_faces_are_cut_off(photos40, tmp_path):
    """Power loss: the last journal line half written, faces past the journal. Both are dropped."""
    src, hashes = photos40
    out = tmp_path / "store"
    killed = subprocess.run([sys.executable, "-c", KILLER, "Partial.add:20", str(src), str(out), "1"], capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    work = partial_dir(out)
    with open(work / "files.jsonl", "ab") as f:
        f.write(b'{"file": "00019.jpg", "fac')
    with open(work / "faces.u8", "ab") as f:
        f.write(b"\x07" * 1000)
    assert prepare(src, out, size=16, crop="center", holdout=4, workers=1, progress=False).content_hash == hashes[1]


def test_ctrl_c_keeps_the_work_and_the_next_run_starts_its_bar_there(photos40, tmp_path, monkeypatch):
    import facegen.data.partial as partial
    import facegen.progress

    src, hashes = photos40
    out = tmp_path / "store"
    original_add, calls = partial.Partial.add, []

    def interrupted_add(self, *args):
        calls.append(1)
        if len(calls) == 15:
            raise KeyboardInterrupt
        original_add(self, *args)

    monkeypatch.setattr(partial.Partial, "add", interrupted_add)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, out, size=16, crop="center", holdout=4, workers=1, progress=False)
    assert not out.exists()
    with pytest.raises(FacegenError, match="is not finished"):
        FaceStore(out)
    monkeypatch.setattr(partial.Partial, "add", original_add)

    bars, counting_bar = [], facegen.progress.counting_bar
    monkeypatch.setattr(facegen.progress, "counting_bar", lambda label, total, enabled=True, done=0:
                        bars.append((label, total, done)) or counting_bar(label, total, enabled, done))
    store = prepare(src, out, size=16, crop="center", holdout=4, workers=1, progress=False)
    assert bars[0] == ("preparing", 41, 14)  # the 14 files decoded before Ctrl-C count as done
    assert store.content_hash == hashes[1] and not partial_dir(out).exists()


def test_an_assembly_error_keeps_the_decoded_faces_for_the_next_run(photos40, tmp_path, monkeypatch):
    src, hashes = photos40
    out = tmp_path / "store"
    with pytest.raises(FacegenError, match="leaves no training faces.*stay in .*store.partial for the next run"):
        prepare(src, out, size=16, crop="center", holdout=400, workers=1, progress=False)
    import facegen.data.prepare as prep

    monkeypatch.setattr(prep, "_run", lambda *a: pytest.fail("decoded again"))
    assert prepare(src, out, size=16, crop="center", holdout=4, workers=1, progress=False).content_hash == hashes[1]


def test_a_second_prepare_on_the_same_store_is_refused(photos40, tmp_path):
    from filelock import FileLock

    src, _ = photos40
    partial_dir(tmp_path / "store").mkdir()
    with FileLock(partial_dir(tmp_path / "store") / "lock"):
        with pytest.raises(FacegenError, match="another `facegen data prepare` is writing .*store"):
            prepare(src, tmp_path / "store", size=16, crop="center", workers=1, progress=False)


def test_a_damaged_store_file_is_refused_in_one_line(photos40, tmp_path):
    src, _ = photos40
    store = prepare(src, tmp_path / "store", size=16, crop="center", holdout=4, workers=1, progress=False)
    train = store.path / "train.npy"
    os.truncate(train, train.stat().st_size - 100)
    with pytest.raises(FacegenError, match="train.npy is truncated or damaged.*prepare the store again with --overwrite"):
        FaceStore(store.path).split("train")


# ---- shards ---------------------------------------------------------------------------------------


def test_a_sharded_store_reads_as_the_unsharded_one(photos40, tmp_path):
    src, hashes = photos40
    whole = FaceStore(src.parent / "whole1")
    sharded = prepare(src, tmp_path / "s3", size=16, crop="center", holdout=4, shards=3, workers=1, progress=False)
    assert sharded.content_hash == hashes[1] and sharded.num_shards == 3
    assert sharded.shard_sizes("train") == [12, 12, 12] and sharded.shard_sizes("holdout") == [2, 1, 1]
    a, b = whole.split("train"), sharded.split("train")
    assert b.shape == a.shape and len(b) == len(a) == 36
    for index in (5, -1, slice(None), slice(10, 30), slice(3, 30, 4), np.array([35, 0, 12, 11, 13]), a.sum((1, 2, 3)) > 0):
        np.testing.assert_array_equal(b[index], a[index])
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
    # each shard is a store by itself: its rows, its own hash
    shard = FaceStore(tmp_path / "s3" / "shard-00001-of-00003")
    assert shard.manifest["shard"] == {"index": 1, "of": 3, "first_row": {"train": 12, "holdout": 2}}
    np.testing.assert_array_equal(shard.split("train"), a[12:24])


def test_the_sharded_stream_does_not_depend_on_the_process_count():
    """Process r of W reads only shards r*S/W .. (r+1)*S/W - 1 (S a multiple of W) or shard r*S//W
    (W a multiple of S), and the W processes' micro-batches put together are the 1-process batches."""
    from facegen.data.stream import FaceStream, StreamBatches, shard_block

    sizes = [10, 9, 11, 10]
    starts = np.cumsum([0] + sizes)
    for world in (1, 2, 4, 8):
        per_step = 16  # images of one micro-step, all processes
        block = shard_block(per_step, sizes)
        batches = [StreamBatches(FaceStream(40, 0, True, sizes, block), per_step // world, start=32, rank=r, world_size=world)
                   for r in range(world)]
        steps = [[next(it) for it in map(iter, batches)] for _ in range(6)]
        joined = [sum(step, []) for step in steps]
        if world == 1:
            reference = joined
        assert joined == reference
        for r in range(world):
            shards = {int(np.searchsorted(starts, i, side="right")) - 1 for step in steps for i, _ in step[r]}
            assert shards == (set(range(r * 4 // world, (r + 1) * 4 // world)) if world <= 4 else {r * 4 // world})
    with pytest.raises(FacegenError, match="4 shards but a micro-step loads 6 images; use a batch_size / grad_accum that is a multiple of 4"):
        shard_block(6, sizes)


def _read_as_process(args) -> tuple[list, set]:
    """What process `rank` of `world` loads of a store: the train loop's dataset, stream and
    DataLoader (train.py, data_iterator), and which shard files it memory-mapped."""
    from torch.utils.data import DataLoader

    from facegen.data.loader import FaceDataset
    from facegen.data.stream import FaceStream, FlippedFaces, StreamBatches, shard_block

    path, rank, world, per_step, steps = args
    store = FaceStore(path)
    dataset = FlippedFaces(FaceDataset(store, "train"))
    shards = store.shard_sizes("train")
    stream = FaceStream(len(dataset), 0, True, shards, shard_block(per_step, shards))
    loader = DataLoader(dataset, batch_sampler=StreamBatches(stream, per_step // world, rank=rank, world_size=world))
    batches = [b.numpy() for b, _ in zip(loader, range(steps))]
    # only this store's files: a forked worker also shows whatever its parent (other tests) still maps
    mapped = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "shard-" in line and str(path) in line}
    return batches, {Path(m).parent.name for m in mapped}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc to see which files a process mapped")
def test_two_processes_read_a_two_shard_store_each_its_own_half(photos40, tmp_path):
    src, _ = photos40
    store = prepare(src, tmp_path / "s2", size=16, crop="center", shards=2, workers=1, progress=False)  # 40 faces, 20 a shard
    per_step, steps = 8, 5  # 5 micro-steps of 8 images: one epoch of each shard
    with multiprocessing.get_context("fork").Pool(2, maxtasksperchild=1) as pool:  # a fresh process for each rank
        (zero, mapped0), (one, mapped1) = pool.map(_read_as_process, [(store.path, r, 2, per_step, steps) for r in range(2)])
    whole, _ = _read_as_process((store.path, 0, 1, per_step, steps))  # one process, same stream
    assert mapped0 == {"shard-00000-of-00002"} and mapped1 == {"shard-00001-of-00002"}
    for k in range(steps):  # step k's global batch: process 0's micro-batch, then process 1's
        np.testing.assert_array_equal(np.concatenate([zero[k], one[k]]), whole[k])
    # the union is the whole store, each face once (up to its random flip)
    faces = FaceStore(store.path).split("train")
    seen = np.concatenate(zero + one)  # (40, 3, 16, 16) in [-1, 1]
    as_uint8 = np.rint((seen + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)
    canonical = lambda x: min(x.tobytes(), x[:, ::-1].tobytes())  # noqa: E731 (a face or its mirror image)
    assert sorted(map(canonical, as_uint8)) == sorted(map(canonical, np.asarray(faces)))
    assert sorted(map(canonical, as_uint8[:20])) == sorted(map(canonical, np.asarray(faces[:20])))  # process 0: shard 0


def test_training_reads_a_sharded_store(photos40, tmp_path):
    """The loop's wiring (train.py, data_iterator): each micro-step takes a block of every shard."""
    from facegen.train import train

    src, _ = photos40
    tiny = ["resolution=16", "model.block_out_channels=[8,16]", "model.layers_per_block=1", "model.attention_resolutions=[]",
            "batch_size=4", "grad_accum=2", "log_every=1", "tensorboard=false", "sample_seeds=0-1",
            "sample_options={sampler: ddim, steps: 2}", "sample_every=100", "threads=1"]
    two = prepare(src, tmp_path / "s2", size=16, crop="center", shards=2, workers=1, progress=False)
    train("ddpm-tiny32-v", two.path, tmp_path / "run", tiny, steps=2)
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
