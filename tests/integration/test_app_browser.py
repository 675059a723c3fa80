"""`centerfocus app` in a real browser: the command serves the page on 127.0.0.1, headless Chromium (Playwright for
Python, the system's /usr/bin/chromium: no `playwright install`) uploads an image, presses Caption and reads the
caption, which must be the model's `generate()` caption; a text file named .png shows its problem in the page.

    apt-get install -y chromium && pip install playwright gradio
    python -m pytest -m browser tests/integration/test_app_browser.py

CENTERFOCUS_APP_MODEL=DIR captions with that saved model instead of the tiny random one (the screenshot of
docs/app.png: `CENTERFOCUS_APP_MODEL=demo_output/model CENTERFOCUS_SCREENSHOT=docs/app.png`).
CENTERFOCUS_SCREENSHOT=PATH saves the captioned page there (default: the test's temporary folder).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from centerfocus import CenterFocusForConditionalGeneration, CenterFocusProcessor

from ..conftest import make_image


pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CENTERFOCUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STARTUP_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def playwright_api():
    pytest.importorskip("gradio", reason="the app extra: pip install -e '.[app]'")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no `playwright install`)")
    if not os.path.isfile(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (or set CENTERFOCUS_CHROMIUM)")
    return sync_api


@pytest.fixture(scope="module")
def model_folder(saved_folder):
    return Path(os.environ.get("CENTERFOCUS_APP_MODEL") or saved_folder)


@pytest.fixture(scope="module")
def server(playwright_api, model_folder, tmp_path_factory):
    """`python -m centerfocus.tools.cli app --model DIR --port P` until it answers; stopped at the end."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "app.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("gradio"))}
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "centerfocus.tools.cli", "app", "--model",
                                    str(model_folder), "--port", str(port), "--share", "false"],
                                   stdout=output, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"centerfocus app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"centerfocus app did not answer within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def page(playwright_api, server):
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server, wait_until="networkidle")
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def image_path(model_folder, tmp_path_factory) -> Path:
    """An example of the model folder when it has one (a demo model's scene), else a generated test image."""
    from centerfocus.tools.space_app import find_examples

    examples = find_examples(model_folder)
    path = tmp_path_factory.mktemp("upload") / "scene.png"
    if examples:
        shutil.copyfile(examples[0], path)
    else:
        make_image(3).save(path)
    return path


def _expected_caption(model_folder: Path, image_path: Path) -> str:
    from PIL import Image

    model = CenterFocusForConditionalGeneration.from_pretrained(model_folder).eval()
    processor = CenterFocusProcessor.from_pretrained(model_folder)
    with torch.inference_mode():
        output = model.generate(**processor(images=[Image.open(image_path)]))
    return processor.batch_decode(output, skip_special_tokens=True)[0].strip()


def _upload(page, path: Path) -> None:
    page.locator("#cf-image input[type=file]").set_input_files(str(path))
    page.locator("#cf-image img").first.wait_for(state="attached", timeout=30_000)


def test_caption_in_the_browser_equals_generate(page, model_folder, image_path, tmp_path):
    expected = _expected_caption(model_folder, image_path)
    _upload(page, image_path)
    page.locator("#cf-caption-button").click()
    caption_box = page.locator("#cf-caption textarea")
    page.wait_for_function("() => document.querySelector('#cf-caption textarea').value.length > 0", timeout=60_000)
    assert caption_box.input_value() == expected
    page.locator("#cf-focus img").first.wait_for(state="visible", timeout=30_000)
    screenshot = Path(os.environ.get("CENTERFOCUS_SCREENSHOT") or tmp_path / "app.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000


def test_text_file_named_png_shows_the_problem(page, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("these are notes, not an image")
    page.locator("#cf-image input[type=file]").set_input_files(str(fake))
    page.wait_for_timeout(500)
    page.locator("#cf-caption-button").click()
    message = page.get_by_text("notes.png is not a readable image")
    message.first.wait_for(state="visible", timeout=30_000)
    assert "Traceback" not in page.content()
