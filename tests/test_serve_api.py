"""The web API on a real (tiny, random-weight) exported GAN: determinism by seed, cache
headers, errors as 4xx JSON, micro-batching and the bounded queue."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facegen.serve.app import create_app

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def generator(tiny_gan_model):
    from facegen.sample import load_generator

    return load_generator(tiny_gan_model, "cpu")   # the path `facegen serve RUN` takes


@pytest.fixture(scope="module")
def client(generator):
    with TestClient(create_app(generator, max_batch=8, window_ms=5)) as c:
        yield c


def pixels(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


class Gated:
    """The real generator, held at each batch until the test opens the gate, recording batch sizes."""

    def __init__(self, inner):
        self.inner, self.gate, self.entered, self.batches = inner, threading.Event(), threading.Event(), []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def decode(self, noise, seeds=(), **options):
        self.batches.append(len(noise))
        self.entered.set()
        assert self.gate.wait(timeout=20), "test never opened the gate"
        return self.inner.decode(noise, seeds, **options)


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.005)


# -- faces -------------------------------------------------------------------------------


def test_same_seed_same_bytes_across_servers_and_different_seeds_differ(client, generator):
    first = client.get("/face.png?seed=7")
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    image = pixels(first.content)
    assert image.shape == (32, 32, 3) and image.std() > 0
    with TestClient(create_app(generator, cache_size=0)) as fresh:  # no shared cache: generated again
        again = fresh.get("/face.png?seed=7")
    assert again.content == first.content
    other = client.get("/face.png?seed=8")
    assert not np.array_equal(pixels(other.content), image)


def test_seeded_faces_have_an_etag_and_304(client):
    r = client.get("/face.png?seed=11")
    etag = r.headers["etag"]
    assert client.get("/face.png?seed=12").headers["etag"] != etag
    not_modified = client.get("/face.png?seed=11", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""


def test_only_the_url_naming_the_model_version_is_immutable(client):
    tag = client.get("/info").json()["model_tag"]
    plain, versioned = client.get("/face.png?seed=11"), client.get(f"/face.png?seed=11&v={tag}")
    assert versioned.content == plain.content and versioned.headers["etag"] == plain.headers["etag"]
    assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "immutable" not in plain.headers["cache-control"] and "no-cache" in plain.headers["cache-control"]
    other = client.get("/face.png?seed=11&v=0123456789ab")  # another model's version: revalidated, never kept
    assert other.status_code == 200 and "immutable" not in other.headers["cache-control"]
    morph = client.get("/morph.gif?from=1&to=2&frames=2"), client.get(f"/morph.gif?from=1&to=2&frames=2&v={tag}")
    assert "immutable" not in morph[0].headers["cache-control"] and "immutable" in morph[1].headers["cache-control"]


def test_a_plain_face_url_shows_the_new_face_once_the_weights_change(tiny_gan_model, tmp_path):
    """The model folder behind the address is retrained (its weights replaced) and the server
    restarted: a browser holding the old face of /face.png?seed=3 must get the new one."""
    import shutil

    from safetensors.torch import load_file, save_file

    from facegen.sample import load_generator

    folder = tmp_path / "served"
    shutil.copytree(tiny_gan_model, folder)
    with TestClient(create_app(load_generator(folder, "cpu"))) as c:
        before = c.get("/face.png?seed=3")
        old_tag = c.get("/info").json()["model_tag"]
    assert "immutable" not in before.headers["cache-control"]  # else the browser never asks again

    weights = load_file(folder / "generator.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.ndim > 1)
    save_file({**weights, name: weights[name] * 1.5}, folder / "generator.safetensors")
    with TestClient(create_app(load_generator(folder, "cpu"))) as c:
        after = c.get("/face.png?seed=3", headers={"If-None-Match": before.headers["etag"]})  # the browser revalidates
        stale = c.get(f"/face.png?seed=3&v={old_tag}")
        new_tag = c.get("/info").json()["model_tag"]
    assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
    assert not np.array_equal(pixels(after.content), pixels(before.content))
    assert new_tag != old_tag and "immutable" not in stale.headers["cache-control"]


def test_etag_and_page_tag_change_with_the_weights(tiny_gan_model, generator, tmp_path):
    """Two models with the same name and config but other weights never share an ETag or a page tag."""
    import re
    import shutil

    from safetensors.torch import load_file, save_file

    from facegen.sample import load_generator

    twin = tmp_path / tiny_gan_model.name
    shutil.copytree(tiny_gan_model, twin)
    weights = load_file(twin / "generator.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.ndim > 1)
    save_file({**weights, name: weights[name] * 1.5}, twin / "generator.safetensors")
    twin_generator = load_generator(twin, "cpu")
    assert twin_generator.info() == generator.info()  # nothing but the weights tells them apart

    def seen(gen):
        with TestClient(create_app(gen, cache_size=0)) as c:
            page = c.get("/").text
            return (c.get("/face.png?seed=3").headers["etag"], c.get("/morph.gif?from=1&to=2&frames=2").headers["etag"],
                    re.search(r'data-tag="([^"]+)"', page).group(1))

    ours, again, theirs = seen(generator), seen(load_generator(tiny_gan_model, "cpu")), seen(twin_generator)
    assert ours == again                                 # the same weights: the same tags, whoever loads them
    assert all(a != b for a, b in zip(ours, theirs))     # other weights: every tag differs


def test_unseeded_face_is_random_not_cached_and_names_its_seed(client):
    r = client.get("/face.png")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store" and "etag" not in r.headers
    seed = int(r.headers["x-seed"])
    assert client.get(f"/face.png?seed={seed}").content == r.content


def test_size_resizes(client):
    assert pixels(client.get("/face.png?seed=3&size=48").content).shape == (48, 48, 3)


def test_size_is_a_smooth_lanczos_upscale_not_blocks(client):
    """The page's face: the model's 32 px picture upscaled with Lanczos to the screen's pixels,
    smooth where nearest neighbour would give constant 4 x 4 blocks."""
    native = pixels(client.get("/face.png?seed=3").content)
    big = pixels(client.get("/face.png?seed=3&size=128").content)
    assert big.shape == (128, 128, 3)
    assert np.array_equal(big, np.asarray(Image.fromarray(native).resize((128, 128), Image.Resampling.LANCZOS)))
    same_as_left = (big[:, 1:] == big[:, :-1]).all(axis=-1).mean()   # 3/4 for 4 x 4 blocks
    assert same_as_left < 0.25 and not np.array_equal(big, np.kron(native, np.ones((4, 4, 1), dtype=np.uint8)))


def test_morph_gif_walks_there_and_back(client):
    r = client.get("/morph.gif?from=1&to=2&frames=4&size=40")
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif" and "etag" in r.headers
    gif = Image.open(io.BytesIO(r.content))
    assert gif.size == (40, 40) and gif.n_frames == 6  # 4 frames forward, 2 back (ends not repeated)
    gif.seek(0)
    start = np.asarray(gif.convert("RGB"), dtype=float)
    gif.seek(3)
    end = np.asarray(gif.convert("RGB"), dtype=float)
    assert np.abs(start - end).mean() > 1  # the walk goes somewhere
    assert client.get("/morph.gif?from=1&to=2&frames=4&size=40").content == r.content


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, status",
    [
        ("/face.png?seed=abc", 422),
        ("/face.png?seed=-1", 422),
        ("/face.png?seed=1.5", 422),
        ("/face.png?seed=99999999999999999999999999", 422),
        ("/face.png?seed=1&size=100000", 422),
        ("/face.png?seed=1&size=0", 422),
        ("/morph.gif?from=1&to=2&frames=100000", 422),
        ("/morph.gif?from=1&to=2&frames=1", 422),
        ("/morph.gif?from=1&to=2&size=1024", 422),
        ("/face.png?seed=", 422),
        ("/morph.gif?from=1", 422),
        ("/nothing-here", 404),
        ("/static/../pyproject.toml", 404),
        ("/static/..%2F..%2Fpyproject.toml", 404),
        ("/static/index.html", 404),
    ],
)
def test_bad_input_is_a_4xx_json_error(client, url, status):
    r = client.get(url)
    assert r.status_code == status
    body = r.json()
    assert body["status"] == status and isinstance(body["error"], str) and body["error"]


@pytest.mark.parametrize(
    "url, said",
    [
        ("/face.png?seed=abc", "seed must be a whole number 0..4294967295, not 'abc'"),
        ("/face.png?seed=-1", "seed must be a whole number 0..4294967295, not '-1'"),
        ("/face.png?seed=4294967296", "seed must be a whole number 0..4294967295"),
        ("/morph.gif?from=1.5&to=2", "from must be a whole number 0..4294967295, not '1.5'"),
        ("/morph.gif?from=1&to=x", "to must be a whole number 0..4294967295, not 'x'"),
        ("/morph.gif?from=1", "to: Field required"),
    ],
)
def test_a_bad_seed_is_told_the_valid_seeds(client, url, said):
    r = client.get(url)
    assert r.status_code == 422 and said in r.json()["error"]


def test_bad_method_is_json_too(client):
    r = client.post("/face.png?seed=1")
    assert r.status_code == 405 and "error" in r.json()


# -- page, info, health ------------------------------------------------------------------


def test_page_and_its_files(client, generator):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert generator.name in page.text and "{{" not in page.text
    for name, kind in [("app.js", "javascript"), ("style.css", "text/css")]:
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"] and len(r.content) > 500


def test_page_carries_the_models_side_and_its_truncation(client):
    """The page starts its truncation slider at the model's recommended psi (1 for this GAN)
    and states the model's own resolution beside the face."""
    page = client.get("/").text
    assert 'data-resolution="32"' in page and 'data-psi="1"' in page and ">32 × 32 model<" in page
    slider = page[page.index('id="psi-control"'):page.index("</label>")]
    assert " hidden" not in slider.split(">")[0] and 'value="1"' in slider


