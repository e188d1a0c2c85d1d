"""The page in a real browser: headless Chromium (Debian's) driven by Playwright.

Starts uvicorn on a free port of 127.0.0.1 with a tiny real GAN, loads the page, waits for
the face to render, presses space and checks that a different face is shown; then the
permalink, the morph view and a phone-sized screen, each showing the face at a whole
multiple of the model's resolution, pixelated. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

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


# The face on screen: its size in device pixels, its scaling, and the resolution line.
DISPLAY = """() => {
  const img = document.getElementById('face');
  return {device_px: img.getBoundingClientRect().width * window.devicePixelRatio,
          height_px: img.getBoundingClientRect().height * window.devicePixelRatio,
          natural: img.naturalWidth, rendering: getComputedStyle(img).imageRendering,
          text: document.getElementById('resolution').textContent};
}"""


def assert_whole_multiple(page) -> int:
    """The face is k x its resolution in device pixels (k >= 1 whole), nearest neighbour, and the page says so."""
    shown = page.evaluate(DISPLAY)
    k = round(shown["device_px"] / shown["natural"])
    assert k >= 1 and shown["device_px"] == pytest.approx(k * shown["natural"], abs=0.01)
    assert shown["height_px"] == pytest.approx(shown["device_px"], abs=0.01)
    assert shown["rendering"] == "pixelated"
    side = shown["natural"]
    assert shown["text"] == f"{side} × {side} px, shown at {k}×"
    return k


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


def open_page(browser, url: str, **context_options):
    page = browser.new_context(**context_options).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    page.wait_for_function(FACE_READY, timeout=20_000)
    return page, errors


def test_space_shows_a_new_face(server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors = open_page(browser, server + "/", viewport={"width": 1280, "height": 860})
    before_url, before = page.eval_on_selector("#face", "img => img.dataset.url"), page.evaluate(FACE_PIXELS)
    assert "seed=" in before_url and page.locator("footer").inner_text().startswith("gan64-default")
    assert assert_whole_multiple(page) == 9  # 64 px in the 630 px the stylesheet leaves at this height: 9 x 64 = 576
    page.screenshot(path=str(ARTIFACTS / "serve-page.png"))

    page.keyboard.press("Space")
    page.wait_for_function(f"() => document.getElementById('face').dataset.url !== {before_url!r}", timeout=20_000)
    page.wait_for_function(FACE_READY, timeout=20_000)
    assert page.evaluate(FACE_PIXELS) != before
    download = page.locator("#download")
    assert download.get_attribute("href") == page.eval_on_selector("#face", "img => img.dataset.url")
    assert download.get_attribute("download").endswith(".png")
    assert errors == []


def test_permalink_shows_that_face_and_morph_view(server, browser):
    page, errors = open_page(browser, server + "/?seed=424242", viewport={"width": 1280, "height": 860})
    assert "seed=424242" in page.eval_on_selector("#face", "img => img.dataset.url")
    assert page.locator("#permalink").get_attribute("href") == "/?seed=424242"

    page.click("#mode-morph")
    page.wait_for_function("() => (document.getElementById('face').dataset.url || '').includes('/morph.gif?from=424242')", timeout=30_000)
    page.wait_for_function(FACE_READY, timeout=30_000)
    assert page.locator("#download").get_attribute("download").endswith(".gif")
    assert_whole_multiple(page)
    page.screenshot(path=str(ARTIFACTS / "serve-morph.png"))
    assert errors == []


def test_fits_a_phone_screen(server, browser):
    phone = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    page, errors = open_page(browser, server + "/", **phone)
    box = page.locator("#stage").bounding_box()
    assert box["width"] >= 300 and box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390   # no sideways scrolling
    assert assert_whole_multiple(page) == 11  # 366 CSS px at 2 device px each: 11 x 64 = 704 device px
    next_box = page.locator("#next").bounding_box()
    assert next_box["y"] + next_box["height"] <= 844                           # the button is on screen
    page.screenshot(path=str(ARTIFACTS / "serve-phone.png"))
    assert errors == []


def test_resize_keeps_a_whole_multiple_and_psi_reaches_the_images(server, browser):
    page, errors = open_page(browser, server + "/?seed=7&psi=0.7", viewport={"width": 1280, "height": 860})
    assert "psi=0.7" in page.eval_on_selector("#face", "img => img.dataset.url")
    assert page.locator("#permalink").get_attribute("href") == "/?seed=7&psi=0.7"
    page.set_viewport_size({"width": 500, "height": 860})                      # 468 px of room: 7 x 64 = 448
    page.wait_for_function("() => document.getElementById('stage').dataset.scale === '7'", timeout=5_000)
    assert assert_whole_multiple(page) == 7
    page.screenshot(path=str(ARTIFACTS / "serve-psi.png"))
    assert errors == []


def test_bad_psi_shows_the_servers_one_line(server, browser):
    page = browser.new_context().new_page()
    page.goto(server + "/?seed=7&psi=3")
    page.wait_for_function("() => !document.getElementById('message').hidden", timeout=20_000)
    assert "psi 3 is out of range" in page.locator("#message").inner_text()
