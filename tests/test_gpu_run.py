"""scripts/gpu_run.sh --cpu-check: every step of the prepared GPU run, on the CPU, with the same $OUT layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from PIL import Image

from facegen.checkpoint import unpack_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_the_prepared_gpu_run_runs_every_step_on_the_cpu(celeba_store64, tmp_path):
    faces = tmp_path / "train64"  # what scripts/pack_store.py sends: one 64 px picture per face
    faces.mkdir()
    for i, face in enumerate(celeba_store64.split("train")[:160]):
        Image.fromarray(face).save(faces / f"{i:06d}.png")
    out, work = tmp_path / "out", tmp_path / "work"
    log = run_check(out, work, faces, tmp_path / "no-pack")

    # The layout a lent machine sends back: at most 8 files, none over 16 MiB, at most 2 folders down.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.relative_to(out).as_posix() for p in files} >= {"run.tgz", "bench.json", "metrics.json", "device.log",
                                                               "pack/checkpoint-pack.json", "pack/run-meta.json"}
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in files), [(p.name, p.stat().st_size) for p in files]
    with tarfile.open(out / "run.tgz") as tar:
        names = set(tar.getnames())
    assert {"flagship/model/generator.safetensors", "flagship/model/facegen.json", "flagship/metrics.jsonl", "flagship/config.yaml",
            "flagship/train.log", "flagship/bench.json", "flagship/eval-metrics.json"} <= names
    assert any(n.startswith("flagship/samples/step-") and n.endswith(".png") for n in names)  # the grids people look at
    assert not any("/checkpoints/" in n for n in names)
    bench = json.loads((out / "bench.json").read_text())
    assert bench["presets"]["gan-tiny16"]["img_per_s"] > 0 and bench["data_path"]["device_img_per_s"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "kid" in json.dumps(metrics) and "precision" in json.dumps(metrics)
    manifest = json.loads((out / "pack" / "checkpoint-pack.json").read_text())
    assert manifest["half"] and not manifest["optimizers"] and manifest["step"] >= 1
    # the pack continues the run: it unpacks into a checkpoint of the step it names
    restored = unpack_checkpoint(out / "pack", tmp_path / "again" / "checkpoints")
    assert json.loads((restored / "state.json").read_text())["step"] == manifest["step"]
    meta = json.loads((out / "pack" / "run-meta.json").read_text())
    assert "family: gan" in meta["config_yaml"] and len(meta["store_content_hash"]) == 64
    assert "time limit of 0.3 min reached" in log

    # The next window: a fresh machine with the pack committed continues the run from its step.
    later = run_check(tmp_path / "out2", tmp_path / "work2", faces, out / "pack")
    assert f"resuming from {tmp_path / 'work2' / 'flagship' / 'checkpoints' / manifest['checkpoint']}" in later
    assert "holds no optimizer state for D, G" in later
    assert json.loads((tmp_path / "out2" / "pack" / "checkpoint-pack.json").read_text())["step"] > manifest["step"]


def run_check(out: Path, work: Path, faces: Path, pack: Path) -> str:
    env = {**os.environ, "OUT": str(out), "WORK": str(work), "FACES": str(faces), "PY": sys.executable, "PACK": str(pack)}
    done = subprocess.run(["bash", "scripts/gpu_run.sh", "--cpu-check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = (out / "device.log").read_text() if (out / "device.log").exists() else done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    return log
