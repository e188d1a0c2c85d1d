"""The page in a real browser: headless Chromium (Debian's) driven by Playwright.

Starts uvicorn on a free port of 127.0.0.1 with the embedded default model, loads the page,
waits for the face to render, presses space and checks that a different face is shown; then
the smooth picture and the "pixels" toggle (screenshots compared with the server's images),
the truncation slider, the page's answer to a bad address, the permalink and the morph view,
and the page at 1280 and 390 px wide. Screenshots go to test-artifacts/ (page-1280.png and
page-390.png are the ones docs/images/ keeps).
"""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"viewport": {"width": 1280, "height": 860}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}

playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium", allow_module_level=True)

FACE_READY = """() => {
  const img = document.getElementById('face');
  return img.naturalWidth > 0 && document.getElementById('stage').getAttribute('aria-busy') === 'false';
}"""
# The pixels on screen, so "a different image" means different pixels, not just another URL.
FACE_PIXELS = """() => {
  const img = document.getElementById('face');
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  canvas.getContext('2d').drawImage(img, 0, 0);
  return canvas.toDataURL('image/png');
}"""
# The face on screen: its size in device pixels, its scaling, and the line beside it.
DISPLAY = """() => {
  const img = document.getElementById('face');
  return {device_px: img.getBoundingClientRect().width * window.devicePixelRatio,
          height_px: img.getBoundingClientRect().height * window.devicePixelRatio,
          css_px: img.getBoundingClientRect().width,
          natural: img.naturalWidth, rendering: getComputedStyle(img).imageRendering,
          url: img.dataset.url, text: document.getElementById('resolution').textContent};
}"""
# The spinner has stopped: no animation left on it (the spin, or its fade), and it is invisible.
SPINNER_STOPPED = """() => {
  const spinner = document.querySelector('.spinner');
  return spinner.getAnimations().length === 0 && getComputedStyle(spinner).opacity === '0';
}"""


def assert_smooth(page, side: int = 256) -> None:
    """The face is the server's Lanczos upscale at exactly the screen's pixels, and the page says so."""
    shown = page.evaluate(DISPLAY)
    assert shown["css_px"] == pytest.approx(side, abs=0.01) and shown["height_px"] == pytest.approx(shown["device_px"], abs=0.01)
    assert shown["natural"] == round(shown["device_px"]) and f"size={shown['natural']}" in shown["url"]
    assert shown["rendering"] == "auto"
    assert shown["text"] == f"64 × 64 model, shown at {side} px, smoothed"


def assert_exact_pixels(page) -> int:
    """The face is the model's own image at k x its side in device pixels (k >= 1 whole), nearest neighbour."""
    shown = page.evaluate(DISPLAY)
    k = round(shown["device_px"] / shown["natural"])
    assert shown["natural"] == 64 and "size=" not in shown["url"]
    assert k >= 1 and shown["device_px"] == pytest.approx(k * shown["natural"], abs=0.01)
    assert shown["rendering"] == "pixelated"
    assert shown["text"] == f"64 × 64 model, shown at {round(shown['css_px'])} px, exact pixels"
    return k


def equal_neighbours(rgb: np.ndarray) -> float:
    """The share of horizontally adjacent pixel pairs that are identical: about (k - 1) / k for
    k x k blocks, near 0 for a smooth picture."""
    return float((rgb[:, 1:] == rgb[:, :-1]).all(axis=-1).mean())


def stage_pixels(page) -> np.ndarray:
    """A screenshot of the face, inside the rounded corners, as (h, w, 3) uint8."""
    box = page.locator("#stage").bounding_box()
    x, y, side = round(box["x"]), round(box["y"]), round(box["width"])
    shot = page.screenshot(animations="disabled", clip={"x": x, "y": y, "width": side, "height": side})
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))[20:-20, 20:-20]