def test_serve_truncation_sets_the_psi_of_requests_naming_none(client, generator):
    """`facegen serve --truncation 0.7`: a plain /face.png is the psi-0.7 face, the page's slider
    starts there, and the model tag (so every cached URL) differs from the server's without it."""
    import copy

    from facegen.utils import FacegenError

    with TestClient(create_app(generator, psi=0.7)) as c:
        plain, named = c.get("/face.png?seed=3"), c.get("/face.png?seed=3&psi=0.7")
        page, tag = c.get("/").text, c.get("/info").json()["model_tag"]
    assert plain.content == named.content != client.get("/face.png?seed=3").content   # the default (psi 1) differs
    assert 'data-psi="0.7"' in page and tag != client.get("/info").json()["model_tag"]
    # the range, and a measured suggestion (the default model's truncation curve, docs/gan.md), not folklore
    with pytest.raises(FacegenError, match=r"truncation psi 1\.5 is out of range: use 0 < psi <= 1 .*measures best at 0\.85"):
        create_app(generator, psi=1.5)
    diffusion = copy.copy(generator)
    diffusion.truncation, diffusion.family = False, "ddpm"
    with pytest.raises(FacegenError, match="a ddpm model has no truncation .*; drop --truncation"):
        create_app(diffusion, psi=0.7)


