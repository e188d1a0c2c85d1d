"""Shared fixtures: face folders and small stores made from them.

The face folders are the real ones of ../shared/data (FACEGEN_TEST_DATA overrides the
path) when they are there, or else folders of the same shape made by the embedded default
GAN (tests/synthetic_faces.py, about ten seconds once per session): every test runs
anywhere, none skips for lack of data. To run the suite as a machine without the data
would: FACEGEN_TEST_DATA=/nonexistent python -m pytest.

The stores are built once per test session (a second or two each) in a temporary folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

TEST_DATA = Path(os.environ.get("FACEGEN_TEST_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


FOLDERS = ("celeba-10k", "utkface")


def real_folder(name: str) -> Path | None:
    """TEST_DATA/name when it holds files, else None."""
    path = TEST_DATA / name
    return path if path.is_dir() and any(path.iterdir()) else None


def pytest_report_header(config):
    """Say which faces this run tests on."""
    real = [name for name in FOLDERS if real_folder(name)]
    made = [name for name in FOLDERS if name not in real]
    parts = [f"real {', '.join(real)} from {TEST_DATA}"] if real else []
    parts += [f"default-GAN stand-ins for {', '.join(made)} (not found in {TEST_DATA})"] if made else []
    return "face data: " + "; ".join(parts)


@pytest.fixture(scope="session")
def celeba_dir(tmp_path_factory) -> Path:
    """celeba-10k: 10,000 CelebA aligned JPEGs at 89x109 (half size); or 512 GAN faces
    framed the same way, named the same way."""
    from synthetic_faces import write_celeba_like

    return real_folder("celeba-10k") or write_celeba_like(tmp_path_factory.mktemp("synthetic") / "celeba-like")


@pytest.fixture(scope="session")
def utk_dir(tmp_path_factory) -> Path:
    """utkface: 23,707 UTKFace aligned JPEGs at 200x200; or 100 GAN faces framed the same way,
    named the same way (with made-up age, gender and race)."""
    from synthetic_faces import write_utk_like

    return real_folder("utkface") or write_utk_like(tmp_path_factory.mktemp("synthetic") / "utk-like")


@pytest.fixture(scope="session")
def celeba_store32(celeba_dir, tmp_path_factory):
    """The first 512 celeba_dir faces at 32x32 (CelebA crop): 448 train + 64 holdout."""
    from facegen.data.prepare import prepare

    out = tmp_path_factory.mktemp("stores") / "celeba32"
    return prepare(celeba_dir, out, size=32, crop="celeba", holdout=64, limit=512, workers=1, progress=False)


@pytest.fixture(scope="session")
def celeba_store64(celeba_dir, tmp_path_factory):
    """The first 256 celeba_dir faces at 64x64 (CelebA crop): 224 train + 32 holdout."""
    from facegen.data.prepare import prepare

    out = tmp_path_factory.mktemp("stores") / "celeba64"
    return prepare(celeba_dir, out, size=64, crop="celeba", holdout=32, limit=256, workers=1, progress=False)


@pytest.fixture(scope="session")
def tiny_gan_model(tmp_path_factory) -> Path:
    """A real, exported GAN run model with random weights at 32x32 (milliseconds per face).

    Built and exported through the family's own functions, so loading it exercises the
    same path as a trained run."""
    from facegen.families import get_family

    family = get_family("gan")
    cfg = {"name": "tiny-gan", "model": {"z_dim": 16, "g_channels": 32, "g_min_channels": 8, "d_channels": 8}}
    out = tmp_path_factory.mktemp("models") / "tiny-gan"
    family.export(family.build(cfg, 32), cfg, out)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module of tiny nets: they gain nothing from the thread pool,
    whose spinning threads slow every op many times over on a busy 2-core machine.
    Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def facegen(monkeypatch, capsys):
    """Run the `facegen` command in this process (the Inception network stays loaded
    between commands): returns (exit status, stdout, stderr)."""
    from facegen.cli import main

    def run(*args, cache=None):
        if cache:
            monkeypatch.setenv("FACEGEN_CACHE", str(cache))
        monkeypatch.setattr(sys, "argv", ["facegen", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run


def export_tiny_ddpm(tmp_path_factory, sampler: str, steps: int) -> Path:
    """Export a 16x16 UNet (8/16 channels, 100 train timesteps) with the given default sampler:
    a real diffusion model that samples in milliseconds. Returns the run folder."""
    from facegen.families import get_family

    family = get_family("ddpm")
    model = {**family.model_defaults, "block_out_channels": [8, 16], "layers_per_block": 1, "attention_resolutions": [],
             "norm_num_groups": 4, "num_train_timesteps": 100, "sampler": sampler, "sample_steps": steps}
    cfg = {"name": "tiny-ddpm", "lr": 1e-4, "adam_betas": [0.9, 0.999], "weight_decay": 0.0, "model": model}
    run = tmp_path_factory.mktemp("runs") / "tiny-ddpm"
    family.export(family.build(cfg, 16), cfg, run / "model")
    return run
