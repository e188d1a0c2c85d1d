"""The newcomer's path (issue 29): a run stopped before its export, `facegen export`, and the
mistakes every command answers in one line `error: ...` (a file as --out, a busy port, an empty
seed range, an option out of its range, a sampler the model has not), -h and --version."""

from __future__ import annotations

import shutil
import socket
import time

import numpy as np
import pytest

from conftest import export_tiny_ddpm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# dcgan-tiny32 with narrow nets: G (with its EMA and batch norms) and D, two steps in seconds
FAST = ["model.g_channels=32", "model.g_min_channels=8", "model.d_channels=8", "batch_size=8", "log_every=1",
        "tensorboard=false", "sample_seeds=0-3", "sample_every=100", "checkpoint_every=2", "threads=1"]


def one_error_line(done) -> str:
    """The stderr of a refused command: status 2, exactly one line `error: ...`, no traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny_ddpm(tmp_path_factory):
    return export_tiny_ddpm(tmp_path_factory, "ddim", 2)


# ---- a run without model/, and `facegen export` -------------------------------------------


def test_export_rebuilds_the_model_of_a_stopped_run(celeba_store32, facegen, tmp_path, monkeypatch):
    from facegen.sample import generate, load_generator

    run = tmp_path / "runs" / "x"
    assert facegen("train", "dcgan-tiny32", "--data", celeba_store32.path, "--out", run, "--steps", 2, *FAST).returncode == 0
    original = generate(load_generator(run, "cpu"), range(6), psi=0.8)
    meta = (run / "model" / "facegen.json").read_text()
    shutil.rmtree(run / "model")  # as a Ctrl-C before the end leaves it: checkpoints, no model/

    # eval, sample and serve say what to do, not "no images found" or a report of loss.png
    hint = f"no exported model in {run}; resume training (`facegen train dcgan-tiny32 --data {celeba_store32.path} --out {run} --resume`)"
    fix = f"or export the latest checkpoint with `facegen export {run}`"
    for args in (["sample", run, "--n", "2", "--out", tmp_path / "faces"], ["eval", run, "--ref", celeba_store32.path, "--metrics", "kid"],
                 ["eval", run / "model", "--ref", celeba_store32.path, "--metrics", "kid"], ["serve", run, "--port", "1"]):
        line = one_error_line(facegen(*args))
        assert hint in line and fix in line, line
    assert not (tmp_path / "faces").exists() and not (run / "eval").exists()

    wrong = one_error_line(facegen("export", run, "--checkpoint", "step-7"))
    assert "--checkpoint step-7" in wrong and "step-000002" in wrong
    done = facegen("export", run)
    assert done.returncode == 0, done.stderr
    assert "step-000002 (step 2)" in done.stdout and (run / "model" / "facegen.json").read_text() == meta
    assert np.array_equal(generate(load_generator(run, "cpu"), range(6), psi=0.8), original)
    assert not [p for p in run.iterdir() if p.name.startswith(".model")]  # written atomically: no temporary folder left
    again = one_error_line(facegen("export", run, "--checkpoint", "2"))
    assert "already holds an exported model; pass --overwrite" in again
    assert facegen("export", run, "--checkpoint", "2", "--overwrite").returncode == 0


# ---- --out, --seeds, ranges, samplers ---------------------------------------------------------


@pytest.mark.parametrize("command", ["sample", "eval", "train", "prepare", "demo", "sweep", "project"])
def test_out_that_is_a_file_is_refused_in_one_line(command, celeba_store32, celeba_dir, tiny_gan_model, facegen, tmp_path):
    taken = tmp_path / "taken.txt"
    taken.write_text("my notes")
    args = {"sample": ["sample", tiny_gan_model, "--n", "1"],
            "eval": ["eval", tiny_gan_model, "--ref", celeba_store32.path, "--n", "2", "--metrics", "kid"],
            "train": ["train", "dcgan-tiny32", "--data", celeba_store32.path, "--steps", "1", *FAST],
            "prepare": ["data", "prepare", celeba_dir, "--size", "32", "--limit", "4"],
            "demo": ["demo", "--model", tiny_gan_model, "--n", "16"],
            "sweep": ["sweep", tiny_gan_model, "--ref", celeba_store32.path, "--scales", "1", "--n", "2", "--metrics", "kid"],
            "project": ["project", tiny_gan_model, taken, "--aligned"]}[command]
    line = one_error_line(facegen(*args, "--out", taken))
    assert f"--out {taken}" in line and "is a file" in line
    assert taken.read_text() == "my notes"
    line = one_error_line(facegen(*args, "--out", taken / "inside"))
    assert "--out" in line and "a file" in line


def test_an_empty_seed_range_is_refused(tiny_gan_model, facegen, tmp_path):
    line = one_error_line(facegen("sample", tiny_gan_model, "--seeds", "5-1", "--out", tmp_path / "faces"))
    assert "5-1" in line and "1-5" in line
    assert not (tmp_path / "faces").exists()


@pytest.mark.parametrize("args, option", [(["sample", "{gan}", "--n", "1", "--out", "{tmp}/f", "--truncation", "2"], "--truncation"),
                                          (["serve", "{gan}", "--port", "80000"], "--port"),
                                          (["serve", "{gan}", "--truncation", "0"], "--truncation"),
                                          (["sample", "{gan}", "--n", "0", "--out", "{tmp}/f"], "--n")],
                         ids=["truncation", "port", "serve-truncation", "n"])
def test_values_out_of_range_are_one_line(args, option, tiny_gan_model, facegen, tmp_path):
    line = one_error_line(facegen(*[a.format(gan=tiny_gan_model, tmp=tmp_path) for a in args]))
    assert f"'{option}'" in line and "╭" not in line


def test_a_gan_refuses_sampler_and_steps(tiny_gan_model, facegen, tmp_path):
    line = one_error_line(facegen("sample", tiny_gan_model, "--n", "1", "--out", tmp_path / "f", "--sampler", "ddim"))
    assert "--sampler" in line and "gan model" in line
    assert "--steps" in one_error_line(facegen("sample", tiny_gan_model, "--n", "1", "--out", tmp_path / "f", "--steps", "5"))
    assert not (tmp_path / "f").exists()


def test_an_unknown_sampler_is_refused_before_any_progress_bar(tiny_ddpm, facegen, tmp_path):
    done = facegen("sample", tiny_ddpm, "--n", "1", "--out", tmp_path / "f", "--sampler", "euler")
    line = one_error_line(done)
    assert "unknown sampler 'euler'" in line and "ddim" in line and "sampling" not in done.stdout + done.stderr
    assert not (tmp_path / "f").exists()


# ---- serve: the port before the model ---------------------------------------------------------


def test_serve_on_a_busy_port_or_a_foreign_host_fails_at_once(tiny_gan_model, facegen, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the address was checked")

    monkeypatch.setattr("facegen.sample.load_generator", never)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        start = time.perf_counter()
        line = one_error_line(facegen("serve", tiny_gan_model, "--port", port))
        assert time.perf_counter() - start < 1.0
    assert f"--port {port}" in line and "already in use" in line
    line = one_error_line(facegen("serve", tiny_gan_model, "--host", "192.0.2.1", "--port", port))  # TEST-NET-1: not this machine
    assert "--host 192.0.2.1" in line


# ---- help and version -------------------------------------------------------------------------


def test_short_help_version_and_the_presets_in_train_help(facegen):
    import facegen as package

    short = facegen("sample", "-h")
    assert short.returncode == 0 and "--seeds" in short.stdout and short.stdout == facegen("sample", "--help").stdout
    version = facegen("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"facegen {package.__version__}"
    train = facegen("train", "--help").stdout
    assert all(name in train for name in ("ddpm-tiny32", "dcgan-tiny32", "gan-resnet64", "sd-finetune"))


def test_the_sampling_bar_shows_elapsed_time_and_eta(tiny_gan_model, facegen, tmp_path):
    import re

    done = facegen("sample", tiny_gan_model, "--n", "2", "--out", tmp_path / "f")
    assert done.returncode == 0, done.stderr
    assert re.search(r"sampling .*2/2 .*img/s \d+:\d\d:\d\d ETA", done.stdout + done.stderr), done.stdout + done.stderr
