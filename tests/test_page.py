"""The per-video HTML page, played in a real browser: headless Chromium (Debian's package) driven by Playwright.

The page must play the embedded video, move the cursor with playback, seek when a curve is clicked, and
shade the frames without a face. .ci/run installs Chromium; elsewhere these tests skip, saying why."""

import shutil

import numpy as np
import pandas as pd
import pytest

from clipva.page import write_page
from clipva.video import probe, write_video

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [  # as root, on a machine whose network is closed
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
FPS, SECONDS = 10, 4.0


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("page")
    n = int(SECONDS * FPS)
    frames = [np.full((48, 64, 3), (10 * k) % 255, dtype=np.uint8) for k in range(n)]
    video = write_video(folder / "my <video>.mp4", frames, FPS)
    t = np.arange(n) / FPS
    table = pd.DataFrame(
        {
            "time": t,
            "frame": np.arange(n),
            "valence": 8 * np.sin(t),
            "arousal": 6 * np.cos(t),
            "face_found": ~((t >= 1.0) & (t < 1.5)),  # one run of 5 frames without a face
        }
    )
    table.loc[3, "valence"] = np.nan
    return write_page(video, table, folder / "my <video>.html", probe(video).duration), table


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' installs playwright")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


def _cursor(page) -> float:
    return float(page.get_attribute("#cursor-valence", "x1"))


def test_the_page_holds_everything_it_shows(page_file):
    path, table = page_file
    text = path.read_text()
    assert 'src="data:video/mp4;base64,' in text and "http" not in text.replace("http://www.w3.org", "")
    assert "my &lt;video&gt;.mp4" in text and "<video>.mp4" not in text.replace('<video id="video"', "")


def test_the_page_plays_the_video_and_the_cursor_follows(browser, page_file):
    path, table = page_file
    page = browser.new_page()
    page.goto(path.as_uri())
    page.wait_for_function("document.getElementById('video').readyState >= 2", timeout=20000)
    assert page.evaluate("document.querySelectorAll('#valence rect.noface').length") == int((~table.face_found).sum())
    assert page.evaluate("document.querySelector('#valence path.curve').getAttribute('d').split('M').length - 1") == 2
    start = _cursor(page)
    page.evaluate("video => { video.muted = true; return video.play(); }", page.query_selector("#video"))
    page.wait_for_function("document.getElementById('video').currentTime > 0.8", timeout=20000)
    page.evaluate("document.getElementById('video').pause()")
    now = page.evaluate("document.getElementById('video').currentTime")
    assert _cursor(page) > start
    assert _cursor(page) == pytest.approx(now / SECONDS * 600, abs=600 * 0.3 / SECONDS)


def test_a_click_on_a_curve_seeks_the_video(browser, page_file):
    path, _ = page_file
    page = browser.new_page()
    page.goto(path.as_uri())
    page.wait_for_function("document.getElementById('video').readyState >= 1", timeout=20000)
    box = page.query_selector("#arousal").bounding_box()
    page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + box["height"] / 2)
    page.wait_for_function("!document.getElementById('video').seeking", timeout=20000)
    assert page.evaluate("document.getElementById('video').currentTime") == pytest.approx(0.75 * SECONDS, abs=0.1)
    assert _cursor(page) == pytest.approx(0.75 * 600, abs=2)
    assert float(page.get_attribute("#cursor-arousal", "x1")) == _cursor(page)
