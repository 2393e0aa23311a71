"""The web page at ``/``, driven in headless Chromium against a real uvicorn server.

Each test opens the page at a phone's size, sends a real file the way a user would (the file
picker, or a drop on the drop zone) and reads what the page shows. What the page should show is
taken from ``POST /predict`` for the same file, so the tests check the page, not the model.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import SAMPLE, copy_export_with_threshold, running_server

# Debian's packages (.ci/run installs them); a CI runner with another build can point elsewhere.
CHROMIUM = Path(os.environ.get("HOTDOG_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("HOTDOG_CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
PHONE_WIDTH, PHONE_HEIGHT = 390, 844
VERDICTS = {"hot_dog": "Hot dog!", "not_hot_dog": "Not hot dog"}
GUESSES = {"hot_dog": "a hot dog", "not_hot_dog": "not a hot dog"}
WAIT_S = 30


def sample_photo(label: str) -> Path:
    return sorted((SAMPLE / "test" / label).glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module, showing pages as a 390x844 phone would."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the web page tests need Chromium, so install it "
            "with `apt-get install chromium chromium-driver` (.ci/run does this for you) or point "
            "HOTDOG_CHROMIUM and HOTDOG_CHROMEDRIVER at another build.",
            pytrace=False,
        )
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={PHONE_WIDTH},{PHONE_HEIGHT}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    # A mobile viewport: the page only gets a 390 px wide layout if its viewport meta tag works.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE_WIDTH, "height": PHONE_HEIGHT, "deviceScaleFactor": 1, "mobile": True},
    )
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: WebDriver, live_server: str) -> WebDriver:
    browser.get_log("browser")  # forget what earlier tests logged
    browser.get(f"{live_server}/")
    assert browser.title == "hotdog"
    return browser


def predict(live_server: str, path: Path, content_type: str = "image/jpeg") -> httpx.Response:
    """What the API answers for the file the page sends (the browser guesses the type by name)."""
    with path.open("rb") as stream:
        files = {"file": (path.name, stream, content_type)}
        return httpx.post(f"{live_server}/predict", files=files, timeout=WAIT_S)


def wait_until_settled(driver: WebDriver) -> None:
    """Wait for the page to show either a verdict or an error."""

    def settled(d: WebDriver) -> bool:
        return (
            bool(d.find_element(By.ID, "verdict").text)
            or d.find_element(By.ID, "error").is_displayed()
        )

    WebDriverWait(driver, WAIT_S).until(settled, "the page showed neither a verdict nor an error")


def console_errors(driver: WebDriver) -> list[str]:
    """Script errors, failed requests and CSP violations the page caused so far."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def assert_shows_prediction(driver: WebDriver, expected: dict) -> None:
    error = driver.find_element(By.ID, "error")
    assert not error.is_displayed(), f"the page shows an error: {error.text}"
    verdict = "Not sure" if expected["unsure"] else VERDICTS[expected["label"]]
    assert driver.find_element(By.ID, "verdict").text == verdict
    guess = driver.find_element(By.ID, "guess")
    assert guess.is_displayed() == expected["unsure"]
    word = driver.find_element(By.ID, "probability-word").text
    assert word == ("likely" if expected["unsure"] else "sure")
    if expected["unsure"]:  # the best guess is still given
        assert guess.text == f"Best guess: {GUESSES[expected['label']]}"
    shown = driver.find_element(By.ID, "probability").text
    match = re.fullmatch(r"(\d+(?:\.\d+)?)%", shown)
    assert match, f"the probability reads {shown!r}, not a percentage"
    assert float(match[1]) == pytest.approx(expected["probability"] * 100, abs=0.051)
    assert expected["model_version"] in driver.find_element(By.ID, "details").text
    assert not driver.find_element(By.ID, "busy").is_displayed()
    assert console_errors(driver) == []


def test_controls_are_labelled_and_results_announced(page: WebDriver):
    picker = page.find_element(By.ID, "file")
    assert picker.get_attribute("accept") == "image/*"
    assert picker.get_attribute("capture") is None  # a phone offers its camera and its gallery
    assert page.find_element(By.CSS_SELECTOR, "label[for=file]").text
    assert page.find_element(By.ID, "drop-zone").size["height"] >= 48  # a thumb-sized target
    assert page.find_elements(By.CSS_SELECTOR, "[aria-live] #verdict, [aria-live] #probability")
    assert page.find_element(By.ID, "error").get_attribute("role") == "alert"
    assert page.find_element(By.TAG_NAME, "html").get_attribute("lang")
    assert page.find_element(By.TAG_NAME, "h1").text == "hotdog"


