"""Shared fixtures: the real face folders of ../shared/data and small stores made from them.

The stores are built once per test session (a second or two each) in a temporary folder.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir() or not any(path.iterdir()):
        pytest.skip(f"real faces not found at {path} (place the {name} folder there to run this test)")
    return path


@pytest.fixture(scope="session")
def celeba_dir() -> Path:
    """10,000 CelebA aligned JPEGs at 89x109 (half size)."""
    return _shared("celeba-10k")


@pytest.fixture(scope="session")
def utk_dir() -> Path:
    """23,707 UTKFace aligned JPEGs at 200x200."""
    return _shared("utkface")


@pytest.fixture(scope="session")
def celeba_store32(celeba_dir, tmp_path_factory):
    """The first 512 CelebA faces at 32x32 (CelebA crop): 448 train + 64 holdout."""
    from facegen.data.prepare import prepare

    out = tmp_path_factory.mktemp("stores") / "celeba32"
    return prepare(celeba_dir, out, size=32, crop="celeba", holdout=64, limit=512, workers=1, progress=False)


@pytest.fixture(scope="session")
def celeba_store64(celeba_dir, tmp_path_factory):
    """The first 256 CelebA faces at 64x64 (CelebA crop): 224 train + 32 holdout."""
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
