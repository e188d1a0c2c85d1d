"""Sample folders are reused only for the model and settings that made them (issue 18, item 3):
`sample_to_folder` refuses a folder of another model's or sampler's faces in one line,
`facegen eval` and `facegen sweep` sample their own folders again, and an interrupted job
resumes the seeds already written when nothing changed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from conftest import export_tiny_ddpm
from facegen import sample
from facegen.utils import FacegenError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def twin_gan(tiny_gan_model, tmp_path_factory):
    """The tiny GAN's twin: the same name and config, other weights (one tensor changed)."""
    twin = tmp_path_factory.mktemp("twin") / tiny_gan_model.name
    shutil.copytree(tiny_gan_model, twin)
    weights = load_file(twin / "generator.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.ndim > 1)
    weights[name] = weights[name] * 1.5
    save_file(weights, twin / "generator.safetensors")
    return twin


@pytest.fixture(scope="module")
def tiny_ddpm(tmp_path_factory):
    return export_tiny_ddpm(tmp_path_factory, "ddim", 2)


def faces(folder, seeds):
    return [np.asarray(Image.open(sample.seed_file(folder, s))) for s in seeds]


def test_a_folder_refuses_another_models_faces_and_resumes_its_own(tiny_gan_model, twin_gan, tmp_path):
    out = tmp_path / "faces"
    assert sample.sample_to_folder(tiny_gan_model, range(3), out, show_progress=False)["written"] == 3
    record = json.loads((out / sample.PROVENANCE).read_text())
    assert record["model"]["family"] == "gan" and len(record["weights_sha256"]) == 64
    before = faces(out, range(3))

    # Same name, same config, other weights: refused in one line naming the folder and the fix.
    with pytest.raises(FacegenError) as refused:
        sample.sample_to_folder(twin_gan, range(4), out, show_progress=False)
    message = str(refused.value)
    assert str(out) in message and "weights" in message and "--out" in message and "\n" not in message
    assert sorted(p.name for p in out.glob("seed*.png")) == [f"seed{s:06d}.png" for s in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(faces(out, range(3)), before))

    # The model that made them: the three are kept, the fourth is added.
    again = sample.sample_to_folder(tiny_gan_model, range(4), out, show_progress=False)
    assert (again["written"], again["skipped"]) == (1, 3)
    twin_faces = sample.generate(sample.load_generator(twin_gan, "cpu"), range(3))
    assert not np.array_equal(twin_faces, np.stack(before))  # the refusal mattered: other pixels


def test_a_folder_refuses_other_sampler_settings_but_not_the_defaults_spelt_out(tiny_ddpm, tmp_path):
    out = tmp_path / "faces"
    sample.sample_to_folder(tiny_ddpm, range(2), out, show_progress=False)          # the model's ddim, 2 steps
    same = sample.sample_to_folder(tiny_ddpm, range(2), out, show_progress=False, sampler="ddim", steps=2, eta=0.0)
    assert same["skipped"] == 2  # the defaults given explicitly are the same faces
    for options, what in [({"steps": 3}, "steps 2, not 3"), ({"sampler": "dpm++"}, "sampler ddim, not dpm++"),
                          ({"eta": 1.0}, "eta 0, not 1")]:
        with pytest.raises(FacegenError, match=what):
            sample.sample_to_folder(tiny_ddpm, range(2), out, show_progress=False, **options)


def test_faces_without_a_record_are_not_reused(tiny_gan_model, tmp_path):
    """A folder from before the record (or from another tool): nothing says what made its faces."""
    out = tmp_path / "old"
    out.mkdir()
    Image.new("RGB", (32, 32)).save(out / "seed000000.png")
    with pytest.raises(FacegenError, match="no record of the model"):
        sample.sample_to_folder(tiny_gan_model, range(2), out, show_progress=False)


def test_an_interrupted_job_resumes_the_seeds_it_wrote(tiny_gan_model, tmp_path):
    generator = sample.load_generator(tiny_gan_model, "cpu")

    class Killed(Exception):
        pass

    class DiesAfterOneBatch:
        def __init__(self, inner):
            self.inner, self.batches = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def decode(self, noise, seeds=(), **options):
            self.batches += 1
            if self.batches > 1:
                raise Killed
            return self.inner.decode(noise, seeds, **options)

    out = tmp_path / "faces"
    with pytest.raises(Killed):
        sample.sample_to_folder(DiesAfterOneBatch(generator), range(6), out, batch_size=2, show_progress=False)
    assert sorted(p.name for p in out.glob("seed*.png")) == ["seed000000.png", "seed000001.png"]
    assert not list(out.glob(".*.tmp"))  # no half file
    done = sample.sample_to_folder(generator, range(6), out, batch_size=2, show_progress=False)
    assert (done["written"], done["skipped"]) == (4, 2)
    # same batches as the folder's (batched convolutions may differ in the last bit otherwise)
    assert np.array_equal(np.stack(faces(out, range(6))), sample.generate(generator, range(6), batch_size=2))


def test_eval_samples_again_when_the_model_changed(celeba_store32, tiny_gan_model, twin_gan, facegen, tmp_path):
    out = tmp_path / "report"
    args = ["--ref", celeba_store32.path, "--n", "4", "--metrics", "faces", "--out", out]
    assert facegen("eval", tiny_gan_model, *args, cache=tmp_path / "cache").returncode == 0
    done = facegen("eval", twin_gan, *args, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    twin = sample.load_generator(twin_gan, "cpu")
    assert np.array_equal(np.stack(faces(out / "samples", range(4))), sample.generate(twin, range(4)))
    assert "sampling them again" in done.stderr
    report = json.loads((out / "metrics.json").read_text())
    assert report["source"]["samples"]["weights_sha256"] == sample.weights_hash(twin)


def test_sweep_samples_again_when_the_model_changed(celeba_store32, tiny_gan_model, twin_gan, tmp_path, monkeypatch):
    from facegen.sweep import sweep

    monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sweep"
    sweep(tiny_gan_model, celeba_store32.path, [1], n=3, out=out, metrics="faces", progress=False)
    sweep(twin_gan, celeba_store32.path, [1], n=3, out=out, metrics="faces", progress=False)
    twin = sample.load_generator(twin_gan, "cpu")
    assert np.array_equal(np.stack(faces(out / "guidance-1" / "samples", range(3))), sample.generate(twin, range(3)))


# ---- issue 26: the batch size and the device are part of a folder's recipe ------------------


class OnAnotherDevice:
    """The real generator, reporting that it runs on the second GPU (its faces are the CPU's here)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def info(self):
        return {**self.inner.info(), "device": "cuda:1"}


def test_the_record_names_the_sampling_code_the_batch_size_and_the_device(tiny_ddpm, tmp_path):
    import tomllib
    from pathlib import Path

    import facegen

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert facegen.__version__ == pyproject["project"]["version"] == "0.2.0"
    out = tmp_path / "faces"
    sample.sample_to_folder(tiny_ddpm, range(2), out, batch_size=2, show_progress=False)
    record = sample.read_record(out)
    assert (record["facegen"], record["batch_size"], record["device"]) == ("0.2.0", 2, "cpu")


def test_a_folder_refuses_another_batch_size_naming_the_one_to_keep(tiny_ddpm, tmp_path):
    """A batch of another shape may round a face by one grey level (docs/training.md): not the same recipe."""
    out = tmp_path / "faces"
    sample.sample_to_folder(tiny_ddpm, range(2), out, batch_size=2, show_progress=False)
    with pytest.raises(FacegenError) as refused:
        sample.sample_to_folder(tiny_ddpm, range(4), out, batch_size=1, show_progress=False)
    message = str(refused.value)
    assert "batch_size 2, not 1" in message and "--batch 2" in message and "\n" not in message
    assert sorted(p.name for p in out.glob("seed*.png")) == ["seed000000.png", "seed000001.png"]
    kept = sample.sample_to_folder(tiny_ddpm, range(4), out, batch_size=2, show_progress=False)
    assert (kept["written"], kept["skipped"]) == (2, 2)


def test_a_folder_refuses_faces_of_another_device(tiny_ddpm, tmp_path):
    out = tmp_path / "faces"
    generator = sample.load_generator(tiny_ddpm, "cpu")
    sample.sample_to_folder(generator, range(2), out, batch_size=2, show_progress=False)
    with pytest.raises(FacegenError) as refused:
        sample.sample_to_folder(OnAnotherDevice(generator), range(4), out, batch_size=2, show_progress=False)
    message = str(refused.value)
    assert "device cpu, not cuda" in message and "on cpu" in message and "\n" not in message
    # Which GPU of a machine does not matter (each process of a launch samples on its own).
    other = tmp_path / "gpu"
    sample.sample_to_folder(OnAnotherDevice(generator), range(2), other, batch_size=2, show_progress=False)
    assert sample.read_record(other)["device"] == "cuda"