def test_picked_photo_shows_verdict_on_a_phone(page: WebDriver, live_server: str, tmp_path: Path):
    photo = sample_photo("hot_dog")
    expected = predict(live_server, photo).raise_for_status().json()

    page.find_element(By.ID, "file").send_keys(str(photo))
    wait_until_settled(page)

    assert_shows_prediction(page, expected)
    preview = page.find_element(By.ID, "preview")
    assert preview.is_displayed()
    assert page.execute_script("return arguments[0].complete && arguments[0].naturalWidth", preview)
    width, inner_width = page.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert inner_width == PHONE_WIDTH, "the layout viewport is not the phone's width"
    assert width <= inner_width, f"the page scrolls sideways: {width} px wide in {inner_width} px"
    screenshot = tmp_path / "phone.png"
    assert page.get_screenshot_as_file(str(screenshot))
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert screenshot.stat().st_size > 1000


def test_non_image_shows_the_server_error(page: WebDriver, live_server: str, tmp_path: Path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("These are notes, not a photo of a hot dog.\n")
    answer = predict(live_server, fake)
    assert 400 <= answer.status_code < 500
    expected_error = answer.json()["error"]

    page.find_element(By.ID, "file").send_keys(str(fake))
    wait_until_settled(page)

    error = page.find_element(By.ID, "error")
    assert error.is_displayed()
    assert error.text == expected_error
    assert not page.find_element(By.ID, "verdict").is_displayed()
    assert not page.find_element(By.ID, "preview").is_displayed()  # no broken-image icon
    assert not page.find_element(By.ID, "busy").is_displayed()


DROP_SCRIPT = """
const [data, name] = arguments;
const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
const zone = document.getElementById("drop-zone");
const init = {bubbles: true, cancelable: true, dataTransfer: transfer};
for (const type of ["dragenter", "dragover", "drop"]) zone.dispatchEvent(new DragEvent(type, init));
"""


def test_dropped_photo_shows_verdict(page: WebDriver, live_server: str):
    photo = sample_photo("not_hot_dog")
    expected = predict(live_server, photo).raise_for_status().json()

    page.execute_script(DROP_SCRIPT, base64.b64encode(photo.read_bytes()).decode(), photo.name)
    wait_until_settled(page)

    assert_shows_prediction(page, expected)
    assert page.find_element(By.ID, "preview").is_displayed()
    assert "dragging" not in page.find_element(By.ID, "drop-zone").get_attribute("class")


def test_unsure_answer_says_so_then_a_sure_one_clears_it(
    browser: WebDriver, live_server: str, exported_model: Path, tmp_path: Path
):
    """A threshold between the two photos' probabilities: the less sure photo is shown as
    "Not sure" with its best guess, then the surer one as a plain verdict on the same page."""
    photos = [sample_photo("hot_dog"), sample_photo("not_hot_dog")]
    answers = [predict(live_server, photo).raise_for_status().json() for photo in photos]
    (unsure_photo, _), (sure_photo, _) = sorted(
        zip(photos, answers, strict=True), key=lambda pair: pair[1]["probability"]
    )
    low, high = sorted(answer["probability"] for answer in answers)
    assert low < high
    model = copy_export_with_threshold(exported_model, tmp_path, unsure_below=(low + high) / 2)
    with running_server({"HOTDOG_MODEL_URI": str(model)}) as url:
        expected_unsure = predict(url, unsure_photo).raise_for_status().json()
        expected_sure = predict(url, sure_photo).raise_for_status().json()
        assert expected_unsure["unsure"] is True and expected_sure["unsure"] is False
        browser.get_log("browser")
        browser.get(f"{url}/")
        browser.find_element(By.ID, "file").send_keys(str(unsure_photo))
        wait_until_settled(browser)
        assert_shows_prediction(browser, expected_unsure)
        result = browser.find_element(By.ID, "result")
        assert result.get_attribute("data-unsure") == "true"
        assert result.get_attribute("data-label") == expected_unsure["label"]
        # Shown in the muted colour, not in the colour of a verdict.
        colours = browser.execute_script(
            "const s = (id) => getComputedStyle(document.getElementById(id)).color;"
            "return [s('verdict'), s('details')];"
        )
        assert colours[0] == colours[1]

        browser.find_element(By.ID, "file").send_keys(str(sure_photo))
        verdict = VERDICTS[expected_sure["label"]]
        WebDriverWait(browser, WAIT_S).until(
            lambda d: (
                d.find_element(By.ID, "verdict").text == verdict
                and not d.find_element(By.ID, "busy").is_displayed()
            ),
            "the page did not show the second verdict",
        )
        assert_shows_prediction(browser, expected_sure)  # the best guess line is gone
        assert result.get_attribute("data-unsure") == "false"