def served(server: str, url: str) -> np.ndarray:
    with urllib.request.urlopen(server + url) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    import uvicorn

    from facegen.sample import load_generator
    from facegen.serve.app import create_app

    app = create_app(load_generator(None, "cpu"))  # the embedded default model: real faces in the screenshots
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, url: str, ready: bool = True, **context_options):
    """A new page at `url`, with the URLs of the images it asked for and its errors."""
    page = browser.new_context(**context_options).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.images = []
    page.on("request", lambda r: page.images.append(r.url) if "/face.png" in r.url or "/morph.gif" in r.url else None)
    page.goto(url)
    if ready:
        page.wait_for_function(FACE_READY, timeout=20_000)
    return page, errors


def wait_for_new_face(page, before_url: str) -> None:
    page.wait_for_function(f"() => (document.getElementById('face').dataset.url || '') !== {before_url!r}", timeout=30_000)
    page.wait_for_function(FACE_READY, timeout=30_000)


def test_space_shows_a_new_face(server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors = open_page(browser, server + "/", **DESKTOP)
    before_url, before = page.eval_on_selector("#face", "img => img.dataset.url"), page.evaluate(FACE_PIXELS)
    assert "seed=" in before_url and page.locator("footer").inner_text().startswith("gan64-default")
    assert_smooth(page)
    page.screenshot(path=str(ARTIFACTS / "serve-page.png"), animations="disabled")

    page.keyboard.press("Space")
    wait_for_new_face(page, before_url)
    assert page.evaluate(FACE_PIXELS) != before
    download = page.locator("#download")
    assert download.get_attribute("href") == page.eval_on_selector("#face", "img => img.dataset.url")
    assert download.get_attribute("download").endswith(".png")
    assert errors == []


def test_the_face_is_smooth_and_the_pixels_toggle_shows_the_exact_pixels(server, browser):
    """Issue 29, 1: a 64 px face shown as a smooth 256 px picture, not 4 x 4 blocks; the
    toggle shows the model's exact pixels, block for block."""
    page, errors = open_page(browser, server + "/?seed=424242", **DESKTOP)
    assert_smooth(page)
    smooth_url = page.eval_on_selector("#face", "img => img.dataset.url")
    smooth = stage_pixels(page)
    page.screenshot(path=str(ARTIFACTS / "serve-smooth.png"), animations="disabled")

    page.click("#pixels")
    wait_for_new_face(page, smooth_url)
    assert page.get_attribute("#pixels", "aria-pressed") == "true"
    assert assert_exact_pixels(page) == 4
    exact_url = page.eval_on_selector("#face", "img => img.dataset.url")
    exact = stage_pixels(page)
    page.screenshot(path=str(ARTIFACTS / "serve-pixels.png"), animations="disabled")

    # What is on screen is what the server sent: the Lanczos upscale 1:1, the model's pixels as 4 x 4 blocks.
    lanczos, model = served(server, smooth_url), served(server, exact_url)
    assert lanczos.shape == (256, 256, 3) and model.shape == (64, 64, 3)
    assert np.abs(smooth.astype(int) - lanczos[20:-20, 20:-20]).max() <= 2
    assert np.abs(exact.astype(int) - np.kron(model, np.ones((4, 4, 1), dtype=np.uint8))[20:-20, 20:-20]).max() <= 2
    assert equal_neighbours(smooth) < 0.25 < 0.7 < equal_neighbours(exact)

    page.keyboard.press("p")                                   # and back
    wait_for_new_face(page, exact_url)
    assert_smooth(page)
    assert errors == []


def test_truncation_slider_shows_and_sets_psi(server, browser):
    """Issue 29, 2: the psi in use is on the page, starts at the model's recommended psi
    (or the address's), and moving it shows the same face at the new psi, in the permalink too."""
    page, errors = open_page(browser, server + "/?seed=7", **DESKTOP)
    assert page.input_value("#psi") == "0.85" and page.inner_text("#psi-value") == "0.85"
    url = page.eval_on_selector("#face", "img => img.dataset.url")
    assert "psi=0.85" in url and page.get_attribute("#permalink", "href") == "/?seed=7&psi=0.85"
    before = page.evaluate(FACE_PIXELS)

    page.focus("#psi")
    for _ in range(7):                                         # 0.85 - 7 x 0.05 = 0.5
        page.keyboard.press("ArrowLeft")
    page.wait_for_function("() => (document.getElementById('face').dataset.url || '').includes('psi=0.5&')", timeout=30_000)
    page.wait_for_function(FACE_READY, timeout=30_000)
    assert page.inner_text("#psi-value") == "0.5" and "seed=7&" in page.eval_on_selector("#face", "img => img.dataset.url")
    assert page.get_attribute("#permalink", "href") == "/?seed=7&psi=0.5"
    assert page.evaluate("() => location.pathname + location.search") == "/?seed=7&psi=0.5"
    assert page.evaluate(FACE_PIXELS) != before

    page, errors2 = open_page(browser, server + "/?psi=0.6", **DESKTOP)
    assert page.input_value("#psi") == "0.6" and page.inner_text("#psi-value") == "0.6"
    assert "psi=0.6&" in page.eval_on_selector("#face", "img => img.dataset.url")
    page.click("#next")                                        # a new face keeps the chosen psi in the address
    page.wait_for_function(FACE_READY, timeout=30_000)
    assert page.evaluate("() => location.pathname + location.search") == "/?psi=0.6"
    assert errors == errors2 == []


@pytest.mark.parametrize("address, said", [
    ("/?seed=abc", 'seed must be a whole number 0..4294967295, not "abc"'),
    ("/?seed=4294967296", "seed must be a whole number 0..4294967295"),
    ("/?from=1&to=x", 'to must be a whole number 0..4294967295, not "x"'),
    ("/?psi=abc", 'psi must be a number above 0 and at most 1 (1 = no truncation), not "abc"'),
    ("/?seed=7&psi=3", "psi must be a number above 0 and at most 1"),
])
def test_a_bad_address_says_so_and_shows_no_face(server, browser, address, said):
    """Issue 29, 3: no random face passed off as seed abc; the spinner stops; no stray
    characters where the link would be; a new face is one press away."""
    page, errors = open_page(browser, server + address, ready=False, **DESKTOP)
    page.wait_for_function("() => !document.getElementById('message').hidden", timeout=20_000)
    assert said in page.inner_text("#message")
    page.wait_for_function(SPINNER_STOPPED, timeout=3_000)
    assert page.get_attribute("#stage", "aria-busy") == "false"
    assert page.get_attribute("#face", "src") is None and page.images == []
    assert not page.is_visible("#permalink") and not page.is_visible("#copy") and not page.is_visible("#download")
    page.screenshot(path=str(ARTIFACTS / "serve-bad-address.png"), animations="disabled")

    page.click("#next")
    page.wait_for_function(FACE_READY, timeout=30_000)
    assert page.is_hidden("#message") and page.is_visible("#permalink") and page.inner_text("#permalink").startswith("face #")
    assert errors == []


def test_a_server_error_stops_the_spinner_and_says_the_servers_line(server, browser):
    page = browser.new_context(**DESKTOP).new_page()
    page.route("**/face.png*", lambda route: route.fulfill(status=400, content_type="application/json",
                                                           body='{"error": "truncation psi 0.7 is for GANs", "status": 400}'))
    page.goto(server + "/?seed=7")
    page.wait_for_function("() => !document.getElementById('message').hidden", timeout=20_000)
    assert page.inner_text("#message") == "Could not load: truncation psi 0.7 is for GANs"
    page.wait_for_function(SPINNER_STOPPED, timeout=3_000)
    assert not page.is_visible("#permalink") and not page.is_visible("#copy")


def test_permalink_shows_that_face_and_morph_view(server, browser):
    page, errors = open_page(browser, server + "/?seed=424242", **DESKTOP)
    assert "seed=424242" in page.eval_on_selector("#face", "img => img.dataset.url")
    assert page.locator("#permalink").get_attribute("href") == "/?seed=424242&psi=0.85"

    page.click("#mode-morph")
    page.wait_for_function("() => (document.getElementById('face').dataset.url || '').includes('/morph.gif?from=424242')", timeout=30_000)
    page.wait_for_function(FACE_READY, timeout=30_000)
    assert page.locator("#download").get_attribute("download").endswith(".gif")
    assert_smooth(page)
    page.screenshot(path=str(ARTIFACTS / "serve-morph.png"), animations="disabled")
    assert errors == []


@pytest.mark.parametrize("width", [1280, 390])
def test_the_page_at_desktop_and_phone_width(server, browser, width):
    """Issue 29, 4: no sideways scrolling, every control on screen and big enough to hit;
    the screenshots are docs/images/page-1280.png and page-390.png."""
    context = DESKTOP if width == 1280 else PHONE
    height = context["viewport"]["height"]
    page, errors = open_page(browser, server + "/?seed=2", **context)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width       # no sideways scrolling
    assert_smooth(page)
    face = page.locator("#stage").bounding_box()
    assert face["x"] >= 0 and face["x"] + face["width"] <= width and face["y"] + face["height"] <= height
    for control in ["#mode-face", "#mode-morph", "#pixels", "#permalink", "#copy", "#next", "#download", "#psi"]:
        box = page.locator(control).bounding_box()
        assert page.is_visible(control), control
        assert box["x"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height, control
        assert box["height"] >= (16 if control in ("#permalink", "#copy") else 24), control   # text links; the rest are targets
    page.screenshot(path=str(ARTIFACTS / f"page-{width}.png"), animations="disabled")

    page.locator("#pixels").tap() if width == 390 else page.click("#pixels")
    page.wait_for_function("() => (document.getElementById('face').dataset.url || '').indexOf('size=') < 0", timeout=30_000)
    page.wait_for_function(FACE_READY, timeout=30_000)
    assert assert_exact_pixels(page) == (4 if width == 1280 else 8)       # 256 CSS px = 4 x 64, 8 x 64 device px at 2x
    assert errors == []


def test_resize_refits_the_face_and_psi_reaches_the_images(server, browser):
    page, errors = open_page(browser, server + "/?seed=7&psi=0.7", **DESKTOP)
    assert "psi=0.7" in page.eval_on_selector("#face", "img => img.dataset.url")
    assert page.locator("#permalink").get_attribute("href") == "/?seed=7&psi=0.7"
    page.set_viewport_size({"width": 240, "height": 860})                      # 216 px of room: 3 x 64 = 192
    page.wait_for_function("() => document.getElementById('face').naturalWidth === 192", timeout=30_000)
    page.wait_for_function(FACE_READY, timeout=30_000)
    assert_smooth(page, side=192)
    assert "psi=0.7" in page.eval_on_selector("#face", "img => img.dataset.url")
    assert errors == []


def test_every_image_url_of_the_page_names_the_model(server, browser):
    """Issue 29, 5: the page's images are the immutable, versioned ones (v = the model's tag);
    a plain /face.png?seed=N stays revalidated (tests/test_serve_api.py)."""
    with urllib.request.urlopen(server + "/info") as r:
        import json

        tag = json.load(r)["model_tag"]
    page, errors = open_page(browser, server + "/?seed=5", **DESKTOP)
    page.keyboard.press("Space")
    page.click("#pixels")
    page.click("#mode-morph")
    page.wait_for_function("() => (document.getElementById('face').dataset.url || '').includes('/morph.gif')", timeout=30_000)
    page.wait_for_function(FACE_READY, timeout=30_000)
    urls = page.images + [server + page.get_attribute("#download", "href")]
    assert len(urls) >= 5 and all(u.endswith(f"&v={tag}") for u in urls), urls
    with urllib.request.urlopen(urls[0]) as r:
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert errors == []
