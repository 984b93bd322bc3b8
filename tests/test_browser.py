"""The app in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright uploads a photo
on the Detect tab and reads the verdict from the page; a screenshot is saved for a person to look at.

    python -m pytest -m browser tests/test_browser.py -s     # prints the screenshot's path
"""

import os
import re
import socket

import pytest

import app
from helpers import make_tiny_models

CHROMIUM = "/usr/bin/chromium"
PHOTO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "two-faces.jpg")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    demo = app.build_demo(make_tiny_models(tmp_path_factory.mktemp("tiny-models"))).queue(**app.QUEUE_OPTIONS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, local_url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                                  **app.LAUNCH_OPTIONS)
    yield local_url
    demo.close()


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        yield page
        browser.close()


def test_detect_tab_shows_a_verdict_per_face(url, page, tmp_path):
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_role("button", name="Detect", exact=True).wait_for(timeout=60_000)
    page.locator("input[type=file]").first.set_input_files(PHOTO)
    page.get_by_role("button", name="Detect", exact=True).click()
    summary = page.locator("#detect-summary")
    expect(summary).to_contain_text("Model", timeout=120_000)
    text = summary.inner_text()
    screenshot = tmp_path / "detect-tab.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"\nscreenshot: {screenshot}")
    assert text.startswith("2 faces: "), text
    assert len(re.findall(r"face \d: (FAKE|REAL|UNCERTAIN) \(P\(fake\) = 0\.\d\d\)", text)) == 2, text
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)
