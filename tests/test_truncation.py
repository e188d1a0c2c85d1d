"""GAN truncation (psi): z' = psi * z through every entry point (library, CLI, web API), the
same faces as before at psi = 1, and a one-line refusal wherever psi cannot apply."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from conftest import export_tiny_ddpm
from facegen import sample
from facegen.cli import app
from facegen.utils import FacegenError, to_uint8

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEEDS = [0, 1, 7]


@pytest.fixture(scope="module")
def gan(tiny_gan_model):
    return sample.load_generator(tiny_gan_model, "cpu")


@pytest.fixture(scope="module")
def tiny_ddpm(tmp_path_factory):
    """A 16x16 UNet, 2 DDIM steps: a real diffusion model in milliseconds."""
    return export_tiny_ddpm(tmp_path_factory, "ddim", 2)


def recorded_z(gan) -> tuple[list[torch.Tensor], object]:
    """Every z that reaches G's forward, recorded by a pre-hook (removed by the caller)."""
    seen: list[torch.Tensor] = []
    handle = gan.G.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    return seen, handle


def pixels(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


# -- the generator -----------------------------------------------------------------------


def test_psi_1_is_bitwise_the_untruncated_sampler(gan):
    # "Before": what decode did without truncation, one forward pass of G on z.
    with torch.inference_mode():
        before = to_uint8(gan.G(gan.initial_noise(SEEDS)).clamp(-1, 1))
    assert np.array_equal(sample.generate(gan, SEEDS), before)
    assert np.array_equal(sample.generate(gan, SEEDS, psi=1.0), before)
    assert np.array_equal(sample.generate(gan, SEEDS, psi=1), before)


def test_psi_scales_z_exactly_and_changes_the_face(gan):
    seen, handle = recorded_z(gan)
    try:
        plain = sample.generate(gan, SEEDS, batch_size=len(SEEDS))
        half = sample.generate(gan, SEEDS, batch_size=len(SEEDS), psi=0.5)
    finally:
        handle.remove()
    z = gan.initial_noise(SEEDS)
    assert torch.equal(seen[0], z) and torch.equal(seen[1], 0.5 * z)  # z' = psi * z, nothing else
    assert not np.array_equal(plain, half)
    assert np.array_equal(sample.generate(gan, SEEDS, psi=0.5), half)  # deterministic per seed
    assert np.array_equal(sample.generate(gan, [7], psi=0.5)[0], half[2])  # and independent of the batch


@pytest.mark.parametrize("psi", [0, 0.0, -0.5, 1.0001, 2, float("nan"), float("inf")])
def test_psi_outside_0_1_is_refused(gan, psi):
    with pytest.raises(FacegenError, match="truncation psi .* out of range"):
        sample.generate(gan, [0], psi=psi)


def test_morph_frames_take_psi(gan):
    from facegen.serve.morph import morph_frames

    plain, half = morph_frames(gan, 1, 2, 3), morph_frames(gan, 1, 2, 3, psi=0.5)
    assert plain.shape == half.shape == (3, gan.resolution, gan.resolution, 3) and not np.array_equal(plain, half)


# -- families without truncation ---------------------------------------------------------


def test_diffusion_refuses_psi_but_runs_at_psi_1(tiny_ddpm, tmp_path):
    ddpm = sample.load_generator(tiny_ddpm, "cpu")
    with pytest.raises(FacegenError, match=r"truncation \(--truncation / psi = 0.5\) is for GANs: this ddpm model has none"):
        sample.generate(ddpm, [0], psi=0.5)
    with pytest.raises(FacegenError, match="truncation"):
        sample.sample_to_folder(ddpm, [0], tmp_path / "faces", show_progress=False, psi=0.5)
    assert not (tmp_path / "faces").exists()  # refused before the folder is made
    assert np.array_equal(sample.generate(ddpm, [0], psi=1.0), sample.generate(ddpm, [0]))


@pytest.mark.parametrize("where", ["facegen.families.ddpm.generator:DiffusionGenerator", "facegen.families.ldm.generator:LatentGenerator",
                                   "facegen.families.sd.generator:SdGenerator", "facegen.families.ae.generator:Reconstructions"])
def test_every_other_family_refuses_psi(where):
    import importlib

    module, name = where.split(":")
    cls = getattr(importlib.import_module(module), name)
    generator = cls.__new__(cls)  # decode_options needs only the class: no weights to build
    with pytest.raises(FacegenError, match=f"is for GANs: this {cls.family} model has none"):
        sample.decode_options(generator, {"psi": 0.7, "steps": 3})
    assert sample.decode_options(generator, {"psi": 1.0, "steps": 3}) == {"steps": 3}  # psi = 1 never reaches decode


# -- the sample folder and the CLI -------------------------------------------------------


def test_cli_samples_at_a_psi_and_a_folder_keeps_one_psi(tiny_gan_model, gan, tmp_path, facegen):
    out = tmp_path / "psi0.7"
    result = CliRunner().invoke(app, ["sample", str(tiny_gan_model), "--n", "3", "--out", str(out), "--truncation", "0.7"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.png")) == [f"seed{s:06d}.png" for s in range(3)]
    assert sample.read_record(out)["settings"]["psi"] == 0.7
    expected = sample.generate(gan, range(3), psi=0.7)
    assert all(np.array_equal(np.asarray(Image.open(sample.seed_file(out, s))), expected[s]) for s in range(3))

    # A rerun at the same psi continues the folder; another psi is refused in one line, both ways.
    again = CliRunner().invoke(app, ["sample", str(tiny_gan_model), "--n", "4", "--out", str(out), "--truncation", "0.7"])
    assert again.exit_code == 0 and "1 written, 3 already there" in again.output
    refused = facegen("sample", tiny_gan_model, "--n", "4", "--out", out)
    assert refused.returncode == 2 and "holds faces of another model or settings (psi 0.7, not 1)" in refused.stderr
    plain = tmp_path / "plain"
    assert facegen("sample", tiny_gan_model, "--n", "2", "--out", plain).returncode == 0
    assert sorted(p.name for p in plain.glob("*.png")) == ["seed000000.png", "seed000001.png"]
    assert sample.read_record(plain)["settings"]["psi"] == 1.0
    refused = facegen("sample", tiny_gan_model, "--n", "2", "--out", plain, "--truncation", "0.5")
    assert refused.returncode == 2 and "holds faces of another model or settings (psi 1, not 0.5)" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("psi", ["0", "1.5", "-1", "nan"])
def test_cli_refuses_psi_outside_0_1_when_parsing(tiny_gan_model, tmp_path, psi):
    result = CliRunner().invoke(app, ["sample", str(tiny_gan_model), "--n", "1", "--out", str(tmp_path / "x"), "--truncation", psi])
    assert result.exit_code == 2 and "Invalid value for '--truncation'" in result.output
    assert not (tmp_path / "x").exists()


def test_cli_diffusion_refuses_truncation_in_one_line(tiny_ddpm, tmp_path, facegen):
    result = facegen("sample", tiny_ddpm, "--n", "1", "--out", tmp_path / "x", "--truncation", "0.8")
    assert result.returncode == 2 and "--truncation" in result.stderr and "ddpm model has none" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_eval_of_a_truncated_run_gets_its_own_folder_and_name(tiny_gan_model):
    from facegen.evaluate import default_out

    assert default_out(tiny_gan_model) == default_out(tiny_gan_model, 1.0) == tiny_gan_model / "eval"
    assert default_out(tiny_gan_model, 0.7) == tiny_gan_model / "eval-psi0.7"


# -- the web API -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(gan):
    from facegen.serve.app import create_app

    with TestClient(create_app(gan, window_ms=1)) as c:
        yield c


def test_endpoint_psi_changes_the_face_and_its_cache_keys(client, gan):
    plain, one, half = (client.get(f"/face.png?seed=5{q}") for q in ("", "&psi=1", "&psi=0.5"))
    assert plain.status_code == one.status_code == half.status_code == 200
    assert one.content == plain.content and one.headers["etag"] == plain.headers["etag"]  # psi=1 is the plain face
    assert half.headers["etag"] != plain.headers["etag"] and not np.array_equal(pixels(half.content), pixels(plain.content))
    assert np.array_equal(pixels(half.content), sample.generate(gan, [5], psi=0.5)[0])
    assert client.get("/face.png?seed=5&psi=0.50").content == half.content  # one float, one cache entry
    morph = client.get("/morph.gif?from=1&to=2&frames=2&psi=0.5")
    assert morph.status_code == 200 and morph.headers["etag"] != client.get("/morph.gif?from=1&to=2&frames=2").headers["etag"]


@pytest.mark.parametrize("url", ["/face.png?seed=1&psi=0", "/face.png?seed=1&psi=1.5", "/face.png?psi=-0.1",
                                 "/face.png?seed=1&psi=nan", "/morph.gif?from=1&to=2&psi=2"])
def test_endpoint_refuses_psi_outside_0_1_with_400(client, url):
    r = client.get(url)
    assert r.status_code == 400
    assert r.json()["status"] == 400 and "psi" in r.json()["error"] and "\n" not in r.json()["error"]
    assert "use 0 < psi <= 1" in r.json()["error"]                # says what is valid


@pytest.mark.parametrize("url", ["/face.png?seed=1&psi=abc", "/face.png?seed=1&psi=", "/morph.gif?from=1&to=2&psi=0.5x"])
def test_endpoint_psi_that_is_not_a_number_is_told_the_range(client, url):
    r = client.get(url)
    assert r.status_code == 422
    assert r.json()["error"].startswith("psi must be a number above 0 and at most 1 (1 = no truncation), not ")


def test_endpoint_of_a_diffusion_model_refuses_psi(tiny_ddpm):
    from facegen.serve.app import create_app

    with TestClient(create_app(sample.load_generator(tiny_ddpm, "cpu"), window_ms=1)) as c:
        r = c.get("/face.png?seed=1&psi=0.7")
        assert r.status_code == 400 and "ddpm model has none" in r.json()["error"]
        assert c.get("/face.png?seed=1&psi=1").status_code == 200


def test_the_page_uses_the_models_recommended_psi_and_sampling_does_not(tiny_gan_model, tmp_path):
    # A model whose facegen.json recommends psi 0.5: the page's face without psi is the psi 0.5
    # face; psi=1 still gives the untruncated one; `generate` (sample, eval) never applies it unasked.
    import json
    import shutil

    from facegen.serve.app import create_app

    model = tmp_path / "model"
    shutil.copytree(tiny_gan_model, model)
    meta = json.loads((model / "facegen.json").read_text())
    (model / "facegen.json").write_text(json.dumps({**meta, "recommended_psi": 0.5}))
    gen = sample.load_generator(model, "cpu")
    assert gen.recommended_psi == 0.5 and gen.info()["recommended_psi"] == 0.5
    assert np.array_equal(sample.generate(gen, [3])[0], sample.generate(sample.load_generator(tiny_gan_model, "cpu"), [3])[0])
    with TestClient(create_app(gen, window_ms=1)) as c:
        page = c.get("/").text
        assert 'data-psi="0.5"' in page and 'step="0.05" value="0.5"' in page   # the page's slider starts there
        plain, one = c.get("/face.png?seed=3"), c.get("/face.png?seed=3&psi=1")
        assert np.array_equal(pixels(plain.content), sample.generate(gen, [3], psi=0.5)[0])
        assert np.array_equal(pixels(one.content), sample.generate(gen, [3])[0])
        assert plain.headers["etag"] != one.headers["etag"]
