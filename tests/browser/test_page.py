"""The browser page (GET /) in a real browser: Debian's Chromium, headless, driven by
Playwright for Python, against the real `mltag-serve` process serving the colour demo model
(with its heatmaps) behind an API key. Screenshots of each step go to test-artifacts/browser/
(git-ignored; CI keeps them).

Needs /usr/bin/chromium (`apt-get install chromium`, done by .ci/system-deps.sh) and the
`playwright` package (the dev extra; never `playwright install`: the browser is Debian's).
Skipped with the reason when either is missing, except under CI, where that is a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.images import RED
from tests.service.live import LiveServer, live_server

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
API_KEY = "page-test-key"


def _need(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it: .ci/system-deps.sh, the dev extra)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need(CHROMIUM.is_file(), f"{CHROMIUM} is absent (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "the playwright package is absent (pip install -e '.[dev]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(
    demo_artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    env = {"MLTAG_ARTIFACT_DIR": str(demo_artifact_dir), "MLTAG_API_KEY": API_KEY}
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as s:
        yield s


def red_corner(path: Path) -> Path:
    """Black, with a red block in the top-right quadrant: tagged dark; red scores about 0.3."""
    im = Image.new("RGB", (240, 160), (0, 0, 0))
    im.paste(Image.new("RGB", (120, 80), RED), (120, 0))
    im.save(path)
    return path


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def shown_tags(page: Any) -> list[str]:
    return [str(x) for x in page.locator(".result .tags .tag").evaluate_all(
        "nodes => nodes.map(n => n.dataset.label)")]  # fmt: skip


def test_upload_see_tags_tune_a_threshold_and_a_heatmap(
    browser: Any, server: LiveServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 860})
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(server.url + "/")
    # The API needs the key: the page asks for it.
    expect(page.locator("#key-form")).to_be_visible()
    page.fill("#api-key", API_KEY)
    page.keyboard.press("Enter")
    expect(page.locator("#card-facts")).to_contain_text("colour-demo")
    expect(page.locator("#status")).to_contain_text("6 labels")
    page.set_input_files("#files", str(red_corner(tmp_path / "red-corner.png")))
    expect(page.locator(".result .tags .tag").first).to_be_visible()
    shot(page, "1-tags")
    assert shown_tags(page) == ["dark"]  # calibrated thresholds (0.5): red is below
    # Lower red's threshold with the keyboard: red appears, with no new request.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.focus("#sliders input[data-label='red']")
    page.keyboard.press("Home")
    expect(page.locator(".tag[data-label='red']")).to_be_visible()
    # Raise dark's to the top: it disappears.
    page.locator("#sliders input[data-label='dark']").fill("1")
    expect(page.locator(".tag[data-label='dark']")).to_have_count(0)
    shot(page, "2-thresholds")
    assert requests == []
    # Choose the red tag (keyboard): its heatmap lies over the image's red corner.
    page.focus(".tag[data-label='red']")
    page.keyboard.press("Enter")
    heat = page.locator(".frame canvas[data-label='red']")
    expect(heat).to_be_visible()
    expect(page.locator(".tag[data-label='red']")).to_have_attribute("aria-pressed", "true")
    shot(page, "3-heatmap")
    assert _hottest_quadrant(heat) == "top-right"
    # Back to the calibrated thresholds; a second image, whose blue tag points at the sky
    # (the README's screenshot, docs/page.png).
    page.click("#thr-reset")
    expect(page.locator(".result .tag[data-label='red']")).to_have_count(0)
    drop(page, sky_and_grass(tmp_path / "sky-and-grass.png"))  # dropped, not picked
    expect(page.locator(".result")).to_have_count(2)
    newest = page.locator(".result").first  # the newest image comes first
    newest.locator(".tag[data-label='blue']").click()
    blue = newest.locator(".frame canvas[data-label='blue']")
    expect(blue).to_be_visible()
    assert _hottest_quadrant(blue).startswith("top")
    shot(page, "4-two-images")
    assert failed == []
    page.close()


def drop(page: Any, path: Path) -> None:
    """Drop a file on the drop zone, as a drag from the desktop does."""
    data = list(path.read_bytes())
    page.evaluate(
        """([name, bytes]) => { const dt = new DataTransfer();
             dt.items.add(new File([new Uint8Array(bytes)], name, {type: 'image/png'}));
             document.querySelector('#drop').dispatchEvent(
               new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); }""",
        [path.name, data],
    )


def sky_and_grass(path: Path) -> Path:
    im = Image.new("RGB", (240, 160), (40, 60, 235))
    im.paste(Image.new("RGB", (240, 70), (30, 200, 50)), (0, 90))
    im.save(path)
    return path


def _hottest_quadrant(canvas: Any) -> str:
    """The quadrant of the canvas's reddest cell (the ramp's hot end is red)."""
    y, x, h, w = canvas.evaluate(
        """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                  let best = -1, at = 0;
                  for (let i = 0; i < d.length; i += 4) {
                    const v = d[i] - d[i + 2] + d[i + 3];
                    if (v > best) { best = v; at = i / 4; } }
                  return [Math.floor(at / c.width), at % c.width, c.height, c.width]; }"""
    )
    return f"{'top' if y < h / 2 else 'bottom'}-{'left' if x < w / 2 else 'right'}"


def test_a_model_without_heatmaps_hides_the_control(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from model_training.demo import write_demo_artifact

    plain = write_demo_artifact(tmp_path / "plain", explain=False).directory
    with live_server(env={"MLTAG_ARTIFACT_DIR": str(plain)}, log_dir=tmp_path) as s:
        page = browser.new_page()
        page.goto(s.url + "/")  # no API key set: no question asked
        expect(page.locator("#card-facts")).to_contain_text("not in this model")
        page.set_input_files("#files", str(red_corner(tmp_path / "red-corner.png")))
        expect(page.locator(".result .tag[data-label='dark']")).to_be_visible()
        assert page.locator("button.tag").count() == 0  # tags, but nothing to choose
        assert page.locator("#key-form").is_hidden()
        page.close()


def test_ui_off(browser: Any, demo_artifact_dir: Path, tmp_path: Path) -> None:
    env = {"MLTAG_ARTIFACT_DIR": str(demo_artifact_dir), "MLTAG_UI": "false"}
    with live_server(env=env, log_dir=tmp_path) as s:
        page = browser.new_page()
        assert page.goto(s.url + "/").status == 404
        page.close()
