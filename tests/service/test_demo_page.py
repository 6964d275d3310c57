"""The demo page at `/`: served files, and a real headless Chromium using it against the server.

The browser tests need Debian's `chromium` and `chromium-driver` and the `selenium` package;
without them they skip, saying which is missing (and fail instead with
MARGIPOSE_REQUIRE_BROWSER=1, as CI sets). The screenshot lands in build/test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from posecontract.skeleton import JOINT_NAMES
from service.rest import STATIC_DIR

from .conftest import MODEL_NAME, jpeg_bytes

ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
LEFT, RIGHT, CENTRE = (40, 150, 255), (255, 100, 40), (90, 220, 110)  # as in app.js
MARKER = (0, 255, 255)


def test_root_serves_the_page_and_its_files(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
    assert sorted(assets) == ["static/app.js", "static/style.css"]
    for asset, kind in zip(sorted(assets), ("javascript", "text/css"), strict=True):
        r = client.get("/" + asset)
        assert r.status_code == 200 and kind in r.headers["content-type"], asset
        assert r.content == (STATIC_DIR / Path(asset).name).read_bytes()
    assert client.get("/static/nothing.js").status_code == 404


def test_the_api_routes_are_unaffected(client):
    assert client.get("/docs").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert "/" not in client.get("/openapi.json").json()["paths"]
    assert client.get("/v1/model").json()["name"] == MODEL_NAME
    assert client.get("/health/live").json() == {"status": "live"}
    assert "margipose_requests_total" in client.get("/metrics").text


def test_the_page_loads_nothing_from_elsewhere():
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        # Links to other sites are fine in prose, but nothing is fetched from them.
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), path.name
        assert not re.search(r"""(fetch|import|url)\(\s*["'`]?(https?:)?//""", text), path.name


# ---- in a real browser ------------------------------------------------------------------------

def _missing(reason: str) -> None:
    if os.environ.get("MARGIPOSE_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + "; MARGIPOSE_REQUIRE_BROWSER=1 asks for the browser tests")
    pytest.skip(reason)


def _chrome():
    """A headless Chromium driven by selenium, or a skip naming what is missing."""
    try:
        from selenium import webdriver
    except ImportError:
        _missing("selenium is not installed (pip install selenium)")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        _missing("Chromium or chromedriver is missing (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1360,1500", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))


@pytest.fixture(scope="module")
def browser() -> Iterator:
    chrome = _chrome()
    try:
        yield chrome
    finally:
        chrome.quit()


def _wait_done(browser, timeout: float = 60) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(
        lambda b: b.find_element("tag name", "body").get_attribute("data-state")
        in ("done", "error"))
    body = browser.find_element("tag name", "body")
    assert body.get_attribute("data-state") == "done", browser.find_element("id", "status").text


COUNT_COLOURS = """
const [id, colours] = arguments;
const canvas = document.getElementById(id);
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
const counts = colours.map(() => 0);
for (let i = 0; i < data.length; i += 4) {
  colours.forEach((c, k) => {
    if (data[i] === c[0] && data[i + 1] === c[1] && data[i + 2] === c[2]) counts[k]++;
  });
}
return counts;
"""


@pytest.fixture(scope="module")
def loaded(browser, server, tmp_path_factory) -> Path:
    """The page, with a 480x360 image uploaded through its file input and its answer drawn."""
    image = tmp_path_factory.mktemp("upload") / "person.jpg"
    image.write_bytes(jpeg_bytes(480, 360, seed=3))
    browser.get(server.url + "/")
    assert browser.title.startswith("MargiPose Serve")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(
        lambda b: MODEL_NAME in b.find_element("id", "model").text)
    before = browser.execute_script(COUNT_COLOURS, "overlay", [LEFT, RIGHT, CENTRE])
    assert before == [0, 0, 0]  # nothing drawn yet
    browser.find_element("id", "file").send_keys(str(image))
    _wait_done(browser)
    return image


def test_upload_shows_skeleton_view_heatmaps_table_and_json(browser, loaded, client):
    image = loaded

    # The JSON panel holds what the API answers for the same image (heatmap data shortened).
    shown = json.loads(browser.find_element("id", "json").get_attribute("textContent"))
    direct = client.post("/v1/predict", files={"image": ("person.jpg", image.read_bytes(),
                                                         "image/jpeg")},
                         data={"heatmaps": "f16"}).json()
    assert [j["pixel"] for j in shown["persons"][0]["joints"]] == \
        [j["pixel"] for j in direct["persons"][0]["joints"]]
    assert shown["persons"][0]["box_source"] == "auto"

    rows = browser.find_elements("css selector", "#joints tbody tr")
    assert [r.get_attribute("data-joint") for r in rows] == list(JOINT_NAMES)
    first = rows[0].find_elements("tag name", "td")
    pixel = direct["persons"][0]["joints"][0]["pixel"]
    assert [int(v) for v in first[1].text.split(", ")] == pytest.approx(pixel, abs=0.51)

    # Bones of both sides and the centre line on the photo and in the 3D view.
    overlay = browser.execute_script(COUNT_COLOURS, "overlay", [LEFT, RIGHT, CENTRE])
    assert min(overlay) > 10, overlay
    view = browser.execute_script(COUNT_COLOURS, "view3d", [LEFT, RIGHT, CENTRE])
    assert min(view) > 10, view
    # Heatmaps of the selected joint, with the prediction's cross.
    for plane in ("xy", "zy", "xz"):
        black, marker = browser.execute_script(COUNT_COLOURS, f"map-{plane}",
                                               [(0, 0, 0), MARKER])
        assert black < 192 * 192 and marker > 10, (plane, black, marker)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "demo_page.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_choosing_a_joint_redraws_its_heatmaps(browser, loaded):
    from selenium.webdriver.support.ui import Select

    maps = browser.execute_script("return document.getElementById('map-xy').toDataURL()")
    Select(browser.find_element("id", "joint")).select_by_value("head_top")
    selected = browser.find_elements("css selector", "#joints tbody tr.selected")
    assert [r.get_attribute("data-joint") for r in selected] == ["head_top"]
    assert browser.execute_script("return document.getElementById('map-xy').toDataURL()") != maps


def test_dragging_rotates_the_3d_view(browser, loaded):
    from selenium.webdriver import ActionChains

    canvas = browser.find_element("id", "view3d")
    before = canvas.screenshot_as_png
    ActionChains(browser).move_to_element(canvas).click_and_hold().move_by_offset(80, 30) \
        .release().perform()
    assert browser.execute_script("return state.view.azimuth") == pytest.approx(45 - 40, abs=1)
    assert browser.execute_script("return state.view.elevation") == pytest.approx(20 + 15, abs=1)
    assert canvas.screenshot_as_png != before


def test_drawing_a_box_asks_for_that_person(browser, loaded):
    from selenium.webdriver import ActionChains

    canvas = browser.find_element("id", "overlay")
    width = browser.execute_script("return arguments[0].getBoundingClientRect().width", canvas)
    scale = width / 480  # displayed pixels per image pixel
    browser.execute_script("document.body.dataset.state = 'idle'")
    # From image pixel (100, 60) to (260, 300), offsets from the canvas centre (240, 180).
    ActionChains(browser).move_to_element_with_offset(canvas, -140 * scale, -120 * scale) \
        .click_and_hold().move_by_offset(160 * scale, 240 * scale).release().perform()
    _wait_done(browser)
    shown = json.loads(browser.find_element("id", "json").get_attribute("textContent"))
    (person,) = shown["persons"]
    assert person["box_source"] == "request"
    box = [person["box"][k] for k in "xywh"]
    assert box == pytest.approx([100, 60, 160, 240], abs=3)


def test_a_service_error_is_shown(browser, loaded, tmp_path):
    # The browser shows an SVG; the service takes raster images only and says so (415).
    svg = tmp_path / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
                   '<rect width="64" height="64" fill="red"/></svg>')
    browser.execute_script("document.body.dataset.state = 'idle'")
    browser.find_element("id", "file").send_keys(str(svg))
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(
        lambda b: b.find_element("tag name", "body").get_attribute("data-state") == "error")
    status = browser.find_element("id", "status")
    assert status.text.startswith("415 unsupported_media_type: "), status.text
    assert "error" in status.get_attribute("class").split()