def test_the_cache_keeps_to_its_byte_budget():
    from facegen.serve.app import LRUCache

    cache = LRUCache(100, max_bytes=10)
    for key in "abc":
        cache.put(key, b"1234")                       # 12 bytes: "a" goes
    assert len(cache) == 2 and cache.get("a") is None and cache.nbytes == 8
    cache.put("b", b"123456")                         # replacing counts the new size only: 10 bytes
    assert cache.get("c") == b"1234" and cache.nbytes == 10
    cache.put("huge", b"x" * 11)                      # larger than the whole budget: never kept
    assert cache.get("huge") is None and len(cache) == 2


def test_info_and_healthz(client, generator):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["family"] == "gan" and info["resolution"] == generator.resolution and info["device"] == "cpu"
    assert info["serving"]["max_batch"] == 8


def test_server_options_reach_info(generator):
    with TestClient(create_app(generator, steps=5, sampler="ddim")) as c:
        info = c.get("/info").json()
    assert info["steps"] == 5 and info["sampler"] == "ddim"


# -- batching and the bounded queue -------------------------------------------------------


def test_concurrent_requests_are_coalesced_into_one_batch(generator):
    gated = Gated(generator)
    app = create_app(gated, max_batch=8, window_ms=5)
    with TestClient(app) as c, ThreadPoolExecutor(8) as pool:
        first = pool.submit(c.get, "/face.png?seed=100")
        assert gated.entered.wait(10)                    # seed 100 is being generated, alone
        rest = [pool.submit(c.get, f"/face.png?seed={s}") for s in range(101, 105)]
        wait_until(lambda: app.state.batcher.pending == 4)
        gated.gate.set()
        responses = [first.result(timeout=20)] + [f.result(timeout=20) for f in rest]
    assert [r.status_code for r in responses] == [200] * 5
    assert gated.batches == [1, 4]
    # A face made in a batch of 4 is the face made alone, up to float summation order: CPU
    # kernels chosen by batch shape can move a rare pixel by one level of 255.
    with TestClient(create_app(generator, max_batch=1)) as alone:
        single = pixels(alone.get("/face.png?seed=103").content).astype(int)
    batched = pixels(responses[3].content).astype(int)
    assert np.abs(single - batched).max() <= 1 and (single != batched).mean() < 0.01


def test_full_queue_answers_503_with_retry_after(generator):
    gated = Gated(generator)
    app = create_app(gated, max_batch=1, window_ms=0, queue_size=2)
    with TestClient(app) as c, ThreadPoolExecutor(4) as pool:
        running = pool.submit(c.get, "/face.png?seed=200")
        assert gated.entered.wait(10)
        waiting = [pool.submit(c.get, f"/face.png?seed={s}") for s in (201, 202)]
        wait_until(lambda: app.state.batcher.pending == 2)
        refused = c.get("/face.png?seed=203")
        gated.gate.set()
        served = [running.result(timeout=20)] + [f.result(timeout=20) for f in waiting]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1" and "busy" in refused.json()["error"]
    assert [r.status_code for r in served] == [200, 200, 200]


def test_the_same_face_asked_twice_at_once_is_made_once(generator):
    gated = Gated(generator)
    app = create_app(gated, max_batch=8, window_ms=0, cache_size=0)   # no cache: only the sharing can save work
    with TestClient(app) as c, ThreadPoolExecutor(2) as pool:
        first = pool.submit(c.get, "/face.png?seed=300")
        assert gated.entered.wait(10)
        second = pool.submit(c.get, "/face.png?seed=300")   # joins the work in flight: nothing is queued
        time.sleep(0.5)
        assert app.state.batcher.pending == 0
        gated.gate.set()
        a, b = first.result(timeout=20), second.result(timeout=20)
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert gated.batches == [1]
