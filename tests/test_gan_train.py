"""GAN family end to end in the shared loop, on CelebA faces (celeba_store32; see conftest.py):
each objective trains, resumes exactly, samples by seed and is evaluated with KID."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from facegen.checkpoint import latest_checkpoint
from facegen.families.base import Diverged
from facegen.sample import load_generator, sample_to_folder
from facegen.train import train

# The tiny presets with narrower nets and few images per step: every part of the loop runs.
FAST = ["model.g_channels=32", "model.g_min_channels=8", "model.d_channels=8", "batch_size=8", "log_every=1",
        "tensorboard=false", "sample_seeds=0-3", "sample_every=100", "checkpoint_every=2"]
PRESETS = ["dcgan-tiny32", "gan-l2-tiny32", "wgan-tiny32", "wgan-gp-tiny32", "gan-resnet64"]


def weights(checkpoint, net):
    return load_file(checkpoint / "nets" / f"{net}.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_objective_trains_resumes_exactly_samples_and_evaluates(preset, celeba_store32, tmp_path, monkeypatch):
    whole, split = tmp_path / "whole", tmp_path / "split"
    fast = FAST + (["model.n_critic=2"] if preset.startswith("wgan") else [])  # still repeats, at less cost
    fast += ["resolution=32"] if preset == "gan-resnet64" else []            # the residual nets at the store's size
    train(preset, celeba_store32.path, whole, fast, steps=3)
    train(preset, celeba_store32.path, split, fast, steps=2)
    train(preset, celeba_store32.path, split, [], steps=3, resume=True)

    # Both nets, both optimizers' effects and the EMA of G follow the uninterrupted run.
    a, b = latest_checkpoint(whole / "checkpoints"), latest_checkpoint(split / "checkpoints")
    for net in ("G", "D"):
        for key, value in weights(a, net).items():
            torch.testing.assert_close(weights(b, net)[key], value, rtol=0, atol=1e-6, msg=f"{net}.{key}")
    ema_a, ema_b = (torch.load(c / "ema" / "G.pt", weights_only=True) for c in (a, b))
    for x, y in zip(ema_a["shadow_params"], ema_b["shadow_params"]):
        torch.testing.assert_close(y, x, rtol=0, atol=1e-6)
    assert set((b / "optimizers").iterdir()) and {p.stem for p in (b / "optimizers").iterdir()} >= {"D", "G"}

    # Progress logs both losses; the export is the EMA generator alone.
    row = json.loads((split / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss_D", "loss_G", "score_real", "score_fake"} <= set(row)
    assert all(torch.isfinite(torch.tensor(row[k])) for k in ("loss_D", "loss_G"))
    assert sorted(p.name for p in (split / "model").iterdir()) == ["facegen.json", "generator.safetensors"]
    assert (split / "samples").is_dir() and (split / "loss.png").is_file()

    # Sampling: a seed is the same face in any batch, from RUN or RUN/model.
    gen = load_generator(split, device="cpu")
    assert gen.info()["family"] == "gan" and gen.resolution == 32
    sample_to_folder(split, range(4), tmp_path / "faces", batch_size=3, show_progress=False)
    one = gen.decode(gen.initial_noise([2]), [2])
    many = gen.decode(gen.initial_noise([0, 1, 2, 3]), [0, 1, 2, 3])
    torch.testing.assert_close(one[0], many[2], rtol=0, atol=1e-5)
    assert len(list((tmp_path / "faces").glob("seed*.png"))) == 4

    if preset == "dcgan-tiny32":  # evaluation needs the Inception network: once is enough for the family
        from facegen.evaluate import evaluate

        monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / "cache"))
        report = evaluate(split, ref=celeba_store32.path, metrics="kid", n=8, out=tmp_path / "eval", progress=False)
        assert report["source"]["kind"] == "run" and report["metrics"]["kid"]["n_generated"] == 8


@pytest.mark.slow
def test_critic_loss_past_the_bound_stops_with_the_last_checkpoint(celeba_store32, tmp_path, monkeypatch):
    from facegen.families.gan import loss as gan_loss

    real_term, calls = gan_loss.wgan_critic, []

    def exploding(real, fake):  # 2 critic calls per step: explodes in step 3, after the step-2 checkpoint
        calls.append(1)
        return real_term(real, fake) * (1e9 if len(calls) > 4 else 1)

    monkeypatch.setattr(gan_loss, "wgan_critic", exploding)
    run = tmp_path / "run"
    with pytest.raises(Diverged, match=r"D loss .* past the bound .*model.diverge_above.*last good checkpoint is .*step-000002"):
        train("wgan-gp-tiny32", celeba_store32.path, run, FAST + ["model.n_critic=2"], steps=6)
    assert not (run / "model").exists()


def moved(run, to, optimizers: bool, part_mib: float):
    """`run`'s newest checkpoint packed, its parts "sent" (copied) and unpacked into a copy of the
    run without checkpoints, as a continuation on another machine would get it."""
    import shutil

    from facegen.checkpoint import pack_checkpoint, unpack_checkpoint

    parts = pack_checkpoint(latest_checkpoint(run / "checkpoints"), to / "pack", part_mib=part_mib, optimizers=optimizers)
    shutil.copytree(run, to / "run", ignore=shutil.ignore_patterns("checkpoints"))
    unpack_checkpoint(to / "pack", to / "run" / "checkpoints")
    return to / "run", parts


def test_a_packed_checkpoint_crosses_a_file_size_limit_and_resumes(celeba_store32, tmp_path, capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    train("dcgan-tiny32", celeba_store32.path, whole, FAST, steps=4)
    train("dcgan-tiny32", celeba_store32.path, split, FAST, steps=2)
    limit = 0.05  # MiB: the checkpoint (about 0.3 MB here) in several parts, as 16 MiB cuts a full-size one
    exact, parts = moved(split, tmp_path / "with", optimizers=True, part_mib=limit)
    assert len(parts) > 2 and all(p.stat().st_size <= limit * 2**20 for p in parts)
    # With the optimizer state the continuation is the uninterrupted run's.
    train("dcgan-tiny32", celeba_store32.path, exact, [], steps=4, resume=True)
    a, b = latest_checkpoint(whole / "checkpoints"), latest_checkpoint(exact / "checkpoints")
    for net in ("G", "D"):
        for key, value in weights(a, net).items():
            torch.testing.assert_close(weights(b, net)[key], value, rtol=0, atol=1e-6, msg=f"{net}.{key}")

    # Without it (the size that matters: Adam's state is twice the weights) the weights, EMA and
    # step travel bit for bit, the resume says the moments restart, and training goes on.
    light, light_parts = moved(split, tmp_path / "without", optimizers=False, part_mib=limit)
    assert sum(p.stat().st_size for p in light_parts) < sum(p.stat().st_size for p in parts)
    source, copy = latest_checkpoint(split / "checkpoints"), latest_checkpoint(light / "checkpoints")
    assert not (copy / "optimizers").exists()
    for path in source.rglob("*"):
        if path.is_file() and "optimizers" not in path.parts:
            assert (copy / path.relative_to(source)).read_bytes() == path.read_bytes(), path
    capsys.readouterr()
    train("dcgan-tiny32", celeba_store32.path, light, [], steps=4, resume=True)
    assert "holds no optimizer state for D, G" in capsys.readouterr().err
    after = latest_checkpoint(light / "checkpoints")
    assert json.loads((after / "state.json").read_text())["step"] == 4 and {p.stem for p in (after / "optimizers").iterdir()} == {"D", "G"}
    trained, packed = weights(after, "G"), weights(copy, "G")
    assert any(not torch.equal(trained[k], packed[k]) for k in packed)


def test_a_half_precision_pack_is_half_the_bytes_and_resumes_in_float32(celeba_store32, tmp_path):
    from safetensors.torch import load_file

    from facegen.checkpoint import pack_checkpoint, unpack_checkpoint

    run = tmp_path / "run"
    train("dcgan-tiny32", celeba_store32.path, run, FAST, steps=2)
    source = latest_checkpoint(run / "checkpoints")
    full = pack_checkpoint(source, tmp_path / "full", part_mib=16)
    half = pack_checkpoint(source, tmp_path / "half", part_mib=16, half=True)
    assert sum(p.stat().st_size for p in half) < 0.6 * sum(p.stat().st_size for p in full)
    copy = unpack_checkpoint(tmp_path / "half", tmp_path / "to" / "checkpoints")
    for net in ("G", "D"):
        a, b = load_file(source / "nets" / f"{net}.safetensors"), load_file(copy / "nets" / f"{net}.safetensors")
        for key, value in a.items():
            assert b[key].dtype == value.dtype  # float32 again (and integer buffers untouched)
            torch.testing.assert_close(b[key], value, rtol=2**-10, atol=1e-7, msg=f"{net}.{key}")
    ema_a = torch.load(source / "ema" / "G.pt", weights_only=True)
    ema_b = torch.load(copy / "ema" / "G.pt", weights_only=True)
    assert ema_b["optimization_step"] == ema_a["optimization_step"]
    assert all(y.dtype == torch.float32 and torch.allclose(x, y, rtol=2**-10, atol=1e-7) for x, y in zip(ema_a["shadow_params"], ema_b["shadow_params"]))
    import shutil

    shutil.copytree(run, tmp_path / "cont", ignore=shutil.ignore_patterns("checkpoints"))
    unpack_checkpoint(tmp_path / "half", tmp_path / "cont" / "checkpoints")
    train("dcgan-tiny32", celeba_store32.path, tmp_path / "cont", [], steps=3, resume=True)
    assert json.loads((latest_checkpoint(tmp_path / "cont" / "checkpoints") / "state.json").read_text())["step"] == 3


def test_unpacking_refuses_missing_or_damaged_parts(celeba_store32, tmp_path):
    from facegen.checkpoint import pack_checkpoint, unpack_checkpoint
    from facegen.utils import FacegenError

    run = tmp_path / "run"
    train("dcgan-tiny32", celeba_store32.path, run, FAST, steps=2)
    parts = pack_checkpoint(latest_checkpoint(run / "checkpoints"), tmp_path / "pack", part_mib=0.05)
    with pytest.raises(FacegenError, match=r"nothing: no checkpoint-pack\.json"):
        unpack_checkpoint(tmp_path / "nothing", tmp_path / "to")
    damaged = bytearray(parts[1].read_bytes())
    damaged[100] ^= 1
    parts[1].write_bytes(bytes(damaged))
    with pytest.raises(FacegenError, match=r"do not add up .* copy them again"):
        unpack_checkpoint(tmp_path / "pack", tmp_path / "to")
    parts[2].unlink()
    with pytest.raises(FacegenError, match=rf"parts missing \({parts[2].name}\)"):
        unpack_checkpoint(tmp_path / "pack", tmp_path / "to")
    assert not (tmp_path / "to").exists() or not any((tmp_path / "to").iterdir())  # nothing half-written
