"""The demo page in a real browser: headless Chromium (Debian's chromium and chromium-driver) driven by Selenium opens
the page on the loopback, uploads the sample clip, waits for the timeline plot and the annotated video, checks that the
page requested nothing outside the loopback and that closing it removes its files, and saves a screenshot
(CLIPDFER_DEMO_SCREENSHOT=docs/demo.png also writes it there, as docs/demo.md shows it)."""

import json
import os
import shutil
import time

import pytest

from clipdfer.inference import sample_clip_path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
TIMEOUT = 60  # s, for the run; the whole test takes about 15 s on 2 CPU cores


def _which(names):
    return next((shutil.which(n) for n in names if shutil.which(n)), None)


def _until(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(0.25)


def test_the_page_in_a_browser(tmp_path):
    browser, driver_path = _which(BROWSERS), _which(DRIVERS)
    if browser is None or driver_path is None:
        pytest.skip("Chromium is absent: apt-get install chromium chromium-driver (Debian; .ci/run does it as root)")
    pytest.importorskip("gradio", reason="the page needs Gradio: pip install 'clipdfer[demo]'")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium: pip install "
                                                                 "'clipdfer[test]'")
    from selenium.webdriver.common.by import By

    from clipdfer.app import Demo
    from clipdfer.app.analysis import UploadLimits

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1200,1400", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    demo = Demo("clipdfer_test", pretrained=False, temp_dir=str(tmp_path / "demo"), limits=UploadLimits(max_videos=2))
    driver = None
    try:
        url = demo.launch(block=False, quiet=True)
        assert url.startswith("http://127.0.0.1:")
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
        driver.set_page_load_timeout(TIMEOUT)
        driver.get(url)
        upload = _until(lambda: driver.find_elements(By.CSS_SELECTOR, "#videos input[type=file]"), 30, "the page")
        upload[0].send_keys(sample_clip_path())
        _until(lambda: "87.2 KB" in driver.find_element(By.ID, "videos").text, 30, "the upload")  # its size shows
        driver.find_element(By.ID, "run").click()
        _until(lambda: driver.execute_script(
            "const i = document.querySelector('#plot img'); return i && i.complete && i.naturalWidth > 0;"),
            TIMEOUT, "the timeline plot")
        _until(lambda: driver.execute_script(
            "const v = document.querySelector('#annotated video'); return v && v.readyState >= 1;"),
            TIMEOUT, "the annotated video to load")
        assert "NOT MEANINGFUL" in driver.find_element(By.ID, "notice").text
        assert "sample_clip.mp4" in driver.find_element(By.ID, "status").text
        assert "happiness" in driver.find_element(By.ID, "table").text
        downloads = "".join(driver.find_element(By.ID, "downloads").text.split())  # a name's parts are on two lines
        assert all(name in downloads for name in ("sample_clip.json", "sample_clip.csv", "sample_clip-annotated.mp4"))
        driver.execute_script("window.scrollTo(0, 0)")
        shot = str(tmp_path / "demo.png")
        driver.save_screenshot(shot)
        requested = [json.loads(e["message"])["message"]["params"]["request"]["url"]
                     for e in driver.get_log("performance") if '"Network.requestWillBeSent"' in e["message"]]
        assert requested and all(u.startswith((url, "data:", "blob:")) for u in requested), [
            u for u in requested if not u.startswith((url, "data:", "blob:"))]
        sessions = [f for f in os.listdir(demo.files.root) if f.startswith("session-")]
        assert len(sessions) == 1
        driver.get("about:blank")  # the page is closed: its session's files go
        _until(lambda: not os.path.exists(os.path.join(demo.files.root, sessions[0])), 20, "the session's files")
    finally:
        if driver is not None:
            driver.quit()
        demo.close()
    assert not os.path.exists(demo.files.root)
    from PIL import Image
    image = Image.open(shot)
    assert image.size[0] == 1200
    target = os.environ.get("CLIPDFER_DEMO_SCREENSHOT")
    if target:
        image.convert("RGB").quantize(64).save(target, optimize=True)
